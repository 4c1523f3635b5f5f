"""Fixtures for the construct tests.

Synthesizing goes through jsii and is slow: tests share synthesized stacks through
module-scoped fixtures and only build new apps where the test is about building.
"""

from __future__ import annotations

from collections.abc import Callable

import aws_cdk as cdk
import pytest
from construct_helpers import new_stack


@pytest.fixture(scope="session")
def make_stack() -> Callable[..., cdk.Stack]:
    """Build a stack ``Main`` (account 123456789012, eu-west-1) in a new App with cdk.json's flags."""
    return new_stack
