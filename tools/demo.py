"""``make demo``: synthesize app.py with the CDK CLI, then rehearse its lifecycle against a local AppStream.

Run by ``make demo`` (after ``make setup``) as ``python -m tools.demo``. Nothing here needs an
AWS account or Docker.

1. Synthesis. ``node_modules/.bin/cdk synth`` runs app.py three times, in parallel, into
   ``.demo/<variant>/``, with ``-c appstream_users=...``:

   * ``initial``: alice, bob and carol;
   * ``update``: alice, bob and dave (dave in, carol out);
   * ``broken``: carol, erin and mallory, who is not in the user pool.

   A variant is synthesized again only when something it depends on has changed (app.py,
   cdk.json, constructs_lib/, lambda_src/, the pinned requirements and CLI, the context): the
   key is kept in ``.demo/<variant>.key``, so a re-run goes straight to the rehearsal.

2. Rehearsal. A local AppStream (:class:`~constructs_lib.testing.AppStreamServer`) is seeded
   from ``tools/demo-seed.json`` and a :class:`~constructs_lib.testing.Rehearsal` plays
   CloudFormation against it, running the synthesized Lambda asset in a separate process (the
   stack's other resources are stand-ins; its SSM parameter is created in a local moto). The
   steps are the table :data:`SCENES`:

   1. create AppStreamUserAssociationsUndone from ``initial``, with the rehearsal told to fail
      the stack's SSM parameter, which it creates last: the association's Create succeeds, the
      parameter fails, the rollback deletes the association: ROLLBACK_COMPLETE, and AppStream
      exactly as it was before the step;
   2. create stack AppStreamUserAssociationsDemo from ``initial``: CREATE_COMPLETE;
   3. ``appstream-associations plan`` against the ``update`` assembly (dave to associate, carol
      to disassociate once the deploy succeeds), then the update: UPDATE_COMPLETE, same physical
      ids, dave in, carol out;
   4. a change made by hand in the local AppStream (one declared user disassociated), found by
      ``appstream-associations drift`` (exit 1), then put back: drift then shows only erin,
      associated outside CloudFormation, as not declared (exit 1 still);
   5. create AppStreamUserAssociationsBroken from ``broken``: CREATE_FAILED naming mallory, the
      rollback Delete, ROLLBACK_COMPLETE, and AppStream exactly as it was before the step
      (erin's existing association untouched);
   6. delete the three stacks: AppStream is back to the seed.

   Each step prints CloudFormation's events (the stack's, the custom resources' and any
   failure; the other resources are counted) and AppStream's state afterwards, then checks its
   outcome; the exit status is 1 if any step did not go as expected (2 if synthesis failed).

The seed file (``--seed``) describes the AppStream account the rehearsal starts from, in the
format of :meth:`constructs_lib.testing.AppStreamState.from_seed`::

    {
      "stacks": ["demo-stack"],                                  # AppStream stacks that exist
      "users": [{"UserName": "alice@example.com",                # user-pool users
                 "AuthenticationType": "USERPOOL"}],             # (USERPOOL is the default)
      "associations": [{"StackName": "demo-stack",               # associations that exist already
                        "UserName": "erin@example.com"}]
    }

The demo's checks expect demo-stack, the users alice, bob, carol, dave and erin in the pool, and
mallory not in it. Colours are used only when stdout is a terminal and ``NO_COLOR`` is unset;
``--logs`` also prints the function's log lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from constructs_lib._handler import rules
from constructs_lib.testing import (
    AppStreamServer,
    AppStreamState,
    Association,
    Rehearsal,
    RehearsalError,
    ResponseServer,
    SeedError,
    StackEvent,
    StackOperation,
    StateSnapshot,
    client_env,
    read_assembly,
    summarise_users,
    write_event,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SEED = REPO / "tools" / "demo-seed.json"
DEFAULT_WORKDIR = REPO / ".demo"
CDK_CLI = REPO / "node_modules" / ".bin" / "cdk"

MAIN_STACK = "AppStreamUserAssociationsDemo"
BROKEN_STACK = "AppStreamUserAssociationsBroken"
UNDONE_STACK = "AppStreamUserAssociationsUndone"
PARAMETER_TYPE = "AWS::SSM::Parameter"
PARAMETER_FAILURE = "Parameter limit exceeded for this account (rehearsal.faults.fail)"
APPSTREAM_STACK = "demo-stack"
MISSING_USER = "mallory@example.com"
BY_HAND = "dave@example.com"
"""Removed by hand after the update (and put back), for ``drift`` to find."""
AUTH = "USERPOOL"

# What a synthesis depends on, relative to the repository (directories are read recursively).
SYNTH_INPUTS = ("app.py", "cdk.json", "package-lock.json", "requirements.txt", "constructs_lib", "lambda_src")
_SKIPPED_PARTS = frozenset({"__pycache__", "testing"})  # constructs_lib/testing is not synthesized


@dataclass(frozen=True)
class Variant:
    """One synthesis of app.py: a name (its directory under .demo/) and the users it declares."""

    name: str
    users: tuple[str, ...]

    def context(self) -> dict[str, str]:
        """The CDK context passed with ``-c``."""
        return {"appstream_stack_name": APPSTREAM_STACK, "appstream_users": ",".join(self.users)}


INITIAL = Variant("initial", ("alice@example.com", "bob@example.com", "carol@example.com"))
UPDATE = Variant("update", ("alice@example.com", "bob@example.com", "dave@example.com"))
BROKEN = Variant("broken", ("carol@example.com", "erin@example.com", MISSING_USER))
VARIANTS = (INITIAL, UPDATE, BROKEN)


# ---------------------------------------------------------------------------------------------
# Synthesis


class SynthError(RuntimeError):
    """``cdk synth`` could not run or failed."""


@dataclass(frozen=True)
class Synthesis:
    """The assemblies of the variants, which were synthesized now and how long that took."""

    assemblies: Mapping[str, Path]
    synthesized: tuple[str, ...]
    seconds: float


def input_key(variant: Variant, repo: Path = REPO) -> str:
    """A digest of everything the variant's synthesis depends on."""
    digest = hashlib.sha256(json.dumps([variant.context(), sys.version], sort_keys=True).encode())
    for name in SYNTH_INPUTS:
        root = repo / name
        paths = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in paths:
            relative = path.relative_to(repo)
            if not path.is_file() or _SKIPPED_PARTS & set(relative.parts) or path.suffix == ".pyc":
                continue
            digest.update(f"{relative.as_posix()}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _cdk_environment() -> dict[str, str]:
    """The CLI's environment: this interpreter's directory first (``python app.py``, ``node``), no phoning home."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        {"CDK_DISABLE_VERSION_CHECK": "true", "CDK_DISABLE_CLI_TELEMETRY": "true", "AWS_EC2_METADATA_DISABLED": "true"}
    )
    return env


def synthesize(
    variants: Sequence[Variant], workdir: Path, *, cache: bool = True, cdk: Path = CDK_CLI, repo: Path = REPO
) -> Synthesis:
    """Run ``cdk synth`` for each variant (in parallel) into ``workdir/<name>``; reuse up-to-date ones.

    :param cache: reuse an assembly whose input key is unchanged. Default: True.
    :raises SynthError: if the CLI is missing or a synthesis fails (with the CLI's output).
    """
    if not cdk.is_file():
        raise SynthError(f"the CDK CLI is not installed at {cdk}: run `make setup` first")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    assemblies = {variant.name: workdir / variant.name for variant in variants}
    running: list[tuple[Variant, str, subprocess.Popen[str]]] = []
    for variant in variants:
        key = input_key(variant, repo)
        key_file = workdir / f"{variant.name}.key"
        outdir = assemblies[variant.name]
        if cache and (outdir / "manifest.json").is_file() and key_file.is_file() and key_file.read_text() == key:
            continue
        key_file.unlink(missing_ok=True)
        shutil.rmtree(outdir, ignore_errors=True)
        command = [str(cdk), "synth", "--quiet", "--no-notices", "-o", str(outdir)]
        for name, value in variant.context().items():
            command += ["-c", f"{name}={value}"]
        process = subprocess.Popen(  # noqa: S603 - the pinned CLI of this checkout
            command,
            cwd=repo,
            env=_cdk_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        running.append((variant, key, process))
    failures = []
    for variant, key, process in running:
        output, _ = process.communicate()
        if process.returncode != 0 or not (assemblies[variant.name] / "manifest.json").is_file():
            failures.append(f"cdk synth of variant {variant.name!r} failed (exit {process.returncode}):\n{output}")
        else:
            (workdir / f"{variant.name}.key").write_text(key)
    if failures:
        raise SynthError("\n".join(failures))
    return Synthesis(assemblies, tuple(variant.name for variant, _, _ in running), time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# Output


def use_color(stream: TextIO) -> bool:
    """Colours only on a terminal, and not when ``NO_COLOR`` is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


@dataclass
class Printer:
    """Writes headings, events, AppStream's state and verdicts, fitting ``width`` columns."""

    out: TextIO
    color: bool = False
    width: int = 80
    logs: bool = False
    id_width: int = len(BROKEN_STACK)

    def style(self, text: str, code: str) -> str:
        """``text`` in an SGR style (``"1"`` bold, ``"31"`` red, ...) when colours are on."""
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def line(self, text: str = "") -> None:
        """Write one line."""
        self.out.write(text + "\n")
        self.out.flush()

    def wrapped(self, text: str, indent: str = "  ") -> None:
        """Write ``text`` wrapped to the width."""
        for part in textwrap.wrap(text, self.width - len(indent), break_on_hyphens=False) or [""]:
            self.line(indent + part)

    def heading(self, title: str, detail: str) -> None:
        """A step's title and what it does."""
        self.line()
        self.line(self.style(title, "1"))
        self.wrapped(detail)

    def operation(self, operation: StackOperation) -> None:
        """A stack operation's events as CloudFormation lists them: the stack's, the custom resources' and failures.

        The other resources' events (role, policies, the function, ...) are counted on one line.
        """
        hidden: dict[str, str] = {}
        for event in operation.events:
            shown = event.logical_id == operation.stack_name or event.resource_type.startswith("Custom::")
            if shown or event.status.endswith("_FAILED"):
                self.event(operation.stack_name, event)
            else:
                hidden[event.logical_id] = event.resource_type.removeprefix("AWS::")
        if hidden:
            kinds = ", ".join(sorted(set(hidden.values())))
            self.wrapped(self.style(f"(and the events of {len(hidden)} other resources: {kinds})", "2"), "            ")

    def event(self, stack_name: str, event: StackEvent) -> None:
        """One CloudFormation event (and the function's log lines with ``logs``)."""
        if len(event.logical_id) > self.id_width:
            event = replace(event, logical_id=event.logical_id[: self.id_width - 1] + "~")
        write_event(self.out, stack_name, event, color=self.color, width=self.width, id_width=self.id_width)
        for number, run in enumerate(event.attempts if self.logs else ()):
            if number:
                self.line(self.style(f"            | (Lambda's retry {number} of the failed run)", "2"))
            for raw in run.logs.splitlines():
                parts, text = raw.split("\t"), raw
                if raw.startswith(("START ", "END ")):
                    continue
                if raw.startswith("REPORT "):
                    text = "REPORT " + "  ".join(parts[1:])
                elif len(parts) >= 4 and raw.startswith("["):
                    text = f"{parts[0]} " + "\t".join(parts[3:])
                for part in textwrap.wrap(text, self.width - 14, subsequent_indent="  ") or [""]:
                    self.line(self.style(f"            | {part}", "2"))
        self.out.flush()

    def users(self, users: Iterable[str], lines: int = 2, indent: int = 4) -> str:
        """Users as one string, summarised to fit in ``lines`` lines."""
        return summarise_users(users, 100, width=lines * (self.width - indent) - 10)

    def state(self, server: AppStreamServer, title: str, before: StateSnapshot | None = None) -> None:
        """AppStream's associations per stack, and what changed since ``before``."""
        now = server.state.snapshot()
        for stack in sorted(now.stacks):
            users = sorted(user for name, user, _ in now.associations if name == stack)
            self.line(f"  {title}, {stack}: {len(users)} user{'' if len(users) == 1 else 's'} associated")
            if users:
                self.wrapped(self.users(users), "    ")
            if before is not None:
                old = {user for name, user, _ in before.associations if name == stack}
                gained, lost = set(users) - old, old - set(users)
                change = [f"{sign} {self.users(names, 1, 16)}" for sign, names in (("+", gained), ("-", lost)) if names]
                self.wrapped("changed: " + ("; ".join(change) if change else "nothing"), "    ")

    def verdict(self, problems: Sequence[str], expected: str) -> None:
        """``as expected: ...`` or the list of problems."""
        if problems:
            self.line(self.style("  NOT AS EXPECTED:", "1;31"))
            for problem in problems:
                self.wrapped(f"- {problem}", "    ")
        else:
            self.wrapped(self.style(f"as expected: {expected}", "32"))


# ---------------------------------------------------------------------------------------------
# The rehearsal


@dataclass
class Step:
    """One step of the story and what went wrong in it (nothing, if it went as expected)."""

    title: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Story:
    """What the steps share: the rehearsal, AppStream, the assemblies, the seed's associations, ids seen."""

    rehearsal: Rehearsal
    appstream: AppStreamServer
    assemblies: Mapping[str, Path]
    seeded: frozenset[Association]
    ids: dict[str, str] = field(default_factory=dict)
    printer: Printer | None = None
    cli_codes: list[int] = field(default_factory=list)
    cli_outputs: list[str] = field(default_factory=list)

    def cli(self, *arguments: str) -> int:
        """Run the library's command line against the local AWS of the rehearsal; print what it says."""
        aws = self.rehearsal.aws
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        env.update(aws.client_env() if aws is not None else {})
        env.update(self.rehearsal.cloudformation.client_env())
        env.update(client_env(self.appstream))
        env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "NO_COLOR": "1"})
        if self.printer is not None:
            env["COLUMNS"] = str(self.printer.width - 4)  # its lines are indented by 4
        command = [sys.executable, "-m", "constructs_lib", *arguments]
        completed = subprocess.run(  # noqa: S603 - this interpreter, this library
            command, env=env, cwd=REPO, capture_output=True, text=True, check=False
        )
        if self.printer is not None:
            shown = " ".join(_shown(Path(arg)) if Path(arg).is_absolute() else arg for arg in arguments)
            command_line = textwrap.wrap(
                f"$ appstream-associations {shown}",
                self.printer.width - 4,
                break_on_hyphens=False,
                break_long_words=False,
            )
            for number, part in enumerate(command_line):
                self.printer.line(self.printer.style(("  " if number == 0 else "      ") + part, "2"))
            for text in (completed.stdout + completed.stderr).rstrip().splitlines():
                self.printer.line(self.printer.style(f"    {text}", "2"))
            self.printer.line(self.printer.style(f"    (exit status {completed.returncode})", "2"))
        self.cli_codes.append(completed.returncode)
        self.cli_outputs.append(completed.stdout)
        return completed.returncode


