"""The handler's test fixtures: one local AWS (AppStream, DynamoDB, CloudFormation) per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.world import World, running_world


@pytest.fixture(scope="module")
def shared_world() -> Iterator[World]:
    """The three local services for one test module (about a second to start)."""
    with running_world() as world:
        yield world


@pytest.fixture
def world(shared_world: World) -> World:
    """A fresh account for one test: empty AppStream, empty state table, no stacks, no faults."""
    shared_world.reset()
    return shared_world
