"""Property-based fuzzing of events (hypothesis): one acceptable answer, and no call unless CloudFormation asked.

Two levels:

* ``handle_event``: well-enveloped events (string ids, as ``index.handler`` lets through) of any
  request and resource type, of this stack or another, for resources in any status, in any
  phase, with valid or malformed properties and any physical id, sometimes delivered twice. Each
  gets an answer CloudFormation would accept (the body crhelper builds from it, normalised as the
  responder sends it, passes ``cfn_response_problems``); an event CloudFormation cannot be waiting
  for (foreign, stale, malformed, of an unknown type, or answered before) makes no AppStream call
  and leaves the state table as it was; a FAILED event leaves AppStream as it was.
* ``index.handler``: anything JSON can carry gets exactly one answer over HTTPS, or, without an
  https ResponseURL, is dropped: no PUT, no call.

Example counts come from ``tests.helpers.fuzzing`` (small by default); the ``slow`` variants run
hundreds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appstream_handler import rules
from appstream_handler.handler import DEPLOYMENT_ID_PREFIX, FAILED_CREATE_PREFIX, PHYSICAL_ID_PREFIX
from constructs_lib.testing import ResponseServer
from constructs_lib.testing.events import association_properties, stack_id, stringify
from constructs_lib.testing.response_server import cfn_response_problems
from tests.helpers.calls import response_problems, users
from tests.helpers.fuzzing import long, quick
from tests.helpers.lambda_env import Function, function_environment, patched_environment
from tests.helpers.world import StackDriver, World

STACKS = ("demo", "other")
POOL = users(4)
REQUESTS = ("Create", "Update", "Delete")
IN_PROGRESS = {"Create": "CREATE_IN_PROGRESS", "Update": "UPDATE_IN_PROGRESS", "Delete": "DELETE_IN_PROGRESS"}
PHASES = {
    "Create": {"CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS"},
    "Update": {"UPDATE_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS"},
    "Delete": {
        "ROLLBACK_IN_PROGRESS",
        "DELETE_IN_PROGRESS",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    },
}
"""When CloudFormation sends each request type (cloudformation-lifecycle.md), written out here."""
STATUSES = sorted(
    {status for phases in PHASES.values() for status in phases}
    | {"CREATE_COMPLETE", "UPDATE_COMPLETE", "ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_IN_PROGRESS"}
)
RESOURCE_STATUSES = sorted({*IN_PROGRESS.values(), "CREATE_COMPLETE", "UPDATE_COMPLETE", "CREATE_FAILED", "absent"})


@pytest.fixture
def world(shared_world: World) -> World:
    return shared_world


# ------------------------------------------------------------------------------------ strategies

user_names = st.one_of(
    st.sampled_from(POOL),
    st.sampled_from(["ghost@example.com", "ünïcödé@exämple.org", "o'brien@example.com", "x" * 128]),
    st.text(st.characters(categories=["L", "M", "N", "P", "S"]), min_size=1, max_size=20),
)
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), st.lists(st.integers(), max_size=2))


def acceptable(key: str, value: Any) -> bool:
    """Whether ``value`` is a valid ``key`` as the README documents it (junk must not be)."""
    if key == "MaxConcurrency":
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and value.isascii() and value.isdigit():
            number = int(value)
        return number is not None and rules.MAX_CONCURRENCY_MIN <= number <= rules.MAX_CONCURRENCY_MAX
    if key == "SendEmailNotification":
        return isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false"))
    if key == "StackName":
        return rules.is_valid_stack_name(value)
    if key == "AuthenticationType":
        return rules.is_authentication_type(value)
    return False


def test_junk_is_never_an_acceptable_value_of_the_drawn_keys() -> None:
    """The replayed failures: an integer 1 and an upper-case "TRUE" are valid, not junk."""
    assert acceptable("MaxConcurrency", 1)
    assert acceptable("MaxConcurrency", "16")
    assert not acceptable("MaxConcurrency", 17)
    assert not acceptable("MaxConcurrency", True)
    assert acceptable("SendEmailNotification", "TRUE")
    assert not acceptable("SendEmailNotification", 1)


@st.composite
def properties(draw: st.DrawFn) -> tuple[Any, bool]:
    """(ResourceProperties as CloudFormation sends them, well-formed?)."""
    names = draw(st.lists(user_names, min_size=1, max_size=4, unique=True))
    raw: dict[str, Any] = stringify(
        association_properties(
            draw(st.sampled_from(STACKS)),
            names,
            send_email_notification=draw(st.booleans()),
            max_concurrency=draw(st.integers(1, 16)),
        )
    )
    raw["ServiceToken"] = "arn:aws:lambda:us-east-1:123456789012:function:f"
    if draw(st.integers(0, 9)) < 3:
        key = draw(
            st.sampled_from(["StackName", "UserNames", "AuthenticationType", "MaxConcurrency", "SendEmailNotification"])
        )
        if draw(st.booleans()) and key in ("StackName", "UserNames", "AuthenticationType"):
            del raw[key]
        else:
            raw[key] = draw(junk.filter(lambda value: not acceptable(key, value)))
        return raw, False
    if draw(st.integers(0, 19)) == 0:
        return draw(junk), False
    return raw, all(rules.is_valid_user_name(name) for name in names)


physical_ids = st.one_of(
    st.none(),
    st.text(alphabet="0123456789abcdef", min_size=24, max_size=24).map(lambda d: PHYSICAL_ID_PREFIX + d),
    st.just(FAILED_CREATE_PREFIX + "0" * 24),
    st.just("Main_Analysts_ABCD1234"),
    st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=60),
    st.text(alphabet="abc-_:/", min_size=1000, max_size=1024),
)


@dataclass(frozen=True)
class Case:
    """One generated delivery and the CloudFormation state it meets."""

    request_type: str
    resource_type: str
    foreign: str  # "own", "other stack", "unknown stack", "not an arn"
    logical_id: str
    stack_status: str
    resource_status: str
    props: Any
    well_formed: bool
    old: Any
    physical_id: str | None
    created_before: bool
    twice: bool
    associated: frozenset[tuple[str, str]]

    @property
    def status(self) -> str:
        """The resource's status CloudFormation shows (a logical id it does not know has none)."""
        return "absent" if self.logical_id == "Ghost" else self.resource_status

    def plausible(self) -> bool:
        """Whether CloudFormation can be waiting for this event's answer (the protocol, not the code)."""
        if self.foreign != "own" or self.request_type not in REQUESTS:
            return False
        if self.resource_type not in (rules.RESOURCE_TYPE, rules.DEPLOYMENT_RESOURCE_TYPE):
            return False
        if self.resource_type == rules.RESOURCE_TYPE and self.request_type != "Delete" and not self.well_formed:
            return False
        if self.request_type == "Delete" and self.status == "DELETE_IN_PROGRESS":
            return True  # a Delete of a resource being deleted may always withdraw its own grants
        if self.request_type == "Delete" and self.stack_status in PHASES["Delete"] and "CLEANUP" in self.stack_status:
            return True  # the cleanup Delete of a replaced resource's other physical id
        return self.stack_status in PHASES[self.request_type] and self.status == IN_PROGRESS[self.request_type]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    request_type = draw(st.sampled_from([*REQUESTS, *REQUESTS, "Poll"]))
    props, well_formed = draw(properties())
    old = draw(properties())[0] if request_type == "Update" else None
    pairs = [(stack, user) for stack in STACKS for user in POOL]
    stack_status = draw(st.sampled_from(STATUSES))
    resource_status = draw(st.sampled_from(RESOURCE_STATUSES))
    if request_type in REQUESTS and draw(st.booleans()):  # half the time, what CloudFormation shows for it
        stack_status = draw(st.sampled_from(sorted(PHASES[request_type])))
        resource_status = IN_PROGRESS[request_type]
    return Case(
        request_type=request_type,
        resource_type=draw(
            st.sampled_from([rules.RESOURCE_TYPE] * 6 + [rules.DEPLOYMENT_RESOURCE_TYPE, "Custom::Other"])
        ),
        foreign=draw(st.sampled_from(["own"] * 3 + ["other stack", "unknown stack", "not an arn"])),
        logical_id=draw(st.sampled_from(["Analysts", "Analysts", "Ghost"])),
        stack_status=stack_status,
        resource_status=resource_status,
        props=props,
        well_formed=well_formed,
        old=old,
        physical_id=draw(physical_ids),
        created_before=draw(st.booleans()),
        twice=draw(st.booleans()),
        associated=frozenset(draw(st.lists(st.sampled_from(pairs), max_size=3))),
    )


