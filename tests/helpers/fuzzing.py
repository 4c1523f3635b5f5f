"""Hypothesis settings for the handler's property-based tests: small by default, long when marked slow.

Two named profiles, registered once: ``handler-quick`` (a handful of examples, the default run)
and ``handler-long`` (hundreds, for tests marked ``@pytest.mark.slow``). Use the decorators
:data:`quick` and :data:`long` rather than ``settings(max_examples=...)`` in test modules, so
that one place says how much fuzzing a run does. ``HANDLER_FUZZ_EXAMPLES`` overrides the quick
profile's count (e.g. ``HANDLER_FUZZ_EXAMPLES=200`` for a deeper local run).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["long", "quick", "stateful", "stateful_long"]

_SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "handler-quick",
    max_examples=int(os.environ.get("HANDLER_FUZZ_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=_SUPPRESSED,
)
settings.register_profile("handler-long", max_examples=300, deadline=None, suppress_health_check=_SUPPRESSED)
settings.register_profile(
    "handler-stateful",
    max_examples=int(os.environ.get("HANDLER_FUZZ_EXAMPLES", "6")),
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=[*_SUPPRESSED, HealthCheck.filter_too_much],
)
settings.register_profile(
    "handler-stateful-long",
    max_examples=60,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[*_SUPPRESSED, HealthCheck.filter_too_much],
)

quick = settings(settings.get_profile("handler-quick"))
"""A few examples: every run."""
long = settings(settings.get_profile("handler-long"))
"""Many examples: for tests marked ``@pytest.mark.slow``."""
stateful = settings(settings.get_profile("handler-stateful"))
"""A few short histories of the stateful model (``stateful_long``: many longer ones, marked slow)."""
stateful_long = settings(settings.get_profile("handler-stateful-long"))
