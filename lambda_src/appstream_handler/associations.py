"""What one CloudFormation event does to AppStream: parse, plan, run, undo on failure, summarise.

No crhelper and no client of its own: :func:`handle_event` takes the AppStream client and the
function's remaining time, and returns the :class:`Answer` to send. Each event is a transition
between two sets of associations; when any part of it fails, everything the event changed is
put back, so AppStream holds either the desired state (SUCCESS) or the state before (FAILED).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .batches import AppStreamRunner, DescribeFailed, ItemRetry, Operation, Outcome
from .deadline import Budget
from .properties import Association, DesiredState, MalformedProperties, parse_properties
from .reasons import MAX_REASON, clip, failure_reason

logger = logging.getLogger(__name__)

SUCCESS = "SUCCESS"
FAILED = "FAILED"
# Physical ids this handler hands out for a resource it created. Anything else on a Delete
# (crhelper's generated id after a failed Create, an id CloudFormation invented while rolling
# back) names nothing this handler created: it is deleted without a call.
PHYSICAL_ID_PREFIX = "appstream-user-stack-association:"
FAILED_CREATE_PREFIX = "appstream-user-stack-association-failed:"


@dataclass(frozen=True)
class Answer:
    """What to tell CloudFormation."""

    status: str
    physical_resource_id: str
    reason: str = ""


def _digest(event: Mapping[str, Any]) -> str:
    key = f"{event.get('StackId', '')}\n{event.get('LogicalResourceId', '')}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def physical_id(event: Mapping[str, Any]) -> str:
    """The id of a successfully created resource: the same for the same stack and logical id."""
    return PHYSICAL_ID_PREFIX + _digest(event)


def failed_create_id(event: Mapping[str, Any]) -> str:
    """The id sent with a FAILED Create; a later Delete of it does nothing."""
    return FAILED_CREATE_PREFIX + _digest(event)


def is_created_id(value: object) -> bool:
    """True for an id this handler returned from a successful Create."""
    return isinstance(value, str) and value.startswith(PHYSICAL_ID_PREFIX)


@dataclass(frozen=True)
class _Plan:
    """What an event asks for: associations to make exist and to remove, and the ids to answer with."""

    verb: str
    desired: DesiredState
    add: frozenset[Association]
    remove: frozenset[Association]
    success_id: str
    failure_id: str


def handle_event(
    event: Mapping[str, Any], client: Any, remaining_seconds: float, *, item_retry: ItemRetry | None = None
) -> Answer:
    """Carry out one Create, Update or Delete event against AppStream and say how it went."""
    plan = _plan(event)
    if isinstance(plan, Answer):
        return plan
    reason = _transition(client, plan, Budget.from_remaining(remaining_seconds), item_retry)
    return Answer(SUCCESS, plan.success_id) if reason is None else Answer(FAILED, plan.failure_id, reason)


def _plan(event: Mapping[str, Any]) -> _Plan | Answer:
    """Read the event; return the plan, or the answer when no AppStream call is needed."""
    request_type = event.get("RequestType")
    if request_type == "Create":
        success_id, failure_id = physical_id(event), failed_create_id(event)
    else:
        success_id = failure_id = str(event.get("PhysicalResourceId") or physical_id(event))
    if request_type not in ("Create", "Update", "Delete"):
        return Answer(FAILED, failure_id, clip(f"Unknown RequestType {str(request_type)[:40]!r}", MAX_REASON))
    if request_type == "Delete" and not is_created_id(event.get("PhysicalResourceId")):
        logger.info("Delete: physical id was not handed out by a successful Create; no AppStream call")
        return Answer(SUCCESS, success_id)
    try:
        desired = parse_properties(event.get("ResourceProperties"))
    except MalformedProperties as error:
        logger.error("%s malformed (%d problems); no AppStream call", error.field, len(error.problems))
        return Answer(FAILED, failure_id, clip(str(error), MAX_REASON))
    add, remove = desired.associations, frozenset[Association]()
    if request_type == "Delete":
        add, remove = remove, add
    elif request_type == "Update":
        previous = _previous_associations(event)
        if previous == desired.associations:
            logger.info("Update: the associations are unchanged (%d); no AppStream call", len(previous))
            return Answer(SUCCESS, success_id)
        remove = previous - desired.associations
    return _Plan(str(request_type), desired, add, remove, success_id, failure_id)


def _previous_associations(event: Mapping[str, Any]) -> frozenset[Association]:
    try:
        return parse_properties(event.get("OldResourceProperties"), "OldResourceProperties").associations
    except MalformedProperties:
        # Nothing can be said about what the old properties declared; remove nothing.
        logger.warning("OldResourceProperties malformed: converging on the new properties without removals")
        return frozenset()


def _transition(client: Any, plan: _Plan, budget: Budget, item_retry: ItemRetry | None) -> str | None:
    """Make ``plan.add`` exist and ``plan.remove`` not; on failure undo; return a reason or None."""
    verb, desired, add, remove = plan.verb, plan.desired, plan.add, plan.remove
    stacks = {item.stack_name for item in add | remove}
    with AppStreamRunner(client, max_concurrency=desired.max_concurrency, item_retry=item_retry) as runner:
        try:
            before = runner.existing(stacks, budget.forward)
        except DescribeFailed as error:
            logger.error("%s: reading existing associations failed (%s); nothing changed", verb, error.label)
            detail = f": {error.message}" if error.message else ""
            return clip(
                f"Could not read the existing associations of stack {error.stack_name} "
                f"({error.label}{detail}); nothing was changed",
                MAX_REASON,
            )
        to_add = add - before
        to_remove = remove & before
        logger.info(
            "%s: %d to associate (%d already there), %d to disassociate (%d already gone), concurrency %d",
            verb,
            len(to_add),
            len(add) - len(to_add),
            len(to_remove),
            len(remove) - len(to_remove),
            desired.max_concurrency,
        )
        added = runner.apply(
            Operation.ASSOCIATE, to_add, send_email=desired.send_email_notification, deadline=budget.forward
        )
        removed = Outcome()
        if added.ok:
            removed = runner.apply(Operation.DISASSOCIATE, to_remove, send_email=None, deadline=budget.forward)
        if added.ok and removed.ok:
            logger.info(
                "%s: done: %d associated, %d disassociated (%d calls)",
                verb,
                len(added.applied),
                len(removed.applied),
                sum(runner.calls.values()),
            )
            return None

        failing, action = (added, "could not be associated") if not added.ok else (removed, "could not be removed")
        logger.error(
            "%s: %d of %d items failed (%s); undoing this event's changes",
            verb,
            len(failing.problems()),
            len(to_add) + len(to_remove),
            _label_counts(failing),
        )
        undo_note = _undo(runner, budget, stacks, added, removed, to_add, to_remove)
        return failure_reason(
            action=action,
            problems=failing.problems(),
            attempted=len(to_add) + len(to_remove),
            undo_note=undo_note,
            messages=failing.messages,
        )


def _label_counts(outcome: Outcome) -> str:
    counts: dict[str, int] = {}
    for label in outcome.problems().values():
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{label}={count}" for label, count in sorted(counts.items()))


def _undo(
    runner: AppStreamRunner,
    budget: Budget,
    stacks: set[str],
    added: Outcome,
    removed: Outcome,
    to_add: frozenset[Association],
    to_remove: frozenset[Association],
) -> str:
    """Put back what this event changed; return a note on how that went."""
    undo_disassociate = added.applied | set(added.unknown)
    undo_associate = removed.applied | set(removed.unknown)
    if added.unknown or removed.unknown:
        # Some calls may or may not have landed: ask AppStream what holds now.
        try:
            now = runner.existing(stacks, budget.undo)
            undo_disassociate = set(to_add & now)
            undo_associate = set(to_remove - now)
        except DescribeFailed as error:
            logger.warning("Undo: could not re-read associations (%s); undoing every uncertain item", error.label)
    if not undo_disassociate and not undo_associate:
        return "Nothing was changed"
    restored = runner.apply(Operation.ASSOCIATE, undo_associate, send_email=False, deadline=budget.undo)
    withdrawn = runner.apply(Operation.DISASSOCIATE, undo_disassociate, send_email=None, deadline=budget.undo)
    left = {**restored.problems(), **withdrawn.problems()}
    if not left:
        logger.info(
            "Undo: complete (%d disassociated, %d re-associated)", len(withdrawn.applied), len(restored.applied)
        )
        return "This event's changes were undone"
    logger.error("Undo: %d of %d items could not be put back", len(left), len(undo_disassociate) + len(undo_associate))
    codes = ", ".join(sorted(set(left.values())))
    return f"UNDO INCOMPLETE: {len(left)} left changed ({codes}); deploy again to converge"