@dataclass(frozen=True)
class Scene:
    """One step of the story as data: what it does, what CloudFormation and AppStream must show after it.

    ``play`` runs the step's stack operations; every one must end in ``status``; AppStream's
    associations must then be ``expected(story, before)``; ``checks`` adds the step's own.
    """

    title: str
    detail: Callable[[Printer], str]
    play: Callable[[Story], list[StackOperation]]
    status: str
    expected: Callable[[Story, StateSnapshot], frozenset[Association]]
    verdict: str
    checks: Callable[[Story, Step, list[StackOperation]], None] = lambda story, step, operations: None
    show_before: bool = False
    """Print AppStream's state before the step too."""


def _associations(users: Iterable[str]) -> frozenset[Association]:
    return frozenset((APPSTREAM_STACK, user, AUTH) for user in users)


def _as_before(story: Story, before: StateSnapshot) -> frozenset[Association]:
    return before.associations


RESOURCE_TYPE = rules.RESOURCE_TYPE


def parameter_last(assembly: Path) -> list[str]:
    """An order for a create: every resource in dependency order, the SSM parameters last."""
    [template] = read_assembly(assembly)
    ordered: list[str] = []

    def visit(logical_id: str) -> None:
        if logical_id not in ordered:
            for other in sorted(template.resources[logical_id].dependencies):
                visit(other)
            ordered.append(logical_id)

    for resource in template.resources.values():
        if resource.resource_type != PARAMETER_TYPE:
            visit(resource.logical_id)
    ordered += [resource.logical_id for resource in template.of_type(PARAMETER_TYPE)]
    return [f"create:{logical_id}" for logical_id in ordered]


