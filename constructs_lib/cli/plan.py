"""``plan``: what the next deployment of a synthesized app would do to AppStream.

For each stack of the assembly, the deployment is played the way the handler will run it, with
the handler's own decision function (:func:`appstream_handler.decide.plan`) over the state
store's records and AppStream's associations as they are now, in CloudFormation's order:

1. the deployment marker starts a new epoch, first settling what an interrupted earlier
   deployment left (``SETTLE_ROLLBACK`` / ``SETTLE_REMOVALS``, as ``deployment.py`` does);
2. every association resource CloudFormation creates or updates: ``DECLARE`` in a forward phase;
3. in the cleanup phase, every resource the store knows that the template no longer declares:
   ``DROP`` in the commit phase; then the marker's commit carries out the epoch's removals
   (``SETTLE_REMOVALS``).

A resource whose declared users equal what the store says it claims gets no event from
CloudFormation (unless a property the store does not record changed); a stack none of whose
resources changed gets no event at all. Nothing is written: the changes are applied to a copy
of the records in memory (:func:`constructs_lib.cli.state.applied`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from constructs_lib.cli import output
from constructs_lib.cli.assembly import (
    DEPLOYMENT_RESOURCE_TYPE,
    RESOURCE_TYPE,
    Resolver,
    StackArtifact,
    Unresolved,
    exported_by,
)
from constructs_lib.cli.aws import Aws, CliError, StackSummary, stack_name_of
from constructs_lib.cli.state import (
    Claimant,
    EpochInfo,
    Phase,
    StackView,
    Standing,
    Store,
    TableLocation,
    applied,
    decide,
    locate_table,
    model,
    parse_declared,
    properties,
)

# Action kinds, in the order they are shown, with the label and what they mean.
KINDS: Mapping[str, tuple[str, str]] = {
    "associate": ("associate", ""),
    "restore": ("re-associate", "declared, but removed outside CloudFormation"),
    "adopt": ("adopt", "already associated: managed from this deployment on"),
    "keep": ("keep", "already associated: never removed (ExistingAssociations keep)"),
    "shared": ("already there", "also declared by"),
    "disassociate": ("disassociate", ""),
    "stays": ("stays", "still declared by"),
    "account": ("stays", "it was associated before it was declared, and was not adopted"),
    "absent": ("already gone", "no longer associated"),
}
HANDLER_PROPERTIES = frozenset(
    {
        "StackName",
        "UserNames",
        "AuthenticationType",
        "SendEmailNotification",
        "MaxConcurrency",
        "ExistingAssociations",
        "ConstructPath",
    }
)
"""The properties the handler reads (``properties.parse_properties``); ServiceToken and ServiceTimeout are not."""
STAGES: Mapping[str, str] = {
    "deploy": "now",
    "leftover": "leftover",
    "cleanup": "cleanup",
    "commit": "cleanup",
}
"""When, in the deployment: while its resource is created or updated; before that, settling what an
earlier deployment left (a rollback's or an interrupted cleanup's); in the cleanup phase, once every
resource has succeeded."""


@dataclass
class Action:
    """What the deployment does to one association, for one resource."""

    kind: str
    association: model.Association
    stage: str
    owner: str
    """Logical id of the resource whose claim it is."""
    email: bool = False
    others: tuple[str, ...] = ()
    """Who else declares it (for ``stays`` and ``shared``), as shown."""


@dataclass
class ResourcePlan:
    """One association resource of the template, or one the template no longer has."""

    logical_id: str
    path: str
    event: str
    """``create``, ``update``, ``none`` (CloudFormation sends no event), ``delete``, ``unresolved``."""
    appstream_stack: str = ""
    authentication_type: str = ""
    send_email: bool = False
    declared: int = 0
    actions: list[Action] = field(default_factory=list)
    unchanged: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class StackPlan:
    """The plan of one CloudFormation stack."""

    artifact: StackArtifact
    region: str | None
    deployed: StackSummary | None
    table: TableLocation | None
    resources: list[ResourcePlan] = field(default_factory=list)
    epoch: tuple[int, int] | None = None
    changes: bool = False
    notes: list[str] = field(default_factory=list)
    fails: str = ""


class _Simulation:
    """The store's records and AppStream's associations, changed in memory as the deployment would."""

    def __init__(
        self,
        stack_id: str,
        records: Mapping[model.Association, model.AssociationRecord],
        present: frozenset[model.Association],
        store: Store | None,
        paths: Mapping[str, str],
    ) -> None:
        self.stack_id = stack_id
        self.records: dict[model.Association, model.AssociationRecord] = dict(records)
        self.present: set[model.Association] = set(present)
        self.store = store
        self.paths = paths
        """Construct paths of this stack's resources, by logical id."""

    def run(self, changes: Sequence[decide.Change], context: decide.Context, stage: str, email: bool) -> list[Action]:
        actions = []
        for change in changes:
            action = self._classify(change, context, stage, email)
            if action is not None:
                actions.append(action)
            self.records[change.association] = applied(change)
            if change.call is decide.Call.ASSOCIATE:
                self.present.add(change.association)
            elif change.call is decide.Call.DISASSOCIATE:
                self.present.discard(change.association)
        return actions

    def _classify(self, change: decide.Change, context: decide.Context, stage: str, email: bool) -> Action | None:
        association = change.association
        before = change.before
        if before is not None and model.standing(before, context.epochs, context.phase) is Standing.GONE:
            before = None
        owner = change.claimant.logical_id
        if change.call is decide.Call.ASSOCIATE:
            kind = "restore" if before is not None else "associate"
            return Action(kind, association, stage, owner, email=email and context.kind is decide.Kind.DECLARE)
        if change.call is decide.Call.DISASSOCIATE:
            return Action("disassociate", association, stage, owner)
        if change.claim is not None and before is None:
            if change.existed:
                return Action("keep" if change.claim.keep_existing else "adopt", association, stage, owner)
            return Action("shared", association, stage, owner, others=self._others(change, context))
        if change.claim is None and change.before is not None:
            others = self._others(change, context)
            if others:
                return Action("stays", association, stage, owner, others=others)
            kind = "absent" if association not in self.present else "account"
            return Action(kind, association, stage, owner)
        return None

    def _others(self, change: decide.Change, context: decide.Context) -> tuple[str, ...]:
        keys = model.declared_by_others(change.record, change.claimant, epochs=context.epochs, phase=context.phase)
        return tuple(sorted(self._who(key) for key in keys))

    def _who(self, key: str) -> str:
        claimant = model.Claimant.from_key(key)
        if claimant.stack_id == self.stack_id:
            return self.paths.get(claimant.logical_id) or f"{claimant.logical_id} of this stack"
        path = claimant.logical_id
        if self.store is not None:
            path = self.store.view(claimant.stack_id).path(claimant.logical_id)
        return f"stack {stack_name_of(claimant.stack_id)} ({path})"


