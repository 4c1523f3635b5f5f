"""The AppStream runner, the event's time budget and the pacer, on a fake clock.

:class:`~appstream_handler.batches.AppStreamRunner` gets a real boto3 client (one attempt per
call, as the function builds it) reaching the AppStream fake; every wait is a sleep on the
world's :class:`FakeClock`. The whole event's behaviour under the same faults is in
``test_handler_faults.py``; sustained rate limits in ``test_handler_pacing.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st

from appstream_handler import rules
from appstream_handler.batches import (
    CALL_HEADROOM,
    THROTTLED,
    TIME_RAN_OUT,
    TRANSIENT_ATTEMPTS,
    AppStreamRunner,
    DescribeFailed,
    ItemRetry,
    Operation,
    Outcome,
)
from appstream_handler.deadline import Budget, Deadline
from appstream_handler.model import Association
from appstream_handler.pacing import FIRST_PROBE_WAIT, Pacer
from tests.helpers.calls import BATCH_ASSOCIATE, BATCH_DISASSOCIATE, DESCRIBE_ASSOCIATIONS, batch_calls, users
from tests.helpers.fuzzing import quick
from tests.helpers.world import FakeClock, World

STACK = "demo"


@pytest.fixture
def world(shared_world: World) -> World:
    shared_world.reset()
    shared_world.seed(stacks=[STACK], users=users(10))
    return shared_world


def runner(world: World, client: Any = None, **options: Any) -> AppStreamRunner:
    return AppStreamRunner(
        client or world.clients.appstream,
        max_concurrency=1,
        clock=world.clock.monotonic,
        sleep=world.clock.sleep,
        **options,
    )


def items(names: list[str], stack: str = STACK) -> list[Association]:
    return [Association(stack, name, "USERPOOL") for name in names]


def deadline(world: World, seconds: float = 300.0) -> Deadline:
    return Deadline(seconds, world.clock.monotonic)


def associate(world: World, batch: list[Association], *, until: Deadline | None = None, **options: Any) -> Outcome:
    return runner(world, **options).run_batch(
        Operation.ASSOCIATE, batch, send_email=False, deadline=until or deadline(world)
    )


# ----------------------------------------------------------------------------------- existing


def test_existing_reads_every_page_of_every_stack(world: World) -> None:
    many = users(501, "page")
    world.seed(stacks=["other"], users=many, associated={STACK: many, "other": many[:2]})

    found = runner(world).existing([STACK, "other", STACK], deadline(world))

    assert found == set(items(many)) | set(items(many[:2], "other"))
    describes = batch_calls(world.appstream.calls, DESCRIBE_ASSOCIATIONS)
    assert len(describes) == 3  # two pages for demo, one for other
    assert {call.body.get("MaxResults") for call in describes} == {rules.DESCRIBE_PAGE_SIZE}


def test_existing_finds_nothing_on_a_stack_that_is_gone(world: World) -> None:
    world.appstream.faults.fail_with("ResourceNotFoundException", operation=DESCRIBE_ASSOCIATIONS)
    assert runner(world).existing([STACK], deadline(world)) == set()


@pytest.mark.parametrize(("fault", "calls"), [("fail_with", 1), ("server_error", TRANSIENT_ATTEMPTS)])
def test_existing_that_cannot_be_read_says_which_stack_and_why(world: World, fault: str, calls: int) -> None:
    if fault == "fail_with":
        world.appstream.faults.fail_with("AccessDeniedException", operation=DESCRIBE_ASSOCIATIONS, message="No.")
    else:
        world.appstream.faults.server_error(TRANSIENT_ATTEMPTS, operation=DESCRIBE_ASSOCIATIONS)

    with pytest.raises(DescribeFailed) as failed:
        runner(world).existing([STACK], deadline(world))

    assert failed.value.stack_name == STACK
    assert failed.value.label == ("AccessDeniedException" if fault == "fail_with" else "InternalServerError")
    assert len(world.appstream.calls) == calls


# ------------------------------------------------------------------------------- batch items


def test_a_batch_files_every_item_in_exactly_one_bucket(world: World) -> None:
    world.seed(associated={STACK: users(1)})
    batch = items(users(3)) + items(["ghost@example.com"]) + items(users(1), "nowhere")

    outcome = associate(world, batch)

    assert outcome.applied == set(items(users(3)))  # re-associating an associated user is fine
    assert outcome.failed == {
        items(["ghost@example.com"])[0]: "USER_NAME_NOT_FOUND",
        items(users(1), "nowhere")[0]: "STACK_NOT_FOUND",
    }
    assert not outcome.unknown
    assert not outcome.not_started
    assert not outcome.gone
    assert outcome.problems() == outcome.failed


def test_internal_errors_are_retried_a_bounded_number_of_times_on_the_clock(world: World) -> None:
    retry = ItemRetry(attempts=3, base_delay=1.0, max_delay=4.0)
    world.appstream.faults.internal_error(users(2)[1], attempts=None)

    outcome = associate(world, items(users(2)), item_retry=retry)

    assert outcome.applied == set(items(users(1)))
    assert outcome.failed == {items(users(2))[1]: "INTERNAL_ERROR"}
    assert [call.item_count for call in batch_calls(world.appstream.calls, BATCH_ASSOCIATE)] == [2, 1, 1]
    assert 0.5 + 1.0 <= world.clock.slept <= 1.0 + 2.0  # equal jitter: delays in [ceiling/2, ceiling]


def test_users_the_deploy_creates_are_waited_for_within_the_window_and_others_fail_at_once(world: World) -> None:
    world.appstream.state.add_user("late@example.com", visible_after=6.0)
    batch = items(["late@example.com", "ghost@example.com", "stranger@example.com"])
    awaited = {"late@example.com", "ghost@example.com"}

    outcome = runner(world).run_batch(
        Operation.ASSOCIATE,
        batch,
        send_email=False,
        deadline=deadline(world),
        awaits=lambda item, code: item.user_name in awaited,
    )

    assert outcome.applied == set(items(["late@example.com"]))
    assert outcome.failed == dict.fromkeys(items(["ghost@example.com", "stranger@example.com"]), "USER_NAME_NOT_FOUND")
    assert rules.NOT_FOUND_WINDOW <= world.clock.slept < rules.NOT_FOUND_WINDOW + 6
    calls = batch_calls(world.appstream.calls, BATCH_ASSOCIATE)
    assert calls[0].item_count == 3
    assert all(call.item_count <= 2 for call in calls[1:])  # the stranger is not tried again


def test_a_user_nobody_creates_fails_at_once(world: World) -> None:
    outcome = associate(world, items(["ghost@example.com"]))
    assert outcome.failed == {items(["ghost@example.com"])[0]: "USER_NAME_NOT_FOUND"}
    assert len(world.appstream.calls) == 1
    assert world.clock.slept == 0


def test_on_disassociation_not_found_means_gone_at_once(world: World) -> None:
    outcome = runner(world).run_batch(
        Operation.DISASSOCIATE,
        items(["ghost@example.com"]) + items(users(1), "nowhere"),
        send_email=None,
        deadline=deadline(world),
    )
    assert outcome.gone == set(items(["ghost@example.com"]) + items(users(1), "nowhere"))
    assert outcome.ok
    assert len(world.appstream.calls) == 1
    assert world.clock.slept == 0


@pytest.mark.parametrize("send_email", [True, False, None])
def test_send_email_is_sent_as_given_or_left_out(world: World, send_email: bool | None) -> None:
    runner(world).run_batch(Operation.ASSOCIATE, items(users(1)), send_email=send_email, deadline=deadline(world))
    (call,) = batch_calls(world.appstream.calls, BATCH_ASSOCIATE)
    assert call.body["UserStackAssociations"][0].get("SendEmailNotification", "absent") == (
        "absent" if send_email is None else send_email
    )


def test_an_error_item_that_matches_nothing_sent_makes_the_batch_unknown(world: World) -> None:
    client = world.appstream_client()
    stubber = Stubber(client)
    stranger = {"StackName": STACK, "UserName": "stranger@example.com", "AuthenticationType": "USERPOOL"}
    stubber.add_response(
        "batch_associate_user_stack",
        {"errors": [{"UserStackAssociation": stranger, "ErrorCode": "INTERNAL_ERROR", "ErrorMessage": "?"}]},
    )
    with stubber:
        outcome = associate(world, items(users(2)), client=client)
    assert outcome.unknown == dict.fromkeys(items(users(2)), "UNMATCHED_ERROR_ITEM")


def test_directory_not_found_is_final(world: World) -> None:
    client = world.appstream_client()
    stubber = Stubber(client)
    item = {"StackName": STACK, "UserName": users(1)[0], "AuthenticationType": "AWS_AD"}
    stubber.add_response(
        "batch_associate_user_stack",
        {"errors": [{"UserStackAssociation": item, "ErrorCode": "DIRECTORY_NOT_FOUND", "ErrorMessage": "No dir."}]},
    )
    with stubber:
        outcome = runner(world, client).run_batch(
            Operation.ASSOCIATE, [Association(STACK, users(1)[0], "AWS_AD")], send_email=False, deadline=deadline(world)
        )
        stubber.assert_no_pending_responses()
    assert outcome.failed == {Association(STACK, users(1)[0], "AWS_AD"): "DIRECTORY_NOT_FOUND"}
    assert outcome.messages == {"DIRECTORY_NOT_FOUND": "No dir."}


# ------------------------------------------------------------------------------ call retries


@pytest.mark.parametrize(("failures", "bucket"), [(TRANSIENT_ATTEMPTS - 1, "applied"), (TRANSIENT_ATTEMPTS, "unknown")])
@pytest.mark.parametrize("fault", ["server_error", "reset_connection"])
def test_transient_failures_are_retried_then_leave_the_batch_unknown(
    world: World, fault: str, failures: int, bucket: str
) -> None:
    getattr(world.appstream.faults, fault)(failures, operation=BATCH_DISASSOCIATE)
    world.seed(associated={STACK: users(2)})

    outcome = runner(world).run_batch(
        Operation.DISASSOCIATE, items(users(2)), send_email=None, deadline=deadline(world)
    )

    assert len(world.appstream.calls) == min(failures + 1, TRANSIENT_ATTEMPTS)
    if bucket == "applied":
        assert outcome.applied == set(items(users(2)))
    else:
        assert set(outcome.unknown) == set(items(users(2)))  # may have landed: the caller must find out
    assert world.clock.slept > 0


def test_a_modelled_exception_is_final_and_keeps_its_message(world: World) -> None:
    world.appstream.faults.fail_with("OperationNotPermittedException", message="Fleet is domain-joined.")

    outcome = associate(world, items(users(2)))

    assert outcome.failed == dict.fromkeys(items(users(2)), "OperationNotPermittedException")
    assert outcome.messages == {"OperationNotPermittedException": "Fleet is domain-joined."}
    assert len(world.appstream.calls) == 1
    assert world.clock.slept == 0


def test_throttles_change_nothing_and_are_waited_out(world: World) -> None:
    world.appstream.faults.throttle(3, operation=BATCH_ASSOCIATE)

    work = runner(world)
    outcome = work.run_batch(Operation.ASSOCIATE, items(users(2)), send_email=False, deadline=deadline(world))

    assert outcome.applied == set(items(users(2)))
    assert [call.throttled for call in world.appstream.calls] == [True, True, True, False]
    assert work.pacer.limited
    assert work.calls[Operation.ASSOCIATE.name] == 4


@pytest.mark.parametrize("call", ["describe", "batch"])
def test_no_call_starts_unless_a_whole_call_fits(world: World, call: str) -> None:
    short = deadline(world, CALL_HEADROOM - 1)
    if call == "describe":
        with pytest.raises(DescribeFailed) as failed:
            runner(world).existing([STACK], short)
        assert failed.value.label == TIME_RAN_OUT
    else:
        outcome = runner(world).run_batch(Operation.ASSOCIATE, items(users(2)), send_email=False, deadline=short)
        assert outcome.problems() == dict.fromkeys(items(users(2)), TIME_RAN_OUT)
    assert world.appstream.calls == ()


def test_a_throttled_out_batch_is_labelled_throttled(world: World) -> None:
    world.appstream.faults.throttle(50, operation=BATCH_ASSOCIATE)

    outcome = associate(world, items(users(2)), until=deadline(world, 40))

    assert outcome.throttled_out
    assert outcome.problems() == dict.fromkeys(items(users(2)), THROTTLED)
    assert all(call.throttled for call in world.appstream.calls)


# ------------------------------------------------------------------------------------ budget


@quick
@given(remaining=st.floats(min_value=-5.0, max_value=3600.0, allow_nan=False))
def test_the_budget_keeps_time_to_undo_and_to_answer(remaining: float) -> None:
    clock = FakeClock()
    budget = Budget.from_remaining(remaining, clock.monotonic)
    forward, undo, answer = (deadline.remaining() for deadline in (budget.forward, budget.undo, budget.answer))

    assert 0 <= forward <= undo <= answer
    assert answer == pytest.approx(max(0.0, remaining - rules.CRHELPER_TIMER_LEAD))  # before crhelper's timer
    assert undo - forward == pytest.approx(forward)  # undoing costs at most as many calls as the work
    assert answer - undo == pytest.approx(min(rules.MAX_ANSWER_RESERVE, rules.ANSWER_RESERVE_FRACTION * answer))


def test_a_deadline_counts_down_on_its_clock() -> None:
    clock = FakeClock()
    deadline = Deadline(10.0, clock.monotonic)
    clock.sleep(7.5)
    assert deadline.remaining() == pytest.approx(2.5)
    assert deadline.expired(3.0)
    assert not deadline.expired(2.0)
    clock.sleep(3.0)
    assert deadline.expired()


# ------------------------------------------------------------------------------------- pacer


def test_the_pacer_is_unpaced_until_the_first_throttle() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock.monotonic, sleep=clock.sleep)
    for _ in range(20):
        assert pacer.wait_turn(lambda start: True)
        pacer.on_accepted()
    assert (pacer.rate, pacer.limited, clock.slept) == (None, False, 0.0)
    assert pacer.describe() == "no rate measured"


def test_after_a_throttle_the_pacer_probes_with_doubling_waits_then_paces() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock.monotonic, sleep=clock.sleep)
    pacer.on_throttled()
    probes = []
    for _ in range(3):  # three probes are throttled: the wait since the first throttle doubles each time
        assert pacer.wait_turn(lambda start: True)
        probes.append(clock.slept)
        pacer.on_throttled()
    assert probes == pytest.approx([FIRST_PROBE_WAIT, 2 * FIRST_PROBE_WAIT, 4 * FIRST_PROBE_WAIT])
    assert pacer.wait_turn(lambda start: True)
    pacer.on_accepted()  # the refill time lies between the last two waits
    rate = pacer.rate
    assert rate is not None
    assert 1 / (8 * FIRST_PROBE_WAIT) <= rate <= 1 / (4 * FIRST_PROBE_WAIT)
    assert pacer.seconds_for(10) == pytest.approx(10 / rate)
    assert "calls/s" in pacer.describe()


def test_the_pacer_refuses_a_turn_that_comes_too_late() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock.monotonic, sleep=clock.sleep)
    pacer.on_throttled()
    assert not pacer.wait_turn(lambda start: start < clock.monotonic() + FIRST_PROBE_WAIT / 2)
    assert clock.slept == 0  # refused without waiting
