"""AppStream, CloudFormation and the state store misbehaving: what one event leaves behind.

Each test injects one kind of fault into a local service and sends one event of a Create, an
Update (adding users) or a Delete (removing them) to ``handle_event``. What users see:

* AppStream holds the event's goal after SUCCESS, or exactly the state before the event after
  FAILED (pre-existing associations included), never a partial one;
* the reason (at most 255 characters) leads with counts and names the error code;
* retries happen where they help and nowhere else: ``INTERNAL_ERROR`` items, 5xx answers, dropped
  connections and timeouts are retried (batch calls are idempotent); modelled exceptions are not.

Every wait is on the fake clock (the AppStream fake's latency is played on it too), except the
hang, which needs a real socket timeout (a client with a 0.1 s read timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.stub import Stubber

from appstream_handler import rules
from appstream_handler.batches import TRANSIENT_ATTEMPTS, ItemRetry
from appstream_handler.handler import Answer
from constructs_lib.testing.events import association_properties
from tests.helpers.calls import (
    BATCH_ASSOCIATE,
    BATCH_DISASSOCIATE,
    DESCRIBE_ASSOCIATIONS,
    batch_calls,
    changing_calls,
    user_names,
    users,
)
from tests.helpers.world import StackDriver, World

STACK = "demo"
NOT_PERMITTED = "OperationNotPermittedException"
BAD_COMBINATION = "InvalidParameterCombinationException"
APP_ID = "handler-fault-tests"
REQUESTS = ["Create", "Update", "Delete"]


@dataclass
class Case:
    """One event ready to send, and the AppStream it starts from and should reach."""

    world: World
    driver: StackDriver
    request_type: str
    event: dict[str, Any]
    names: list[str]
    before: set[tuple[str, str]]

    @property
    def operation(self) -> str:
        """The batch operation the event's work calls."""
        return BATCH_DISASSOCIATE if self.request_type == "Delete" else BATCH_ASSOCIATE

    @property
    def action(self) -> str:
        return "could not be removed" if self.request_type == "Delete" else "could not be associated"

    @property
    def goal(self) -> set[tuple[str, str]]:
        changed = {(STACK, name) for name in self.names}
        return self.before - changed if self.request_type == "Delete" else self.before | changed

    def send(self, *, remaining: float = 300.0, **options: Any) -> Answer:
        return self.driver.send(self.event, remaining=remaining, **options)


def case(world: World, request_type: str, count: int = 3, *, concurrency: int = 1, existing: int = 0) -> Case:
    """A ``request_type`` event that changes ``count`` users (``existing`` more already associated, outside)."""
    names = users(count)
    outside = users(existing, "outside")
    world.seed(stacks=[STACK], users=names + outside + users(2, "base"), associated={STACK: outside})
    options: dict[str, Any] = {"max_concurrency": concurrency}
    if request_type == "Create":
        driver = world.stack()
        driver.begin()
        event = driver.event("Create", "Analysts", association_properties(STACK, names, **options))
    elif request_type == "Update":
        driver = world.deployed({"Analysts": users(2, "base")}, stack=STACK)
        driver.begin_update()
        event = driver.event("Update", "Analysts", association_properties(STACK, users(2, "base") + names, **options))
    else:
        driver = world.deployed({"Analysts": names}, stack=STACK, **options)
        driver.phase("DELETE_IN_PROGRESS")
        event = driver.event("Delete", "Analysts")
    world.appstream.reset_calls()
    world.clock.restart()
    return Case(world, driver, request_type, event, names, world.associations())


def assert_reason(answer: Answer, prefix: str) -> None:
    assert answer.status == "FAILED"
    assert answer.reason.startswith(prefix), answer.reason
    assert len(answer.reason) <= rules.REASON_LIMIT


def on_nth(world: World, operation: str, n: int, action: Callable[[], None]) -> None:
    """Run ``action`` just before the ``n``-th request of ``operation`` is sent."""
    seen = [0]

    def hook(name: str) -> None:
        if name == operation:
            seen[0] += 1
            if seen[0] == n:
                action()

    world.on_appstream_request(hook)