def _is_association_answer(event: StackEvent) -> bool:
    """An association resource's outcome (not the deployment marker's, not an IN_PROGRESS line)."""
    return event.resource_type == RESOURCE_TYPE and event.invocation is not None


def _play_undone(story: Story) -> list[StackOperation]:
    assembly = story.assemblies[INITIAL.name]
    story.rehearsal.faults.fail(PARAMETER_TYPE, stack=UNDONE_STACK, reason=PARAMETER_FAILURE)
    return story.rehearsal.deploy(assembly, stack_name=UNDONE_STACK, order=parameter_last(assembly))


def _check_undone(story: Story, step: Step, operations: list[StackOperation]) -> None:
    [operation] = operations
    association = [event.status for event in operation.resource_events if _is_association_answer(event)]
    if association != ["CREATE_COMPLETE", "DELETE_COMPLETE"]:
        step.problems.append(f"association events {association}, expected CREATE_COMPLETE then DELETE_COMPLETE")
    failed = [event for event in operation.failures if event.resource_type == PARAMETER_TYPE]
    if not failed or failed[0].reason != PARAMETER_FAILURE:
        step.problems.append(f"the SSM parameter did not fail with {PARAMETER_FAILURE!r}")


def _play_create(story: Story) -> list[StackOperation]:
    operations = story.rehearsal.deploy(story.assemblies[INITIAL.name])
    story.ids.update(story.rehearsal.deployed(MAIN_STACK))
    return operations


