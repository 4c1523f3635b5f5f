"""Synth-time validation of :class:`~constructs_lib.UserStackAssociation`: the one home of every check.

The arguments (:func:`validate_association`, which also checks the split into shards and the
function-level settings against the stack's shared function), the function-level settings
(:func:`settings_conflicts`), the service timeout against the function's final timeout
(:class:`ServiceTimeoutCheck`, a validation run at synthesis), and associations that two stacks
of one app declare without sharing one state store (:func:`overlap_problems`).

Every rule here mirrors the AppStream 2.0 API model (botocore ``appstream/2016-12-01``),
so that a mistake fails ``cdk synth`` instead of a deployment half an hour later.
All problems are collected and reported together; values that are still unresolved
CDK tokens (``Token.is_unresolved``) cannot be checked at synth time and are skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

import jsii
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import IValidation

from constructs_lib import _sharding, _timing
from constructs_lib._handler import rules
from constructs_lib._sharding import SHARD_COUNTS
from constructs_lib._tokens import is_unresolved

AUTHENTICATION_TYPES: tuple[str, ...] = rules.AUTHENTICATION_TYPES
"""``AuthenticationType`` enum of the AppStream API."""

MIN_PYTHON = (3, 11)
"""Oldest Python runtime the handler supports."""

EXISTING_ASSOCIATIONS = ("adopt", "keep")
"""``existing_associations``: what becomes of an association that existed before it was declared."""


class AssociationValidationError(ValueError):
    """Raised when a ``UserStackAssociation`` is given arguments the AppStream API would reject.

    ``problems`` holds one human-readable line per problem; ``str(error)`` lists them all.
    """

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"UserStackAssociation {path!r} has {count} {noun}:\n{lines}")


def _short(values: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(value) for value in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def user_name_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid AppStream user name, or None when it is valid."""
    problem = rules.user_name_problem(name)
    return None if problem is None else f"user name {name!r} {problem}"


def _validate_stack_name(stack_name: object) -> list[str]:
    if not isinstance(stack_name, str):
        return [f"stack_name must be a string, got {type(stack_name).__name__} {stack_name!r}"]
    if is_unresolved(stack_name) or rules.is_valid_stack_name(stack_name):
        return []
    return [
        f"stack_name {stack_name!r} is not a valid AppStream stack name: it must be "
        f"{rules.STACK_NAME_RULE} (the whole string: no spaces or line breaks); give the stack's Name, not its ARN"
    ]


def _validate_user_names(user_names: object) -> list[str]:
    if isinstance(user_names, str):
        if is_unresolved(user_names):
            hint = "for a CommaDelimitedList parameter use CfnParameter.value_as_list"
        else:
            hint = f"for one user write [{user_names!r}]"
        return [f"user_names must be a list of strings, not the single string {user_names!r}: {hint}"]
    if not isinstance(user_names, Sequence):
        return [f"user_names must be a list of strings, got {type(user_names).__name__} {user_names!r}"]
    if is_unresolved(list(user_names)):
        # A token-encoded list (e.g. CfnParameter.value_as_list): its items are unknown until deploy.
        return []
    if not user_names:
        return ["user_names is empty: give at least one user name (the e-mail address of a user-pool user)"]

    problems: list[str] = []
    literal: list[str] = []
    for index, name in enumerate(user_names):
        if not isinstance(name, str):
            problems.append(f"user_names[{index}] must be a string, got {type(name).__name__} {name!r}")
        elif not is_unresolved(name):
            literal.append(name)
            problem = user_name_problem(name)
            if problem is not None:
                problems.append(problem)
    duplicates = sorted(name for name, count in Counter(literal).items() if count > 1)
    if duplicates:
        problems.append(
            f"user_names lists {_short(duplicates)} more than once; give each user once (user names are case-sensitive)"
        )
    return problems


def _validate_authentication_type(authentication_type: object) -> list[str]:
    if isinstance(authentication_type, str) and (
        is_unresolved(authentication_type) or authentication_type in AUTHENTICATION_TYPES
    ):
        return []
    hint = ""
    if isinstance(authentication_type, str) and authentication_type.strip().upper() in AUTHENTICATION_TYPES:
        hint = f" (did you mean {authentication_type.strip().upper()!r}? the value is case-sensitive)"
    return [
        f"authentication_type {authentication_type!r} is not one of "
        f"{', '.join(AUTHENTICATION_TYPES)}{hint}; user-pool users need 'USERPOOL'"
    ]


def _validate_send_email_notification(send_email_notification: object) -> list[str]:
    if isinstance(send_email_notification, bool):
        return []
    return [
        f"send_email_notification must be True or False, got "
        f"{type(send_email_notification).__name__} {send_email_notification!r}"
    ]


