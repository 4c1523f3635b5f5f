"""Property-based fuzzing of whole events through ``index.handler`` (issue 6).

Every generated event goes through the real entry point (crhelper and all), against the local
AppStream fake and the HTTPS ResponseURL server. Three properties:

* any event with a usable https ResponseURL gets exactly one valid response (body at most 4096
  bytes, non-empty PhysicalResourceId of at most 1 KB, a reason on FAILED, the request's ids
  echoed), before the function's time runs out; a FAILED event leaves AppStream as it was;
* an event that cannot be answered (no usable ResponseURL, not even a map) is dropped without a
  crash and without an AppStream call;
* for events built with a known classification, the outcome follows the documented semantics,
  computed here independently of the handler: malformed ones are FAILED with no AppStream call,
  well-formed ones end in the desired state (SUCCESS) or in the state before (FAILED).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import STACK_ID, TOKEN, Context
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from constructs_lib.testing import AppStreamServer, ResponseServer

CREATED_PREFIX = "appstream-user-stack-association:"
FAILED_PREFIX = "appstream-user-stack-association-failed:"
REMAINING = 60.0
FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
USE_SERVER_URL = object()  # replaced by a fresh ResponseURL of the test server when the event runs
STACKS = ("demo", "other", "Stack_9.x-y")
AUTH_TYPES = ("USERPOOL", "SAML", "API", "AWS_AD")

Assoc = tuple[str, str, str]


# ------------------------------------------------------------------------------------ running


@dataclass
class World:
    """What AppStream holds before an event."""

    stacks: frozenset[str] = frozenset()
    pool: frozenset[str] = frozenset()
    associations: frozenset[Assoc] = frozenset()

    def install(self, server: AppStreamServer) -> None:
        server.reset()
        for stack in self.stacks:
            server.state.add_stack(stack)
        for user in self.pool:
            server.state.add_user(user)
        for association in self.associations:
            server.state.associate(*association)
        server.reset_calls()

    def feasible(self, association: Assoc) -> bool:
        stack, user, auth = association
        return stack in self.stacks and (auth != "USERPOOL" or user in self.pool)


@dataclass
class Delivered:
    """What happened when one event was handed to the function."""

    url: str | None
    bodies: list[dict[str, Any]]
    raws: list[bytes]
    seconds: float
    calls: int
    arrived_in_time: bool = field(default=True)


def deliver(event: Any, server: AppStreamServer, responses: ResponseServer, remaining: float = REMAINING) -> Delivered:
    """Run ``index.handler`` on ``event`` as Lambda would; collect what CloudFormation received."""
    import index  # noqa: PLC0415 - the environment must be set up first

    url = None
    if isinstance(event, dict) and event.get("ResponseURL") is USE_SERVER_URL:
        url = responses.new_response_url("fuzz")
        event = {**event, "ResponseURL": url}
    started = time.monotonic()
    index.handler(event, Context(remaining))
    seconds = time.monotonic() - started
    if url is None:
        return Delivered(None, [], [], seconds, len(server.calls))
    attempts = responses.attempts(url)
    accepted = [attempt for attempt in attempts if attempt.accepted]
    in_time = all(attempt.received_at - started < remaining for attempt in accepted)
    return Delivered(
        url, [a.body or {} for a in accepted], [a.raw for a in accepted], seconds, len(server.calls), in_time
    )


def response_problems(event: Mapping[str, Any], raw: bytes) -> list[str]:
    """Why CloudFormation would reject ``raw`` as the answer to ``event``."""
    problems = []
    if len(raw) > 4096:
        problems.append(f"body is {len(raw)} bytes")
    body = json.loads(raw)
    if body.get("Status") not in ("SUCCESS", "FAILED"):
        problems.append(f"Status {body.get('Status')!r}")
    if body.get("Status") == "FAILED" and not str(body.get("Reason") or "").strip():
        problems.append("FAILED without a reason")
    physical_id = body.get("PhysicalResourceId")
    if not isinstance(physical_id, str) or not physical_id:
        problems.append(f"PhysicalResourceId {physical_id!r}")
    elif len(physical_id.encode()) > 1024:
        problems.append("PhysicalResourceId over 1 KB")
    for key in ("StackId", "RequestId", "LogicalResourceId"):
        if isinstance(event.get(key), str) and body.get(key) != event[key]:
            problems.append(f"{key} not echoed")
    if not isinstance(body.get("Data", {}), dict):
        problems.append(f"Data is a {type(body['Data']).__name__}")
    if not isinstance(body.get("NoEcho", False), bool):
        problems.append("NoEcho is not a boolean")
    return problems


def assert_one_valid_answer(event: Mapping[str, Any], delivered: Delivered) -> dict[str, Any]:
    assert len(delivered.bodies) == 1, f"expected exactly one response, got {len(delivered.bodies)}"
    problems = response_problems(event, delivered.raws[0])
    assert not problems, (problems, delivered.bodies[0])
    assert delivered.seconds < REMAINING
    assert delivered.arrived_in_time
    return delivered.bodies[0]


# ------------------------------------------------------------------------------- strategies

valid_user_names = st.one_of(
    st.sampled_from(
        [
            "alice@example.com",
            "Bob.Smith+appstream@example.co.uk",
            "o'brien@example.com",
            "ünïcödé@exämple.org",
            "用户@例子.公司",
            "a",
            "x" * 128,
            "!#$%&'*+/=?^_`{|}~-@example.com",
            '"quoted"@example.com',
            "emoji😀@example.com",
            "(paren)@[127.0.0.1]",
            "back\\slash@example.com",
            "<tag>&amp;@x.y",
        ]
    ),
    st.text(st.characters(categories=["L", "M", "N", "P", "S"]), min_size=1, max_size=128),
    st.text(st.characters(categories=["P", "S"]), min_size=1, max_size=20),
)
invalid_user_names = st.one_of(
    st.sampled_from(
        [
            "",
            "has space@example.com",
            "tab\tuser",
            "new\nline",
            "ideographic\u3000space",
            "nbsp\u00a0user",
            "x" * 129,
            "zero\u200bwidth",
            "ctrl\x01char",
        ]
    ),
    st.text(st.characters(categories=["Zs", "Cc"]), min_size=1, max_size=5),
)
non_strings = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30)
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)


def sometimes(draw: st.DrawFn, tenths: int) -> bool:
    """True about ``tenths`` times in ten (hypothesis biases integers towards their bounds)."""
    return draw(st.sampled_from([True] * tenths + [False] * (10 - tenths)))


@dataclass(frozen=True)
class Props:
    """ResourceProperties as sent, and what they declare when well-formed (None: malformed)."""

    raw: Any
    declared: frozenset[Assoc] | None


@st.composite
def resource_properties(draw: st.DrawFn, users: st.SearchStrategy[str] = valid_user_names) -> Props:
    """Well-formed properties (every scalar a string), or ones with known defects."""
    stack = draw(st.sampled_from(STACKS)) if sometimes(draw, 3) else "demo"
    auth = draw(st.sampled_from(AUTH_TYPES))
    size = draw(st.sampled_from([1, 2, 3, 5, 30, 260]))
    if size > 5:  # a huge list: many distinct, generated names
        tag = draw(st.sampled_from(["bulk", "Ω", "p+q"]))
        names = [f"{tag}{index}@example.com" for index in range(size)]
    else:
        names = draw(st.lists(users, min_size=1, max_size=size, unique=True))
    raw: dict[str, Any] = {
        "ServiceToken": TOKEN,
        "StackName": stack,
        "UserNames": list(names),
        "AuthenticationType": auth,
    }
    if draw(st.booleans()):
        raw["SendEmailNotification"] = draw(st.sampled_from(["true", "false", "True", "FALSE"]))
    if draw(st.booleans()):
        raw["MaxConcurrency"] = str(draw(st.integers(1, 16)))
    if draw(st.booleans()):
        raw[draw(st.sampled_from(["ServiceTimeout", "FutureKey", "Tags"]))] = draw(json_values)

    defects = (
        draw(st.lists(st.sampled_from(sorted(DEFECTS)), min_size=1, max_size=2, unique=True))
        if sometimes(draw, 3)
        else []
    )
    for defect in defects:
        DEFECTS[defect](draw, raw)
    if defects:
        return Props(raw, None)
    return Props(raw, frozenset((stack, name, auth) for name in names))


def _bad_user(draw: st.DrawFn, raw: dict[str, Any]) -> None:
    users = raw.get("UserNames")
    users = list(users) if isinstance(users, list) else []
    bad = draw(st.one_of(invalid_user_names, non_strings))
    users.insert(draw(st.integers(0, len(users))), bad)
    raw["UserNames"] = users


def _duplicate_user(draw: st.DrawFn, raw: dict[str, Any]) -> None:
    users = raw.get("UserNames")
    if isinstance(users, list) and users:
        raw["UserNames"] = [*users, draw(st.sampled_from(users))]
    else:
        raw["UserNames"] = ["dup@example.com", "dup@example.com"]


def _setter(key: str, values: st.SearchStrategy[Any]) -> Any:
    return lambda draw, raw: raw.__setitem__(key, draw(values))


def _dropper(key: str) -> Any:
    return lambda draw, raw: raw.pop(key, None)


# Each defect alone makes the properties malformed, whatever else they hold.
DEFECTS: dict[str, Any] = {
    "no StackName": _dropper("StackName"),
    "no UserNames": _dropper("UserNames"),
    "no AuthenticationType": _dropper("AuthenticationType"),
    "bad StackName": _setter(
        "StackName",
        st.one_of(st.sampled_from(["", "-lead", ".lead", "a/b", "a b", "ünï", "x" * 102, "tail\n"]), non_strings),
    ),
    "UserNames not a list of strings": _setter(
        "UserNames",
        st.one_of(
            st.just([]),
            st.sampled_from(["alice@example.com", "a,b", "['a']"]),
            st.none(),
            st.booleans(),
            st.integers(),
            st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
            st.lists(
                st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=2), max_size=1)), min_size=1, max_size=3
            ),
        ),
    ),
    "bad user name": _bad_user,
    "duplicate user name": _duplicate_user,
    "bad AuthenticationType": _setter(
        "AuthenticationType", st.one_of(st.sampled_from(["userpool", "", "OIDC", "USERPOOL "]), non_strings)
    ),
    "bad SendEmailNotification": _setter(
        "SendEmailNotification",
        st.one_of(
            st.sampled_from(["yes", "1", "", "no", "t"]), st.none(), st.integers(), st.lists(st.booleans(), max_size=1)
        ),
    ),
    "bad MaxConcurrency": _setter(
        "MaxConcurrency",
        st.one_of(
            st.sampled_from(["0", "17", "-1", "1.5", "x", "", " 4", "\u0663", "1e1"]),
            st.none(),
            st.floats(allow_nan=False),
            st.lists(st.integers(), max_size=1),
        ),
    ),
}


@st.composite
def maybe_malformed_map(draw: st.DrawFn) -> Props:
    if sometimes(draw, 1):
        return Props(
            draw(st.one_of(st.none(), st.text(max_size=20), st.integers(), st.lists(st.text(max_size=5), max_size=3))),
            None,
        )
    return draw(resource_properties())


created_ids = st.text(alphabet="0123456789abcdef", min_size=24, max_size=24).map(lambda d: CREATED_PREFIX + d)
physical_ids = st.one_of(
    created_ids,
    st.text(alphabet="0123456789abcdef", min_size=24, max_size=24).map(lambda d: FAILED_PREFIX + d),
    st.just("Main_Associations_ABCD1234"),  # crhelper's generated id after a failed Create
    st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=200),
    st.text(alphabet="abcdefghij-_:/", min_size=900, max_size=1024),
)


@dataclass(frozen=True)
class Case:
    """One generated event, the AppStream it meets, and how it was built."""

    event: dict[str, Any]
    world: World
    request_type: str
    props: Props
    old: Props | None
    envelope_ok: bool


@st.composite
def worlds(draw: st.DrawFn, names: list[str]) -> World:
    stacks = frozenset(draw(st.lists(st.sampled_from(STACKS), unique=True, max_size=3)))
    if sometimes(draw, 7):
        stacks |= {"demo"}
    everyone = draw(st.booleans())
    pool = frozenset(name for name in names if everyone or sometimes(draw, 8))
    candidates = [(stack, name, "USERPOOL") for stack in stacks for name in pool][:40]
    candidates += [(stack, name, "SAML") for stack in stacks for name in names[:3]]
    associated = (
        frozenset(draw(st.lists(st.sampled_from(candidates), unique=True, max_size=12))) if candidates else frozenset()
    )
    return World(stacks, pool, associated)


@st.composite
def classified_cases(draw: st.DrawFn) -> Case:
    """Well-formed envelopes (mostly) around properties whose validity is known by construction."""
    request_type = draw(st.sampled_from(["Create", "Update", "Delete"]))
    props = draw(maybe_malformed_map())
    old = None
    if request_type == "Update" and sometimes(draw, 9):
        old = draw(maybe_malformed_map())
        if sometimes(draw, 3) and props.declared is not None:  # often a small change of the same list
            users = list(props.raw["UserNames"])
            kept = draw(st.lists(st.sampled_from(users), unique=True, max_size=len(users)))
            raw = {**props.raw, "UserNames": [*kept, *draw(st.lists(valid_user_names, max_size=2))]}
            if raw["UserNames"] and len(set(raw["UserNames"])) == len(raw["UserNames"]):
                old = Props(
                    raw, frozenset((raw["StackName"], name, raw["AuthenticationType"]) for name in raw["UserNames"])
                )
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": TOKEN,
        "ResponseURL": USE_SERVER_URL,
        "StackId": STACK_ID,
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": draw(st.sampled_from(["Associations", "Other1"])),
        "ResourceType": "Custom::AppStreamUserStackAssociation",
        "ResourceProperties": props.raw,
    }
    if request_type != "Create":
        event["PhysicalResourceId"] = draw(created_ids if sometimes(draw, 6) else physical_ids)
    if old is not None:
        event["OldResourceProperties"] = old.raw
    envelope_ok = True
    if sometimes(draw, 1):  # a broken envelope
        envelope_ok = False
        key = draw(st.sampled_from(["RequestType", "StackId", "RequestId", "LogicalResourceId"]))
        if draw(st.booleans()):
            del event[key]
        else:
            event[key] = draw(
                non_strings
                if key != "RequestType"
                else st.one_of(non_strings, st.sampled_from(["create", "", "Poll", "DELETE", "Update "]))
            )
    names = sorted({a[1] for p in (props, old) if p is not None and p.declared for a in p.declared})
    names += ["alice@example.com", "o'brien@example.com"]
    world = draw(worlds(names))
    return Case(event, world, request_type, props, old, envelope_ok)


# ----------------------------------------------------------------------------------- oracle


@dataclass(frozen=True)
class Expected:
    status: str
    state: frozenset[Assoc]
    calls_allowed: bool


def expected_outcome(case: Case) -> Expected:
    """The documented semantics, written out independently of the handler's code."""
    now = case.world.associations
    if not case.envelope_ok:
        return Expected("FAILED", now, calls_allowed=False)
    declared = case.props.declared
    if case.request_type == "Delete":
        physical_id = case.event["PhysicalResourceId"]
        if not physical_id.startswith(CREATED_PREFIX):
            return Expected("SUCCESS", now, calls_allowed=False)
        if declared is None:
            return Expected("FAILED", now, calls_allowed=False)
        return Expected("SUCCESS", now - declared, calls_allowed=True)
    if declared is None:
        return Expected("FAILED", now, calls_allowed=False)
    previous: frozenset[Assoc] = frozenset()
    if case.request_type == "Update":
        assert case.old is not None or "OldResourceProperties" not in case.event
        previous = case.old.declared if case.old is not None and case.old.declared is not None else frozenset()
        if case.old is not None and case.old.declared == declared:
            return Expected("SUCCESS", now, calls_allowed=False)
    to_add = declared - now
    to_remove = (previous - declared) & now
    if all(case.world.feasible(association) for association in to_add):
        return Expected("SUCCESS", (now | declared) - to_remove, calls_allowed=True)
    return Expected("FAILED", now, calls_allowed=True)


