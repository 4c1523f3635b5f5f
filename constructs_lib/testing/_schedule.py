"""The rehearsal's clock and its phase runner: CloudFormation's parallelism, with virtual waits.

:class:`RehearsalClock` is real time plus the time the rehearsal skipped. Threads doing the
rehearsal's work take part in it (:meth:`RehearsalClock.participant`); a participant that has
to wait for a long time (a ServiceTimeout, Lambda's retry delay) calls
:meth:`Participant.wait_until` instead of sleeping. When every participant is waiting and no
waiter's condition holds, nothing can happen before the earliest deadline, so the clock jumps
to it: a wait of an hour takes no time, and happens after everything that really runs.

:func:`run_phase` runs the actions of one phase of a stack operation in dependency order, each
in its own thread as soon as what it needs has succeeded (CloudFormation's parallelism), or one
at a time in an order the caller chooses (sequential mode). It can stop at the first failure
and cancel what is in flight. Standard library only.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Control", "Node", "Outcome", "Participant", "PhaseResult", "RehearsalClock", "join", "run_phase"]

_POLL = 0.01


class RehearsalClock:
    """CloudFormation's time in a rehearsal: real time plus the waits the rehearsal skipped.

    :meth:`monotonic` counts seconds from the clock's creation; :meth:`now` is the same instant
    as seconds since the epoch (for timestamps). :attr:`skipped` is the total time jumped over.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._wall_origin = time.time()
        self._origin = time.monotonic()
        self._skipped = 0.0
        self._working = 0
        self._waiting: dict[int, tuple[float, Callable[[], bool] | None]] = {}
        self._keys = itertools.count()

    def monotonic(self) -> float:
        """Seconds since the clock was made, skipped time included."""
        return time.monotonic() - self._origin + self._skipped

    def now(self) -> float:
        """The current instant as seconds since the epoch (skipped time included)."""
        return self._wall_origin + self.monotonic()

    @property
    def skipped(self) -> float:
        """Seconds of waiting the clock has jumped over so far."""
        return self._skipped

    def participant(self) -> Participant:
        """Take part: the caller (or the thread it is about to start) now counts as working."""
        with self._condition:
            self._working += 1
        return Participant(self)

    def wake(self) -> None:
        """Wake every waiter to look at its condition again."""
        with self._condition:
            self._condition.notify_all()

    def _release(self) -> None:
        with self._condition:
            self._working -= 1
            self._condition.notify_all()

    def _wait(self, deadline: float, until: Callable[[], bool] | None) -> bool:
        key = next(self._keys)
        with self._condition:
            self._working -= 1
            self._waiting[key] = (deadline, until)
            try:
                while True:
                    if until is not None and until():
                        return True
                    if self.monotonic() >= deadline:
                        return False
                    if self._working == 0:
                        self._skip_locked()
                        if self.monotonic() >= deadline:
                            continue
                    self._condition.wait(min(_POLL, max(0.0, deadline - self.monotonic())))
            finally:
                del self._waiting[key]
                self._working += 1
                self._condition.notify_all()

    def _skip_locked(self) -> None:
        """Nothing runs: jump to the earliest deadline, unless some waiter can go on now."""
        if any(until is not None and until() for _, until in self._waiting.values()):
            return
        earliest = min((deadline for deadline, _ in self._waiting.values()), default=math.inf)
        now = self.monotonic()
        if math.isfinite(earliest) and earliest > now:
            self._skipped += earliest - now
            self._condition.notify_all()


class Participant:
    """One thread's part in a :class:`RehearsalClock`; :meth:`close` it when the thread is done."""

    def __init__(self, clock: RehearsalClock) -> None:
        self.clock = clock
        self._closed = False

    def wait_until(self, deadline: float, until: Callable[[], bool] | None = None) -> bool:
        """Wait until ``clock.monotonic() >= deadline`` or ``until()`` holds; return whether ``until()`` held.

        ``until`` is called with the clock's lock held: it must not use the clock.
        """
        return self.clock._wait(deadline, until)

    def close(self) -> None:
        """Stop taking part (idempotent)."""
        if not self._closed:
            self._closed = True
            self.clock._release()


@dataclass
class Outcome:
    """What an action of a phase came to."""

    ok: bool
    cancelled: bool = False
    error: BaseException | None = None


