"""The ResponseURL side (issue 6): the answer arrives, and a broken URL never wedges the function.

crhelper's own sender ignores the HTTP status of its PUT and retries a broken connection forever
without a socket timeout. Through ``index.handler`` and the HTTPS ResponseServer on loopback,
these tests check that a transient failure (HTTP 5xx, a reset, a store that hangs) is retried a
bounded number of times with a per-attempt timeout, that a permanent refusal is not retried,
and that the function always returns before its time runs out.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import STACK_ID, Context, cfn_event, properties

from constructs_lib.testing import AppStreamServer, ResponseAttempt, ResponseServer

MAX_ATTEMPTS = 5  # the documented bound on response attempts


@dataclass
class Sent:
    url: str
    attempts: list[ResponseAttempt]
    seconds: float

    @property
    def accepted(self) -> list[ResponseAttempt]:
        return [attempt for attempt in self.attempts if attempt.accepted]


def unknown_delete() -> dict[str, Any]:
    """A Delete for an id the handler never handed out: answered SUCCESS with no AppStream call."""
    return cfn_event("Delete", properties("demo", ["alice@example.com"]), physical_id=f"never-seen-{uuid.uuid4()}")


def send(
    event: dict[str, Any],
    server: ResponseServer,
    *,
    remaining: float = 300.0,
    url: str | None = None,
    faults: Any = None,
) -> Sent:
    """Run ``index.handler`` with a fresh ResponseURL (faults scoped to it); return what the store saw."""
    import index  # noqa: PLC0415 - needs the environment set up first

    url = url or server.new_response_url("responder")
    if faults is not None:
        faults(server.faults, url)
    started = time.monotonic()
    index.handler({**event, "ResponseURL": url}, Context(remaining))
    seconds = time.monotonic() - started
    return Sent(url, server.attempts(url), seconds)


@pytest.fixture(autouse=True)
def _no_leftover_faults(response_server: ResponseServer, appstream: AppStreamServer) -> Any:
    yield
    response_server.faults.clear()


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_until_the_answer_is_stored(
    status: int, response_server: ResponseServer, appstream: AppStreamServer
) -> None:
    sent = send(unknown_delete(), response_server, faults=lambda f, url: f.fail(2, status=status, url=url))

    assert [attempt.status for attempt in sent.attempts] == [status, status, 200]
    assert len({attempt.raw for attempt in sent.attempts}) == 1  # the same answer every time
    assert not sent.accepted[0].problems
    assert sent.accepted[0].body is not None
    assert sent.accepted[0].body["Status"] == "SUCCESS"
    assert sent.seconds < 5
    assert appstream.calls == ()


def test_reset_connections_are_retried_until_the_answer_is_stored(
    response_server: ResponseServer, appstream: AppStreamServer
) -> None:
    sent = send(unknown_delete(), response_server, faults=lambda f, url: f.reset_connection(3, url=url))

    assert [attempt.status for attempt in sent.attempts] == [None, None, None, 200]
    assert len(sent.accepted) == 1
    assert sent.seconds < 8


def test_a_store_that_keeps_failing_is_given_up_on_in_bounded_time(
    response_server: ResponseServer, appstream: AppStreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    def faults(f: Any, url: str) -> None:
        f.reset_connection(2, url=url)
        f.fail(50, status=503, url=url)

    sent = send(unknown_delete(), response_server, faults=faults)

    assert len(sent.attempts) == MAX_ATTEMPTS
    assert not sent.accepted
    assert sent.seconds < 12  # backoff 0.5 + 1 + 2 + 4 s, then the function returns
    time.sleep(0.5)
    assert len(response_server.attempts(sent.url)) == MAX_ATTEMPTS  # nothing keeps trying behind our back
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "could not be delivered" in logged
    assert urlsplit(sent.url).path not in logged
    assert "X-Amz-Signature" not in logged


def test_a_store_that_hangs_gets_a_per_attempt_timeout(
    response_server: ResponseServer, appstream: AppStreamServer
) -> None:
    """The first PUT is held for 8 s; the function gives up on it after at most 5 s and retries."""
    sent = send(unknown_delete(), response_server, faults=lambda f, url: f.delay(8, url=url))

    assert sent.seconds < 7
    assert len(sent.accepted) == 1  # the retry; the held first attempt has not been answered yet
    assert sent.accepted[0].fault is None


@pytest.mark.parametrize("tamper", ["signature", "path"])
def test_a_permanent_refusal_is_not_retried(
    tamper: str, response_server: ResponseServer, appstream: AppStreamServer
) -> None:
    issued = response_server.new_response_url("refused")
    if tamper == "signature":  # S3 answers 403 SignatureDoesNotMatch
        url = issued.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    else:  # S3 answers 404 NoSuchKey
        url = issued.replace("/cfn-response/", "/cfn-response/gone-")
    import index  # noqa: PLC0415

    started = time.monotonic()
    index.handler({**unknown_delete(), "ResponseURL": url}, Context(300))
    seconds = time.monotonic() - started

    attempts = [attempt for attempt in response_server.attempts() if attempt.target == url[url.index("/cfn") :]]
    assert [attempt.status for attempt in attempts] == [403 if tamper == "signature" else 404]
    assert seconds < 2


def test_the_function_returns_before_its_time_runs_out_when_the_store_is_down(
    response_server: ResponseServer, appstream: AppStreamServer
) -> None:
    sent = send(unknown_delete(), response_server, remaining=3.0, faults=lambda f, url: f.fail(50, status=500, url=url))

    assert sent.seconds < 3.0 - 0.5  # before crhelper's timer would fire
    assert 1 <= len(sent.attempts) <= MAX_ATTEMPTS
    count = len(sent.attempts)
    time.sleep(1.0)  # past the function's end: crhelper's timer must not have sent anything more
    assert len(response_server.attempts(sent.url)) == count


def test_a_failed_answer_survives_a_flaky_store_intact(
    response_server: ResponseServer, appstream: AppStreamServer
) -> None:
    """A FAILED Create with a long, multi-byte reason: retried, stored once, within CloudFormation's limits."""
    names = [f"{'ü' * 100}{index:03d}@例子.公司" for index in range(60)]
    event = cfn_event("Create", properties("missing-stack", names))
    sent = send(event, response_server, faults=lambda f, url: f.fail(1, status=500, url=url))

    assert [attempt.status for attempt in sent.attempts] == [500, 200]
    stored = sent.accepted[0]
    assert not stored.problems, stored.problems
    assert stored.size <= 4096
    assert stored.body is not None
    assert stored.body["Status"] == "FAILED"
    assert stored.body["StackId"] == STACK_ID
    assert stored.body["PhysicalResourceId"].startswith("appstream-user-stack-association-failed:")
    assert stored.headers.get("content-type", "") == ""  # a pre-signed S3 PUT is signed without one


def test_an_unusable_response_url_is_not_attempted(
    response_server: ResponseServer, appstream: AppStreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    import index  # noqa: PLC0415

    url = response_server.new_response_url("plain").replace("https://", "http://")
    event = {**cfn_event("Create", properties("demo", ["alice@example.com"])), "ResponseURL": url}
    before = len(response_server.attempts())

    index.handler(event, Context(300))

    assert len(response_server.attempts()) == before
    assert appstream.calls == ()
    assert url not in caplog.text
    assert urlsplit(url).query not in caplog.text
    assert any(record.levelno >= logging.ERROR for record in caplog.records)
