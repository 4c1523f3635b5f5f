"""``report``: an access review, per AppStream stack, of every associated user and who manages it.

For every user AppStream associates with a stack: the CloudFormation stack and construct path
whose claim declares it (the resource record's ``path``, else the claim's logical id), or
``unmanaged``; and whether the association was created by this construct or already existed
and was adopted (the record's ``existed``). Names are shown: that is the report's purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from constructs_lib.cli import output
from constructs_lib.cli.aws import Aws, stack_name_of
from constructs_lib.cli.state import Store, model
from constructs_lib.cli.targets import Selection

ROWS_SHOWN = 20
"""Rows per AppStream stack in the table without ``--full``."""
HEADERS = ("AppStream stack", "User", "Auth", "Managed by", "Construct path", "Origin")
CSV_HEADERS = (
    "appstream_stack",
    "user_name",
    "authentication_type",
    "managed",
    "cloudformation_stack",
    "construct_path",
    "logical_id",
    "origin",
)


@dataclass(frozen=True)
class Row:
    """One associated user, and one claim that manages it (or none)."""

    appstream_stack: str
    user_name: str
    authentication_type: str
    stack: str = ""
    """The CloudFormation stack that declares it; "" when unmanaged."""
    path: str = ""
    logical_id: str = ""
    origin: str = ""
    """``created``, ``adopted`` (it existed before it was declared), or "" (unmanaged)."""
    standing: str = ""

    @property
    def managed(self) -> bool:
        return bool(self.stack)


def collect(aws: Aws, selection: Selection, *, table: str | None, appstream_stacks: Sequence[str]) -> list[Row]:
    """Every associated user of the managed AppStream stacks (and of ``appstream_stacks``)."""
    rows: list[Row] = []
    stores = selection.stores(aws)
    if not stores and table:
        stores = [(Store(aws, table, aws.default_region), [])]
    seen: set[tuple[str, str | None]] = set()
    for store, targets in stores:
        names: set[str] = set(appstream_stacks)
        for target in targets:
            for record in store.view(target.summary.stack_id).resources.values():
                names |= set(record.appstream_stacks)
        records = store.records(names)
        for name in sorted(names):
            seen.add((name, store.region))
            for item in sorted(aws.associations(name, store.region)):
                association = model.Association(*item)
                rows.extend(_rows(store, association, records.get(association)))
    for name in appstream_stacks:
        if (name, aws.default_region) not in seen:
            for item in sorted(aws.associations(name)):
                rows.append(Row(*item))
    return rows


def _rows(store: Store, association: model.Association, record: model.AssociationRecord | None) -> list[Row]:
    base = Row(association.stack_name, association.user_name, association.authentication_type)
    if record is None:
        return [base]
    origin = "adopted" if record.existed else "created"
    found = []
    for key, claim in sorted(record.claims.items()):
        view = store.claimant_view(key)
        standing = view.standing(claim)
        if standing is model.Standing.GONE:
            continue
        claimant = model.Claimant.from_key(key)
        found.append(
            Row(
                association.stack_name,
                association.user_name,
                association.authentication_type,
                stack=stack_name_of(claimant.stack_id),
                path=view.path(claimant.logical_id),
                logical_id=claimant.logical_id,
                origin=origin,
                standing=standing.value,
            )
        )
    return found or [base]


def render_text(rows: Sequence[Row], printer: output.Printer, *, full: bool) -> None:
    """The report as a table per AppStream stack (the first rows of each without ``full``)."""
    style = printer.style
    width = output.terminal_width()
    if not rows:
        printer.line("No associated users on the AppStream stacks read.")
        return
    by_stack: dict[str, list[Row]] = {}
    for row in rows:
        by_stack.setdefault(row.appstream_stack, []).append(row)
    cut = 0
    body: list[list[str]] = []
    for rows_of_stack in by_stack.values():
        shown = rows_of_stack if full else rows_of_stack[:ROWS_SHOWN]
        for row in shown:
            managed = row.stack + (" (removal pending)" if row.standing == "removing" else "")
            body.append(
                [
                    row.appstream_stack,
                    row.user_name,
                    row.authentication_type,
                    managed if row.managed else "unmanaged",
                    row.path,
                    row.origin,
                ]
            )
        if len(rows_of_stack) > len(shown):
            cut += len(rows_of_stack) - len(shown)
            body.append([rows_of_stack[0].appstream_stack, f"… {len(rows_of_stack) - len(shown)} more", "", "", "", ""])
    lines = output.table(HEADERS, body, width=width, style=style, shrink=(4, 3, 0, 5, 2, 1))
    printer.line(lines[0])
    for cells, text in zip(body, lines[1:], strict=True):
        unmanaged_row = style.enabled and cells[3] == "unmanaged"
        printer.line(text.replace("unmanaged", style("unmanaged", "yellow"), 1) if unmanaged_row else text)
    users = {(row.appstream_stack, row.user_name, row.authentication_type) for row in rows}
    unmanaged = {(row.appstream_stack, row.user_name, row.authentication_type) for row in rows if not row.managed}
    adopted = {(row.appstream_stack, row.user_name, row.authentication_type) for row in rows if row.origin == "adopted"}
    printer.para(
        f"Report: {output.count(len(users), 'association')} on {output.count(len(by_stack), 'AppStream stack')}: "
        f"{len(users) - len(unmanaged)} managed ({len(adopted)} adopted), {len(unmanaged)} unmanaged."
    )
    if cut:
        printer.para(f"{cut} rows not shown: --full shows every row, --csv or --json for a file.", "dim")


def render_json(rows: Sequence[Row]) -> dict[str, Any]:
    """Every association, grouped per AppStream stack, each with the claims that manage it."""
    stacks: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for row in rows:
        users = stacks.setdefault(row.appstream_stack, {})
        entry = users.setdefault(
            (row.user_name, row.authentication_type),
            {
                "user_name": row.user_name,
                "authentication_type": row.authentication_type,
                "managed": False,
                "origin": None,
                "managed_by": [],
            },
        )
        if row.managed:
            entry["managed"] = True
            entry["origin"] = row.origin
            entry["managed_by"].append(
                {
                    "cloudformation_stack": row.stack,
                    "construct_path": row.path,
                    "logical_id": row.logical_id,
                    "standing": row.standing,
                }
            )
    return {
        "command": "report",
        "appstream_stacks": [
            {"appstream_stack": name, "users": list(users.values())} for name, users in sorted(stacks.items())
        ],
    }


def render_csv(rows: Sequence[Row]) -> str:
    """One line per association and managing claim (unmanaged: one line with empty columns)."""
    return output.to_csv(
        CSV_HEADERS,
        (
            [
                row.appstream_stack,
                row.user_name,
                row.authentication_type,
                "yes" if row.managed else "no",
                row.stack,
                row.path,
                row.logical_id,
                row.origin,
            ]
            for row in rows
        ),
    )
