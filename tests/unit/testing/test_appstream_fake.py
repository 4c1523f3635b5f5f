"""The AppStream fake, driven only through real boto3 clients.

botocore validates every request against the real AppStream service model and
parses every response with its own parser, so these tests pin the fake to the
wire contract the handler will meet on AWS.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ParamValidationError, ReadTimeoutError

from constructs_lib.testing import (
    BATCH_ASSOCIATE,
    BATCH_DISASSOCIATE,
    DESCRIBE_ASSOCIATIONS,
    AppStreamServer,
    AppStreamState,
    SeedError,
    StateSnapshot,
    client_env,
)

if TYPE_CHECKING:
    from mypy_boto3_appstream import AppStreamClient
    from mypy_boto3_appstream.type_defs import UserStackAssociationTypeDef

STACK = "demo-stack"
OTHER_STACK = "other-stack"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
REPO_ROOT = Path(__file__).resolve().parents[3]


def item(user: str, stack: str = STACK, auth: str = "USERPOOL") -> UserStackAssociationTypeDef:
    """One batch item."""
    return {"StackName": stack, "UserName": user, "AuthenticationType": auth}  # type: ignore[typeddict-item]


def make_client(
    *, attempts: int = 4, read_timeout: float = 5.0, endpoint_url: str | None = None, app_id: str | None = None
) -> AppStreamClient:
    """An unmodified client; by default the endpoint comes from AWS_ENDPOINT_URL_APPSTREAM."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=2,
        read_timeout=read_timeout,
        max_pool_connections=16,
        user_agent_appid=app_id,  # type: ignore[call-arg]  # botocore 1.44 has it; its stubs do not
    )
    return boto3.client("appstream", region_name="us-east-1", config=config, endpoint_url=endpoint_url)


@pytest.fixture
def state() -> AppStreamState:
    """Two stacks and three user-pool users, nothing associated."""
    return AppStreamState.from_seed(
        {"stacks": [STACK, OTHER_STACK], "users": [{"UserName": u} for u in (ALICE, BOB, CAROL)]}
    )


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No profile, config file or retry settings of the developer's can leak in."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_SDK_UA_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return monkeypatch


@pytest.fixture
def server(state: AppStreamState, isolated_env: pytest.MonkeyPatch) -> Iterator[AppStreamServer]:
    """The running fake, with the process environment pointing boto3 at it."""
    monkeypatch = isolated_env
    with AppStreamServer(state) as running:
        for name, value in client_env(running).items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
def client(server: AppStreamServer) -> AppStreamClient:
    """A client retrying up to 4 attempts in botocore's standard mode."""
    return make_client()


@pytest.fixture
def once(server: AppStreamServer) -> AppStreamClient:
    """A client that never retries."""
    return make_client(attempts=1)


def error_code(error: pytest.ExceptionInfo[ClientError]) -> str:
    """The error code botocore parsed from the response."""
    return str(error.value.response["Error"]["Code"])


# ------------------------------------------------------------------ basics


def test_unmodified_client_reaches_fake_through_environment(server: AppStreamServer, client: AppStreamClient) -> None:
    assert client.meta.endpoint_url == server.endpoint_url
    client.describe_user_stack_associations(StackName=STACK)
    assert [c.operation for c in server.calls] == [DESCRIBE_ASSOCIATIONS]


def test_package_imports_without_boto3_or_trustme() -> None:
    code = (
        "import sys, constructs_lib.testing\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'trustme') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_associate_applies_items_and_returns_no_errors(server: AppStreamServer, client: AppStreamClient) -> None:
    response = client.batch_associate_user_stack(UserStackAssociations=[item(ALICE), item(BOB)])
    assert response["errors"] == []
    assert server.state.associations() == {
        (STACK, ALICE, "USERPOOL"),
        (STACK, BOB, "USERPOOL"),
    }
    assert server.calls[0].outcome == "ok"
    assert server.calls[0].item_count == 2


def test_associating_twice_is_idempotent(server: AppStreamServer, client: AppStreamClient) -> None:
    for _ in range(2):
        assert client.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])["errors"] == []
    assert server.state.associations() == {(STACK, ALICE, "USERPOOL")}


