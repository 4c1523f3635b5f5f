"""Strict parsing of the custom resource's properties, in one place.

CloudFormation delivers every scalar of ``ResourceProperties`` as a string (``true`` arrives as
``"true"``, ``4`` as ``"4"``); lists keep their shape. Everything the handler acts on passes
through :func:`parse_properties`, which either returns a fully typed :class:`DesiredState` or
raises :class:`MalformedProperties` listing every problem found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import rules
from .model import Association
from .rules import AUTHENTICATION_TYPES, DEFAULT_MAX_CONCURRENCY, is_valid_stack_name, is_valid_user_name

EXISTING_ADOPT = "adopt"
EXISTING_KEEP = "keep"
EXISTING_POLICIES = (EXISTING_ADOPT, EXISTING_KEEP)
"""``ExistingAssociations``: what becomes of an association that existed before it was declared."""
_MAX_SHOWN_PROBLEMS = 3
_MAX_MESSAGE = rules.REASON_LIMIT


@dataclass(frozen=True)
class DesiredState:
    """The associations one custom resource declares, parsed from its properties."""

    stack_name: str
    user_names: tuple[str, ...]
    authentication_type: str
    send_email_notification: bool
    max_concurrency: int
    keep_existing: bool = False
    """``ExistingAssociations: keep``: associations that existed before they were declared are
    never removed by this resource (default ``adopt``: they are managed like the others once a
    deployment that declares them has succeeded)."""
    path: str = ""
    """``ConstructPath``: the construct's path in the CDK app, for reports."""
    await_users: frozenset[str] = frozenset()
    """``AwaitUsers``: users the same deploy creates (CfnUser); AppStream may not see them at once."""
    await_stack: bool = False
    """``AwaitStack``: the same deploy creates the AppStream stack (CfnStack)."""

    def awaits(self, association: Association, code: str) -> bool:
        """Whether a not-found answer (``code``) may be AppStream catching up with this deploy's creations."""
        if code == "STACK_NOT_FOUND":
            return self.await_stack
        return association.user_name in self.await_users

    @property
    def associations(self) -> frozenset[Association]:
        """Every (stack, user, authentication type) this resource declares."""
        return frozenset(Association(self.stack_name, user, self.authentication_type) for user in self.user_names)


class MalformedProperties(ValueError):
    """Properties that cannot be acted on; ``str()`` is a reason a person can act on."""

    def __init__(self, field: str, problems: list[str]) -> None:
        self.field = field
        self.problems = problems
        more = f"; +{len(problems) - _MAX_SHOWN_PROBLEMS} more" if len(problems) > _MAX_SHOWN_PROBLEMS else ""
        prefix = f"{field} malformed: "
        shown = problems[:_MAX_SHOWN_PROBLEMS]
        each = (_MAX_MESSAGE - len(prefix) - len(more)) // len(shown) - 2
        super().__init__(prefix + "; ".join(_clip(problem, each) for problem in shown) + more)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def _show(value: object, limit: int = 40) -> str:
    return _clip(repr(value), limit)


def _parse_bool(value: object, name: str, problems: list[str]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.append(f"{name} must be 'true' or 'false', got {_show(value)}")
    return False


def _parse_concurrency(value: object, problems: list[str]) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    if number is None or not rules.MAX_CONCURRENCY_MIN <= number <= rules.MAX_CONCURRENCY_MAX:
        problems.append(f"MaxConcurrency must be a whole number 1-{rules.MAX_CONCURRENCY_MAX}, got {_show(value)}")
        return DEFAULT_MAX_CONCURRENCY
    return number


def _parse_users(value: object, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        problems.append("UserNames is missing")
        return ()
    if not isinstance(value, list):
        problems.append(f"UserNames must be a list of user names, got {type(value).__name__} {_show(value)}")
        return ()
    if not value:
        problems.append("UserNames is empty: declare at least one user")
        return ()
    seen: set[str] = set()
    duplicates: list[str] = []
    for index, user in enumerate(value):
        if not isinstance(user, str):
            problems.append(f"UserNames[{index}] must be a string, got {type(user).__name__}")
        elif not is_valid_user_name(user):
            problems.append(
                f"UserNames[{index}] {_show(user)} is not a user name (1-{rules.USER_NAME_MAX_LENGTH} chars, no spaces)"
            )
        elif user in seen:
            duplicates.append(user)
        else:
            seen.add(user)
    if duplicates:
        problems.append(f"UserNames has duplicates: {', '.join(_show(d) for d in duplicates[:3])}")
    return tuple(sorted(seen))


def parse_properties(raw: object, field: str = "ResourceProperties") -> DesiredState:
    """Parse one properties map strictly; raise :class:`MalformedProperties` on any problem.

    Unknown keys (``ServiceToken``, ``ServiceTimeout``, keys of later versions) are ignored.
    """
    if not isinstance(raw, Mapping):
        raise MalformedProperties(field, [f"expected a map of properties, got {type(raw).__name__}"])
    problems: list[str] = []

    stack_name = raw.get("StackName")
    if stack_name is None:
        problems.append("StackName is missing")
    elif not is_valid_stack_name(stack_name):
        problems.append(f"StackName {_show(stack_name)} is not an AppStream stack name ({rules.STACK_NAME_RULE})")

    users = _parse_users(raw.get("UserNames"), problems)

    auth = raw.get("AuthenticationType")
    if auth is None:
        problems.append("AuthenticationType is missing")
    elif auth not in AUTHENTICATION_TYPES:
        problems.append(f"AuthenticationType must be one of {'|'.join(AUTHENTICATION_TYPES)}, got {_show(auth)}")

    send_email = _parse_bool(raw.get("SendEmailNotification", "false"), "SendEmailNotification", problems)
    concurrency = _parse_concurrency(raw.get("MaxConcurrency", str(DEFAULT_MAX_CONCURRENCY)), problems)
    existing = raw.get("ExistingAssociations", EXISTING_ADOPT)
    if existing not in EXISTING_POLICIES:
        problems.append(f"ExistingAssociations must be {' or '.join(EXISTING_POLICIES)}, got {_show(existing)}")
    await_users = raw.get("AwaitUsers", [])
    if not isinstance(await_users, list) or not all(isinstance(user, str) for user in await_users):
        problems.append(f"AwaitUsers must be a list of user names, got {_show(await_users)}")
        await_users = []
    await_stack = _parse_bool(raw.get("AwaitStack", "false"), "AwaitStack", problems)
    path = raw.get("ConstructPath", "")
    if not isinstance(path, str):
        problems.append(f"ConstructPath must be a string, got {type(path).__name__}")
        path = ""

    if problems:
        raise MalformedProperties(field, problems)
    assert isinstance(stack_name, str)
    assert isinstance(auth, str)
    return DesiredState(
        stack_name,
        users,
        auth,
        send_email,
        concurrency,
        existing == EXISTING_KEEP,
        path[:1024],
        frozenset(await_users),
        await_stack,
    )
