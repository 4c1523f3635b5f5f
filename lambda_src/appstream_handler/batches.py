"""AppStream calls: describe what exists, and run batch (dis)associations, paced and retried here.

Every item of a batch ends in exactly one bucket of an :class:`Outcome` (applied, gone, failed,
unknown, not started), which is what makes an exact undo possible.

All retrying happens here, on the injected clock, not in botocore (the client makes one attempt
per call): throttling is paced by the event's :class:`~.pacing.Pacer` and retried until the
deadline (a throttled call changes nothing); 5xx answers, dropped connections and timeouts are
retried with backoff a few times (batch calls are idempotent: a call that landed and is sent
again changes nothing more); ``INTERNAL_ERROR`` items (HTTP 200) are retried a bounded number of
times; on association, ``USER_NAME_NOT_FOUND`` / ``STACK_NOT_FOUND`` items are retried for up to
:data:`rules.NOT_FOUND_WINDOW` seconds, since AppStream may not see a user or stack created
moments before.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import rules
from .deadline import Deadline
from .model import Association
from .pacing import Pacer

logger = logging.getLogger(__name__)

BATCH_LIMIT = rules.BATCH_LIMIT
DESCRIBE_PAGE_SIZE = rules.DESCRIBE_PAGE_SIZE
RETRYABLE_ITEM_CODES = rules.RETRYABLE_ITEM_CODES
GONE_ITEM_CODES = rules.NOT_FOUND_ITEM_CODES
"""On disassociation these mean there is nothing left to remove."""
TIME_RAN_OUT = "TIME_RAN_OUT"
THROTTLED = "ThrottlingException"
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)
"""Error codes that mean "too many requests" (botocore's standard mode's list)."""
CALL_HEADROOM = float(rules.CALL_SECONDS)
"""No call starts with less than this left (one attempt's connect + read timeouts)."""
TRANSIENT_ATTEMPTS = 5
"""Attempts of a call that failed with a 5xx answer, a dropped connection or a timeout."""
TRANSIENT_BASE_DELAY = 0.5
TRANSIENT_MAX_DELAY = 8.0
NOT_FOUND_BASE_DELAY = 0.5
NOT_FOUND_MAX_DELAY = 5.0


class Operation(Enum):
    """The two batch operations, named by their boto3 method."""

    ASSOCIATE = "batch_associate_user_stack"
    DISASSOCIATE = "batch_disassociate_user_stack"


@dataclass(frozen=True)
class ItemRetry:
    """How often, and how patiently, ``INTERNAL_ERROR`` items are tried again."""

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 2.0

    def delay(self, retry: int) -> float:
        """Backoff with equal jitter before retry number ``retry`` (0-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0**retry)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass
class Outcome:
    """Where each item of one operation ended."""

    applied: set[Association] = field(default_factory=set)
    gone: set[Association] = field(default_factory=set)
    failed: dict[Association, str] = field(default_factory=dict)
    unknown: dict[Association, str] = field(default_factory=dict)
    not_started: set[Association] = field(default_factory=set)
    messages: dict[str, str] = field(default_factory=dict)
    throttled_out: bool = False
    """Some items were not started (or given up) because AppStream kept throttling."""

    @property
    def ok(self) -> bool:
        """True when every item reached its goal (applied, or already gone)."""
        return not (self.failed or self.unknown or self.not_started)

    def problems(self) -> dict[Association, str]:
        """Each item that did not reach its goal, with its error label."""
        labelled = dict(self.failed)
        labelled.update(self.unknown)
        label = THROTTLED if self.throttled_out else TIME_RAN_OUT
        labelled.update(dict.fromkeys(self.not_started, label))
        return labelled


class DescribeFailed(Exception):
    """DescribeUserStackAssociations could not be read; nothing was changed."""

    def __init__(self, stack_name: str, label: str, message: str) -> None:
        self.stack_name = stack_name
        self.label = label
        self.message = message
        super().__init__(f"{label} reading the associations of stack {stack_name}")


def chunks(items: Sequence[Association], size: int = BATCH_LIMIT) -> Iterator[list[Association]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _to_api(item: Association, send_email: bool | None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "StackName": item.stack_name,
        "UserName": item.user_name,
        "AuthenticationType": item.authentication_type,
    }
    if send_email is not None:
        request["SendEmailNotification"] = send_email
    return request


def _from_api(raw: Mapping[str, Any]) -> Association:
    return Association(str(raw.get("StackName")), str(raw.get("UserName")), str(raw.get("AuthenticationType")))


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "ClientError"))


def _is_server_side(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return isinstance(status, int) and (status >= 500 or status == 429)


class _Gave(Exception):
    """A call that could not be made: ``label`` and whether it may have landed."""

    def __init__(self, label: str, message: str, *, maybe_landed: bool, throttled: bool = False) -> None:
        self.label = label
        self.message = message
        self.maybe_landed = maybe_landed
        self.throttled = throttled
        super().__init__(label)


class AppStreamRunner:
    """Runs one event's AppStream calls: paced, retried, counted. Use as a context manager."""

    def __init__(
        self,
        client: Any,
        *,
        max_concurrency: int,
        item_retry: ItemRetry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        pacer: Pacer | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._sleep = sleep
        self._max_concurrency = max(1, max_concurrency)
        self._item_retry = item_retry or ItemRetry()
        self._lock = threading.Lock()
        self.pacer = pacer or Pacer(clock=clock, sleep=sleep)
        """The event's pace; shared by the forward work and the undo."""
        self.calls: Counter[str] = Counter()
        """Calls sent, by operation (throttled and retried ones included)."""

    def __enter__(self) -> AppStreamRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _count(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1

    def _call(
        self,
        operation: str,
        method: Callable[..., Any],
        deadline: Deadline,
        window_end: float | None,
        admit: Callable[[float], bool] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One API call, paced and retried until it is answered, or raise :class:`_Gave`.

        ``admit(start)``, if given, is asked last whether the call may start at ``start``.
        """
        transient = 0

        def fits(start: float) -> bool:
            left = deadline.remaining() - (start - self._clock())
            if left <= CALL_HEADROOM or (window_end is not None and start >= window_end):
                return False
            return admit is None or admit(start)

        while True:
            if not self.pacer.wait_turn(fits):
                raise _Gave(
                    THROTTLED if self.pacer.limited else TIME_RAN_OUT,
                    "",
                    maybe_landed=False,
                    throttled=self.pacer.limited,
                )
            self._count(operation)
            try:
                response = method(**kwargs)
            except ClientError as error:
                code = _code(error)
                message = str(error.response.get("Error", {}).get("Message", ""))
                if code in THROTTLING_CODES:
                    self.pacer.on_throttled()
                    continue
                self.pacer.on_other_answer()
                if not _is_server_side(error):
                    raise _Gave(code, message, maybe_landed=False) from None
                label, maybe_landed = code, True
            except BotoCoreError as error:
                self.pacer.on_other_answer()
                label, message, maybe_landed = type(error).__name__, "could not reach AppStream", True
            else:
                self.pacer.on_accepted()
                return response
            transient += 1
            delay = min(TRANSIENT_MAX_DELAY, TRANSIENT_BASE_DELAY * 2.0 ** (transient - 1))
            if transient >= TRANSIENT_ATTEMPTS or not fits(self._clock() + delay):
                raise _Gave(label, message, maybe_landed=maybe_landed)
            logger.info("%s: %s, trying again in %.1f s", operation, label, delay)
            self._sleep(delay)

    def existing(self, stack_names: Iterable[str], deadline: Deadline) -> set[Association]:
        """Every association that exists now on the given stacks, whatever its user's type."""
        found: set[Association] = set()
        for stack_name in sorted(set(stack_names)):
            token: str | None = None
            while True:
                request: dict[str, Any] = {"StackName": stack_name, "MaxResults": DESCRIBE_PAGE_SIZE}
                if token:
                    request["NextToken"] = token
                try:
                    page = self._call(
                        "DescribeUserStackAssociations",
                        self._client.describe_user_stack_associations,
                        deadline,
                        None,
                        **request,
                    )
                except _Gave as gave:
                    if gave.label == "ResourceNotFoundException":
                        break  # no stack, no associations
                    detail = gave.message or (
                        "the function's time ran out" if gave.label in (TIME_RAN_OUT, THROTTLED) else ""
                    )
                    raise DescribeFailed(stack_name, gave.label, detail) from None
                found.update(_from_api(raw) for raw in page.get("UserStackAssociations", []))
                token = page.get("NextToken")
                if not token:
                    break
        return found

    def run_batch(
        self,
        operation: Operation,
        batch: Sequence[Association],
        *,
        send_email: bool | None,
        deadline: Deadline,
        window_end: float | None = None,
        awaits: Callable[[Association, str], bool] = lambda item, code: False,
        admit: Callable[[float], bool] | None = None,
    ) -> Outcome:
        """One batch call of at most 25 items, with its item retries; every item ends in one bucket.

        ``window_end`` (monotonic seconds) bounds how long this batch may take, retries included.
        ``admit(start)`` says whether the batch may still begin at ``start`` (asked until its
        first attempt is answered; once items have landed, their retries go on).
        ``awaits(item, code)`` says whether a not-found answer for an item may be AppStream catching up
        with a user or stack the same deploy created (tried again within the window) or is final.
        """
        outcome = Outcome()
        pending = list(batch)
        method = getattr(self._client, operation.value)
        internal_errors = 0
        first_not_found: float | None = None
        attempt = 0
        last: dict[Association, str] = {}
        while True:
            try:
                response = self._call(
                    operation.name,
                    method,
                    deadline,
                    window_end,
                    admit if attempt == 0 else None,
                    UserStackAssociations=[_to_api(item, send_email) for item in pending],
                )
            except _Gave as gave:
                if gave.message:
                    outcome.messages.setdefault(gave.label, gave.message)
                if gave.throttled or gave.label == TIME_RAN_OUT:
                    if attempt == 0:
                        outcome.not_started.update(pending)
                        outcome.throttled_out = gave.throttled
                    else:
                        outcome.failed.update({item: last.get(item, gave.label) for item in pending})
                elif gave.maybe_landed:
                    outcome.unknown.update(dict.fromkeys(pending, gave.label))
                else:
                    outcome.failed.update(dict.fromkeys(pending, gave.label))
                return outcome
            attempt += 1
            retry, not_found = self._sort_items(operation, pending, response.get("errors") or [], outcome)
            final = {item: code for item, code in not_found.items() if not awaits(item, code)}
            outcome.failed.update(final)
            not_found = {item: code for item, code in not_found.items() if item not in final}
            now = self._clock()
            if not_found and first_not_found is None:
                first_not_found = now
            if not_found and now - (first_not_found or now) >= rules.NOT_FOUND_WINDOW:
                outcome.failed.update(not_found)
                not_found = {}
            if retry:
                internal_errors += 1
                if internal_errors >= self._item_retry.attempts:
                    outcome.failed.update(dict.fromkeys(retry, "INTERNAL_ERROR"))
                    retry = []
            pending = [*retry, *not_found]
            last = {**dict.fromkeys(retry, "INTERNAL_ERROR"), **not_found}
            if not pending:
                return outcome
            delay = self._item_retry.delay(min(attempt - 1, 8))
            if not_found and not retry:
                delay = min(NOT_FOUND_MAX_DELAY, NOT_FOUND_BASE_DELAY * 2.0 ** min(attempt - 1, 6))
            room = deadline.remaining() - CALL_HEADROOM
            if window_end is not None:
                room = min(room, window_end - now)
            if room <= 0:
                outcome.failed.update({item: last.get(item, "INTERNAL_ERROR") for item in pending})
                return outcome
            self._sleep(min(delay, room))

    @staticmethod
    def _sort_items(
        operation: Operation, sent: list[Association], errors: list[Mapping[str, Any]], outcome: Outcome
    ) -> tuple[list[Association], dict[Association, str]]:
        """File each sent item into ``outcome``; return the ones to retry (INTERNAL_ERROR, not found yet)."""
        codes: dict[Association, str] = {}
        unmatched = False
        for error in errors:
            item = _from_api(error.get("UserStackAssociation") or {})
            code = str(error.get("ErrorCode", "UNKNOWN_ERROR"))
            if item in sent:
                codes[item] = code
                outcome.messages.setdefault(code, str(error.get("ErrorMessage", "")))
            else:
                unmatched = True
        retry: list[Association] = []
        not_found: dict[Association, str] = {}
        for item in sent:
            item_code = codes.get(item)
            if item_code is None:
                if unmatched:
                    outcome.unknown[item] = "UNMATCHED_ERROR_ITEM"
                else:
                    outcome.applied.add(item)
            elif item_code in RETRYABLE_ITEM_CODES:
                retry.append(item)
            elif item_code in GONE_ITEM_CODES:
                if operation is Operation.DISASSOCIATE:
                    outcome.gone.add(item)
                else:
                    not_found[item] = item_code
            else:
                outcome.failed[item] = item_code
        return retry, not_found
