"""The decision logic: what one event does to the store's claims and to AppStream.

A plain function of (the event's kind and declared associations, the phase, the recorded state,
AppStream's state), with no I/O: :func:`plan` returns one :class:`Change` per association the
event touches. :mod:`.execute` carries the changes out (a conditional state write, then the
AppStream call) and, when a write finds the record changed under it, asks :func:`decide_one`
again with the fresh record.

The rules, which make AppStream hold what the templates declare through every CloudFormation
path:

* **Additions happen at once, removals wait for success.** A Create or forward Update claims
  what it declares (``+``) and associates what AppStream lacks; what it no longer declares is
  only marked (``-``). The marks are carried out when the deployment has succeeded (cleanup
  phase; see :mod:`.deployment`) and taken back if it rolls back, so a user moved between two
  resources, a renamed construct or a re-sharded list is never removed in between.
* **The last claim decides.** Dropping a claim removes the association from AppStream only when
  no other claim declares it and it is not the account's own: an association that existed before
  anything claimed it (``existed``) stays unless a claim on it has been part of a successful
  deployment (``adopted``), and stays for good under ``ExistingAssociations: keep``.
* **Rollbacks undo by record, not by properties.** A rollback Update takes back its resource's
  ``+`` and ``-`` of the deployment being rolled back; a rollback Delete drops all its claims.
  Neither needs the physical id CloudFormation sends, so a cancelled, crashed or unanswered Create
  is rolled back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from .model import (
    ADDED,
    HELD,
    REMOVING,
    Association,
    AssociationRecord,
    Claim,
    Claimant,
    EpochInfo,
    Phase,
    Standing,
    declared_by_others,
    empty_record,
    is_settled_grant,
    standing,
)


class Kind(Enum):
    """What an event asks of one association resource."""

    DECLARE = "declare"
    """Create, or Update in a forward phase: claim the declared associations, mark the rest."""
    REVERT = "revert"
    """Update in a rollback: take back this resource's changes of the epoch being rolled back."""
    DROP = "drop"
    """Delete: drop every claim of this resource."""
    DROP_OWN_GRANTS = "drop-own-grants"
    """Delete in a phase the handler does not know: drop the claims, withdraw only own grants."""
    SETTLE_REMOVALS = "settle-removals"
    """The deployment succeeded: carry out the ``-`` marks of one epoch (any claimant of the stack)."""
    SETTLE_ROLLBACK = "settle-rollback"
    """The deployment rolled back: take back leftover ``+`` and ``-`` of one epoch (any claimant)."""


class Call(Enum):
    """The AppStream call a change needs."""

    NONE = "none"
    ASSOCIATE = "associate"
    DISASSOCIATE = "disassociate"


@dataclass(frozen=True)
class Change:
    """One association's change: the claimant's claim after it, and the AppStream call it needs.

    ``record`` is the record as read; the state write is conditional on its version.
    """

    association: Association
    claimant: Claimant
    record: AssociationRecord
    claim: Claim | None
    """The claimant's claim afterwards; None drops it."""
    call: Call = Call.NONE
    existed: bool | None = None
    """On a first claim: whether the association was already in AppStream (None: leave as is)."""
    adopted: bool = False
    """Record that the association is managed from now on."""
    last: bool = False
    """The last claim goes: the record becomes a tombstone (origin forgotten)."""

    @property
    def before(self) -> Claim | None:
        """The claimant's claim before the change."""
        return self.record.claim_of(self.claimant)

    @property
    def changes_claims(self) -> bool:
        """True when the store must be written (the claim or the record's origin changes)."""
        return self.before != self.claim or self.existed is not None or self.adopted or self.last