def test_disassociate_removes_and_tolerates_unassociated_users(
    server: AppStreamServer, client: AppStreamClient
) -> None:
    server.state.associate(STACK, ALICE)
    server.state.associate(OTHER_STACK, ALICE)
    response = client.batch_disassociate_user_stack(UserStackAssociations=[item(ALICE), item(BOB)])
    assert response["errors"] == []
    assert server.state.associations() == {(OTHER_STACK, ALICE, "USERPOOL")}


@pytest.mark.parametrize("operation", [BATCH_ASSOCIATE, BATCH_DISASSOCIATE])
def test_error_items_are_the_only_failure_signal(
    server: AppStreamServer, client: AppStreamClient, operation: str
) -> None:
    server.state.associate(STACK, BOB)
    items = [
        item(ALICE, stack="no-such-stack"),
        item("nobody@example.com"),
        item("saml-user@example.com", auth="SAML"),
        item(BOB),
    ]
    call = getattr(
        client, "batch_associate_user_stack" if operation == BATCH_ASSOCIATE else "batch_disassociate_user_stack"
    )
    response = call(UserStackAssociations=items)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert [(e["UserStackAssociation"], e["ErrorCode"]) for e in response["errors"]] == [
        (items[0], "STACK_NOT_FOUND"),
        (items[1], "USER_NAME_NOT_FOUND"),
    ]
    assert all(e["ErrorMessage"] for e in response["errors"])
    expected = (
        {(STACK, "saml-user@example.com", "SAML"), (STACK, BOB, "USERPOOL")} if operation == BATCH_ASSOCIATE else set()
    )
    assert server.state.associations() == expected
    assert server.calls[-1].outcome == "item_errors"
    assert server.calls[-1].error_codes == ("STACK_NOT_FOUND", "USER_NAME_NOT_FOUND")


def test_send_email_notification_is_accepted_and_echoed(server: AppStreamServer, client: AppStreamClient) -> None:
    bad = {**item(ALICE, stack="missing"), "SendEmailNotification": True}
    response = client.batch_associate_user_stack(UserStackAssociations=[bad])  # type: ignore[list-item]
    assert response["errors"][0]["UserStackAssociation"] == bad
    assert server.calls[0].body["UserStackAssociations"][0]["SendEmailNotification"] is True


def test_25_items_accepted_26_rejected_by_the_server(server: AppStreamServer, client: AppStreamClient) -> None:
    users = [f"user{n:02d}@example.com" for n in range(26)]
    for user in users:
        server.state.add_user(user)
    response = client.batch_associate_user_stack(UserStackAssociations=[item(u) for u in users[:25]])
    assert response["errors"] == []
    server.state.remove_stack(STACK)
    server.state.add_stack(STACK)

    with pytest.raises(ClientError) as raised:
        client.batch_associate_user_stack(UserStackAssociations=[item(u) for u in users])
    assert error_code(raised) == "ValidationException"
    assert "less than or equal to 25" in str(raised.value)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert server.calls[-1].item_count == 26  # botocore sent it: only the server enforces max 25
    assert len(server.calls) == 2  # a ValidationException is not retried
    assert server.state.associations() == frozenset()


def test_empty_batch_never_leaves_the_client(server: AppStreamServer, client: AppStreamClient) -> None:
    with pytest.raises(ParamValidationError):
        client.batch_associate_user_stack(UserStackAssociations=[])
    assert server.calls == ()


def test_unknown_operation(server: AppStreamServer, client: AppStreamClient) -> None:
    with pytest.raises(ClientError) as raised:
        client.describe_stacks()
    assert error_code(raised) == "UnknownOperationException"
    assert server.calls[0].operation == "DescribeStacks"


# ------------------------------------------------------------------ describe


def seed_many(state: AppStreamState, count: int, stack: str = STACK) -> list[dict[str, str]]:
    """Associate ``count`` new users with ``stack``; return them in the fake's sort order."""
    users = [f"u{n:04d}@example.com" for n in range(count)]
    for user in users:
        state.add_user(user)
        state.associate(stack, user)
    return [{"StackName": stack, "UserName": u, "AuthenticationType": "USERPOOL"} for u in sorted(users)]


