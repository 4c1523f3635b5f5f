"""The state store as the command line reads it, with the handler's own schema and rules.

The schema (:mod:`appstream_handler.store`), the records (:mod:`appstream_handler.model`) and the
decisions (:mod:`appstream_handler.decide`) are the handler's modules, loaded from the handler
tree by :func:`constructs_lib._handler.handler_module`: nothing here re-implements how an item is
read or what a claim means. What is added is what the handler never needs: how the claims of a
stack read *between* deployments (:func:`settled_phase`), what a planned change leaves behind
(:func:`applied`), and where a stack's table is (:func:`locate_table`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from constructs_lib._handler import handler_module
from constructs_lib.cli.assembly import (
    STATE_TABLE_PREFIX,
    TABLE_TYPE,
    Resolver,
    StackArtifact,
    Unresolved,
    describe,
    exported_by,
)
from constructs_lib.cli.aws import Aws, CliError, StackResource, StackSummary, region_of, stack_name_of

if TYPE_CHECKING:
    from appstream_handler import decide, model, properties, store
else:
    model = handler_module("model")
    decide = handler_module("decide")
    store = handler_module("store")
    properties = handler_module("properties")

__all__ = [
    "SETTLED_STATUSES",
    "Association",
    "AssociationRecord",
    "Claim",
    "Claimant",
    "EpochInfo",
    "Phase",
    "ResourceRecord",
    "StackView",
    "Standing",
    "Store",
    "TableLocation",
    "applied",
    "decide",
    "locate_deployed_table",
    "locate_table",
    "model",
    "own_table",
    "parse_declared",
    "properties",
    "settled_phase",
    "store",
]

Association = model.Association
AssociationRecord = model.AssociationRecord
Claim = model.Claim
Claimant = model.Claimant
EpochInfo = model.EpochInfo
Phase = model.Phase
ResourceRecord = model.ResourceRecord
Standing = model.Standing

SETTLED_STATUSES = frozenset(
    {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "UPDATE_ROLLBACK_COMPLETE",
        "ROLLBACK_COMPLETE",
        "IMPORT_COMPLETE",
        "IMPORT_ROLLBACK_COMPLETE",
    }
)
"""Stack statuses after a deployment ended: its outcome is in the store (a rollback is recorded)."""


def settled_phase(status: str) -> model.Phase:
    """The phase in which to read a stack's claims now.

    After a deployment ended, every ``+`` counts and every ``-`` is gone, unless the store
    recorded the epoch as rolled back (then the reverse): that is :attr:`Phase.COMMIT`. While one
    runs, the handler's own reading of the status applies.
    """
    if status in SETTLED_STATUSES:
        return model.Phase.COMMIT
    return model.phase_of(status)


@dataclass(frozen=True)
class StackView:
    """One CloudFormation stack's records in a state store, read as of now."""

    stack_id: str
    status: str
    """CloudFormation's status; "" when the stack is gone or was never deployed."""
    epochs: model.EpochInfo
    resources: Mapping[str, model.ResourceRecord]

    @property
    def name(self) -> str:
        return stack_name_of(self.stack_id)

    @property
    def phase(self) -> model.Phase:
        return settled_phase(self.status)

    @property
    def live(self) -> bool:
        return bool(self.status)

    def standing(self, claim: model.Claim) -> model.Standing:
        """What one of this stack's claims amounts to now (a gone stack's claims count for nothing)."""
        if not self.live:
            return model.Standing.GONE
        return model.standing(claim, self.epochs, self.phase)

    def declares(self, claim: model.Claim) -> bool:
        return self.standing(claim) is not model.Standing.GONE

    def path(self, logical_id: str) -> str:
        """The construct path the resource recorded, else its logical id."""
        record = self.resources.get(logical_id)
        return record.path if record is not None and record.path else logical_id