def _play_update(story: Story) -> list[StackOperation]:
    # What the next deploy will do, before doing it: read-only (the state store and Describe calls).
    story.cli("plan", "--app", str(story.assemblies[UPDATE.name]), "--show-users")
    return story.rehearsal.deploy(story.assemblies[UPDATE.name])


def _check_update(story: Story, step: Step, operations: list[StackOperation]) -> None:
    [template] = read_assembly(story.assemblies[UPDATE.name])
    associations = {resource.logical_id for resource in template.of_type(RESOURCE_TYPE)}
    now = story.rehearsal.deployed(MAIN_STACK)
    changed = sorted(key for key in associations if story.ids.get(key) != now.get(key))
    if changed:
        step.problems.append(f"physical ids of the associations changed (not updated in place): {changed}")


def _play_by_hand(story: Story) -> list[StackOperation]:
    story.cli_codes.clear()
    story.cli_outputs.clear()
    story.appstream.state.disassociate(APPSTREAM_STACK, BY_HAND, AUTH)  # an administrator, in the console
    story.cli("drift", MAIN_STACK, "--show-users")
    story.appstream.state.associate(APPSTREAM_STACK, BY_HAND, AUTH)  # and back
    story.cli("drift", MAIN_STACK)
    return []


def _check_by_hand(story: Story, step: Step, operations: list[StackOperation]) -> None:
    if story.cli_codes != [1, 1]:
        step.problems.append(f"drift exited {story.cli_codes}, expected 1 twice (erin is never declared)")
        return
    found, after = story.cli_outputs
    if "missing in AppStream" not in found or BY_HAND not in found:
        step.problems.append(f"drift did not report {BY_HAND} missing")
    if "missing in AppStream" in after or "not declared" not in after:
        step.problems.append("after the change was undone, drift should report only what no stack declares")