@pytest.mark.parametrize(("count", "page_size", "pages"), [(1234, 500, [500, 500, 234]), (20, 7, [7, 7, 6])])
def test_paginator_walks_every_association(
    server: AppStreamServer,
    client: AppStreamClient,
    count: int,
    page_size: int,
    pages: list[int],
) -> None:
    expected = seed_many(server.state, count)
    seed_many(server.state, 3, stack=OTHER_STACK)
    paginator = client.get_paginator("describe_user_stack_associations")
    result = list(paginator.paginate(StackName=STACK, PaginationConfig={"PageSize": page_size}))
    assert [len(page["UserStackAssociations"]) for page in result] == pages
    assert [a for page in result for a in page["UserStackAssociations"]] == expected
    assert "NextToken" not in result[-1]
    assert [c.body.get("MaxResults") for c in server.calls] == [page_size] * len(pages)


def test_absent_max_results_means_pages_of_500(server: AppStreamServer, client: AppStreamClient) -> None:
    seed_many(server.state, 501)
    first = client.describe_user_stack_associations(StackName=STACK)
    assert len(first["UserStackAssociations"]) == 500
    second = client.describe_user_stack_associations(StackName=STACK, NextToken=first["NextToken"])
    assert len(second["UserStackAssociations"]) == 1
    assert "NextToken" not in second


def test_describe_by_user_and_unknown_stack(server: AppStreamServer, client: AppStreamClient) -> None:
    server.state.associate(STACK, ALICE)
    server.state.associate(OTHER_STACK, ALICE)
    server.state.associate(STACK, BOB)
    by_user = client.describe_user_stack_associations(UserName=ALICE, AuthenticationType="USERPOOL")
    assert [a["StackName"] for a in by_user["UserStackAssociations"]] == [STACK, OTHER_STACK]
    both = client.describe_user_stack_associations(StackName=STACK, UserName=BOB, AuthenticationType="USERPOOL")
    assert [a["UserName"] for a in both["UserStackAssociations"]] == [BOB]
    assert client.describe_user_stack_associations(StackName="ghost")["UserStackAssociations"] == []


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"UserName": ALICE}, {"StackName": STACK, "AuthenticationType": "USERPOOL"}],
    ids=["nothing", "user-without-auth-type", "auth-type-without-user"],
)
def test_describe_rejects_invalid_combinations(
    server: AppStreamServer, client: AppStreamClient, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(client.exceptions.InvalidParameterCombinationException):
        client.describe_user_stack_associations(**kwargs)
    assert len(server.calls) == 1


def test_describe_rejects_foreign_and_garbage_tokens(server: AppStreamServer, client: AppStreamClient) -> None:
    seed_many(server.state, 3)
    seed_many(server.state, 3, stack=OTHER_STACK)
    token = client.describe_user_stack_associations(StackName=STACK, MaxResults=1)["NextToken"]
    for bad in ("not-a-token", token):
        with pytest.raises(client.exceptions.InvalidParameterCombinationException):
            client.describe_user_stack_associations(StackName=OTHER_STACK, NextToken=bad)


# ------------------------------------------------------------------ faults


def test_throttling_is_retried_by_botocore(server: AppStreamServer, client: AppStreamClient) -> None:
    server.faults.throttle(2)
    response = client.describe_user_stack_associations(StackName=STACK)
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    calls = server.calls
    assert [(c.outcome, c.status, c.attempt) for c in calls] == [
        ("ThrottlingException", 400, 1),
        ("ThrottlingException", 400, 2),
        ("ok", 200, 3),
    ]
    assert len({c.invocation_id for c in calls}) == 1
    assert server.faults.pending() == 0


def test_throttle_seen_by_a_client_without_retries(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.throttle(1, operation=BATCH_ASSOCIATE)
    once.describe_user_stack_associations(StackName=STACK)  # other operations are unaffected
    with pytest.raises(ClientError) as raised:
        once.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert error_code(raised) == "ThrottlingException"
    assert raised.value.response["Error"]["Message"] == "Rate exceeded"
    assert server.state.associations() == frozenset()


def test_internal_error_items_transient(server: AppStreamServer, client: AppStreamClient) -> None:
    server.faults.internal_error(ALICE, attempts=1)
    first = client.batch_associate_user_stack(UserStackAssociations=[item(ALICE), item(BOB)])
    assert [(e["UserStackAssociation"]["UserName"], e["ErrorCode"]) for e in first["errors"]] == [
        (ALICE, "INTERNAL_ERROR")
    ]
    assert server.state.associations() == {(STACK, BOB, "USERPOOL")}
    second = client.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert second["errors"] == []
    assert (STACK, ALICE, "USERPOOL") in server.state.associations()
    assert len(server.calls) == 2  # error items are not retried by botocore


def test_internal_error_items_persistent_until_cleared(server: AppStreamServer, client: AppStreamClient) -> None:
    server.state.associate(STACK, ALICE)
    server.faults.internal_error(ALICE, attempts=None, operation=BATCH_DISASSOCIATE)
    for _ in range(3):
        response = client.batch_disassociate_user_stack(UserStackAssociations=[item(ALICE)])
        assert [e["ErrorCode"] for e in response["errors"]] == ["INTERNAL_ERROR"]
    assert client.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])["errors"] == []
    assert server.state.associations() == {(STACK, ALICE, "USERPOOL")}
    server.faults.clear()
    assert client.batch_disassociate_user_stack(UserStackAssociations=[item(ALICE)])["errors"] == []
    assert server.state.associations() == frozenset()