def _parameters(artifact: StackArtifact, deployed: StackSummary | None, given: Mapping[str, str]) -> dict[str, str]:
    """Parameter values of the deployment: given, else the deployed stack's (as cdk deploy keeps them)."""
    values = dict(deployed.parameters) if deployed is not None else {}
    for key, value in given.items():
        stack, _, name = key.rpartition(":")
        if not stack or stack in (artifact.stack_name, artifact.display_name, artifact.artifact_id):
            values[name] = value
    return values


def plan_stack(
    aws: Aws,
    artifact: StackArtifact,
    everything: Sequence[StackArtifact],
    *,
    table: str | None,
    parameters: Mapping[str, str],
) -> StackPlan | None:
    """The plan of one stack of the assembly (None when it declares no associations)."""
    declared_resources = artifact.associations()
    region = artifact.region or aws.default_region
    deployed = aws.stack(artifact.stack_name, region)
    if not declared_resources and deployed is None:
        return None
    result = StackPlan(artifact, region, deployed, None)
    deployed_resources = aws.resources(deployed, region) if deployed is not None else {}
    if not declared_resources and not any(r.resource_type == RESOURCE_TYPE for r in deployed_resources.values()):
        return None
    location = locate_table(aws, artifact, everything, deployed, region, table) if declared_resources else None
    if location is None and deployed is not None:
        from constructs_lib.cli.state import locate_deployed_table  # noqa: PLC0415

        location = locate_deployed_table(aws, deployed, region, table)
    result.table = location
    store = Store(aws, location.name, location.region) if location is not None and location.name else None
    stack_id = deployed.stack_id if deployed is not None else _placeholder_id(artifact, region)
    resolver = Resolver(
        artifact.template,
        artifact.stack_name,
        region=region,
        account=artifact.account,
        stack_id=deployed.stack_id if deployed is not None else None,
        parameters=_parameters(artifact, deployed, parameters),
        physical_id=lambda logical_id: (
            deployed_resources[logical_id].physical_id if logical_id in deployed_resources else None
        ),
        imported=lambda name: _imported(aws, everything, name, region),
    )

    # What the template declares, resolved and parsed as the handler will parse it.
    wanted: dict[str, tuple[ResourcePlan, properties.DesiredState | None]] = {}
    for resource in declared_resources:
        item = ResourcePlan(resource.logical_id, resource.path, "create")
        desired = None
        try:
            if resource.condition:
                raise Unresolved(f"the resource has Condition {resource.condition}, not evaluated here")
            values = {
                key: resolver.resolve(value) for key, value in resource.properties.items() if key in HANDLER_PROPERTIES
            }
            desired = parse_declared(values)
        except Unresolved as error:
            item.event = "unresolved"
            item.notes.append(f"cannot be planned: {error.what}")
        except properties.MalformedProperties as error:
            result.fails = f"{resource.path or resource.logical_id}: {error}"
        if desired is not None:
            item.appstream_stack = desired.stack_name
            item.authentication_type = desired.authentication_type
            item.send_email = desired.send_email_notification
            item.declared = len(desired.associations)
        wanted[resource.logical_id] = (item, desired)
    if result.fails:
        result.notes.append("the handler will fail this resource's event and CloudFormation will roll back")
        result.resources = [item for item, _ in wanted.values()]
        return result

    state_view: StackView | None = None
    if store is not None and deployed is not None:
        state_view = store.view(deployed.stack_id)
    recorded: Mapping[str, model.ResourceRecord] = state_view.resources if state_view is not None else {}
    names = {desired.stack_name for _, desired in wanted.values() if desired is not None}
    for record in recorded.values():
        names |= set(record.appstream_stacks)
    records = store.records(names) if store is not None else {}
    present = frozenset(model.Association(*item) for name in sorted(names) for item in aws.associations(name, region))
    epochs = state_view.epochs if state_view is not None else EpochInfo()
    view_phase = state_view.phase if state_view is not None else Phase.UNKNOWN
    if deployed is not None and deployed.status not in _SETTLED_OR_NEW:
        result.notes.append(f"the stack is {deployed.status}: planned against its records as they are now")

    # Which resources CloudFormation will send an event to.
    changed = False
    for logical_id, (item, desired) in wanted.items():
        if desired is None:
            continue
        claimant = Claimant(stack_id, logical_id)
        exists = deployed is not None and logical_id in deployed_resources
        if not exists:
            item.event = "create"
            changed = True
            continue
        if logical_id not in recorded:
            item.event = "update"
            item.notes.append("deployed before the state store recorded it: what it declared before is not known here")
            changed = True
            continue
        claimed = {
            association
            for association, record in records.items()
            if (claim := record.claim_of(claimant)) is not None
            and claim.state in (model.ADDED, model.HELD)
            and model.standing(claim, epochs, view_phase) is not Standing.GONE
        }
        keeps = {claim.keep_existing for record in records.values() if (claim := record.claim_of(claimant)) is not None}
        if claimed == set(desired.associations) and keeps <= {desired.keep_existing}:
            item.event = "none"
            missing = [a for a in desired.associations if a not in present]
            if missing:
                item.notes.append(
                    f"{output.count(len(missing), 'declared association')} missing in AppStream (removed by hand) "
                    "stay missing: CloudFormation sends this resource no event unless one of its properties "
                    "changes; see `drift`"
                )
            item.unchanged = len(desired.associations) - len(missing)
        else:
            item.event = "update"
            changed = True

    removed: dict[str, ResourcePlan] = {}
    claimants = {
        model.Claimant.from_key(key).logical_id
        for record in records.values()
        for key in record.claims
        if model.Claimant.from_key(key).stack_id == stack_id
    }
    for logical_id in sorted(claimants | set(recorded)):
        if logical_id in wanted:
            continue
        deployed_resource = deployed_resources.get(logical_id)
        if deployed_resource is not None and deployed_resource.resource_type == DEPLOYMENT_RESOURCE_TYPE:
            continue
        claims = [r for r in records.values() if r.claim_of(Claimant(stack_id, logical_id)) is not None]
        if not claims:
            continue
        path = state_view.path(logical_id) if state_view is not None else logical_id
        removed[logical_id] = ResourcePlan(logical_id, path, "delete")
        changed = True
    result.changes = changed
    result.resources = [item for item, _ in wanted.values()] + list(removed.values())
    if not changed:
        return result

    paths = {logical_id: record.path for logical_id, record in recorded.items() if record.path}
    paths.update({item.logical_id: item.path for item in result.resources if item.path})
    simulation = _Simulation(stack_id, records, present, store, paths)
    marker = next(
        (lid for lid, r in artifact.resources().items() if (r or {}).get("Type") == DEPLOYMENT_RESOURCE_TYPE),
        "Deployment",
    )
    marker_claimant = Claimant(stack_id, marker)
    by_id = {item.logical_id: item for item in result.resources}

    def attribute(actions: list[Action]) -> None:
        for action in actions:
            target = by_id.get(action.owner)
            if target is None:
                path = state_view.path(action.owner) if state_view is not None else action.owner
                target = ResourcePlan(action.owner, path, "delete")
                by_id[action.owner] = target
                result.resources.append(target)
            target.actions.append(action)

    # 1. The marker begins a new epoch, settling an interrupted earlier one first.
    previous = epochs.current
    if previous and deployed is not None:
        if previous in epochs.rolled_back:
            attribute(
                _settle(
                    simulation,
                    marker_claimant,
                    decide.Kind.SETTLE_ROLLBACK,
                    epochs,
                    Phase.ROLLBACK,
                    previous,
                    stage="leftover",
                )
            )
        elif epochs.committed < previous:
            settled = EpochInfo(previous, previous, epochs.rolled_back)
            attribute(
                _settle(
                    simulation,
                    marker_claimant,
                    decide.Kind.SETTLE_REMOVALS,
                    settled,
                    Phase.COMMIT,
                    previous,
                    stage="leftover",
                )
            )
    committed = previous if previous not in epochs.rolled_back else epochs.committed
    epoch = previous + 1
    running = EpochInfo(epoch, max(committed, epochs.committed), epochs.rolled_back)
    result.epoch = (previous, epoch)

    # 2. Creates and Updates of the association resources (forward phase).
    for logical_id, (item, desired) in wanted.items():
        if desired is None or item.event not in ("create", "update"):
            continue
        claimant = Claimant(stack_id, logical_id)
        context = decide.Context(
            claimant=claimant,
            kind=decide.Kind.DECLARE,
            phase=Phase.FORWARD,
            epochs=running,
            epoch=epoch,
            present=frozenset(simulation.present),
            declared=frozenset(desired.associations),
            keep_existing=desired.keep_existing,
        )
        mine = {
            a: r for a, r in simulation.records.items() if r.claim_of(claimant) is not None or a in desired.associations
        }
        changes = decide.plan(mine, context)
        actions = simulation.run(changes, context, "deploy", desired.send_email_notification)
        item.actions.extend(actions)
        touched = {action.association for action in actions}
        item.unchanged = sum(1 for a in desired.associations if a not in touched and a in simulation.present)

    if deployed is None:
        return result  # a stack's creation has no cleanup phase

    # 3. Cleanup: the resources the template no longer has are deleted, then the marker commits.
    for logical_id, item in removed.items():
        claimant = Claimant(stack_id, logical_id)
        context = decide.Context(
            claimant=claimant,
            kind=decide.Kind.DROP,
            phase=Phase.COMMIT,
            epochs=running,
            epoch=epoch,
            present=frozenset(simulation.present),
        )
        mine = {a: r for a, r in simulation.records.items() if r.claim_of(claimant) is not None}
        item.actions.extend(simulation.run(decide.plan(mine, context), context, "cleanup", False))
    attribute(
        _settle(simulation, marker_claimant, decide.Kind.SETTLE_REMOVALS, running, Phase.COMMIT, epoch, stage="commit")
    )
    return result


