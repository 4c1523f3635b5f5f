"""The command line's pure parts: the intrinsic-function resolver, the table layout, colour choice,
and that the package imports without boto3 (no AWS, no CDK app: fast)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from typing import Any

import pytest

from constructs_lib.cli import output
from constructs_lib.cli.assembly import Resolver, Unresolved
from tests.unit.cli.cli_harness import REPO_ROOT

TEMPLATE: dict[str, Any] = {
    "Parameters": {
        "Stage": {"Type": "String", "Default": "prod"},
        "Users": {"Type": "CommaDelimitedList", "Default": "a@x.com, b@x.com"},
        "Required": {"Type": "String"},
        "FromSsm": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": "/p"},
    },
    "Mappings": {"Names": {"us-east-1": {"stack": "east"}}},
    "Resources": {
        "Stack": {"Type": "AWS::AppStream::Stack", "Properties": {"Name": {"Fn::Sub": "analysts-${Stage}"}}},
        "Unnamed": {"Type": "AWS::AppStream::Stack", "Properties": {}},
        "Bucket": {"Type": "AWS::S3::Bucket"},
    },
}


def resolver(**kwargs: Any) -> Resolver:
    defaults: dict[str, Any] = {"region": "us-east-1", "account": "123456789012"}
    return Resolver(TEMPLATE, "Main", **{**defaults, **kwargs})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"Ref": "Stage"}, "prod"),
        ({"Ref": "Users"}, ["a@x.com", "b@x.com"]),
        ({"Ref": "Stack"}, "analysts-prod"),  # an AppStream stack's Ref is the name the template gives it
        ({"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, {"Ref": "AWS::Region"}]]}, "Main-us-east-1"),
        ({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}, "y"),
        ({"Fn::Sub": ["${A}-${!Literal}", {"A": {"Ref": "Stage"}}]}, "prod-${Literal}"),
        ({"Fn::FindInMap": ["Names", {"Ref": "AWS::Region"}, "stack"]}, "east"),
        (
            {"Fn::Sub": "arn:${AWS::Partition}:appstream:${AWS::Region}:${AWS::AccountId}:stack/x"},
            "arn:aws:appstream:us-east-1:123456789012:stack/x",
        ),
        (["a", {"Ref": "AWS::NoValue"}, "b"], ["a", "b"]),
    ],
)
def test_the_resolver_evaluates_what_cloudformation_would(value: Any, expected: Any) -> None:
    assert resolver().resolve(value) == expected


def test_given_and_deployed_parameter_values_win_over_defaults() -> None:
    assert resolver(parameters={"Stage": "dev", "Required": "x"}).resolve({"Ref": "Stack"}) == "analysts-dev"
    assert resolver(parameters={"Required": "x"}).resolve({"Ref": "Required"}) == "x"


def test_deployed_resources_resolve_by_physical_id() -> None:
    found = resolver(physical_id={"Unnamed": "given-by-cfn"}.get)
    assert found.resolve({"Ref": "Unnamed"}) == "given-by-cfn"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"Fn::GetAtt": ["Bucket", "Arn"]}, "known only after the deployment"),
        ({"Ref": "Bucket"}, "not deployed yet"),
        ({"Ref": "Unnamed"}, "not deployed yet"),
        ({"Ref": "Required"}, "pass --parameter Required=VALUE"),
        ({"Ref": "FromSsm"}, "an SSM parameter"),
        ({"Fn::ImportValue": "Other:Export"}, "not exported by a deployed stack"),
        ({"Fn::If": ["Cond", "a", "b"]}, "Fn::If"),
        ({"Fn::Sub": "${Bucket.Arn}"}, "an attribute"),
        ({"Ref": "Nothing"}, "neither a parameter nor a resource"),
    ],
)
def test_what_cannot_be_known_before_the_deployment_is_named_not_guessed(value: Any, reason: str) -> None:
    with pytest.raises(Unresolved, match=reason):
        resolver().resolve(value)


def test_account_unknown_to_an_environment_agnostic_stack_is_unresolved() -> None:
    with pytest.raises(Unresolved, match="AWS::AccountId"):
        resolver(account=None).resolve({"Ref": "AWS::AccountId"})


def test_a_table_fits_its_width_and_cuts_the_chosen_columns_in_the_middle() -> None:
    rows = [["analysts", "someone@example.com", "Workspaces/Team/With/A/Very/Long/Construct/Path"]]
    lines = output.table(("Stack", "User", "Path"), rows, width=50, style=output.Style(False), shrink=(2,))
    assert all(len(line) <= 50 for line in lines)
    assert "someone@example.com" in lines[1]
    assert re.search(r"  Workspace\S*…\S*/Path$", lines[1]), lines[1]  # both ends of the path stay


def test_names_are_summarised_unless_full() -> None:
    users = [f"u{index}@x.com" for index in range(5)]
    assert output.names(users, full=False) == "u0@x.com, u1@x.com, u2@x.com +2 more"
    assert output.names(users, full=True).count("@") == 5


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert output.wants_colour(_Terminal())
    assert not output.wants_colour(io.StringIO())
    assert not output.wants_colour(_Terminal(), disabled=True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not output.wants_colour(_Terminal())
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value counts
    assert output.wants_colour(_Terminal())
    monkeypatch.setenv("TERM", "dumb")
    assert not output.wants_colour(_Terminal())


def test_the_library_and_the_cli_package_import_without_boto3_and_say_what_to_install() -> None:
    script = (
        "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "import constructs_lib, constructs_lib.cli, constructs_lib.cli.assembly, constructs_lib.cli.output\n"
        "from constructs_lib.cli import main\n"
        "raise SystemExit(main(['drift', 'Main']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "appstream-associations: error: needs boto3: pip install 'appstream-user-stack-association[cli]'\n"
    )


def test_the_names_the_cli_keeps_of_its_own_match_the_construct_and_the_handler() -> None:
    """constructs_lib._provider imports aws-cdk-lib, which the command line must not: it keeps copies."""
    from appstream_handler import rules  # noqa: PLC0415
    from constructs_lib import _provider  # noqa: PLC0415
    from constructs_lib.cli import assembly  # noqa: PLC0415

    assert assembly.PROVIDER_ID == _provider.PROVIDER_ID
    assert assembly.RESOURCE_TYPE == rules.RESOURCE_TYPE
    assert assembly.DEPLOYMENT_RESOURCE_TYPE == rules.DEPLOYMENT_RESOURCE_TYPE
