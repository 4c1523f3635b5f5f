"""What the construct adds so the handler can hold AppStream equal to the templates.

The state table, the deployment marker every association depends on, the function's environment
(its own stack, its table, the library's version), the new properties, and the help text.
"""

from __future__ import annotations

import inspect
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_appstream as appstream
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk.assertions import Match, Template

from constructs_lib import UserStackAssociation, __version__
from constructs_lib._handler import rules
from constructs_lib._validation import AssociationValidationError
from tests.helpers.templates import CUSTOM_TYPE, new_stack, only_logical_id, resources_of_type

DEPLOYMENT_TYPE = rules.DEPLOYMENT_RESOURCE_TYPE


def synth(build: Any) -> tuple[cdk.Stack, Template]:
    stack = new_stack()
    build(stack)
    return stack, Template.from_stack(stack)


def marker(template: Template) -> dict[str, Any]:
    found = resources_of_type(template, DEPLOYMENT_TYPE)
    assert len(found) == 1
    return dict(next(iter(found.values())))


@pytest.fixture(scope="module")
def two() -> tuple[cdk.Stack, Template]:
    def build(stack: cdk.Stack) -> None:
        cfn_stack = appstream.CfnStack(stack, "AppStreamStack", name="analysts")
        appstream.CfnUser(stack, "NewUser", user_name="b@x.com", authentication_type="USERPOOL")
        UserStackAssociation(stack, "Analysts", stack_name=cfn_stack.ref, user_names=["a@x.com", "b@x.com"])
        UserStackAssociation(stack, "Admins", stack_name="admins", user_names=["c@x.com"], existing_associations="keep")

    return synth(build)


def test_the_state_table_is_on_demand_recoverable_encrypted_and_expires_tombstones(
    two: tuple[cdk.Stack, Template],
) -> None:
    _, template = two
    template.resource_count_is("AWS::DynamoDB::Table", 1)
    template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "Properties": {
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                "BillingMode": "PAY_PER_REQUEST",
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True},
                "TimeToLiveSpecification": {"AttributeName": "expires", "Enabled": True},
            },
            "DeletionPolicy": "Delete",
        },
    )


def test_the_function_knows_its_stack_its_table_and_the_library_version(two: tuple[cdk.Stack, Template]) -> None:
    _, template = two
    table_id = only_logical_id(template, "AWS::DynamoDB::Table")
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Environment": {
                "Variables": {
                    "LOG_LEVEL": "INFO",
                    "OWN_STACK_ID": {"Ref": "AWS::StackId"},
                    "STATE_TABLE": {"Ref": table_id},
                    "APPSTREAM_ASSOCIATIONS_VERSION": __version__,
                }
            }
        },
    )


def test_every_association_depends_on_the_deployment_marker(two: tuple[cdk.Stack, Template]) -> None:
    _, template = two
    marker_id = only_logical_id(template, DEPLOYMENT_TYPE)
    for resource in resources_of_type(template, CUSTOM_TYPE).values():
        assert marker_id in resource["DependsOn"]


def test_the_marker_runs_on_the_same_function_with_permissions_in_place(two: tuple[cdk.Stack, Template]) -> None:
    stack, template = two
    function_id = only_logical_id(template, "AWS::Lambda::Function")
    found = marker(template)
    assert found["Properties"]["ServiceToken"] == {"Fn::GetAtt": [function_id, "Arn"]}
    association = stack.node.find_child("Analysts")
    assert isinstance(association, UserStackAssociation)
    base_policy = stack.get_logical_id(association.policy.node.default_child)  # type: ignore[arg-type]
    assert base_policy in found["DependsOn"]
    assert (
        found["Properties"]["ServiceTimeout"]
        == resources_of_type(template, CUSTOM_TYPE)[next(iter(resources_of_type(template, CUSTOM_TYPE)))]["Properties"][
            "ServiceTimeout"
        ]
    )


def test_the_marker_lists_the_references_cloudformation_resolves_at_deployment(two: tuple[cdk.Stack, Template]) -> None:
    stack, template = two
    cfn_stack_id = stack.get_logical_id(stack.node.find_child("AppStreamStack"))  # type: ignore[arg-type]
    assert marker(template)["Properties"]["References"] == [{"Ref": cfn_stack_id}]


