"""The deployment marker: where each deployment of a stack begins, and when it has succeeded.

CloudFormation tells a custom resource nothing about the deployment it is part of, except through
the stack's status; and it sends no event at all when a deployment succeeds. The construct
therefore adds one ``Custom::AppStreamUserStackAssociationDeployment`` per stack, which every
association resource depends on, and whose properties change whenever any association's do:

* Its **Create or Update** runs first in every deployment that touches associations: it starts
  a new *epoch*, stamped on every claim the deployment adds (``+``) or marks for removal (``-``).
  Leftovers of an earlier epoch whose settling was interrupted are settled first.
* Its Update answers a **new physical id**, so after every resource was created and updated,
  CloudFormation deletes the old id in ``UPDATE_COMPLETE_CLEANUP_IN_PROGRESS``: that Delete is the
  commit. It carries out the epoch's ``-`` marks: associations that no resource declares any more
  are withdrawn, after every addition of the deployment has been made (so a user moved between
  two resources is never removed in between).
* In a **rollback** (its Update back, or the Delete of the id the failed deployment made) it
  records that the epoch rolled back, and takes back leftovers the association resources' own
  rollback events did not (their events do the work).
* On **stack deletion** it is deleted last; the stack's record expires.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from .batches import AppStreamRunner, DescribeFailed
from .decide import Context, Kind, plan
from .execute import Executor
from .model import Association, AssociationRecord, Claimant, Phase, StackRecord
from .reasons import MAX_REASON, clip

if TYPE_CHECKING:
    from .handler import Answer, _Event
    from .store import StackState

logger = logging.getLogger(__name__)


def marker_id(event: Any, epoch: int) -> str:
    """The marker's physical id for one epoch (a new id every deployment: a replacement)."""
    from .handler import DEPLOYMENT_ID_PREFIX  # noqa: PLC0415

    properties = event.get("ResourceProperties") or {}
    digest = hashlib.sha256(
        json.dumps(
            [event.get("StackId"), event.get("LogicalResourceId"), properties], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]
    return f"{DEPLOYMENT_ID_PREFIX}{digest}:{epoch}"


def handle_deployment(run: _Event, stack: StackRecord, state: StackState) -> Answer:
    """Begin, commit or roll back an epoch, as the phase says."""
    from .handler import FAILED, SUCCESS, Answer  # noqa: PLC0415

    request_type, phase = run.request_type, run.phase
    epochs = stack.epochs
    if request_type in ("Create", "Update") and phase is Phase.FORWARD:
        previous = epochs.current
        settled = _settle_leftovers(run, stack, state)
        if settled is not None:
            return Answer(FAILED, run.failure_id, settled)
        committed = previous if previous not in epochs.rolled_back else epochs.committed
        epoch = previous + 1
        identifier = marker_id(run.event, epoch)
        run.store.write_stack(stack, epoch=epoch, committed=max(committed, epochs.committed), marker=identifier)
        logger.info(
            "Deployment %d begins (previous: %s)",
            epoch,
            "rolled back" if previous in epochs.rolled_back else "succeeded",
        )
        return Answer(SUCCESS, identifier)
    if request_type == "Update" and phase is Phase.ROLLBACK:
        run.store.mark_rolled_back(stack.stack_id, epochs.current)
        logger.info("Deployment %d rolls back", epochs.current)
        return Answer(SUCCESS, str(run.event.get("PhysicalResourceId") or run.success_id))
    if request_type == "Delete" and phase is Phase.COMMIT:
        problem = _settle(run, stack, state, Kind.SETTLE_REMOVALS, epochs.current)
        if problem is not None:
            return Answer(FAILED, run.failure_id, problem)
        run.store.write_stack(stack, epoch=epochs.current, committed=epochs.current, marker=stack.marker)
        logger.info("Deployment %d succeeded: its removals are done", epochs.current)
        return Answer(SUCCESS, run.success_id)
    if request_type == "Delete" and phase is Phase.ROLLBACK:
        if str(run.event.get("PhysicalResourceId")) == stack.marker or epochs.current not in epochs.rolled_back:
            run.store.mark_rolled_back(stack.stack_id, epochs.current)
            rolled = stack.__class__(stack.stack_id, stack.version, epochs.with_rollback(epochs.current), stack.marker)
            problem = _settle(run, rolled, state, Kind.SETTLE_ROLLBACK, epochs.current)
            if problem is not None:
                return Answer(FAILED, run.failure_id, problem)
        return Answer(SUCCESS, run.success_id)
    if request_type == "Delete" and phase is Phase.DELETE:
        run.store.mark_deleted(stack.stack_id)
        return Answer(SUCCESS, run.success_id)
    logger.info("Deployment marker: %s in %s needs nothing", request_type, run.facts.stack_status or "an unknown phase")
    return Answer(SUCCESS, run.success_id if request_type != "Create" else marker_id(run.event, epochs.current))


def _settle_leftovers(run: _Event, stack: StackRecord, state: StackState) -> str | None:
    """Before a new epoch: settle what the previous one left unsettled (interrupted commit or rollback)."""
    epochs = stack.epochs
    previous = epochs.current
    if previous == 0:
        return None
    if previous in epochs.rolled_back:
        return _settle(run, stack, state, Kind.SETTLE_ROLLBACK, previous)
    if epochs.committed < previous:
        committed = stack.__class__(
            stack.stack_id, stack.version, epochs.__class__(previous, previous, epochs.rolled_back), stack.marker
        )
        return _settle(run, committed, state, Kind.SETTLE_REMOVALS, previous)
    return None


def _settle(run: _Event, stack: StackRecord, state: StackState, kind: Kind, epoch: int) -> str | None:
    """Carry out (SETTLE_REMOVALS) or take back (SETTLE_ROLLBACK) the marks of ``epoch``; a reason on failure."""
    stacks = (
        set().union(*(record.appstream_stacks for record in state.resources.values())) if state.resources else set()
    )
    if not stacks:
        return None
    records = run.store.load_associations(stacks)
    mine: dict[Association, AssociationRecord] = {
        association: record
        for association, record in records.items()
        if any(
            Claimant.from_key(key).stack_id == stack.stack_id and claim.epoch == epoch and claim.state in ("+", "-")
            for key, claim in record.claims.items()
        )
    }
    if not mine:
        return None
    with AppStreamRunner(
        run.clients.appstream, max_concurrency=4, clock=run.clocks.monotonic, sleep=run.clocks.sleep
    ) as runner:
        try:
            present = frozenset(runner.existing({a.stack_name for a in mine}, run.budget.forward))
        except DescribeFailed as error:
            return clip(
                f"Could not read the associations of stack {error.stack_name} ({error.label}); nothing was changed",
                MAX_REASON,
            )
        phase = Phase.COMMIT if kind is Kind.SETTLE_REMOVALS else Phase.ROLLBACK
        context = Context(
            claimant=run.claimant,
            kind=kind,
            phase=phase,
            epochs=stack.epochs,
            epoch=epoch,
            present=present,
            settle_epoch=epoch,
        )
        changes = plan(mine, context)
        logger.info("Settling deployment %d (%s): %d changes", epoch, kind.value, len(changes))
        executor = Executor(
            store=run.store,
            owner=run.owner,
            runner=runner,
            send_email=False,
            max_concurrency=4,
            clock=run.clocks.wall,
            monotonic=run.clocks.monotonic,
            sleep=run.clocks.sleep,
        )
        run.executor = executor
        result = executor.run(changes, context, run.budget.forward)
        for _ in range(4):
            if not result.ok:
                break
            # Settling one claim per association per pass: go again while some remain.
            executor.write_pending()
            records = run.store.load_associations({a.stack_name for a in mine})
            again = {a: r for a, r in records.items() if a in mine}
            more = plan(again, context)
            if not more:
                break
            result = executor.run(more, context, run.budget.forward)
        if result.ok:
            executor.flush(run.budget.answer)
            return None
        codes = ", ".join(sorted(set(result.problems.values()))) or (
            str(result.store_error) if result.store_error else "superseded"
        )
        return clip(
            f"Deployment {epoch}: {len(result.problems)} associations could not be settled ({codes}); deploy again",
            MAX_REASON,
        )
