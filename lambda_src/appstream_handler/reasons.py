"""Reasons for FAILED answers, written for the person reading CloudFormation's events.

crhelper keeps only the last 240 characters of a reason longer than 256, so every reason is
built to fit in :data:`MAX_REASON` characters, most important part first: how many failed out
of how many, the error codes, the stack, whether the work was undone, then as many user names
as fit and "+N more".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from . import rules
from .model import Association

MAX_REASON = rules.REASON_LIMIT
_MAX_NAME = 40


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with "..." when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 3)] + "..."


def _codes(labels: Iterable[str]) -> str:
    counts = Counter(labels)
    return ", ".join(f"{code} x{count}" if count > 1 else code for code, count in sorted(counts.items()))


def _stacks(items: Iterable[Association]) -> str:
    names = sorted({item.stack_name for item in items})
    shown = ", ".join(clip(name, _MAX_NAME) for name in names[:2])
    more = f" +{len(names) - 2} more" if len(names) > 2 else ""
    return f"stack{'s' if len(names) > 1 else ''} {shown}{more}"


def users_within(names: list[str], budget: int) -> str:
    """As many of ``names`` as fit in ``budget`` characters, then "+N more"."""
    shown: list[str] = []
    for index, name in enumerate(names):
        candidate = ", ".join([*shown, clip(name, _MAX_NAME)])
        rest = len(names) - index - 1
        suffix = f" +{rest} more" if rest else ""
        if len(candidate) + len(suffix) > budget:
            break
        shown.append(clip(name, _MAX_NAME))
    remaining = len(names) - len(shown)
    if not shown:
        return f"{remaining} users"
    return ", ".join(shown) + (f" +{remaining} more" if remaining else "")


def failure_reason(
    *,
    action: str,
    problems: Mapping[Association, str],
    attempted: int,
    undo_note: str,
    messages: Mapping[str, str],
) -> str:
    """One reason for a failed change, at most :data:`MAX_REASON` characters.

    ``action`` is e.g. "could not be associated"; ``undo_note`` says what became of the event's
    other changes; ``messages`` maps an error code to AppStream's message for it (shown if room).
    """
    head = f"{len(problems)} of {attempted} associations {action} ({_codes(problems.values())}) on {_stacks(problems)}"
    head = clip(head, MAX_REASON - len(undo_note) - 24)
    tail = f". {undo_note}"
    users = sorted({item.user_name for item in problems})
    budget = MAX_REASON - len(head) - len(tail) - len(": ")
    reason = f"{head}: {users_within(users, budget)}{tail}"
    detail = next((messages[code] for code in sorted(set(problems.values())) if messages.get(code)), "")
    if detail and len(reason) + 3 < MAX_REASON:
        reason = f"{reason} ({clip(detail, MAX_REASON - len(reason) - 3)})"
    return clip(reason, MAX_REASON)