def _play_broken(story: Story) -> list[StackOperation]:
    return story.rehearsal.deploy(story.assemblies[BROKEN.name], stack_name=BROKEN_STACK)


def _check_broken(story: Story, step: Step, operations: list[StackOperation]) -> None:
    [operation] = operations
    statuses = [event.status for event in operation.resource_events if _is_association_answer(event)]
    if statuses != ["CREATE_FAILED", "DELETE_COMPLETE"]:
        step.problems.append(f"resource events {statuses}, expected CREATE_FAILED then DELETE_COMPLETE")
    reason = next((e.reason for e in operation.resource_events if e.status == "CREATE_FAILED"), "")
    if MISSING_USER not in reason or "USER_NAME_NOT_FOUND" not in reason:
        step.problems.append(f"the failure reason does not name {MISSING_USER} and USER_NAME_NOT_FOUND")


def _play_delete(story: Story) -> list[StackOperation]:
    return [story.rehearsal.destroy(name) for name in (MAIN_STACK, UNDONE_STACK, BROKEN_STACK)]


def _changes(printer: Printer) -> str:
    added = sorted(set(UPDATE.users) - set(INITIAL.users))
    removed = sorted(set(INITIAL.users) - set(UPDATE.users))
    return "users: " + "; ".join([*(f"+ {u}" for u in added), *(f"- {u}" for u in removed)])


