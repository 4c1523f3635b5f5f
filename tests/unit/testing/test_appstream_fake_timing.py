"""The AppStream fake's time-based behaviour: sustained rate limits and eventual consistency.

Time is a fake clock given to :class:`AppStreamState`; the tests advance it by hand and never
sleep or look at the wall clock. Every call goes through a real boto3 client.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from constructs_lib.testing import (
    BATCH_ASSOCIATE,
    BATCH_DISASSOCIATE,
    DESCRIBE_ASSOCIATIONS,
    AppStreamServer,
    AppStreamState,
    client_env,
)
from constructs_lib.testing.appstream import RateLimit

if TYPE_CHECKING:
    from mypy_boto3_appstream import AppStreamClient
    from mypy_boto3_appstream.type_defs import UserStackAssociationTypeDef

STACK = "demo-stack"
FRESH_STACK = "fresh-stack"
ALICE, BOB, DAVE, ERIN = "alice@example.com", "bob@example.com", "dave@example.com", "erin@example.com"
START = 1000.0


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def item(user: str, stack: str = STACK) -> UserStackAssociationTypeDef:
    """One USERPOOL batch item."""
    return {"StackName": stack, "UserName": user, "AuthenticationType": "USERPOOL"}


def make_client(*, attempts: int = 1, mode: Literal["standard", "adaptive"] = "standard") -> AppStreamClient:
    """An unmodified client (endpoint from AWS_ENDPOINT_URL_APPSTREAM); no retries by default."""
    config = Config(
        retries={"mode": mode, "total_max_attempts": attempts},
        connect_timeout=2,
        read_timeout=5,
        max_pool_connections=32,
    )
    return boto3.client("appstream", region_name="us-east-1", config=config)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> AppStreamState:
    """One stack and two user-pool users, seeded (so visible at once), on the fake clock."""
    return AppStreamState.from_seed({"stacks": [STACK], "users": [{"UserName": u} for u in (ALICE, BOB)]}, clock=clock)


@pytest.fixture
def server(state: AppStreamState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[AppStreamServer]:
    """The running fake, with the process environment pointing boto3 at it and nothing else."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_SDK_UA_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    with AppStreamServer(state) as running:
        for name, value in client_env(running).items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
def once(server: AppStreamServer) -> AppStreamClient:
    """A client that never retries, so each call is one request."""
    return make_client()


def outcome(call: object) -> str:
    """``"ok"`` or the error code of one client call (a zero-argument callable)."""
    try:
        call()  # type: ignore[operator]
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return "ok"


def describe(client: AppStreamClient, stack: str = STACK) -> str:
    return outcome(lambda: client.describe_user_stack_associations(StackName=stack))


def associate(client: AppStreamClient, user: str = ALICE) -> str:
    return outcome(lambda: client.batch_associate_user_stack(UserStackAssociations=[item(user)]))


def disassociate(client: AppStreamClient, user: str = ALICE) -> str:
    return outcome(lambda: client.batch_disassociate_user_stack(UserStackAssociations=[item(user)]))


THROTTLED = "ThrottlingException"


# ------------------------------------------------------------------ rate limits