def test_internal_error_does_not_mask_not_found(server: AppStreamServer, client: AppStreamClient) -> None:
    server.faults.internal_error(ALICE, attempts=1)
    response = client.batch_associate_user_stack(UserStackAssociations=[item(ALICE, stack="ghost")])
    assert [e["ErrorCode"] for e in response["errors"]] == ["STACK_NOT_FOUND"]
    assert server.faults.pending() == 1


@pytest.mark.parametrize("code", ["OperationNotPermittedException", "InvalidParameterCombinationException"])
def test_modelled_exceptions_are_not_retried(server: AppStreamServer, client: AppStreamClient, code: str) -> None:
    server.faults.fail_with(code, operation=BATCH_ASSOCIATE, message="nope")
    with pytest.raises(getattr(client.exceptions, code)) as raised:
        client.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert raised.value.response["Error"]["Message"] == "nope"
    assert [(c.status, c.fault) for c in server.calls] == [(400, "error")]
    assert server.state.associations() == frozenset()
    assert client.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])["errors"] == []


def test_faults_fire_in_the_order_added(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.throttle(1)
    server.faults.fail_with("OperationNotPermittedException")
    outcomes = []
    for _ in range(3):
        try:
            once.describe_user_stack_associations(StackName=STACK)
            outcomes.append("ok")
        except ClientError as error:
            outcomes.append(str(error.response["Error"]["Code"]))
    assert outcomes == ["ThrottlingException", "OperationNotPermittedException", "ok"]


def test_latency_applies_per_operation(server: AppStreamServer, client: AppStreamClient) -> None:
    server.faults.latency(0.4, operation=DESCRIBE_ASSOCIATIONS)
    started = time.monotonic()
    client.describe_user_stack_associations(StackName=STACK)
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    client.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert time.monotonic() - started < 0.4


def test_connection_reset_is_retried(server: AppStreamServer, client: AppStreamClient) -> None:
    server.faults.reset_connection(1)
    response = client.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert response["errors"] == []
    assert [(c.outcome, c.status) for c in server.calls] == [
        ("connection_reset", None),
        ("ok", 200),
    ]


def test_connection_reset_without_retries(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.reset_connection(1)
    with pytest.raises(ConnectionClosedError):
        once.describe_user_stack_associations(StackName=STACK)


def test_hang_trips_the_client_read_timeout(server: AppStreamServer) -> None:
    impatient = make_client(attempts=1, read_timeout=0.3)
    server.faults.hang(1, seconds=30)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        impatient.describe_user_stack_associations(StackName=STACK)
    assert time.monotonic() - started < 3
    assert [c.outcome for c in server.calls] == ["hang"]


def test_stop_does_not_wait_for_a_hanging_request(state: AppStreamState, isolated_env: pytest.MonkeyPatch) -> None:
    before = set(threading.enumerate())
    server = AppStreamServer(state).start()
    server.faults.hang(1, seconds=60)
    for name, value in client_env(server).items():
        isolated_env.setenv(name, value)
    client = make_client(attempts=1, read_timeout=10)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            client.describe_user_stack_associations(StackName=STACK)
        except Exception as error:
            failures.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    while not server.calls:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 2
    assert not caller.is_alive()
    assert len(failures) == 1
    assert isinstance(failures[0], ConnectionClosedError)
    assert threads_left_behind(before) == []


def test_stop_ends_idle_keep_alive_connections(state: AppStreamState, isolated_env: pytest.MonkeyPatch) -> None:
    before = set(threading.enumerate())
    with AppStreamServer(state) as server:
        client = make_client(endpoint_url=server.endpoint_url)
        client.describe_user_stack_associations(StackName=STACK)  # leaves a pooled connection open
    assert threads_left_behind(before) == []
    client.close()


def threads_left_behind(before: set[threading.Thread]) -> list[str]:
    """Names of threads started since ``before`` that are still alive after a short grace."""
    started = [t for t in threading.enumerate() if t not in before]
    for thread in started:
        thread.join(timeout=1)
    return [t.name for t in started if t.is_alive()]


def test_http_500_is_retried(server: AppStreamServer, client: AppStreamClient) -> None:
    server.faults.server_error(1)
    client.describe_user_stack_associations(StackName=STACK)
    assert [c.status for c in server.calls] == [500, 200]


def test_http_500_without_retries(server: AppStreamServer, once: AppStreamClient) -> None:
    server.faults.server_error(1)
    with pytest.raises(ClientError) as raised:
        once.describe_user_stack_associations(StackName=STACK)
    assert error_code(raised) == "InternalServerError"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_fault_arguments_are_validated() -> None:
    faults = AppStreamServer().faults
    with pytest.raises(ValueError, match="unknown operation 'BatchAssociateUserStacks'"):
        faults.throttle(operation="BatchAssociateUserStacks")
    with pytest.raises(ValueError, match="count must be at least 1"):
        faults.reset_connection(0)
    with pytest.raises(ValueError, match="at least one user name"):
        faults.internal_error()


# ------------------------------------------------------------------ crashes


def test_app_id_comes_from_the_user_agent(
    server: AppStreamServer, client: AppStreamClient, isolated_env: pytest.MonkeyPatch
) -> None:
    client.describe_user_stack_associations(StackName=STACK)
    make_client(app_id="from-config").describe_user_stack_associations(StackName=STACK)
    isolated_env.setenv("AWS_SDK_UA_APP_ID", "from-env#7")
    make_client().describe_user_stack_associations(StackName=STACK)
    assert [c.app_id for c in server.calls] == [None, "from-config", "from-env#7"]


class Crashes:
    """A crash action that records what the fake had done when it ran."""

    def __init__(self, server: AppStreamServer) -> None:
        self.server = server
        self.seen: list[tuple[frozenset[tuple[str, str, str]], int]] = []

    def __call__(self) -> None:
        self.seen.append((self.server.state.associations(), len(self.server.calls)))


def test_crash_lands_the_call_runs_the_action_then_resets(server: AppStreamServer, once: AppStreamClient) -> None:
    action = Crashes(server)
    server.faults.crash(2, app_id="fn-1", action=action, operation=BATCH_ASSOCIATE)
    assert server.faults.pending() == 1
    crashing = make_client(attempts=1, app_id="fn-1")
    crashing.describe_user_stack_associations(StackName=STACK)  # another operation: not counted
    crashing.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])  # 1st
    once.batch_associate_user_stack(UserStackAssociations=[item(BOB)])  # another caller: not counted
    assert action.seen == []
    with pytest.raises(ConnectionClosedError):
        crashing.batch_associate_user_stack(UserStackAssociations=[item(CAROL)])  # 2nd: crash
    landed = frozenset((STACK, user, "USERPOOL") for user in (ALICE, BOB, CAROL))
    assert action.seen == [(landed, 4)]  # the batch had landed and was logged when the action ran
    crash = server.calls[-1]
    assert (crash.fault, crash.outcome, crash.status, crash.app_id) == ("crash", "ok", None, "fn-1")
    assert crash.body == {"UserStackAssociations": [item(CAROL)]}
    assert server.faults.pending() == 0
    crashing.batch_associate_user_stack(UserStackAssociations=[item(ALICE, OTHER_STACK)])  # one-shot
    assert action.seen == [(landed, 4)]
    assert (server.calls[-1].fault, server.calls[-1].status) == (None, 200)