@dataclass(frozen=True)
class Context:
    """Everything :func:`decide_one` needs besides the association and its record."""

    claimant: Claimant
    kind: Kind
    phase: Phase
    epochs: EpochInfo
    epoch: int
    """The epoch stamped on new ``+``/``-`` marks (the deployment in progress)."""
    present: frozenset[Association]
    """What AppStream holds now, on the stacks involved."""
    declared: frozenset[Association] = frozenset()
    """What the event's properties declare (DECLARE and REVERT)."""
    keep_existing: bool = False
    settle_epoch: int = 0
    """The epoch SETTLE_* kinds settle."""
    uncertain: frozenset[Association] = frozenset()
    """Associations whose record changed under the event after AppStream was read: whether AppStream
    holds them now is unknown. An addition then associates (idempotent), a withdrawal disassociates
    (idempotent too): the call is made rather than skipped on a stale reading."""

    def maybe_present(self, association: Association) -> bool:
        """Present, or unknown (a withdrawal must make its call)."""
        return association in self.present or association in self.uncertain

    def surely_present(self, association: Association) -> bool:
        """Present, and known to be (an addition may skip its call)."""
        return association in self.present and association not in self.uncertain


def _effective(claim: Claim | None, context: Context) -> Claim | None:
    """The claimant's claim, or None when it no longer counts (settled away, rolled back)."""
    if claim is None:
        return None
    if standing(claim, context.epochs, context.phase) is Standing.GONE:
        return None
    return claim


def _drop(association: Association, record: AssociationRecord, claimant: Claimant, context: Context) -> Change:
    """Drop ``claimant``'s claim; withdraw the association when nothing else keeps it."""
    mine = record.claim_of(claimant)
    if mine is None:
        return Change(association, claimant, record, None)
    epochs, phase = context.epochs, context.phase
    if declared_by_others(record, claimant, epochs=epochs, phase=phase):
        settled = is_settled_grant(mine, epochs, phase) and not record.adopted
        return Change(association, claimant, record, None, adopted=settled)
    present = context.maybe_present(association)
    if context.kind is Kind.DROP_OWN_GRANTS:
        withdraw = mine.granted
    else:
        adopted = record.adopted or is_settled_grant(mine, epochs, phase)
        account_owns = record.existed and (not adopted or mine.keep_existing)
        withdraw = not account_owns
    call = Call.DISASSOCIATE if withdraw and present else Call.NONE
    return Change(association, claimant, record, None, call=call, last=True)


def _declare(association: Association, record: AssociationRecord, context: Context) -> Change:
    """Claim a declared association (DECLARE), associating it when AppStream lacks it."""
    claimant = context.claimant
    mine = _effective(record.claim_of(claimant), context)
    present = context.surely_present(association)
    keep = context.keep_existing
    if mine is not None and mine.state == REMOVING:
        # Marked for removal earlier in this deployment and declared again: held as before.
        claim = Claim(HELD, mine.epoch, mine.granted, keep)
        return Change(association, claimant, record, claim, call=Call.NONE if present else Call.ASSOCIATE)
    if mine is not None:
        claim = mine if mine.keep_existing == keep else Claim(mine.state, mine.epoch, mine.granted, keep)
        # Held but missing from AppStream (removed by hand): put it back.
        return Change(association, claimant, record, claim, call=Call.NONE if present else Call.ASSOCIATE)
    being_withdrawn = bool(record.withdrawing)
    granted = not present or being_withdrawn
    claim = Claim(ADDED, context.epoch, granted, keep)
    first = not record.claims
    existed = (present and not being_withdrawn) if first else None
    call = Call.ASSOCIATE if granted else Call.NONE
    return Change(association, claimant, record, claim, call=call, existed=existed)


def _undeclare(association: Association, record: AssociationRecord, context: Context) -> Change | None:
    """An association the resource no longer declares (DECLARE): mark it, or drop a fresh claim."""
    claimant = context.claimant
    mine = _effective(record.claim_of(claimant), context)
    if mine is None or mine.state == REMOVING:
        return None
    if mine.state == ADDED and mine.epoch == context.epoch:
        # Added earlier in this same deployment (a replayed or repeated event): nothing to wait for.
        return _drop(association, record, claimant, context)
    return Change(association, claimant, record, Claim(REMOVING, context.epoch, mine.granted, mine.keep_existing))


