"""A stateful Amazon AppStream 2.0 fake served over HTTP on loopback.

The fake speaks the wire protocol botocore uses for AppStream (``awsJson1_1``):
``POST /`` with ``X-Amz-Target: PhotonAdminProxyService.<Operation>`` and a JSON
body. Errors are HTTP 4xx/5xx with ``{"__type": "<Code>", "message": "..."}``,
which botocore turns into ``ClientError`` with that code. An unmodified boto3
client reaches it through ``AWS_ENDPOINT_URL_APPSTREAM`` (see :func:`client_env`),
so botocore validates every request against the real service model.

Operations implemented: ``BatchAssociateUserStack``, ``BatchDisassociateUserStack``
and ``DescribeUserStackAssociations``; anything else is answered with
``UnknownOperationException``.

Semantics chosen where AWS documents nothing (callers must be correct either way):

* Associating an associated user, or disassociating a user that is not associated,
  succeeds silently (idempotent).
* Users are only checked for ``AuthenticationType`` ``USERPOOL``; users of the other
  authentication types (API, SAML, AWS_AD) are treated as existing.
* ``DescribeUserStackAssociations`` for an unknown stack returns an empty list.
* ``MaxResults`` absent or ``0`` means a page of 500 (the model's maximum).
* An invalid ``NextToken`` is answered with ``InvalidParameterCombinationException``
  (one of the two exceptions the model lists for the operation).

Time. ``AppStreamState(clock=time.monotonic)`` takes the clock (seconds, any origin, never
going backwards) that everything time-based reads: rate-limit buckets, visibility delays and
``CallRecord.received_at``. Tests pass a fake clock and advance it instead of sleeping. Only
:meth:`Faults.latency` and :meth:`Faults.hang` wait in real time.

Sustained rate limits. :meth:`Faults.rate_limit` installs a token bucket (capacity ``burst``,
refilled at ``per_second`` on the state's clock), either one bucket for the whole account (the
default: AppStream's limits are per account) or one for a single operation. A request with no
token left is answered HTTP 400 ``ThrottlingException`` "Rate exceeded", touches nothing, and is
logged with ``fault="rate_limit"``; botocore's ``standard`` and ``adaptive`` retry modes treat it
as throttling. Countdown faults (:meth:`Faults.throttle` and the others) come first: a request
they answer takes no token.

Eventual consistency. AppStream may answer ``USER_NAME_NOT_FOUND`` / ``STACK_NOT_FOUND`` for a
user or stack created moments before. ``add_user(..., visible_after=s)`` and
``add_stack(..., visible_after=s)`` (default ``AppStreamState(consistency_delay=...)``, 0) make
a new user or stack invisible to the API for ``s`` seconds of the state's clock: batch items
naming it fail with the not-found code, and ``DescribeUserStackAssociations`` leaves out its
associations. Seeded users and stacks are visible at once. The reading methods
(:meth:`AppStreamState.users`, :meth:`~AppStreamState.snapshot`, ...) report the truth, visible
or not; :meth:`AppStreamState.user_visible` and :meth:`~AppStreamState.stack_visible` say what the
API sees now.

Crashes. Every request's ``User-Agent`` may carry botocore's application id, the token
``app/<id>`` (from ``Config(user_agent_appid=...)``, the environment variable
``AWS_SDK_UA_APP_ID`` or ``sdk_ua_app_id`` in the config file). It is recorded as
``CallRecord.app_id``. :meth:`Faults.crash` counts the calls of one app id and, on the N-th,
applies the call to the state, runs a callback (a rehearsal kills the calling process there)
and resets the connection without answering.

Run time needs only the standard library: this module never imports boto3.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final, Literal, cast

from constructs_lib._handler import rules
from constructs_lib.testing._loopback import LoopbackHTTPServer, ServerContext, serve_in_thread, stop_serving

__all__ = [
    "AUTHENTICATION_TYPES",
    "BATCH_ASSOCIATE",
    "BATCH_DISASSOCIATE",
    "DESCRIBE_ASSOCIATIONS",
    "MAX_BATCH_SIZE",
    "MAX_PAGE_SIZE",
    "OPERATIONS",
    "AppStreamServer",
    "AppStreamState",
    "Association",
    "CallRecord",
    "Faults",
    "RateLimit",
    "SeedError",
    "StateSnapshot",
    "User",
    "client_env",
]

BATCH_ASSOCIATE: Final = "BatchAssociateUserStack"
BATCH_DISASSOCIATE: Final = "BatchDisassociateUserStack"
DESCRIBE_ASSOCIATIONS: Final = "DescribeUserStackAssociations"
OPERATIONS: Final = frozenset({BATCH_ASSOCIATE, BATCH_DISASSOCIATE, DESCRIBE_ASSOCIATIONS})
"""The operations the fake implements; fault filters must name one of them."""

AUTHENTICATION_TYPES: Final = frozenset(rules.AUTHENTICATION_TYPES)
"""The ``AuthenticationType`` enum of the service model."""

MAX_BATCH_SIZE: Final = rules.BATCH_LIMIT
"""Most items a batch call accepts (the model's ``max``; botocore does not enforce it)."""

MAX_PAGE_SIZE: Final = rules.DESCRIBE_PAGE_SIZE
"""Largest ``MaxResults``; also the page size when ``MaxResults`` is absent or 0."""

_TARGET_PREFIX: Final = "PhotonAdminProxyService."
_JSON_CONTENT_TYPE: Final = "application/x-amz-json-1.1"
_SEED_KEYS: Final = frozenset({"stacks", "users", "associations"})
_ITEM_KEYS: Final = frozenset({"StackName", "UserName", "AuthenticationType", "SendEmailNotification"})
_THROTTLING_CODE: Final = "ThrottlingException"
_THROTTLING_MESSAGE: Final = "Rate exceeded"
_STACK_NOT_FOUND, _USER_NOT_FOUND, _, _INTERNAL_ERROR = rules.ITEM_ERROR_CODES
_APP_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~,]+")
"""What botocore lets through in an app id (it replaces every other character with ``-``)."""
_UA_APP_ID: Final = re.compile(r"(?:^|\s)app/(\S+)")

Clock = Callable[[], float]
"""A monotonic clock in seconds, like :func:`time.monotonic`."""

User = tuple[str, str]
"""``(user_name, authentication_type)``."""

Association = tuple[str, str, str]
"""``(stack_name, user_name, authentication_type)``."""


# --------------------------------------------------------------------------- state