def test_a_crash_that_kills_nobody_is_retried_by_botocore(server: AppStreamServer) -> None:
    action = Crashes(server)
    server.faults.crash(1, app_id="survivor", action=action)
    response = make_client(app_id="survivor").batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert response["errors"] == []
    assert len(action.seen) == 1
    assert [(c.attempt, c.fault, c.outcome) for c in server.calls] == [(1, "crash", "ok"), (2, None, "ok")]


def test_a_crash_on_a_throttled_call_lands_nothing(server: AppStreamServer) -> None:
    server.faults.throttle(1)
    action = Crashes(server)
    server.faults.crash(1, app_id="fn-1", action=action)
    with pytest.raises(ConnectionClosedError):
        make_client(attempts=1, app_id="fn-1").batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert action.seen == [(frozenset(), 1)]
    assert (server.calls[0].fault, server.calls[0].outcome) == ("crash", "ThrottlingException")
    assert server.state.associations() == frozenset()


def test_crash_kills_a_child_process_after_its_nth_call(server: AppStreamServer) -> None:
    users = [f"child{n}@example.com" for n in range(4)]
    for user in users:
        server.state.add_user(user)
    code = (
        "import boto3, sys\n"
        "client = boto3.client('appstream')\n"
        "for user in sys.argv[1:]:\n"
        "    client.batch_associate_user_stack(UserStackAssociations=[\n"
        "        {'StackName': 'demo-stack', 'UserName': user, 'AuthenticationType': 'USERPOOL'}])\n"
        "    print(user, flush=True)\n"
    )
    env = {**os.environ, **client_env(server), "AWS_SDK_UA_APP_ID": "child-1", "AWS_MAX_ATTEMPTS": "1"}
    started = threading.Event()
    children: list[subprocess.Popen[str]] = []

    def kill() -> None:
        started.wait(10)
        children[0].kill()
        children[0].wait(10)  # dead before the fake answers anything

    server.faults.crash(2, app_id="child-1", action=kill)
    children.append(subprocess.Popen([sys.executable, "-c", code, *users], env=env, stdout=subprocess.PIPE, text=True))
    started.set()
    stdout, _ = children[0].communicate(timeout=60)
    assert children[0].returncode == -signal.SIGKILL
    assert stdout.split() == users[:1]  # it never saw the answer to its 2nd call
    assert server.state.associations() == {(STACK, user, "USERPOOL") for user in users[:2]}
    assert [(c.app_id, c.fault) for c in server.calls] == [("child-1", None), ("child-1", "crash")]
    assert server.faults.crash_errors() == ()


