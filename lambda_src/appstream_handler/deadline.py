"""The function's time, split so that work stops early enough to undo it and answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from . import rules

CRHELPER_TIMER_LEAD = rules.CRHELPER_TIMER_LEAD
MAX_ANSWER_RESERVE = rules.MAX_ANSWER_RESERVE
ANSWER_RESERVE_FRACTION = rules.ANSWER_RESERVE_FRACTION


class Deadline:
    """A point in monotonic time; ``remaining()`` counts down to it."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left, negative once passed."""
        return self._end - self._clock()

    def expired(self, headroom: float = 0.0) -> bool:
        """True when fewer than ``headroom`` seconds are left."""
        return self.remaining() <= headroom


@dataclass(frozen=True)
class Budget:
    """Deadlines of one event: forward work, then undo, then the answer."""

    forward: Deadline
    undo: Deadline
    answer: Deadline

    @classmethod
    def from_remaining(cls, remaining_seconds: float, clock: Callable[[], float] = time.monotonic) -> Budget:
        """Split the function's remaining time.

        The answer keeps a reserve (at most 10 s) before crhelper's timer; forward work may use
        half of what is left, so that undoing it, which costs at most as many calls, still fits.
        """
        answer_end = max(0.0, remaining_seconds - CRHELPER_TIMER_LEAD)
        reserve = min(MAX_ANSWER_RESERVE, ANSWER_RESERVE_FRACTION * answer_end)
        undo_end = answer_end - reserve
        return cls(
            forward=Deadline(undo_end / 2, clock),
            undo=Deadline(undo_end, clock),
            answer=Deadline(answer_end, clock),
        )