SCENES: tuple[Scene, ...] = (
    Scene(
        f"Create {UNDONE_STACK}, whose SSM parameter fails",
        lambda printer: (
            f"users: {printer.users(INITIAL.users)}; the association is created first, then the "
            "stack's SSM parameter fails: the rollback deletes the association"
        ),
        _play_undone,
        "ROLLBACK_COMPLETE",
        _as_before,
        "ROLLBACK_COMPLETE; AppStream exactly as before",
        _check_undone,
        show_before=True,
    ),
    Scene(
        f"Create {MAIN_STACK}",
        lambda printer: f"users: {printer.users(INITIAL.users)}",
        _play_create,
        "CREATE_COMPLETE",
        lambda story, before: story.seeded | _associations(INITIAL.users),
        "CREATE_COMPLETE; erin's existing association kept",
    ),
    Scene(
        f"Update {MAIN_STACK}",
        _changes,
        _play_update,
        "UPDATE_COMPLETE",
        lambda story, before: story.seeded | _associations(UPDATE.users),
        "UPDATE_COMPLETE in place (same physical ids)",
        _check_update,
    ),
    Scene(
        "A change made by hand, found by drift",
        lambda printer: (
            f"{BY_HAND} is removed from {APPSTREAM_STACK} outside CloudFormation: `drift` finds it "
            "missing (exit status 1, as it also finds erin, whom no stack declares); put back, only "
            "erin is left"
        ),
        _play_by_hand,
        "",
        _as_before,
        "drift found the change by hand; after it was undone, only what no stack declares",
        _check_by_hand,
    ),
    Scene(
        f"Create {BROKEN_STACK}, which must fail",
        lambda printer: f"users: {printer.users(BROKEN.users)} ({MISSING_USER} is not in the user pool)",
        _play_broken,
        "ROLLBACK_COMPLETE",
        _as_before,
        "CREATE_FAILED, ROLLBACK_COMPLETE; AppStream as it was",
        _check_broken,
    ),
    Scene(
        "Delete the three stacks",
        lambda printer: f"{MAIN_STACK}, then the two rolled back (ROLLBACK_COMPLETE: no resources)",
        _play_delete,
        "DELETE_COMPLETE",
        lambda story, before: story.seeded,
        "DELETE_COMPLETE; AppStream back to the seed",
    ),
)
"""The story ``make demo`` tells, in order."""