def test_crash_fires_exactly_once_among_concurrent_callers(server: AppStreamServer) -> None:
    users = [f"c{n}@example.com" for n in range(12)]
    for user in users:
        server.state.add_user(user)
    action = Crashes(server)
    server.faults.crash(5, app_id="busy", action=action)
    busy = make_client(attempts=1, app_id="busy")
    failures: list[BaseException] = []

    def call(user: str) -> None:
        try:
            busy.batch_associate_user_stack(UserStackAssociations=[item(user)])
        except ConnectionClosedError as error:
            failures.append(error)

    threads = [threading.Thread(target=call, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(action.seen) == 1
    assert len(failures) == 1
    assert [c.fault for c in server.calls].count("crash") == 1
    assert server.state.associations() == {(STACK, u, "USERPOOL") for u in users}


def test_two_crashes_due_on_one_request_fire_one_after_the_other(server: AppStreamServer) -> None:
    fired: list[str] = []
    server.faults.crash(1, app_id="fn-1", action=lambda: fired.append("any"))
    server.faults.crash(1, app_id="fn-1", action=lambda: fired.append("batch"), operation=BATCH_ASSOCIATE)
    server.faults.crash(1, app_id="fn-2", action=lambda: fired.append("other app"))
    crashing = make_client(attempts=1, app_id="fn-1")
    for user in (ALICE, BOB):
        with pytest.raises(ConnectionClosedError):
            crashing.batch_associate_user_stack(UserStackAssociations=[item(user)])
    crashing.batch_associate_user_stack(UserStackAssociations=[item(CAROL)])
    assert fired == ["any", "batch"]
    assert [c.fault for c in server.calls] == ["crash", "crash", None]
    assert server.faults.pending() == 1  # fn-2's


def test_crash_action_errors_are_kept_and_the_reset_still_happens(server: AppStreamServer) -> None:
    def broken() -> None:
        raise RuntimeError("could not kill")

    server.faults.crash(1, app_id="fn-1", action=broken)
    with pytest.raises(ConnectionClosedError):
        make_client(attempts=1, app_id="fn-1").batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert [str(e) for e in server.faults.crash_errors()] == ["could not kill"]
    assert server.state.associations() == {(STACK, ALICE, "USERPOOL")}
    server.faults.clear()
    assert server.faults.crash_errors() == ()


def test_cleared_crashes_do_not_fire(server: AppStreamServer) -> None:
    action = Crashes(server)
    server.faults.crash(1, app_id="fn-1", action=action)
    server.faults.clear()
    assert server.faults.pending() == 0
    make_client(attempts=1, app_id="fn-1").describe_user_stack_associations(StackName=STACK)
    assert action.seen == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"after": 0}, "after must be at least 1"),
        ({"app_id": "has space"}, "app_id must be"),
        ({"app_id": ""}, "app_id must be"),
        ({"app_id": "app/x"}, "app_id must be"),
        ({"operation": "BatchAssociateUserStacks"}, "unknown operation"),
        ({"action": "not callable"}, "action must be callable"),
    ],
)
def test_crash_arguments_are_validated(kwargs: dict[str, Any], message: str) -> None:
    faults = AppStreamServer().faults
    arguments: dict[str, Any] = {"after": 1, "app_id": "fn-1", "action": lambda: None, **kwargs}
    with pytest.raises(ValueError, match=message):
        faults.crash(arguments.pop("after"), **arguments)
    assert faults.pending() == 0


