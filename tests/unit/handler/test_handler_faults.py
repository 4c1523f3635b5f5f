"""Fault matrix through the local AppStream endpoint (issue 6).

Each test injects one kind of fault into the AppStream fake, sends one CloudFormation event
through ``index.handler`` and checks what users see:

* AppStream holds the desired state after SUCCESS, or exactly the state before the event after
  FAILED, never a partial one (pre-existing associations included);
* CloudFormation gets exactly one valid answer (the ``invoke`` fixture checks count and shape)
  before the function's time runs out, with a reason naming what went wrong.

Every test starts with a new AppStream client, as a cold Lambda container would: botocore's
standard retry mode keeps a retry quota per client, and tests that exhaust retries on purpose
must not change how the next test's client retries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from conftest import cfn_event, properties, seed

from constructs_lib.testing import BATCH_ASSOCIATE, BATCH_DISASSOCIATE, DESCRIBE_ASSOCIATIONS, AppStreamServer

STACK = "demo"
NOT_PERMITTED = "OperationNotPermittedException"
BAD_COMBINATION = "InvalidParameterCombinationException"


@pytest.fixture(autouse=True)
def cold_client(lambda_environment: None) -> None:
    """Forget the handler's cached AppStream client: each test runs like a fresh container."""
    import index  # noqa: PLC0415 - needs the environment set up first

    index._client_for.cache_clear()