class SeedError(ValueError):
    """A seed document is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[str], source: str = "seed") -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(f"invalid AppStream fake {source}:\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class StateSnapshot:
    """An immutable copy of an :class:`AppStreamState` at one instant."""

    stacks: frozenset[str]
    users: frozenset[User]
    associations: frozenset[Association]


def _name_problem(kind: str, value: object) -> str | None:
    """Describe why ``value`` is not a valid stack or user name, or return None."""
    if kind == "stack":
        if not rules.is_valid_stack_name(value):
            return f"expected a stack name of {rules.STACK_NAME_RULE}, got {value!r}"
        return None
    if not isinstance(value, str):
        return f"expected a user name, got {value!r}"
    problem = rules.user_name_problem(value)
    return None if problem is None else f"user name {value!r} {problem}"


def _auth_problem(value: object) -> str | None:
    """Describe why ``value`` is not an ``AuthenticationType``, or return None."""
    if value not in AUTHENTICATION_TYPES:
        return f"expected one of {', '.join(sorted(AUTHENTICATION_TYPES))}, got {value!r}"
    return None


def _check(problem: str | None) -> None:
    """Raise ``ValueError`` for a problem found by a ``*_problem`` helper."""
    if problem is not None:
        raise ValueError(problem)


class AppStreamState:
    """Thread-safe in-memory stacks, user-pool users and user-stack associations.

    Seeding methods validate names like the service does and raise ``ValueError``
    on bad input; requests sent to the server may name anything (unknown names
    become error items, as on AWS).

    ``clock`` is read for everything time-based (see the module docstring); pass a fake
    one to control time in tests. It is called from the server's request threads, several
    times per request, so it must be cheap and thread-safe (reading a float is).
    ``consistency_delay`` is how long, in seconds of that clock, a user or stack created
    with :meth:`add_user` / :meth:`add_stack` stays invisible to the API unless the call
    says otherwise (default 0: visible at once).
    """

    def __init__(self, *, clock: Clock = time.monotonic, consistency_delay: float = 0.0) -> None:
        """Create an empty state: no stacks, no users, no associations."""
        _check(_delay_problem("consistency_delay", consistency_delay))
        self._lock = threading.Lock()
        self._clock = clock
        self._consistency_delay = float(consistency_delay)
        self._stacks: set[str] = set()
        self._users: set[User] = set()
        self._associations: set[Association] = set()
        self._stacks_visible_at: dict[str, float] = {}
        self._users_visible_at: dict[User, float] = {}

    @property
    def clock(self) -> Clock:
        """The clock the state and its server read (``time.monotonic`` by default)."""
        return self._clock

    @property
    def consistency_delay(self) -> float:
        """Seconds a new user or stack stays invisible when ``visible_after`` is not given."""
        return self._consistency_delay

    # seeding -----------------------------------------------------------------

    def add_stack(self, name: str, *, visible_after: float | None = None) -> None:
        """Create stack ``name`` (idempotent: an existing stack keeps its visibility).

        ``visible_after``: seconds of the state's clock, from now, before the API sees the
        stack (``None``: the state's ``consistency_delay``). Until then batch items naming
        it fail with ``STACK_NOT_FOUND`` and ``DescribeUserStackAssociations`` lists none of
        its associations, as AWS may right after ``CreateStack``.
        """
        _check(_name_problem("stack", name))
        delay = self._delay(visible_after)
        with self._lock:
            if name not in self._stacks:
                self._stacks.add(name)
                if delay:
                    self._stacks_visible_at[name] = self._clock() + delay

    def remove_stack(self, name: str) -> None:
        """Delete stack ``name`` and its associations (idempotent)."""
        with self._lock:
            self._stacks.discard(name)
            self._stacks_visible_at.pop(name, None)
            self._associations = {a for a in self._associations if a[0] != name}

    def add_user(
        self, user_name: str, authentication_type: str = "USERPOOL", *, visible_after: float | None = None
    ) -> None:
        """Create user ``user_name`` for ``authentication_type`` (default ``USERPOOL``).

        Idempotent: an existing user keeps its visibility. ``visible_after``: seconds of the
        state's clock, from now, before the API sees the user (``None``: the state's
        ``consistency_delay``). Until then batch items naming it fail with
        ``USER_NAME_NOT_FOUND`` and ``DescribeUserStackAssociations`` lists none of its
        associations, as AWS may right after ``CreateUser``. Like existence, visibility
        matters only for ``USERPOOL`` users: the API never looks the others up.
        """
        _check(_name_problem("user", user_name))
        _check(_auth_problem(authentication_type))
        delay = self._delay(visible_after)
        user = (user_name, authentication_type)
        with self._lock:
            if user not in self._users:
                self._users.add(user)
                if delay:
                    self._users_visible_at[user] = self._clock() + delay

    def remove_user(self, user_name: str, authentication_type: str = "USERPOOL") -> None:
        """Delete a user and its associations (idempotent)."""
        with self._lock:
            self._users.discard((user_name, authentication_type))
            self._users_visible_at.pop((user_name, authentication_type), None)
            self._associations = {a for a in self._associations if a[1:] != (user_name, authentication_type)}

    def associate(self, stack_name: str, user_name: str, authentication_type: str = "USERPOOL") -> None:
        """Associate a user with a stack, bypassing the API (idempotent).

        Raises ``ValueError`` if the stack, or a ``USERPOOL`` user, does not exist
        (visible to the API yet or not).
        """
        _check(_auth_problem(authentication_type))
        with self._lock:
            _check(self._missing_locked(stack_name, user_name, authentication_type))
            self._associations.add((stack_name, user_name, authentication_type))

    def disassociate(self, stack_name: str, user_name: str, authentication_type: str = "USERPOOL") -> None:
        """Remove an association, bypassing the API (idempotent)."""
        with self._lock:
            self._associations.discard((stack_name, user_name, authentication_type))

    # visibility ----------------------------------------------------------------

    def stack_visible(self, name: str) -> bool:
        """True when the API finds stack ``name`` now: it exists and its ``visible_after`` has passed."""
        now = self._clock()
        with self._lock:
            return name in self._stacks and self._stack_visible_locked(name, now)

    def user_visible(self, user_name: str, authentication_type: str = "USERPOOL") -> bool:
        """True when batch calls find the user now.

        For ``USERPOOL``: the user exists and its ``visible_after`` has passed. Users of
        the other authentication types are never looked up, so always True.
        """
        if authentication_type != "USERPOOL":
            return True
        now = self._clock()
        user = (user_name, authentication_type)
        with self._lock:
            return user in self._users and self._user_visible_locked(user, now)

    # reading -----------------------------------------------------------------

    def stacks(self) -> frozenset[str]:
        """Return the names of all stacks (visible to the API yet or not)."""
        with self._lock:
            return frozenset(self._stacks)

    def users(self) -> frozenset[User]:
        """Return all users as ``(user_name, authentication_type)`` (visible to the API yet or not)."""
        with self._lock:
            return frozenset(self._users)

    def associations(self) -> frozenset[Association]:
        """Return all associations as ``(stack_name, user_name, authentication_type)``."""
        with self._lock:
            return frozenset(self._associations)

    def snapshot(self) -> StateSnapshot:
        """Return a consistent copy of stacks, users and associations (visible yet or not)."""
        with self._lock:
            return StateSnapshot(frozenset(self._stacks), frozenset(self._users), frozenset(self._associations))

    def to_seed(self) -> dict[str, Any]:
        """Return the state in the seed format read by :meth:`from_seed` (sorted)."""
        snap = self.snapshot()
        return {
            "stacks": sorted(snap.stacks),
            "users": [{"UserName": u, "AuthenticationType": t} for u, t in sorted(snap.users)],
            "associations": [
                {"StackName": s, "UserName": u, "AuthenticationType": t} for s, u, t in sorted(snap.associations)
            ],
        }

    # seed files ----------------------------------------------------------------

    @classmethod
    def from_seed(
        cls,
        seed: Mapping[str, Any],
        *,
        source: str = "seed",
        clock: Clock = time.monotonic,
        consistency_delay: float = 0.0,
    ) -> AppStreamState:
        """Build a state from a seed document; raise :class:`SeedError` listing every problem.

        Format (every key optional; ``AuthenticationType`` defaults to ``USERPOOL``)::

            {
              "stacks": ["demo-stack"],
              "users": [{"UserName": "alice@example.com", "AuthenticationType": "USERPOOL"}],
              "associations": [{"StackName": "demo-stack", "UserName": "alice@example.com",
                                "AuthenticationType": "USERPOOL"}]
            }

        Associations must name a listed stack and, for ``USERPOOL``, a listed user.
        Seeded stacks and users are visible to the API at once; ``clock`` and
        ``consistency_delay`` are passed to the constructor (they apply to later additions).
        """
        problems, stacks, users, associations = _parse_seed(seed)
        problems += _dangling_associations(stacks, users, associations)
        if problems:
            raise SeedError(problems, source)
        state = cls(clock=clock, consistency_delay=consistency_delay)
        state._stacks, state._users = set(stacks), set(users)
        state._associations = set(associations)
        return state

    @classmethod
    def load_seed(
        cls, path: str | os.PathLike[str], *, clock: Clock = time.monotonic, consistency_delay: float = 0.0
    ) -> AppStreamState:
        """Read a JSON seed file (format: :meth:`from_seed`); raise :class:`SeedError` if invalid."""
        source = f"seed file {os.fspath(path)}"
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SeedError([f"not valid JSON: {error}"], source) from error
        if not isinstance(document, Mapping):
            raise SeedError([f"expected a JSON object, got {type(document).__name__}"], source)
        return cls.from_seed(document, source=source, clock=clock, consistency_delay=consistency_delay)

    # used by the server ------------------------------------------------------

    def _delay(self, visible_after: float | None) -> float:
        """Validate ``visible_after`` and return the delay it means (the default for None)."""
        if visible_after is None:
            return self._consistency_delay
        _check(_delay_problem("visible_after", visible_after))
        return float(visible_after)

    def _stack_visible_locked(self, name: str, now: float) -> bool:
        """Whether the API sees stack ``name`` at ``now`` (caller holds the lock; existence not checked)."""
        visible_at = self._stacks_visible_at.get(name)
        if visible_at is not None and visible_at <= now:
            del self._stacks_visible_at[name]  # visible for good
            return True
        return visible_at is None

    def _user_visible_locked(self, user: User, now: float) -> bool:
        """Whether the API sees ``user`` at ``now`` (caller holds the lock; existence not checked)."""
        if user[1] != "USERPOOL":
            return True
        visible_at = self._users_visible_at.get(user)
        if visible_at is not None and visible_at <= now:
            del self._users_visible_at[user]
            return True
        return visible_at is None

    def _missing_locked(self, stack_name: str, user_name: str, auth: str) -> str | None:
        """Return why an association cannot be made (caller holds the lock), or None."""
        if stack_name not in self._stacks:
            return f"stack {stack_name!r} does not exist"
        if auth == "USERPOOL" and (user_name, auth) not in self._users:
            return f"user {user_name!r} does not exist in the user pool"
        return None

    def _apply_batch(self, operation: str, items: list[dict[str, Any]], faults: Faults) -> list[dict[str, Any]]:
        """Apply a validated batch atomically and return its ``errors`` items."""
        errors: list[dict[str, Any]] = []
        now = self._clock()
        with self._lock:
            for item in items:
                key = (item["StackName"], item["UserName"], item["AuthenticationType"])
                code, message = self._item_error_locked(operation, key, faults, now)
                if code is not None:
                    errors.append({"UserStackAssociation": item, "ErrorCode": code, "ErrorMessage": message})
                elif operation == BATCH_ASSOCIATE:
                    self._associations.add(key)
                else:
                    self._associations.discard(key)
        return errors

    def _item_error_locked(
        self, operation: str, key: Association, faults: Faults, now: float
    ) -> tuple[str | None, str]:
        """Return ``(ErrorCode, ErrorMessage)`` for one batch item, or ``(None, "")``."""
        stack_name, user_name, auth = key
        if stack_name not in self._stacks or not self._stack_visible_locked(stack_name, now):
            return _STACK_NOT_FOUND, f"The stack {stack_name} was not found."
        user = (user_name, auth)
        if auth == "USERPOOL" and (user not in self._users or not self._user_visible_locked(user, now)):
            return _USER_NOT_FOUND, f"The user {user_name} was not found."
        if faults._take_internal_error(operation, user_name):
            return _INTERNAL_ERROR, "An internal error occurred. Try again."
        return None, ""

    def _query(self, stack_name: str | None, user: User | None) -> list[Association]:
        """Return the matching associations the API sees now, sorted by (stack, user, auth)."""
        now = self._clock()
        with self._lock:
            found = [
                a
                for a in self._associations
                if (stack_name is None or a[0] == stack_name)
                and (user is None or a[1:] == user)
                and self._stack_visible_locked(a[0], now)
                and self._user_visible_locked((a[1], a[2]), now)
            ]
        return sorted(found)


def _delay_problem(name: str, value: object) -> str | None:
    """Describe why ``value`` is not a delay in seconds (finite, not negative), or return None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return f"{name} must be a finite number of seconds, at least 0, got {value!r}"
    return None


