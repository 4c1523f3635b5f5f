"""The command line: ``appstream-associations plan | drift | report`` (also ``python -m constructs_lib``).

* ``plan``: what the next deployment of a synthesized app (``cdk.out``) would do to AppStream.
* ``drift``: where AppStream differs from what the deployed stacks declare (exit 1 on drift).
* ``report``: every associated user per AppStream stack, and what manages it.

Every command only reads (the IAM actions are in :data:`constructs_lib.cli.aws.PERMISSIONS`),
with the caller's AWS configuration (``AWS_PROFILE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL_*``).
Exit codes: 0 done (``drift``: no drift), 1 drift found, 2 error (one line on stderr).

Importing this package needs only the standard library; boto3 is imported when a command runs
(``pip install 'appstream-user-stack-association[cli]'``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from constructs_lib._version import __version__
from constructs_lib.cli import output

PROGRAM = "appstream-associations"
EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    aws = common.add_argument_group("AWS")
    aws.add_argument("--profile", help="AWS profile (default: AWS_PROFILE, else boto3's default chain)")
    aws.add_argument("--region", help="region of environment-agnostic stacks (default: AWS_REGION, the profile's)")
    aws.add_argument(
        "--table",
        metavar="NAME",
        help="the state table to read (needed when a stack shares another stack's table and it cannot be found)",
    )
    shown = common.add_argument_group("output")
    shown.add_argument("--full", action="store_true", help="no summarising: every name and row")
    shown.add_argument("--json", action="store_true", help="a JSON document on stdout")
    shown.add_argument("--no-color", action="store_true", help="no colours (also: NO_COLOR set, or not a terminal)")

    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Plan, check and report the AppStream 2.0 user-stack associations of UserStackAssociation "
            "constructs. Read-only; uses your AWS configuration."
        ),
        epilog="Exit codes: 0 done (drift: none), 1 drift found, 2 error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    plan = commands.add_parser(
        "plan",
        parents=[common],
        help="what the next deployment of cdk.out would do to AppStream",
        description=(
            "For each stack of a synthesized app and each association: the users the next deployment would "
            "associate (and e-mail), disassociate, adopt, and keep because another claim still declares them."
        ),
    )
    plan.add_argument("stacks", nargs="*", metavar="STACK", help="stacks of the assembly to plan (globs; default all)")
    plan.add_argument("--app", type=Path, default=Path("cdk.out"), help="the cloud assembly (default: ./cdk.out)")
    plan.add_argument(
        "--parameter",
        "-p",
        action="append",
        default=[],
        metavar="[STACK:]NAME=VALUE",
        help="a template parameter's value for this deployment (as cdk deploy --parameters)",
    )
    plan.add_argument("--show-users", action="store_true", help="show user names (the first ones; --full: all)")

    drift = commands.add_parser(
        "drift",
        parents=[common],
        help="where AppStream differs from what the deployed stacks declare (exit 1)",
        description=(
            "Declared associations missing in AppStream, associations nobody declares on the AppStream stacks "
            "the deployed associations manage, and users associated with another authentication type. "
            "Exit 0: no drift, 1: drift, 2: error."
        ),
    )
    _stacks(drift)
    drift.add_argument("--show-users", action="store_true", help="show user names (the first ones; --full: all)")

    report = commands.add_parser(
        "report",
        parents=[common],
        help="every associated user per AppStream stack, and what manages it",
        description=(
            "Per AppStream stack: every associated user, the CloudFormation stack and construct path that "
            "declares it (or unmanaged), and whether it was created or adopted."
        ),
    )
    _stacks(report)
    report.add_argument(
        "--appstream-stack",
        action="append",
        default=[],
        metavar="NAME",
        help="also report this AppStream stack (with --table alone: report it without CloudFormation)",
    )
    report.add_argument("--csv", action="store_true", help="CSV on stdout, one line per association and claim")
    return parser


def _stacks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "stacks",
        nargs="*",
        metavar="STACK",
        help="deployed CloudFormation stacks (with --app: globs selecting stacks of the assembly)",
    )
    parser.add_argument(
        "--app",
        type=Path,
        default=None,
        help="take the stacks and their tables from this cloud assembly (default: ./cdk.out when no STACK is named)",
    )


def _parameters(values: Sequence[str]) -> dict[str, str]:
    from constructs_lib.cli.aws import CliError  # noqa: PLC0415

    found = {}
    for value in values:
        name, sep, given = value.partition("=")
        if not sep or not name:
            raise CliError(f"--parameter {value!r}: expected NAME=VALUE or STACK:NAME=VALUE")
        found[name] = given
    return found


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run one command; return its exit code."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    try:
        import boto3  # noqa: F401, PLC0415 - only a command that runs needs it
    except ImportError:
        err.write(f"{PROGRAM}: error: needs boto3: pip install 'appstream-user-stack-association[cli]'\n")
        return EXIT_ERROR
    from constructs_lib.cli.assembly import AssemblyError  # noqa: PLC0415
    from constructs_lib.cli.aws import CliError, one_line  # noqa: PLC0415

    progress = output.Progress(err)
    printer = output.Printer(
        out, progress=progress, style=output.Style(output.wants_colour(out, disabled=args.no_color))
    )
    try:
        return _run(args, printer, progress)
    except (CliError, AssemblyError) as error:
        progress.clear()
        err.write(f"{PROGRAM}: error: {one_line(str(error), 400)}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        progress.clear()
        err.write(f"{PROGRAM}: interrupted\n")
        return 130
    finally:
        progress.clear()


def _run(args: argparse.Namespace, printer: output.Printer, progress: output.Progress) -> int:
    from constructs_lib.cli import drift, plan, report  # noqa: PLC0415
    from constructs_lib.cli.assembly import read_assembly, select  # noqa: PLC0415
    from constructs_lib.cli.aws import Aws  # noqa: PLC0415
    from constructs_lib.cli.targets import select_targets  # noqa: PLC0415

    aws = Aws(profile=args.profile, region=args.region, progress=progress)
    if args.command == "plan":
        everything = read_assembly(args.app)
        chosen = select(everything, args.stacks)
        plans = plan.run_plan(aws, chosen, everything, table=args.table, parameters=_parameters(args.parameter))
        if args.json:
            printer.raw(output.to_json(plan.render_json(plans, show_users=args.show_users)))
        else:
            plan.render_text(plans, printer, show_users=args.show_users, full=args.full)
        return EXIT_OK
    if args.command == "drift":
        selection = select_targets(aws, names=args.stacks, app=args.app, table=args.table)
        results = drift.check(aws, selection)
        if args.json:
            printer.raw(output.to_json(drift.render_json(results, selection, show_users=args.show_users)))
        else:
            drift.render_text(results, selection, printer, show_users=args.show_users, full=args.full)
        return EXIT_DRIFT if any(result.findings for result in results) else EXIT_OK
    standalone = bool(args.table and args.appstream_stack and not args.stacks and args.app is None)
    selection = select_targets(
        aws, names=args.stacks, app=args.app, table=args.table, require=not standalone, command="report"
    )
    rows = report.collect(aws, selection, table=args.table, appstream_stacks=args.appstream_stack)
    if args.csv:
        printer.raw(report.render_csv(rows))
    elif args.json:
        printer.raw(output.to_json(report.render_json(rows)))
    else:
        report.render_text(rows, printer, full=args.full)
    return EXIT_OK


__all__ = ["EXIT_DRIFT", "EXIT_ERROR", "EXIT_OK", "main"]
