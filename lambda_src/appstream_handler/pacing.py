"""Pacing AppStream calls to the rate AppStream allows: as fast as it accepts, and no faster.

AppStream's API request rates are per account and unpublished; a busy account may sustain about
one call per second. Throttling answers (``ThrottlingException``) change nothing, but each costs a
call and time. :class:`Pacer` is shared by every batch of one event (all threads of the pool take
their turn from it), so the pool's concurrency backs off with it:

1. Until the first throttle, calls go out unpaced (AppStream's burst allowance is used up).
2. At a throttle, AppStream's bucket is empty. The pacer finds how long it takes to refill one
   token by doubling the wait before a single probe call until one is accepted (the refill time
   lies between the last two waits) and paces at the midpoint rate.
3. Paced, every accepted call raises the rate a little (0.5 %), probing for more; every throttle
   sets it to the rate the last accepted calls were actually accepted at (the server's refill
   rate, since calls were going faster than that), a little lower.

Measured against a token-bucket AppStream (``make bench``), this keeps a Create of 1,000 users
within about 1.15x of the rate floor with about one throttled call per ten accepted; see the
README's benchmarks. The clock and sleep are injected (tests drive them).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

FIRST_PROBE_WAIT = 0.1
"""Seconds before the first probe after a throttle (then doubled until a call is accepted)."""
MAX_PROBE_WAIT = 30.0
PROBE_RAISE = 0.005
"""Rate raised by this fraction after each accepted call, to find room for more."""
THROTTLE_MARGIN = 0.95
"""After a throttle: this fraction of the rate the last accepted calls came at."""
MEASURED_CALLS = 8
"""Accepted calls the rate is measured over."""
MIN_RATE = 0.02
"""Slowest pace (one call in 50 s)."""
PROBE_ANSWER_WAIT = 1.0
"""Real seconds a call waits at most, at a time, for the answer to another thread's probe."""


class Pacer:
    """One event's pace of AppStream calls, shared by its threads."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        # Reentrant: wait_turn asks ``must_start_by`` under it, which may read the pace again.
        self._lock = threading.RLock()
        self._probe_answered = threading.Condition(self._lock)
        self._rate: float | None = None
        self._next_at = 0.0
        self._probe_wait: float | None = None
        """While probing: the current wait after the bucket was found empty."""
        self._probe_from = 0.0
        self._probe_taken = False
        self._accepted_at: deque[float] = deque(maxlen=MEASURED_CALLS)
        self.accepted = 0
        self.throttled = 0
        self._limited_since: float | None = None
        self._accepted_since_limited = 0

    @property
    def rate(self) -> float | None:
        """Calls per second the pacer goes at; None until AppStream first throttled."""
        with self._lock:
            return self._rate

    @property
    def limited(self) -> bool:
        """True once AppStream has throttled this event's calls."""
        return self.throttled > 0

    def planning_rate(self) -> float | None:
        """The rate to plan the rest with: the pace, or what was really achieved since the first
        throttle if that is lower (the calls also wait for everything else the event does)."""
        with self._lock:
            rate = self._rate
            if rate is None or self._limited_since is None or self._accepted_since_limited < 3:
                return rate
            span = self._clock() - self._limited_since
            achieved = self._accepted_since_limited / span if span > 0 else rate
            return min(rate, achieved)

    def seconds_for(self, calls: int) -> float:
        """How long ``calls`` more calls take at the planning rate (0 when unpaced)."""
        rate = self.planning_rate()
        if not rate:
            return 0.0
        return calls / rate

    def wait_turn(self, must_start_by: Callable[[float], bool]) -> bool:
        """Block until this call may go; False (without waiting) if its turn comes too late.

        ``must_start_by(start)`` says whether a call starting at monotonic time ``start`` still
        fits (the caller's deadline and window).
        """
        while True:
            with self._lock:
                now = self._clock()
                if self._probe_wait is not None:
                    due = self._probe_from + self._probe_wait
                    if self._probe_taken:
                        # Another thread's probe is out: wait for its answer (real time, no polling
                        # of the clock), then look again.
                        if not must_start_by(now):
                            return False
                        self._probe_answered.wait(PROBE_ANSWER_WAIT)
                        continue
                    if now >= due:
                        if not must_start_by(now):
                            return False
                        self._probe_taken = True
                        return True
                    wait = due - now
                    start = due
                elif self._rate is None:
                    return must_start_by(now)
                else:
                    start = max(now, self._next_at)
                    if not must_start_by(start):
                        return False
                    self._next_at = start + 1.0 / self._rate
                    wait = start - now
                    if wait <= 0:
                        return True
            if not must_start_by(start):
                return False
            self._sleep(wait)
            if self._probe_wait is None and self._rate is not None and wait > 0:
                return True

    def on_accepted(self) -> None:
        """A call went through (whatever its items said)."""
        with self._lock:
            now = self._clock()
            self.accepted += 1
            self._accepted_at.append(now)
            if self._limited_since is not None:
                self._accepted_since_limited += 1
            if self._probe_wait is not None:
                refill = 0.75 * self._probe_wait  # between the last two waits: (wait / 2, wait]
                self._rate = max(MIN_RATE, 1.0 / max(refill, 1e-3))
                self._probe_wait = None
                self._next_at = now + 1.0 / self._rate
                self._probe_answered.notify_all()
            elif self._rate is not None:
                self._rate *= 1.0 + PROBE_RAISE

    def on_throttled(self) -> None:
        """AppStream answered ``ThrottlingException``: nothing of the call was applied."""
        with self._lock:
            now = self._clock()
            self.throttled += 1
            if self._limited_since is None:
                self._limited_since = now
            if self._probe_wait is not None:
                if self._probe_taken:
                    self._probe_wait = min(MAX_PROBE_WAIT, self._probe_wait * 2)
                    self._probe_taken = False
                    self._probe_answered.notify_all()
                return
            if self._rate is None or len(self._accepted_at) < 3:
                self._probe_wait = FIRST_PROBE_WAIT
                self._probe_from = now
                self._probe_taken = False
                return
            span = now - self._accepted_at[0]
            measured = (len(self._accepted_at) - 1) / span if span > 0 else self._rate
            self._rate = max(MIN_RATE, min(self._rate, measured) * THROTTLE_MARGIN)
            self._next_at = max(self._next_at, now + 1.0 / self._rate)

    def on_other_answer(self) -> None:
        """A call ended otherwise (a server error, a lost connection): a probe it was is not answered."""
        with self._lock:
            if self._probe_wait is not None and self._probe_taken:
                self._probe_taken = False
                self._probe_answered.notify_all()

    def describe(self) -> str:
        """``about 0.9 calls/s`` (or ``no rate measured``), for reasons and logs."""
        rate = self.rate
        return f"about {rate:.2g} calls/s" if rate else "no rate measured"