def test_bucket_starts_full_and_allows_a_burst(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.rate_limit(2.0, burst=3)
    assert [describe(once) for _ in range(4)] == ["ok", "ok", "ok", THROTTLED]


def test_bucket_refills_at_the_rate_and_holds_at_most_burst(
    server: AppStreamServer, once: AppStreamClient, clock: FakeClock
) -> None:
    server.faults.rate_limit(2.0, burst=3)
    assert [describe(once) for _ in range(3)] == ["ok"] * 3
    clock.advance(0.4)  # 0.8 of a token
    assert describe(once) == THROTTLED
    clock.advance(0.1)  # 1.0
    assert [describe(once), describe(once)] == ["ok", THROTTLED]
    clock.advance(100)  # far more than burst: the bucket holds 3
    assert [describe(once) for _ in range(4)] == ["ok", "ok", "ok", THROTTLED]


def test_slow_rate_gives_a_token_exactly_when_due(
    server: AppStreamServer, once: AppStreamClient, clock: FakeClock
) -> None:
    server.faults.rate_limit(0.5)  # one call every 2 s
    assert describe(once) == "ok"
    clock.advance(1.999)
    assert describe(once) == THROTTLED
    clock.advance(0.001)  # refills in two steps add up to exactly one token
    assert describe(once) == "ok"
    assert describe(once) == THROTTLED


def test_float_rounding_in_refills_does_not_cost_a_token(
    server: AppStreamServer, once: AppStreamClient, clock: FakeClock
) -> None:
    server.faults.rate_limit(3.0)
    assert describe(once) == "ok"
    outcomes = []
    for _ in range(3):  # three thirds of a token; in floats they add up to 0.99999999999977
        clock.advance(1 / 9)
        outcomes.append(describe(once))
    assert outcomes == [THROTTLED, THROTTLED, "ok"]


def test_an_operation_bucket_alone_decides_for_that_operation(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.rate_limit(1.0, burst=2)
    server.faults.rate_limit(1.0, operation=BATCH_ASSOCIATE)
    assert server.faults.rate_limits() == {
        None: RateLimit(1.0, 2, None),
        BATCH_ASSOCIATE: RateLimit(1.0, 1, BATCH_ASSOCIATE),
    }
    assert [associate(once), associate(once, BOB)] == ["ok", THROTTLED]  # its own bucket is empty
    assert [describe(once), describe(once), describe(once)] == ["ok", "ok", THROTTLED]  # account untouched
    assert disassociate(once) == THROTTLED  # no bucket of its own: the account's, now empty


def test_an_operation_bucket_leaves_other_operations_unlimited(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.rate_limit(1.0, operation=DESCRIBE_ASSOCIATIONS)
    assert [associate(once) for _ in range(5)] == ["ok"] * 5
    assert [describe(once), describe(once)] == ["ok", THROTTLED]


def test_rate_limit_again_replaces_its_scope_and_can_be_removed(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.rate_limit(1.0)
    assert [describe(once), describe(once)] == ["ok", THROTTLED]
    server.faults.rate_limit(1.0, burst=2)  # a new bucket, full
    assert server.faults.rate_limits() == {None: RateLimit(1.0, 2, None)}
    assert [describe(once), describe(once), describe(once)] == ["ok", "ok", THROTTLED]
    server.faults.remove_rate_limit()
    assert server.faults.rate_limits() == {}
    assert [describe(once) for _ in range(3)] == ["ok"] * 3
    server.faults.rate_limit(1.0, operation=BATCH_DISASSOCIATE)
    server.faults.rate_limit(1.0)
    server.faults.clear()
    assert server.faults.rate_limits() == {}
    assert [describe(once) for _ in range(3)] == ["ok"] * 3


def test_throttled_calls_change_nothing_and_are_logged(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.rate_limit(1.0)
    assert associate(once, ALICE) == "ok"
    assert associate(once, BOB) == THROTTLED
    assert disassociate(once, ALICE) == THROTTLED
    assert server.state.associations() == {(STACK, ALICE, "USERPOOL")}
    calls = server.calls
    assert [(c.operation, c.fault, c.outcome, c.status, c.throttled) for c in calls] == [
        (BATCH_ASSOCIATE, None, "ok", 200, False),
        (BATCH_ASSOCIATE, "rate_limit", THROTTLED, 400, True),
        (BATCH_DISASSOCIATE, "rate_limit", THROTTLED, 400, True),
    ]
    assert calls[1].body == {"UserStackAssociations": [item(BOB)]}
    throttled = sum(c.fault == "rate_limit" for c in calls)
    assert (throttled, len(calls) - throttled) == (2, 1)


def test_without_retries_a_throttled_call_raises_throttling_exception(
    server: AppStreamServer, once: AppStreamClient
) -> None:
    server.faults.rate_limit(1.0)
    once.describe_user_stack_associations(StackName=STACK)
    with pytest.raises(ClientError) as raised:
        once.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    error = raised.value.response
    assert (error["Error"]["Code"], error["Error"]["Message"]) == (THROTTLED, "Rate exceeded")
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(server.calls) == 2


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_retry_modes_retry_a_rate_limited_call_as_throttling(
    server: AppStreamServer, mode: Literal["standard", "adaptive"]
) -> None:
    retrying = make_client(attempts=2, mode=mode)  # one retry: about 1-2 s of botocore's throttling backoff
    server.faults.rate_limit(1.0)
    retrying.describe_user_stack_associations(StackName=STACK)
    with pytest.raises(ClientError) as raised:
        retrying.describe_user_stack_associations(StackName=STACK)  # the clock stands still: no token
    assert raised.value.response["Error"]["Code"] == THROTTLED
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    retried = server.calls[1:]
    assert [(c.attempt, c.fault) for c in retried] == [(1, "rate_limit"), (2, "rate_limit")]
    assert len({c.invocation_id for c in retried}) == 1


def test_countdown_faults_come_first_and_take_no_token(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.rate_limit(1.0)
    server.faults.throttle(1)
    assert [describe(once), describe(once), describe(once)] == [THROTTLED, "ok", THROTTLED]
    assert [c.fault for c in server.calls] == ["throttle", None, "rate_limit"]


def test_concurrent_callers_share_the_bucket_exactly(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.rate_limit(1.0, burst=5)
    results: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        result = describe(once)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ThrottlingException"] * 15 + ["ok"] * 5
    assert sum(c.fault == "rate_limit" for c in server.calls) == 15


@pytest.mark.parametrize(
    ("per_second", "burst", "message"),
    [
        (0, 1, "per_second must be positive"),
        (-1.0, 1, "per_second must be positive"),
        (math.nan, 1, "per_second must be a finite number"),
        (math.inf, 1, "per_second must be a finite number"),
        (1.0, 0, "burst must be at least 1"),
        (1.0, 1.5, "burst must be at least 1"),
    ],
)
def test_rate_limit_arguments_are_validated(per_second: float, burst: int, message: str) -> None:
    faults = AppStreamServer().faults
    with pytest.raises(ValueError, match=message):
        faults.rate_limit(per_second, burst=burst)
    assert faults.rate_limits() == {}


def test_rate_limit_rejects_unknown_operations() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        AppStreamServer().faults.rate_limit(1.0, operation="BatchAssociateUserStacks")


def test_call_log_times_come_from_the_state_clock(
    server: AppStreamServer, once: AppStreamClient, clock: FakeClock
) -> None:
    describe(once)
    clock.advance(5)
    describe(once)
    assert [c.received_at for c in server.calls] == [START, START + 5]


# ------------------------------------------------------------------ eventual consistency


def test_a_new_user_is_not_found_until_visible(
    server: AppStreamServer, once: AppStreamClient, clock: FakeClock
) -> None:
    server.state.add_user(DAVE, visible_after=2.0)
    assert (DAVE, "USERPOOL") in server.state.users()  # the truth
    assert not server.state.user_visible(DAVE)
    response = once.batch_associate_user_stack(UserStackAssociations=[item(DAVE), item(ALICE)])
    assert [(e["UserStackAssociation"]["UserName"], e["ErrorCode"]) for e in response["errors"]] == [
        (DAVE, "USER_NAME_NOT_FOUND")
    ]
    assert server.state.associations() == {(STACK, ALICE, "USERPOOL")}
    clock.advance(1.999)
    assert once.batch_associate_user_stack(UserStackAssociations=[item(DAVE)])["errors"][0]["ErrorCode"] == (
        "USER_NAME_NOT_FOUND"
    )
    clock.advance(0.001)
    assert server.state.user_visible(DAVE)
    assert once.batch_associate_user_stack(UserStackAssociations=[item(DAVE)])["errors"] == []
    assert (STACK, DAVE, "USERPOOL") in server.state.associations()


def test_disassociating_a_user_not_yet_visible_reports_it_missing(
    server: AppStreamServer, once: AppStreamClient, clock: FakeClock
) -> None:
    server.state.add_user(DAVE, visible_after=3.0)
    server.state.associate(STACK, DAVE)  # behind the API's back
    response = once.batch_disassociate_user_stack(UserStackAssociations=[item(DAVE)])
    assert [e["ErrorCode"] for e in response["errors"]] == ["USER_NAME_NOT_FOUND"]
    assert once.describe_user_stack_associations(StackName=STACK)["UserStackAssociations"] == []
    assert server.state.associations() == {(STACK, DAVE, "USERPOOL")}
    clock.advance(3.0)
    assert [a["UserName"] for a in once.describe_user_stack_associations(StackName=STACK)["UserStackAssociations"]] == [
        DAVE
    ]
    assert once.batch_disassociate_user_stack(UserStackAssociations=[item(DAVE)])["errors"] == []
    assert server.state.associations() == frozenset()


def test_a_new_stack_is_not_found_and_lists_nothing_until_visible(
    server: AppStreamServer, once: AppStreamClient, clock: FakeClock
) -> None:
    server.state.add_stack(FRESH_STACK, visible_after=5.0)
    assert FRESH_STACK in server.state.stacks()
    assert not server.state.stack_visible(FRESH_STACK)
    response = once.batch_associate_user_stack(UserStackAssociations=[item(ALICE, FRESH_STACK)])
    assert [e["ErrorCode"] for e in response["errors"]] == ["STACK_NOT_FOUND"]
    server.state.associate(FRESH_STACK, BOB)
    server.state.associate(STACK, BOB)
    assert once.describe_user_stack_associations(StackName=FRESH_STACK)["UserStackAssociations"] == []
    by_user = once.describe_user_stack_associations(UserName=BOB, AuthenticationType="USERPOOL")
    assert [a["StackName"] for a in by_user["UserStackAssociations"]] == [STACK]
    clock.advance(5.0)
    assert server.state.stack_visible(FRESH_STACK)
    listed = once.describe_user_stack_associations(StackName=FRESH_STACK)["UserStackAssociations"]
    assert [a["UserName"] for a in listed] == [BOB]
    assert once.batch_associate_user_stack(UserStackAssociations=[item(ALICE, FRESH_STACK)])["errors"] == []


def test_consistency_delay_is_the_default_and_seeds_are_visible_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock
) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps({"stacks": [STACK], "users": [{"UserName": ALICE}]}), encoding="utf-8")
    state = AppStreamState.load_seed(seed_file, clock=clock, consistency_delay=3.0)
    assert state.consistency_delay == 3.0
    assert state.clock is clock
    state.add_user(DAVE)  # the state's default delay
    state.add_user(ERIN, visible_after=0)  # overrides it
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with AppStreamServer(state) as server:
        for name, value in client_env(server).items():
            monkeypatch.setenv(name, value)
        once = make_client()
        response = once.batch_associate_user_stack(UserStackAssociations=[item(ALICE), item(DAVE), item(ERIN)])
        assert [(e["UserStackAssociation"]["UserName"], e["ErrorCode"]) for e in response["errors"]] == [
            (DAVE, "USER_NAME_NOT_FOUND")
        ]
        clock.advance(3.0)
        assert once.batch_associate_user_stack(UserStackAssociations=[item(DAVE)])["errors"] == []
    assert state.associations() == {(STACK, u, "USERPOOL") for u in (ALICE, DAVE, ERIN)}


def test_adding_an_existing_user_keeps_its_visibility_but_a_new_one_starts_over(
    state: AppStreamState, clock: FakeClock
) -> None:
    state.add_user(ALICE, visible_after=10.0)  # already there (seeded): nothing changes
    assert state.user_visible(ALICE)
    state.add_user(DAVE, visible_after=10.0)
    state.add_user(DAVE)  # no delay given, but DAVE exists: still pending
    assert not state.user_visible(DAVE)
    state.remove_user(DAVE)
    assert not state.user_visible(DAVE)  # gone is not visible either
    state.add_user(DAVE, visible_after=1.0)
    clock.advance(1.0)
    assert state.user_visible(DAVE)
    assert state.user_visible("federated@example.com", "SAML")  # never looked up
    assert not state.stack_visible("no-such-stack")


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf, True, "1"])
def test_delays_are_validated(bad: object, clock: FakeClock) -> None:
    state = AppStreamState(clock=clock)
    with pytest.raises(ValueError, match="visible_after must be a finite number of seconds"):
        state.add_user(DAVE, visible_after=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="visible_after must be a finite number of seconds"):
        state.add_stack(FRESH_STACK, visible_after=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="consistency_delay must be a finite number of seconds"):
        AppStreamState(consistency_delay=bad)  # type: ignore[arg-type]
    assert state.users() == frozenset()
    assert state.stacks() == frozenset()
