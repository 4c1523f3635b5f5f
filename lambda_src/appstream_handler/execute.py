"""Carrying out a plan: per batch, a conditional state write, then the AppStream call.

Every AppStream call is preceded by the state write that records it, in one DynamoDB transaction
with the resource's hold: a crash between the two leaves a record of what may have happened, and
an event that has been taken over (a rollback Delete while its cancelled Create still runs) fails
its next write and stops. A withdrawal is written in two steps: the association is marked as
being withdrawn before the call, and its claim dropped after it (in the next transaction, or the
event's last write); a failed call keeps the claim, so a later event finds it.

When a write finds a record changed since it was read (another resource or stack claimed or
dropped the same association), the record is read again and the association decided again.
When anything fails, :meth:`Executor.undo` puts back what the event changed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from . import rules
from .batches import THROTTLED, TIME_RAN_OUT, AppStreamRunner, Operation, Outcome
from .deadline import Deadline
from .decide import Call, Change, Context, decide_one
from .model import Association, AssociationRecord, declared_by_others
from .store import Conflicts, Owner, StateStore, StoreError, Superseded, change_action, lock_action, unlock_action

logger = logging.getLogger(__name__)

BATCH_WINDOW = 2.0 * rules.CALL_SECONDS + 4.0
"""Seconds one batch call may take, retries included; recorded as the resource's ``busy_until``
(and an association's ``wd_until``), so an event that takes the resource over, or wants to
claim an association being withdrawn, knows how long to wait for a call that may be in flight."""
CONFLICT_ATTEMPTS = 6
PLAN_MARGIN = rules.PLAN_MARGIN
WRITE_LIMIT = 99
"""Association writes per transaction (one more action is the resource's hold)."""


@dataclass
class Result:
    """What became of a plan."""

    done: list[Change] = field(default_factory=list)
    """Changes written and, where they needed a call, carried out in AppStream."""
    problems: dict[Association, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    superseded: bool = False
    store_error: StoreError | None = None
    calls_needed: int = 0
    throttled_rate: float | None = None
    """Set when the event stopped early because AppStream's pace could not finish it in time."""
    throttled_left: int = 0
    """Batches left when it stopped."""

    @property
    def ok(self) -> bool:
        return not (self.problems or self.superseded or self.store_error)


@dataclass(frozen=True)
class _Unlock:
    change: Change
    version: int
    withdrawn: bool


class Executor:
    """Runs one event's changes for one owner (the resource whose hold every write carries)."""

    def __init__(
        self,
        *,
        store: StateStore,
        owner: Owner,
        runner: AppStreamRunner,
        send_email: bool,
        awaits: Callable[[Association, str], bool] = lambda association, code: False,
        max_concurrency: int = 1,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._owner = owner
        self._runner = runner
        self._send_email = send_email
        self._awaits = awaits
        self._concurrency = max(1, max_concurrency)
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._unlocks: list[_Unlock] = []
        self._stopped = False
        self._undoing = False
        self._undo_deadline: Deadline | None = None
        self._undo_of: dict[Association, tuple[Change, Context]] = {}
        """While undoing: the forward change each inverse puts back, and the context it ran in."""
        self._done_batches = 0
        self._in_flight = 0
        self._left = 0

    # -- public ---------------------------------------------------------------------------

    def run(
        self,
        changes: Sequence[Change],
        context: Context,
        deadline: Deadline,
        *,
        undoing: bool = False,
        undo_deadline: Deadline | None = None,
    ) -> Result:
        """Write and carry out ``changes``; stop at the first failure (the caller undoes).

        Forward work stops early when AppStream's pace says the rest cannot be done in time (what
        is done must still be undone); an undo (``undoing``) goes on as far as time allows.
        """
        result = Result(calls_needed=sum(1 for change in changes if change.call is not Call.NONE))
        self._stopped = False
        self._undoing = undoing
        self._undo_deadline = undo_deadline
        self._done_batches = 0
        self._in_flight = 0
        quiet = [change for change in changes if change.call is Call.NONE]
        for start in range(0, len(quiet), WRITE_LIMIT):
            self._batch(quiet[start : start + WRITE_LIMIT], context, deadline, result)
            if not result.ok:
                return result
        batches: list[list[Change]] = []
        for call in (Call.ASSOCIATE, Call.DISASSOCIATE):  # one kind of call per batch
            loud = [change for change in changes if change.call is call]
            batches += [loud[start : start + rules.BATCH_LIMIT] for start in range(0, len(loud), rules.BATCH_LIMIT)]
        self._left = len(batches)
        if batches and not self._owner.held:
            # The first write takes the resource's hold (conditional on its version): alone.
            self._paced_batch(batches.pop(0), context, deadline, result)
            if not result.ok:
                return result
        if self._concurrency == 1 or len(batches) <= 1:
            for batch in batches:
                self._paced_batch(batch, context, deadline, result)
                if not result.ok:
                    break
        else:
            with ThreadPoolExecutor(max_workers=min(self._concurrency, len(batches))) as pool:
                list(pool.map(lambda batch: self._paced_batch(batch, context, deadline, result), batches))
        return result

    def _paced_batch(self, batch: list[Change], context: Context, deadline: Deadline, result: Result) -> None:
        """A batch, unless AppStream's pace says the rest cannot be done in time (then stop: undo fits)."""
        with self._lock:
            left = self._left
            self._left -= 1
            stopping = self._stopped
        pacer = self._runner.pacer
        # If AppStream's pace says the rest cannot be done in this event's time, stop now, while
        # what is done can still be undone: never leave a partial change behind.
        cannot_finish = PLAN_MARGIN * pacer.seconds_for(left) > deadline.remaining() - rules.CALL_SECONDS
        if not stopping and pacer.limited and not self._undoing and cannot_finish:
            self._stop(result, left)
        if self._stopped:
            with self._lock:
                result.problems.update(dict.fromkeys((change.association for change in batch), THROTTLED))
            return
        self._batch(batch, context, deadline, result)

    def _stop(self, result: Result, left: int) -> None:
        rate = self._runner.pacer.rate  # read before taking this lock: the pacer may hold its own
        with self._lock:
            if not self._stopped:
                self._stopped = True
                result.throttled_rate = rate
                result.throttled_left = left

    def _admission(self, result: Result) -> Callable[[float], bool] | None:
        """For forward work: whether a batch call starting at ``start`` may still go.

        It may if, once it has landed, every batch that has landed or may land (this one
        included) can still be undone at AppStream's pace before the undo's time is up. Asked
        just before the call (after any wait for its turn), so batches queued behind a slow
        pace are refused when their turn comes too late; a refusal stops the forward work.
        """
        if self._undoing or self._undo_deadline is None:
            return None
        undo_deadline = self._undo_deadline

        def admit(start: float) -> bool:
            pacer = self._runner.pacer
            with self._lock:
                if self._stopped:
                    return False
                landing = self._done_batches + self._in_flight
            if not pacer.limited:
                return True
            undo_end = self._monotonic() + undo_deadline.remaining()
            if start + PLAN_MARGIN * pacer.seconds_for(landing) <= undo_end - rules.CALL_SECONDS:
                return True
            self._stop(result, self._left + 1)
            return False

        return admit

    def pacer_rate(self) -> float | None:
        """The calls per second AppStream allowed this event (None if it never throttled)."""
        return self._runner.pacer.rate

    def pending_unlocks(self) -> list[dict[str, Any]]:
        """The trailing writes of finished withdrawals, for the event's last write (then forgotten)."""
        with self._lock:
            unlocks, self._unlocks = self._unlocks, []
        now = self._clock()
        return [
            unlock_action(self._store.table, item.change, item.version, withdrawn=item.withdrawn, now=now)
            for item in unlocks
        ]

    def flush(self, deadline: Deadline) -> None:
        """Write trailing unlocks that do not fit in the event's last write (more than 98 of them)."""
        while True:
            with self._lock:
                if len(self._unlocks) <= WRITE_LIMIT - 1:
                    return
                chunk, self._unlocks = self._unlocks[:WRITE_LIMIT], self._unlocks[WRITE_LIMIT:]
            now = self._clock()
            actions = [
                unlock_action(self._store.table, u.change, u.version, withdrawn=u.withdrawn, now=now) for u in chunk
            ]
            self._store.write(self._owner, actions, busy_until=now, stacks=())

    def undo(self, result: Result, context: Context, deadline: Deadline) -> Result:
        """Put back what ``result.done`` changed; return how that went."""
        done = list(result.done)
        if not done:
            return Result()
        try:
            self._unlocks_to_store(deadline)
            fresh = self._store.reload(sorted({change.association for change in done}))
        except (StoreError, Superseded, Conflicts) as error:
            failed = Result(problems={change.association: _label(error) for change in done})
            failed.store_error = error if isinstance(error, StoreError) else StoreError(_label(error))
            return failed
        inverses: list[Change] = []
        for change in reversed(done):
            record = fresh.get(change.association) or AssociationRecord(change.association)
            inverse = _inverse(change, record, context)
            if inverse is not None:
                inverses.append(inverse)
                self._undo_of[change.association] = (change, context)
                fresh[change.association] = record  # one inverse per association per pass
        undo_context = replace(context, present=frozenset())
        return self.run(inverses, undo_context, deadline, undoing=True)

    # -- batches ----------------------------------------------------------------------------

    def _batch(self, batch: list[Change], context: Context, deadline: Deadline, result: Result) -> None:
        if not batch or self._stopped:
            return
        batch = self._after_withdrawals(batch, context)
        for attempt in range(CONFLICT_ATTEMPTS):
            if not batch:
                return
            if deadline.expired(rules.CALL_SECONDS):
                with self._lock:
                    result.problems.update(dict.fromkeys((change.association for change in batch), TIME_RAN_OUT))
                return
            now = self._clock()
            actions = [
                lock_action(self._store.table, change, now + BATCH_WINDOW)
                if change.call is Call.DISASSOCIATE
                else change_action(self._store.table, change, now)
                for change in batch
            ]
            trailing = self._take_unlocks(WRITE_LIMIT - len(actions), {change.association for change in batch})
            try:
                self._store.write(
                    self._owner,
                    actions + [action for action, _ in trailing],
                    busy_until=now + BATCH_WINDOW,
                    stacks={change.association.stack_name for change in batch},
                )
            except Superseded:
                self._give_back(trailing)
                self._stopped = True
                with self._lock:
                    result.superseded = True
                return
            except StoreError as error:
                self._give_back(trailing)
                self._stopped = True
                with self._lock:
                    result.store_error = error
                return
            except Conflicts as conflict:
                self._give_back(trailing)
                batch = self._redecide(batch, conflict, context)
                self._sleep(min(0.05 * 2**attempt, 1.0))
                continue
            break
        else:
            with self._lock:
                result.problems.update(dict.fromkeys((change.association for change in batch), "STATE_CONFLICT"))
            return
        self._call(batch, deadline, result)

    def _call(self, batch: list[Change], deadline: Deadline, result: Result) -> None:
        quiet = [change for change in batch if change.call is Call.NONE]
        if quiet:
            with self._lock:
                result.done.extend(quiet)
        # Normally one kind per batch; a batch decided again after a conflict may need both.
        for call in (Call.ASSOCIATE, Call.DISASSOCIATE):
            calling = [change for change in batch if change.call is call]
            if calling:
                self._call_one_kind(calling, deadline, result)

    def _call_one_kind(self, batch: list[Change], deadline: Deadline, result: Result) -> None:
        operation = Operation.ASSOCIATE if batch[0].call is Call.ASSOCIATE else Operation.DISASSOCIATE
        window_end = self._monotonic() + BATCH_WINDOW
        with self._lock:
            self._in_flight += 1
        try:
            outcome: Outcome = self._runner.run_batch(
                operation,
                [change.association for change in batch],
                send_email=self._send_email if operation is Operation.ASSOCIATE else None,
                deadline=deadline,
                window_end=window_end,
                awaits=self._awaits if operation is Operation.ASSOCIATE else (lambda association, code: False),
                admit=self._admission(result),
            )
        finally:
            with self._lock:
                self._in_flight -= 1
        reached = outcome.applied | outcome.gone
        with self._lock:
            if reached or outcome.unknown:
                self._done_batches += 1
            result.messages.update({k: v for k, v in outcome.messages.items() if k not in result.messages})
            for change in batch:
                if change.association in reached:
                    result.done.append(change)
                else:
                    result.problems[change.association] = outcome.problems().get(change.association, "UNKNOWN")
                if change.call is Call.DISASSOCIATE:
                    self._unlocks.append(_Unlock(change, change.record.version + 1, change.association in reached))
            if outcome.unknown:
                # Some items may or may not have landed: the undo withdraws them all (a no-op where not).
                result.done.extend(
                    change for change in batch if change.association in outcome.unknown and change not in result.done
                )

    # -- helpers -----------------------------------------------------------------------------

    def _after_withdrawals(self, batch: list[Change], context: Context) -> list[Change]:
        """Wait out withdrawals by other claimants in flight on these associations, then decide again."""
        now = self._clock()
        waiting = [
            change
            for change in batch
            if change.record.withdrawing
            and change.record.withdrawing != change.claimant.key
            and change.record.withdraw_until > now
            and change.claim is not None
        ]
        if not waiting:
            return batch
        until = max(change.record.withdraw_until for change in waiting)
        self._sleep(max(0.0, min(BATCH_WINDOW, until - now)))
        return self._redecide(batch, Conflicts([change.association for change in waiting]), context)

    def _redecide(self, batch: list[Change], conflict: Conflicts, context: Context) -> list[Change]:
        stale = [change.association for change in batch] if conflict.retry_all else list(conflict.associations)
        fresh = self._store.reload(stale)
        changed_context = replace(context, uncertain=context.uncertain | frozenset(stale))
        out: list[Change] = []
        for change in batch:
            if change.association not in stale:
                out.append(change)
                continue
            record = fresh.get(change.association) or AssociationRecord(change.association)
            if record.version == change.record.version and not conflict.retry_all:
                out.append(change)
                continue
            origin = self._undo_of.get(change.association) if self._undoing else None
            if origin is not None:
                # An undo is not decided again as the forward work (that would redo it): the
                # inverse of the same forward change, against the record as it is now.
                inverse = _inverse(origin[0], record, origin[1])
                if inverse is not None:
                    out.append(inverse)
                continue
            for new in decide_one(change.association, record, changed_context):
                if new.changes_claims or new.call is not Call.NONE:
                    out.append(new)
        return out

    def _take_unlocks(self, room: int, exclude: set[Association]) -> list[tuple[dict[str, Any], _Unlock]]:
        if room <= 0:
            return []
        with self._lock:
            eligible = [item for item in self._unlocks if item.change.association not in exclude]
            taken = eligible[:room]
            self._unlocks = [item for item in self._unlocks if item not in taken]
        now = self._clock()
        return [
            (unlock_action(self._store.table, item.change, item.version, withdrawn=item.withdrawn, now=now), item)
            for item in taken
        ]

    def _give_back(self, trailing: Iterable[tuple[dict[str, Any], _Unlock]]) -> None:
        with self._lock:
            self._unlocks = [item for _, item in trailing] + self._unlocks

    def write_pending(self) -> None:
        """Write every trailing unlock now (before the records are read again)."""
        self._unlocks_to_store(Deadline(0.0))

    def _unlocks_to_store(self, deadline: Deadline) -> None:
        actions = self.pending_unlocks()
        for start in range(0, len(actions), WRITE_LIMIT):
            self._store.write(self._owner, actions[start : start + WRITE_LIMIT], busy_until=self._clock(), stacks=())


def _inverse(change: Change, record: AssociationRecord, context: Context) -> Change | None:
    """The change that puts back one executed change, against the record as it is now."""
    claimant = change.claimant
    restore = change.before
    if change.call is Call.ASSOCIATE:
        others = declared_by_others(record, claimant, epochs=context.epochs, phase=context.phase)
        # A claim from before this event does not mean AppStream held the association: one
        # removed by hand (or a legacy claim never granted) was associated by this event, and
        # "as before" means withdrawing it again.
        held_before = restore is not None and context.maybe_present(change.association)
        call = Call.NONE if others or held_before else Call.DISASSOCIATE
    elif change.call is Call.DISASSOCIATE:
        call = Call.ASSOCIATE
    else:
        call = Call.NONE
    now_claim = record.claim_of(claimant)
    if now_claim == restore and call is Call.NONE:
        return None
    first = change.existed is not None and restore is None
    return Change(
        change.association,
        claimant,
        record,
        restore,
        call=call,
        existed=change.record.existed if (change.last and restore is not None) else None,
        adopted=bool(change.last and restore is not None and change.record.adopted),
        last=first and not record.others(claimant),
    )


def _label(error: Exception) -> str:
    if isinstance(error, StoreError):
        return f"STATE_STORE_{error.label}"
    if isinstance(error, Superseded):
        return "SUPERSEDED"
    return "STATE_CONFLICT"
