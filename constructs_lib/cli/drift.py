"""``drift``: where AppStream no longer holds what the deployed stacks declare.

CloudFormation cannot detect drift of a custom resource (``NOT_CHECKED``). The state store knows
what each deployed resource declares (its claims, read with the stack's epochs: after a
deployment ended, additions count and removals are gone, unless it rolled back), so on every
AppStream stack those resources manage:

* ``missing``: declared, but not associated in AppStream (removed by hand);
* ``undeclared``: associated, but declared by nobody (granted by hand, or left behind);
* ``auth-type``: a declared user is associated with another authentication type instead.

Claims of every stack that shares the table count, each read with its own stack's status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from constructs_lib.cli import output
from constructs_lib.cli.assembly import RESOURCE_TYPE
from constructs_lib.cli.aws import Aws, stack_name_of
from constructs_lib.cli.state import Association, Store, model
from constructs_lib.cli.targets import Selection

KINDS = {
    "missing": ("missing in AppStream", "declared by {who}"),
    "auth-type": ("other auth type", "associated as {present}, declared as {declared} by {who}"),
    "undeclared": ("not declared", "associated, declared by no stack"),
}
LEGEND = (
    "missing: removed outside CloudFormation (the next update of its resource puts it back); "
    "not declared: granted outside CloudFormation, or left behind; "
    "other auth type: the same user name, associated with another authentication type."
)


@dataclass(frozen=True)
class Finding:
    """One association that differs from what is declared."""

    kind: str
    association: model.Association
    """The declared one (missing, auth-type) or the present one (undeclared)."""
    declared_by: tuple[str, ...] = ()
    present_auth: str = ""
    note: str = ""


@dataclass
class Checked:
    """What one state table's check covered."""

    table: str
    stacks: list[str]
    appstream_stacks: list[str]
    declared: int = 0
    present: int = 0
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _who(store: Store, key: str) -> str:
    """The construct path of a claim's resource, else its stack and logical id."""
    claimant = model.Claimant.from_key(key)
    path = store.view(claimant.stack_id).path(claimant.logical_id)
    return path if path != claimant.logical_id else f"{stack_name_of(claimant.stack_id)} {claimant.logical_id}"


def check(aws: Aws, selection: Selection) -> list[Checked]:
    """Drift of every selected stack, one result per state table."""
    results = []
    for store, targets in selection.stores(aws):
        region = store.region
        names: set[str] = set()
        result = Checked(store.table, [t.summary.stack_name for t in targets], [])
        for target in targets:
            view = store.view(target.summary.stack_id)
            if view.phase not in (model.Phase.COMMIT,):
                result.notes.append(
                    f"stack {target.summary.stack_name} is {target.summary.status}: what it declares may be changing"
                )
            unknown = sorted(
                item.logical_id
                for item in aws.resources(target.summary, target.region).values()
                if item.resource_type == RESOURCE_TYPE and item.logical_id not in view.resources
            )
            if unknown:
                result.notes.append(
                    f"stack {target.summary.stack_name}: {output.count(len(unknown), 'association resource')} "
                    f"({', '.join(unknown[:3])}{' …' if len(unknown) > 3 else ''}) not in the state store "
                    "(deployed before it existed?): what they declare is not checked until their next update"
                )
            for resource in view.resources.values():
                names |= set(resource.appstream_stacks)
        result.appstream_stacks = sorted(names)
        records = store.records(names)
        present: set[model.Association] = set()
        for name in sorted(names):
            present |= {model.Association(*item) for item in aws.associations(name, region)}
        declared: dict[model.Association, list[str]] = {}
        for association, record in records.items():
            keys = store.declaring(record)
            if keys:
                declared[association] = keys
        result.declared, result.present = len(declared), len(present)
        explained: set[model.Association] = set()
        for association in sorted(declared):
            who = tuple(sorted(_who(store, key) for key in declared[association]))
            if association in present:
                continue
            others = sorted(
                item for item in present if item[:2] == association[:2] and item not in declared and item != association
            )
            if others:
                for other in others:
                    explained.add(other)
                    result.findings.append(Finding("auth-type", association, who, other.authentication_type))
            else:
                result.findings.append(Finding("missing", association, who))
        for association in sorted(present - set(declared) - explained):
            note = ""
            found = records.get(association)
            if found is not None and found.withdrawing:
                note = "being removed by a deployment now"
            elif found is not None and any(claim.state == model.REMOVING for claim in found.claims.values()):
                note = "its removal is pending (a deployment's cleanup did not finish: deploy again)"
            elif found is not None and any(
                claim.state == model.ADDED and store.claimant_view(key).epochs.rolled_back_epoch(claim.epoch)
                for key, claim in found.claims.items()
            ):
                note = "left by a rolled-back deployment: the next deployment of its stack removes it"
            result.findings.append(Finding("undeclared", association, (), note=note))
        results.append(result)
    return results


