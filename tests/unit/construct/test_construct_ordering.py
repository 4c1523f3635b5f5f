"""Associations run after the AppStream stacks and users their stack declares, and are deleted first."""

from __future__ import annotations

import aws_cdk as cdk
import jsii
import pytest
from aws_cdk import aws_appstream as appstream
from aws_cdk.assertions import Template

from constructs_lib import UserStackAssociation
from constructs_lib import _sharding as sharding
from tests.helpers.templates import cfn_lint, new_stack


def logical_id(stack: cdk.Stack, resource: cdk.CfnResource | cdk.CustomResource) -> str:
    cfn = resource if isinstance(resource, cdk.CfnResource) else resource.node.default_child
    return str(stack.resolve(cfn.logical_id))  # type: ignore[union-attr]


def depends_on(stack: cdk.Stack, resource: cdk.CustomResource) -> list[str]:
    template = Template.from_stack(stack).to_json()
    return list(template["Resources"][logical_id(stack, resource)].get("DependsOn", []))


@pytest.mark.parametrize("declared", ["before", "after"])
def test_same_literal_stack_name_orders_the_association_after_the_appstream_stack(declared: str) -> None:
    stack = new_stack()
    if declared == "before":
        appstream_stack = appstream.CfnStack(stack, "AppStreamStack", name="analysts")
    association = UserStackAssociation(stack, "A", stack_name="analysts", user_names=["a@example.com"])
    if declared == "after":
        appstream_stack = appstream.CfnStack(stack, "AppStreamStack", name="analysts")
    assert logical_id(stack, appstream_stack) in depends_on(stack, association.resource)


def test_a_stack_name_by_reference_is_ordered_by_the_reference_alone() -> None:
    stack = new_stack()
    appstream_stack = appstream.CfnStack(stack, "AppStreamStack", name="analysts")
    association = UserStackAssociation(stack, "A", stack_name=appstream_stack.ref, user_names=["a@example.com"])
    resource = Template.from_stack(stack).to_json()["Resources"][logical_id(stack, association.resource)]
    target = logical_id(stack, appstream_stack)
    assert resource["Properties"]["StackName"] == {"Ref": target}  # CloudFormation orders by this
    assert target not in resource.get("DependsOn", [])  # a DependsOn would be redundant (cfn-lint W3005)


def test_a_reference_resolved_late_counts_too() -> None:
    stack = new_stack()
    holder: dict[str, appstream.CfnStack] = {}

    @jsii.implements(cdk.IStringProducer)
    class LateRef:
        def produce(self, context: cdk.IResolveContext) -> str:
            return holder["stack"].ref

    name = cdk.Lazy.uncached_string(LateRef())
    association = UserStackAssociation(stack, "A", stack_name=name, user_names=["a@example.com"])
    holder["stack"] = appstream.CfnStack(stack, "AppStreamStack", name="analysts")
    resource = Template.from_stack(stack).to_json()["Resources"][logical_id(stack, association.resource)]
    assert resource["Properties"]["StackName"] == {"Ref": logical_id(stack, holder["stack"])}
    assert logical_id(stack, holder["stack"]) not in resource.get("DependsOn", [])


def test_the_same_parameter_as_stack_name_orders_the_association() -> None:
    stack = new_stack()
    name = cdk.CfnParameter(stack, "StackName").value_as_string
    association = UserStackAssociation(stack, "A", stack_name=name, user_names=["a@example.com"])
    appstream_stack = appstream.CfnStack(stack, "AppStreamStack", name=name)
    assert logical_id(stack, appstream_stack) in depends_on(stack, association.resource)


def test_other_stack_names_are_not_ordered() -> None:
    stack = new_stack()
    appstream.CfnStack(stack, "Other", name="other")
    appstream.CfnStack(stack, "Unnamed")
    association = UserStackAssociation(stack, "A", stack_name="analysts", user_names=["a@example.com"])
    assert [d for d in depends_on(stack, association.resource) if "Provider" not in d] == []


def test_an_appstream_stack_in_another_cdk_stack_is_not_wired() -> None:
    app = cdk.App()
    first = cdk.Stack(app, "First")
    second = cdk.Stack(app, "Second")
    appstream.CfnStack(first, "AppStreamStack", name="analysts")
    association = UserStackAssociation(second, "A", stack_name="analysts", user_names=["a@example.com"])
    assert [d for d in depends_on(second, association.resource) if "Provider" not in d] == []
    assert second.dependencies == []


@pytest.mark.parametrize("declared", ["before", "after"])
def test_a_user_declared_in_the_stack_orders_the_shard_that_holds_it(declared: str) -> None:
    users = [f"user{n:03d}@example.com" for n in range(40)]
    chosen = users[7]
    stack = new_stack()

    def declare() -> appstream.CfnUser:
        return appstream.CfnUser(stack, "User", user_name=chosen, authentication_type="USERPOOL")

    user = declare() if declared == "before" else None
    association = UserStackAssociation(stack, "A", stack_name="analysts", user_names=users, shards=2)
    user = user or declare()
    holder = association.shard_numbers.index(sharding.bucket(chosen, 2))
    target = logical_id(stack, user)
    for index, resource in enumerate(association.resources):
        assert (target in depends_on(stack, resource)) == (index == holder), index


def test_a_user_of_another_authentication_type_is_not_ordered() -> None:
    stack = new_stack()
    appstream.CfnUser(stack, "User", user_name="a@example.com", authentication_type="USERPOOL")
    association = UserStackAssociation(
        stack, "A", stack_name="analysts", user_names=["a@example.com"], authentication_type="SAML"
    )
    assert [d for d in depends_on(stack, association.resource) if "Provider" not in d] == []


def test_a_user_by_reference_is_ordered_by_the_reference_alone() -> None:
    stack = new_stack()
    user = appstream.CfnUser(stack, "User", user_name="a@example.com", authentication_type="USERPOOL")
    association = UserStackAssociation(stack, "A", stack_name="analysts", user_names=[user.ref, "b@example.com"])
    resource = Template.from_stack(stack).to_json()["Resources"][logical_id(stack, association.resource)]
    assert {"Ref": logical_id(stack, user)} in resource["Properties"]["UserNames"]
    assert logical_id(stack, user) not in resource.get("DependsOn", [])


def test_user_name_attribute_of_a_literal_user_is_a_literal_and_is_ordered() -> None:
    stack = new_stack()
    user = appstream.CfnUser(stack, "User", user_name="a@example.com", authentication_type="USERPOOL")
    association = UserStackAssociation(stack, "A", stack_name="analysts", user_names=[user.user_name])
    assert logical_id(stack, user) in depends_on(stack, association.resource)


def test_a_template_with_stacks_users_and_references_is_lint_clean() -> None:
    stack = new_stack()
    literal_stack = appstream.CfnStack(stack, "Literal", name="literal")
    referenced_stack = appstream.CfnStack(stack, "Referenced", name="referenced")
    user = appstream.CfnUser(stack, "User", user_name="a@example.com", authentication_type="USERPOOL")
    by_name = UserStackAssociation(stack, "ByName", stack_name="literal", user_names=["a@example.com", "b@example.com"])
    UserStackAssociation(stack, "ByRef", stack_name=referenced_stack.ref, user_names=[user.ref, "c@example.com"])
    assert {logical_id(stack, literal_stack), logical_id(stack, user)} <= set(depends_on(stack, by_name.resource))
    assert cfn_lint(Template.from_stack(stack).to_json()) == []
