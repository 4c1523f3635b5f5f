"""One CloudFormation event, from request to answer: fence it, decide, carry out, remember.

:func:`handle_event` takes the event, the AWS clients (injected: AppStream, CloudFormation,
DynamoDB), the function's environment and its remaining time, and returns the :class:`Answer` to
send. In order:

1. **Fence.** The event's StackId must be the function's own stack (one function serves one
   CloudFormation stack), CloudFormation must be in a phase that sends this request type, and the
   resource must be in progress there. Anything else is a stale, duplicate or foreign event: it is
   answered FAILED and changes nothing. A Delete whose resource really is being deleted is never
   refused for the phase alone: in a phase the handler does not know, it withdraws only what the
   store says this resource granted and nothing else claims.
2. **Remember.** The same RequestId a second time gets the answer given the first time, with no
   AppStream call. A later event of the same resource (a rollback Delete while its cancelled Create
   still runs) takes the resource over, waits for the call that may be in flight, and the older
   event stops at its next write.
3. **Decide** (:mod:`.decide`) from the recorded claims and AppStream's associations, **carry
   out** (:mod:`.execute`), undo on failure, and record the answer.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import rules
from .batches import THROTTLED, AppStreamRunner, DescribeFailed, ItemRetry
from .deadline import Budget, Deadline
from .decide import Call, Context, Kind, plan
from .execute import BATCH_WINDOW, Executor, Result
from .model import (
    HELD,
    Answered,
    Association,
    AssociationRecord,
    Claim,
    Claimant,
    Phase,
    ResourceRecord,
    StackRecord,
    empty_record,
)
from .properties import DesiredState, MalformedProperties, parse_properties
from .reasons import MAX_REASON, clip, failure_reason
from .stack_phase import NotInStack, StackFacts, StackUnreadable, read_facts, refusal, stack_name_of
from .store import Conflicts, Owner, StackState, StateStore, StoreError, Superseded

logger = logging.getLogger(__name__)

SUCCESS = "SUCCESS"
FAILED = "FAILED"
PHYSICAL_ID_PREFIX = "appstream-user-stack-association:"
"""Physical ids this handler hands out for an association it created."""
FAILED_CREATE_PREFIX = "appstream-user-stack-association-failed:"
DEPLOYMENT_ID_PREFIX = "appstream-user-stack-association-deployment:"
SUPERSEDE_POLL_SECONDS = 0.5
TAKE_OVER_ATTEMPTS = 20


@dataclass(frozen=True)
class Answer:
    """What to tell CloudFormation."""

    status: str
    physical_resource_id: str
    reason: str = ""


class ClientSource(Protocol):
    """Where an event gets its AWS clients (``clients.LazyClients`` builds each on first use)."""

    @property
    def appstream(self) -> Any: ...

    @property
    def cloudformation(self) -> Any: ...

    @property
    def dynamodb(self) -> Any: ...


@dataclass(frozen=True)
class Clients:
    """Clients given outright (tests)."""

    appstream: Any
    cloudformation: Any
    dynamodb: Any


@dataclass(frozen=True)
class Environment:
    """The function's configuration, from its environment variables."""

    own_stack_id: str
    """``OWN_STACK_ID``: the stack this function serves (``Ref AWS::StackId``)."""
    table: str
    """``STATE_TABLE``: the state store's table name."""


@dataclass(frozen=True)
class Clocks:
    """Time sources, injected so tests can drive them."""

    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def _digest(event: Mapping[str, Any]) -> str:
    key = f"{event.get('StackId', '')}\n{event.get('LogicalResourceId', '')}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def physical_id(event: Mapping[str, Any]) -> str:
    """The id of a successfully created association: the same for the same stack and logical id."""
    return PHYSICAL_ID_PREFIX + _digest(event)


def failed_create_id(event: Mapping[str, Any]) -> str:
    """The id sent with a FAILED Create."""
    return FAILED_CREATE_PREFIX + _digest(event)


def is_created_id(value: object) -> bool:
    """True for an id this handler returned from a successful Create."""
    return isinstance(value, str) and value.startswith(PHYSICAL_ID_PREFIX)


