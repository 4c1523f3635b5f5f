"""Fixtures shared across test trees (helpers live in ``tests/helpers/``, imported as modules)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from constructs_lib.testing import ResponseServer


@pytest.fixture(scope="session")
def response_server() -> Iterator[ResponseServer]:
    """CloudFormation's ResponseURL side over HTTPS with a test CA: records every response PUT."""
    with ResponseServer() as server:
        yield server
