"""The undo of a failed event, when its own state write meets a conflict (found in review).

``Executor.undo`` is driven directly: a store whose first write raises ``Conflicts`` (another
event changed the record meanwhile) and a runner that records the AppStream calls it is asked
for. An undo decided again after the conflict must still put back what the event did: withdraw
its grant, never repeat it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from appstream_handler.batches import Operation, Outcome
from appstream_handler.deadline import Deadline
from appstream_handler.decide import Call, Change, Context, Kind
from appstream_handler.execute import Executor, Result
from appstream_handler.model import ADDED, HELD, Association, AssociationRecord, Claim, Claimant, EpochInfo, Phase
from appstream_handler.store import Conflicts, Owner

X = Association("s", "u@example.com", "USERPOOL")
A = Claimant("stack-a", "A")


class Pacer:
    limited = False
    rate = None

    def seconds_for(self, n: int) -> float:
        return 0.0


class Runner:
    pacer = Pacer()

    def __init__(self) -> None:
        self.calls: list[tuple[Operation, list[Association]]] = []

    def run_batch(self, operation: Operation, batch: Sequence[Association], **_: Any) -> Outcome:
        self.calls.append((operation, list(batch)))
        return Outcome(applied=set(batch))


class Store:
    """The record as another event left it; the first write conflicts, later ones succeed."""

    table = "t"

    def __init__(self, record: AssociationRecord) -> None:
        self.record = record
        self.conflicts = 1
        self.written: list[list[dict[str, Any]]] = []

    def reload(self, associations: Iterable[Association]) -> dict[Association, AssociationRecord]:
        return {X: self.record}

    def write(self, owner: Owner, actions: list[dict[str, Any]], *, busy_until: float, stacks: Iterable[str]) -> None:
        if actions and self.conflicts:
            self.conflicts -= 1
            self.record = AssociationRecord(X, self.record.claims, version=self.record.version + 1)
            raise Conflicts([X])
        self.written.append(actions)


def undo_after_a_conflict(before: Claim | None, after: Claim) -> list[tuple[Operation, list[Association]]]:
    """Undo one executed ASSOCIATE of ``X`` (claim ``before`` -> ``after``); the AppStream calls made."""
    record_before = AssociationRecord(X, {A.key: before} if before else {}, version=1)
    store = Store(AssociationRecord(X, {A.key: after}, version=2))
    runner = Runner()
    owner = Owner(A, "r", "Update", 0.0, 0, held=True)
    executor = Executor(store=store, owner=owner, runner=runner, send_email=False, sleep=lambda _: None)  # type: ignore[arg-type]
    context = Context(
        claimant=A,
        kind=Kind.DECLARE,
        phase=Phase.FORWARD,
        epochs=EpochInfo(current=2),
        epoch=2,
        present=frozenset(),  # AppStream did not hold X when the event began
        declared=frozenset({X}),
    )
    forward = Change(X, A, record_before, after, call=Call.ASSOCIATE, existed=None if before else False)
    undone = executor.undo(Result(done=[forward]), context, Deadline(60))
    assert not undone.problems, undone.problems
    assert store.written, "the undo wrote its record"
    return runner.calls


def test_a_conflict_during_the_undo_still_withdraws_a_regrant_of_a_held_claim() -> None:
    assert undo_after_a_conflict(Claim(HELD, 1, True), Claim(HELD, 1, True)) == [(Operation.DISASSOCIATE, [X])]


def test_a_conflict_during_the_undo_still_withdraws_a_fresh_grant() -> None:
    assert undo_after_a_conflict(None, Claim(ADDED, 2, True)) == [(Operation.DISASSOCIATE, [X])]
