"""``make demo``'s script: its six steps pass on app.py, and it says so (exit 1) when one does not."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from constructs_lib.testing import AppStreamState, read_assembly
from tools import demo

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_the_demo_seed_is_what_the_demo_s_checks_assume() -> None:
    state = AppStreamState.load_seed(demo.DEFAULT_SEED)
    pool = {user for user, auth in state.users() if auth == "USERPOOL"}
    declared = set(demo.INITIAL.users) | set(demo.UPDATE.users) | set(demo.BROKEN.users)
    assert declared - pool == {demo.MISSING_USER}
    assert demo.APPSTREAM_STACK in state.stacks()
    existing = {user for stack, user, _ in state.associations() if stack == demo.APPSTREAM_STACK}
    assert existing & set(demo.BROKEN.users)  # the failed create must leave a pre-existing association alone
    assert not existing & (set(demo.INITIAL.users) | set(demo.UPDATE.users))


def test_all_six_steps_go_as_expected_and_the_output_fits_a_terminal(assemblies: Mapping[str, Path]) -> None:
    out = io.StringIO()
    printer = demo.Printer(out, color=False, width=80)
    steps = demo.rehearse(assemblies, state=AppStreamState.load_seed(demo.DEFAULT_SEED), printer=printer)
    text = out.getvalue()
    assert [step.problems for step in steps] == [[]] * len(demo.SCENES) == [[]] * 6, text
    assert not ANSI.search(text)
    assert [line for line in text.splitlines() if len(line) > 80] == []
    for expected in (
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "CREATE_FAILED",
        "ROLLBACK_COMPLETE",
        "DELETE_COMPLETE",
        "USER_NAME_NOT_FOUND",
        "changed: nothing",
        demo.PARAMETER_FAILURE,
        "as expected: ROLLBACK_COMPLETE; AppStream exactly as before",
        "$ appstream-associations plan --app",
        "disassociate  1  cleanup",
        "missing in AppStream",
    ):
        assert expected in text
    assert text.count("as expected: ") == 6
    first = text[text.index("1/6 ") : text.index("2/6 ")]
    assert first.index("AppStream before") < first.index("AppStream after")  # the rolled-back step shows both


def test_the_rolled_back_deploy_creates_the_parameter_after_everything_else(assemblies: Mapping[str, Path]) -> None:
    order = demo.parameter_last(assemblies[demo.INITIAL.name])
    [template] = read_assembly(assemblies[demo.INITIAL.name])
    [parameter] = template.of_type(demo.PARAMETER_TYPE)
    assert order[-1] == f"create:{parameter.logical_id}"
    assert sorted(order) == sorted(f"create:{key}" for key in template.resources)
    position = {entry.removeprefix("create:"): index for index, entry in enumerate(order)}
    for resource in template.resources.values():
        assert all(position[other] < position[resource.logical_id] for other in resource.dependencies)


def test_an_unexpected_outcome_makes_the_demo_exit_1(
    assemblies: Mapping[str, Path], demo_workdir: Path, tmp_path: Path
) -> None:
    # With mallory in the user pool, the create that must fail succeeds: step 4 is not as expected.
    seed = json.loads(demo.DEFAULT_SEED.read_text(encoding="utf-8"))
    seed["users"].append({"UserName": demo.MISSING_USER, "AuthenticationType": "USERPOOL"})
    seed_path = tmp_path / "seed.json"
    seed_path.write_text(json.dumps(seed), encoding="utf-8")
    out = io.StringIO()
    assert demo.main(["--workdir", str(demo_workdir), "--seed", str(seed_path)], out=out) == 1
    text = out.getvalue()
    assert "NOT AS EXPECTED:" in text
    assert f"{demo.BROKEN_STACK} ended in CREATE_COMPLETE, expected ROLLBACK_COMPLETE" in " ".join(text.split())
    # Deleting the broken stack then removes erin, whom it declared: step 6 cannot end at the seed either.
    assert (
        "2 of 6 steps did not go as expected (5/6 Create AppStreamUserAssociationsBroken, which must fail, "
        "6/6 Delete the three stacks)" in text
    )


def test_a_bad_seed_file_stops_the_demo_with_exit_2(tmp_path: Path) -> None:
    seed_path = tmp_path / "seed.json"
    seed_path.write_text('{"stacks": ["bad name!"]}', encoding="utf-8")
    out = io.StringIO()
    assert demo.main(["--seed", str(seed_path), "--workdir", str(tmp_path / "unused")], out=out) == 2
    assert "invalid AppStream fake seed file" in out.getvalue()
    assert not (tmp_path / "unused").exists()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colours_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert demo.use_color(FakeTerminal())
    assert not demo.use_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not demo.use_color(FakeTerminal())


def test_the_synthesis_key_follows_the_sources_but_not_the_testing_kit(tmp_path: Path) -> None:
    for name in ("app.py", "cdk.json", "package-lock.json", "requirements.txt"):
        (tmp_path / name).write_text(name, encoding="utf-8")
    for name in ("lambda_src/index.py", "constructs_lib/association.py", "constructs_lib/testing/rehearsal.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n", encoding="utf-8")
    key = demo.input_key(demo.INITIAL, tmp_path)
    assert demo.input_key(demo.UPDATE, tmp_path) != key  # other context
    (tmp_path / "constructs_lib/testing/rehearsal.py").write_text("x = 2\n", encoding="utf-8")
    assert demo.input_key(demo.INITIAL, tmp_path) == key
    (tmp_path / "lambda_src/index.py").write_text("x = 2\n", encoding="utf-8")
    assert demo.input_key(demo.INITIAL, tmp_path) != key


def fake_repo(root: Path) -> Path:
    for name in ("app.py", "cdk.json", "package-lock.json", "requirements.txt", "lambda_src/index.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name, encoding="utf-8")
    return root


def fake_cdk(path: Path, log: Path, *, fail: bool = False) -> Path:
    """A stand-in for the CLI that writes an empty assembly and records its arguments."""
    path.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys\n"
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        + ("print('Error: app.py exploded'); sys.exit(1)\n" if fail else "")
        + "out = pathlib.Path(sys.argv[sys.argv.index('-o') + 1]); out.mkdir(parents=True)\n"
        "(out / 'manifest.json').write_text('{}')\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


def test_synthesis_runs_the_cli_per_variant_and_reuses_unchanged_assemblies(tmp_path: Path) -> None:
    repo, log = fake_repo(tmp_path / "repo"), tmp_path / "calls.log"
    cdk = fake_cdk(tmp_path / "cdk", log)
    first = demo.synthesize(demo.VARIANTS, tmp_path / "out", cdk=cdk, repo=repo)
    assert sorted(first.synthesized) == ["broken", "initial", "update"]
    calls = log.read_text().splitlines()
    assert (
        f"synth --quiet --no-notices -o {tmp_path / 'out' / 'update'} -c appstream_stack_name=demo-stack "
        "-c appstream_users=alice@example.com,bob@example.com,dave@example.com" in calls
    )
    assert demo.synthesize(demo.VARIANTS, tmp_path / "out", cdk=cdk, repo=repo).synthesized == ()
    (repo / "lambda_src" / "index.py").write_text("changed", encoding="utf-8")
    assert len(demo.synthesize(demo.VARIANTS, tmp_path / "out", cdk=cdk, repo=repo).synthesized) == 3
    assert len(log.read_text().splitlines()) == 6


def test_a_failing_synthesis_reports_the_cli_output(tmp_path: Path) -> None:
    repo, log = fake_repo(tmp_path / "repo"), tmp_path / "calls.log"
    cdk = fake_cdk(tmp_path / "cdk", log, fail=True)
    with pytest.raises(demo.SynthError, match=r"(?s)variant 'initial' failed \(exit 1\).*app.py exploded"):
        demo.synthesize(demo.VARIANTS, tmp_path / "out", cdk=cdk, repo=repo)
    assert not list((tmp_path / "out").glob("*.key"))  # nothing is marked up to date
