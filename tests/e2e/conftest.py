"""End-to-end fixtures: app.py synthesized once by the real CDK CLI, and the AWS side on loopback.

The assemblies come from ``tools.demo.synthesize``, the code path of ``make demo``: three
``cdk synth`` runs of app.py in parallel (initial users, an update, a user missing from the
pool). Everything else in these tests drives the synthesized Lambda asset in a separate
process through :class:`constructs_lib.testing.Rehearsal`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from constructs_lib.testing import AppStreamServer, AppStreamState, ResponseServer
from tools import demo


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's assemblies live (with their cache keys, as in ``.demo/``)."""
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="session")
def assemblies(demo_workdir: Path) -> Mapping[str, Path]:
    """app.py synthesized by ``node_modules/.bin/cdk synth`` for the demo's three variants."""
    if not demo.CDK_CLI.is_file():
        pytest.fail(f"the CDK CLI is not installed at {demo.CDK_CLI}: run `make setup` (make test does)")
    synthesis = demo.synthesize(demo.VARIANTS, demo_workdir, cache=False)
    assert sorted(synthesis.synthesized) == sorted(variant.name for variant in demo.VARIANTS)
    return synthesis.assemblies


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
