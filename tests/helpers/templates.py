"""Helpers shared by the construct tests (a uniquely named module, not conftest, so that
it cannot clash with another test tree's conftest when imported)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import cfnlint.api

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV = cdk.Environment(account="123456789012", region="eu-west-1")
CUSTOM_TYPE = "Custom::AppStreamUserStackAssociation"


def cdk_json_context() -> dict[str, Any]:
    """The feature flags of the repository's cdk.json, so tests see what `cdk synth` sees."""
    context = json.loads((REPO_ROOT / "cdk.json").read_text(encoding="utf-8"))["context"]
    assert isinstance(context, dict)
    return context


def new_stack(stack_id: str = "Main", *, env: cdk.Environment | None = ENV) -> cdk.Stack:
    """A stack in a fresh App that carries cdk.json's feature flags."""
    app = cdk.App(context=cdk_json_context())
    return cdk.Stack(app, stack_id, env=env)


def arn(name: str) -> str:
    return f"arn:aws:appstream:eu-west-1:123456789012:stack/{name}"


def resources_of_type(template: cdk.assertions.Template, type_: str) -> dict[str, Any]:
    found = template.find_resources(type_)
    assert isinstance(found, dict)
    return found


def only_logical_id(template: cdk.assertions.Template, type_: str) -> str:
    found = resources_of_type(template, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found))


def cfn_lint(template: Mapping[str, Any]) -> list[str]:
    """cfn-lint's errors and warnings (its default rules) on a synthesized template."""
    matches = cfnlint.api.lint(json.dumps(template))
    return [f"{match.rule.id} {match.message} ({'/'.join(map(str, match.path))})" for match in matches]
