"""What the state store records, as plain values, and how a record is read in a given phase.

Pure Python: no boto3, no crhelper. :mod:`.store` turns these into DynamoDB items and back;
:mod:`.decide` decides from them.

The words used throughout:

* An **association** is one (AppStream stack, user, authentication type).
* A **claimant** is one CloudFormation resource: its stack id and logical id. It *claims* the
  associations its properties declare. One association may be claimed by several claimants
  (a user moved between two constructs, a renamed construct, a re-sharded list, two stacks that
  share one state store); it is removed from AppStream only when the last claim goes.
* An **epoch** numbers the deployments of one CloudFormation stack that changed associations;
  the deployment marker resource (:mod:`.deployment`) starts each one. A claim records the epoch
  in which it was last changed and how: ``+`` added, ``-`` marked for removal (removal waits
  until the deployment has succeeded), ``=`` held. Whether a ``+`` or ``-`` of an epoch still
  counts depends on how that deployment ended, which the stack's record says, or, for the
  deployment in progress, the stack's phase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import NamedTuple


class Association(NamedTuple):
    """One AppStream user-stack association, the unit every call and diff works on."""

    stack_name: str
    user_name: str
    authentication_type: str


ADDED = "+"
REMOVING = "-"
HELD = "="


@dataclass(frozen=True)
class Claimant:
    """One CloudFormation resource that declares associations."""

    stack_id: str
    logical_id: str

    @property
    def key(self) -> str:
        """The claimant's name in an association's ``claims`` map."""
        return f"{self.stack_id}|{self.logical_id}"

    @classmethod
    def from_key(cls, key: str) -> Claimant:
        """Inverse of :attr:`key`."""
        stack_id, _, logical_id = key.rpartition("|")
        return cls(stack_id, logical_id)


@dataclass(frozen=True)
class Claim:
    """One claimant's claim on one association."""

    state: str
    """``+`` (added in ``epoch``), ``-`` (to be removed when ``epoch`` succeeds) or ``=`` (held)."""
    epoch: int
    granted: bool = False
    """This claimant's event associated it (it did not exist when claimed)."""
    keep_existing: bool = False
    """The claimant asked to leave associations that existed before it alone (never remove them)."""


@dataclass(frozen=True)
class AssociationRecord:
    """What the store knows of one association: who claims it and where it came from."""

    association: Association
    claims: Mapping[str, Claim] = field(default_factory=dict)
    existed: bool = False
    """It was in AppStream, claimed by nobody, when the first claim was made."""
    adopted: bool = False
    """A claim on it has been part of a successful deployment: it is managed from then on."""
    version: int = 0
    """0: no item in the store. Every write raises it; writes are conditional on it."""
    withdrawing: str = ""
    """The claimant whose event is disassociating it right now (with :attr:`withdraw_until`)."""
    withdraw_until: float = 0.0

    def others(self, claimant: Claimant) -> dict[str, Claim]:
        """The claims of every other claimant."""
        return {key: claim for key, claim in self.claims.items() if key != claimant.key}

    def claim_of(self, claimant: Claimant) -> Claim | None:
        """This claimant's claim, if any."""
        return self.claims.get(claimant.key)


def empty_record(association: Association) -> AssociationRecord:
    """The record of an association the store has never seen."""
    return AssociationRecord(association)


class Phase(Enum):
    """What the stack's status says about the deployment an event belongs to."""

    FORWARD = "forward"
    """CREATE_IN_PROGRESS, UPDATE_IN_PROGRESS: resources are created and updated."""
    COMMIT = "commit"
    """UPDATE_COMPLETE_CLEANUP_IN_PROGRESS: everything succeeded; old resources are deleted."""
    ROLLBACK = "rollback"
    """ROLLBACK_IN_PROGRESS, UPDATE_ROLLBACK_IN_PROGRESS, UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS."""
    DELETE = "delete"
    """DELETE_IN_PROGRESS: the stack is being deleted."""
    UNKNOWN = "unknown"
    """Any other status, or the status could not be read."""


STACK_PHASES: Mapping[str, Phase] = {
    "CREATE_IN_PROGRESS": Phase.FORWARD,
    "UPDATE_IN_PROGRESS": Phase.FORWARD,
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS": Phase.COMMIT,
    "ROLLBACK_IN_PROGRESS": Phase.ROLLBACK,
    "UPDATE_ROLLBACK_IN_PROGRESS": Phase.ROLLBACK,
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS": Phase.ROLLBACK,
    "DELETE_IN_PROGRESS": Phase.DELETE,
}


def phase_of(stack_status: str | None) -> Phase:
    """The phase a stack status names."""
    return STACK_PHASES.get(stack_status or "", Phase.UNKNOWN)