# ------------------------------------------------------------------------------------- running


def stage(world: World, case: Case) -> tuple[StackDriver, dict[str, Any]]:
    """The account, the stack and the event of ``case``."""
    world.reset()
    world.seed(
        stacks=list(STACKS),
        users=POOL,
        associated={stack: [u for s, u in case.associated if s == stack] for stack in STACKS},
    )
    driver = world.stack()
    assert driver.begin().status == "SUCCESS"
    if case.created_before:
        assert driver.create("Analysts", "demo", POOL[:2]).status == "SUCCESS"
    event = driver.event(
        case.request_type if case.request_type in REQUESTS else "Create",
        case.logical_id,
        {},
        physical_id=case.physical_id if case.request_type != "Create" else None,
        resource_type=case.resource_type,
    )
    event["RequestType"] = case.request_type
    event["ResourceProperties"] = case.props
    if case.old is not None:
        event["OldResourceProperties"] = case.old
    if case.foreign == "other stack":  # a real event of another stack, delivered to this function
        other = world.stack("Other").phase(case.stack_status)
        if case.status != "absent":
            world.registry.set_resource(other.stack_id, case.logical_id, case.resource_type, case.status)
        event["StackId"] = other.stack_id
    elif case.foreign == "unknown stack":
        event["StackId"] = stack_id("Main")
    elif case.foreign == "not an arn":
        event["StackId"] = "Main"
    driver.phase(case.stack_status)
    if case.status == "absent":
        world.registry.remove_resource(driver.stack_id, case.logical_id)
    else:
        current = driver.physical_ids.get(case.logical_id, "current-id")
        world.registry.set_resource(
            driver.stack_id, case.logical_id, case.resource_type, case.status, physical_id=current
        )
    return driver, event


