"""The rehearsal's clock (virtual waits) and its phase runner (dependency order, parallelism, cancellation)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from constructs_lib.testing._schedule import Control, Node, Outcome, RehearsalClock, join, run_phase


def test_a_lone_waiter_jumps_to_its_deadline_at_once() -> None:
    clock = RehearsalClock()
    me = clock.participant()
    started = clock.monotonic()
    assert me.wait_until(started + 3600) is False  # the deadline came, not the condition
    me.close()
    assert clock.monotonic() - started >= 3600
    assert 3599 < clock.skipped <= 3600
    assert clock.now() - time.time() >= 3599  # timestamps move on with it


def test_the_clock_does_not_jump_while_someone_works_nor_past_a_condition_that_holds() -> None:
    clock = RehearsalClock()
    worker = clock.participant()
    done = threading.Event()

    def work() -> None:
        time.sleep(0.3)  # real work: the clock may not skip over it
        done.set()
        worker.close()

    waiter = clock.participant()
    threading.Thread(target=work).start()
    assert waiter.wait_until(clock.monotonic() + 3600, done.is_set) is True
    assert clock.skipped == 0
    flag = threading.Event()
    flag.set()
    assert waiter.wait_until(clock.monotonic() + 3600, flag.is_set) is True  # holds already: no jump
    assert clock.skipped == 0
    waiter.close()


def test_waiters_wake_in_deadline_order_each_after_its_own_virtual_wait() -> None:
    clock = RehearsalClock()
    woke: list[tuple[str, float]] = []
    lock = threading.Lock()
    origin = clock.monotonic()
    parts = {name: clock.participant() for name in ("late", "early")}  # both take part before either waits

    def wait(name: str, seconds: float) -> None:
        parts[name].wait_until(origin + seconds)
        with lock:
            woke.append((name, clock.monotonic() - origin))
        parts[name].close()

    threads = [threading.Thread(target=wait, args=item) for item in (("late", 120), ("early", 60))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert [name for name, _ in woke] == ["early", "late"]
    assert 60 <= woke[0][1] < 61
    assert 120 <= woke[1][1] < 121


def node(key: str, after: str = "", action: Callable[[Control], Outcome] | None = None) -> Node:
    return Node(key, frozenset(after), action or (lambda control: Outcome(ok=True)))


def test_nodes_start_when_what_they_need_succeeded_and_all_ready_ones_start_at_once() -> None:
    clock = RehearsalClock()
    both = threading.Barrier(2, timeout=5)  # A and B must run at the same time, or it breaks

    def together(control: Control) -> Outcome:
        both.wait()
        return Outcome(ok=True)

    nodes = [node("C", "AB"), node("A", "", together), node("B", "", together), node("D", "C")]
    result = run_phase(clock, nodes)
    assert result.ok, result.outcomes
    assert set(result.started[:2]) == {"A", "B"}
    assert result.started[2:] == ["C", "D"]


def test_sequential_mode_asks_the_chooser_among_the_ready_nodes_one_at_a_time() -> None:
    clock = RehearsalClock()
    offered: list[list[str]] = []

    def choose(ready: list[str]) -> str:
        offered.append(list(ready))
        return ready[-1]

    result = run_phase(clock, [node("A"), node("B"), node("C", "A")], sequential=True, choose=choose)
    assert result.started == ["B", "A", "C"]
    assert offered == [["A", "B"], ["A"], ["C"]]


def test_a_failure_cancels_what_is_in_flight_and_starts_nothing_more() -> None:
    clock = RehearsalClock()

    def waits_an_hour(control: Control) -> Outcome:
        finished = control.wait_until(clock.monotonic() + 3600)
        return Outcome(ok=False, cancelled=control.cancelled) if control.cancelled else Outcome(ok=finished)

    def fails(control: Control) -> Outcome:
        time.sleep(0.05)
        return Outcome(ok=False)

    nodes = [node("Slow", "", waits_an_hour), node("Bad", "", fails), node("Later", "Bad")]
    result = run_phase(clock, nodes, stop_on_failure=True)
    assert result.failed() == ["Bad"]
    assert result.outcomes["Slow"].cancelled
    assert result.not_started == ["Later"]
    assert clock.skipped == 0  # the hour was never waited: the node was cancelled


def test_without_stop_on_failure_only_the_nodes_needing_a_failed_one_are_left_out() -> None:
    clock = RehearsalClock()

    def boom(control: Control) -> Outcome:
        raise RuntimeError("boom")

    result = run_phase(clock, [node("A", "", boom), node("B", "A"), node("C")])
    assert isinstance(result.outcomes["A"].error, RuntimeError)
    assert result.outcomes["C"].ok
    assert result.not_started == ["B"]
    assert not result.ok


def test_join_waits_as_a_participant_so_virtual_waits_of_others_still_pass() -> None:
    clock = RehearsalClock()
    retry = clock.participant()
    done = threading.Event()

    def later() -> None:
        retry.wait_until(clock.monotonic() + 60)  # Lambda's one-minute wait before a retry
        done.set()
        retry.close()

    threading.Thread(target=later).start()
    assert join(clock, done.is_set, timeout=10)
    assert 59 < clock.skipped <= 60


@pytest.mark.parametrize("seconds", [0.0, 0.05])
def test_control_sleep_is_real_and_cut_short_by_cancel(seconds: float) -> None:
    control = Control(RehearsalClock())
    assert control.sleep(seconds) is True
    control.cancel()
    assert control.sleep(10) is False
    control.participant.close()