# ---------------------------------------------------------------------------------- INTERNAL_ERROR


@pytest.mark.parametrize("request_type", ["Create", "Delete"])
def test_internal_errors_that_pass_are_retried_item_by_item(world: World, request_type: str) -> None:
    c = case(world, request_type, 3)
    failing = c.names[1]
    world.appstream.faults.internal_error(failing, attempts=2, operation=c.operation)

    answer = c.send()

    assert answer.status == "SUCCESS", answer.reason
    assert world.associations() == c.goal
    sent = user_names(batch_calls(world.appstream.calls, c.operation))
    assert sorted(sent) == sorted([*c.names, failing, failing])  # only the failing item is sent again


@pytest.mark.parametrize("request_type", ["Update", "Delete"])
def test_internal_errors_that_outlast_the_retries_fail_and_are_undone_exactly(world: World, request_type: str) -> None:
    c = case(world, request_type, 3, existing=2)
    failing = c.names[1]
    world.appstream.faults.internal_error(failing, attempts=None, operation=c.operation)

    answer = c.send()

    assert_reason(answer, f"1 of 3 associations {c.action} (INTERNAL_ERROR) on stack {STACK}: {failing}")
    assert "undone" in answer.reason
    assert world.associations() == c.before
    assert user_names(batch_calls(world.appstream.calls, c.operation)).count(failing) == ItemRetry().attempts
    undo = BATCH_ASSOCIATE if c.operation == BATCH_DISASSOCIATE else BATCH_DISASSOCIATE
    assert sorted(user_names(batch_calls(world.appstream.calls, undo))) == [c.names[0], c.names[2]]


# ---------------------------------------------------------------------------- modelled exceptions


@pytest.mark.parametrize(
    ("request_type", "code", "refused"),
    [
        ("Create", NOT_PERMITTED, 1),
        ("Update", BAD_COMBINATION, 2),
        ("Delete", NOT_PERMITTED, 2),
        ("Delete", BAD_COMBINATION, 1),
    ],
)
def test_a_modelled_exception_is_not_retried_and_the_batches_that_landed_are_undone(
    world: World, request_type: str, code: str, refused: int
) -> None:
    c = case(world, request_type, 30 if refused == 2 else 3, existing=1)
    on_nth(world, c.operation, refused, lambda: world.appstream.faults.fail_with(code, operation=c.operation))

    answer = c.send()

    assert answer.status == "FAILED"
    assert code in answer.reason
    assert world.associations() == c.before
    calls = batch_calls(world.appstream.calls, c.operation)
    assert [call.outcome for call in calls].count(code) == 1, "a refused call is not sent again"
    assert len(calls) == refused  # the work stops at the refusal
    landed = 25 if refused == 2 else 0
    undo = BATCH_ASSOCIATE if c.operation == BATCH_DISASSOCIATE else BATCH_DISASSOCIATE
    assert sum(call.item_count for call in batch_calls(world.appstream.calls, undo)) == landed
    assert ("undone" if landed else "Nothing was changed") in answer.reason


def test_a_refusal_is_named_as_such_when_time_is_short(world: World) -> None:
    c = case(world, "Create", 3)
    world.appstream.faults.fail_with(NOT_PERMITTED, operation=BATCH_ASSOCIATE)

    answer = c.send(remaining=40.0)

    assert_reason(answer, f"3 of 3 associations could not be associated ({NOT_PERMITTED} x3)")
    assert world.associations() == c.before


# ---------------------------------------------------------------- 5xx, resets, lost answers, hangs


@pytest.mark.parametrize(("request_type", "fault"), [("Create", "server_error"), ("Delete", "reset_connection")])
def test_transient_transport_faults_are_retried(world: World, request_type: str, fault: str) -> None:
    c = case(world, request_type, 3)
    getattr(world.appstream.faults, fault)(2, operation=c.operation)

    answer = c.send()

    assert answer.status == "SUCCESS", answer.reason
    assert world.associations() == c.goal
    calls = batch_calls(world.appstream.calls, c.operation)
    assert [call.fault is not None for call in calls] == [True, True, False]
    assert len({tuple(user_names([call])) for call in calls}) == 1  # the same batch each time
    assert world.clock.slept > 0  # backoff on the event's clock