def answer_ids(event: Mapping[str, Any]) -> tuple[str, str]:
    """The physical ids of a success and of a failure for this event."""
    if event.get("RequestType") == "Create":
        return physical_id(event), failed_create_id(event)
    given = str(event.get("PhysicalResourceId") or physical_id(event))
    return given, given


def _refuse(reason: str, failure_id: str) -> Answer:
    logger.error("%s", reason)
    return Answer(FAILED, failure_id, clip(reason, MAX_REASON))


def handle_event(
    event: Mapping[str, Any],
    clients: ClientSource,
    remaining_seconds: float,
    *,
    environment: Environment,
    clocks: Clocks | None = None,
    item_retry: ItemRetry | None = None,
) -> Answer:
    """Carry out one Create, Update or Delete event and say how it went."""
    clocks = clocks or Clocks()
    budget = Budget.from_remaining(remaining_seconds, clocks.monotonic)
    request_type = str(event.get("RequestType"))
    success_id, failure_id = answer_ids(event)
    if request_type not in ("Create", "Update", "Delete"):
        return _refuse(f"Unknown RequestType {request_type[:40]!r}", failure_id)
    resource_type = event.get("ResourceType")
    if resource_type not in (rules.RESOURCE_TYPE, rules.DEPLOYMENT_RESOURCE_TYPE):
        return _refuse(
            f"Unknown ResourceType {str(resource_type)[:80]!r}: this function serves {rules.RESOURCE_TYPE}", failure_id
        )
    stack_id = str(event.get("StackId"))
    logical_id = str(event.get("LogicalResourceId"))
    if not environment.own_stack_id or stack_id != environment.own_stack_id:
        return _refuse(
            f"Refused: this function serves stack {stack_name_of(environment.own_stack_id) or '(unset)'}, "
            f"not {stack_name_of(stack_id)[:60]}; nothing was changed",
            failure_id,
        )
    desired: DesiredState | None = None
    if resource_type == rules.RESOURCE_TYPE:
        try:
            desired = parse_properties(event.get("ResourceProperties"))
        except MalformedProperties as error:
            if request_type != "Delete":
                logger.error("%s malformed (%d problems); no AppStream call", error.field, len(error.problems))
                return Answer(FAILED, failure_id, clip(str(error), MAX_REASON))
    store = StateStore(clients.dynamodb, environment.table, clock=clocks.wall)
    claimant = Claimant(stack_id, logical_id)
    # The state store's record and CloudFormation's view are read at once (three round trips in one).
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="event-reads") as pool:
        reading_state = pool.submit(store.load_stack, stack_id)
        reading_facts = pool.submit(read_facts, clients.cloudformation, stack_id, logical_id)
        try:
            state = reading_state.result()
        except StoreError as error:
            return _store_failed(error, environment, failure_id)
        earlier = state.resource(claimant).answered.get(str(event.get("RequestId")))
        if earlier is not None:
            logger.info(
                "%s was answered before (%s): answering the same, no AppStream call", request_type, earlier.status
            )
            return Answer(earlier.status, earlier.physical_id, earlier.reason)
    try:
        facts = reading_facts.result()
    except NotInStack as error:
        return _refuse(f"Refused: {error.message[:160]}: not an event of this stack; nothing was changed", failure_id)
    except StackUnreadable as error:
        if request_type != "Delete":
            return _refuse(
                f"Could not read stack {stack_name_of(stack_id)} from CloudFormation ({error.label}); "
                "nothing was changed",
                failure_id,
            )
        logger.warning(
            "Delete: CloudFormation unreadable (%s); withdrawing only this resource's own grants", error.label
        )
        facts = StackFacts("", "DELETE_IN_PROGRESS")
    problem = refusal(request_type, facts, logical_id, stack_id, str(event.get("PhysicalResourceId") or ""))
    if problem is not None and not (request_type == "Delete" and facts.resource_status == "DELETE_IN_PROGRESS"):
        return _refuse(problem, failure_id)
    event_run = _Event(
        event=event,
        clients=clients,
        environment=environment,
        clocks=clocks,
        budget=budget,
        facts=facts,
        desired=desired,
        success_id=success_id,
        failure_id=failure_id,
        item_retry=item_retry,
        store=store,
    )
    try:
        return event_run.run(state)
    except StoreError as error:
        return _store_failed(error, environment, failure_id)