def _parse_seed(
    seed: Mapping[str, Any],
) -> tuple[list[str], set[str], set[User], set[Association]]:
    """Parse the three seed lists, collecting every problem instead of stopping."""
    problems = [
        f"unknown key {key!r} (expected stacks, users, associations)" for key in sorted(set(seed) - _SEED_KEYS, key=str)
    ]
    stacks: set[str] = set()
    for where, value in _seed_list(seed, "stacks", problems):
        problem = _name_problem("stack", value)
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            stacks.add(cast(str, value))
    users: set[User] = set()
    for where, value in _seed_list(seed, "users", problems):
        parsed = _seed_record(where, value, ("UserName",), problems)
        if parsed is not None:
            users.add((parsed[0], parsed[1]))
    associations: set[Association] = set()
    for where, value in _seed_list(seed, "associations", problems):
        parsed = _seed_record(where, value, ("StackName", "UserName"), problems)
        if parsed is not None:
            associations.add((parsed[0], parsed[1], parsed[2]))
    return problems, stacks, users, associations


def _seed_list(seed: Mapping[str, Any], key: str, problems: list[str]) -> list[tuple[str, object]]:
    """Return ``(location, element)`` pairs of ``seed[key]``; note a non-list value."""
    value = seed.get(key, [])
    if not isinstance(value, list):
        problems.append(f"{key}: expected a list, got {type(value).__name__}")
        return []
    return [(f"{key}[{index}]", element) for index, element in enumerate(value)]


