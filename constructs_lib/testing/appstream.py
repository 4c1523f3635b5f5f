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

Run time needs only the standard library: this module never imports boto3.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
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
    """

    def __init__(self) -> None:
        """Create an empty state: no stacks, no users, no associations."""
        self._lock = threading.Lock()
        self._stacks: set[str] = set()
        self._users: set[User] = set()
        self._associations: set[Association] = set()

    # seeding -----------------------------------------------------------------

    def add_stack(self, name: str) -> None:
        """Create stack ``name`` (idempotent)."""
        _check(_name_problem("stack", name))
        with self._lock:
            self._stacks.add(name)

    def remove_stack(self, name: str) -> None:
        """Delete stack ``name`` and its associations (idempotent)."""
        with self._lock:
            self._stacks.discard(name)
            self._associations = {a for a in self._associations if a[0] != name}

    def add_user(self, user_name: str, authentication_type: str = "USERPOOL") -> None:
        """Create user ``user_name`` for ``authentication_type`` (default ``USERPOOL``)."""
        _check(_name_problem("user", user_name))
        _check(_auth_problem(authentication_type))
        with self._lock:
            self._users.add((user_name, authentication_type))

    def remove_user(self, user_name: str, authentication_type: str = "USERPOOL") -> None:
        """Delete a user and its associations (idempotent)."""
        with self._lock:
            self._users.discard((user_name, authentication_type))
            self._associations = {a for a in self._associations if a[1:] != (user_name, authentication_type)}

    def associate(self, stack_name: str, user_name: str, authentication_type: str = "USERPOOL") -> None:
        """Associate a user with a stack, bypassing the API (idempotent).

        Raises ``ValueError`` if the stack, or a ``USERPOOL`` user, does not exist.
        """
        _check(_auth_problem(authentication_type))
        with self._lock:
            _check(self._missing_locked(stack_name, user_name, authentication_type))
            self._associations.add((stack_name, user_name, authentication_type))

    def disassociate(self, stack_name: str, user_name: str, authentication_type: str = "USERPOOL") -> None:
        """Remove an association, bypassing the API (idempotent)."""
        with self._lock:
            self._associations.discard((stack_name, user_name, authentication_type))

    # reading -----------------------------------------------------------------

    def stacks(self) -> frozenset[str]:
        """Return the names of all stacks."""
        with self._lock:
            return frozenset(self._stacks)

    def users(self) -> frozenset[User]:
        """Return all users as ``(user_name, authentication_type)``."""
        with self._lock:
            return frozenset(self._users)

    def associations(self) -> frozenset[Association]:
        """Return all associations as ``(stack_name, user_name, authentication_type)``."""
        with self._lock:
            return frozenset(self._associations)

    def snapshot(self) -> StateSnapshot:
        """Return a consistent copy of stacks, users and associations."""
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
    def from_seed(cls, seed: Mapping[str, Any], *, source: str = "seed") -> AppStreamState:
        """Build a state from a seed document; raise :class:`SeedError` listing every problem.

        Format (every key optional; ``AuthenticationType`` defaults to ``USERPOOL``)::

            {
              "stacks": ["demo-stack"],
              "users": [{"UserName": "alice@example.com", "AuthenticationType": "USERPOOL"}],
              "associations": [{"StackName": "demo-stack", "UserName": "alice@example.com",
                                "AuthenticationType": "USERPOOL"}]
            }

        Associations must name a listed stack and, for ``USERPOOL``, a listed user.
        """
        problems, stacks, users, associations = _parse_seed(seed)
        problems += _dangling_associations(stacks, users, associations)
        if problems:
            raise SeedError(problems, source)
        state = cls()
        state._stacks, state._users = set(stacks), set(users)
        state._associations = set(associations)
        return state

    @classmethod
    def load_seed(cls, path: str | os.PathLike[str]) -> AppStreamState:
        """Read a JSON seed file (format: :meth:`from_seed`); raise :class:`SeedError` if invalid."""
        source = f"seed file {os.fspath(path)}"
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SeedError([f"not valid JSON: {error}"], source) from error
        if not isinstance(document, Mapping):
            raise SeedError([f"expected a JSON object, got {type(document).__name__}"], source)
        return cls.from_seed(document, source=source)

    # used by the server ------------------------------------------------------

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
        with self._lock:
            for item in items:
                key = (item["StackName"], item["UserName"], item["AuthenticationType"])
                code, message = self._item_error_locked(operation, key, faults)
                if code is not None:
                    errors.append({"UserStackAssociation": item, "ErrorCode": code, "ErrorMessage": message})
                elif operation == BATCH_ASSOCIATE:
                    self._associations.add(key)
                else:
                    self._associations.discard(key)
        return errors

    def _item_error_locked(self, operation: str, key: Association, faults: Faults) -> tuple[str | None, str]:
        """Return ``(ErrorCode, ErrorMessage)`` for one batch item, or ``(None, "")``."""
        stack_name, user_name, auth = key
        if stack_name not in self._stacks:
            return "STACK_NOT_FOUND", f"The stack {stack_name} was not found."
        if auth == "USERPOOL" and (user_name, auth) not in self._users:
            return "USER_NAME_NOT_FOUND", f"The user {user_name} was not found."
        if faults._take_internal_error(operation, user_name):
            return "INTERNAL_ERROR", "An internal error occurred. Try again."
        return None, ""

    def _query(self, stack_name: str | None, user: User | None) -> list[Association]:
        """Return the matching associations sorted by (stack, user, auth)."""
        with self._lock:
            found = [
                a
                for a in self._associations
                if (stack_name is None or a[0] == stack_name) and (user is None or a[1:] == user)
            ]
        return sorted(found)


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


def _check_count(count: int) -> None:
    """Reject a non-positive fault count."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")


