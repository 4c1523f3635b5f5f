"""Synth-time validation of :class:`~constructs_lib.UserStackAssociation` arguments.

Every rule here mirrors the AppStream 2.0 API model (botocore ``appstream/2016-12-01``),
so that a mistake fails ``cdk synth`` instead of a deployment half an hour later.
All problems are collected and reported together; values that are still unresolved
CDK tokens (``Token.is_unresolved``) cannot be checked at synth time and are skipped.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

from aws_cdk import Token

AUTHENTICATION_TYPES: tuple[str, ...] = ("API", "SAML", "USERPOOL", "AWS_AD")
"""``AuthenticationType`` enum of the AppStream API."""

STACK_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}$")
"""``CreateStack.Name`` pattern of the AppStream API (1-101 characters, no ``/``)."""

USER_NAME_MIN_LENGTH = 1
USER_NAME_MAX_LENGTH = 128

MAX_CONCURRENCY_MIN = 1
MAX_CONCURRENCY_MAX = 16

# The API model's user name pattern is ``[\p{L}\p{M}\p{S}\p{N}\p{P}]+``: letters, marks,
# symbols, numbers and punctuation only. Python's ``re`` has no ``\p{..}`` classes, so the
# complement is rejected instead: whitespace (``\s``: spaces, tabs, line breaks, Unicode
# separators) and the "other" categories that are not code points in use (control, format,
# surrogate, private use). Unassigned code points (``Cn``) are *not* rejected: this Python's
# Unicode database may be older than the service's, and a false rejection here would block
# a valid user, whereas a false acceptance is still caught by the service.
_WHITESPACE = re.compile(r"\s")
_REJECTED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zs", "Zl", "Zp"})


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
    if not USER_NAME_MIN_LENGTH <= len(name) <= USER_NAME_MAX_LENGTH:
        return (
            f"user name {name!r} is {len(name)} characters long; AppStream accepts "
            f"{USER_NAME_MIN_LENGTH} to {USER_NAME_MAX_LENGTH} characters"
        )
    bad = sorted({ch for ch in name if _WHITESPACE.match(ch) or unicodedata.category(ch) in _REJECTED_CATEGORIES})
    if bad:
        shown = ", ".join(f"U+{ord(ch):04X}" for ch in bad)
        return (
            f"user name {name!r} contains whitespace or control characters ({shown}); "
            "AppStream user names are e-mail addresses made of letters, marks, symbols, "
            "numbers and punctuation only: remove them (check for stray spaces or line breaks)"
        )
    return None


def _validate_stack_name(stack_name: object) -> list[str]:
    if not isinstance(stack_name, str):
        return [f"stack_name must be a string, got {type(stack_name).__name__} {stack_name!r}"]
    if Token.is_unresolved(stack_name) or STACK_NAME_PATTERN.match(stack_name):
        return []
    return [
        f"stack_name {stack_name!r} is not a valid AppStream stack name: it must match "
        f"{STACK_NAME_PATTERN.pattern} (1-101 characters: letters, digits, '_', '.', '-', "
        "starting with a letter or digit); give the stack's Name, not its ARN"
    ]


def _validate_user_names(user_names: object) -> list[str]:
    if isinstance(user_names, str):
        if Token.is_unresolved(user_names):
            hint = "for a CommaDelimitedList parameter use CfnParameter.value_as_list"
        else:
            hint = f"for one user write [{user_names!r}]"
        return [f"user_names must be a list of strings, not the single string {user_names!r}: {hint}"]
    if not isinstance(user_names, Sequence):
        return [f"user_names must be a list of strings, got {type(user_names).__name__} {user_names!r}"]
    if Token.is_unresolved(list(user_names)):
        # A token-encoded list (e.g. CfnParameter.value_as_list): its items are unknown until deploy.
        return []
    if not user_names:
        return ["user_names is empty: give at least one user name (the e-mail address of a user-pool user)"]

    problems: list[str] = []
    literal: list[str] = []
    for index, name in enumerate(user_names):
        if not isinstance(name, str):
            problems.append(f"user_names[{index}] must be a string, got {type(name).__name__} {name!r}")
        elif not Token.is_unresolved(name):
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
        Token.is_unresolved(authentication_type) or authentication_type in AUTHENTICATION_TYPES
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
        if Token.is_unresolved(max_concurrency):
            return []
        if isinstance(max_concurrency, int) and MAX_CONCURRENCY_MIN <= max_concurrency <= MAX_CONCURRENCY_MAX:
            return []
    return [
        f"max_concurrency {max_concurrency!r} must be a whole number from {MAX_CONCURRENCY_MIN} "
        f"to {MAX_CONCURRENCY_MAX} (parallel AppStream batch calls; 1 = one call at a time)"
    ]


def validate_association(
    *,
    stack_name: object,
    user_names: object,
    authentication_type: object,
    send_email_notification: object,
    max_concurrency: object,
) -> list[str]:
    """Return every problem with the given arguments (an empty list when they are valid)."""
    return [
        *_validate_stack_name(stack_name),
        *_validate_user_names(user_names),
        *_validate_authentication_type(authentication_type),
        *_validate_send_email_notification(send_email_notification),
        *_validate_max_concurrency(max_concurrency),
    ]


def sort_user_names(user_names: Sequence[str]) -> list[str]:
    """Return literal user names sorted, followed by unresolved tokens in their given order.

    A token-encoded list is returned unchanged (as a list).
    """
    names = list(user_names)
    if Token.is_unresolved(names):
        return names
    literal = sorted(name for name in names if not Token.is_unresolved(name))
    tokens = [name for name in names if Token.is_unresolved(name)]
    return literal + tokens