def _store_failed(error: StoreError, environment: Environment, failure_id: str) -> Answer:
    logger.error("State store failed (%s); the answer is FAILED", error.label)
    return Answer(
        FAILED,
        failure_id,
        clip(f"State store (DynamoDB table {environment.table}) failed: {error}; nothing more was changed", MAX_REASON),
    )


@dataclass
class _Event:
    """The run of one fenced event."""

    event: Mapping[str, Any]
    clients: ClientSource
    environment: Environment
    clocks: Clocks
    budget: Budget
    facts: StackFacts
    desired: DesiredState | None
    success_id: str
    failure_id: str
    item_retry: ItemRetry | None
    store: StateStore

    @property
    def request_type(self) -> str:
        return str(self.event.get("RequestType"))

    @property
    def request_id(self) -> str:
        return str(self.event.get("RequestId"))

    @property
    def claimant(self) -> Claimant:
        return Claimant(str(self.event.get("StackId")), str(self.event.get("LogicalResourceId")))

    @property
    def phase(self) -> Phase:
        return self.facts.phase

    def run(self, state: StackState) -> Answer:
        store = self.store
        record = state.resource(self.claimant)
        owner = Owner(
            self.claimant,
            self.request_id,
            self.request_type,
            lease_until=self.clocks.wall() + self.budget.answer.remaining(),
            version=record.version,
            path=self.desired.path if self.desired else "",
        )
        self.owner = owner
        live = record.live_owner(self.clocks.wall())
        if live == self.request_id:
            waited = self._wait_for_duplicate()
            if waited is not None:
                return waited
            record = store.load_resource(self.claimant)
            owner.version = record.version
        elif live:
            if not self._may_take_over():
                return self._finish(
                    record,
                    Answer(
                        FAILED,
                        self.failure_id,
                        clip(
                            f"Refused: another {record.owner_type or 'event'} of resource {self.claimant.logical_id} "
                            "is in progress; nothing was changed",
                            MAX_REASON,
                        ),
                    ),
                )
            record = self._take_over(owner, record)
            wait = min(BATCH_WINDOW, record.busy_until - self.clocks.wall())
            if wait > 0:
                logger.info(
                    "Took the resource over from %s; waiting %.1f s for its call in flight", record.owner_type, wait
                )
                self.clocks.sleep(wait)
        if self.event.get("ResourceType") == rules.DEPLOYMENT_RESOURCE_TYPE:
            from .deployment import handle_deployment  # noqa: PLC0415 - keeps the cycle one-way

            answer = handle_deployment(self, state.stack, state)
        else:
            answer = self._association(state.stack, record)
        return self._finish(record, answer)

    # -- the association resource ------------------------------------------------------------

    def _association(self, stack: StackRecord, record: ResourceRecord) -> Answer:
        kind = self._kind()
        desired = self.desired
        declared = desired.associations if desired is not None and kind in (Kind.DECLARE, Kind.REVERT) else frozenset()
        legacy = self._legacy_claims(record)
        stacks = set(record.appstream_stacks) | {item.stack_name for item in declared | legacy}
        if desired is not None:
            stacks.add(desired.stack_name)
        epochs = stack.epochs
        epoch = max(1, epochs.current)
        concurrency = desired.max_concurrency if desired is not None else rules.DEFAULT_MAX_CONCURRENCY
        with AppStreamRunner(
            self.clients.appstream,
            max_concurrency=concurrency,
            item_retry=self.item_retry,
            clock=self.clocks.monotonic,
            sleep=self.clocks.sleep,
        ) as runner:
            # The recorded claims and AppStream's associations are read at once.
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="plan-reads") as pool:
                reading_records = pool.submit(self.store.load_associations, stacks)
                reading_present = pool.submit(runner.existing, stacks, self.budget.forward)
                records = _with_legacy(reading_records.result(), self.claimant, legacy)
            try:
                present = frozenset(reading_present.result())
            except DescribeFailed as error:
                detail = f": {error.message}" if error.message else ""
                return Answer(
                    FAILED,
                    self.failure_id,
                    clip(
                        f"Could not read the existing associations of stack {error.stack_name} "
                        f"({error.label}{detail}); nothing was changed",
                        MAX_REASON,
                    ),
                )
            context = Context(
                claimant=self.claimant,
                kind=kind,
                phase=self.phase if kind is not Kind.DROP_OWN_GRANTS else Phase.UNKNOWN,
                epochs=epochs,
                epoch=epoch,
                present=present,
                declared=declared,
                keep_existing=bool(desired and desired.keep_existing),
            )
            mine = {a: r for a, r in records.items() if r.claim_of(self.claimant) is not None or a in declared}
            changes = plan(mine, context)
            logger.info(
                "%s (%s, epoch %d): %d to associate, %d to disassociate, %d claims to write (%d declared)",
                self.request_type,
                kind.value,
                epoch,
                sum(1 for c in changes if c.call is Call.ASSOCIATE),
                sum(1 for c in changes if c.call is Call.DISASSOCIATE),
                sum(1 for c in changes if c.call is Call.NONE),
                len(declared),
            )
            send_email = bool(desired and desired.send_email_notification) and kind is Kind.DECLARE
            executor = Executor(
                store=self.store,
                owner=self.owner,
                runner=runner,
                send_email=send_email,
                awaits=desired.awaits if desired is not None else (lambda association, code: False),
                max_concurrency=concurrency,
                clock=self.clocks.wall,
                monotonic=self.clocks.monotonic,
                sleep=self.clocks.sleep,
            )
            self.executor = executor
            result = executor.run(changes, context, self.budget.forward, undo_deadline=self.budget.undo)
            if result.ok:
                executor.flush(self.budget.answer)
                return Answer(SUCCESS, self.success_id)
            return self._failed(executor, result, context, len(changes))

    def _failed(self, executor: Executor, result: Result, context: Context, attempted: int) -> Answer:
        if result.superseded:
            logger.warning("%s: another event took the resource over; stopping", self.request_type)
            return Answer(FAILED, self.failure_id, "Superseded by a later event for this resource; it settles the rest")
        undone = executor.undo(result, context, self.budget.undo)
        if undone.ok:
            note = "This event's changes were undone" if result.done else "Nothing was changed"
        else:
            left = len(undone.problems) or len(result.done)
            codes = ", ".join(sorted(set(undone.problems.values()))) or "STATE_STORE"
            note = f"UNDO INCOMPLETE: {left} left changed ({codes}); deploy again to converge"
        if result.store_error is not None and not result.problems:
            return Answer(
                FAILED,
                self.failure_id,
                clip(
                    f"State store (DynamoDB table {self.environment.table}) failed: {result.store_error}. {note}",
                    MAX_REASON,
                ),
            )
        throttled = [label for label in result.problems.values() if label == THROTTLED]
        if throttled and len(throttled) * 2 >= len(result.problems):
            return Answer(FAILED, self.failure_id, throttle_reason(result, executor, note))
        action = "could not be associated"
        if any(change.call is Call.DISASSOCIATE for change in result.done) or context.kind not in (
            Kind.DECLARE,
            Kind.REVERT,
        ):
            action = "could not be removed"
        return Answer(
            FAILED,
            self.failure_id,
            failure_reason(
                action=action,
                problems=result.problems,
                attempted=max(result.calls_needed, len(result.problems)),
                undo_note=note,
                messages=result.messages,
            ),
        )

    def _kind(self) -> Kind:
        if self.request_type in ("Create", "Update") and self.phase is Phase.FORWARD:
            return Kind.DECLARE
        if self.request_type == "Update" and self.phase is Phase.ROLLBACK:
            return Kind.REVERT
        if self.request_type == "Delete" and self.phase in (Phase.DELETE, Phase.COMMIT, Phase.ROLLBACK):
            return Kind.DROP
        return Kind.DROP_OWN_GRANTS

    def _legacy_claims(self, record: ResourceRecord) -> frozenset[Association]:
        """Claims of a resource created before the store existed, from what CloudFormation sends."""
        if record.version != 0 or self.request_type == "Create":
            return frozenset()
        if self.request_type == "Update":
            try:
                return parse_properties(self.event.get("OldResourceProperties"), "OldResourceProperties").associations
            except MalformedProperties:
                return frozenset()
        if (
            is_created_id(self.event.get("PhysicalResourceId"))
            and self.desired is not None
            and self.phase is not Phase.ROLLBACK
        ):
            return self.desired.associations
        return frozenset()

    def _take_over(self, owner: Owner, record: ResourceRecord) -> ResourceRecord:
        """Hold the resource against the event running on it; the record as it was when taken."""
        for _ in range(TAKE_OVER_ATTEMPTS):
            owner.version = record.version
            try:
                self.store.take_over(owner)
                return record
            except Conflicts:
                # The running event wrote meanwhile (a batch): read again, take it then.
                self.clocks.sleep(0.05)
                record = self.store.load_resource(self.claimant)
        raise StoreError("STATE_CONFLICT", f"could not take resource {self.claimant.logical_id} over")

    def _may_take_over(self) -> bool:
        """A rollback or deletion event may take a resource over from a live forward event."""
        return (
            self.phase in (Phase.ROLLBACK, Phase.DELETE, Phase.COMMIT, Phase.UNKNOWN) or self.request_type == "Delete"
        )

    def _wait_for_duplicate(self) -> Answer | None:
        """The same event is running elsewhere (a duplicate delivery): wait for its answer."""
        deadline = Deadline(max(0.0, self.budget.forward.remaining()), self.clocks.monotonic)
        while not deadline.expired():
            self.clocks.sleep(SUPERSEDE_POLL_SECONDS)
            fresh = self.store.load_resource(self.claimant)
            earlier = fresh.answered.get(self.request_id)
            if earlier is not None:
                logger.info("The first delivery of this event answered %s: answering the same", earlier.status)
                return Answer(earlier.status, earlier.physical_id, earlier.reason)
            if fresh.live_owner(self.clocks.wall()) != self.request_id:
                logger.warning("The first delivery of this event stopped without answering: running it here")
                return None
        logger.warning("The first delivery of this event is still running: leaving the answer to it")
        return Answer(
            FAILED, self.failure_id, "Duplicate delivery of an event still in progress; its first delivery answers"
        )

    def _finish(self, record: ResourceRecord, answer: Answer) -> Answer:
        remembered = Answered(self.request_type, answer.status, answer.physical_resource_id, answer.reason)
        executor: Executor | None = getattr(self, "executor", None)
        actions: list[dict[str, Any]] = []
        if executor is not None:
            try:
                executor.flush(self.budget.answer)  # what does not fit in the last write (99 actions)
            except (StoreError, Superseded, Conflicts) as error:
                logger.error("Could not write the trailing withdrawals: %s", error)
            actions = executor.pending_unlocks()
        try:
            self.store.finish(self.owner, remembered, record, actions=actions)
        except Superseded:
            logger.warning("The resource was taken over before this event's answer was recorded")
        return answer


def throttle_reason(result: Result, executor: Executor, undo_note: str) -> str:
    """The reason for an event AppStream's rate limit kept from finishing in time."""
    rate = result.throttled_rate or executor.pacer_rate()
    pace = f"about {rate:.2g} calls/s" if rate else "a low rate"
    batches = max(1, result.throttled_left or -(-len(result.problems) // rules.BATCH_LIMIT))
    return clip(
        f"AppStream throttled this event (ThrottlingException) to {pace}: {batches} batches of 25 could not be "
        f"done in the function's time. {undo_note}. Raise timeout, split the users over more associations, "
        "or ask AWS for a higher AppStream API rate",
        MAX_REASON,
    )


def _with_legacy(
    records: dict[Association, AssociationRecord], claimant: Claimant, legacy: frozenset[Association]
) -> dict[Association, AssociationRecord]:
    """Records with a held claim of ``claimant`` on each ``legacy`` association (not yet stored)."""
    if not legacy:
        return records
    merged = dict(records)
    for association in legacy:
        record = merged.get(association) or empty_record(association)
        if record.claim_of(claimant) is None:
            claims = {**record.claims, claimant.key: Claim(HELD, 0)}
            merged[association] = replace(record, claims=claims)
    return merged
