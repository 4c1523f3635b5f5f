"""Sharding: large user lists over several custom resources, each request under Lambda's limit."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from constructs_lib import AssociationValidationError, UserStackAssociation
from constructs_lib import _sharding as sharding
from tests.helpers.templates import CUSTOM_TYPE, new_stack, resources_of_type

FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:Main-AppStreamUserStackAssociationPro-AbCdEfGhIjKl"
ENVELOPE_ALLOWANCE = 8 * 1024  # RequestType, ids, the pre-signed ResponseURL, ResourceType (~1-2 KB in practice)
LAMBDA_ASYNC_LIMIT = 256 * 1024


def long_names(count: int, start: int = 0) -> list[str]:
    """``count`` distinct 128-character ASCII user names (the API's maximum length)."""
    names = [f"{n:05d}" + "x" * 111 + "@example.com" for n in range(start, start + count)]
    assert {len(name) for name in names} == {128}
    return names


def as_cloudformation_sends(properties: dict[str, Any]) -> dict[str, Any]:
    """ResourceProperties as the function receives them: intrinsics resolved, scalars as strings."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return FUNCTION_ARN if "Fn::GetAtt" in value else {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    return {key: convert(value) for key, value in properties.items()}


def request_bytes(properties: dict[str, Any]) -> int:
    # Default separators (", ", ": ") and \u-escapes: larger than any compact encoding.
    return len(json.dumps(as_cloudformation_sends(properties), ensure_ascii=True))


def custom_resources(template: Template) -> dict[str, Any]:
    return resources_of_type(template, CUSTOM_TYPE)


@dataclass
class Big:
    users: list[str]
    association: UserStackAssociation
    template: Template
    seconds: float


def build(users: list[str], shards: int, stack_id: str = "Main") -> tuple[UserStackAssociation, Template, float]:
    started = time.perf_counter()
    stack = new_stack(stack_id)
    association = UserStackAssociation(stack, "Big", stack_name="big", user_names=users, shards=shards)
    template = Template.from_stack(stack)
    return association, template, time.perf_counter() - started


@pytest.fixture(scope="module")
def big() -> Big:
    """5,000 users of 128 characters, with the smallest shard count that fits (8)."""
    users = long_names(5000)
    random.Random(5).shuffle(users)
    association, template, seconds = build(users, 8)
    return Big(users, association, template, seconds)


def test_one_shard_keeps_the_single_resource_id() -> None:
    stack = new_stack()
    association = UserStackAssociation(stack, "Small", stack_name="s", user_names=["b@example.com", "a@example.com"])
    assert association.shards == 1
    assert [r.node.path for r in association.resources] == ["Main/Small/Resource"]
    assert association.resource is association.resources[0]
    assert association.shard_numbers == [0]
    assert association.shard_user_names == [["a@example.com", "b@example.com"]]
    Template.from_stack(stack).resource_count_is(CUSTOM_TYPE, 1)


def test_too_many_users_for_one_resource_fail_with_the_count_to_use() -> None:
    stack = new_stack()
    with pytest.raises(AssociationValidationError) as caught:
        UserStackAssociation(stack, "Big", stack_name="big", user_names=long_names(5000))
    (problem,) = caught.value.problems
    assert "5000 user names are too many for shards=1: the user list takes 655,001 bytes" in problem
    assert "at most 120,000" in problem
    assert "use shards=16 (room for the list to double)" in problem
    assert stack.node.try_find_child("Big") is None


def test_5000_long_names_fit_every_request_under_the_lambda_limit(big: Big) -> None:
    resources = custom_resources(big.template)
    assert len(resources) == 8
    sizes = {logical_id: request_bytes(r["Properties"]) for logical_id, r in resources.items()}
    assert max(sizes.values()) < 120 * 1024, sizes
    # An Update carries old and new properties; the old ones passed the same check when deployed.
    assert 2 * max(sizes.values()) + ENVELOPE_ALLOWANCE < LAMBDA_ASYNC_LIMIT
    names = [name for r in resources.values() for name in r["Properties"]["UserNames"]]
    assert sorted(names) == sorted(big.users)  # every user exactly once
    assert all(r["Properties"]["UserNames"] == sorted(r["Properties"]["UserNames"]) for r in resources.values())


def test_a_single_resource_at_the_limit_still_fits() -> None:
    users = long_names(916)  # 916 * (128 + 3) + 1 = 119,997 bytes of UserNames: just under the limit
    assert sharding.user_names_bytes(users) <= sharding.MAX_USER_NAMES_BYTES
    _association, template, _ = build(users, 1)
    (resource,) = custom_resources(template).values()
    size = request_bytes(resource["Properties"])
    assert size < 120 * 1024
    assert 2 * size + ENVELOPE_ALLOWANCE < LAMBDA_ASYNC_LIMIT
    with pytest.raises(AssociationValidationError, match=r"too many for shards=1"):
        build(long_names(917), 1)


def test_size_limit_is_exact() -> None:
    def names_of_size(size: int) -> list[str]:
        names = [f"{n:04d}" + "y" * 100 + "@example.com" for n in range(1000)]
        while sharding.user_names_bytes(names) > size:
            names.pop()
        missing = size - sharding.user_names_bytes(names) - 3  # quotes and comma of one more name
        names.append("z" * missing)
        assert sharding.user_names_bytes(names) == size
        return names

    assert sharding.plan_shards(sorted(names_of_size(120_000)), 1).problems == ()
    assert sharding.plan_shards(sorted(names_of_size(120_001)), 1).problems != ()


def test_shard_ids_are_resource_then_shard_numbers(big: Big) -> None:
    association = big.association
    assert association.shard_numbers == list(range(8))
    assert [r.node.id for r in association.resources] == ["Resource", *[f"Shard{k}" for k in range(1, 8)]]
    assert association.resource.node.path == "Main/Big/Resource"


def test_shards_do_not_depend_on_each_other(big: Big) -> None:
    # Moves between shards are safe in any order (the state store keeps a user while any shard
    # declares it): the shards of a deployment run in parallel.
    resources = custom_resources(big.template)
    stack = cdk.Stack.of(big.association)
    ids = [stack.resolve(r.node.default_child.logical_id) for r in big.association.resources]  # type: ignore[union-attr]
    for logical_id in ids:
        assert not set(resources[logical_id].get("DependsOn", [])) & set(ids)


def test_adding_or_removing_one_user_changes_exactly_one_shard(big: Big) -> None:
    before = custom_resources(big.template)
    _, grown, _ = build([*big.users, "newcomer@example.com"], 8)
    _, shrunk, _ = build([u for u in big.users if u != big.users[0]], 8)
    for after, user in ((custom_resources(grown), "newcomer@example.com"), (custom_resources(shrunk), big.users[0])):
        assert sorted(after) == sorted(before)  # the same logical ids
        changed = [logical_id for logical_id in before if before[logical_id] != after[logical_id]]
        assert len(changed) == 1, changed
        (logical_id,) = changed
        old, new = before[logical_id]["Properties"], after[logical_id]["Properties"]
        assert set(old["UserNames"]) ^ set(new["UserNames"]) == {user}
        assert {k: v for k, v in old.items() if k != "UserNames"} == {k: v for k, v in new.items() if k != "UserNames"}


def test_membership_is_pinned() -> None:
    # Changing the hash would move users between shards of deployed associations: never do it.
    assert [sharding.bucket(name, 64) for name in ("alice@example.com", "bob@example.com", "carol@example.com")] == [
        63,
        44,
        46,
    ]
    assert sharding.bucket("alice@example.com", 8) == 63 % 8


@pytest.mark.parametrize(("old", "new"), [(1, 2), (2, 1), (8, 64), (64, 2), (4, 16)])
def test_changing_shards_keeps_the_same_logical_ids_for_the_shards_that_stay(old: int, new: int) -> None:
    users = [f"user{n:04d}@example.com" for n in range(400)]
    _, before, _ = build(users, old, f"From{old}")
    _, after, _ = build(users, new, f"To{new}")
    names_before = sorted(n for r in custom_resources(before).values() for n in r["Properties"]["UserNames"])
    names_after = sorted(n for r in custom_resources(after).values() for n in r["Properties"]["UserNames"])
    assert names_before == names_after == sorted(users)  # every user in exactly one shard, either way
    kept = set(custom_resources(before)) & set(custom_resources(after))
    assert kept  # shard 0 ("Resource") at least: the deploy updates it rather than replacing it


def test_more_shards_than_users_is_allowed() -> None:
    stack = new_stack()
    association = UserStackAssociation(
        stack, "A", stack_name="s", user_names=["a@example.com", "b@example.com"], shards=64
    )
    assert len(association.resources) == 2
    assert association.shard_numbers == sorted(sharding.bucket(name, 64) for name in association.user_names)


def test_upper_half_shards_may_be_empty() -> None:
    # Find two users who share shard 0 of 2: shard 1 is empty, which is allowed.
    pair = [n for n in (f"u{i}@example.com" for i in range(100)) if sharding.bucket(n, 2) == 0][:2]
    stack = new_stack()
    association = UserStackAssociation(stack, "A", stack_name="s", user_names=pair, shards=2)
    assert association.shard_numbers == [0]
    Template.from_stack(stack).resource_count_is(CUSTOM_TYPE, 1)


@pytest.mark.parametrize("shards", [0, 3, 128, -2, True, 2.0, "2"])
def test_shards_must_be_a_power_of_two_up_to_64(shards: Any) -> None:
    with pytest.raises(AssociationValidationError, match=r"must be one of 1, 2, 4, 8, 16, 32, 64"):
        UserStackAssociation(new_stack(), "A", stack_name="s", user_names=["a@example.com"], shards=shards)


def test_a_token_list_cannot_be_sharded() -> None:
    stack = new_stack()
    users = cdk.CfnParameter(stack, "Users", type="CommaDelimitedList").value_as_list
    with pytest.raises(AssociationValidationError, match=r"shards=2 cannot split a token-encoded user list"):
        UserStackAssociation(stack, "A", stack_name="s", user_names=users, shards=2)


def test_token_user_names_go_to_shard_zero() -> None:
    stack = new_stack()
    token = cdk.CfnParameter(stack, "Extra").value_as_string
    users = [f"user{n:03d}@example.com" for n in range(100)]
    association = UserStackAssociation(stack, "A", stack_name="s", user_names=[*users, token], shards=4)
    assert association.shard_user_names[0][-1] == token
    assert all(token not in names for names in association.shard_user_names[1:])
    assert sum(map(len, association.shard_user_names)) == 101


def test_1000_users_synthesize_quickly() -> None:
    _, template, seconds = build(long_names(1000), 2)
    assert sum(len(r["Properties"]["UserNames"]) for r in custom_resources(template).values()) == 1000
    assert seconds < 15, f"1,000 users took {seconds:.1f} s to construct and synthesize"


def test_5000_users_synthesize_in_reasonable_time(big: Big) -> None:
    assert big.seconds < 30, f"5,000 users took {big.seconds:.1f} s to construct and synthesize"