@pytest.mark.parametrize(("request_type", "fault"), [("Create", "reset_connection"), ("Delete", "server_error")])
def test_a_batch_that_stays_unanswered_is_undone_whatever_it_did(world: World, request_type: str, fault: str) -> None:
    c = case(world, request_type, 30, existing=2)
    on_nth(
        world, c.operation, 2, lambda: getattr(world.appstream.faults, fault)(TRANSIENT_ATTEMPTS, operation=c.operation)
    )

    answer = c.send()

    assert answer.status == "FAILED"
    assert world.associations() == c.before
    calls = batch_calls(world.appstream.calls, c.operation)
    assert len(calls) == 1 + TRANSIENT_ATTEMPTS
    undo = BATCH_ASSOCIATE if c.operation == BATCH_DISASSOCIATE else BATCH_DISASSOCIATE
    assert sorted(user_names(batch_calls(world.appstream.calls, undo))) == c.names  # the unknown batch too


@pytest.mark.parametrize(
    ("request_type", "lost"), [("Create", 1), ("Create", TRANSIENT_ATTEMPTS), ("Delete", TRANSIENT_ATTEMPTS)]
)
def test_a_batch_that_landed_but_lost_its_answer(world: World, request_type: str, lost: int) -> None:
    """AppStream applied the call and the connection dropped before the answer (the fake's crash)."""
    c = case(world, request_type, 3)
    client = world.appstream_client(user_agent_appid=APP_ID)

    def more() -> None:
        if lost > 1:
            world.appstream.faults.reset_connection(lost - 1, operation=c.operation)

    world.appstream.faults.crash(1, app_id=APP_ID, operation=c.operation, action=more)

    answer = c.send(clients=world.clients_with(appstream=client))

    calls = batch_calls(world.appstream.calls, c.operation)
    assert calls[0].fault == "crash"
    if lost == 1:  # sent again: the batch is idempotent
        assert answer.status == "SUCCESS", answer.reason
        assert world.associations() == c.goal
        assert len(calls) == 2
    else:
        assert answer.status == "FAILED"
        assert world.associations() == c.before  # what landed is undone


@pytest.mark.parametrize("hangs", [1, TRANSIENT_ATTEMPTS], ids=["once", "always"])
def test_a_hanging_call_times_out_and_is_retried_or_undone(world: World, hangs: int) -> None:
    c = case(world, "Create", 3, existing=1)
    client = world.appstream_client(read_timeout=0.1, connect_timeout=1)
    world.appstream.faults.hang(hangs, seconds=0.3, operation=BATCH_ASSOCIATE)

    answer = c.send(clients=world.clients_with(appstream=client))

    assert world.associations() == (c.goal if hangs == 1 else c.before)
    assert answer.status == ("SUCCESS" if hangs == 1 else "FAILED")
    if hangs > 1:
        assert "ReadTimeoutError" in answer.reason


# --------------------------------------------------------------------------- running out of time


@pytest.mark.parametrize("request_type", REQUESTS)
def test_time_running_out_mid_way_undoes_the_batches_that_ran(world: World, request_type: str) -> None:
    c = case(world, request_type, 30, existing=2)
    world.appstream_seconds = 4.0  # every AppStream request takes 4 s of the event's time
    remaining = 50.0

    answer = c.send(remaining=remaining)

    assert_reason(answer, f"5 of 30 associations {c.action} (TIME_RAN_OUT x5)")
    assert "undone" in answer.reason
    assert world.associations() == c.before
    assert len(batch_calls(world.appstream.calls, c.operation)) == 1  # mid-way: one batch ran, not both
    assert world.clock.slept < remaining - rules.CRHELPER_TIMER_LEAD  # answered before crhelper's timer


@pytest.mark.parametrize(("request_type", "remaining"), [("Create", 0.3), ("Create", 20.0), ("Delete", 1.0)])
def test_too_little_time_to_start_anything_changes_nothing(world: World, request_type: str, remaining: float) -> None:
    c = case(world, request_type, 3)

    answer = c.send(remaining=remaining)

    assert answer.status == "FAILED"
    assert "TIME_RAN_OUT" in answer.reason
    assert answer.reason.lower().endswith("nothing was changed")
    assert len(answer.reason) <= rules.REASON_LIMIT
    assert changing_calls(world.appstream.calls) == []
    assert world.associations() == c.before


