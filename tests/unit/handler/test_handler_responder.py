"""The response PUT: bounded, retried only where it can help, within CloudFormation's limits.

:func:`appstream_handler.responder.put_response` runs against the HTTPS ResponseServer on
loopback (its test CA given as ``ssl_verify``); backoff goes to a recording sleep and the time
left is a fake, so no test waits for a retry. The same responder behind crhelper and
``index.handler`` is in ``test_handler_wiring.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appstream_handler import rules
from appstream_handler.responder import MAX_ATTEMPTS, normalise_body, put_response
from constructs_lib.testing import ResponseServer
from constructs_lib.testing.response_server import cfn_response_problems
from tests.helpers.fuzzing import quick

BODY = {
    "Status": "SUCCESS",
    "PhysicalResourceId": "appstream-user-stack-association:0123",
    "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/Main/4f1a2b3c-0000-4000-8000-000000000001",
    "RequestId": "5d9b1c2e-0000-4000-8000-000000000001",
    "LogicalResourceId": "Analysts",
    "Reason": "",
    "Data": {},
    "NoEcho": False,
}


@pytest.fixture
def cfn(response_server: ResponseServer) -> Iterator[ResponseServer]:
    yield response_server
    response_server.faults.clear()


class Sleeps:
    """A recording sleep that also spends a fake time budget."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.left = seconds
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.left -= seconds

    def seconds_left(self) -> float:
        return self.left


def put(cfn: ResponseServer, url: str, sleeps: Sleeps, body: dict[str, Any] = BODY) -> bool:
    return put_response(url, body, cfn.ca_bundle_path, seconds_left=sleeps.seconds_left, sleep=sleeps)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_with_backoff_until_the_answer_is_stored(cfn: ResponseServer, status: int) -> None:
    url = cfn.new_response_url("retry")
    cfn.faults.fail(2, status=status, url=url)
    sleeps = Sleeps()

    assert put(cfn, url, sleeps)

    attempts = cfn.attempts(url)
    assert [attempt.status for attempt in attempts] == [status, status, 200]
    assert len({attempt.raw for attempt in attempts}) == 1  # the same answer every time
    assert sleeps.slept == [0.5, 1.0]
    assert attempts[-1].headers.get("content-type", "") == ""  # a pre-signed S3 PUT is signed without one


def test_reset_connections_are_retried(cfn: ResponseServer) -> None:
    url = cfn.new_response_url("reset")
    cfn.faults.reset_connection(3, url=url)
    sleeps = Sleeps()

    assert put(cfn, url, sleeps)

    assert [attempt.status for attempt in cfn.attempts(url)] == [None, None, None, 200]
    assert sleeps.slept == [0.5, 1.0, 2.0]