def _play(scene: Scene, story: Story, step: Step, printer: Printer) -> None:
    before = story.appstream.state.snapshot()
    if scene.show_before:
        printer.state(story.appstream, "AppStream before")
    try:
        operations = scene.play(story)
    except (RehearsalError, OSError) as error:
        step.problems.append(f"{type(error).__name__}: {error}")
        operations = []
    for operation in operations:
        printer.operation(operation)
        if operation.status != scene.status:
            step.problems.append(f"{operation.stack_name} ended in {operation.status}, expected {scene.status}")
    scene.checks(story, step, operations)
    expected = scene.expected(story, before)
    actual = story.appstream.state.associations()
    if actual != expected:
        missing = sorted(user for _, user, _ in expected - actual)
        extra = sorted(user for _, user, _ in actual - expected)
        step.problems.append(f"AppStream is not as expected: missing {missing or 'none'}, unexpected {extra or 'none'}")
    printer.state(story.appstream, "AppStream after", before)
    printer.verdict(step.problems, scene.verdict)


def rehearse(
    assemblies: Mapping[str, Path],
    *,
    state: AppStreamState,
    printer: Printer,
    python: str = sys.executable,
    scenes: Sequence[Scene] = SCENES,
) -> list[Step]:
    """Play the scenes against a local AppStream serving ``state``; return each step's verdict."""
    initial = state.snapshot()
    steps: list[Step] = []
    with (
        AppStreamServer(state) as appstream,
        ResponseServer() as cfn,
        Rehearsal(appstream, cfn, python=python) as rehearsal,
    ):
        story = Story(rehearsal, appstream, assemblies, initial.associations, printer=printer)
        pool = sorted(user for user, auth in initial.users if auth == AUTH)
        printer.line(f"  AppStream  {appstream.endpoint_url} (local); user pool: {len(pool)} users")
        printer.state(appstream, "AppStream before")
        for number, scene in enumerate(scenes, 1):
            step = Step(f"{number}/{len(scenes)} {scene.title}")
            steps.append(step)
            printer.heading(step.title, scene.detail(printer))
            _play(scene, story, step, printer)
    return steps


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Synthesize, rehearse, and return the exit status (0 as expected, 1 a step was not, 2 no synth)."""
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=Path, default=DEFAULT_SEED, help="seed file (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="assemblies (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="synthesize even if the inputs are unchanged")
    parser.add_argument("--logs", action="store_true", help="print the function's log lines under each event")
    args = parser.parse_args(argv)

    started = time.monotonic()
    columns = shutil.get_terminal_size((80, 24)).columns
    printer = Printer(out, color=use_color(out), width=max(60, min(columns, 120)), logs=args.logs)
    printer.line(printer.style("make demo: app.py through the CDK CLI, rehearsed against a local AppStream", "1"))
    try:
        state = AppStreamState.load_seed(args.seed)
    except (SeedError, OSError) as error:
        printer.line(f"error: {error}")
        return 2
    try:
        synthesis = synthesize(VARIANTS, args.workdir, cache=not args.no_cache)
    except SynthError as error:
        printer.line(f"error: {error}")
        return 2
    reused = len(VARIANTS) - len(synthesis.synthesized)
    how = f"{len(synthesis.synthesized)} synthesized in {synthesis.seconds:.1f} s" if synthesis.synthesized else ""
    how = ", ".join(part for part in (how, f"{reused} unchanged, reused" if reused else "") if part)
    printer.line(f"  cdk synth  {len(VARIANTS)} variants of app.py in {_shown(args.workdir)}/ ({how})")
    printer.line(f"  seed       {_shown(args.seed)}")

    rehearsal_started = time.monotonic()
    steps = rehearse(synthesis.assemblies, state=state, printer=printer)
    finished = time.monotonic()
    failed = [step for step in steps if not step.ok]
    synth = f"synth {synthesis.seconds:.1f} s" if synthesis.synthesized else "synth reused"
    timing = f"{finished - started:.1f} s ({synth}, rehearsal {finished - rehearsal_started:.1f} s)"
    printer.line()
    if failed:
        printer.line(
            printer.style(
                f"{len(failed)} of {len(steps)} steps did not go as expected "
                f"({', '.join(step.title for step in failed)}); {timing}",
                "1;31",
            )
        )
        return 1
    printer.line(printer.style(f"All {len(steps)} steps went as expected in {timing}.", "1;32"))
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