def _validate_max_concurrency(max_concurrency: object) -> list[str]:
    if isinstance(max_concurrency, (int, float)) and not isinstance(max_concurrency, bool):
        if is_unresolved(max_concurrency):
            return []
        if (
            isinstance(max_concurrency, int)
            and rules.MAX_CONCURRENCY_MIN <= max_concurrency <= rules.MAX_CONCURRENCY_MAX
        ):
            return []
    return [
        f"max_concurrency {max_concurrency!r} must be a whole number from {rules.MAX_CONCURRENCY_MIN} "
        f"to {rules.MAX_CONCURRENCY_MAX} (parallel AppStream batch calls; 1 = one call at a time)"
    ]


def _validate_shards(shards: object) -> list[str]:
    if isinstance(shards, int) and not isinstance(shards, bool) and shards in SHARD_COUNTS:
        return []
    return [
        f"shards {shards!r} must be one of {', '.join(map(str, SHARD_COUNTS))} (a power of two: "
        "raising it to a multiple keeps every move of a user safe)"
    ]


def _duration_seconds(name: str, value: object, low: int, high: int, hint: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, Duration):
        return [f"{name} must be a Duration (e.g. Duration.minutes(10)), got {type(value).__name__} {value!r}"]
    if value.is_unresolved():
        return [f"{name} must be known at synth time, not a token"]
    seconds = value.to_milliseconds() / 1000
    if seconds != int(seconds) or not low <= seconds <= high:
        return [f"{name} is {seconds:g} s; it must be a whole number of seconds from {low} to {high}{hint}"]
    return []


def python_version(runtime: lambda_.Runtime) -> tuple[int, ...] | None:
    """``(3, 14)`` for ``python3.14``; None for a runtime that is not a versioned Python."""
    name = runtime.name
    if runtime.family != lambda_.RuntimeFamily.PYTHON or not name.startswith("python"):
        return None
    try:
        return tuple(int(part) for part in name.removeprefix("python").split("."))
    except ValueError:
        return None


def _validate_runtime(runtime: object) -> list[str]:
    if runtime is None:
        return []
    if isinstance(runtime, lambda_.Runtime) and (python_version(runtime) or ()) >= MIN_PYTHON:
        return []
    name = getattr(runtime, "name", None)
    shown = name if isinstance(name, str) else repr(runtime)
    return [
        f"runtime {shown} cannot run the handler: give a Python runtime from python"
        f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} on (e.g. Runtime.PYTHON_3_13), or leave it out for the newest"
    ]


def _validate_role(role: object) -> list[str]:
    if role is None or (hasattr(role, "role_arn") and hasattr(role, "node")):
        return []
    return [f"role must be an iam.IRole (e.g. iam.Role or iam.Role.from_role_arn(...)), got {type(role).__name__}"]


def _validate_existing(value: object) -> list[str]:
    if value in EXISTING_ASSOCIATIONS:
        return []
    return [
        f"existing_associations {value!r} must be 'adopt' (associations that existed before are managed once a "
        "deployment that declares them succeeds) or 'keep' (they are never removed by this association)"
    ]


def _validate_table(table: object) -> list[str]:
    if table is None or (hasattr(table, "table_arn") and hasattr(table, "node")):
        return []
    return [
        f"state_table must be an aws_dynamodb.ITable (e.g. a Table of another stack, or Table.from_table_name), "
        f"got {type(table).__name__}"
    ]


def _validate_enum(name: str, value: object, kind: type, example: str) -> list[str]:
    if value is None or isinstance(value, kind):
        return []
    return [f"{name} must be a {kind.__name__} (e.g. {example}), got {type(value).__name__} {value!r}"]


def validate_association(
    *,
    stack_name: object,
    user_names: object,
    authentication_type: object,
    send_email_notification: object,
    max_concurrency: object,
    shards: object = 1,
    service_timeout: object = None,
    timeout: object = None,
    runtime: object = None,
    role: object = None,
    log_retention: object = None,
    log_removal_policy: object = None,
    existing_associations: object = "adopt",
    state_table: object = None,
) -> list[str]:
    """Return every problem with the given arguments (an empty list when they are valid).

    Valid arguments are also split into shards here; a split that cannot be used is a problem too.
    """
    problems = [
        *_validate_stack_name(stack_name),
        *_validate_user_names(user_names),
        *_validate_authentication_type(authentication_type),
        *_validate_send_email_notification(send_email_notification),
        *_validate_max_concurrency(max_concurrency),
        *_validate_shards(shards),
        *_duration_seconds(
            "service_timeout",
            service_timeout,
            1,
            _timing.MAX_SERVICE_TIMEOUT_SECONDS,
            " (CloudFormation's ServiceTimeout), and exceed the function's timeout by "
            f"{_timing.SERVICE_TIMEOUT_MARGIN_SECONDS} s",
        ),
        *_duration_seconds(
            "timeout",
            timeout,
            _timing.MIN_TIMEOUT_SECONDS,
            _timing.MAX_TIMEOUT_SECONDS,
            " (the handler keeps up to 10 s to answer and splits the rest between work and undo)",
        ),
        *_validate_runtime(runtime),
        *_validate_role(role),
        *_validate_enum("log_retention", log_retention, logs.RetentionDays, "RetentionDays.ONE_YEAR"),
        *_validate_enum("log_removal_policy", log_removal_policy, RemovalPolicy, "RemovalPolicy.RETAIN"),
        *_validate_existing(existing_associations),
        *_validate_table(state_table),
    ]
    if not problems and isinstance(shards, int) and isinstance(user_names, Sequence):
        problems += _sharding.plan_shards(sort_user_names(user_names), shards).problems
    return problems