def table(world: World) -> list[str]:
    """The state table's items, comparable."""
    return sorted(json.dumps(item, sort_keys=True) for item in world.items())


def check_one_event(world: World, case: Case) -> None:
    driver, event = stage(world, case)
    before, items = world.associations(), table(world)
    world.appstream.reset_calls()

    answer = world.handle(event, own_stack_id=driver.stack_id)

    assert not response_problems(event, answer), (response_problems(event, answer), answer)
    if event["RequestType"] == "Create" and answer.status == "SUCCESS":
        deployment = event["ResourceType"] == rules.DEPLOYMENT_RESOURCE_TYPE
        assert answer.physical_resource_id.startswith(DEPLOYMENT_ID_PREFIX if deployment else PHYSICAL_ID_PREFIX)
    if not case.plausible():
        assert answer.status == "FAILED", answer
        assert world.appstream.calls == (), [call.operation for call in world.appstream.calls]
        assert table(world) == items, "a refused event writes nothing"
    if answer.status == "FAILED":
        assert world.associations() == before, answer.reason
    if case.twice:  # Lambda delivers the same event again: the same answer, no call
        world.appstream.reset_calls()
        again = world.handle(event, own_stack_id=driver.stack_id)
        if case.plausible():
            assert again == answer
        assert world.appstream.calls == ()


@quick
@given(case=cases())
def test_any_event_gets_an_acceptable_answer_and_no_call_unless_cloudformation_asked(world: World, case: Case) -> None:
    check_one_event(world, case)


@pytest.mark.slow
@long
@given(case=cases())
def test_many_events_get_an_acceptable_answer_and_no_call_unless_cloudformation_asked(world: World, case: Case) -> None:
    check_one_event(world, case)


REPLAYED_PROPS = {
    "StackName": "other",
    "UserNames": ["user000@example.com"],
    "AuthenticationType": "USERPOOL",
    "SendEmailNotification": "false",
    "MaxConcurrency": "1",
    "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
}


def replayed(**fields: Any) -> Case:
    """A case the long run found, with the fields every replay shares as defaults."""
    defaults: dict[str, Any] = {
        "foreign": "own",
        "logical_id": "Analysts",
        "old": None,
        "physical_id": None,
        "created_before": False,
        "twice": False,
        "associated": frozenset(),
    }
    return Case(**(defaults | fields))


def test_replayed_a_deployment_marker_s_create_gets_a_deployment_id(world: World) -> None:
    """Found by the long run: the marker resource answers with its own id, not an association's."""
    props = {key: value for key, value in REPLAYED_PROPS.items() if key != "StackName"}
    case = replayed(
        request_type="Create",
        resource_type=rules.DEPLOYMENT_RESOURCE_TYPE,
        stack_status="CREATE_IN_PROGRESS",
        resource_status="CREATE_IN_PROGRESS",
        props=props,
        well_formed=False,
    )
    check_one_event(world, case)


