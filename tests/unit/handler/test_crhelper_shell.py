"""crhelper 2.0.12's behaviour that ``appstream_handler.crhelper_shell`` relies on, pinned.

:mod:`appstream_handler.crhelper_shell` is the one place that knows crhelper's private names
(its module docstring lists them). These tests pin each of them against the installed crhelper,
so that an upgrade that moves any of them fails here, loudly and in one place, rather than as a
function that answers twice, sleeps two minutes on every Delete, or never answers:

* ``CfnResource(log_level=, boto_level=, sleep_on_delete=)`` and the registration decorators;
* ``AWS_SAM_LOCAL`` set during construction skips the ``lambda``, ``events`` and ``logs`` clients;
* ``_send(status, reason, send_response=...)`` builds the body from ``Status``, ``Reason`` and
  ``PhysicalResourceId`` and hands it to ``send_response(url, body, ssl_verify)``;
* the timer's ``_timeout`` calls ``_send(FAILED, "Execution timed out")`` 0.5 s before the end;
* a handler's exception becomes FAILED with ``Reason=str(exception)``.

The shell itself then runs against the HTTPS ResponseServer (its CA trusted through
``SSL_CERT_FILE``): one answer per event, even when crhelper's timer fires first.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import crhelper
import crhelper.utils
import pytest
from crhelper import CfnResource

from appstream_handler.crhelper_shell import CrhelperShell
from constructs_lib.testing import ResponseServer
from constructs_lib.testing.events import LambdaContext, cloudformation_event
from tests.helpers.lambda_env import patched_environment

BODY_KEYS = {"Status", "PhysicalResourceId", "StackId", "RequestId", "LogicalResourceId", "Reason", "Data", "NoEcho"}


class Recording(CfnResource):
    """CfnResource whose answers are recorded (the way the shell overrides ``_send``)."""

    def __init__(self, **options: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        self.send_calls: list[tuple[Any, Any]] = []
        super().__init__(**options)

    def _send(self, status: str | None = None, reason: str = "", send_response: Any = None) -> None:
        self.send_calls.append((status, reason))
        super()._send(status, reason, send_response=self._record)  # type: ignore[misc]  # private: not in the stubs

    def _record(self, url: str, body: Mapping[str, Any], ssl_verify: Any = None) -> None:
        self.sent.append({"url": url, "body": dict(body), "ssl_verify": ssl_verify})


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """A region (crhelper builds clients in __init__ without AWS_SAM_LOCAL) and nothing else."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)


def helper(**options: Any) -> Any:
    """A Recording CfnResource built as the shell builds its own (typed Any: the tests reach private names)."""
    previous = os.environ.get("AWS_SAM_LOCAL")
    os.environ["AWS_SAM_LOCAL"] = "true"
    try:
        return Recording(log_level="INFO", boto_level="ERROR", sleep_on_delete=0, **options)
    finally:
        if previous is None:
            del os.environ["AWS_SAM_LOCAL"]
        else:
            os.environ["AWS_SAM_LOCAL"] = previous


def event(request_type: str = "Create", **extra: Any) -> dict[str, Any]:
    return {**cloudformation_event(request_type, {}, response_url="https://127.0.0.1/x"), **extra}


# ------------------------------------------------------------------------------- the version


def test_the_installed_crhelper_is_the_one_pinned() -> None:
    assert importlib.metadata.version("crhelper") == "2.0.12"
    assert crhelper.CfnResource is CfnResource


# ----------------------------------------------------------------------------- construction


def test_the_constructor_takes_the_options_the_shell_passes() -> None:
    parameters = inspect.signature(CfnResource.__init__).parameters
    assert {"log_level", "boto_level", "sleep_on_delete"} <= set(parameters)
    assert parameters["sleep_on_delete"].default == 120  # the default the shell turns off
    assert parameters["log_level"].default == "DEBUG"  # the default the shell turns down


def test_aws_sam_local_during_construction_skips_the_polling_clients(no_aws: None) -> None:
    local = helper()
    assert not hasattr(local, "_lambda_client")
    assert not hasattr(local, "_events_client")
    assert not hasattr(local, "_logs_client")
    remote = CfnResource(log_level="INFO", sleep_on_delete=0)
    assert {"_lambda_client", "_events_client", "_logs_client"} <= set(
        vars(remote)
    )  # built at import: why the shell sets AWS_SAM_LOCAL