def sort_user_names(user_names: Sequence[str]) -> list[str]:
    """Return literal user names sorted, followed by unresolved tokens in their given order.

    A token-encoded list is returned unchanged (as a list).
    """
    names = list(user_names)
    if is_unresolved(names):
        return names
    literal = sorted(name for name in names if not is_unresolved(name))
    tokens = [name for name in names if is_unresolved(name)]
    return literal + tokens


@dataclass(frozen=True)
class FunctionSettings:
    """Settings of the shared function; None leaves a setting to the stack's function.

    See :class:`~constructs_lib.UserStackAssociation` for their meaning and defaults.
    """

    runtime: lambda_.Runtime | None = None
    timeout: Duration | None = None
    role: iam.IRole | None = None
    log_retention: logs.RetentionDays | None = None
    log_removal_policy: RemovalPolicy | None = None
    state_table: dynamodb.ITable | None = None


def _shown(name: str, value: object) -> str:
    if value is None:
        return "default" if name != "timeout" else "default (sized to the work)"
    if isinstance(value, lambda_.Runtime):
        return value.name
    if isinstance(value, Duration):
        return f"{value.to_seconds():g} s"
    if name in ("role", "state_table"):
        return str(value.node.path)  # type: ignore[attr-defined]
    return str(getattr(value, "name", value))


def _same(name: str, left: object, right: object) -> bool:
    if left is None or right is None:
        return left is right
    if name == "runtime":
        return bool(left.name == right.name)  # type: ignore[attr-defined]
    if name == "timeout":
        return bool(left.to_seconds() == right.to_seconds())  # type: ignore[attr-defined]
    if name in ("role", "state_table"):
        return bool(left.node.path == right.node.path)  # type: ignore[attr-defined]
    return left == right


def settings_conflicts(have: FunctionSettings, wanted: FunctionSettings, *, created_by: str, where: str) -> list[str]:
    """Problems with sharing a function that has ``have`` with an association asking for ``wanted``."""
    problems = []
    for field in fields(FunctionSettings):
        asked = getattr(wanted, field.name)
        existing = getattr(have, field.name)
        if asked is None or _same(field.name, asked, existing):
            continue
        problems.append(
            f"{field.name} {_shown(field.name, asked)} differs from the {_shown(field.name, existing)} "
            f"of the function that {created_by or 'another association'} created for this stack "
            f"({where}); all UserStackAssociations of a stack share one function: give "
            f"{field.name} to the first of them, and the same value or none to the others"
        )
    return problems


def overlap_problems(
    path: str,
    table: str,
    mine: set[tuple[str, str, str]],
    others: Iterable[tuple[str, str, set[tuple[str, str, str]]]],
) -> list[str]:
    """Associations declared by this stack and by another one of the app with another state store.

    Two stacks that each keep their own record would each remove a shared user when deleted (or
    when one stops declaring it): they must share one table to see each other's claims.
    """
    problems = []
    for other_path, other_table, theirs in others:
        shared = sorted(mine & theirs)
        if not shared or other_table == table:
            continue
        if path > other_path:
            continue  # reported once, by the first of the two
        shown = ", ".join(f"{user} on {stack}" for stack, user, _ in shared[:3])
        more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
        problems.append(
            f"{path} and {other_path} both declare {shown}{more} but keep separate state stores, so deleting one "
            "stack (or dropping a user from it) would remove what the other still declares: create one "
            "aws_dynamodb.Table (partition key 'pk', sort key 'sk', strings) in a stack both depend on and pass it "
            "as state_table= to the UserStackAssociations of both stacks"
        )
    return problems


@jsii.implements(IValidation)
class ServiceTimeoutCheck:
    """A given ``service_timeout`` must outlast the function's timeout (known only at synthesis)."""

    def __init__(self, timeout_seconds: Callable[[], int], service_timeout: Duration) -> None:
        self._timeout_seconds = timeout_seconds
        self._seconds = int(service_timeout.to_seconds())

    def validate(self) -> list[str]:
        timeout = self._timeout_seconds()
        least = timeout + _timing.SERVICE_TIMEOUT_MARGIN_SECONDS
        if self._seconds >= least:
            return []
        return [
            f"service_timeout is {self._seconds} s but the stack's association function may run "
            f"{timeout} s: CloudFormation would give up before the answer; give at least {least} s "
            "or leave service_timeout out"
        ]