def test_replayed_an_update_that_fails_undoes_a_grant_its_old_properties_declared(world: World) -> None:
    """Found by the long run: an Update of a resource with no record (its old list declares a user
    AppStream does not hold) grants that user, fails on a missing one, and must take the grant back."""
    case = replayed(
        request_type="Update",
        resource_type=rules.RESOURCE_TYPE,
        stack_status="UPDATE_IN_PROGRESS",
        resource_status="UPDATE_IN_PROGRESS",
        props={**REPLAYED_PROPS, "UserNames": ["user000@example.com", "ghost@example.com"]},
        well_formed=True,
        old=REPLAYED_PROPS,
    )
    check_one_event(world, case)


# --------------------------------------------------------------------------- through index.handler

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
).filter(lambda value: not (isinstance(value, str) and value.lower().startswith("https://")))
OURS = object()
ECHOED = frozenset({"StackId", "RequestId", "LogicalResourceId"})


@st.composite
def envelopes(draw: st.DrawFn, own: str) -> Any:
    """Anything JSON can carry: usually shaped like a request, sometimes nothing like one."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    event: dict[str, Any] = {}
    fields: dict[str, st.SearchStrategy[Any]] = {
        "RequestType": st.sampled_from([*REQUESTS, "create", "", "Poll"]) | json_values,
        "ResponseURL": st.just(OURS) | st.just(OURS) | st.sampled_from(["http://127.0.0.1:9/x", "", "ftp://x"]),
        "StackId": st.just(own) | st.just(stack_id("Else")) | json_values,
        "RequestId": st.uuids().map(str) | json_values,
        "LogicalResourceId": st.sampled_from(["Analysts", "A1"]) | json_values,
        "PhysicalResourceId": physical_ids | json_values,
        "ResourceType": st.sampled_from([rules.RESOURCE_TYPE, rules.DEPLOYMENT_RESOURCE_TYPE]) | json_values,
        "ResourceProperties": properties().map(lambda p: p[0]) | json_values,
        "OldResourceProperties": properties().map(lambda p: p[0]) | json_values,
    }
    for key, values in fields.items():
        if draw(st.integers(0, 9)) < 8:
            event[key] = draw(values)
    event.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return event


@pytest.fixture(scope="module")
def function(shared_world: World, response_server: ResponseServer) -> Iterator[tuple[Function, StackDriver]]:
    shared_world.reset()
    shared_world.seed(stacks=list(STACKS), users=POOL)
    driver = shared_world.stack()
    driver.begin()
    with patched_environment(function_environment(shared_world, response_server, driver.stack_id)):
        yield Function(response_server), driver


def check_envelope(world: World, function: Function, event: Any) -> None:
    world.appstream.reset_calls()
    if isinstance(event, dict) and event.get("ResponseURL") is OURS:
        delivery = function.deliver(event, remaining=60.0)
        attempts = delivery.accepted
        assert len(attempts) == 1, [attempt.status for attempt in delivery.attempts]
        strings = {key for key in ECHOED if isinstance(event.get(key), str) and event[key]}
        # Nothing to echo where the event had no id: CloudFormation never sends such an event.
        problems = [p for p in cfn_response_problems(attempts[0].raw) if p.split()[0] not in ECHOED - strings]
        assert not problems, problems
        body = delivery.body
        for key in strings:
            assert body[key] == event[key]
        return
    import index  # noqa: PLC0415

    before = len(function.responses.attempts())
    index.handler(event, None)
    assert len(function.responses.attempts()) == before
    assert world.appstream.calls == ()


@quick
@given(data=st.data())
def test_anything_through_index_gets_one_answer_or_is_dropped_untouched(
    world: World, function: tuple[Function, StackDriver], data: st.DataObject
) -> None:
    runner, driver = function
    check_envelope(world, runner, data.draw(envelopes(driver.stack_id)))


@pytest.mark.slow
@long
@given(data=st.data())
def test_many_things_through_index_get_one_answer_or_are_dropped_untouched(
    world: World, function: tuple[Function, StackDriver], data: st.DataObject
) -> None:
    runner, driver = function
    check_envelope(world, runner, data.draw(envelopes(driver.stack_id)))