class Faults:
    """Thread-safe fault injection for :class:`AppStreamServer`; may change while it runs.

    Request-level faults (throttle, fail_with, server_error, reset_connection, hang)
    queue up in the order they are added: each request takes the first pending one
    whose ``operation`` filter matches (``None`` matches every request) and uses up one
    of its ``count``. Latency applies to every matching request on top of that.
    Item faults (:meth:`internal_error`) act inside batch calls that otherwise succeed.
    """

    def __init__(self) -> None:
        """Start with no faults."""
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._latency: dict[str | None, float] = {}
        self._internal: dict[tuple[str, str | None], int | None] = {}

    def throttle(self, count: int = 1, *, operation: str | None = None) -> None:
        """Answer the next ``count`` calls with HTTP 400 ``ThrottlingException``.

        botocore's retry modes classify this code as throttling and retry it.
        """
        self._add(_Rule("throttle", count, operation, "ThrottlingException", "Rate exceeded"))

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
        """Remove every fault."""
        with self._lock:
            self._rules.clear()
            self._latency.clear()
            self._internal.clear()

    def pending(self) -> int:
        """Return how many counted fault uses remain (persistent faults not counted)."""
        with self._lock:
            rules = sum(rule.remaining for rule in self._rules)
            items = sum(n for n in self._internal.values() if n is not None)
            return rules + items

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
    ``"connection_reset"`` or ``"hang"``. ``fault`` names the request-level fault
    that fired, if any. ``attempt`` and ``invocation_id`` come from botocore's
    ``amz-sdk-request``/``amz-sdk-invocation-id`` headers, so retries of one call
    share an ``invocation_id`` with increasing ``attempt``.
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

    @property
    def operation(self) -> str:
        """The operation named by ``X-Amz-Target`` (empty if the header is malformed)."""
        prefix, _, name = self.target.partition(".")
        return name if prefix + "." == _TARGET_PREFIX else ""


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
        rule = self.faults._take_rule(operation)
        if rule is not None:
            reply = _fault_reply(rule)
        elif parse_error is not None:
            reply = _Reply("respond", parse_error.status, _error_payload(parse_error))
        else:
            reply = self._serve(operation, body)
        self._log.append(_record(incoming, operation, body, reply, rule))
        return reply

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
    rule: _Rule | None,
) -> CallRecord:
    """Build the call-log entry for one request."""
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
        status=reply.status if reply.action == "respond" else None,
        outcome=outcome,
        error_codes=error_codes,
        fault=rule.kind if rule else None,
        attempt=incoming.attempt,
        invocation_id=incoming.invocation_id,
        client_address=incoming.client_address,
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