def _revert(association: Association, record: AssociationRecord, context: Context) -> Change | None:
    """Take back this resource's change of the epoch being rolled back (REVERT)."""
    claimant = context.claimant
    mine = record.claim_of(claimant)
    if mine is not None and mine.epoch == context.epoch and mine.state == ADDED:
        return _drop(association, record, claimant, context)
    if mine is not None and mine.epoch == context.epoch and mine.state == REMOVING:
        claim = Claim(HELD, mine.epoch, mine.granted, mine.keep_existing)
        present = context.surely_present(association)
        return Change(association, claimant, record, claim, call=Call.NONE if present else Call.ASSOCIATE)
    if association in context.declared and not context.surely_present(association):
        # Declared by the template being returned to, but not in AppStream: converge.
        if mine is None:
            claim = Claim(HELD, context.epoch, True, context.keep_existing)
            return Change(
                association, claimant, record, claim, call=Call.ASSOCIATE, existed=False if not record.claims else None
            )
        return Change(association, claimant, record, mine, call=Call.ASSOCIATE)
    if association in context.declared and mine is None:
        # A resource the store has not seen yet (created before the store existed): record it.
        claim = Claim(HELD, context.epoch, False, context.keep_existing)
        existed = False if not record.claims else None
        return Change(association, claimant, record, claim, existed=existed)
    return None


def _settle(association: Association, record: AssociationRecord, context: Context) -> list[Change]:
    """SETTLE_*: settle every claim of this stack stamped with ``settle_epoch``."""
    changes: list[Change] = []
    for key, claim in record.claims.items():
        owner = Claimant.from_key(key)
        if owner.stack_id != context.claimant.stack_id or claim.epoch != context.settle_epoch:
            continue
        if (context.kind is Kind.SETTLE_REMOVALS and claim.state == REMOVING) or (
            context.kind is Kind.SETTLE_ROLLBACK and claim.state == ADDED
        ):
            changes.append(_drop(association, record, owner, context))
        elif context.kind is Kind.SETTLE_ROLLBACK and claim.state == REMOVING:
            held = Claim(HELD, claim.epoch, claim.granted, claim.keep_existing)
            changes.append(Change(association, owner, record, held))
        if changes:
            break  # one change per association per pass; the next pass sees the fresh record
    return changes


def decide_one(association: Association, record: AssociationRecord, context: Context) -> list[Change]:
    """The changes one association needs (at most one per pass; empty when it needs none)."""
    kind = context.kind
    if kind is Kind.DECLARE:
        if association in context.declared:
            return [_declare(association, record, context)]
        change = _undeclare(association, record, context)
        return [change] if change is not None else []
    if kind is Kind.REVERT:
        change = _revert(association, record, context)
        return [change] if change is not None else []
    if kind in (Kind.DROP, Kind.DROP_OWN_GRANTS):
        return [_drop(association, record, context.claimant, context)] if record.claim_of(context.claimant) else []
    return _settle(association, record, context)


def plan(records: Mapping[Association, AssociationRecord], context: Context) -> list[Change]:
    """Every change the event needs, over the declared associations and the recorded ones.

    ``records`` holds the store's records of the associations involved (those the event declares
    and those its claimant, or for SETTLE_* its stack, has claims on); a declared association
    without a record is new to the store.
    """
    involved: set[Association] = set(records)
    if context.kind in (Kind.DECLARE, Kind.REVERT):
        involved |= context.declared
    changes: list[Change] = []
    for association in sorted(involved):
        record = records.get(association) or empty_record(association)
        for change in decide_one(association, record, context):
            if change.changes_claims or change.call is not Call.NONE:
                changes.append(change)
    return changes


def claimed_by(records: Iterable[AssociationRecord], claimant: Claimant) -> frozenset[Association]:
    """The associations ``claimant`` has a claim on."""
    return frozenset(record.association for record in records if record.claim_of(claimant) is not None)


def undo(change: Change, record_after: AssociationRecord) -> Change:
    """The change that puts back what ``change`` did (its claim and, if it made one, its call).

    ``record_after`` is the record as the executed change left it (for the write's condition).
    """
    inverse = {Call.NONE: Call.NONE, Call.ASSOCIATE: Call.DISASSOCIATE, Call.DISASSOCIATE: Call.ASSOCIATE}[change.call]
    first_claim = change.existed is not None
    restored_origin = change.last and change.before is not None
    return Change(
        change.association,
        change.claimant,
        record_after,
        change.before,
        call=inverse,
        existed=change.record.existed if restored_origin else None,
        adopted=restored_origin and change.record.adopted,
        last=first_claim and change.before is None and not record_after.others(change.claimant),
    )
