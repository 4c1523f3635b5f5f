"""The synthesized resources: custom resource, shared function, role and policy."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_appstream as appstream
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Match, Template

from constructs_lib import PROVIDER_ID, RESOURCE_TYPE, UserStackAssociation
from constructs_lib._handler import rules
from constructs_lib._provider import AssociationProvider
from constructs_lib._validation import FunctionSettings
from tests.helpers.templates import CUSTOM_TYPE, arn, new_stack, only_logical_id, resources_of_type

USERS = ["carol@example.com", "alice@example.com", "bob@example.com"]


@dataclass
class Synth:
    stack: cdk.Stack
    template: Template
    literal: UserStackAssociation
    tokenized: UserStackAssociation
    same_stack: UserStackAssociation
    token_users: UserStackAssociation
    appstream_stack: appstream.CfnStack
    user_parameter: cdk.CfnParameter

    def resource_id(self, association: UserStackAssociation) -> str:
        return self.stack.get_logical_id(association.resource.node.default_child)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def synth() -> Synth:
    """One stack with four associations: literal name, token name, same name again, token users."""
    stack = new_stack()
    appstream_stack = appstream.CfnStack(stack, "AppStreamStack", name="tokenized-stack")
    user_parameter = cdk.CfnParameter(stack, "ExtraUser", type="String")
    literal = UserStackAssociation(stack, "Literal", stack_name="literal-stack", user_names=USERS)
    tokenized = UserStackAssociation(
        stack,
        "Tokenized",
        stack_name=appstream_stack.ref,
        user_names=["dave@example.com"],
        authentication_type="SAML",
        send_email_notification=True,
        max_concurrency=1,
    )
    same_stack = UserStackAssociation(
        stack, "SameStack", stack_name="literal-stack", user_names=["erin@example.com"], max_concurrency=16
    )
    token_users = UserStackAssociation(
        stack,
        "TokenUsers",
        stack_name="third-stack",
        user_names=["zed@example.com", user_parameter.value_as_string, "amy@example.com"],
    )
    return Synth(
        stack=stack,
        template=Template.from_stack(stack),
        literal=literal,
        tokenized=tokenized,
        same_stack=same_stack,
        token_users=token_users,
        appstream_stack=appstream_stack,
        user_parameter=user_parameter,
    )


def properties_of(template: Template, logical_id: str) -> dict[str, Any]:
    resource = template.to_json()["Resources"][logical_id]
    assert resource["Type"] == CUSTOM_TYPE
    properties = resource["Properties"]
    assert isinstance(properties, dict)
    return properties


def test_resource_type_constant_matches_contract() -> None:
    assert RESOURCE_TYPE == CUSTOM_TYPE


def test_custom_resource_properties_are_exactly_the_contract(synth: Synth) -> None:
    function_id = only_logical_id(synth.template, "AWS::Lambda::Function")
    assert properties_of(synth.template, synth.resource_id(synth.literal)) == {
        "ServiceToken": {"Fn::GetAtt": [function_id, "Arn"]},
        "StackName": "literal-stack",
        "UserNames": ["alice@example.com", "bob@example.com", "carol@example.com"],
        "AuthenticationType": "USERPOOL",
        "SendEmailNotification": False,
        "MaxConcurrency": 4,
        "ExistingAssociations": "adopt",
        "ConstructPath": synth.literal.node.path,
        # twice the function's timeout (180 s here, see test_function_configuration) + 120 s
        "ServiceTimeout": 480,
    }


def test_non_default_arguments_reach_the_properties(synth: Synth) -> None:
    synth.template.has_resource_properties(
        CUSTOM_TYPE,
        {
            "StackName": {"Ref": synth.stack.get_logical_id(synth.appstream_stack)},
            "UserNames": ["dave@example.com"],
            "AuthenticationType": "SAML",
            "SendEmailNotification": True,
            "MaxConcurrency": 1,
        },
    )


def test_every_custom_resource_points_directly_at_the_function(synth: Synth) -> None:
    function_id = only_logical_id(synth.template, "AWS::Lambda::Function")
    custom = resources_of_type(synth.template, CUSTOM_TYPE)
    assert len(custom) == 4
    for resource in custom.values():
        assert resource["Properties"]["ServiceToken"] == {"Fn::GetAtt": [function_id, "Arn"]}


def test_unresolved_user_names_follow_the_sorted_literals(synth: Synth) -> None:
    parameter_id = synth.stack.get_logical_id(synth.user_parameter)
    assert properties_of(synth.template, synth.resource_id(synth.token_users))["UserNames"] == [
        "amy@example.com",
        "zed@example.com",
        {"Ref": parameter_id},
    ]


def test_attributes(synth: Synth) -> None:
    association = synth.literal
    assert isinstance(association.resource, cdk.CustomResource)
    assert association.resource.node.path == "Main/Literal/Resource"
    assert isinstance(association.function, lambda_.Function)
    assert association.function.node.path == f"Main/{PROVIDER_ID}/Function"
    assert association.role.node.path == f"Main/{PROVIDER_ID}/Role"
    assert association.policy.node.path == f"Main/{PROVIDER_ID}/Policy"
    assert association.log_group.node.path == f"Main/{PROVIDER_ID}/LogGroup"
    assert association.resources == [association.resource]
    assert association.shards == 1
    assert association.stack_name == "literal-stack"
    assert association.user_names == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert association.authentication_type == "USERPOOL"
    assert synth.tokenized.authentication_type == "SAML"


def test_associations_of_one_stack_share_one_function_role_and_policy(synth: Synth) -> None:
    synth.template.resource_count_is(CUSTOM_TYPE, 4)
    synth.template.resource_count_is("AWS::Lambda::Function", 1)
    synth.template.resource_count_is("AWS::IAM::Role", 1)
    # the base policy, and one batch policy per AppStream stack: literal-stack, third-stack, and
    # an inline role policy for the token (replaced, not updated, when the name changes)
    synth.template.resource_count_is("AWS::IAM::Policy", 3)
    synth.template.resource_count_is("AWS::IAM::RolePolicy", 1)
    assert synth.literal.stack_policy is synth.same_stack.stack_policy
    associations = [synth.literal, synth.tokenized, synth.same_stack, synth.token_users]
    assert all(a.function is synth.literal.function for a in associations)
    assert all(a.role is synth.literal.role for a in associations)


def test_two_stacks_get_separate_functions() -> None:
    app = cdk.App()
    first = cdk.Stack(app, "First")
    second = cdk.Stack(app, "Second")
    a = UserStackAssociation(first, "A", stack_name="s1", user_names=["a@example.com"])
    b = UserStackAssociation(second, "B", stack_name="s2", user_names=["b@example.com"])
    assert a.function is not b.function
    assert a.function.node.path == f"First/{PROVIDER_ID}/Function"
    assert b.function.node.path == f"Second/{PROVIDER_ID}/Function"
    for stack, name in ((first, "s1"), (second, "s2")):
        template = Template.from_stack(stack)
        template.resource_count_is("AWS::Lambda::Function", 1)
        template.resource_count_is("AWS::IAM::Role", 1)
        template.resource_count_is("AWS::IAM::Policy", 2)
        function_id = only_logical_id(template, "AWS::Lambda::Function")
        template.has_resource_properties(
            CUSTOM_TYPE, {"StackName": name, "ServiceToken": {"Fn::GetAtt": [function_id, "Arn"]}}
        )


def test_association_in_a_nested_construct_uses_the_stack_level_provider() -> None:
    stack = cdk.Stack(cdk.App(), "Nested")
    group = cdk.aws_iam.Group(stack, "SomeConstruct")  # any construct below the stack
    inner = UserStackAssociation(group, "Inner", stack_name="s", user_names=["a@example.com"])
    outer = UserStackAssociation(stack, "Outer", stack_name="s", user_names=["b@example.com"])
    assert inner.function is outer.function
    assert inner.function.node.path == f"Nested/{PROVIDER_ID}/Function"


def policy_statements(template: Template) -> dict[str, list[dict[str, Any]]]:
    return {
        logical_id: policy["Properties"]["PolicyDocument"]["Statement"]
        for type_ in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy")
        for logical_id, policy in resources_of_type(template, type_).items()
    }


def batch_resources(template: Template) -> list[Any]:
    """The resource of every batch statement, one policy each."""
    found = []
    for statements in policy_statements(template).values():
        for statement in statements:
            if "appstream:BatchAssociateUserStack" in statement["Action"]:
                assert statements == [statement], "a batch policy holds nothing else"
                assert statement["Effect"] == "Allow"
                assert sorted(statement["Action"]) == [
                    "appstream:BatchAssociateUserStack",
                    "appstream:BatchDisassociateUserStack",
                ]
                found.append(statement["Resource"])
    return found


def test_policy_allows_batch_actions_only_on_the_named_stacks(synth: Synth) -> None:
    appstream_id = synth.stack.get_logical_id(synth.appstream_stack)
    expected = [
        arn("literal-stack"),  # once, although two associations name it
        {"Fn::Join": ["", [arn(""), {"Ref": appstream_id}]]},
        arn("third-stack"),
    ]
    assert sorted(map(json.dumps, batch_resources(synth.template))) == sorted(map(json.dumps, expected))


def test_base_policy_grants_describe_on_star_and_the_rest_on_exact_resources(synth: Synth) -> None:
    role_id = only_logical_id(synth.template, "AWS::IAM::Role")
    log_group_id = only_logical_id(synth.template, "AWS::Logs::LogGroup")
    table_id = only_logical_id(synth.template, "AWS::DynamoDB::Table")
    base_id = synth.stack.get_logical_id(synth.literal.policy.node.default_child)  # type: ignore[arg-type]
    base = resources_of_type(synth.template, "AWS::IAM::Policy")[base_id]
    assert sorted(base["Properties"]["PolicyDocument"]["Statement"], key=json.dumps) == sorted(
        [
            {"Action": "appstream:DescribeUserStackAssociations", "Effect": "Allow", "Resource": "*"},
            {
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [log_group_id, "Arn"]},
            },
            {
                "Action": [
                    "dynamodb:BatchGetItem",
                    "dynamodb:ConditionCheckItem",
                    "dynamodb:GetItem",
                    "dynamodb:Query",
                    "dynamodb:UpdateItem",
                ],
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [table_id, "Arn"]},
            },
            {
                # Its own stack only: the phase of a deployment and a resource's status.
                "Action": ["cloudformation:DescribeStackResource", "cloudformation:DescribeStacks"],
                "Effect": "Allow",
                "Resource": {"Ref": "AWS::StackId"},
            },
        ],
        key=json.dumps,
    )
    for policy in resources_of_type(synth.template, "AWS::IAM::Policy").values():
        assert policy["Properties"]["Roles"] == [{"Ref": role_id}]
    assert "*" not in batch_resources(synth.template)


def test_one_batch_policy_per_stack_name_in_an_environment_agnostic_stack() -> None:
    # No feature flags here (minimizePolicies off): each AppStream stack's ARN once.
    stack = cdk.Stack(cdk.App(), "Agnostic")
    name = cdk.CfnParameter(stack, "StackNameParam", type="String").value_as_string
    UserStackAssociation(stack, "A", stack_name=name, user_names=["a@example.com"])
    UserStackAssociation(stack, "B", stack_name="plain", user_names=["a@example.com"])
    UserStackAssociation(stack, "C", stack_name="plain", user_names=["d@example.com"])
    prefix = [
        "arn:",
        {"Ref": "AWS::Partition"},
        ":appstream:",
        {"Ref": "AWS::Region"},
        ":",
        {"Ref": "AWS::AccountId"},
    ]
    assert sorted(map(json.dumps, batch_resources(Template.from_stack(stack)))) == sorted(
        map(
            json.dumps,
            [
                {"Fn::Join": ["", [*prefix, ":stack/", {"Ref": "StackNameParam"}]]},
                {"Fn::Join": ["", [*prefix, ":stack/plain"]]},
            ],
        )
    )


def test_renaming_the_stack_keeps_the_old_permission_until_cloudformation_cleans_up() -> None:
    """The old name's policy is a resource of its own that leaves the template: CloudFormation
    deletes it in the cleanup phase, after the Update that disassociates from the old stack."""

    def template(stack_name: str) -> dict[str, Any]:
        stack = new_stack()
        UserStackAssociation(stack, "A", stack_name=stack_name, user_names=["a@example.com"])
        return dict(Template.from_stack(stack).to_json())

    def batch_policy_of(resources: dict[str, Any], name: str) -> str:
        (found,) = [
            logical_id
            for logical_id, resource in resources.items()
            if resource["Type"] == "AWS::IAM::Policy"
            and resource["Properties"]["PolicyDocument"]["Statement"][0]["Resource"] == arn(name)
        ]
        return found

    before, after = template("old-name")["Resources"], template("new-name")["Resources"]
    old_policy, new_policy = batch_policy_of(before, "old-name"), batch_policy_of(after, "new-name")
    assert old_policy != new_policy
    assert old_policy not in after  # deleted in the cleanup phase, not updated in place
    (custom,) = [r for r in after.values() if r["Type"] == CUSTOM_TYPE]
    assert new_policy in custom["DependsOn"]


def test_role_trusts_lambda_and_has_no_other_permissions(synth: Synth) -> None:
    roles = resources_of_type(synth.template, "AWS::IAM::Role")
    (role,) = roles.values()
    # Only the trust policy and a description: no managed policies, no inline policies.
    assert sorted(role["Properties"]) == ["AssumeRolePolicyDocument", "Description"]
    assert role["Properties"]["AssumeRolePolicyDocument"] == {
        "Statement": [
            {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}
        ],
        "Version": "2012-10-17",
    }


def test_custom_resources_depend_on_their_policies_and_the_invoke_config(synth: Synth) -> None:
    invoke_config = only_logical_id(synth.template, "AWS::Lambda::EventInvokeConfig")
    for association in (synth.literal, synth.tokenized, synth.same_stack, synth.token_users):
        base = synth.stack.get_logical_id(association.policy.node.default_child)  # type: ignore[arg-type]
        policy = association.stack_policy
        batch = synth.stack.get_logical_id(
            policy if isinstance(policy, iam.CfnRolePolicy) else policy.node.default_child  # type: ignore[arg-type]
        )
        resource = synth.template.to_json()["Resources"][synth.resource_id(association)]
        assert {base, batch, invoke_config} <= set(resource["DependsOn"]), association.node.path


def test_the_deployment_marker_depends_on_every_batch_policy(synth: Synth) -> None:
    # The marker's cleanup Delete makes a deployment's disassociations: the policy of an old
    # AppStream stack must still exist then, so CloudFormation deletes it after the marker.
    resources = synth.template.to_json()["Resources"]
    [marker] = [key for key, value in resources.items() if value["Type"] == rules.DEPLOYMENT_RESOURCE_TYPE]
    batch_policies = {
        key
        for key, value in resources.items()
        if value["Type"] in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy")
        and "appstream:BatchAssociateUserStack" in json.dumps(value["Properties"]["PolicyDocument"])
    }
    assert len(batch_policies) == 3
    assert batch_policies <= set(resources[marker]["DependsOn"])


def test_a_token_stack_name_gets_an_inline_policy_named_after_the_stack(synth: Synth) -> None:
    # PolicyName is create-only for AWS::IAM::RolePolicy: a new AppStream stack name replaces the
    # policy (new one in the update, old one deleted in the cleanup phase, after the marker), where
    # an AWS::IAM::Policy would be updated in place and lose the old stack before the cleanup.
    role_id = only_logical_id(synth.template, "AWS::IAM::Role")
    stack_ref = {"Ref": synth.stack.resolve(synth.appstream_stack.logical_id)}
    synth.template.has_resource_properties(
        "AWS::IAM::RolePolicy",
        {
            "PolicyName": {"Fn::Join": ["", ["AppStreamBatch-", stack_ref]]},
            "RoleName": {"Ref": role_id},
            "PolicyDocument": {
                "Statement": [
                    {
                        "Action": ["appstream:BatchAssociateUserStack", "appstream:BatchDisassociateUserStack"],
                        "Effect": "Allow",
                        "Resource": {"Fn::Join": ["", [arn(""), stack_ref]]},
                    }
                ]
            },
        },
    )
    assert isinstance(synth.tokenized.stack_policy, iam.CfnRolePolicy)


def test_function_configuration(synth: Synth) -> None:
    role_id = only_logical_id(synth.template, "AWS::IAM::Role")
    log_group_id = only_logical_id(synth.template, "AWS::Logs::LogGroup")
    synth.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.14",
            "Architectures": ["arm64"],
            "Handler": "index.handler",
            # The largest resource holds 1 user on a stack with 4 declared users at concurrency 1:
            # 60 + 2 * 13 * (2 pages + 1 round) = 138 s, rounded up to the 3-minute step.
            "Timeout": 180,
            "MemorySize": 256,
            "Environment": {"Variables": {"LOG_LEVEL": "INFO"}},
            "Description": Match.string_like_regexp("AppStream.*user-stack associations"),
            "Role": {"Fn::GetAtt": [role_id, "Arn"]},
            "LoggingConfig": {"LogGroup": {"Ref": log_group_id}},
        },
    )
    synth.template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 365})


def test_function_uses_the_newest_python_runtime_of_aws_cdk_lib(synth: Synth) -> None:
    versions = {
        int(match.group(1)): name for name in dir(lambda_.Runtime) if (match := re.fullmatch(r"PYTHON_3_(\d+)", name))
    }
    assert len(versions) > 3, sorted(versions)
    newest: lambda_.Runtime = getattr(lambda_.Runtime, versions[max(versions)])
    assert synth.literal.function.runtime.name == newest.name
    synth.template.has_resource_properties("AWS::Lambda::Function", {"Runtime": newest.name})


def test_user_order_does_not_change_the_template() -> None:
    shuffled = list(USERS)
    random.Random(7).shuffle(shuffled)
    assert shuffled != USERS
    templates = []
    for users in (USERS, shuffled, sorted(USERS, reverse=True)):
        stack = cdk.Stack(cdk.App(), "Order")
        UserStackAssociation(stack, "A", stack_name="s", user_names=users)
        templates.append(Template.from_stack(stack).to_json())
    assert templates[0] == templates[1] == templates[2]
    # ...while a different user list does change it (the comparison above can fail).
    other = cdk.Stack(cdk.App(), "Order")
    UserStackAssociation(other, "A", stack_name="s", user_names=[*USERS[:2], "dan@example.com"])
    assert Template.from_stack(other).to_json() != templates[0]


def test_token_encoded_user_list_is_passed_through() -> None:
    stack = cdk.Stack(cdk.App(), "ListParam")
    users = cdk.CfnParameter(stack, "Users", type="CommaDelimitedList").value_as_list
    association = UserStackAssociation(stack, "A", stack_name="s", user_names=users)
    assert association.user_names == users
    Template.from_stack(stack).has_resource_properties(CUSTOM_TYPE, {"UserNames": {"Ref": "Users"}})


def test_the_same_user_and_stack_in_two_associations_of_a_stack_is_allowed() -> None:
    # Both claim the association in the one state store: it stays while either declares it.
    stack = new_stack()
    UserStackAssociation(stack, "First", stack_name="s", user_names=["a@example.com", "b@example.com"])
    UserStackAssociation(stack, "Second", stack_name="s", user_names=["b@example.com", "c@example.com"])
    assert len(resources_of_type(Template.from_stack(stack), CUSTOM_TYPE)) == 2


def test_two_stacks_of_an_app_declaring_one_user_must_share_a_state_store() -> None:
    app = cdk.App()
    first = cdk.Stack(app, "First")
    second = cdk.Stack(app, "Second")
    UserStackAssociation(first, "Team", stack_name="s", user_names=["a@example.com", "b@example.com"])
    UserStackAssociation(second, "Team", stack_name="s", user_names=["b@example.com", "c@example.com"])
    with pytest.raises(
        RuntimeError,
        match=r"First/AppStreamUserStackAssociationProvider and .*Second.* both declare "
        r"b@example.com on s .*state_table=",
    ):
        app.synth()


def test_two_stacks_sharing_one_state_store_may_declare_one_user() -> None:
    app = cdk.App()
    shared = cdk.Stack(app, "Shared")
    table = cdk.aws_dynamodb.Table(
        shared,
        "State",
        partition_key=cdk.aws_dynamodb.Attribute(name="pk", type=cdk.aws_dynamodb.AttributeType.STRING),
        sort_key=cdk.aws_dynamodb.Attribute(name="sk", type=cdk.aws_dynamodb.AttributeType.STRING),
    )
    first = cdk.Stack(app, "First")
    second = cdk.Stack(app, "Second")
    UserStackAssociation(first, "Team", stack_name="s", user_names=["b@example.com"], state_table=table)
    UserStackAssociation(second, "Team", stack_name="s", user_names=["b@example.com"], state_table=table)
    assembly = app.synth()
    for name in ("First", "Second"):
        template = Template.from_json(assembly.get_stack_by_name(name).template)
        template.resource_count_is("AWS::DynamoDB::Table", 0)
        template.has_resource_properties(
            "AWS::Lambda::Function",
            {"Environment": {"Variables": Match.object_like({"STATE_TABLE": {"Fn::ImportValue": Match.any_value()}})}},
        )


def test_provider_rejects_conflicting_function_settings() -> None:
    stack = new_stack()
    UserStackAssociation(stack, "A", stack_name="s", user_names=["a@example.com"], timeout=cdk.Duration.minutes(5))
    provider = AssociationProvider.of(stack)
    assert AssociationProvider.of(stack, FunctionSettings(timeout=cdk.Duration.seconds(300))) is provider
    with pytest.raises(ValueError, match=r"timeout 600 s differs from the 300 s of the function that Main/A created"):
        AssociationProvider.of(stack, FunctionSettings(timeout=cdk.Duration.minutes(10)))


def test_provider_id_is_reserved() -> None:
    stack = new_stack()
    cdk.aws_iam.Group(stack, PROVIDER_ID)
    with pytest.raises(ValueError, match="construct id is reserved"):
        UserStackAssociation(stack, "A", stack_name="s", user_names=["a@example.com"])


def test_function_never_runs_an_event_late_or_twice() -> None:
    """A Lambda retry after CloudFormation gave up would associate users nothing removes."""
    stack = new_stack()
    UserStackAssociation(stack, "Associations", stack_name="demo", user_names=["a@x.com"])
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60, "Qualifier": "$LATEST"},
    )