@dataclass(frozen=True)
class EpochInfo:
    """How the deployments of one CloudFormation stack went, from its record in the store."""

    current: int = 0
    """The epoch of the deployment in progress or last started (0: none yet)."""
    committed: int = 0
    """Every epoch up to this one succeeded (or its outcome was settled)."""
    rolled_back: frozenset[int] = frozenset()
    """Epochs whose deployment rolled back."""

    def rolled_back_epoch(self, epoch: int) -> bool:
        return epoch in self.rolled_back

    def with_rollback(self, epoch: int) -> EpochInfo:
        return replace(self, rolled_back=self.rolled_back | {epoch})


class Standing(Enum):
    """What one claim amounts to at one moment."""

    HELD = "held"
    ADDING = "adding"
    REMOVING = "removing"
    GONE = "gone"


def standing(claim: Claim, epochs: EpochInfo, phase: Phase) -> Standing:
    """What a claim of this stack amounts to, given the stack's epochs and the current phase.

    A ``+`` or ``-`` of an earlier epoch is settled by how that deployment ended; one of the
    current epoch by the phase: still pending while resources are created or updated, final in
    the cleanup after success, undone in a rollback.
    """
    if claim.state == HELD:
        return Standing.HELD
    added = claim.state == ADDED
    if epochs.rolled_back_epoch(claim.epoch):
        return Standing.GONE if added else Standing.HELD
    settled = claim.epoch < epochs.current or claim.epoch <= epochs.committed
    if settled or phase in (Phase.COMMIT, Phase.DELETE):
        return Standing.HELD if added else Standing.GONE
    if phase is Phase.ROLLBACK:
        # Its own resource's rollback event withdraws an addition; a removal is taken back.
        return Standing.ADDING if added else Standing.HELD
    return Standing.ADDING if added else Standing.REMOVING


def is_settled_grant(claim: Claim, epochs: EpochInfo, phase: Phase) -> bool:
    """True when the claim has been part of a successful deployment (the association is adopted)."""
    if claim.state in (HELD, REMOVING):
        return True
    return standing(claim, epochs, phase) is Standing.HELD


def declares(
    key: str,
    claim: Claim,
    *,
    own_stack_id: str,
    epochs: EpochInfo,
    phase: Phase,
) -> bool:
    """Whether a claim still declares its association.

    A claim of another CloudFormation stack (a state store shared between stacks) is taken as
    declaring whatever it says: that stack's own events settle it, and its last one withdraws the
    association if nothing else claims it.
    """
    if Claimant.from_key(key).stack_id != own_stack_id:
        return True
    return standing(claim, epochs, phase) is not Standing.GONE


def declared_by_others(record: AssociationRecord, claimant: Claimant, *, epochs: EpochInfo, phase: Phase) -> list[str]:
    """Keys of the other claimants whose claims still declare the association."""
    return [
        key
        for key, claim in record.others(claimant).items()
        if declares(key, claim, own_stack_id=claimant.stack_id, epochs=epochs, phase=phase)
    ]


@dataclass(frozen=True)
class Answered:
    """An answer already given to one request (the same RequestId is answered the same again)."""

    request_type: str
    status: str
    physical_id: str
    reason: str = ""


@dataclass(frozen=True)
class ResourceRecord:
    """What the store keeps for one CloudFormation resource."""

    claimant: Claimant
    version: int = 0
    owner: str = ""
    """RequestId of the event that holds the resource (its lease runs until :attr:`lease_until`)."""
    owner_type: str = ""
    lease_until: float = 0.0
    busy_until: float = 0.0
    """An AppStream call of the owner may be in flight until then."""
    answered: Mapping[str, Answered] = field(default_factory=dict)
    """The last answers given, by RequestId."""
    appstream_stacks: frozenset[str] = frozenset()
    """AppStream stacks on which this resource has (or had) claims."""
    physical_id: str = ""
    path: str = ""
    """The construct path of the resource (for reports)."""

    def live_owner(self, now: float) -> str:
        """The RequestId of an owner whose lease has not run out, else ""."""
        return self.owner if self.owner and self.lease_until > now else ""


@dataclass(frozen=True)
class StackRecord:
    """What the store keeps for one CloudFormation stack."""

    stack_id: str
    version: int = 0
    epochs: EpochInfo = EpochInfo()
    marker: str = ""
    """The deployment marker's physical id of the current epoch."""
    deleted: bool = False


def appstream_stacks(associations: Iterable[Association]) -> frozenset[str]:
    """The AppStream stack names among ``associations``."""
    return frozenset(item.stack_name for item in associations)