def users(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{index:03d}@example.com" for index in range(count)]


def assoc(names: list[str], stack: str = STACK) -> set[tuple[str, str, str]]:
    return {(stack, name, "USERPOOL") for name in names}


def create(invoke: Any, names: list[str], **props: Any) -> Any:
    """A successful Create, to get a real physical id (no faults may be active)."""
    answer = invoke(cfn_event("Create", properties(STACK, names, **props)))
    assert answer.status == "SUCCESS", answer.body
    return answer


def batch_calls(server: AppStreamServer, operation: str) -> list[Any]:
    return list(server.calls_for(operation))


def timed(invoke: Any, event: dict[str, Any], response_server: Any, **options: Any) -> tuple[Any, float]:
    """Invoke; return the answer and when CloudFormation stored it, in seconds from the invocation."""
    started = time.monotonic()
    answer = invoke(event, **options)
    stored = [
        attempt.received_at
        for attempt in response_server.attempts()
        if attempt.accepted and (attempt.body or {}).get("RequestId") == event["RequestId"]
    ]
    assert len(stored) == 1
    return answer, stored[0] - started


# ------------------------------------------------------------------------------ throttling


def test_throttling_on_every_kind_of_call_is_ridden_out(appstream: AppStreamServer, invoke: Any) -> None:
    old, new = users(30), users(30)[10:] + users(5, "new")
    seed(appstream, stacks=[STACK], users=old + new, associated={STACK: ["user029@example.com"]})
    created = create(invoke, old)
    appstream.reset_calls()
    appstream.faults.throttle(1, operation=DESCRIBE_ASSOCIATIONS)
    appstream.faults.throttle(2, operation=BATCH_ASSOCIATE)
    appstream.faults.throttle(2, operation=BATCH_DISASSOCIATE)

    answer = invoke(
        cfn_event("Update", properties(STACK, new), old=properties(STACK, old), physical_id=created.physical_id)
    )

    assert answer.status == "SUCCESS", answer.body
    assert answer.physical_id == created.physical_id
    assert appstream.state.associations() == assoc(new)
    throttled = [call.operation for call in appstream.calls if call.outcome == "ThrottlingException"]
    assert sorted(throttled) == sorted([DESCRIBE_ASSOCIATIONS] + [BATCH_ASSOCIATE] * 2 + [BATCH_DISASSOCIATE] * 2)


def test_a_burst_of_three_throttles_on_concurrent_batches(appstream: AppStreamServer, invoke: Any) -> None:
    names = users(80)
    seed(appstream, stacks=[STACK], users=names)
    appstream.faults.throttle(3, operation=BATCH_ASSOCIATE)

    answer = invoke(cfn_event("Create", properties(STACK, names, concurrency=4)))

    assert answer.status == "SUCCESS", answer.body
    assert appstream.state.associations() == assoc(names)
    assert sum(call.outcome == "ThrottlingException" for call in appstream.calls) == 3


@pytest.mark.slow
def test_eight_consecutive_throttles_are_survived(appstream: AppStreamServer, invoke: Any) -> None:
    """botocore's standard mode with 10 attempts: ~45 s of real backoff before the 9th attempt."""
    names = users(3)
    seed(appstream, stacks=[STACK], users=names)
    appstream.faults.throttle(8, operation=BATCH_ASSOCIATE)

    answer = invoke(cfn_event("Create", properties(STACK, names)))

    assert answer.status == "SUCCESS", answer.body
    assert appstream.state.associations() == assoc(names)
    calls = batch_calls(appstream, BATCH_ASSOCIATE)
    assert [call.outcome for call in calls] == ["ThrottlingException"] * 8 + ["ok"]
    assert len({call.invocation_id for call in calls}) == 1  # one call, retried by botocore
    assert answer.seconds < 300


def test_a_throttle_with_too_little_time_left_is_not_retried(appstream: AppStreamServer, invoke: Any) -> None:
    """With under ~33 s of forward time, botocore may not sleep for a retry: undo and answer."""
    names = users(40)
    seed(appstream, stacks=[STACK], users=names, associated={STACK: names[:3]})
    before = appstream.state.associations()
    appstream.faults.throttle(1, operation=BATCH_ASSOCIATE)

    answer = invoke(cfn_event("Create", properties(STACK, names, concurrency=1)), remaining=60)

    assert answer.status == "FAILED"
    assert "TIME_RAN_OUT" in answer.reason
    assert appstream.state.associations() == before
    assert answer.seconds < 5


# -------------------------------------------------------------------------- INTERNAL_ERROR


def test_transient_internal_errors_are_retried_to_success(appstream: AppStreamServer, invoke: Any) -> None:
    names = users(30)
    seed(appstream, stacks=[STACK], users=names)
    appstream.faults.internal_error("user007@example.com", "user027@example.com", attempts=3)

    answer = invoke(cfn_event("Create", properties(STACK, names)))

    assert answer.status == "SUCCESS", answer.body
    assert appstream.state.associations() == assoc(names)
    codes = [code for call in batch_calls(appstream, BATCH_ASSOCIATE) for code in call.error_codes]
    assert codes == ["INTERNAL_ERROR"] * 6


def test_internal_errors_that_outlast_the_retries_fail_and_undo(appstream: AppStreamServer, invoke: Any) -> None:
    names = users(30)
    seed(appstream, stacks=[STACK], users=names, associated={STACK: names[:2]})
    before = appstream.state.associations()
    appstream.faults.internal_error("user007@example.com", attempts=4)

    answer = invoke(cfn_event("Create", properties(STACK, names)))

    assert answer.status == "FAILED"
    assert answer.physical_id.startswith("appstream-user-stack-association-failed:")
    assert "INTERNAL_ERROR" in answer.reason
    assert "1 of 28" in answer.reason
    assert appstream.state.associations() == before


def test_persistent_internal_error_on_update_removal_restores_both_sides(
    appstream: AppStreamServer, invoke: Any
) -> None:
    old = users(30)
    new = old[:20] + users(10, "new")
    seed(appstream, stacks=[STACK], users=old + new)
    created = create(invoke, old)
    before = appstream.state.associations()
    appstream.faults.internal_error("user025@example.com", attempts=None, operation=BATCH_DISASSOCIATE)

    answer = invoke(
        cfn_event("Update", properties(STACK, new), old=properties(STACK, old), physical_id=created.physical_id)
    )

    assert answer.status == "FAILED"
    assert answer.physical_id == created.physical_id
    assert "INTERNAL_ERROR" in answer.reason
    assert "user025@example.com" in answer.reason
    assert appstream.state.associations() == before


def test_persistent_internal_error_on_delete_puts_the_removals_back(appstream: AppStreamServer, invoke: Any) -> None:
    names = users(40)
    seed(appstream, stacks=[STACK], users=names)
    created = create(invoke, names)
    before = appstream.state.associations()
    appstream.faults.internal_error("user033@example.com", attempts=None, operation=BATCH_DISASSOCIATE)

    answer = invoke(cfn_event("Delete", properties(STACK, names), physical_id=created.physical_id))

    assert answer.status == "FAILED"
    assert "INTERNAL_ERROR" in answer.reason
    assert appstream.state.associations() == before


# ------------------------------------------------------------------- modelled exceptions


@pytest.mark.parametrize("code", [NOT_PERMITTED, BAD_COMBINATION])
def test_a_rejected_batch_undoes_the_batches_that_landed(code: str, appstream: AppStreamServer, invoke: Any) -> None:
    names = users(70)
    seed(appstream, stacks=[STACK], users=names, associated={STACK: names[60:]})
    before = appstream.state.associations()
    appstream.faults.fail_with(code, operation=BATCH_ASSOCIATE, message="Injected rejection.")

    answer = invoke(cfn_event("Create", properties(STACK, names, concurrency=1)))

    assert answer.status == "FAILED"
    assert code in answer.reason
    assert "undone" in answer.reason
    assert appstream.state.associations() == before
    associated = batch_calls(appstream, BATCH_ASSOCIATE)
    assert [call.outcome for call in associated] == [code, "ok", "ok"]  # 60 to add: 3 batches, the first refused
    assert sum(call.item_count for call in batch_calls(appstream, BATCH_DISASSOCIATE)) == 35  # exactly what landed


@pytest.mark.parametrize("code", [NOT_PERMITTED, BAD_COMBINATION])
def test_a_rejected_removal_on_update_restores_the_state_before(
    code: str, appstream: AppStreamServer, invoke: Any
) -> None:
    old = users(60)
    new = old[:10] + users(30, "new")
    seed(appstream, stacks=[STACK], users=old + new)
    created = create(invoke, old)
    before = appstream.state.associations()
    appstream.faults.fail_with(code, operation=BATCH_DISASSOCIATE)

    answer = invoke(
        cfn_event(
            "Update", properties(STACK, new, concurrency=1), old=properties(STACK, old), physical_id=created.physical_id
        )
    )

    assert answer.status == "FAILED"
    assert code in answer.reason
    assert appstream.state.associations() == before


def test_a_rejected_removal_on_delete_puts_back_what_was_removed(appstream: AppStreamServer, invoke: Any) -> None:
    names = users(60)
    seed(appstream, stacks=[STACK], users=names)
    created = create(invoke, names)
    before = appstream.state.associations()
    appstream.faults.fail_with(NOT_PERMITTED, operation=BATCH_DISASSOCIATE)

    answer = invoke(cfn_event("Delete", properties(STACK, names, concurrency=1), physical_id=created.physical_id))

    assert answer.status == "FAILED"
    assert NOT_PERMITTED in answer.reason
    assert appstream.state.associations() == before


@pytest.mark.parametrize("code", [NOT_PERMITTED, BAD_COMBINATION])
def test_a_describe_that_fails_changes_nothing(code: str, appstream: AppStreamServer, invoke: Any) -> None:
    names = users(5)
    seed(appstream, stacks=[STACK], users=names)
    appstream.faults.fail_with(code, operation=DESCRIBE_ASSOCIATIONS)

    answer = invoke(cfn_event("Create", properties(STACK, names)))

    assert answer.status == "FAILED"
    assert code in answer.reason
    assert "nothing was changed" in answer.reason
    assert appstream.state.associations() == frozenset()
    assert not batch_calls(appstream, BATCH_ASSOCIATE)


def test_a_rejection_is_named_even_when_time_is_short(appstream: AppStreamServer, invoke: Any) -> None:
    """A refused call is not a retry: it must be reported as what it is, whatever the time left.

    With 60 s left the forward phase has under 33 s, so the handler cuts botocore's retries; the
    refusal itself must still be reported as OperationNotPermittedException, not TIME_RAN_OUT.
    """
    names = users(3)
    seed(appstream, stacks=[STACK], users=names)
    appstream.faults.fail_with(NOT_PERMITTED, operation=BATCH_ASSOCIATE)

    answer = invoke(cfn_event("Create", properties(STACK, names)), remaining=60)

    assert answer.status == "FAILED"
    assert appstream.state.associations() == frozenset()
    assert NOT_PERMITTED in answer.reason, answer.reason


@pytest.mark.parametrize("remaining", [300.0, 60.0])
def test_delete_succeeds_when_the_stack_is_already_gone(
    remaining: float, appstream: AppStreamServer, invoke: Any
) -> None:
    """Describe answering ResourceNotFoundException means nothing is left to remove."""
    names = users(3)
    seed(appstream, stacks=[STACK], users=names)
    created = create(invoke, names)
    appstream.state.remove_stack(STACK)
    appstream.faults.fail_with(
        "ResourceNotFoundException", operation=DESCRIBE_ASSOCIATIONS, message="The stack was not found."
    )

    answer = invoke(cfn_event("Delete", properties(STACK, names), physical_id=created.physical_id), remaining=remaining)

    assert answer.status == "SUCCESS", answer.body
    assert answer.physical_id == created.physical_id


# -------------------------------------------------------------- 5xx, resets and timeouts


@pytest.mark.parametrize("fault", ["server_error", "reset_connection"])
def test_transient_transport_faults_are_retried(fault: str, appstream: AppStreamServer, invoke: Any) -> None:
    names = users(30)
    seed(appstream, stacks=[STACK], users=names)
    getattr(appstream.faults, fault)(2, operation=BATCH_ASSOCIATE)

    answer = invoke(cfn_event("Create", properties(STACK, names)))

    assert answer.status == "SUCCESS", answer.body
    assert appstream.state.associations() == assoc(names)
    assert sum(call.fault is not None for call in batch_calls(appstream, BATCH_ASSOCIATE)) == 2


@pytest.mark.parametrize("fault", ["server_error", "reset_connection"])
def test_an_unanswered_batch_on_create_is_checked_and_undone(
    fault: str, appstream: AppStreamServer, invoke: Any
) -> None:
    """A 5xx or reset that may not be retried leaves the batch's fate unknown: re-read, undo exactly."""
    names = users(50)
    seed(appstream, stacks=[STACK], users=names, associated={STACK: names[45:]})
    before = appstream.state.associations()
    getattr(appstream.faults, fault)(1, operation=BATCH_ASSOCIATE)

    answer = invoke(cfn_event("Create", properties(STACK, names, concurrency=1)), remaining=60)

    assert answer.status == "FAILED"
    assert appstream.state.associations() == before
    assert [call.item_count for call in batch_calls(appstream, BATCH_ASSOCIATE)] == [25, 20]
    assert sum(call.item_count for call in batch_calls(appstream, BATCH_DISASSOCIATE)) == 20
    assert len(appstream.calls_for(DESCRIBE_ASSOCIATIONS)) == 2  # before, and again to learn what landed


@pytest.mark.parametrize("fault", ["server_error", "reset_connection"])
def test_an_unanswered_batch_on_delete_is_checked_and_put_back(
    fault: str, appstream: AppStreamServer, invoke: Any
) -> None:
    names = users(50)
    seed(appstream, stacks=[STACK], users=names)
    created = create(invoke, names)
    before = appstream.state.associations()
    appstream.reset_calls()
    getattr(appstream.faults, fault)(1, operation=BATCH_DISASSOCIATE)

    answer = invoke(
        cfn_event("Delete", properties(STACK, names, concurrency=1), physical_id=created.physical_id), remaining=60
    )

    assert answer.status == "FAILED"
    assert appstream.state.associations() == before
    assert sum(call.item_count for call in batch_calls(appstream, BATCH_ASSOCIATE)) == 25


def test_a_hanging_batch_times_out_and_the_event_is_undone(
    appstream: AppStreamServer, invoke: Any, response_server: Any
) -> None:
    """AppStream never answers one call: the read timeout ends it, the rest is undone, in time."""
    names = users(50)
    seed(appstream, stacks=[STACK], users=names)
    appstream.faults.hang(1, seconds=11, operation=BATCH_ASSOCIATE)

    answer, arrived = timed(
        invoke, cfn_event("Create", properties(STACK, names, concurrency=1)), response_server, remaining=60
    )

    assert answer.status == "FAILED"
    assert appstream.state.associations() == frozenset()
    assert arrived < 20  # one read timeout (10 s), no retry, then the undo


# --------------------------------------------------------------------- running out of time


def _slow_appstream(server: AppStreamServer) -> None:
    server.faults.latency(1.0)


@pytest.mark.parametrize(("count", "concurrency"), [(150, 1), (400, 4)])
def test_time_running_out_mid_create_undoes_the_batches_that_ran(
    count: int, concurrency: int, appstream: AppStreamServer, invoke: Any, response_server: Any
) -> None:
    names = users(count)
    seed(appstream, stacks=[STACK], users=names, associated={STACK: names[:5] + names[100:103]})
    before = appstream.state.associations()
    _slow_appstream(appstream)

    answer, arrived = timed(
        invoke, cfn_event("Create", properties(STACK, names, concurrency=concurrency)), response_server, remaining=40
    )

    assert answer.status == "FAILED"
    assert "TIME_RAN_OUT" in answer.reason
    assert appstream.state.associations() == before
    started = batch_calls(appstream, BATCH_ASSOCIATE)
    assert 0 < len(started) < (count - 8) / 25  # mid-way: some batches ran, not all
    assert arrived < 40 - 0.5  # the handler's own answer, before crhelper's timer would have sent one
    assert answer.physical_id.startswith("appstream-user-stack-association-failed:")


def test_time_running_out_mid_update_restores_both_sides(
    appstream: AppStreamServer, invoke: Any, response_server: Any
) -> None:
    old = users(110)
    new = old[:10] + users(20, "new")
    seed(appstream, stacks=[STACK], users=old + new)
    created = create(invoke, old)
    before = appstream.state.associations()
    _slow_appstream(appstream)

    answer, arrived = timed(
        invoke,
        cfn_event(
            "Update", properties(STACK, new, concurrency=1), old=properties(STACK, old), physical_id=created.physical_id
        ),
        response_server,
        remaining=40,
    )

    assert answer.status == "FAILED"
    assert "TIME_RAN_OUT" in answer.reason
    assert answer.physical_id == created.physical_id
    assert appstream.state.associations() == before
    assert len(batch_calls(appstream, BATCH_DISASSOCIATE)) > 0
    assert arrived < 40 - 0.5


def test_time_running_out_mid_delete_puts_the_removals_back(
    appstream: AppStreamServer, invoke: Any, response_server: Any
) -> None:
    names = users(150)
    seed(appstream, stacks=[STACK], users=names)
    created = create(invoke, names)
    before = appstream.state.associations()
    appstream.reset_calls()
    _slow_appstream(appstream)

    answer, arrived = timed(
        invoke,
        cfn_event("Delete", properties(STACK, names, concurrency=1), physical_id=created.physical_id),
        response_server,
        remaining=40,
    )

    assert answer.status == "FAILED"
    assert "TIME_RAN_OUT" in answer.reason
    assert appstream.state.associations() == before
    assert 0 < len(batch_calls(appstream, BATCH_DISASSOCIATE)) < 6
    assert arrived < 40 - 0.5


@pytest.mark.parametrize("remaining", [0.3, 1.0, 20.0])
def test_too_little_time_to_start_anything(
    remaining: float, appstream: AppStreamServer, invoke: Any, response_server: Any
) -> None:
    """Whoever answers (the handler, or crhelper's timer just before the end), the answer is valid."""
    names = users(5)
    seed(appstream, stacks=[STACK], users=names)

    answer, arrived = timed(
        invoke, cfn_event("Create", properties(STACK, names)), response_server, remaining=remaining, settle=0.6
    )

    assert answer.status == "FAILED"
    assert answer.physical_id.startswith("appstream-user-stack-association-failed:")
    assert appstream.state.associations() == frozenset()
    assert not batch_calls(appstream, BATCH_ASSOCIATE)
    assert arrived < remaining


# -------------------------------------------------------------------------------------- logs


def test_logs_name_no_user_and_never_the_response_url(
    appstream: AppStreamServer, invoke: Any, response_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret_users = ["secret.person+1@example.com", "geheim-ü@example.com", "missing.one@example.com"]
    seed(appstream, stacks=[STACK], users=secret_users[:2])
    appstream.faults.internal_error(secret_users[1], attempts=1)

    failed = invoke(cfn_event("Create", properties(STACK, secret_users)))
    created = invoke(cfn_event("Create", properties(STACK, secret_users[:2])))
    invoke(cfn_event("Delete", properties(STACK, secret_users[:2]), physical_id=created.physical_id))

    assert failed.status == "FAILED"
    assert created.status == "SUCCESS"
    text = "\n".join(
        f"{record.name} {record.getMessage()} {record.exc_text or ''}"
        for record in caplog.records
        if record.levelno >= logging.INFO
    )
    assert caplog.records, "expected the handler to log something"
    for name in secret_users:
        assert name not in text
    assert response_server.base_url not in text
    assert "X-Amz-Signature" not in text
