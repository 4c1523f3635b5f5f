"""End-to-end fixtures: app.py synthesized once by the real CDK CLI, and the AWS side on loopback.

The assemblies come from ``tools.demo.synthesize``, the code path of ``make demo``: three
``cdk synth`` runs of app.py in parallel (initial users, an update, a user missing from the
pool). Everything else in these tests drives the synthesized Lambda asset in a separate
process through :class:`constructs_lib.testing.Rehearsal`.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from constructs_lib.testing import AppStreamServer, AppStreamState, ResponseServer
from tools import demo


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Where the run's assemblies live (with their cache keys, as in ``.demo/``).

    Under pytest-xdist every worker sees the same directory (the run's shared temp root), so the
    three ``cdk synth`` runs happen once per run, not once per worker.
    """
    if worker_id == "master":
        return tmp_path_factory.mktemp("demo")
    shared = tmp_path_factory.getbasetemp().parent / "demo"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(scope="session")
def assemblies(demo_workdir: Path) -> Mapping[str, Path]:
    """app.py synthesized by ``node_modules/.bin/cdk synth`` for the demo's three variants.

    The first worker to get here synthesizes (cache off: a fresh synthesis every run) while the
    others wait on the lock, then read what it wrote.
    """
    if not demo.CDK_CLI.is_file():
        pytest.fail(f"the CDK CLI is not installed at {demo.CDK_CLI}: run `make setup` (make test does)")
    done = demo_workdir / "synthesized"
    with (demo_workdir / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            synthesis = demo.synthesize(demo.VARIANTS, demo_workdir, cache=False)
            assert sorted(synthesis.synthesized) == sorted(variant.name for variant in demo.VARIANTS)
            done.write_text("\n".join(synthesis.synthesized))
    return {variant.name: demo_workdir / variant.name for variant in demo.VARIANTS}


@pytest.fixture(scope="module")
def cfn() -> Iterator[ResponseServer]:
    """CloudFormation's ResponseURL side for one test module."""
    with ResponseServer() as server:
        yield server


@pytest.fixture
def appstream() -> Iterator[AppStreamServer]:
    """An empty local AppStream for one test."""
    with AppStreamServer(AppStreamState()) as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every end-to-end test is ``slow``: each needs the synthesized app and a Lambda process."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.slow)