# ------------------------------------------------------------------------------------- tests


@FUZZ_SETTINGS
@given(case=classified_cases())
def test_classified_events_follow_the_documented_semantics(
    case: Case, appstream: AppStreamServer, response_server: ResponseServer
) -> None:
    case.world.install(appstream)
    expected = expected_outcome(case)

    delivered = deliver(case.event, appstream, response_server)

    body = assert_one_valid_answer(case.event, delivered)
    note(
        f"{case.request_type} {'envelope ok' if case.envelope_ok else 'bad envelope'} -> {body['Status']}"
        f"{' with calls' if delivered.calls else ''}"
    )
    assert body["Status"] == expected.status, (body, expected)
    assert appstream.state.associations() == expected.state
    if not expected.calls_allowed:
        assert delivered.calls == 0, [c.operation for c in appstream.calls]
    if case.envelope_ok and case.request_type == "Create":
        prefix = CREATED_PREFIX if expected.status == "SUCCESS" else FAILED_PREFIX
        assert body["PhysicalResourceId"].startswith(prefix)
    elif case.envelope_ok:  # Update and Delete answer with the id they were given, never a new one
        assert body["PhysicalResourceId"] == case.event["PhysicalResourceId"]
    if expected.status == "FAILED" and not expected.calls_allowed and case.envelope_ok:
        assert "malformed" in body["Reason"]