@pytest.mark.parametrize("before", [None, "false"])
def test_the_shell_leaves_aws_sam_local_as_it_found_it(
    no_aws: None, monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    if before is not None:
        monkeypatch.setenv("AWS_SAM_LOCAL", before)
    CrhelperShell(lambda event, context: ("SUCCESS", "id", ""))
    assert os.environ.get("AWS_SAM_LOCAL") == before


def test_sleep_on_delete_zero_makes_a_delete_wait_for_nothing() -> None:
    slept: list[float] = []
    quiet = helper()
    quiet._context = LambdaContext(timeout=900)
    quiet._wait_for_cwlogs(sleep=slept.append)
    assert slept == []
    default = helper()
    default._sleep_on_delete = 120
    default._context = LambdaContext(timeout=900)
    default._wait_for_cwlogs(sleep=slept.append)
    assert slept == [120]  # what every Delete would cost without the shell's option


# ------------------------------------------------------------------------- registration, call


def test_the_decorators_register_and_return_the_function() -> None:
    resource = helper()

    def create(event: Any, context: Any) -> str:
        return "id"

    assert resource.create(create) is create
    assert resource.update(create) is create
    assert resource.delete(create) is create
    assert (resource._create_func, resource._update_func, resource._delete_func) == (create, create, create)


@pytest.mark.parametrize(
    ("request_type", "returned", "expected"),
    [("Create", "given-id", "given-id"), ("Update", "", "event-id"), ("Delete", None, "event-id")],
)
def test_the_returned_id_becomes_the_physical_id(request_type: str, returned: str | None, expected: str) -> None:
    resource = helper()
    for register in (resource.create, resource.update, resource.delete):
        register(lambda event, context: returned)
    extra = {} if request_type == "Create" else {"PhysicalResourceId": "event-id"}

    resource(event(request_type, **extra), LambdaContext(timeout=30))

    (sent,) = resource.sent
    assert set(sent["body"]) == BODY_KEYS
    assert sent["body"]["Status"] == "SUCCESS"
    assert sent["body"]["PhysicalResourceId"] == expected
    assert sent["url"] == "https://127.0.0.1/x"


def test_an_empty_id_on_create_is_made_up_by_crhelper() -> None:
    resource = helper()
    resource.create(lambda event, context: "")
    resource(event("Create"), LambdaContext(timeout=30))
    assert resource.sent[0]["body"]["PhysicalResourceId"].startswith("Main_Associations_")


def test_an_exception_becomes_failed_with_its_text() -> None:
    resource = helper()

    def broken(event: Any, context: Any) -> str:
        raise ValueError("broken handler")

    resource.create(broken)
    resource(event("Create"), LambdaContext(timeout=30))
    body = resource.sent[0]["body"]
    assert (body["Status"], body["Reason"]) == ("FAILED", "broken handler")


def test_status_and_reason_set_by_the_function_are_sent() -> None:
    resource = helper()

    def fails(event: Any, context: Any) -> str:
        resource.Status = "FAILED"
        resource.Reason = "2 of 3 associations could not be associated"
        return "failed-id"

    resource.create(fails)
    resource(event("Create"), LambdaContext(timeout=30))
    body = resource.sent[0]["body"]
    assert (body["Status"], body["Reason"], body["PhysicalResourceId"]) == (
        "FAILED",
        "2 of 3 associations could not be associated",
        "failed-id",
    )


def test_polling_keys_in_the_event_select_the_poll_function() -> None:
    resource = helper()
    resource.create(lambda event, context: "create")
    resource.poll_create(lambda event, context: "poll")
    resource._event = event("Create", CrHelperPoll=True)
    assert resource._get_func()(None, None) == "poll"  # why index.py strips CrHelper* keys


# ------------------------------------------------------------------------------------- _send


def test_send_builds_the_body_from_status_reason_and_physical_id() -> None:
    resource = helper()
    resource.Status, resource.Reason, resource.PhysicalResourceId = "SUCCESS", "", "the-id"
    resource.StackId, resource.RequestId, resource.LogicalResourceId = "stack", "request", "Logical"
    resource._response_url = "https://127.0.0.1/y"

    resource._send("FAILED", "overrides")

    (sent,) = resource.sent
    assert sent["body"] == {
        "Status": "FAILED",
        "PhysicalResourceId": "the-id",
        "StackId": "stack",
        "RequestId": "request",
        "LogicalResourceId": "Logical",
        "Reason": "overrides",
        "Data": {},
        "NoEcho": False,
    }
    assert sent["ssl_verify"] is None


def test_send_keeps_only_the_tail_of_a_long_reason() -> None:
    resource = helper()
    resource._send("FAILED", "head " + "x" * 300 + " tail")
    reason = resource.sent[0]["body"]["Reason"]
    assert reason.startswith("ERROR: (truncated) ")
    assert reason.endswith(" tail")
    assert "head" not in reason  # why every reason the handler builds is at most 255 characters


def test_send_response_is_a_keyword_the_default_is_bound_at_definition() -> None:
    parameters = inspect.signature(vars(CfnResource)["_send"]).parameters
    assert list(parameters) == ["self", "status", "reason", "send_response"]
    assert parameters["send_response"].default is vars(crhelper.utils)["_send_response"]


# ------------------------------------------------------------------------------------ the timer


def test_the_timer_sends_failed_execution_timed_out_half_a_second_before_the_end() -> None:
    resource = helper()
    resource._context = LambdaContext(timeout=30)
    resource._set_timeout()
    try:
        assert resource._timer.interval == pytest.approx(30 - 0.5, abs=0.05)
    finally:
        resource._timer.cancel()
    resource._timeout()
    assert resource.send_calls == [("FAILED", "Execution timed out")]


def test_log_level_is_applied_to_the_root_logger_on_every_call() -> None:
    resource = helper()
    resource.create(lambda event, context: "id")
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)
        resource(event("Create"), LambdaContext(timeout=30))
        assert root.level == logging.INFO
    finally:
        root.setLevel(level)