@dataclass
class Store:
    """One state table, read with the handler's :class:`~appstream_handler.store.StateStore` (Query only)."""

    aws: Aws
    table: str
    region: str | None
    _views: dict[str, StackView] = field(default_factory=dict)
    _records: dict[str, dict[model.Association, model.AssociationRecord]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._store = store.StateStore(self.aws.dynamodb(self.region), self.table)

    def stack_state(self, stack_id: str) -> store.StackState:
        """The stack's record and its resources' records."""
        try:
            return self._store.load_stack(stack_id)
        except store.StoreError as error:
            raise CliError(f"state table {self.table}: {error.label}: {error.message}") from None

    def view(self, stack_id: str) -> StackView:
        """A stack's records, with its CloudFormation status (one Query and one DescribeStacks, cached)."""
        if stack_id not in self._views:
            state = self.stack_state(stack_id)
            summary = self.aws.stack(stack_id, region_of(stack_id) or self.region)
            status = summary.status if summary is not None else ""
            self._views[stack_id] = StackView(stack_id, status, state.stack.epochs, dict(state.resources))
        return self._views[stack_id]

    def records(self, stack_names: Iterable[str]) -> dict[model.Association, model.AssociationRecord]:
        """Every association record of the given AppStream stacks (one Query per stack, cached)."""
        found: dict[model.Association, model.AssociationRecord] = {}
        for name in sorted(set(stack_names)):
            if name not in self._records:
                try:
                    self._records[name] = self._store.load_associations([name])
                except store.StoreError as error:
                    raise CliError(f"state table {self.table}: {error.label}: {error.message}") from None
            found.update(self._records[name])
        return found

    def claimant_view(self, key: str) -> StackView:
        """The view of the stack a claim key belongs to."""
        return self.view(model.Claimant.from_key(key).stack_id)

    def declaring(self, record: model.AssociationRecord) -> list[str]:
        """Keys of the claims on ``record`` that declare it now, each read with its own stack's view."""
        return [key for key, claim in record.claims.items() if self.claimant_view(key).declares(claim)]


def applied(change: decide.Change) -> model.AssociationRecord:
    """The record as the state write of ``change`` leaves it (``store.change_action``'s effect)."""
    record = change.record
    claims = dict(record.claims)
    if change.claim is None:
        claims.pop(change.claimant.key, None)
    else:
        claims[change.claimant.key] = change.claim
    existed, adopted = record.existed, record.adopted
    if change.last:
        existed = adopted = False
    if change.existed is not None:
        existed = change.existed
    if change.adopted:
        adopted = True
    return replace(record, claims=claims, existed=existed, adopted=adopted, version=record.version + 1)


# -- where a stack's table is -----------------------------------------------------------------------


@dataclass(frozen=True)
class TableLocation:
    """Where a stack's state store is."""

    name: str | None
    """None: the table does not exist yet (the next deployment creates it)."""
    region: str | None
    source: str
    """How it was found, for the output."""


def own_table(resources: Mapping[str, StackResource]) -> str | None:
    """The physical name of the provider's own table among a deployed stack's resources."""
    tables = [
        item
        for item in resources.values()
        if item.resource_type == TABLE_TYPE and item.logical_id.startswith(STATE_TABLE_PREFIX) and item.physical_id
    ]
    return tables[0].physical_id if len(tables) == 1 else None


def locate_deployed_table(aws: Aws, stack: StackSummary, region: str | None, given: str | None) -> TableLocation:
    """The table of a deployed stack known by name only: ``--table``, else its own table."""
    if given:
        return TableLocation(given, region, "--table")
    resources = aws.resources(stack, region)
    found = own_table(resources)
    if found:
        return TableLocation(found, region, "the stack's own table")
    if not any(item.resource_type == "Custom::AppStreamUserStackAssociation" for item in resources.values()):
        raise CliError(f"stack {stack.stack_name} declares no AppStream associations (no {TABLE_TYPE} of the provider)")
    raise CliError(
        f"stack {stack.stack_name} has no state table of its own (it shares another stack's): "
        "pass --table NAME, or --app with the cdk.out that declares it"
    )


def locate_table(
    aws: Aws,
    artifact: StackArtifact,
    everything: Sequence[StackArtifact],
    deployed: StackSummary | None,
    region: str | None,
    given: str | None,
) -> TableLocation:
    """The table of a stack of the assembly, from its function's ``STATE_TABLE`` (or ``--table``)."""
    if given:
        return TableLocation(given, region, "--table")
    reference = artifact.state_table_reference()
    if reference is None:
        raise CliError(
            f"stack {artifact.display_name}: no STATE_TABLE in the associations' function: pass --table NAME"
        )
    resources = artifact.resources()
    if isinstance(reference, str):
        return TableLocation(reference, region, "named in the template")
    if isinstance(reference, Mapping) and set(reference) == {"Ref"} and reference["Ref"] in resources:
        logical_id = str(reference["Ref"])
        if deployed is not None:
            found = aws.resources(deployed, region).get(logical_id)
            if found is not None and found.physical_id:
                return TableLocation(found.physical_id, region, "the stack's own table")
        return TableLocation(None, region, "the stack's own table, created by this deployment")
    if isinstance(reference, Mapping) and set(reference) == {"Fn::ImportValue"}:
        export = reference["Fn::ImportValue"]
        exporter = exported_by(everything, export) if isinstance(export, str) else None
        if exporter is None:
            raise CliError(
                f"stack {artifact.display_name} imports its state table ({describe(export)}) from a stack "
                "outside this assembly: pass --table NAME"
            )
        producer, value = exporter
        producer_region = producer.region or region
        producer_deployed = aws.stack(producer.stack_name, producer_region)
        if isinstance(value, Mapping) and set(value) == {"Ref"}:
            if producer_deployed is not None:
                found = aws.resources(producer_deployed, producer_region).get(str(value["Ref"]))
                if found is not None and found.physical_id:
                    return TableLocation(
                        found.physical_id, producer_region, f"shared, from stack {producer.stack_name}"
                    )
            return TableLocation(
                None, producer_region, f"shared, created by stack {producer.stack_name} (not deployed)"
            )
        raise CliError(
            f"stack {producer.display_name} exports the state table in a form not read here: pass --table NAME"
        )
    resolver = Resolver(
        artifact.template,
        artifact.stack_name,
        region=region,
        account=artifact.account,
        stack_id=deployed.stack_id if deployed else None,
        parameters=deployed.parameters if deployed else {},
    )
    try:
        value = resolver.resolve(reference)
    except Unresolved as error:
        raise CliError(
            f"stack {artifact.display_name}: the state table ({error.what}) cannot be resolved here: pass --table NAME"
        ) from None
    if not isinstance(value, str) or not value:
        raise CliError(f"stack {artifact.display_name}: STATE_TABLE is not a table name: pass --table NAME")
    return TableLocation(value, region, "resolved from the template")


def parse_declared(resolved: Mapping[str, object]) -> properties.DesiredState:
    """Parse resolved properties exactly as the handler will receive them (scalars as strings)."""
    return properties.parse_properties({key: _stringify(value) for key, value in resolved.items()})


def _stringify(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return [_stringify(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _stringify(item) for key, item in value.items()}
    return value