@st.composite
def arbitrary_events(draw: st.DrawFn) -> Any:
    """Anything JSON can carry, usually shaped like a request, sometimes nothing like one."""
    if sometimes(draw, 1):
        return draw(st.one_of(st.none(), st.text(max_size=10), st.integers(), st.lists(json_values, max_size=3)))
    event: dict[str, Any] = {}
    for key, value in (
        ("RequestType", st.one_of(st.sampled_from(["Create", "Update", "Delete"]), json_values)),
        (
            "ResponseURL",
            st.one_of(
                st.just(USE_SERVER_URL),
                st.just(USE_SERVER_URL),
                st.sampled_from(["http://127.0.0.1:9/x", "", "ftp://x", "HTTPS://x"]),
                non_strings,
            ),
        ),
        ("StackId", st.one_of(st.just(STACK_ID), json_values)),
        ("RequestId", st.one_of(st.uuids().map(str), json_values)),
        ("LogicalResourceId", st.one_of(st.sampled_from(["Associations", "A1"]), json_values)),
        ("PhysicalResourceId", st.one_of(physical_ids, json_values)),
        ("ResourceProperties", st.one_of(resource_properties().map(lambda p: p.raw), json_values)),
        ("OldResourceProperties", st.one_of(resource_properties().map(lambda p: p.raw), json_values)),
        ("ResourceType", st.just("Custom::AppStreamUserStackAssociation")),
    ):
        if sometimes(draw, 8):
            event[key] = draw(value)
    event.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3)))
    return event