def _seed_record(where: str, value: object, name_keys: tuple[str, ...], problems: list[str]) -> tuple[str, ...] | None:
    """Validate one user or association object; return its names plus the auth type."""
    if not isinstance(value, Mapping):
        problems.append(f"{where}: expected an object, got {type(value).__name__}")
        return None
    allowed = set(name_keys) | {"AuthenticationType"}
    found = [f"{where}: unknown key {key!r}" for key in sorted(set(value) - allowed, key=str)]
    for key in name_keys:
        problem = _name_problem("stack" if key == "StackName" else "user", value.get(key))
        if problem:
            found.append(f"{where}.{key}: {problem}")
    auth = value.get("AuthenticationType", "USERPOOL")
    auth_problem = _auth_problem(auth)
    if auth_problem:
        found.append(f"{where}.AuthenticationType: {auth_problem}")
    problems.extend(found)
    return None if found else (*(cast(str, value[k]) for k in name_keys), cast(str, auth))


def _dangling_associations(stacks: set[str], users: set[User], associations: set[Association]) -> list[str]:
    """Describe associations whose stack or user-pool user the seed does not define."""
    problems = []
    for stack_name, user_name, auth in sorted(associations):
        if stack_name not in stacks:
            problems.append(
                f"association ({stack_name}, {user_name}, {auth}): stack {stack_name!r} is not listed in stacks"
            )
        if auth == "USERPOOL" and (user_name, auth) not in users:
            problems.append(
                f"association ({stack_name}, {user_name}, {auth}): user {user_name!r} is not listed in users"
            )
    return problems


# --------------------------------------------------------------------------- faults

_FaultKind = Literal["throttle", "error", "server_error", "reset", "hang"]


@dataclass
class _Rule:
    """One pending request-level fault."""

    kind: _FaultKind
    remaining: int
    operation: str | None
    code: str = ""
    message: str = ""
    status: int = 400
    seconds: float = 0.0


def _check_operation(operation: str | None) -> None:
    """Reject an operation filter the fake does not implement (catches typos)."""
    if operation is not None and operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; expected one of {', '.join(sorted(OPERATIONS))}")