# ------------------------------------------------------------------ call log, concurrency


def test_server_is_quiet_even_when_faults_fire(
    state: AppStreamState, isolated_env: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    with AppStreamServer(state) as server:
        once = make_client(attempts=1, endpoint_url=server.endpoint_url)
        server.faults.reset_connection(1)
        with pytest.raises(ConnectionClosedError):
            once.describe_user_stack_associations(StackName=STACK)
        once.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert capfd.readouterr() == ("", "")


def test_requests_outside_the_protocol_are_logged_and_refused(server: AppStreamServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request(
        "POST", "/", body=b"not json", headers={"X-Amz-Target": f"PhotonAdminProxyService.{BATCH_ASSOCIATE}"}
    )
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())["__type"]) == (400, "SerializationException")
    connection.request("GET", "/anything")
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())["__type"]) == (400, "UnknownOperationException")
    connection.close()
    assert [c.outcome for c in server.calls] == ["SerializationException", "UnknownOperationException"]


def test_keep_alive_reuses_one_connection(server: AppStreamServer, client: AppStreamClient) -> None:
    for _ in range(3):
        client.describe_user_stack_associations(StackName=STACK)
    assert len({c.client_address for c in server.calls}) == 1


def test_call_log_filters_and_resets(server: AppStreamServer, client: AppStreamClient) -> None:
    client.describe_user_stack_associations(StackName=STACK)
    client.batch_associate_user_stack(UserStackAssociations=[item(ALICE)])
    assert [c.body for c in server.calls_for(BATCH_ASSOCIATE)] == [{"UserStackAssociations": [item(ALICE)]}]
    assert len(server.calls_for(DESCRIBE_ASSOCIATIONS)) == 1
    server.reset_calls()
    assert server.calls == ()