def generation(build: Any) -> str:
    return str(marker(synth(build)[1])["Properties"]["Generation"])


def test_the_generation_changes_exactly_when_an_association_does() -> None:
    def base(stack: cdk.Stack, users: list[str] | None = None, name: str = "Team", **extra: Any) -> None:
        UserStackAssociation(stack, name, stack_name="s", user_names=users or ["a@x.com", "b@x.com"], **extra)

    first = generation(base)
    assert generation(base) == first  # deterministic
    assert generation(lambda stack: base(stack, ["b@x.com", "a@x.com"])) == first  # order does not matter
    assert generation(lambda stack: base(stack, ["a@x.com"])) != first  # a user removed
    assert generation(lambda stack: base(stack, name="Renamed")) != first  # a new logical id
    assert generation(lambda stack: base(stack, send_email_notification=True)) != first

    def unrelated(stack: cdk.Stack) -> None:
        base(stack)
        cdk.aws_sqs.Queue(stack, "Queue")

    assert generation(unrelated) == first  # other resources leave it alone


def test_existing_associations_reaches_the_properties(two: tuple[cdk.Stack, Template]) -> None:
    _, template = two
    template.has_resource_properties(CUSTOM_TYPE, {"UserNames": ["c@x.com"], "ExistingAssociations": "keep"})
    template.has_resource_properties(
        CUSTOM_TYPE, {"UserNames": ["a@x.com", "b@x.com"], "ExistingAssociations": "adopt"}
    )


@pytest.mark.parametrize("value", ["ADOPT", "retain", "", None, True])
def test_existing_associations_must_be_adopt_or_keep(value: Any) -> None:
    with pytest.raises(AssociationValidationError, match=r"existing_associations .* must be 'adopt' .* or 'keep'"):
        UserStackAssociation(new_stack(), "A", stack_name="s", user_names=["a@x.com"], existing_associations=value)


def test_a_shared_state_table_replaces_the_stack_s_own() -> None:
    app = cdk.App()
    shared = cdk.Stack(app, "Shared")
    table = dynamodb.Table(
        shared,
        "State",
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
    )
    user = cdk.Stack(app, "User")
    association = UserStackAssociation(user, "A", stack_name="s", user_names=["a@x.com"], state_table=table)
    assert association.state_table is table
    template = Template.from_stack(user)
    template.resource_count_is("AWS::DynamoDB::Table", 0)
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Action": Match.array_with(["dynamodb:UpdateItem"]), "Resource": Match.any_value()}
                        )
                    ]
                )
            }
        },
    )


def test_a_state_table_that_is_not_a_table_is_rejected() -> None:
    with pytest.raises(AssociationValidationError, match=r"state_table must be an aws_dynamodb.ITable"):
        UserStackAssociation(new_stack(), "A", stack_name="s", user_names=["a@x.com"], state_table="state")  # type: ignore[arg-type]


def test_a_second_association_with_another_state_table_is_a_conflict() -> None:
    stack = new_stack()
    other = dynamodb.Table.from_table_name(stack, "Other", "other-table")
    UserStackAssociation(stack, "A", stack_name="s", user_names=["a@x.com"])
    with pytest.raises(AssociationValidationError, match=r"state_table .* differs from the default"):
        UserStackAssociation(stack, "B", stack_name="s", user_names=["b@x.com"], state_table=other)


def test_help_shows_the_real_signature() -> None:
    signature = inspect.signature(UserStackAssociation)
    assert list(signature.parameters)[:3] == ["scope", "id", "stack_name"]
    assert "state_table" in signature.parameters
    assert signature.parameters["shards"].default == 1
    doc = inspect.getdoc(UserStackAssociation) or ""
    assert ":param timeout: (function-level) the function's timeout, 60 s to 15 minutes" in doc


def test_users_and_stacks_the_same_deploy_creates_are_awaited_the_others_not(two: tuple[cdk.Stack, Template]) -> None:
    _, template = two
    template.has_resource_properties(
        CUSTOM_TYPE, {"UserNames": ["a@x.com", "b@x.com"], "AwaitUsers": ["b@x.com"], "AwaitStack": True}
    )
    template.has_resource_properties(
        CUSTOM_TYPE, {"UserNames": ["c@x.com"], "AwaitUsers": Match.absent(), "AwaitStack": Match.absent()}
    )
