"""Showing a rehearsal: one-paragraph summaries of stack operations, console-style event lines.

:func:`summary` is what ``str(operation)`` prints: the final status, each failed resource with
its reason, and the function's own error where it could not run (``Runtime.ImportModuleError``,
a timeout, a killed process) - short enough for an assert message. :func:`write_event` prints
one event the way CloudFormation's console lists it. Standard library only.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from constructs_lib.testing.rehearsal import StackEvent, StackOperation

__all__ = ["summarise_users", "summary", "write_event"]

_COLOURS = (("FAILED", "\033[31m"), ("ROLLBACK", "\033[31m"), ("IN_PROGRESS", "\033[33m"), ("COMPLETE", "\033[32m"))
_REASON_LIMIT = 300


def summarise_users(users: Iterable[str], limit: int = 4, *, width: int | None = None) -> str:
    """``a, b, c +N more`` for long user lists (sorted).

    :param limit: most names shown. Default: 4.
    :param width: most characters used, if given (at least one name is always shown).
    """
    names = sorted(users)
    if not names:
        return "(none)"
    shown: list[str] = []
    for index, name in enumerate(names[:limit]):
        rest = len(names) - index - 1
        candidate = ", ".join([*shown, name]) + (f" +{rest} more" if rest else "")
        if shown and width is not None and len(candidate) > width:
            break
        shown.append(name)
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" +{more} more" if more else "")


def _clip(text: str, limit: int = _REASON_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summary(operation: StackOperation) -> str:
    """A few lines on what became of a stack operation, fit for an assert message.

    The first line gives the stack, its final status, what was done, how many resources and
    function runs took part and how much time the rehearsal skipped (waits it did not really
    wait: ServiceTimeout, Lambda's retry delays). Then one line per failed resource event
    (``logical id STATUS: reason``) and one per distinct error of the function's runs.
    """
    resources = {event.logical_id for event in operation.resource_events}
    runs = operation.invocations
    parts = [operation.kind.lower() or "operation", f"{len(resources)} resources", f"{len(runs)} function runs"]
    if operation.skipped:
        parts.append(f"{operation.skipped:.0f} s of virtual time skipped")
    lines = [f"{operation.stack_name}: {operation.status} ({', '.join(parts)})"]
    for event in operation.failures:
        lines.append(f"  {event.logical_id} {event.status}: {_clip(event.reason)}")
    seen: set[tuple[str, str]] = set()
    for run in runs:
        if run.error is None or (run.logical_id, run.error) in seen:
            continue
        seen.add((run.logical_id, run.error))
        lines.append(f"  function error in {run.logical_id} {run.request_type} ({run.kind}): {_clip(run.error)}")
    return "\n".join(lines)


def write_event(
    out: TextIO, stack_name: str, event: StackEvent, *, color: bool = False, width: int = 100, id_width: int = 30
) -> None:
    """Print one stack event the way CloudFormation's console lists it: time, logical id, status, reason.

    A short reason stays on the event's line; a longer one goes on the following lines, wrapped
    to ``width`` characters. With ``color``, statuses are coloured and the stack's own events
    (``logical_id == stack_name``) are bold. Function runs behind the event add their seconds.
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
    pad = " " * max(1, id_width - len(event.logical_id) + 1)
    logical_id = f"\033[1m{event.logical_id}\033[0m" if color and event.logical_id == stack_name else event.logical_id
    runs = event.attempts
    timing = f"  {sum(run.seconds for run in runs):.1f} s" if runs else ""
    timing += f" ({len(runs)} runs)" if len(runs) > 1 else ""
    plain = f"  {stamp}  {event.logical_id}{pad}{event.status}{timing}"
    status = event.status
    if color:
        tone = next((code for word, code in _COLOURS if word in status), "")
        status = f"{tone}{status}\033[0m"
    line = f"  {stamp}  {logical_id}{pad}{status}{timing}"
    if event.reason and len(plain) + 2 + len(event.reason) <= width:
        out.write(f"{line}  {event.reason}\n")
        return
    out.write(f"{line}\n")
    if event.reason:
        indent = " " * 12
        for text in textwrap.wrap(event.reason, width=max(40, width - len(indent)), break_on_hyphens=False):
            out.write(f"{indent}{text}\n")
