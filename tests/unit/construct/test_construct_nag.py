"""Security and lint scanning: cdk-nag's AwsSolutions pack and cfn-lint on synthesized templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import cdk_nag
import pytest
from aws_cdk import aws_appstream as appstream
from aws_cdk import aws_iam as iam

import app as demo_app
from constructs_lib import PROVIDER_ID, UserStackAssociation
from constructs_lib._provider import DESCRIBE_ACKNOWLEDGMENT_REASON
from tests.helpers.templates import ENV, cdk_json_context, cfn_lint

DESCRIBE_ACKNOWLEDGMENT = "AwsSolutions::AwsSolutions-IAM5[Resource::*]"


def suppressed(outdir: Path) -> list[tuple[str, str, str]]:
    report = json.loads((outdir / "validation-report.json").read_text())
    return sorted(
        (violation["acknowledgedId"], violation["acknowledgedAt"], violation["reason"])
        for plugin in report["pluginReports"]
        for violation in plugin.get("suppressedViolations", [])
    )


def templates(assembly: cdk.cx_api.CloudAssembly) -> dict[str, dict[str, Any]]:
    return {stack.stack_name: stack.template for stack in assembly.stacks}


def multi_association_app(outdir: Path) -> cdk.App:
    """Several AppStream stacks, names by literal, by reference and by parameter, a declared user, shards."""
    app = cdk.App(outdir=str(outdir), context=cdk_json_context())
    stack = cdk.Stack(app, "Multi", env=ENV)
    analysts = appstream.CfnStack(stack, "Analysts", name="analysts")
    appstream.CfnStack(stack, "Engineers", name="engineers")
    appstream.CfnUser(stack, "Lead", user_name="lead@example.com", authentication_type="USERPOOL")
    parameter = cdk.CfnParameter(stack, "ExtraStack", type="String").value_as_string
    UserStackAssociation(stack, "ByRef", stack_name=analysts.ref, user_names=["a@example.com", "b@example.com"])
    UserStackAssociation(
        stack,
        "ByName",
        stack_name="engineers",
        user_names=[f"eng{n:03d}@example.com" for n in range(300)] + ["lead@example.com"],
        shards=4,
        max_concurrency=8,
    )
    UserStackAssociation(
        stack, "ByParameter", stack_name=parameter, user_names=["c@example.com"], authentication_type="SAML"
    )
    UserStackAssociation(stack, "Elsewhere", stack_name="not-in-this-app", user_names=["d@example.com"])
    return app


def test_app_py_stack_passes_aws_solutions_with_one_exact_acknowledgment() -> None:
    app = demo_app.build_app()
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
    assembly = app.synth()  # raises on any unacknowledged finding
    assert suppressed(Path(assembly.directory)) == [
        (DESCRIBE_ACKNOWLEDGMENT, f"{demo_app.STACK_ID}/{PROVIDER_ID}/Policy/Resource", DESCRIBE_ACKNOWLEDGMENT_REASON)
    ]
    for name, template in templates(assembly).items():
        assert cfn_lint(template) == [], name


def test_multi_association_stack_passes_aws_solutions_with_one_exact_acknowledgment(tmp_path: Path) -> None:
    app = multi_association_app(tmp_path)
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
    assembly = app.synth()
    assert suppressed(tmp_path) == [
        (DESCRIBE_ACKNOWLEDGMENT, f"Multi/{PROVIDER_ID}/Policy/Resource", DESCRIBE_ACKNOWLEDGMENT_REASON)
    ]
    (template,) = templates(assembly).values()
    custom = [r for r in template["Resources"].values() if r["Type"] == "Custom::AppStreamUserStackAssociation"]
    assert len(custom) >= 6  # ByRef, ByParameter, Elsewhere, and ByName's 4 shards (shard 3 may be empty)
    assert cfn_lint(template) == []


def test_the_scan_does_catch_an_unacknowledged_wildcard(tmp_path: Path) -> None:
    app = multi_association_app(tmp_path)
    stack = app.node.find_child("Multi")
    assert isinstance(stack, cdk.Stack)
    iam.Policy(
        stack,
        "Unreviewed",
        statements=[iam.PolicyStatement(actions=["appstream:DescribeStacks"], resources=["*"])],
        roles=[iam.Role(stack, "Other", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))],
    )
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
    with pytest.raises(Exception, match=r"AwsSolutions-IAM5"):
        app.synth()


def test_cdk_nag_2_metadata_acknowledges_the_same_finding_on_the_same_resource(tmp_path: Path) -> None:
    assembly = multi_association_app(tmp_path).synth()
    (template,) = templates(assembly).values()
    with_metadata = {
        logical_id: resource["Metadata"]["cdk_nag"]
        for logical_id, resource in template["Resources"].items()
        if "cdk_nag" in resource.get("Metadata", {})
    }
    assert len(with_metadata) == 1
    ((logical_id, metadata),) = with_metadata.items()
    assert template["Resources"][logical_id]["Type"] == "AWS::IAM::Policy"
    assert metadata == {
        "rules_to_suppress": [
            {"id": "AwsSolutions-IAM5", "reason": DESCRIBE_ACKNOWLEDGMENT_REASON, "applies_to": ["Resource::*"]}
        ]
    }