@FUZZ_SETTINGS
@given(event=arbitrary_events(), world=worlds(["alice@example.com", "o'brien@example.com", "bulk1@example.com"]))
def test_any_event_gets_one_valid_answer_or_is_dropped_untouched(
    event: Any, world: World, appstream: AppStreamServer, response_server: ResponseServer
) -> None:
    world.install(appstream)

    delivered = deliver(event, appstream, response_server)

    if delivered.url is None:  # no usable ResponseURL: nothing can be answered, nothing may be done
        assert delivered.calls == 0
        assert appstream.state.associations() == world.associations
        return
    body = assert_one_valid_answer(event, delivered)
    if body["Status"] == "FAILED":
        assert appstream.state.associations() == world.associations


CRHELPER_KEYS = {
    "CrHelperPoll": True,
    "CrHelperData": "x",
    "CrHelperRule": "arn:aws:events:us-east-1:1:rule/x",
    "CrHelperPermission": "sid",
}


@pytest.mark.parametrize("extra", [{k: v} for k, v in CRHELPER_KEYS.items()], ids=list(CRHELPER_KEYS))
def test_extra_event_keys_change_nothing(
    extra: dict[str, Any], appstream: AppStreamServer, response_server: ResponseServer
) -> None:
    """Unknown keys in the event are ignored, even the ones crhelper uses internally for polling."""
    world = World(frozenset({"demo"}), frozenset({"alice@example.com"}))
    world.install(appstream)
    event = {
        "RequestType": "Create",
        "ServiceToken": TOKEN,
        "ResponseURL": USE_SERVER_URL,
        "StackId": STACK_ID,
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "Associations",
        "ResourceType": "Custom::AppStreamUserStackAssociation",
        "ResourceProperties": {
            "ServiceToken": TOKEN,
            "StackName": "demo",
            "UserNames": ["alice@example.com"],
            "AuthenticationType": "USERPOOL",
        },
        **extra,
    }

    delivered = deliver(event, appstream, response_server)

    body = assert_one_valid_answer(event, delivered)
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"].startswith(CREATED_PREFIX)
    assert appstream.state.associations() == {("demo", "alice@example.com", "USERPOOL")}