_SETTLED_OR_NEW = frozenset(
    {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
)


def _settle(
    simulation: _Simulation,
    claimant: model.Claimant,
    kind: decide.Kind,
    epochs: model.EpochInfo,
    phase: model.Phase,
    epoch: int,
    *,
    stage: str,
) -> list[Action]:
    """SETTLE_* of ``epoch`` over the stack's claims, in passes, as ``deployment._settle`` runs it."""
    actions: list[Action] = []
    for _ in range(5):
        mine = {
            association: record
            for association, record in simulation.records.items()
            if any(
                model.Claimant.from_key(key).stack_id == simulation.stack_id
                and claim.epoch == epoch
                and claim.state in (model.ADDED, model.REMOVING)
                for key, claim in record.claims.items()
            )
        }
        context = decide.Context(
            claimant=claimant,
            kind=kind,
            phase=phase,
            epochs=epochs,
            epoch=epoch,
            present=frozenset(simulation.present),
            settle_epoch=epoch,
        )
        changes = decide.plan(mine, context)
        if not changes:
            break
        actions += simulation.run(changes, context, stage, False)
    return actions


def _placeholder_id(artifact: StackArtifact, region: str | None) -> str:
    return f"arn:aws:cloudformation:{region or '-'}:{artifact.account or '-'}:stack/{artifact.stack_name}/not-deployed"


def _imported(aws: Aws, everything: Sequence[StackArtifact], export: str, region: str | None) -> str | None:
    """The value of another stack's export, when that stack is in the assembly and deployed."""
    found = exported_by(everything, export)
    if found is None:
        return None
    producer, value = found
    producer_region = producer.region or region
    summary = aws.stack(producer.stack_name, producer_region)
    if summary is None:
        return None
    resources = aws.resources(summary, producer_region)
    resolver = Resolver(
        producer.template,
        producer.stack_name,
        region=producer_region,
        account=producer.account,
        stack_id=summary.stack_id,
        parameters=summary.parameters,
        physical_id=lambda logical_id: resources[logical_id].physical_id if logical_id in resources else None,
    )
    try:
        resolved = resolver.resolve(value)
    except Unresolved:
        return None
    return str(resolved) if isinstance(resolved, str | int | float) else None


# -- output ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Actions of one kind, stage and "who else", for one resource."""

    kind: str
    stage: str
    others: tuple[str, ...]
    users: tuple[str, ...]
    email: bool


def groups(item: ResourcePlan) -> list[Group]:
    """The resource's actions grouped for display, in :data:`KINDS` order."""
    buckets: dict[tuple[str, str, tuple[str, ...], bool], list[str]] = {}
    for action in item.actions:
        key = (action.kind, action.stage, action.others, action.email)
        buckets.setdefault(key, []).append(action.association.user_name)
    order = list(KINDS)
    stages = list(STAGES)
    ordered = sorted(buckets.items(), key=lambda pair: (order.index(pair[0][0]), stages.index(pair[0][1]), pair[0][2]))
    return [Group(kind, stage, others, tuple(sorted(users)), email) for (kind, stage, others, email), users in ordered]


def totals(plans: Sequence[StackPlan]) -> dict[str, int]:
    """Counts of every kind over every plan, and the e-mails."""
    found = dict.fromkeys(KINDS, 0)
    found["emails"] = 0
    for stack in plans:
        for item in stack.resources:
            for action in item.actions:
                found[action.kind] += 1
                found["emails"] += int(action.email)
    return found


EVENTS = {
    "create": "created",
    "update": "updated",
    "none": "no change",
    "delete": "removed from the template: deleted in the cleanup",
    "unresolved": "cannot be planned",
}


def render_text(plans: Sequence[StackPlan], printer: output.Printer, *, show_users: bool, full: bool) -> None:
    """The plan for a person."""
    style = printer.style
    width = output.terminal_width()
    if not plans:
        printer.line("No stack of the assembly declares AppStream associations.")
        return
    for stack in plans:
        header = f"Stack {stack.artifact.stack_name}"
        if stack.artifact.display_name != stack.artifact.stack_name:
            header += f" ({stack.artifact.display_name})"
        facts = [
            f"deployed ({stack.deployed.status})"
            if stack.deployed
            else "not deployed yet: each of its claims is a first claim"
        ]
        if stack.table is not None:
            where = stack.table.name or "new"
            facts.append(f"state table {where} ({stack.table.source})")
        printer.line(style(header, "bold") + style(output.fit(" — " + "; ".join(facts), width - len(header)), "dim"))
        for note in stack.notes:
            printer.para(f"  note: {note}", "yellow")
        if stack.fails:
            printer.line(style(f"  this deployment fails: {stack.fails}", "red"))
            continue
        if not stack.changes:
            printer.line("  no change: CloudFormation sends the associations no event")
        for item in stack.resources:
            target = f" → {item.appstream_stack} ({item.authentication_type})" if item.appstream_stack else ""
            event = EVENTS.get(item.event, item.event)
            suffix = f"{target}: {event}"
            name = output.fit_middle(item.path or item.logical_id, max(12, width - 2 - len(suffix)))
            printer.line(f"  {style(name, 'cyan')}{suffix}")
            rows: list[list[str]] = []
            for group in groups(item):
                label, meaning = KINDS[group.kind]
                detail = meaning
                if group.others:
                    detail += " " + ", ".join(group.others)
                if group.kind in ("associate", "restore"):
                    detail = "; ".join(part for part in (detail, "e-mail" if group.email else "no e-mail") if part)
                colour = {"associate": "green", "restore": "green", "disassociate": "red"}.get(group.kind, "")
                shown = output.names(group.users, full=full) if show_users else ""
                rows.append([label, str(len(group.users)), STAGES[group.stage], detail, colour, shown])
            if item.unchanged:
                rows.append(["unchanged", str(item.unchanged), "", "declared and associated", "", ""])
            for line in _rows(rows, width, style):
                printer.line(line)
            for note in item.notes:
                printer.para(f"    note: {note}", "yellow")
    summary = totals(plans)
    parts = [
        f"{summary['associate'] + summary['restore']} to associate ({output.count(summary['emails'], 'e-mail')})",
        f"{summary['disassociate']} to disassociate",
        f"{summary['adopt'] + summary['keep']} to adopt",
        f"{summary['stays']} kept by other claims",
    ]
    printer.para("Plan: " + ", ".join(parts) + ".")
    stages = {action.stage for stack in plans for item in stack.resources for action in item.actions}
    if stages & {"cleanup", "commit"}:
        printer.para("cleanup: once every resource of the deployment has succeeded; removals wait until then.", "dim")
    if "leftover" in stages:
        printer.para(
            "leftover: first, the deployment settles what an earlier one left (after a rollback or a cut cleanup).",
            "dim",
        )
    if not show_users and any(item.actions for stack in plans for item in stack.resources):
        printer.para("User names are hidden: --show-users shows the first ones, with --full all.", "dim")


def _rows(rows: list[list[str]], width: int, style: output.Style) -> list[str]:
    """Indented rows: label, count, when, detail (cut to the width)."""
    if not rows:
        return []
    label_width = max(len(row[0]) for row in rows)
    count_width = max(len(row[1]) for row in rows)
    when_width = max(len(row[2]) for row in rows)
    lines = []
    for label, number, when, detail, colour, shown in rows:
        prefix = f"    {label.ljust(label_width)}  {number.rjust(count_width)}  {when.ljust(when_width)}  "
        room = max(10, width - len(prefix))
        text = prefix + output.fit(detail, room)
        if colour:
            text = text.replace(label, style(label, colour), 1)
        lines.append(text.rstrip())
        lines += output.wrapped(shown, width, indent=" " * 6)
    return lines


def render_json(plans: Sequence[StackPlan], *, show_users: bool) -> dict[str, Any]:
    """The plan as a JSON document (user names only with ``show_users``)."""
    stacks = []
    for stack in plans:
        resources = []
        for item in stack.resources:
            actions = []
            for group in groups(item):
                entry: dict[str, Any] = {
                    "action": group.kind,
                    "stage": group.stage,
                    "count": len(group.users),
                }
                if group.kind in ("associate", "restore"):
                    entry["email"] = group.email
                if group.others:
                    entry["declared_by"] = list(group.others)
                if show_users:
                    entry["users"] = list(group.users)
                actions.append(entry)
            resources.append(
                {
                    "logical_id": item.logical_id,
                    "construct_path": item.path,
                    "event": item.event,
                    "appstream_stack": item.appstream_stack or None,
                    "authentication_type": item.authentication_type or None,
                    "send_email_notification": item.send_email,
                    "unchanged": item.unchanged,
                    "actions": actions,
                    "notes": item.notes,
                }
            )
        stacks.append(
            {
                "stack": stack.artifact.stack_name,
                "display_name": stack.artifact.display_name,
                "region": stack.region,
                "deployed": stack.deployed is not None,
                "status": stack.deployed.status if stack.deployed else None,
                "state_table": (
                    {"name": stack.table.name, "source": stack.table.source} if stack.table is not None else None
                ),
                "epoch": {"from": stack.epoch[0], "to": stack.epoch[1]} if stack.epoch else None,
                "changes": stack.changes,
                "fails": stack.fails or None,
                "resources": resources,
                "notes": stack.notes,
            }
        )
    return {"command": "plan", "stacks": stacks, "totals": totals(plans)}


def run_plan(
    aws: Aws,
    stacks: Sequence[StackArtifact],
    everything: Sequence[StackArtifact],
    *,
    table: str | None,
    parameters: Mapping[str, str],
) -> list[StackPlan]:
    """The plans of the selected stacks (stacks without associations left out)."""
    plans = []
    for artifact in stacks:
        found = plan_stack(aws, artifact, everything, table=table, parameters=parameters)
        if found is not None:
            plans.append(found)
    return plans


__all__ = ["CliError", "StackPlan", "render_json", "render_text", "run_plan"]
