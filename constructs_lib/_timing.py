"""How long the shared function may run, and how long CloudFormation waits for an answer.

The handler splits the time Lambda gives it: forward work may use half of what is left after
keeping up to 10 s to answer, so that undoing that work (at most as many calls) fits in the
other half. One AppStream call attempt lasts at most ~13 s (3 s connect + 10 s read timeout).

The function's timeout, unless given, is sized for the largest shard it serves::

    batches  = ceil(users in the shard / 25)                   # BatchAssociateUserStack: 1-25 items
    rounds   = ceil(batches / max_concurrency)                 # calls run max_concurrency at a time
    pages    = ceil(users declared on that AppStream stack / 500) + 1
                                                               # DescribeUserStackAssociations, +1 for
                                                               # associations made outside this stack
    overhead = 2 s * (5 + pages)                               # 2 CloudFormation reads, 3 state-store
                                                               # calls, the Describe pages
    calls    = max(13 s * rounds,                              # every batch call at its worst case, or
                   batches / 1 call per second)                # AppStream paced to the assumed rate
    work     = overhead + 30 s + calls                         # 30 s: a user or stack created in the
                                                               # same deploy may not be visible yet
    needed   = 60 s + 2 * work                                 # 2x: forward half + undo half; 60 s for
                                                               # start-up and the answer
    timeout  = the first of 2, 3, 4, 5, 7, 10, 15 minutes that is >= needed (15 min at most)

The assumed rate (:data:`rules.ASSUMED_CALLS_PER_SECOND`, one call per second) is what a busy
account sustains under AppStream's unpublished per-account limit; at that rate one shard of 3,800
users (152 batches) fits in the largest timeout, and the handler stops early enough to undo at the
same pace if the rate is lower still.

Rounding to a few steps keeps the timeout (and every shard's ``ServiceTimeout``, derived from it)
unchanged when a user is added, so that adding a user updates one shard only. A token
``max_concurrency`` counts as 1; a token-encoded user list as :data:`UNKNOWN_LIST_USERS` users.

``ServiceTimeout`` (how long CloudFormation waits for the answer before failing), unless given::

    service_timeout = min(2 * timeout + 120 s, 3600 s)

covering the run with room to spare (the function's asynchronous invoke config allows no Lambda
retry and at most 60 s in Lambda's queue, so no run starts after that), and two minutes for
delivering the answer. A lost answer then fails the deployment in minutes instead of
CloudFormation's default hour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from constructs_lib._handler import rules

CALL_SECONDS = rules.CALL_SECONDS
"""Worst case of one AppStream call attempt (the handler's connect + read timeouts)."""
BASE_SECONDS = 60
OVERHEAD_CALL_SECONDS = 2
"""What each CloudFormation read and state-store call is budgeted (they are small and fast)."""
FIXED_CALLS = 5
"""Per event: DescribeStacks, DescribeStackResource, two state-store reads and the last write."""
BATCH_SIZE = rules.BATCH_LIMIT
DESCRIBE_PAGE_SIZE = rules.DESCRIBE_PAGE_SIZE
TIMEOUT_STEPS: tuple[int, ...] = (120, 180, 240, 300, 420, 600, 900)
MIN_TIMEOUT_SECONDS = 60
"""Smallest timeout accepted from the caller. The handler keeps up to 10 s to answer, gives forward
work half of the rest and starts no call with less than 13 s left in its half: below about 40 s
it could not make a single call, so a Delete would fail; 60 s leaves room for a few rounds."""
MAX_TIMEOUT_SECONDS = rules.LAMBDA_TIMEOUT_LIMIT
"""Lambda's maximum."""
SERVICE_TIMEOUT_MARGIN_SECONDS = 60
"""A given ``service_timeout`` must exceed the function's timeout by at least this much."""
MAX_SERVICE_TIMEOUT_SECONDS = rules.SERVICE_TIMEOUT_LIMIT
UNKNOWN_LIST_USERS = 1000
PLAN_MARGIN = rules.PLAN_MARGIN


def shard_work_seconds(users: int, concurrency: int, stack_users: int) -> int:
    """Worst-case seconds of forward work for one event of a shard of ``users`` users."""
    batches = math.ceil(users / BATCH_SIZE)
    rounds = math.ceil(batches / max(1, concurrency))
    pages = math.ceil(stack_users / DESCRIBE_PAGE_SIZE) + 1
    overhead = OVERHEAD_CALL_SECONDS * (FIXED_CALLS + pages)
    calls = max(CALL_SECONDS * rounds, math.ceil(batches / rules.ASSUMED_CALLS_PER_SECOND))
    return overhead + math.ceil(rules.NOT_FOUND_WINDOW) + calls


def needed_seconds(work_seconds: int) -> int:
    """Function time needed for ``work_seconds`` of forward work, its undo, start-up and answer."""
    return BASE_SECONDS + 2 * work_seconds


def function_timeout_seconds(needed: int) -> int:
    """The first of :data:`TIMEOUT_STEPS` that covers ``needed`` (the last one at most)."""
    return next((step for step in TIMEOUT_STEPS if step >= needed), TIMEOUT_STEPS[-1])


def default_service_timeout_seconds(function_timeout: int) -> int:
    """``ServiceTimeout`` for a function timeout: twice the run, plus two minutes of margin."""
    return min(2 * function_timeout + 120, MAX_SERVICE_TIMEOUT_SECONDS)


def needed_for_shards(shards: Iterable[tuple[str, int, int]]) -> int:
    """Function time needed for the largest of ``shards``: (AppStream stack key, users, max_concurrency).

    Users are summed per AppStream stack for the Describe pages (every association of the stack
    on the same AppStream stack reads the same associations).
    """
    shards = list(shards)
    per_stack: dict[str, int] = {}
    for key, users, _ in shards:
        per_stack[key] = per_stack.get(key, 0) + users
    work = max(
        (shard_work_seconds(users, concurrency, per_stack[key]) for key, users, concurrency in shards), default=0
    )
    return needed_seconds(work)


def users_that_fit(timeout_seconds: int, calls_per_second: float) -> int:
    """About how many users one event can associate at a sustained AppStream rate, and still undo.

    The handler gives forward work half of the function's time (after up to 10 s kept to answer)
    and plans with a 1.2x margin, starting no call with less than one call's time left::

        forward = (timeout - 0.5 s - min(10 s, 20 % of it)) / 2
        users   = 25 * rate * (forward - 13 s) / 1.2

    AppStream's burst allowance (the first calls go unpaced) adds a few batches on top.
    """
    answer_end = timeout_seconds - rules.CRHELPER_TIMER_LEAD
    forward = (answer_end - min(rules.MAX_ANSWER_RESERVE, rules.ANSWER_RESERVE_FRACTION * answer_end)) / 2
    batches = calls_per_second * max(0.0, forward - rules.CALL_SECONDS) / PLAN_MARGIN
    return int(batches) * BATCH_SIZE
