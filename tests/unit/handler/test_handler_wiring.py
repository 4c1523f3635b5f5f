"""``index.handler`` as Lambda runs it: crhelper, the bounded responder, HTTPS, the function's environment.

A few events go through the real entry point with the environment the construct gives the
function (``OWN_STACK_ID``, ``STATE_TABLE``, ``AWS_ENDPOINT_URL_*``, region, fake credentials;
see :func:`tests.helpers.lambda_env.function_environment`), its clients built by
``appstream_handler.clients`` from that environment, and its answer PUT over HTTPS to the
ResponseServer, whose test CA it trusts through ``SSL_CERT_FILE``. Everything the handler decides
is tested on ``handle_event`` elsewhere; these pin the wiring: one answer per event, envelopes
crhelper cannot take, the responder's bounds, and what is (not) logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from appstream_handler import rules
from constructs_lib.testing import ResponseServer
from constructs_lib.testing.events import association_properties
from tests.helpers.calls import users
from tests.helpers.lambda_env import Delivery, Function, function_environment, patched_environment
from tests.helpers.world import StackDriver, World

STACK = "demo"


@pytest.fixture(scope="module")
def function(shared_world: World, response_server: ResponseServer) -> Iterator[Function]:
    """The function's environment for this module (its own stack is set per test)."""
    with patched_environment(function_environment(shared_world, response_server, own_stack_id="")):
        yield Function(response_server)


@pytest.fixture
def driver(world: World, function: Function, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackDriver]:
    """A stack whose deployment marker has begun; the function serves it."""
    world.seed(stacks=[STACK], users=users(3))
    stack = world.stack()
    monkeypatch.setenv("OWN_STACK_ID", stack.stack_id)
    stack.send_through(
        stack.event("Create", "Deployment", {"Generation": "1"}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE),
        function.answer,
    )
    world.appstream.reset_calls()
    yield stack
    function.responses.faults.clear()


def valid(delivery: Delivery) -> dict[str, Any]:
    """The one accepted body, which CloudFormation would accept."""
    body = delivery.body
    assert not delivery.accepted[0].problems, delivery.accepted[0].problems
    return body


# -------------------------------------------------------------------------- one answer per event


def test_a_create_and_a_delete_each_get_one_answer_and_do_their_work(
    world: World, function: Function, driver: StackDriver
) -> None:
    created = driver.send_through(
        driver.event("Create", "Analysts", association_properties(STACK, users(3))), function.answer
    )
    assert created.status == "SUCCESS", created.reason
    assert world.associations() == {(STACK, name) for name in users(3)}

    driver.phase("CREATE_COMPLETE").phase("DELETE_IN_PROGRESS")

    deleted = driver.send_through(driver.event("Delete", "Analysts"), function.answer)

    assert function.last is not None
    body = valid(function.last)
    assert (deleted.status, body["PhysicalResourceId"]) == ("SUCCESS", created.physical_resource_id)
    assert body["StackId"] == driver.stack_id
    assert world.associations() == set()


@pytest.mark.parametrize("key", ["CrHelperPoll", "CrHelperData"])
def test_crhelper_s_own_polling_keys_in_an_event_change_nothing(
    world: World, function: Function, driver: StackDriver, key: str
) -> None:
    event = {**driver.event("Create", "Analysts", association_properties(STACK, users(1))), key: "x"}
    answer = driver.send_through(event, function.answer)
    assert answer.status == "SUCCESS", answer.reason
    assert world.associations() == {(STACK, users(1)[0])}


def test_an_event_of_another_stack_is_refused_without_calls(
    world: World, function: Function, driver: StackDriver
) -> None:
    other = world.stack("Intruder")
    event = other.event("Create", "Grant", association_properties(STACK, users(1)))

    body = valid(function.deliver(event))

    assert body["Status"] == "FAILED"
    assert body["Reason"].startswith("Refused: this function serves stack Main, not Intruder")
    assert world.appstream.calls == ()


# ----------------------------------------------------------------------------- malformed envelopes


@pytest.mark.parametrize("url", [None, "http://127.0.0.1:9/x", "", 7])
def test_an_event_without_an_https_response_url_is_dropped_untouched(
    world: World, function: Function, driver: StackDriver, caplog: pytest.LogCaptureFixture, url: object
) -> None:
    import index  # noqa: PLC0415

    event = driver.event("Create", "Analysts", association_properties(STACK, users(1)))
    if url is None:
        del event["ResponseURL"]
    else:
        event["ResponseURL"] = url
    before = len(function.responses.attempts())

    index.handler(event, None)

    assert len(function.responses.attempts()) == before
    assert world.appstream.calls == ()
    assert "no https ResponseURL" in caplog.text