# ------------------------------------------------------------------------------- the shell itself


@pytest.fixture
def trusted(response_server: ResponseServer) -> Iterator[ResponseServer]:
    with patched_environment(response_server.ssl_env()):
        yield response_server
    response_server.faults.clear()


def test_the_shell_answers_once_through_the_bounded_responder(trusted: ResponseServer) -> None:
    shell = CrhelperShell(lambda event, context: ("SUCCESS", "the-id", ""))
    url = trusted.new_response_url("shell")
    trusted.faults.fail(1, status=503, url=url)

    shell({**event("Delete"), "ResponseURL": url}, LambdaContext(timeout=30), fallback_id="fallback")

    (body,) = trusted.responses(url)
    assert (body["Status"], body["PhysicalResourceId"]) == ("SUCCESS", "the-id")
    assert [attempt.status for attempt in trusted.attempts(url)] == [503, 200]
    assert not trusted.attempts(url)[-1].problems


def test_a_failed_run_is_answered_failed_with_its_reason_and_id(trusted: ResponseServer) -> None:
    shell = CrhelperShell(lambda event, context: ("FAILED", "failed-id", "1 of 1 could not be associated"))
    url = trusted.new_response_url("shell")

    shell({**event("Create"), "ResponseURL": url}, LambdaContext(timeout=30), fallback_id="fallback")

    (body,) = trusted.responses(url)
    assert (body["Status"], body["PhysicalResourceId"], body["Reason"]) == (
        "FAILED",
        "failed-id",
        "1 of 1 could not be associated",
    )


def test_an_exception_in_the_run_is_answered_failed_with_an_id_crhelper_makes_up(trusted: ResponseServer) -> None:
    """Why ``index.handler`` catches every exception itself: crhelper would answer a random id."""

    def broken(event: Any, context: Any) -> tuple[str, str, str]:
        raise RuntimeError("no table")

    shell = CrhelperShell(broken)
    url = trusted.new_response_url("shell")

    shell({**event("Create"), "ResponseURL": url}, LambdaContext(timeout=30), fallback_id="fallback")

    (body,) = trusted.responses(url)
    assert (body["Status"], body["Reason"]) == ("FAILED", "no table")
    assert body["PhysicalResourceId"].startswith("Main_Associations_")


def test_when_crhelper_s_timer_answers_first_the_late_answer_is_not_sent(trusted: ResponseServer) -> None:
    url = trusted.new_response_url("late")
    timer_answered = threading.Event()

    def slow(event: Any, context: Any) -> tuple[str, str, str]:
        trusted.wait_for_response(url, timeout=10)  # the timer's answer is in
        timer_answered.set()
        return "SUCCESS", "late-id", ""

    shell = CrhelperShell(slow)

    shell({**event("Create"), "ResponseURL": url}, LambdaContext(timeout=0.7), fallback_id="fallback")

    assert timer_answered.is_set()
    (body,) = trusted.responses(url)
    assert (body["Status"], body["Reason"], body["PhysicalResourceId"]) == ("FAILED", "Execution timed out", "fallback")
    assert len(trusted.attempts(url)) == 1