class Control:
    """Handed to each action: its part in the clock, and whether the phase cancelled it."""

    def __init__(self, clock: RehearsalClock) -> None:
        self.clock = clock
        self.participant = clock.participant()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether CloudFormation has cancelled this action (another resource failed)."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Cancel the action: its waits end at once."""
        self._cancelled.set()
        self.clock.wake()

    def sleep(self, seconds: float) -> bool:
        """Really wait ``seconds`` (a slow resource), or less if cancelled; return False if cancelled."""
        return not self._cancelled.wait(max(0.0, seconds))

    def wait_until(self, deadline: float, until: Callable[[], bool] | None = None) -> bool:
        """Wait on the clock until ``deadline`` (virtual), ``until()`` holds or the action is cancelled.

        Returns True unless the deadline passed first.
        """
        return self.participant.wait_until(
            deadline, lambda: self._cancelled.is_set() or (until is not None and until())
        )


@dataclass(frozen=True)
class Node:
    """One action of a phase: ``after`` names the nodes of the same phase that must succeed first."""

    key: str
    after: frozenset[str]
    action: Callable[[Control], Outcome]


@dataclass
class PhaseResult:
    """Every node's outcome, the order they started in, and the nodes that never started."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every node ran and succeeded."""
        return not self.not_started and all(outcome.ok for outcome in self.outcomes.values())

    def failed(self) -> list[str]:
        """The nodes that failed (not the cancelled ones), in start order."""
        return [key for key in self.started if not self.outcomes[key].ok and not self.outcomes[key].cancelled]


def _work(key: str, node: Node, control: Control, done: queue.SimpleQueue[tuple[str, Outcome]]) -> None:
    try:
        outcome = node.action(control)
    except BaseException as error:  # reported as the node's failure
        outcome = Outcome(ok=False, error=error)
    done.put((key, outcome))
    control.participant.close()  # after the put: the runner sees the outcome before the clock may jump


def run_phase(
    clock: RehearsalClock,
    nodes: Sequence[Node],
    *,
    sequential: bool = False,
    choose: Callable[[list[str]], str] | None = None,
    stop_on_failure: bool = False,
) -> PhaseResult:
    """Run ``nodes`` in dependency order; return when none runs and none can start any more.

    In parallel mode every ready node starts at once (in the order given); with
    ``sequential``, one node runs at a time and ``choose`` picks the next among the ready ones
    (default: the first). With ``stop_on_failure``, the first failure starts nothing more and
    cancels the nodes in flight. A node whose prerequisites failed never starts.
    """
    by_key = {node.key: node for node in nodes}
    pending = [node.key for node in nodes]
    running: dict[str, Control] = {}
    result = PhaseResult()
    done: queue.SimpleQueue[tuple[str, Outcome]] = queue.SimpleQueue()
    stopping = False
    pick = choose or (lambda ready: ready[0])
    me = clock.participant()
    try:
        while True:
            if not stopping:
                ready = [
                    key
                    for key in pending
                    if all(key_ in result.outcomes and result.outcomes[key_].ok for key_ in by_key[key].after)
                ]
                if sequential:
                    ready = [pick(ready)] if ready and not running else []
                for key in ready:
                    pending.remove(key)
                    result.started.append(key)
                    control = Control(clock)
                    running[key] = control
                    thread = threading.Thread(
                        target=_work, args=(key, by_key[key], control, done), name=f"rehearsal-{key}", daemon=True
                    )
                    thread.start()
            if not running:
                break
            me.wait_until(math.inf, lambda: not done.empty())
            key, outcome = done.get()
            running.pop(key)
            result.outcomes[key] = outcome
            if not outcome.ok and not outcome.cancelled and stop_on_failure and not stopping:
                stopping = True
                for control in running.values():
                    control.cancel()
    finally:
        me.close()
    result.not_started = pending
    return result


def join(clock: RehearsalClock, ready: Callable[[], bool], *, timeout: float | None = None) -> bool:
    """Wait as a participant until ``ready()`` holds, or ``timeout`` real seconds passed; return ``ready()``."""
    started = time.monotonic()

    def over() -> bool:
        return ready() or (timeout is not None and time.monotonic() - started > timeout)

    me = clock.participant()
    try:
        me.wait_until(math.inf, over)
    finally:
        me.close()
    return ready()
