"""Create, Update and Delete of one association resource: ids, calls, properties, as a user sees them.

Each test sends CloudFormation's events to ``handle_event`` through a :class:`StackDriver`
(real boto3 clients against the AppStream fake, moto's DynamoDB and the CloudFormation read API,
on a fake clock). Whole-deployment paths (moves, renames, rollbacks, commits) are pinned in
``test_handler_paths.py``; faults in ``test_handler_faults.py``.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from appstream_handler import rules
from appstream_handler.handler import (
    FAILED_CREATE_PREFIX,
    PHYSICAL_ID_PREFIX,
    failed_create_id,
    physical_id,
)
from constructs_lib.testing.events import association_properties, cloudformation_event, stack_id
from tests.helpers.calls import (
    BATCH_ASSOCIATE,
    BATCH_DISASSOCIATE,
    DESCRIBE_ASSOCIATIONS,
    batch_calls,
    batch_items,
    changing_calls,
    email_flags,
    user_names,
    users,
)
from tests.helpers.world import World

STACK = "demo"


@pytest.fixture
def world(shared_world: World) -> World:
    shared_world.reset()
    shared_world.seed(stacks=[STACK, "other"], users=users(40))
    return shared_world


# ------------------------------------------------------------------------------- physical ids


def test_the_physical_id_is_the_same_for_the_same_stack_and_logical_id() -> None:
    main = stack_id("Main", unique="4f1a2b3c-0000-4000-8000-000000000001")
    again = cloudformation_event("Create", association_properties(STACK, ["a@x.com"]), stack=main)
    first = cloudformation_event("Create", association_properties("other", ["b@x.com"]), stack=main)
    assert physical_id(first) == physical_id(again)  # properties and RequestId do not matter
    assert physical_id(first).startswith(PHYSICAL_ID_PREFIX)
    other_logical = {**first, "LogicalResourceId": "Other"}
    other_stack = {**first, "StackId": stack_id("Main", unique="4f1a2b3c-0000-4000-8000-000000000002")}
    assert len({physical_id(first), physical_id(other_logical), physical_id(other_stack)}) == 3
    assert failed_create_id(first).startswith(FAILED_CREATE_PREFIX)
    assert failed_create_id(first) != physical_id(first)
    assert len(physical_id(first).encode()) <= rules.PHYSICAL_ID_LIMIT


def test_a_create_answers_its_id_and_an_update_or_delete_keeps_the_id_it_was_given(world: World) -> None:
    driver = world.stack()
    driver.begin()
    created = driver.create("Analysts", STACK, users(2))
    assert created.status == "SUCCESS", created.reason
    assert created.physical_resource_id == physical_id(driver.event("Create", "Analysts"))
    driver.phase("CREATE_COMPLETE").begin_update()
    updated = driver.update("Analysts", STACK, users(3))
    assert updated.physical_resource_id == created.physical_resource_id  # a new id would be a replacement
    failed = driver.update("Analysts", STACK, [*users(3), "ghost@example.com"])
    assert failed.status == "FAILED"
    assert failed.physical_resource_id == created.physical_resource_id
    driver.phase("UPDATE_COMPLETE").phase("DELETE_IN_PROGRESS")
    deleted = driver.delete("Analysts")
    assert (deleted.status, deleted.physical_resource_id) == ("SUCCESS", created.physical_resource_id)


def test_a_failed_create_answers_the_failed_id_and_its_rollback_delete_keeps_what_existed(world: World) -> None:
    world.seed(associated={STACK: users(1)})
    driver = world.stack()
    driver.begin()
    event = driver.event("Create", "Analysts", association_properties(STACK, [*users(3), "ghost@example.com"]))
    failed = driver.send(event)
    assert failed.status == "FAILED"
    assert failed.physical_resource_id == failed_create_id(event)
    assert world.associations() == {(STACK, users(1)[0])}
    world.appstream.reset_calls()
    driver.phase("ROLLBACK_IN_PROGRESS")
    rollback = driver.send(driver.event("Delete", "Analysts", physical_id=failed.physical_resource_id))
    assert (rollback.status, rollback.physical_resource_id) == ("SUCCESS", failed.physical_resource_id)
    assert changing_calls(world.appstream.calls) == []  # the failed Create undid its own work
    assert world.associations() == {(STACK, users(1)[0])}


# ------------------------------------------------------------------------------------- Create


def test_create_reads_first_then_associates_sorted_users_in_batches_of_at_most_25(world: World) -> None:
    names = users(26)
    shuffled = random.Random(7).sample(names, len(names))
    driver = world.stack()
    driver.begin()
    world.appstream.reset_calls()

    answer = driver.create("Analysts", STACK, shuffled, max_concurrency=1)

    assert answer.status == "SUCCESS", answer.reason
    assert world.associations() == {(STACK, name) for name in names}
    assert world.appstream.calls[0].operation == DESCRIBE_ASSOCIATIONS, "existing associations are read first"
    calls = batch_calls(world.appstream.calls, BATCH_ASSOCIATE)
    assert [call.item_count for call in calls] == [25, 1]
    assert user_names(calls) == sorted(names)  # deterministic: same input, same calls
    assert {item["AuthenticationType"] for call in calls for item in batch_items(call)} == {"USERPOOL"}


def test_concurrent_batches_still_carry_consecutive_sorted_users(world: World) -> None:
    names = users(27)
    driver = world.stack()
    driver.begin()
    world.appstream.reset_calls()

    assert driver.create("Analysts", STACK, names[::-1], max_concurrency=4).status == "SUCCESS"

    calls = batch_calls(world.appstream.calls, BATCH_ASSOCIATE)
    batches = sorted((user_names([call]) for call in calls), key=lambda batch: batch[0])
    assert batches == [names[:25], names[25:]]


def test_users_already_associated_are_claimed_without_a_batch_call(world: World) -> None:
    world.seed(associated={STACK: users(3)})
    driver = world.stack()
    driver.begin()
    world.appstream.reset_calls()

    assert driver.create("Analysts", STACK, users(3)).status == "SUCCESS"

    assert changing_calls(world.appstream.calls) == []
    assert [call.operation for call in world.appstream.calls] == [DESCRIBE_ASSOCIATIONS]


def test_a_create_on_a_missing_appstream_stack_fails_naming_the_code_and_the_stack(world: World) -> None:
    driver = world.stack()
    driver.begin()
    answer = driver.create("Analysts", "nowhere", users(2))
    assert answer.status == "FAILED"
    assert answer.reason.startswith("2 of 2 associations could not be associated (STACK_NOT_FOUND x2) on stack nowhere")
    assert world.associations() == set()


# -------------------------------------------------------------------------- email notification


def test_send_email_notification_goes_only_with_associations_the_template_declares(world: World) -> None:
    driver = world.stack()
    driver.begin()
    world.appstream.reset_calls()
    assert driver.create("Analysts", STACK, users(3), send_email_notification=True).status == "SUCCESS"
    assert email_flags(batch_calls(world.appstream.calls, BATCH_ASSOCIATE)) == {True}

    # A Delete that fails puts back what it removed: without an e-mail.
    driver.phase("CREATE_COMPLETE").phase("DELETE_IN_PROGRESS")
    world.appstream.faults.internal_error(users(3)[1], attempts=None, operation=BATCH_DISASSOCIATE)
    world.appstream.reset_calls()
    failed = driver.delete("Analysts")
    assert failed.status == "FAILED"
    assert world.associations() == {(STACK, name) for name in users(3)}
    assert email_flags(batch_calls(world.appstream.calls, BATCH_DISASSOCIATE)) == {None}
    restored = batch_calls(world.appstream.calls, BATCH_ASSOCIATE)
    assert sorted(user_names(restored)) == [users(3)[0], users(3)[2]]
    assert True not in email_flags(restored)


def test_a_rollback_that_restores_access_sends_no_email(world: World) -> None:
    driver = world.deployed({"Analysts": users(2)}, stack=STACK)
    driver.begin_update()
    old = dict(driver.properties["Analysts"])
    new = association_properties(STACK, users(1), send_email_notification=True)
    assert driver.send(driver.event("Update", "Analysts", new, old=old)).status == "SUCCESS"
    world.appstream.state.disassociate(STACK, users(2)[1])  # removed by hand meanwhile
    driver.phase("UPDATE_ROLLBACK_IN_PROGRESS")
    world.appstream.reset_calls()

    back = driver.send(driver.event("Update", "Analysts", old, old=driver.properties["Analysts"]))

    assert back.status == "SUCCESS", back.reason
    assert world.associations() == {(STACK, name) for name in users(2)}
    assert True not in email_flags(batch_calls(world.appstream.calls, BATCH_ASSOCIATE))


def test_a_rollback_that_restores_one_user_and_withdraws_another_does_both(world: World) -> None:
    a, b, c = users(3)
    driver = world.deployed({"Analysts": [a, b]}, stack=STACK)
    driver.begin_update()
    old = dict(driver.properties["Analysts"])
    assert driver.update("Analysts", STACK, [a, b, c]).status == "SUCCESS"
    world.appstream.state.disassociate(STACK, b)  # removed by hand meanwhile
    driver.phase("UPDATE_ROLLBACK_IN_PROGRESS")
    world.appstream.reset_calls()

    back = driver.send(driver.event("Update", "Analysts", old, old=driver.properties["Analysts"]))

    assert back.status == "SUCCESS", back.reason
    assert world.associations() == {(STACK, a), (STACK, b)}  # b put back, c (added by the failed deploy) gone
    assert user_names(batch_calls(world.appstream.calls, BATCH_DISASSOCIATE)) == [c]


# ------------------------------------------------------------------------------------- Update


def test_an_update_of_options_alone_makes_no_batch_call(world: World) -> None:
    driver = world.deployed({"Analysts": users(2)}, stack=STACK)
    driver.begin_update()
    world.appstream.reset_calls()

    answer = driver.update("Analysts", STACK, users(2), send_email_notification=True, max_concurrency=8)

    assert answer.status == "SUCCESS", answer.reason
    assert changing_calls(world.appstream.calls) == []


def test_an_update_to_another_appstream_stack_adds_there_at_once_and_leaves_the_old_at_the_commit(
    world: World,
) -> None:
    driver = world.deployed({"Analysts": users(2)}, stack=STACK)
    driver.begin_update()

    assert driver.update("Analysts", "other", users(2)).status == "SUCCESS"
    assert world.associations() == {(stack, name) for stack in (STACK, "other") for name in users(2)}
    assert driver.commit().status == "SUCCESS"
    assert world.associations() == {("other", name) for name in users(2)}


def test_an_update_whose_old_properties_are_malformed_needs_them_not(world: World) -> None:
    driver = world.deployed({"Analysts": users(2)}, stack=STACK)
    driver.begin_update()
    event = driver.event("Update", "Analysts", association_properties(STACK, users(3)), old={"StackName": 5})

    assert driver.send(event).status == "SUCCESS"
    driver.commit()
    assert world.associations() == {(STACK, name) for name in users(3)}


# ------------------------------------------------------------------------------------- Delete


def test_a_delete_withdraws_what_the_resource_granted_and_nothing_else(world: World) -> None:
    names = users(3)
    world.seed(associated={STACK: ["user039@example.com"]})
    driver = world.deployed({"Analysts": names}, stack=STACK)
    driver.phase("DELETE_IN_PROGRESS")
    world.appstream.reset_calls()

    answer = driver.delete("Analysts")

    assert answer.status == "SUCCESS", answer.reason
    assert world.associations() == {(STACK, "user039@example.com")}
    assert [call.item_count for call in batch_calls(world.appstream.calls, BATCH_DISASSOCIATE)] == [3]
    assert email_flags(batch_calls(world.appstream.calls, BATCH_DISASSOCIATE)) == {None}


@pytest.mark.parametrize("gone", ["stack", "user"])
def test_a_delete_succeeds_when_the_stack_or_a_user_is_already_gone(world: World, gone: str) -> None:
    driver = world.deployed({"Analysts": users(2)}, stack=STACK)
    if gone == "stack":
        world.appstream.state.remove_stack(STACK)
    else:
        world.appstream.state.remove_user(users(2)[0])
    driver.phase("DELETE_IN_PROGRESS")

    answer = driver.delete("Analysts")

    assert answer.status == "SUCCESS", answer.reason
    assert world.associations() == set()


def test_a_delete_with_malformed_properties_withdraws_by_record(world: World) -> None:
    driver = world.deployed({"Analysts": users(2)}, stack=STACK)
    driver.phase("DELETE_IN_PROGRESS")

    answer = driver.send(driver.event("Delete", "Analysts", {"StackName": 5, "UserNames": "nope"}))

    assert answer.status == "SUCCESS", answer.reason
    assert world.associations() == set()


def test_a_delete_of_an_id_never_handed_out_touches_nothing_it_did_not_grant(world: World) -> None:
    world.seed(associated={STACK: users(1)})
    driver = world.stack()
    driver.begin()
    driver.phase("ROLLBACK_IN_PROGRESS")
    world.appstream.reset_calls()

    answer = driver.send(driver.event("Delete", "Analysts", association_properties(STACK, users(1)), physical_id="x"))

    assert (answer.status, answer.physical_resource_id) == ("SUCCESS", "x")
    assert changing_calls(world.appstream.calls) == []
    assert world.associations() == {(STACK, users(1)[0])}


# ---------------------------------------------------------------------------- malformed input

MALFORMED: dict[str, tuple[Any, str]] = {
    "no properties": (None, "expected a map"),
    "missing StackName": ({"UserNames": ["a@x.com"], "AuthenticationType": "USERPOOL"}, "StackName is missing"),
    "stack name with slash": (
        {"StackName": "a/b", "UserNames": ["a@x.com"], "AuthenticationType": "USERPOOL"},
        "'a/b' is not an AppStream stack name",
    ),
    "users not a list": (
        {"StackName": STACK, "UserNames": "a@x.com,b@x.com", "AuthenticationType": "USERPOOL"},
        "UserNames must be a list",
    ),
    "empty users": ({"StackName": STACK, "UserNames": [], "AuthenticationType": "USERPOOL"}, "UserNames is empty"),
    "user with space": (
        {"StackName": STACK, "UserNames": ["a b@x.com"], "AuthenticationType": "USERPOOL"},
        "UserNames[0] 'a b@x.com' is not a user name",
    ),
    "duplicate user": (
        {"StackName": STACK, "UserNames": ["a@x.com", "a@x.com"], "AuthenticationType": "USERPOOL"},
        "duplicates: 'a@x.com'",
    ),
    "unknown auth": (
        {"StackName": STACK, "UserNames": ["a@x.com"], "AuthenticationType": "LDAP"},
        "AuthenticationType must be one of",
    ),
    "bad bool": (
        {
            "StackName": STACK,
            "UserNames": ["a@x.com"],
            "AuthenticationType": "USERPOOL",
            "SendEmailNotification": "yes",
        },
        "SendEmailNotification must be 'true' or 'false'",
    ),
    "bad concurrency": (
        {"StackName": STACK, "UserNames": ["a@x.com"], "AuthenticationType": "USERPOOL", "MaxConcurrency": "0"},
        "MaxConcurrency must be a whole number 1-16",
    ),
}


@pytest.mark.parametrize("request_type", ["Create", "Update"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_properties_get_one_failed_answer_with_a_clear_reason_and_no_call(
    shared_world: World, case: str, request_type: str
) -> None:
    world = shared_world  # nothing is read or written: the event fails before any call
    world.appstream.reset_calls()
    world.cloudformation.reset_calls()
    raw, expected = MALFORMED[case]
    main = stack_id("Main")
    event = cloudformation_event(
        request_type,
        None,
        stack=main,
        physical_id=None if request_type == "Create" else PHYSICAL_ID_PREFIX + "0123",
        old_properties=association_properties(STACK, ["a@x.com"]) if request_type == "Update" else None,
    )
    event["ResourceProperties"] = raw

    answer = world.handle(event, own_stack_id=main)

    assert answer.status == "FAILED"
    assert answer.reason.startswith("ResourceProperties malformed: ")
    assert expected in answer.reason
    assert len(answer.reason) <= rules.REASON_LIMIT
    assert answer.physical_resource_id, "CloudFormation rejects an empty PhysicalResourceId"
    assert world.appstream.calls == ()
    assert world.cloudformation.calls == ()


def test_a_live_event_of_another_stack_is_refused_without_calls_or_writes(world: World) -> None:
    """Another stack's event, really in progress there, reaches this stack's function (a shared token)."""
    mine = world.stack()
    other = world.stack("Other")
    other.begin()
    event = other.event("Create", "Grant", association_properties(STACK, users(1)))
    world.registry.set_resource(other.stack_id, "Grant", rules.RESOURCE_TYPE, "CREATE_IN_PROGRESS")
    world.appstream.reset_calls()
    items = world.items()

    answer = world.handle(event, own_stack_id=mine.stack_id)

    assert answer.status == "FAILED"
    assert answer.reason.startswith("Refused: this function serves stack Main, not Other; nothing was changed")
    assert world.appstream.calls == ()
    assert world.items() == items
    assert other.send(event).status == "SUCCESS"  # the same event, to its own stack's function


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("RequestType", "Destroy", "Unknown RequestType 'Destroy'"),
        ("RequestType", None, "Unknown RequestType 'None'"),
        ("ResourceType", "Custom::Other", "Unknown ResourceType 'Custom::Other'"),
    ],
)
def test_an_unknown_request_or_resource_type_is_refused_without_calls(
    shared_world: World, field: str, value: object, expected: str
) -> None:
    world = shared_world
    world.appstream.reset_calls()
    main = stack_id("Main")
    event = cloudformation_event("Create", association_properties(STACK, ["a@x.com"]), stack=main)
    event[field] = value

    answer = world.handle(event, own_stack_id=main)

    assert answer.status == "FAILED"
    assert answer.reason.startswith(expected)
    assert answer.physical_resource_id
    assert world.appstream.calls == ()


# ------------------------------------------------------------------------------------------ logs


def test_logs_hold_counts_but_no_user_names(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = ["alice.secret@example.com", "bob.secret@example.com"]
    world.seed(users=secret)
    driver = world.stack()
    driver.begin()

    assert driver.create("Analysts", STACK, secret).status == "SUCCESS"
    assert driver.create("Other", STACK, [*secret, "ghost.secret@example.com"]).status == "FAILED"
    driver.phase("CREATE_COMPLETE").phase("DELETE_IN_PROGRESS")
    assert driver.delete("Analysts").status == "SUCCESS"

    text = "\n".join(
        f"{record.name} {record.getMessage()}"
        for record in caplog.records
        if record.name.startswith("appstream_handler")
    )
    assert "2 to associate" in text
    assert "secret@example.com" not in text
