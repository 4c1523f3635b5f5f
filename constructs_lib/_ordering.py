"""Order associations after the AppStream stacks and users declared in the same CDK stack.

When a CDK stack declares the AppStream stack (``aws_appstream.CfnStack``) or a user
(``aws_appstream.CfnUser``) that an association names, the association's custom resources must
be created after them and deleted before them. A name given as a token that refers to the
resource (``cfn_stack.ref``) already orders them: CloudFormation follows ``Ref``/``Fn::GetAtt``.
A name given as the same literal (or the same parameter) does not, so a ``DependsOn`` is added.
No ``DependsOn`` is added where a reference already exists (cfn-lint W3005).

This runs at synthesis (from an aspect), so resources declared after the association count too.
Only the L1 classes are recognised, and only in the association's own stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aws_cdk import CfnResource, CustomResource, Stack
from aws_cdk import aws_appstream as appstream

from constructs_lib._records import Declaration
from constructs_lib._tokens import is_unresolved


def _referenced_logical_ids(value: Any) -> set[str]:
    """Logical ids that a resolved CloudFormation value points at with Ref or Fn::GetAtt."""
    found: set[str] = set()
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            ref = item.get("Ref")
            if isinstance(ref, str):
                found.add(ref)
            get_att = item.get("Fn::GetAtt")
            if isinstance(get_att, list) and get_att and isinstance(get_att[0], str):
                found.add(get_att[0])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class _Resolver:
    """Resolves values in one stack to a comparable key, without a jsii call for literals."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def resolved(self, value: object) -> Any:
        if isinstance(value, str) and not is_unresolved(value):
            return value
        return self.stack.resolve(value)

    def key(self, value: object) -> str:
        return json.dumps(self.resolved(value), sort_keys=True)

    def logical_id(self, resource: CfnResource) -> str:
        return str(self.stack.resolve(resource.logical_id))


def _same_stack(construct: CfnResource, stack: Stack) -> bool:
    return Stack.of(construct).node.path == stack.node.path


def order_declarations(stack: Stack, declarations: Iterable[Declaration]) -> None:
    """Make each association's custom resources depend on the AppStream stacks and users it names."""
    associations = list(declarations)
    if not associations:
        return
    resolver = _Resolver(stack)
    stacks_by_name: dict[str, list[appstream.CfnStack]] = {}
    users_by_name: dict[tuple[str, str], list[appstream.CfnUser]] = {}
    for construct in stack.node.find_all():
        if isinstance(construct, appstream.CfnStack) and construct.name is not None:
            if _same_stack(construct, stack):
                stacks_by_name.setdefault(resolver.key(construct.name), []).append(construct)
        elif isinstance(construct, appstream.CfnUser) and _same_stack(construct, stack):
            user_key = (resolver.key(construct.user_name), resolver.key(construct.authentication_type))
            users_by_name.setdefault(user_key, []).append(construct)
    if (
        not stacks_by_name
        and not users_by_name
        and not any(isinstance(construct, appstream.CfnStack) for construct in stack.node.find_all())
    ):
        return

    stack_ids = {resolver.logical_id(item) for items in stacks_by_name.values() for item in items}
    stack_ids |= {
        resolver.logical_id(construct)
        for construct in stack.node.find_all()
        if isinstance(construct, appstream.CfnStack) and _same_stack(construct, stack)
    }
    for association in associations:
        stack_name = resolver.resolved(association.stack_name)
        stack_refs = _referenced_logical_ids(stack_name)
        declared_here = bool(stack_refs & stack_ids)
        for appstream_stack in stacks_by_name.get(json.dumps(stack_name, sort_keys=True), []):
            declared_here = True
            if resolver.logical_id(appstream_stack) not in stack_refs:
                for shard in association.shards:
                    _depend(shard.resource, appstream_stack)
        auth_key = resolver.key(association.authentication_type)
        for shard in association.shards:
            resource, user_names = shard.resource, shard.user_names
            awaited: list[str] = []
            if users_by_name and not is_unresolved(list(user_names)):
                for user_name in user_names:
                    resolved = resolver.resolved(user_name)
                    users = users_by_name.get((json.dumps(resolved, sort_keys=True), auth_key), [])
                    if users:
                        awaited.append(user_name)
                    refs = _referenced_logical_ids(resolved) if users else set()
                    for user in users:
                        if resolver.logical_id(user) not in refs:
                            _depend(resource, user)
            _await(resource, awaited, declared_here)


def _await(resource: CustomResource, users: list[str], stack: bool) -> None:
    """Tell the handler which users and stack this deploy may create moments before it runs.

    AppStream may report a user or stack created a few seconds earlier as not found; the handler
    waits (up to ``NOT_FOUND_WINDOW``) only for those, and fails at once for names it cannot expect.
    """
    cfn = resource.node.default_child
    assert isinstance(cfn, CfnResource)
    if users:
        cfn.add_property_override("AwaitUsers", users)
    if stack:
        cfn.add_property_override("AwaitStack", True)


def _depend(resource: CustomResource, target: CfnResource) -> None:
    resource.node.add_dependency(target)