# ------------------------------------------------------------------------------- Describe fails


@pytest.mark.parametrize(
    ("request_type", "fault"),
    [
        ("Create", NOT_PERMITTED),
        ("Create", "AccessDeniedException"),
        ("Update", "InternalServerError"),
        ("Delete", BAD_COMBINATION),
    ],
)
def test_a_describe_that_fails_changes_nothing(world: World, request_type: str, fault: str) -> None:
    c = case(world, request_type, 3)
    if fault == "InternalServerError":
        world.appstream.faults.server_error(TRANSIENT_ATTEMPTS, operation=DESCRIBE_ASSOCIATIONS)
    else:
        world.appstream.faults.fail_with(fault, operation=DESCRIBE_ASSOCIATIONS)

    answer = c.send()

    assert_reason(answer, f"Could not read the existing associations of stack {STACK} ({fault}")
    assert answer.reason.endswith("nothing was changed")
    assert changing_calls(world.appstream.calls) == []
    assert world.associations() == c.before


def test_a_delete_whose_stack_is_gone_from_appstream_succeeds(world: World) -> None:
    c = case(world, "Delete", 3)
    world.appstream.state.remove_stack(STACK)
    world.appstream.faults.fail_with("ResourceNotFoundException", operation=DESCRIBE_ASSOCIATIONS)

    answer = c.send()

    assert answer.status == "SUCCESS", answer.reason
    assert changing_calls(world.appstream.calls) == []


def test_throttling_of_every_kind_of_call_is_ridden_out_on_the_clock(world: World) -> None:
    world.seed(stacks=[STACK], users=users(6))
    driver = world.deployed({"Analysts": users(3)}, stack=STACK)
    driver.begin_update()
    world.appstream.reset_calls()
    world.appstream.faults.throttle(1, operation=DESCRIBE_ASSOCIATIONS)
    world.appstream.faults.throttle(2, operation=BATCH_ASSOCIATE)
    assert driver.update("Analysts", STACK, users(6)[2:]).status == "SUCCESS"
    world.appstream.faults.throttle(2, operation=BATCH_DISASSOCIATE)
    assert driver.commit().status == "SUCCESS"

    assert world.associations() == {(STACK, name) for name in users(6)[2:]}
    throttled = sorted(call.operation for call in world.appstream.calls if call.throttled)
    assert throttled == sorted([DESCRIBE_ASSOCIATIONS, BATCH_ASSOCIATE, BATCH_ASSOCIATE] + [BATCH_DISASSOCIATE] * 2)
    assert world.clock.slept > 0


# ------------------------------------------------------------------------------ DIRECTORY_NOT_FOUND


