"""app.py: context parsing, defaults, and clear errors for bad values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

import app as demo_app
from tests.helpers.templates import CUSTOM_TYPE, REPO_ROOT


def template_of(context: dict[str, Any] | None = None) -> Template:
    built = demo_app.build_app(context)
    return Template.from_stack(built.node.find_child(demo_app.STACK_ID))  # type: ignore[arg-type]


def test_defaults() -> None:
    template = template_of()
    template.resource_count_is(CUSTOM_TYPE, 1)
    template.has_resource_properties(
        CUSTOM_TYPE,
        {
            "StackName": "demo-stack",
            "UserNames": ["alice@example.com", "bob@example.com", "carol@example.com"],
            "AuthenticationType": "USERPOOL",
            "SendEmailNotification": False,
            "MaxConcurrency": 4,
        },
    )


def test_context_overrides() -> None:
    template_of(
        {
            "appstream_stack_name": "other-stack",
            "appstream_users": "y@example.com, x@example.com",
            "authentication_type": "SAML",
            "send_email_notification": "TRUE",
        }
    ).has_resource_properties(
        CUSTOM_TYPE,
        {
            "StackName": "other-stack",
            "UserNames": ["x@example.com", "y@example.com"],
            "AuthenticationType": "SAML",
            "SendEmailNotification": True,
        },
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@example.com", ["a@example.com"]),
        ("a@example.com,b@example.com", ["a@example.com", "b@example.com"]),
        (" a@example.com , b@example.com ", ["a@example.com", "b@example.com"]),
        ('["a@example.com", "b@example.com"]', ["a@example.com", "b@example.com"]),
        (["a@example.com", "b@example.com"], ["a@example.com", "b@example.com"]),
    ],
)
def test_parse_users(value: object, expected: list[str]) -> None:
    assert demo_app.parse_users(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a@example.com,,b@example.com", r"has an empty entry"),
        ("a@example.com,", r"has an empty entry"),
        ('["a@example.com"', r"looks like JSON but is not valid JSON"),
        ({"a": 1}, r"must be a comma-separated string or a JSON list of strings"),
        ("[1, 2]", r"must be a comma-separated string or a JSON list of strings, got \[1, 2\]"),
        (42, r"got 42"),
    ],
)
def test_parse_users_errors(value: object, message: str) -> None:
    with pytest.raises(demo_app.ContextError, match=message):
        demo_app.parse_users(value)


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True), ("False", False)])
def test_parse_bool(value: object, expected: bool) -> None:
    assert demo_app.parse_bool("k", value) is expected


@pytest.mark.parametrize("value", ["yes", "1", 1, "", None])
def test_parse_bool_errors(value: object) -> None:
    with pytest.raises(demo_app.ContextError, match=r"context k must be true or false, got"):
        demo_app.parse_bool("k", value)


@pytest.mark.slow
def test_bad_context_stops_the_app_with_one_clear_message(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CDK_OUTDIR": str(tmp_path),
        "CDK_CONTEXT_JSON": json.dumps({"appstream_users": "good@example.com,bad user", "authentication_type": "X"}),
    }
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    assert "app.py: UserStackAssociation 'AppStreamUserAssociationsDemo/Associations' has 2 problems" in result.stderr
    assert "'bad user'" in result.stderr
    assert "'X'" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_run_directly_it_writes_cdk_out_here_and_says_so(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CDK_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "app.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cdk.out" / "AppStreamUserAssociationsDemo.template.json").is_file()
    assert "app.py: synthesized AppStreamUserAssociationsDemo into cdk.out/" in result.stderr
    assert "npx cdk deploy" in result.stderr