def render_text(
    results: Sequence[Checked], selection: Selection, printer: output.Printer, *, show_users: bool, full: bool
) -> None:
    """Drift for a person: counts per AppStream stack and kind; names with ``show_users``."""
    style = printer.style
    width = output.terminal_width()
    for name in selection.skipped:
        printer.para(f"note: stack {name} is not deployed: not checked", "dim")
    total = sum(len(result.findings) for result in results)
    for result in results:
        for note in result.notes:
            printer.para(f"note: {note}", "yellow")
        groups: dict[tuple[str, str, str, tuple[str, ...], str, str], list[str]] = {}
        for finding in result.findings:
            association = finding.association
            key = (
                association.stack_name,
                finding.kind,
                association.authentication_type,
                finding.declared_by,
                finding.present_auth,
                finding.note,
            )
            groups.setdefault(key, []).append(association.user_name)
        by_stack: dict[str, list[tuple[tuple[str, str, str, tuple[str, ...], str, str], list[str]]]] = {}
        for key, users in groups.items():
            by_stack.setdefault(key[0], []).append((key, users))
        header = (
            f"State table {result.table} (stacks {', '.join(result.stacks)}): "
            f"{output.count(len(result.appstream_stacks), 'AppStream stack')}, "
            f"{output.count(result.declared, 'declared association')}, {result.present} in AppStream"
        )
        printer.para(header, "bold")
        if not result.findings:
            printer.line(style("  no drift", "green"))
            continue
        order = list(KINDS)
        for stack_name in sorted(by_stack):
            printer.line(f"  AppStream stack {style(stack_name, 'cyan')}")
            entries = sorted(by_stack[stack_name], key=lambda pair: (order.index(pair[0][1]), pair[0][1:]))
            label_width = max(len(KINDS[key[1]][0]) for key, _ in entries)
            for key, users in entries:
                _, kind, auth, who, present_auth, note = key
                label, template = KINDS[kind]
                detail = template.format(who=", ".join(who) or "nobody", declared=auth, present=present_auth)
                if note:
                    detail += f"; {note}"
                prefix = f"    {style(label.ljust(label_width), 'red')}  {str(len(users)).rjust(4)}  "
                room = max(10, width - 4 - label_width - 2 - 4 - 2)
                printer.line(prefix + output.fit(detail, room))
                names = output.names(users, full=full) if show_users else ""
                for line in output.wrapped(names, width, indent=" " * 6):
                    printer.line(line)
    if total:
        printer.para(f"Drift: {output.count(total, 'finding')}.", "bold", "red")
        printer.para(LEGEND, "dim")
        if not show_users:
            printer.para("User names are hidden: --show-users shows the first ones, with --full all.", "dim")
    else:
        printer.para("No drift: AppStream holds exactly what the deployed stacks declare.", "bold", "green")


def render_json(results: Sequence[Checked], selection: Selection, *, show_users: bool) -> dict[str, Any]:
    """Drift as a JSON document; findings are grouped counts, with names only with ``show_users``."""
    tables = []
    for result in results:
        groups: dict[tuple[Any, ...], list[str]] = {}
        for finding in result.findings:
            a = finding.association
            key = (
                a.stack_name,
                finding.kind,
                a.authentication_type,
                finding.declared_by,
                finding.present_auth,
                finding.note,
            )
            groups.setdefault(key, []).append(a.user_name)
        findings = []
        for (stack_name, kind, auth, who, present_auth, note), users in sorted(groups.items()):
            entry: dict[str, Any] = {
                "appstream_stack": stack_name,
                "kind": kind,
                "authentication_type": auth,
                "count": len(users),
                "declared_by": list(who),
            }
            if present_auth:
                entry["present_authentication_type"] = present_auth
            if note:
                entry["note"] = note
            if show_users:
                entry["users"] = sorted(users)
            findings.append(entry)
        tables.append(
            {
                "state_table": result.table,
                "stacks": result.stacks,
                "appstream_stacks": result.appstream_stacks,
                "declared": result.declared,
                "present": result.present,
                "findings": findings,
                "notes": result.notes,
            }
        )
    return {
        "command": "drift",
        "drift": any(result.findings for result in results),
        "findings": sum(len(result.findings) for result in results),
        "tables": tables,
        "not_deployed": selection.skipped,
    }


__all__ = ["Association", "Checked", "Finding", "check", "render_json", "render_text"]