def test_a_store_that_keeps_failing_is_given_up_on_after_a_bounded_number_of_attempts(
    cfn: ResponseServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = cfn.new_response_url("down")
    cfn.faults.fail(50, status=503, url=url)
    sleeps = Sleeps(300.0)

    assert not put(cfn, url, sleeps)

    assert len(cfn.attempts(url)) == MAX_ATTEMPTS
    assert sleeps.slept == [0.5, 1.0, 2.0, 4.0]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "could not be delivered" in logged
    assert urlsplit(url).path not in logged
    assert "X-Amz-Signature" not in logged


@pytest.mark.parametrize(("seconds", "attempts"), [(1.2, 1), (2.6, 3), (5.0, 4)])
def test_no_retry_starts_that_the_time_left_cannot_hold(cfn: ResponseServer, seconds: float, attempts: int) -> None:
    url = cfn.new_response_url("short")
    cfn.faults.fail(50, status=500, url=url)
    sleeps = Sleeps(seconds)

    assert not put(cfn, url, sleeps)

    assert len(cfn.attempts(url)) == attempts
    assert sum(sleeps.slept) + 1.0 <= seconds  # every retry kept time for one more attempt


@pytest.mark.parametrize("tamper", ["signature", "path"])
def test_a_permanent_refusal_is_not_retried(cfn: ResponseServer, tamper: str) -> None:
    issued = cfn.new_response_url("refused")
    if tamper == "signature":  # S3 answers 403 SignatureDoesNotMatch
        url = issued.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    else:  # S3 answers 404 NoSuchKey
        url = issued.replace("/cfn-response/", "/cfn-response/gone-")
    sleeps = Sleeps()

    assert not put(cfn, url, sleeps)

    attempts = [attempt for attempt in cfn.attempts() if attempt.target == url[url.index("/cfn") :]]
    assert [attempt.status for attempt in attempts] == [403 if tamper == "signature" else 404]
    assert sleeps.slept == []


def test_a_store_that_hangs_gets_a_per_attempt_timeout(cfn: ResponseServer) -> None:
    """The first PUT is held for 2 s; with 1 s for that attempt the responder gives up on it and retries."""
    url = cfn.new_response_url("held")
    cfn.faults.delay(2.0, url=url)
    sleeps = Sleeps()
    answers = iter([1.0])  # the first attempt's timeout: 1 s; afterwards plenty of time

    def seconds_left() -> float:
        return next(answers, 30.0)

    assert put_response(url, BODY, cfn.ca_bundle_path, seconds_left=seconds_left, sleep=sleeps)
    assert sleeps.slept == [0.5]
    stored = [attempt for attempt in cfn.attempts(url) if attempt.accepted]
    assert stored
    assert stored[0].fault is None  # the retry; the held first attempt is answered later


# ------------------------------------------------------------------------------ the body's limits

ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300)
bodies = st.fixed_dictionaries(
    {
        "Status": st.sampled_from(["SUCCESS", "FAILED", "", "weird", None]),
        "PhysicalResourceId": st.one_of(st.none(), st.just(""), st.text(max_size=1500)),
        "StackId": ids.filter(bool),
        "RequestId": ids.filter(bool),
        "LogicalResourceId": ids.filter(bool),
        "Reason": st.one_of(st.none(), st.text(max_size=5000)),
        "Data": st.one_of(st.none(), st.text(max_size=5), st.dictionaries(st.text(max_size=10), st.text(max_size=900))),
        "NoEcho": st.one_of(st.booleans(), st.none(), st.just("true")),
    }
)


@quick
@given(body=bodies)
def test_any_body_is_normalised_to_one_cloudformation_accepts(body: dict[str, Any]) -> None:
    fixed = normalise_body(body, "fallback-id")

    raw = json.dumps(fixed).encode("utf-8", "surrogatepass")
    assert cfn_response_problems(raw) == ()
    assert len(raw) <= rules.RESPONSE_BODY_LIMIT
    for key in ("StackId", "RequestId", "LogicalResourceId"):
        assert fixed[key] == body[key]  # echoed unchanged, or CloudFormation cannot match the answer
    if body["Status"] in ("SUCCESS", "FAILED"):
        assert fixed["Status"] == body["Status"]
    else:
        assert fixed["Status"] == "FAILED"


@pytest.mark.parametrize("letter", ["x", "ü", "用"])
def test_a_long_reason_is_cut_to_fit_on_a_character_boundary(letter: str) -> None:
    fixed = normalise_body({**BODY, "Status": "FAILED", "Reason": letter * 5000, "Data": {"x": "y" * 5000}}, "id")
    raw = json.dumps(fixed).encode()
    assert len(raw) <= rules.RESPONSE_BODY_LIMIT
    assert fixed["Data"] == {}
    assert fixed["Reason"]
    if letter == "x":
        assert set(fixed["Reason"]) == {"x"}
        assert len(raw) > rules.RESPONSE_BODY_LIMIT - 16  # cut to the limit, not beyond


def test_the_physical_id_is_never_empty_and_at_most_1_kb() -> None:
    def cut(value: str) -> str:
        return str(normalise_body({**BODY, "PhysicalResourceId": value}, "fb")["PhysicalResourceId"])

    assert cut("") == "fb"
    assert len(cut("é" * 1000).encode()) <= rules.PHYSICAL_ID_LIMIT
    assert cut("é" * 1000) == "é" * (rules.PHYSICAL_ID_LIMIT // 2)


def test_a_failed_answer_without_a_reason_gets_one() -> None:
    assert normalise_body({**BODY, "Status": "FAILED", "Reason": "  "}, "id")["Reason"].startswith("Failed")
    assert normalise_body({**BODY, "Status": "PENDING"}, "id")["Reason"] == "Handler produced no valid status"


def test_nothing_is_logged_at_info_that_names_the_url(cfn: ResponseServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = cfn.new_response_url("quiet")
    assert put(cfn, url, Sleeps())
    assert "Response delivered: SUCCESS (attempt 1)" in caplog.text
    assert urlsplit(url).query not in caplog.text
