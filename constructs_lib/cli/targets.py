"""Which deployed stacks ``drift`` and ``report`` read, and the state tables they use.

Stacks are named on the command line (deployed stacks, no assembly needed) or taken from an
assembly (``--app``; the names then select among its stacks). A stack's table is its own
(found among its resources), the one its template's function names (with ``--app``, so a table
shared from another stack of the app is found too), or ``--table``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from constructs_lib.cli.assembly import read_assembly, select
from constructs_lib.cli.aws import Aws, CliError, StackSummary
from constructs_lib.cli.state import Store, TableLocation, locate_deployed_table, locate_table

DEFAULT_APP = Path("cdk.out")


@dataclass(frozen=True)
class Target:
    """One deployed stack and where its records are."""

    summary: StackSummary
    region: str | None
    table: TableLocation


@dataclass
class Selection:
    """The deployed stacks to read, grouped by state table, and what was skipped."""

    targets: list[Target]
    skipped: list[str]
    """Stacks of the assembly that are not deployed."""

    def stores(self, aws: Aws) -> list[tuple[Store, list[Target]]]:
        """One reader per table, with the stacks whose records it holds."""
        grouped: dict[tuple[str, str | None], list[Target]] = {}
        for target in self.targets:
            if target.table.name:
                grouped.setdefault((target.table.name, target.table.region), []).append(target)
        return [(Store(aws, name, region), targets) for (name, region), targets in grouped.items()]


def select_targets(
    aws: Aws,
    *,
    names: Sequence[str],
    app: Path | None,
    table: str | None,
    require: bool = True,
    command: str = "drift",
) -> Selection:
    """The deployed stacks the command reads.

    ``app`` None and no ``names``: ``./cdk.out`` if it exists. ``require``: at least one stack.
    """
    if app is None and not names and DEFAULT_APP.is_dir():
        app = DEFAULT_APP
    targets: list[Target] = []
    skipped: list[str] = []
    if app is not None:
        everything = read_assembly(app)
        for artifact in select(everything, names):
            if not artifact.associations():
                continue
            region = artifact.region or aws.default_region
            summary = aws.stack(artifact.stack_name, region)
            if summary is None:
                skipped.append(artifact.stack_name)
                continue
            location = locate_table(aws, artifact, everything, summary, region, table)
            targets.append(Target(summary, region, location))
    else:
        if require and not names:
            raise CliError(f"name the deployed stacks to read (e.g. `{command} MyStack`), or pass --app cdk.out")
        region = aws.default_region
        for name in names:
            summary = aws.stack(name, region)
            if summary is None:
                raise CliError(
                    f"CloudFormation stack {name} does not exist{' in ' + region if region else ''}: "
                    "check the name and the region (--region)"
                )
            targets.append(Target(summary, region, locate_deployed_table(aws, summary, region, table)))
    if require and not targets:
        where = f" of {app}" if app is not None else ""
        raise CliError(f"no deployed stack{where} declares AppStream associations: nothing to read")
    return Selection(targets, skipped)