def test_concurrent_batches_are_all_applied(server: AppStreamServer, client: AppStreamClient) -> None:
    users = [f"c{n}@example.com" for n in range(12)]
    for user in users:
        server.state.add_user(user)
    threads = [
        threading.Thread(
            target=client.batch_associate_user_stack,
            kwargs={"UserStackAssociations": [item(user)]},
        )
        for user in users
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.state.associations() == {(STACK, u, "USERPOOL") for u in users}
    assert len(server.calls) == len(users)


# ------------------------------------------------------------------ seeds


def test_seed_file_round_trip(tmp_path: Path) -> None:
    seed = {
        "stacks": [STACK],
        "users": [{"UserName": ALICE}, {"UserName": "ad-user", "AuthenticationType": "AWS_AD"}],
        "associations": [
            {"StackName": STACK, "UserName": ALICE},
            {"StackName": STACK, "UserName": "federated", "AuthenticationType": "SAML"},
        ],
    }
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed), encoding="utf-8")
    state = AppStreamState.load_seed(path)
    assert state.associations() == {(STACK, ALICE, "USERPOOL"), (STACK, "federated", "SAML")}
    assert state.users() == {(ALICE, "USERPOOL"), ("ad-user", "AWS_AD")}
    assert AppStreamState.from_seed(state.to_seed()).snapshot() == state.snapshot()


def test_seed_errors_are_collected() -> None:
    seed = {
        "stacks": ["ok-stack", "bad/stack"],
        "users": [{"UserName": "has space"}, {"UserName": BOB, "AuthenticationType": "LDAP"}],
        "associations": [{"StackName": "missing", "UserName": CAROL}],
        "extra": True,
    }
    with pytest.raises(SeedError) as raised:
        AppStreamState.from_seed(seed)
    problems = raised.value.problems
    assert problems[0] == "unknown key 'extra' (expected stacks, users, associations)"
    assert any(p.startswith("stacks[1]: expected a stack name") for p in problems)
    assert any(p.startswith("users[0].UserName: user name") for p in problems)
    assert any(p.startswith("users[1].AuthenticationType: expected one of") for p in problems)
    assert any("stack 'missing' is not listed in stacks" in p for p in problems)
    assert any(f"user {CAROL!r} is not listed in users" in p for p in problems)
    assert len(problems) == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "not valid JSON"), ("[]", "expected a JSON object"), ('{"stacks": "x"}', "expected a list")],
)
def test_seed_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "seed.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SeedError, match=message) as raised:
        AppStreamState.load_seed(path)
    assert str(path) in str(raised.value)


def test_seeding_methods_validate() -> None:
    state = AppStreamState()
    with pytest.raises(ValueError, match="stack name"):
        state.add_stack("no/slash")
    with pytest.raises(ValueError, match="expected one of"):
        state.add_user(ALICE, "LDAP")
    state.add_stack(STACK)
    with pytest.raises(ValueError, match="does not exist in the user pool"):
        state.associate(STACK, ALICE)
    state.associate(STACK, "federated", "SAML")
    assert state.associations() == {(STACK, "federated", "SAML")}


def test_reset_starts_afresh_while_running() -> None:
    state = AppStreamState.from_seed(
        {"stacks": ["s"], "users": [{"UserName": "a@x"}], "associations": [{"StackName": "s", "UserName": "a@x"}]}
    )
    with AppStreamServer(state) as server:
        server.faults.throttle(2)
        client = boto3.client(
            "appstream",
            region_name="us-east-1",
            endpoint_url=server.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )
        with pytest.raises(ClientError):
            client.describe_user_stack_associations(StackName="s")
        server.reset()
        assert server.calls == ()
        assert server.faults.pending() == 0
        assert server.state.snapshot() == StateSnapshot(frozenset(), frozenset(), frozenset())
        assert client.describe_user_stack_associations(StackName="s")["UserStackAssociations"] == []