@FUZZ_SETTINGS
@given(
    names=st.lists(valid_user_names, min_size=1, max_size=4, unique=True),
    auth=st.sampled_from(AUTH_TYPES),
    concurrency=st.integers(1, 16),
    email=st.sampled_from(["true", "false"]),
)
def test_stringified_scalars_and_unicode_names_round_trip(
    names: list[str],
    auth: str,
    concurrency: int,
    email: str,
    appstream: AppStreamServer,
    response_server: ResponseServer,
) -> None:
    """Create then Delete with CloudFormation's stringly-typed properties: associated, then gone."""
    World(frozenset({"demo"}), frozenset(names)).install(appstream)
    props = {
        "ServiceToken": TOKEN,
        "StackName": "demo",
        "UserNames": names,
        "AuthenticationType": auth,
        "SendEmailNotification": email,
        "MaxConcurrency": str(concurrency),
    }
    create = {
        "RequestType": "Create",
        "ServiceToken": TOKEN,
        "ResponseURL": USE_SERVER_URL,
        "StackId": STACK_ID,
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "Associations",
        "ResourceType": "Custom::AppStreamUserStackAssociation",
        "ResourceProperties": props,
    }

    created = assert_one_valid_answer(create, deliver(create, appstream, response_server))
    assert created["Status"] == "SUCCESS", created
    assert appstream.state.associations() == {("demo", name, auth) for name in names}

    delete = {
        **create,
        "RequestType": "Delete",
        "RequestId": str(uuid.uuid4()),
        "PhysicalResourceId": created["PhysicalResourceId"],
    }
    deleted = assert_one_valid_answer(delete, deliver(delete, appstream, response_server))
    assert deleted["Status"] == "SUCCESS", deleted
    assert deleted["PhysicalResourceId"] == created["PhysicalResourceId"]
    assert appstream.state.associations() == frozenset()
