"""AppStream calls: describe what exists, and run batch (dis)associations on a bounded pool.

Every item ends in exactly one bucket of an :class:`Outcome` (applied, gone, failed, unknown,
not started), which is what makes an exact undo possible. Throttling and 5xx answers are
retried by botocore's retry mode on the client; ``INTERNAL_ERROR`` items (HTTP 200) are
retried here, a bounded number of times with backoff.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import rules
from .deadline import Deadline
from .model import Association

logger = logging.getLogger(__name__)

BATCH_LIMIT = rules.BATCH_LIMIT
DESCRIBE_PAGE_SIZE = rules.DESCRIBE_PAGE_SIZE
RETRYABLE_ITEM_CODES = rules.RETRYABLE_ITEM_CODES
# On disassociation these mean there is nothing left to remove.
GONE_ITEM_CODES = rules.NOT_FOUND_ITEM_CODES
TIME_RAN_OUT = "TIME_RAN_OUT"
# Error codes botocore's standard retry mode retries (throttling and transient ones).
RETRIED_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "LimitExceededException",
    }
)
# Do not start a call, or let botocore retry one, with less time than this left: one attempt
# (connect + read timeout) plus the longest backoff botocore's standard mode sleeps.
CALL_HEADROOM = float(rules.CALL_SECONDS)
RETRY_HEADROOM = CALL_HEADROOM + 20.0
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

    @property
    def ok(self) -> bool:
        """True when every item reached its goal (applied, or already gone)."""
        return not (self.failed or self.unknown or self.not_started)

    def problems(self) -> dict[Association, str]:
        """Each item that did not reach its goal, with its error label."""
        labelled = dict(self.failed)
        labelled.update(self.unknown)
        labelled.update(dict.fromkeys(self.not_started, TIME_RAN_OUT))
        return labelled

    def merge(self, other: Outcome) -> None:
        """Add another batch's outcome to this one."""
        self.applied |= other.applied
        self.gone |= other.gone
        self.failed.update(other.failed)
        self.unknown.update(other.unknown)
        self.not_started |= other.not_started
        for label, message in other.messages.items():
            self.messages.setdefault(label, message)


class DescribeFailed(Exception):
    """DescribeUserStackAssociations could not be read; nothing was changed."""

    def __init__(self, stack_name: str, label: str, message: str) -> None:
        self.stack_name = stack_name
        self.label = label
        self.message = message
        super().__init__(f"{label} reading the associations of stack {stack_name}")


class DeadlineReached(Exception):
    """Raised from botocore's retry hook: a retry would outlast the function's time."""


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


def _may_be_retried(response: Any, caught_exception: Any) -> bool:
    """Whether botocore's standard mode could retry this attempt (the guard leaves others alone)."""
    if caught_exception is not None:
        return True
    if response is None:
        return False
    status = response[0].status_code
    if status >= 500 or status == 429:
        return True
    code = (response[1] or {}).get("Error", {}).get("Code", "")
    return status >= 400 and code in RETRIED_ERROR_CODES