def test_an_event_that_is_not_a_map_is_dropped(function: Function, caplog: pytest.LogCaptureFixture) -> None:
    import index  # noqa: PLC0415

    index.handler(["not", "an", "event"], None)
    assert "not a CloudFormation request" in caplog.text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"RequestType": "Destroy"}, "Unknown RequestType 'Destroy'"),
        ({"RequestType": None}, "Unknown RequestType 'None'"),
        ({"StackId": None}, "Malformed event: StackId missing or not a string"),
        ({"RequestId": 7}, "Malformed event: RequestId missing or not a string"),
        ({"LogicalResourceId": ["x"]}, "Malformed event: LogicalResourceId missing or not a string"),
    ],
)
def test_a_malformed_envelope_gets_one_failed_answer_and_no_call(
    world: World, function: Function, driver: StackDriver, change: dict[str, Any], reason: str
) -> None:
    event = {**driver.event("Create", "Analysts", association_properties(STACK, users(1))), **change}

    delivery = function.deliver(event)

    body = delivery.body
    assert (body["Status"], body["Reason"]) == ("FAILED", reason)
    assert body["PhysicalResourceId"]
    echoed = {key for key in ("StackId", "RequestId", "LogicalResourceId") if isinstance(event[key], str)}
    problems = [p for p in delivery.accepted[0].problems if not any(p.startswith(key) for key in echoed)]
    assert all(p.split()[0] in {"StackId", "RequestId", "LogicalResourceId"} for p in problems), problems
    assert world.appstream.calls == ()


def test_the_body_stays_within_4096_bytes_even_for_oversized_echoed_ids(
    function: Function, driver: StackDriver
) -> None:
    event = {**driver.event("Create", "Analysts", association_properties(STACK, users(1))), "RequestId": "r" * 5000}

    delivery = function.deliver(event)

    assert delivery.accepted[0].size <= rules.RESPONSE_BODY_LIMIT


def test_a_function_without_a_region_answers_failed_once(
    world: World, function: Function, driver: StackDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    body = valid(function.deliver(driver.event("Create", "Analysts", association_properties(STACK, users(1)))))

    assert body["Status"] == "FAILED"
    assert body["Reason"].startswith("Handler error RuntimeError: AWS_REGION is not set")
    assert world.appstream.calls == ()


# ------------------------------------------------------------------------------ the answer's path


def test_a_server_error_of_the_store_is_retried_and_a_refusal_is_not(function: Function, driver: StackDriver) -> None:
    event = driver.event("Create", "Analysts", association_properties(STACK, users(1)))
    url = function.responses.new_response_url("flaky")
    function.responses.faults.fail(1, status=500, url=url)

    delivery = function.deliver(event, url=url)

    assert [attempt.status for attempt in delivery.attempts] == [500, 200]
    valid(delivery)
    refused = function.responses.new_response_url("refused").replace("X-Amz-Signature=", "X-Amz-Signature=0")
    function.deliver({**event, "RequestId": "another"}, url=refused)
    target = refused[refused.index("/cfn") :]
    assert [attempt.status for attempt in function.responses.attempts() if attempt.target == target] == [403]


def test_a_store_that_keeps_failing_is_given_up_on_within_the_time_left(
    function: Function, driver: StackDriver, caplog: pytest.LogCaptureFixture
) -> None:
    event = driver.event("Delete", "Unknown", association_properties(STACK, users(1)), physical_id="never-seen")
    driver.phase("ROLLBACK_IN_PROGRESS")
    url = function.responses.new_response_url("down")
    function.responses.faults.fail(50, status=503, url=url)

    delivery = function.deliver(event, remaining=2.0, url=url)

    assert 1 <= len(delivery.attempts) <= 2  # a second backoff would not leave time for an attempt
    assert not delivery.accepted
    assert "could not be delivered" in caplog.text


def test_crhelper_s_timer_and_a_late_handler_answer_only_once(
    world: World, function: Function, driver: StackDriver
) -> None:
    world.cloudformation.faults.latency(0.6, operation="DescribeStacks")  # the handler runs past the timer
    event = driver.event("Create", "Analysts", association_properties(STACK, users(1)))
    url = function.responses.new_response_url("late")

    function.deliver(event, remaining=0.8, url=url)

    first = function.responses.wait_for_response(url)
    assert (first["Status"], first["Reason"]) == ("FAILED", "Execution timed out")
    assert first["PhysicalResourceId"]
    assert len(function.responses.attempts(url)) == 1
    assert world.associations() == set()


def test_the_response_url_and_user_names_are_never_logged(
    function: Function, driver: StackDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    names = ["alice.secret@example.com"]
    driver.world.seed(users=names)

    answer = driver.send_through(
        driver.event("Create", "Analysts", association_properties(STACK, names)), function.answer
    )

    assert answer.status == "SUCCESS", answer.reason
    assert function.last is not None
    url = function.last.url
    text = "\n".join(f"{record.name} {record.getMessage()}" for record in caplog.records)
    assert urlsplit(url).path not in text
    assert "X-Amz-Signature" not in text
    assert "alice.secret" not in text
    assert "Create answered SUCCESS" in text