def _check_count(count: int, name: str = "count") -> None:
    """Reject a non-positive fault count."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{name} must be at least 1, got {count!r}")


@dataclass(frozen=True)
class RateLimit:
    """A sustained request rate installed by :meth:`Faults.rate_limit`.

    ``operation`` is the operation the bucket serves alone, or ``None`` for the bucket
    shared by every operation without one of its own (the account's).
    """

    per_second: float
    burst: int
    operation: str | None


@dataclass
class _Bucket:
    """A token bucket; ``last`` is None until the first request (it starts full)."""

    limit: RateLimit
    tokens: float
    last: float | None = None

    def take(self, now: float) -> bool:
        """Refill for the time since the last request, then take one token if there is one."""
        if self.last is not None:
            elapsed = max(0.0, now - self.last)
            self.tokens = min(float(self.limit.burst), self.tokens + elapsed * self.limit.per_second)
        self.last = now if self.last is None else max(self.last, now)
        if self.tokens >= 1.0 - 1e-9:  # float dust from refill must not cost a whole token
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False


@dataclass
class _Crash:
    """A pending crash: fires on the ``after``-th counted call."""

    after: int
    app_id: str
    action: Callable[[], object]
    operation: str | None
    seen: int = 0
    answer: bool = False
    """Answer the request normally after the action (:meth:`Faults.on_call`) instead of resetting."""


class Faults:
    """Thread-safe fault injection for :class:`AppStreamServer`; may change while it runs.

    Request-level faults (throttle, fail_with, server_error, reset_connection, hang)
    queue up in the order they are added: each request takes the first pending one
    whose ``operation`` filter matches (``None`` matches every request) and uses up one
    of its ``count``. Latency applies to every matching request on top of that.
    Item faults (:meth:`internal_error`) act inside batch calls that otherwise succeed.

    Each request meets, in this order: its latency; the first matching countdown fault
    (which answers it alone); the rate limit (:meth:`rate_limit`); the state. A crash
    (:meth:`crash`) counts requests as they reach the countdown faults and, on the one it
    fires for, replaces the reply (whatever it was) with a reset after running its action.
    """

    def __init__(self) -> None:
        """Start with no faults."""
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._latency: dict[str | None, float] = {}
        self._internal: dict[tuple[str, str | None], int | None] = {}
        self._buckets: dict[str | None, _Bucket] = {}
        self._crashes: list[_Crash] = []
        self._crash_errors: list[Exception] = []

    def throttle(self, count: int = 1, *, operation: str | None = None) -> None:
        """Answer the next ``count`` calls with HTTP 400 ``ThrottlingException``.

        botocore's retry modes classify this code as throttling and retry it. For a
        sustained rate rather than a fixed number of errors, use :meth:`rate_limit`.
        """
        self._add(_Rule("throttle", count, operation, _THROTTLING_CODE, _THROTTLING_MESSAGE))

    def rate_limit(self, per_second: float, *, burst: int = 1, operation: str | None = None) -> None:
        """Throttle requests beyond a sustained rate: a token bucket on the state's clock.

        The bucket holds at most ``burst`` tokens (it starts full) and gains ``per_second``
        tokens per second of the clock of the server's :class:`AppStreamState`. Every request
        takes a token; one that finds none is answered HTTP 400 ``ThrottlingException``
        ("Rate exceeded", which botocore's ``standard`` and ``adaptive`` retry modes treat as
        throttling), changes nothing, and is logged with ``fault="rate_limit"``.

        ``operation=None`` installs the account's bucket, shared by every operation that has
        no bucket of its own (AppStream's limits are per account). Naming an operation gives
        it its own bucket, which alone then decides for that operation (the account bucket
        is neither consulted nor drawn from). Calling again for the same scope replaces that
        bucket (full again); :meth:`remove_rate_limit` or :meth:`clear` removes it.
        Requests answered by a countdown fault (:meth:`throttle`, ...) take no token.

        Raises ``ValueError`` unless ``per_second`` is a finite number above 0 and ``burst``
        an integer of at least 1. For the rate the construct's default timeout is sized for,
        use ``rules.ASSUMED_CALLS_PER_SECOND`` (``constructs_lib._handler.rules``).
        """
        _check_operation(operation)
        if isinstance(per_second, bool) or not isinstance(per_second, int | float) or not math.isfinite(per_second):
            raise ValueError(f"per_second must be a finite number, got {per_second!r}")
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second!r}")
        _check_count(burst, "burst")
        limit = RateLimit(float(per_second), burst, operation)
        with self._lock:
            self._buckets[operation] = _Bucket(limit, float(burst))

    def remove_rate_limit(self, *, operation: str | None = None) -> None:
        """Remove the account's bucket (``operation=None``) or ``operation``'s own (idempotent)."""
        _check_operation(operation)
        with self._lock:
            self._buckets.pop(operation, None)

    def rate_limits(self) -> dict[str | None, RateLimit]:
        """Return the installed rate limits, keyed by operation (``None``: the account's)."""
        with self._lock:
            return {scope: bucket.limit for scope, bucket in self._buckets.items()}

    def crash(
        self,
        after: int,
        *,
        app_id: str,
        action: Callable[[], object],
        operation: str | None = None,
    ) -> None:
        """Crash the caller on its ``after``-th call: apply the call, run ``action``, reset.

        Counts only requests whose ``User-Agent`` carries ``app/<app_id>`` (botocore's
        application id: ``Config(user_agent_appid=...)`` or the environment variable
        ``AWS_SDK_UA_APP_ID`` in the calling process) and, if given, are calls of
        ``operation``. Every request counts, retries included, whatever it is answered.
        The ``after``-th is served as usual (a batch really lands in the state, a
        countdown fault or rate limit still applies to it), logged with ``fault="crash"``
        (its ``outcome`` says what serving it did; ``status`` is None, as nothing is
        sent), then ``action()`` runs in the server's request thread (a rehearsal kills
        the calling process there), then the connection is reset without a response.
        One-shot: later calls are served normally. Several crashes may be pending (for
        different app ids, say); each counts on its own. Counting is atomic, so with many
        concurrent callers exactly one request fires each crash. A request fires at most one
        crash; another one due on the same request fires on its next counted request.

        An exception raised by ``action`` does not stop the reset; it is kept for
        :meth:`crash_errors`. Raises ``ValueError`` for ``after`` below 1 or an
        ``app_id`` botocore would not send unchanged (it allows ASCII letters, digits and
        ``!#$%&'*+-.^_`|~,``, and turns anything else into ``-``).
        """
        _check_operation(operation)
        _check_count(after, "after")
        if not isinstance(app_id, str) or not _APP_ID_PATTERN.fullmatch(app_id):
            raise ValueError(
                f"app_id must be non-empty ASCII letters, digits or !#$%&'*+-.^_`|~, "
                f"(what botocore sends unchanged), got {app_id!r}"
            )
        if not callable(action):
            raise ValueError(f"action must be callable, got {action!r}")
        with self._lock:
            self._crashes.append(_Crash(after, app_id, action, operation))

    def on_call(
        self,
        after: int,
        *,
        app_id: str,
        action: Callable[[], object],
        operation: str | None = None,
    ) -> None:
        """Run ``action`` on the caller's ``after``-th call, then answer that call as usual.

        Counts like :meth:`crash` (the ``User-Agent``'s ``app/<app_id>``, the ``operation``
        filter, retries included): the ``after``-th call is applied to the state, ``action()``
        runs in the server's request thread (a rehearsal uses it to make another resource fail
        at a known point of a Create, so the Create is cancelled in flight), then the reply is
        sent normally. One-shot. Errors raised by ``action`` are kept for :meth:`crash_errors`.
        """
        self.crash(after, app_id=app_id, action=action, operation=operation)
        with self._lock:
            self._crashes[-1].answer = True

    def crash_errors(self) -> tuple[Exception, ...]:
        """Return the exceptions raised by crash actions, oldest first (cleared by :meth:`clear`)."""
        with self._lock:
            return tuple(self._crash_errors)

    def fail_with(
        self,
        code: str,
        *,
        count: int = 1,
        operation: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``count`` calls with HTTP 400 error ``code``.

        The modelled ones are ``OperationNotPermittedException`` and
        ``InvalidParameterCombinationException``; botocore does not retry them.
        """
        if not code:
            raise ValueError("code must not be empty")
        text = message or f"Injected {code}."
        self._add(_Rule("error", count, operation, code, text))

    def server_error(self, count: int = 1, *, operation: str | None = None) -> None:
        """Answer the next ``count`` calls with HTTP 500 ``InternalServerError`` (retried)."""
        self._add(
            _Rule("server_error", count, operation, "InternalServerError", "An internal error occurred.", status=500)
        )

    def reset_connection(self, count: int = 1, *, operation: str | None = None) -> None:
        """Reset the connection (TCP RST, no response) on the next ``count`` calls."""
        self._add(_Rule("reset", count, operation))

    def hang(self, count: int = 1, *, seconds: float = 30.0, operation: str | None = None) -> None:
        """Send nothing for ``seconds`` then close, on the next ``count`` calls.

        Choose ``seconds`` above the client's read timeout. Stopping the server wakes
        a hanging request at once.
        """
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        self._add(_Rule("hang", count, operation, seconds=seconds))

    def latency(self, seconds: float, *, operation: str | None = None) -> None:
        """Delay every call (or every call of ``operation``) by ``seconds``; 0 removes it."""
        _check_operation(operation)
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds}")
        with self._lock:
            if seconds:
                self._latency[operation] = seconds
            else:
                self._latency.pop(operation, None)

    def internal_error(self, *user_names: str, attempts: int | None = 1, operation: str | None = None) -> None:
        """Fail batch items for ``user_names`` with ``INTERNAL_ERROR``, leaving them unapplied.

        ``attempts`` counts items, per user: the next ``attempts`` items touching the
        user that would otherwise succeed fail (``None``: every one, until cleared).
        Items already failing with STACK_NOT_FOUND/USER_NAME_NOT_FOUND do not count.
        """
        _check_operation(operation)
        if not user_names:
            raise ValueError("give at least one user name")
        if attempts is not None:
            _check_count(attempts)
        with self._lock:
            for name in user_names:
                self._internal[(name, operation)] = attempts

    def clear(self) -> None:
        """Remove every fault: countdown faults, latency, item faults, rate limits and crashes."""
        with self._lock:
            self._rules.clear()
            self._latency.clear()
            self._internal.clear()
            self._buckets.clear()
            self._crashes.clear()
            self._crash_errors.clear()

    def pending(self) -> int:
        """Return how many counted fault uses remain; a pending crash counts 1, rate limits 0."""
        with self._lock:
            rules = sum(rule.remaining for rule in self._rules)
            items = sum(n for n in self._internal.values() if n is not None)
            return rules + items + len(self._crashes)

    # used by the server ------------------------------------------------------

    def _add(self, rule: _Rule) -> None:
        """Queue a request-level fault after validating it."""
        _check_operation(rule.operation)
        _check_count(rule.remaining)
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, operation: str) -> _Rule | None:
        """Use up one count of the first pending rule matching ``operation``."""
        with self._lock:
            for rule in self._rules:
                if rule.operation in (None, operation):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def _take_token(self, operation: str, now: float) -> bool:
        """Take a token for ``operation`` at ``now``; False when its bucket is empty."""
        with self._lock:
            bucket = self._buckets[operation] if operation in self._buckets else self._buckets.get(None)
            return bucket is None or bucket.take(now)

    def _count_crash(self, app_id: str | None, operation: str) -> _Crash | None:
        """Count one request for the matching crashes; return (and disarm) the one it fires."""
        if app_id is None:
            return None
        fired = None
        with self._lock:
            for crash in self._crashes:
                if crash.app_id != app_id or crash.operation not in (None, operation):
                    continue
                if fired is None or crash.seen + 1 < crash.after:  # one crash per request; a second waits
                    crash.seen += 1
                    if crash.seen == crash.after and fired is None:
                        fired = crash
            if fired is not None:
                self._crashes.remove(fired)
        return fired

    def _crash_failed(self, error: Exception) -> None:
        """Keep an exception raised by a crash action."""
        with self._lock:
            self._crash_errors.append(error)

    def _latency_for(self, operation: str) -> float:
        """Return the delay for ``operation`` (operation-specific wins over global)."""
        with self._lock:
            return self._latency.get(operation, self._latency.get(None, 0.0))

    def _take_internal_error(self, operation: str, user_name: str) -> bool:
        """Return whether this item should fail with INTERNAL_ERROR, using up one count."""
        with self._lock:
            for key in ((user_name, operation), (user_name, None)):
                if key in self._internal:
                    remaining = self._internal[key]
                    if remaining is not None:
                        if remaining <= 1:
                            del self._internal[key]
                        else:
                            self._internal[key] = remaining - 1
                    return True
        return False


# --------------------------------------------------------------------------- call log


@dataclass(frozen=True)
class CallRecord:
    """One request the fake received and what it did with it.

    ``outcome`` is ``"ok"``, ``"item_errors"`` (200 with a non-empty ``errors`` list),
    the error code sent (``"ThrottlingException"``, ``"ValidationException"``, ...),
    ``"connection_reset"`` or ``"hang"``. ``fault`` names the fault that decided the
    reply, if any: ``"throttle"``, ``"error"``, ``"server_error"``, ``"reset"``,
    ``"hang"`` (countdown faults), ``"rate_limit"`` (no token in the bucket) or
    ``"crash"`` (:meth:`Faults.crash`: ``outcome`` is then what serving the call did,
    and ``status`` is None because the connection was reset instead). ``attempt`` and
    ``invocation_id`` come from botocore's ``amz-sdk-request``/``amz-sdk-invocation-id``
    headers, so retries of one call share an ``invocation_id`` with increasing
    ``attempt``. ``received_at`` is read from the state's clock. ``app_id`` is botocore's
    application id from the ``User-Agent`` header (the ``<id>`` of its ``app/<id>``
    token), or None if the client set none.

    To count what a rate limit let through: ``fault == "rate_limit"`` are the throttled
    calls, every other call reached the service (see also :attr:`throttled`).
    """

    operation: str
    body: Mapping[str, Any]
    item_count: int
    status: int | None
    outcome: str
    error_codes: tuple[str, ...] = ()
    fault: str | None = None
    attempt: int | None = None
    invocation_id: str | None = None
    client_address: tuple[str, int] = ("", 0)
    received_at: float = field(default_factory=time.monotonic)
    app_id: str | None = None

    @property
    def throttled(self) -> bool:
        """True when the call was answered ``ThrottlingException`` (by a rate limit or :meth:`Faults.throttle`)."""
        return self.status is not None and self.outcome == _THROTTLING_CODE


class _CallLog:
    """Thread-safe append-only list of :class:`CallRecord`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []

    def append(self, record: CallRecord) -> None:
        with self._lock:
            self._records.append(record)

    def all(self) -> tuple[CallRecord, ...]:
        with self._lock:
            return tuple(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


# --------------------------------------------------------------------------- protocol


class _ApiError(Exception):
    """An error response: HTTP ``status`` with ``{"__type": code, "message": message}``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _validation_error(message: str) -> _ApiError:
    """Build a ``ValidationException`` in AWS's wording."""
    return _ApiError("ValidationException", f"1 validation error detected: {message}")


def _validate_item(index: int, item: object) -> dict[str, Any]:
    """Check one ``UserStackAssociation`` the way the service model constrains it."""
    where = f"userStackAssociations.{index + 1}.member"
    if not isinstance(item, dict) or set(item) - _ITEM_KEYS:
        raise _validation_error(f"Value at '{where}' failed to satisfy constraint: invalid member")
    for key, kind in (("StackName", "stack"), ("UserName", "user")):
        value = item.get(key)
        if not isinstance(value, str) or not value or (kind == "user" and _name_problem("user", value)):
            raise _validation_error(
                f"Value at '{where}.{key[0].lower()}{key[1:]}' failed to satisfy constraint: "
                "Member must satisfy the model's length and pattern"
            )
    if item.get("AuthenticationType") not in AUTHENTICATION_TYPES:
        raise _validation_error(
            f"Value at '{where}.authenticationType' failed to satisfy constraint: Member must "
            f"satisfy enum value set: [{', '.join(sorted(AUTHENTICATION_TYPES))}]"
        )
    if not isinstance(item.get("SendEmailNotification", False), bool):
        raise _validation_error(f"Value at '{where}.sendEmailNotification' must be a boolean")
    return item


def _batch_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the validated items of a batch request (1..25 of them)."""
    items = body.get("UserStackAssociations")
    if not isinstance(items, list):
        raise _validation_error(
            "Value null at 'userStackAssociations' failed to satisfy constraint: Member must not be null"
        )
    if not 1 <= len(items) <= MAX_BATCH_SIZE:
        bound = "greater than or equal to 1" if not items else f"less than or equal to {MAX_BATCH_SIZE}"
        raise _validation_error(
            f"Value at 'userStackAssociations' failed to satisfy constraint: Member must have length {bound}"
        )
    return [_validate_item(index, item) for index, item in enumerate(items)]


def _encode_token(query: list[str | None], last: Association) -> str:
    """Encode an opaque page token: the query and the last association returned."""
    raw = json.dumps({"q": query, "after": list(last)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_token(token: object, query: list[str | None]) -> Association:
    """Return the association a page token continues after; reject foreign tokens."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        after = decoded["after"]
        if decoded["q"] != query or len(after) != 3 or not all(isinstance(x, str) for x in after):
            raise ValueError("token does not belong to this query")
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise _ApiError(
            "InvalidParameterCombinationException", "The NextToken is not valid for this request."
        ) from error
    return (after[0], after[1], after[2])


def _describe_query(body: Mapping[str, Any]) -> tuple[str | None, User | None, int]:
    """Validate a Describe request: return the stack filter, user filter and page size."""
    stack_name, user_name = body.get("StackName"), body.get("UserName")
    auth = body.get("AuthenticationType")
    for key in ("StackName", "UserName"):
        if key in body and (not isinstance(body[key], str) or not body[key]):
            raise _validation_error(f"Value at '{key}' failed to satisfy constraint")
    if auth is not None and auth not in AUTHENTICATION_TYPES:
        raise _validation_error("Value at 'authenticationType' failed to satisfy enum constraint")
    if stack_name is None and user_name is None:
        raise _ApiError(
            "InvalidParameterCombinationException", "Specify StackName, or UserName and AuthenticationType, or both."
        )
    if (user_name is None) != (auth is None):
        raise _ApiError(
            "InvalidParameterCombinationException", "UserName and AuthenticationType must be specified together."
        )
    page_size = body.get("MaxResults", 0)
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not (0 <= page_size <= MAX_PAGE_SIZE):
        raise _validation_error(
            f"Value '{page_size}' at 'maxResults' failed to satisfy constraint: "
            f"Member must have value between 0 and {MAX_PAGE_SIZE}"
        )
    user = None if user_name is None else (cast(str, user_name), cast(str, auth))
    return cast("str | None", stack_name), user, page_size or MAX_PAGE_SIZE


def _describe(state: AppStreamState, body: Mapping[str, Any]) -> dict[str, Any]:
    """Serve one page of ``DescribeUserStackAssociations``."""
    stack_name, user, page_size = _describe_query(body)
    query = [stack_name, *(user or (None, None))]
    found = state._query(stack_name, user)
    if "NextToken" in body:
        after = _decode_token(body["NextToken"], query)
        found = [a for a in found if a > after]
    page = found[:page_size]
    result: dict[str, Any] = {
        "UserStackAssociations": [{"StackName": s, "UserName": u, "AuthenticationType": t} for s, u, t in page]
    }
    if len(found) > page_size:
        result["NextToken"] = _encode_token(query, page[-1])
    return result


def _dispatch(state: AppStreamState, faults: Faults, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Run one operation against ``state``; raise :class:`_ApiError` for error responses."""
    if operation in (BATCH_ASSOCIATE, BATCH_DISASSOCIATE):
        return {"errors": state._apply_batch(operation, _batch_items(body), faults)}
    if operation == DESCRIBE_ASSOCIATIONS:
        return _describe(state, body)
    raise _ApiError("UnknownOperationException", f"Unknown operation {operation!r}.")


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class _Reply:
    """What the HTTP layer must do: send ``payload`` with ``status``, reset, or hang."""

    action: Literal["respond", "reset", "hang"]
    status: int = 200
    payload: Mapping[str, Any] | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class _Incoming:
    """A parsed request as the HTTP layer saw it."""

    path: str
    target: str
    raw_body: bytes
    attempt: int | None
    invocation_id: str | None
    client_address: tuple[str, int]
    app_id: str | None = None

    @property
    def operation(self) -> str:
        """The operation named by ``X-Amz-Target`` (empty if the header is malformed)."""
        prefix, _, name = self.target.partition(".")
        return name if prefix + "." == _TARGET_PREFIX else ""


def _parse_app_id(user_agent: str | None) -> str | None:
    """Extract botocore's application id (the ``app/<id>`` token) from a ``User-Agent`` header."""
    match = _UA_APP_ID.search(user_agent or "")
    return match.group(1) if match else None


def _parse_attempt(header: str | None) -> int | None:
    """Extract ``attempt=N`` from botocore's ``amz-sdk-request`` header."""
    match = re.search(r"attempt=(\d+)", header or "")
    return int(match.group(1)) if match else None


def _error_payload(error: _ApiError) -> dict[str, Any]:
    """Build the JSON body of an error response."""
    return {"__type": error.code, "message": error.message}


def _item_count(body: Mapping[str, Any]) -> int:
    """Return how many batch items a request body carries (0 if none)."""
    items = body.get("UserStackAssociations")
    return len(items) if isinstance(items, list) else 0


class _Handler(BaseHTTPRequestHandler):
    """Quiet HTTP/1.1 (keep-alive) handler delegating to :class:`AppStreamServer`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the call log records every request."""

    def do_POST(self) -> None:
        """Read the request, let the fake decide, then respond, reset or hang."""
        length = int(self.headers.get("Content-Length") or 0)
        incoming = _Incoming(
            path=self.path,
            target=self.headers.get("X-Amz-Target", ""),
            raw_body=self.rfile.read(length) if length else b"",
            attempt=_parse_attempt(self.headers.get("amz-sdk-request")),
            invocation_id=self.headers.get("amz-sdk-invocation-id"),
            client_address=(str(self.client_address[0]), int(self.client_address[1])),
            app_id=_parse_app_id(self.headers.get("User-Agent")),
        )
        reply = self.server.owner._handle(incoming)
        if reply.action == "respond":
            self._send_json(reply.status, reply.payload or {})
        elif reply.action == "hang":
            self.server.owner._stopping.wait(reply.seconds)
            self.close_connection = True
        else:
            _abort(self.connection)
            self.close_connection = True

    do_GET = do_PUT = do_DELETE = do_POST  # noqa: N815 - stdlib naming; answered UnknownOperationException

    def _send_json(self, status: int, payload: Mapping[str, Any]) -> None:
        """Send a JSON 1.1 response with an explicit Content-Length."""
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", _JSON_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)


def _abort(sock: socket.socket) -> None:
    """Make the coming close send a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _LoopbackServer(LoopbackHTTPServer):
    """The fake's HTTP server; requests go to its :class:`AppStreamServer` ``owner``."""

    def __init__(self, owner: AppStreamServer) -> None:
        self.owner = owner
        super().__init__(_Handler)


class AppStreamServer(ServerContext):
    """The AppStream fake on ``http://127.0.0.1:<port>``, served by a daemon thread.

    Use as a context manager (``with AppStreamServer(state) as server:``) or call
    :meth:`start` and :meth:`stop`. Point a boto3 client at :attr:`endpoint_url`
    (``endpoint_url=`` or the environment from :func:`client_env`).
    """

    def __init__(self, state: AppStreamState | None = None, *, faults: Faults | None = None) -> None:
        """Serve ``state`` (default: empty) with ``faults`` (default: none)."""
        self.state: AppStreamState = state if state is not None else AppStreamState()
        self.faults: Faults = faults if faults is not None else Faults()
        self._log = _CallLog()
        self._stopping = threading.Event()
        self._httpd: _LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------

    def start(self) -> AppStreamServer:
        """Bind a free loopback port and start serving; return ``self``."""
        if self._httpd is not None:
            raise RuntimeError("AppStreamServer is already running")
        self._stopping.clear()
        self._httpd = _LoopbackServer(self)
        self._thread = serve_in_thread(self._httpd, f"appstream-fake-{self.port}")
        return self

    def stop(self) -> None:
        """Stop serving and close every connection; wakes hanging or delayed requests."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        stop_serving(httpd, thread)
        self._httpd = self._thread = None

    @property
    def port(self) -> int:
        """The bound TCP port (only while running)."""
        if self._httpd is None:
            raise RuntimeError("AppStreamServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``, for ``endpoint_url=`` or ``AWS_ENDPOINT_URL_APPSTREAM``."""
        return f"http://127.0.0.1:{self.port}"

    # call log ------------------------------------------------------------------

    @property
    def calls(self) -> tuple[CallRecord, ...]:
        """Every request received since start or :meth:`reset_calls`, oldest first."""
        return self._log.all()

    def calls_for(self, operation: str) -> tuple[CallRecord, ...]:
        """The recorded requests for ``operation``, oldest first."""
        return tuple(call for call in self._log.all() if call.operation == operation)

    def reset_calls(self) -> None:
        """Forget the recorded requests."""
        self._log.clear()

    def reset(self) -> None:
        """Start afresh while running: no stacks, users or associations, no faults, no call log."""
        for stack in self.state.stacks():
            self.state.remove_stack(stack)
        for user in self.state.users():
            self.state.remove_user(*user)
        self.faults.clear()
        self.reset_calls()

    # request handling ----------------------------------------------------------

    def _handle(self, incoming: _Incoming) -> _Reply:
        """Decide the reply to one request and record it in the call log."""
        operation = incoming.operation
        body, parse_error = _parse_body(incoming)
        delay = self.faults._latency_for(operation)
        if delay:
            self._stopping.wait(delay)
        crash = self.faults._count_crash(incoming.app_id, operation)
        rule = self.faults._take_rule(operation)
        fault: str | None = None
        if rule is not None:
            reply, fault = _fault_reply(rule), rule.kind
        elif not self.faults._take_token(operation, self.state.clock()):
            reply, fault = (
                _Reply("respond", 400, {"__type": _THROTTLING_CODE, "message": _THROTTLING_MESSAGE}),
                "rate_limit",
            )
        elif parse_error is not None:
            reply = _Reply("respond", parse_error.status, _error_payload(parse_error))
        else:
            reply = self._serve(operation, body)
        if crash is None:
            self._log.append(_record(incoming, operation, body, reply, fault, self.state.clock()))
            return reply
        if crash.answer:
            self._log.append(_record(incoming, operation, body, reply, "on_call", self.state.clock()))
        else:
            self._log.append(_record(incoming, operation, body, reply, "crash", self.state.clock(), sent=False))
        try:
            crash.action()
        except Exception as error:  # kept for Faults.crash_errors: the reset must happen regardless
            self.faults._crash_failed(error)
        return reply if crash.answer else _Reply("reset")

    def _serve(self, operation: str, body: Mapping[str, Any]) -> _Reply:
        """Run the operation and turn its result or error into a reply."""
        try:
            return _Reply("respond", 200, _dispatch(self.state, self.faults, operation, body))
        except _ApiError as error:
            return _Reply("respond", error.status, _error_payload(error))


def _parse_body(incoming: _Incoming) -> tuple[Mapping[str, Any], _ApiError | None]:
    """Parse the JSON body; return it (``{}`` if unusable) and any protocol error."""
    if incoming.path != "/" or not incoming.operation:
        return {}, _ApiError(
            "UnknownOperationException",
            "This fake speaks awsJson1_1 only: POST / with X-Amz-Target: PhotonAdminProxyService.<Operation>.",
        )
    try:
        body = json.loads(incoming.raw_body or b"{}")
    except ValueError:
        return {}, _ApiError("SerializationException", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return {}, _ApiError("SerializationException", "The request body must be a JSON object.")
    return body, None


def _fault_reply(rule: _Rule) -> _Reply:
    """Turn a request-level fault into a reply."""
    if rule.kind == "reset":
        return _Reply("reset")
    if rule.kind == "hang":
        return _Reply("hang", seconds=rule.seconds)
    return _Reply("respond", rule.status, {"__type": rule.code, "message": rule.message})


def _record(
    incoming: _Incoming,
    operation: str,
    body: Mapping[str, Any],
    reply: _Reply,
    fault: str | None,
    received_at: float,
    *,
    sent: bool = True,
) -> CallRecord:
    """Build the call-log entry for one request (``sent=False``: the reply was replaced by a reset)."""
    payload = reply.payload or {}
    error_codes = tuple(str(e.get("ErrorCode")) for e in payload.get("errors", ()))
    if reply.action == "reset":
        outcome = "connection_reset"
    elif reply.action == "hang":
        outcome = "hang"
    elif "__type" in payload:
        outcome = str(payload["__type"])
    else:
        outcome = "item_errors" if error_codes else "ok"
    return CallRecord(
        operation=operation or incoming.target,
        body=body,
        item_count=_item_count(body),
        status=reply.status if sent and reply.action == "respond" else None,
        outcome=outcome,
        error_codes=error_codes,
        fault=fault,
        attempt=incoming.attempt,
        invocation_id=incoming.invocation_id,
        client_address=incoming.client_address,
        received_at=received_at,
        app_id=incoming.app_id,
    )


def client_env(server: AppStreamServer, *, region: str = "us-east-1") -> dict[str, str]:
    """Environment that sends an unmodified boto3/botocore AppStream client to ``server``.

    Sets ``AWS_ENDPOINT_URL_APPSTREAM``, fake static credentials and the region,
    and disables the instance-metadata lookup. Apply it to ``os.environ`` (e.g. with
    ``pytest.MonkeyPatch.setenv``) or pass it to a subprocess; also unset
    ``AWS_PROFILE`` so a developer's profile cannot take precedence.
    """
    return {
        "AWS_ENDPOINT_URL_APPSTREAM": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