def _client_error_is_server_side(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return isinstance(status, int) and status >= 500


class AppStreamRunner:
    """Runs AppStream calls for one event; use as a context manager.

    While active it hooks botocore's ``needs-retry`` event of the client so that no retry is
    slept for when the current phase's deadline is too close (the call then ends unknown).
    """

    _HOOK_ID = "appstream-user-stack-association-deadline"

    def __init__(
        self,
        client: Any,
        *,
        max_concurrency: int,
        item_retry: ItemRetry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._clock = clock
        self._sleep = sleep
        self._max_concurrency = max(1, max_concurrency)
        self._item_retry = item_retry or ItemRetry()
        self._deadline: Deadline | None = None
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def __enter__(self) -> AppStreamRunner:
        self._client.meta.events.register_first("needs-retry.appstream", self._guard_retry, unique_id=self._HOOK_ID)
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.meta.events.unregister("needs-retry.appstream", unique_id=self._HOOK_ID)

    def _guard_retry(self, response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        if not _may_be_retried(response, caught_exception):
            return
        deadline = self._deadline
        if deadline is not None and deadline.expired(RETRY_HEADROOM):
            raise DeadlineReached("no time left for another attempt")

    def _count(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1

    def existing(self, stack_names: Iterable[str], deadline: Deadline) -> set[Association]:
        """Every association that exists now on the given stacks, whatever its user's type."""
        self._deadline = deadline
        found: set[Association] = set()
        paginator = self._client.get_paginator("describe_user_stack_associations")
        for stack_name in sorted(set(stack_names)):
            if deadline.expired(CALL_HEADROOM):
                raise DescribeFailed(stack_name, TIME_RAN_OUT, "the function's time ran out")
            try:
                pages = paginator.paginate(StackName=stack_name, PaginationConfig={"PageSize": DESCRIBE_PAGE_SIZE})
                for page in pages:
                    self._count("DescribeUserStackAssociations")
                    found.update(_from_api(raw) for raw in page.get("UserStackAssociations", []))
            except ClientError as error:
                code = str(error.response.get("Error", {}).get("Code", "ClientError"))
                if code == "ResourceNotFoundException":
                    continue  # no stack, no associations
                raise DescribeFailed(
                    stack_name, code, str(error.response.get("Error", {}).get("Message", ""))
                ) from None
            except DeadlineReached:
                raise DescribeFailed(stack_name, TIME_RAN_OUT, "the function's time ran out") from None
            except BotoCoreError as error:
                raise DescribeFailed(stack_name, type(error).__name__, "could not reach AppStream") from None
        return found

    def apply(
        self, operation: Operation, items: Iterable[Association], *, send_email: bool | None, deadline: Deadline
    ) -> Outcome:
        """Run ``operation`` over ``items`` in batches of 25, at most ``max_concurrency`` at once."""
        self._deadline = deadline
        batches = list(chunks(sorted(set(items))))
        outcome = Outcome()
        if not batches:
            return outcome
        if self._max_concurrency == 1 or len(batches) == 1:
            results = [self.run_batch(operation, batch, send_email=send_email, deadline=deadline) for batch in batches]
        else:
            workers = min(self._max_concurrency, len(batches))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="appstream-batch") as pool:
                results = list(
                    pool.map(lambda b: self.run_batch(operation, b, send_email=send_email, deadline=deadline), batches)
                )
        for result in results:
            outcome.merge(result)
        return outcome

    def run_batch(
        self,
        operation: Operation,
        batch: Sequence[Association],
        *,
        send_email: bool | None,
        deadline: Deadline,
        window_end: float | None = None,
    ) -> Outcome:
        """One batch call of at most 25 items, with its item retries; every item ends in one bucket.

        ``INTERNAL_ERROR`` items are tried again up to :attr:`ItemRetry.attempts` times. On
        association, ``USER_NAME_NOT_FOUND`` / ``STACK_NOT_FOUND`` items are tried again for up to
        :data:`rules.NOT_FOUND_WINDOW` seconds (AppStream's eventual consistency right after a
        user or stack was created), never past ``deadline`` or ``window_end`` (monotonic seconds).
        """
        self._deadline = deadline
        outcome = Outcome()
        pending = list(batch)
        method = getattr(self._client, operation.value)
        internal_errors = 0
        first_not_found: float | None = None
        attempt = 0
        last: dict[Association, str] = {}
        while True:
            if deadline.expired(CALL_HEADROOM) or (window_end is not None and self._clock() > window_end):
                if attempt == 0:
                    outcome.not_started.update(pending)
                else:
                    outcome.failed.update({item: last.get(item, "INTERNAL_ERROR") for item in pending})
                return outcome
            try:
                self._count(operation.name)
                response = method(UserStackAssociations=[_to_api(item, send_email) for item in pending])
            except DeadlineReached:
                outcome.unknown.update(dict.fromkeys(pending, TIME_RAN_OUT))
                return outcome
            except ClientError as error:
                details = error.response.get("Error", {})
                label = str(details.get("Code", "ClientError"))
                outcome.messages.setdefault(label, str(details.get("Message", "")))
                bucket = outcome.unknown if _client_error_is_server_side(error) else outcome.failed
                bucket.update(dict.fromkeys(pending, label))
                return outcome
            except BotoCoreError as error:
                outcome.unknown.update(dict.fromkeys(pending, type(error).__name__))
                return outcome
            attempt += 1
            retry, not_found = self._sort_items(operation, pending, response.get("errors") or [], outcome)
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