def test_directory_not_found_fails_its_item_without_retry_and_undoes_the_rest(world: World) -> None:
    """The fake cannot produce DIRECTORY_NOT_FOUND; botocore's Stubber answers AppStream's calls here."""
    c = case(world, "Create", 3)
    client = world.appstream_client()
    sent: list[tuple[str, list[str]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        sent.append((model.name, sorted(item["UserName"] for item in params.get("UserStackAssociations", []))))

    client.meta.events.register("provide-client-params.appstream.*", record)
    stubber = Stubber(client)
    stubber.add_response("describe_user_stack_associations", {})
    item = {"StackName": STACK, "UserName": c.names[1], "AuthenticationType": "USERPOOL"}
    stubber.add_response(
        "batch_associate_user_stack",
        {"errors": [{"UserStackAssociation": item, "ErrorCode": "DIRECTORY_NOT_FOUND", "ErrorMessage": "No dir."}]},
    )
    stubber.add_response("batch_disassociate_user_stack", {"errors": []})

    with stubber:
        answer = c.send(clients=world.clients_with(appstream=client))
        stubber.assert_no_pending_responses()  # no retry of the item: no further call

    assert_reason(answer, f"1 of 3 associations could not be associated (DIRECTORY_NOT_FOUND) on stack {STACK}")
    assert "undone" in answer.reason
    assert "No dir." in answer.reason
    assert sent == [
        ("DescribeUserStackAssociations", []),
        ("BatchAssociateUserStack", c.names),
        ("BatchDisassociateUserStack", [c.names[0], c.names[2]]),
    ]


# ------------------------------------------------------------------- the undo that cannot finish


def test_an_undo_that_cannot_finish_says_so_and_the_rollback_delete_finishes_it(world: World) -> None:
    c = case(world, "Create", 30, existing=1)

    def refuse_then_break_the_undo() -> None:
        world.appstream.faults.fail_with(NOT_PERMITTED, operation=BATCH_ASSOCIATE)
        world.appstream.faults.internal_error(c.names[0], attempts=None, operation=BATCH_DISASSOCIATE)

    on_nth(world, BATCH_ASSOCIATE, 2, refuse_then_break_the_undo)

    answer = c.send()

    assert answer.status == "FAILED"
    assert "UNDO INCOMPLETE: 1 left changed (INTERNAL_ERROR)" in answer.reason
    assert len(answer.reason) <= rules.REASON_LIMIT
    assert (STACK, c.names[0]) in world.associations()
    world.appstream.faults.clear()
    c.driver.phase("ROLLBACK_IN_PROGRESS")
    rollback = c.driver.send(c.driver.event("Delete", "Analysts", physical_id=answer.physical_resource_id))
    assert rollback.status == "SUCCESS", rollback.reason
    assert world.associations() == c.before


# ------------------------------------------------------------------------------ the commit fails


def test_a_commit_that_cannot_settle_fails_and_the_next_deploy_settles_it(world: World) -> None:
    world.seed(stacks=[STACK], users=users(3))
    driver = world.deployed({"Analysts": users(3)}, stack=STACK)
    driver.begin_update()
    assert driver.update("Analysts", STACK, users(2)).status == "SUCCESS"
    world.appstream.faults.internal_error(users(3)[2], attempts=None, operation=BATCH_DISASSOCIATE)

    commit = driver.commit()

    assert_reason(commit, "Deployment 2: 1 associations could not be settled (INTERNAL_ERROR)")
    assert (STACK, users(3)[2]) in world.associations()
    world.appstream.faults.clear()
    driver.phase("UPDATE_COMPLETE").begin_update()
    assert world.associations() == {(STACK, name) for name in users(2)}


# --------------------------------------------------------------------- the store and CloudFormation


@pytest.mark.parametrize("request_type", ["Create", "Delete"])
def test_a_state_store_that_cannot_be_read_fails_the_event_before_any_appstream_call(
    world: World, request_type: str
) -> None:
    c = case(world, request_type, 3)

    answer = world.handle(c.event, own_stack_id=c.driver.stack_id, table="no-such-table")

    assert_reason(answer, "State store (DynamoDB table no-such-table) failed: ResourceNotFoundException")
    assert answer.reason.endswith("nothing more was changed")
    assert world.appstream.calls == ()


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_cloudformation_unreadable_refuses_a_create_or_update(world: World, request_type: str) -> None:
    c = case(world, request_type, 3)
    world.cloudformation.faults.fail_with("AccessDenied", operation="DescribeStacks")

    answer = c.send()

    assert_reason(answer, "Could not read stack Main from CloudFormation (AccessDenied); nothing was changed")
    assert world.appstream.calls == ()
    assert world.associations() == c.before


def test_cloudformation_unreadable_lets_a_delete_withdraw_only_its_own_grants(world: World) -> None:
    world.seed(stacks=[STACK], users=users(3), associated={STACK: users(1)})
    driver = world.deployed({"Analysts": users(3)}, stack=STACK)  # users(1)[0] existed before
    driver.phase("DELETE_IN_PROGRESS")
    world.cloudformation.faults.fail_with("AccessDenied", operation="DescribeStacks")

    answer = driver.delete("Analysts")

    assert answer.status == "SUCCESS", answer.reason
    assert world.associations() == {(STACK, users(1)[0])}
