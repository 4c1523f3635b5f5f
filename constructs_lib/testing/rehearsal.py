"""A small CloudFormation for whole templates: deploy, update, roll back and delete synthesized stacks locally.

:class:`Rehearsal` reads a cloud assembly (:mod:`~constructs_lib.testing.assembly`) and plays
CloudFormation's state machine on every resource of every template, in dependency order, with
CloudFormation's parallelism (independent resources run at once, in threads), or one action at
a time in a seeded order (``mode="sequential"``). Custom resources whose ``ServiceToken`` is a
Lambda function of the rehearsal get real events, run by the function's asset in a separate
process as Lambda runs it (:mod:`~constructs_lib.testing.lambda_runtime`), answered over HTTPS
(:class:`~constructs_lib.testing.response_server.ResponseServer`). AppStream stacks and users
are created in the AppStream fake, DynamoDB tables, SSM parameters and S3 buckets in a local
moto (:class:`~constructs_lib.testing.aws_services.LocalAws`); every other type is a stand-in that
succeeds unless :attr:`Rehearsal.faults` says otherwise. While it plays, the live state is kept
in a :class:`~constructs_lib.testing.stack_registry.StackRegistry` that a local CloudFormation
API (:class:`~constructs_lib.testing.cloudformation_api.CloudFormationApi`) serves to the
function.

Semantics (CloudFormation's, see ``cloudformation-lifecycle.md``): create rollback (resources in
flight are cancelled, "Resource creation cancelled"; a cancelled custom resource gets its Delete,
with a made-up physical id, while its Create still runs); update rollback (an Update back, with
old and new properties swapped, for every resource the update changed, the failed and cancelled
ones included; then, in ``UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS``, deletion of what the
update created); replacement (a custom resource answering an Update with a new physical id, a
stand-in whose replacement property changed) and removal, deleted in
``UPDATE_COMPLETE_CLEANUP_IN_PROGRESS`` (failures there leave the stack ``UPDATE_COMPLETE``);
``DeletionPolicy`` / ``UpdateReplacePolicy`` (``Retain``, ``RetainExceptOnCreate``, ``Snapshot`` as
``Delete``); deletion in reverse dependency order; deploying onto ``ROLLBACK_COMPLETE`` deletes
the stack first (as ``cdk deploy`` does); a stack in ``*_FAILED`` refuses updates
(:meth:`Rehearsal.continue_update_rollback`); ``ServiceTimeout`` and Lambda's asynchronous retries
(per ``AWS::Lambda::EventInvokeConfig``) in virtual time (:class:`RehearsalClock`): an hour's
wait takes no time, and happens after everything that really runs.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

from constructs_lib.testing import _bootstrap
from constructs_lib.testing import report as _report
from constructs_lib.testing._schedule import Control, Node, Outcome, PhaseResult, RehearsalClock, join, run_phase
from constructs_lib.testing._standins import (
    LAMBDA_FUNCTION,
    Provisioned,
    StandInError,
    StandIns,
    custom_name,
    requires_replacement,
)
from constructs_lib.testing.appstream import AppStreamServer, AppStreamState
from constructs_lib.testing.assembly import (
    AssemblySource,
    Pseudo,
    RehearsalError,
    Resolver,
    ResourceDefinition,
    StackTemplate,
    inline_asset,
    read_assembly,
    resolve_parameters,
)
from constructs_lib.testing.aws_services import PROVISIONED_TYPES, LocalAws
from constructs_lib.testing.cloudformation_api import CloudFormationApi
from constructs_lib.testing.events import cloudformation_event, stack_id, stringify
from constructs_lib.testing.lambda_runtime import FunctionSpec, Invocation, LambdaProcess, LambdaRun
from constructs_lib.testing.response_server import ResponseAttempt, ResponseServer
from constructs_lib.testing.stack_registry import StackRegistry

__all__ = [
    "DEFAULT_SERVICE_TIMEOUT",
    "DUPLICATE_TIMINGS",
    "LAMBDA_RETRY_DELAYS",
    "MODES",
    "STACK_RESOURCE_TYPE",
    "FunctionSpec",
    "LambdaProcess",
    "Rehearsal",
    "RehearsalClock",
    "RehearsalError",
    "RehearsalFaults",
    "StackEvent",
    "StackOperation",
    "stringify",
]

STACK_RESOURCE_TYPE = "AWS::CloudFormation::Stack"
EVENT_INVOKE_CONFIG = "AWS::Lambda::EventInvokeConfig"
DEFAULT_SERVICE_TIMEOUT = 3600.0
"""How long CloudFormation waits for a custom resource's answer unless ``ServiceTimeout`` says otherwise."""

LAMBDA_RETRY_DELAYS = (60.0, 120.0)
"""Lambda waits about a minute before the first retry of a failed asynchronous invocation, two before the second."""

MODES = ("parallel", "sequential")
DUPLICATE_TIMINGS = ("concurrent", "after", "end", "next")
"""When :meth:`RehearsalFaults.duplicate` delivers the event again: with the first run, right after it,
at the end of the operation, or during the stack's next operation."""

REQUEST_TYPES = ("Create", "Update", "Delete")
_REFUSING = frozenset({"CREATE_FAILED", "ROLLBACK_FAILED", "UPDATE_FAILED", "UPDATE_ROLLBACK_FAILED", "DELETE_FAILED"})
_SUCCEEDED = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE"})
_RETAIN = frozenset({"Retain", "RetainExceptOnCreate"})
_NO_ANSWER = (
    "CloudFormation did not receive a response from your Custom Resource. Please check your logs for requestId "
    "[{request_id}]. If you are using the Python cfn-response module, you may need to update your Lambda function "
    "code so that CloudFormation can attach the updated version."
)
_REPLACING = "Requested update requires the creation of a new physical resource; hence creating one."
_INJECTED = (
    'Resource handler returned message: "Injected failure (rehearsal.faults.fail)" '
    "(HandlerErrorCode: GeneralServiceException)"
)


# ---------------------------------------------------------------------------------------------
# What a user sees


@dataclass
class StackEvent:
    """One line of what CloudFormation's console would show.

    Stack-level events have the stack's name as ``logical_id`` and the resource type
    ``AWS::CloudFormation::Stack``. The outcome event of a custom resource (``*_COMPLETE``,
    ``*_FAILED``) carries the runs of the function behind it: :attr:`invocation` (the first),
    :attr:`retries` (Lambda retrying a failed run) and :attr:`duplicates` (the same event
    delivered again). ``timestamp`` is on the rehearsal's clock (virtual time included).
    """

    logical_id: str
    status: str
    reason: str = ""
    resource_type: str = STACK_RESOURCE_TYPE
    physical_resource_id: str = ""
    timestamp: float = 0.0
    request_id: str = ""
    """The CloudFormation ``RequestId`` of the event sent to the custom resource, if any."""
    delivery: _Delivery | None = field(default=None, repr=False, compare=False)

    @property
    def invocation(self) -> Invocation | None:
        """The first run of the function for this event (None if there was none, or it still runs)."""
        runs = [run for run in self._runs() if run.kind == "invocation"]
        return runs[0].invocation if runs else None

    @property
    def retries(self) -> tuple[Invocation, ...]:
        """The runs with which Lambda retried a failed run of the same event."""
        return tuple(run.invocation for run in self._runs() if run.kind == "retry" and run.invocation is not None)

    @property
    def duplicates(self) -> tuple[Invocation, ...]:
        """Further deliveries of the same event (:meth:`RehearsalFaults.duplicate`) that ended."""
        return tuple(run.invocation for run in self._runs() if run.kind == "duplicate" and run.invocation is not None)

    @property
    def attempts(self) -> tuple[Invocation, ...]:
        """Every run of the function for this event: the invocation, then Lambda's retries."""
        first = self.invocation
        return (first, *self.retries) if first is not None else ()

    def _runs(self) -> list[LambdaRun]:
        return list(self.delivery.runs) if self.delivery is not None else []


@dataclass
class StackOperation:
    """The outcome of one deploy, destroy or rollback of a stack: its final status and everything that happened.

    ``str(operation)`` is a short summary for an assert message (see :func:`report.summary
    <constructs_lib.testing.report.summary>`); the events, the function's runs
    (:attr:`invocations`) and the order in which actions started (:attr:`order`, entries like
    ``create:Table``; pass it back as ``order=`` to replay the operation) stay available.
    """

    stack_name: str
    status: str
    kind: str = ""
    """``CREATE``, ``UPDATE``, ``DELETE`` or ``CONTINUE_UPDATE_ROLLBACK``."""
    events: list[StackEvent] = field(default_factory=list)
    stack_id: str = ""
    operation_id: str = ""
    order: list[str] = field(default_factory=list)
    seed: int | None = None
    """The seed of this operation's order in sequential mode."""
    skipped: float = 0.0
    """Seconds of waiting (ServiceTimeout, Lambda's retry delays) the rehearsal's clock jumped over."""
    started_at: float = 0.0
    ended_at: float = 0.0
    _runs: list[LambdaRun] = field(default_factory=list, repr=False, compare=False)

    @property
    def invocations(self) -> list[Invocation]:
        """Every run of a function during the operation, in the order they were started."""
        return [run.invocation for run in list(self._runs) if run.invocation is not None]

    @property
    def resource_events(self) -> list[StackEvent]:
        """The resources' events (stack-level events left out)."""
        return [event for event in self.events if event.logical_id != self.stack_name]

    @property
    def failures(self) -> list[StackEvent]:
        """The resources' ``*_FAILED`` events."""
        return [event for event in self.resource_events if event.status.endswith("_FAILED")]

    @property
    def ok(self) -> bool:
        """Whether the operation did what was asked (or there was nothing to do)."""
        return self.status in _SUCCEEDED or not self.events

    def resource(self, logical_id: str) -> list[StackEvent]:
        """The events of one resource, in order."""
        return [event for event in self.events if event.logical_id == logical_id]

    def __str__(self) -> str:
        return _report.summary(self)


# ---------------------------------------------------------------------------------------------
# Faults


WATCH_LIMIT_SECONDS = 60.0


@dataclass
class _Fault:
    kind: str
    target: str
    on: str | None
    stack: str | None
    remaining: int | None
    reason: str = ""
    seconds: float = 0.0
    when: str = ""
    after_calls: int = 0
    operation: str | None = None
    watch: str | None = None
    """``fail(..., when_called=(watch, after_calls))``: the custom resource whose calls release it."""
    signal: threading.Event = field(default_factory=threading.Event)

    def matches(self, stack: str, logical_id: str, resource_type: str, request_type: str) -> bool:
        return (
            self.target in (logical_id, resource_type)
            and self.on in (None, request_type)
            and self.stack in (None, stack)
        )


class RehearsalFaults:
    """What CloudFormation, Lambda or a resource should do wrong; thread-safe, may change between deploys.

    ``target`` is a logical id or a resource type (``AWS::SSM::Parameter``); ``on`` a request
    type (``Create``, ``Update``, ``Delete``; None: any); ``stack`` a stack name (None: any);
    ``times`` how many matching actions the fault applies to (None: all). :meth:`fail` and
    :meth:`slow` act on stand-ins (every resource that is not a custom resource);
    :meth:`duplicate`, :meth:`crash` and :meth:`lose_answer` on custom resources.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._watches: list[_Fault] = []

    def fail(
        self,
        target: str,
        *,
        on: str | None = "Create",
        reason: str = _INJECTED,
        after_seconds: float = 0.0,
        stack: str | None = None,
        times: int | None = 1,
        when_called: tuple[str, int] | None = None,
    ) -> None:
        """Make a stand-in's action fail with ``reason``, after ``after_seconds`` real seconds (default: at once).

        ``when_called=(custom_resource, n)`` makes it fail instead at the moment the first run of
        that custom resource's event makes its ``n``-th AppStream call (the call is answered as
        usual): a deterministic way to cancel a Create or Update in flight, at a chosen point of
        its work. The two resources must be independent (neither waits for the other) and the
        rehearsal in ``parallel`` mode; if the call never comes, the stand-in fails after a minute.
        """
        watch, calls = when_called if when_called is not None else (None, 0)
        if when_called is not None and calls < 1:
            raise ValueError(f"when_called needs a call count of at least 1, got {calls}")
        self._add(
            _Fault(
                "fail", target, on, stack, times, reason=reason, seconds=after_seconds, watch=watch, after_calls=calls
            )
        )

    def slow(
        self, target: str, *, seconds: float, on: str | None = "Create", stack: str | None = None, times: int | None = 1
    ) -> None:
        """Make a stand-in's action take ``seconds`` real seconds (it can be cancelled meanwhile)."""
        self._add(_Fault("slow", target, on, stack, times, seconds=seconds))

    def duplicate(
        self,
        target: str,
        *,
        on: str | None = None,
        when: str = "after",
        stack: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Deliver a custom resource's event again: same event, same RequestId and ResponseURL.

        ``when``: ``concurrent`` (with the first run), ``after`` (right after the first run
        ends, while CloudFormation goes on), ``end`` (after the operation's final status) or
        ``next`` (during the stack's next operation, once it has started).
        """
        if when not in DUPLICATE_TIMINGS:
            raise ValueError(f"when must be one of {', '.join(DUPLICATE_TIMINGS)}, got {when!r}")
        self._add(_Fault("duplicate", target, on, stack, times, when=when))

    def crash(
        self,
        target: str,
        *,
        on: str | None = "Create",
        after_calls: int = 1,
        operation: str | None = None,
        stack: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Kill the function's process right after its ``after_calls``-th AppStream call has landed.

        The call is applied, then the process is killed and the call's connection reset: no
        answer reaches CloudFormation, which fails the resource after ServiceTimeout. Lambda
        sees a failed run and retries it if the function's ``EventInvokeConfig`` allows.
        ``operation`` counts only calls of that AppStream operation.
        """
        if after_calls < 1:
            raise ValueError(f"after_calls must be at least 1, got {after_calls}")
        self._add(_Fault("crash", target, on, stack, times, after_calls=after_calls, operation=operation))

    def lose_answer(
        self, target: str, *, on: str | None = None, stack: str | None = None, times: int | None = 1
    ) -> None:
        """Lose a custom resource's answer: the function answered, CloudFormation never saw it."""
        self._add(_Fault("lose_answer", target, on, stack, times))

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()
            self._watches.clear()

    def pending(self) -> int:
        """How many counted uses are left (faults without a count not included)."""
        with self._lock:
            return sum(fault.remaining or 0 for fault in self._faults)

    def _add(self, fault: _Fault) -> None:
        if fault.on is not None and fault.on not in REQUEST_TYPES:
            raise ValueError(f"on must be one of {', '.join(REQUEST_TYPES)} or None, got {fault.on!r}")
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError(f"times must be at least 1 (or None), got {fault.remaining}")
        if fault.seconds < 0:
            raise ValueError(f"seconds must not be negative, got {fault.seconds}")
        with self._lock:
            self._faults.append(fault)
            if fault.watch is not None:
                self._watches.append(fault)

    def _watching(self, stack: str, logical_id: str) -> list[_Fault]:
        """The ``fail(when_called=...)`` faults that this custom resource's next run releases (once each)."""
        with self._lock:
            found = [fault for fault in self._watches if fault.watch == logical_id and fault.stack in (None, stack)]
            self._watches = [fault for fault in self._watches if fault not in found]
            return found

    def _take(self, kind: str, stack: str, logical_id: str, resource_type: str, request_type: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.matches(stack, logical_id, resource_type, request_type):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                    return fault
        return None


# ---------------------------------------------------------------------------------------------
# Internal state


@dataclass(frozen=True)
class _Live:
    """A resource as deployed: the definition it was last applied from, its ids and values."""

    definition: ResourceDefinition
    physical_id: str
    properties: Mapping[str, Any]
    attributes: Mapping[str, Any] = field(default_factory=dict)
    function: FunctionSpec | None = None
    """For a Lambda function: the code and settings it runs now."""
    created_in: str = ""

    @property
    def logical_id(self) -> str:
        return self.definition.logical_id

    @property
    def resource_type(self) -> str:
        return self.definition.resource_type


@dataclass
class _Touch:
    """What an operation did to one resource, for its rollback."""

    definition: ResourceDefinition
    action: str  # Create | Update | Replace
    result: str = ""  # ok | failed | cancelled | unchanged
    properties: Mapping[str, Any] = field(default_factory=dict)
    physical_id: str = ""
    provisioned: bool = False
    called: bool = False
    old: _Live | None = None


@dataclass
class _PendingRollback:
    touched: dict[str, _Touch]
    before: dict[str, _Live]
    template: StackTemplate | None
    parameters: dict[str, Any]
    remaining: list[str]


@dataclass
class _Stack:
    name: str
    stack_id: str
    status: str
    template: StackTemplate | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, _Live] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, Any] = field(default_factory=dict)
    imports: set[str] = field(default_factory=set)
    pending_rollback: _PendingRollback | None = None
    next_duplicates: list[tuple[FunctionSpec, dict[str, Any]]] = field(default_factory=list)


@dataclass
class _Result:
    status: str  # ok | failed | cancelled
    physical_id: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    delivery: _Delivery | None = None
    function: FunctionSpec | None = None
    request_id: str = ""


@dataclass
class _Op:
    operation: StackOperation
    stack: _Stack
    rng: random.Random
    replay: list[str] | None
    resolver: Resolver | None = None
    deliveries: list[_Delivery] = field(default_factory=list)
    deferred_end: list[tuple[FunctionSpec, dict[str, Any]]] = field(default_factory=list)
    skipped_at_start: float = 0.0


class _Delivery:
    """Lambda's asynchronous queue for one event: the first run, Lambda's retries, duplicates."""

    def __init__(
        self,
        rehearsal: Rehearsal,
        op: _Op,
        function: FunctionSpec,
        event: Mapping[str, Any],
        *,
        crash: _Fault | None = None,
        duplicate: str | None = None,
        only_duplicate: bool = False,
    ) -> None:
        self._rehearsal = rehearsal
        self._op = op
        self.function = function
        self.event = event
        self._crash = crash
        self._duplicate = duplicate
        self._only_duplicate = only_duplicate
        self._lock = threading.Lock()
        self.runs: list[LambdaRun] = []
        self.dropped = False
        """Whether Lambda dropped the event (its MaximumEventAgeInSeconds passed before a retry)."""
        self._done = threading.Event()
        self._participant = rehearsal.clock.participant()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def start(self) -> _Delivery:
        threading.Thread(target=self._loop, name="rehearsal-delivery", daemon=True).start()
        return self

    def _new_run(self, kind: str) -> LambdaRun:
        run = self._rehearsal.process.prepare(self.function, self.event, kind=kind)
        with self._lock:
            self.runs.append(run)
        self._op.operation._runs.append(run)
        return run

    def _loop(self) -> None:
        clock = self._rehearsal.clock
        extra: list[LambdaRun] = []
        try:
            if self._only_duplicate:
                self._new_run("duplicate").start().wait()
                return
            requested = clock.monotonic()
            retries = max(0, self.function.retry_attempts)
            for attempt in range(1 + retries):
                run = self._new_run("invocation" if attempt == 0 else "retry")
                if attempt == 0 and self._crash is not None:
                    self._rehearsal.appstream.faults.crash(
                        self._crash.after_calls, app_id=run.request_id, action=run.kill, operation=self._crash.operation
                    )
                if attempt == 0 and not self._only_duplicate:
                    logical_id = str(self.event.get("LogicalResourceId"))
                    for fault in self._rehearsal.faults._watching(self._op.stack.name, logical_id):
                        self._rehearsal.appstream.faults.on_call(
                            fault.after_calls, app_id=run.request_id, action=fault.signal.set
                        )
                run.start()
                if attempt == 0 and self._duplicate == "concurrent":
                    extra.append(self._new_run("duplicate").start())
                invocation = run.wait()
                if attempt == 0 and self._duplicate == "after":
                    self._new_run("duplicate").start().wait()
                if invocation.error is None or attempt == retries:
                    break
                retry_at = clock.monotonic() + LAMBDA_RETRY_DELAYS[min(attempt, len(LAMBDA_RETRY_DELAYS) - 1)]
                if retry_at - requested > self.function.maximum_event_age:
                    self.dropped = True
                    break
                self._participant.wait_until(retry_at, self._rehearsal._closing.is_set)
                if self._rehearsal._closing.is_set():
                    break
            for run in extra:
                run.wait()
        finally:
            self._done.set()
            self._participant.close()


class _Values:
    """The live values a stack's resolver reads (Ref, Fn::GetAtt, Fn::ImportValue)."""

    def __init__(self, rehearsal: Rehearsal, stack: _Stack) -> None:
        self._rehearsal = rehearsal
        self._stack = stack

    def _live(self, logical_id: str) -> _Live:
        with self._rehearsal._state_lock:
            live = self._stack.resources.get(logical_id)
        if live is None:
            raise RehearsalError(f"{logical_id} has not been created")
        return live

    def ref(self, logical_id: str) -> Any:
        return self._live(logical_id).physical_id

    def get_att(self, logical_id: str, attribute: str) -> Any:
        live = self._live(logical_id)
        if attribute in live.attributes:
            return live.attributes[attribute]
        if live.definition.is_custom:
            raise RehearsalError(
                f"CustomResource attribute error: Vendor response doesn't contain {attribute} key in object "
                f"{self._stack.stack_id}|{logical_id}"
            )
        if live.resource_type in PROVISIONED_TYPES and self._rehearsal._standins_or_fail().provisions(
            live.resource_type
        ):
            raise RehearsalError(
                f"Template error: resource {logical_id} does not support attribute type {attribute} in Fn::GetAtt "
                f"(the rehearsal knows {', '.join(sorted(live.attributes)) or 'none'})"
            )
        return self._rehearsal._standins_or_fail().attribute(live.resource_type, live.physical_id, attribute)

    def import_value(self, name: str) -> Any:
        with self._rehearsal._state_lock:
            for stack in self._rehearsal._stacks.values():
                if stack is not self._stack and name in stack.exports:
                    self._stack.imports.add(name)
                    return stack.exports[name]
        raise RehearsalError(f"No export named {name} found.")


def _service_timeout(properties: Mapping[str, Any]) -> float:
    value = properties.get("ServiceTimeout")
    try:
        return float(value) if value is not None else DEFAULT_SERVICE_TIMEOUT
    except (TypeError, ValueError):
        return DEFAULT_SERVICE_TIMEOUT


def _reverse(keys: Iterable[str], dependencies: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """For deletion: each key waits for the keys that depend on it."""
    keys = list(keys)
    return {key: frozenset(other for other in keys if key in dependencies[other]) for key in keys}


# ---------------------------------------------------------------------------------------------
# The engine


class Rehearsal:
    """A small CloudFormation for synthesized templates: deploy, update, roll back, destroy.

    ``Rehearsal(appstream, responses)`` uses the servers given; ``Rehearsal()`` starts its own
    (an empty AppStream fake, a ResponseServer) when first used, and in any case starts the
    local CloudFormation API and, when a template needs one, a LocalAws (moto); use it as a
    context manager, or call :meth:`close`, to stop what it started.

    :param python: the interpreter the functions run under; it must have boto3. Default: this one.
    :param region: ``AWS::Region``. Default: ``us-east-1``.
    :param report: called with ``(stack_name, event)`` for each :class:`StackEvent` as it
        happens (from the thread that caused it). Default: none.
    :param mode: ``parallel`` (CloudFormation's: independent resources at once) or
        ``sequential`` (one resource action at a time, ready ones taken in a seeded random
        order, recorded in :attr:`StackOperation.order`). Default: ``parallel``.
    :param seed: seeds the sequential order and generated names. Default: random.
    :param appstream_user_delay: seconds after which an ``AWS::AppStream::User`` the rehearsal
        creates becomes visible to AppStream's API (eventual consistency). Default: 0.
    :param registry: the live CloudFormation state to keep. Default: a new one.
    :param cloudformation: the CloudFormation API serving ``registry``. Default: one started here.
    :param aws: a LocalAws to create DynamoDB/SSM/S3 resources in; True to start one at once;
        False to treat those types as stand-ins. Default: one started when first needed.
    :param clock: CloudFormation's clock, virtual waits included; make one first to give an
        AppStream fake the same time (``AppStreamState(clock=clock.monotonic)``). Default: a new one.
    """

    def __init__(
        self,
        appstream: AppStreamServer | None = None,
        responses: ResponseServer | None = None,
        *,
        python: str = sys.executable,
        region: str = "us-east-1",
        report: Callable[[str, StackEvent], None] | None = None,
        mode: Literal["parallel", "sequential"] = "parallel",
        seed: int | None = None,
        appstream_user_delay: float = 0.0,
        registry: StackRegistry | None = None,
        cloudformation: CloudFormationApi | None = None,
        aws: LocalAws | bool | None = None,
        clock: RehearsalClock | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.clock = clock if clock is not None else RehearsalClock()
        self.faults = RehearsalFaults()
        self.region = region
        self.mode = mode
        self.seed = seed
        self.python = python
        self.registry = registry if registry is not None else StackRegistry(clock=self.clock.now)
        self.operations: list[StackOperation] = []
        self._appstream = appstream
        self._responses = responses
        self._cloudformation = cloudformation
        self._aws_option = aws
        self._aws: LocalAws | None = aws if isinstance(aws, LocalAws) else None
        self._aws_started = False
        self._report = report
        self._user_delay = appstream_user_delay
        self._owned: list[Any] = []
        self._start_lock = threading.Lock()
        self._aws_lock = threading.Lock()
        self._operation_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._report_lock = threading.Lock()
        self._closing = threading.Event()
        self._stacks: dict[str, _Stack] = {}
        self._seeds = random.Random(seed)
        self._names = random.Random(seed)
        self._process: LambdaProcess | None = None
        self._standins: StandIns | None = None
        self._answers: dict[str, ResponseAttempt] = {}

    # -- servers -------------------------------------------------------------------------------

    def start(self) -> Rehearsal:
        """Start what is not running yet (done by :meth:`deploy` too); return ``self``."""
        with self._start_lock:
            if self._process is not None:
                return self
            if self._appstream is None:
                self._appstream = AppStreamServer(AppStreamState(clock=self.clock.monotonic))
            if not _running(self._appstream):
                self._owned.append(self._appstream.start())
            if self._responses is None:
                self._responses = ResponseServer()
            if not _running(self._responses):
                self._owned.append(self._responses.start())
            if self._cloudformation is None:
                self._cloudformation = CloudFormationApi(self.registry)
            if not _running(self._cloudformation):
                self._owned.append(self._cloudformation.start())
            if self._aws_option is True:
                self._local_aws()
            self._process = LambdaProcess(
                self._appstream, self._responses, python=self.python, region=self.region, endpoints=self._endpoints
            )
            self._standins = StandIns(
                appstream=self._appstream.state,
                aws=None if self._aws_option is False else self._local_aws,
                region=self.region,
                names=self._names,
                user_delay=self._user_delay,
            )
        return self

    def close(self) -> None:
        """Stop the servers this rehearsal started (idempotent)."""
        self._closing.set()
        while self._owned:
            server = self._owned.pop()
            server.stop()

    def __enter__(self) -> Rehearsal:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def appstream(self) -> AppStreamServer:
        """The AppStream fake the functions call."""
        return self.start()._appstream  # type: ignore[return-value]

    @property
    def responses(self) -> ResponseServer:
        """CloudFormation's ResponseURL side."""
        return self.start()._responses  # type: ignore[return-value]

    @property
    def cloudformation(self) -> CloudFormationApi:
        """The local CloudFormation API serving :attr:`registry` to the functions."""
        return self.start()._cloudformation  # type: ignore[return-value]

    @property
    def aws(self) -> LocalAws | None:
        """The LocalAws in use, if one has been started."""
        return self._aws if self._aws_started or (self._aws is not None and _running(self._aws)) else None

    @property
    def process(self) -> LambdaProcess:
        """What runs the functions."""
        return self.start()._process  # type: ignore[return-value]

    def _local_aws(self) -> LocalAws:
        with self._aws_lock:
            if self._aws is None:
                self._aws = LocalAws(region=self.region, seed=self.seed)
            if not _running(self._aws):
                self._owned.append(self._aws.start())
            self._aws_started = True
            return self._aws

    def _endpoints(self) -> dict[str, str]:
        env = dict(self.cloudformation.client_env())
        # Time the rehearsal jumped over (ServiceTimeouts, Lambda's retry waits) has passed for the
        # function too: its wall clock reads later by as much (leases and timestamps it records).
        env[_bootstrap.SKIPPED_VARIABLE] = repr(self.clock.skipped)
        aws = self.aws
        if aws is not None:
            env = {**aws.client_env(), **env}
        return env

    def _standins_or_fail(self) -> StandIns:
        self.start()
        assert self._standins is not None
        return self._standins

    # -- reading the state ---------------------------------------------------------------------

    def deployed(self, stack_name: str) -> Mapping[str, str]:
        """Logical id to physical id of every resource of a stack (empty if it does not exist)."""
        with self._state_lock:
            stack = self._stacks.get(stack_name)
            return {key: live.physical_id for key, live in stack.resources.items()} if stack else {}

    def status(self, stack_name: str) -> str | None:
        """The stack's status (``CREATE_COMPLETE``, ``ROLLBACK_COMPLETE``, ...); None if it does not exist."""
        stack = self._stacks.get(stack_name)
        return stack.status if stack else None

    def outputs(self, stack_name: str) -> Mapping[str, Any]:
        """The stack's outputs, resolved (empty if it does not exist)."""
        stack = self._stacks.get(stack_name)
        return dict(stack.outputs) if stack else {}

    def stack_id(self, stack_name: str) -> str | None:
        """The stack's id (its ARN), None if it does not exist."""
        stack = self._stacks.get(stack_name)
        return stack.stack_id if stack else None

    def function(self, stack_name: str, logical_id: str) -> FunctionSpec | None:
        """The code and settings a Lambda function of a stack runs now (None if there is no such function)."""
        with self._state_lock:
            stack = self._stacks.get(stack_name)
            live = stack.resources.get(logical_id) if stack else None
            return live.function if live else None

    # -- operations ----------------------------------------------------------------------------

    def deploy(
        self,
        assembly: AssemblySource,
        *,
        stack_name: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        order: Sequence[str] | None = None,
    ) -> list[StackOperation]:
        """Create or update every stack of the assembly, dependencies first; stop at the first that fails.

        :param assembly: the assembly directory (``cdk.out``) or what ``app.synth()`` returns.
        :param stack_name: deploy a lone stack under this name instead of its own. Default: its own.
        :param parameters: values for the templates' parameters. Default: their defaults.
        :param order: play the operation one action at a time in this order (a recorded
            :attr:`StackOperation.order`, or entries like ``create:Table`` naming some of the
            actions; the rest are taken in the seeded order). Default: none.
        :raises RehearsalError: if the assembly cannot be rehearsed, the rehearsal's Python has no
            boto3, or a stack is in a state CloudFormation would refuse to update (``*_FAILED``).
        """
        self.start()
        self.process.check_python()
        templates = read_assembly(assembly)
        if stack_name is not None and len(templates) != 1:
            raise RehearsalError(f"stack_name= needs an assembly with exactly one stack, found {len(templates)}")
        operations = []
        for template in templates:
            operation = self._deploy_stack(stack_name or template.stack_name, template, parameters or {}, order)
            operations.append(operation)
            if not operation.ok:
                break
        return operations

    def destroy(self, stack_name: str, *, order: Sequence[str] | None = None) -> StackOperation:
        """Delete a stack: every resource, dependents first (independent ones at once).

        :raises RehearsalError: if the stack does not exist, or another stack imports one of its exports.
        """
        self.start()
        with self._operation_lock:
            stack = self._stacks.get(stack_name)
            if stack is None:
                raise RehearsalError(f"Stack with id {stack_name} does not exist")
            for other in self._stacks.values():
                used = sorted(other.imports & set(stack.exports)) if other is not stack else []
                if used:
                    raise RehearsalError(f"Export {used[0]} cannot be deleted as it is in use by {other.name}")
            op = self._new_op(stack, "DELETE", order)
            self._delete_stack(op)
            return self._finish(op)

    def destroy_all(self, assembly: AssemblySource | None = None) -> list[StackOperation]:
        """Delete the assembly's stacks (default: every stack of the rehearsal), dependents first."""
        if assembly is None:
            names = list(reversed(self._stacks))
        else:
            names = [template.stack_name for template in reversed(read_assembly(assembly))]
        return [self.destroy(name) for name in names if name in self._stacks]

    def continue_update_rollback(self, stack_name: str, *, skip: Iterable[str] = ()) -> StackOperation:
        """Continue a rollback that failed (``UPDATE_ROLLBACK_FAILED``), skipping the resources named.

        A skipped resource is taken as rolled back without an event being sent (CloudFormation's
        ``ResourcesToSkip``); the others get their Update back again, then the cleanup runs.

        :raises RehearsalError: if the stack is not in ``UPDATE_ROLLBACK_FAILED``.
        """
        self.start()
        with self._operation_lock:
            stack = self._stacks.get(stack_name)
            if stack is None or stack.status != "UPDATE_ROLLBACK_FAILED" or stack.pending_rollback is None:
                status = stack.status if stack else "nonexistent"
                raise RehearsalError(
                    f"Stack {stack_name} is in {status} state: ContinueUpdateRollback needs UPDATE_ROLLBACK_FAILED"
                )
            op = self._new_op(stack, "CONTINUE_UPDATE_ROLLBACK", None)
            pending = stack.pending_rollback
            self._begin(op, "CONTINUE_ROLLBACK", "UPDATE_ROLLBACK_IN_PROGRESS", "User Initiated")
            skipped = set(skip)
            for logical_id in [key for key in pending.remaining if key in skipped]:
                touch = pending.touched[logical_id]
                self._restore(op.stack, touch)
                self._resource_event(
                    op,
                    touch.definition,
                    "UPDATE_COMPLETE",
                    "Resource skipped during UpdateRollback",
                    physical_id=touch.old.physical_id if touch.old else "",
                )
                pending.remaining.remove(logical_id)
            self._roll_back_update(op, pending)
            return self._finish(op)

    # -- stack operations ----------------------------------------------------------------------------

    def _new_op(self, stack: _Stack, kind: str, order: Sequence[str] | None) -> _Op:
        seed = self._seeds.randrange(2**32)
        operation = StackOperation(stack.name, stack.status, kind, stack_id=stack.stack_id, seed=seed)
        operation.started_at = self.clock.now()
        op = _Op(operation, stack, random.Random(seed), list(order) if order is not None else None)
        op.skipped_at_start = self.clock.skipped
        return op

    def _finish(self, op: _Op) -> StackOperation:
        for function, event in op.deferred_end:
            op.deliveries.append(_Delivery(self, op, function, event, only_duplicate=True).start())
        join(self.clock, lambda: all(delivery.done for delivery in op.deliveries))
        operation = op.operation
        operation.status = op.stack.status
        operation.skipped = self.clock.skipped - op.skipped_at_start
        operation.ended_at = self.clock.now()
        self.operations.append(operation)
        return operation

    def _deploy_stack(
        self, name: str, template: StackTemplate, parameters: Mapping[str, Any], order: Sequence[str] | None
    ) -> StackOperation:
        with self._operation_lock:
            values = resolve_parameters(template, parameters)
            stack = self._stacks.get(name)
            if stack is not None and stack.status in _REFUSING:
                raise RehearsalError(f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated.")
            if stack is not None and stack.status != "ROLLBACK_COMPLETE":
                if stack.template is not None and stack.template.body == template.body and stack.parameters == values:
                    operation = StackOperation(name, stack.status, "UPDATE", stack_id=stack.stack_id)
                    self.operations.append(operation)
                    return operation  # cdk deploy: "no changes"
                op = self._new_op(stack, "UPDATE", order)
                self._update(op, template, values)
                return self._finish(op)
            new = _Stack(name, stack_id(name, region=self.region), "CREATE_IN_PROGRESS")
            op = self._new_op(new, "CREATE", order)
            if stack is not None:  # ROLLBACK_COMPLETE: cdk deploy deletes the stack, then creates it again
                previous = _Op(op.operation, stack, op.rng, op.replay)
                self._delete_stack(previous)
                op.deliveries.extend(previous.deliveries)
            self._create(op, template, values)
            return self._finish(op)

    def _resolver(self, stack: _Stack, template: StackTemplate, values: Mapping[str, Any]) -> Resolver:
        pseudo = Pseudo(region=self.region, stack_name=stack.name, stack_id=stack.stack_id)
        return Resolver(template, pseudo=pseudo, parameters=values, live=_Values(self, stack))

    def _create(self, op: _Op, template: StackTemplate, values: dict[str, Any]) -> None:
        stack = op.stack
        resolver = self._resolver(stack, template, values)
        present = [resource for resource in template.resources.values() if resolver.exists(resource)]
        stack.template, stack.parameters = template, values
        with self._state_lock:
            self._stacks[stack.name] = stack
        record = self.registry.create_stack(stack.stack_id, stack.name)
        op.operation.stack_id, op.operation.operation_id = stack.stack_id, record.operation_id
        op.resolver = resolver
        self._stack_event(op, "CREATE_IN_PROGRESS", "User Initiated")
        self._start_next_duplicates(op)
        touched: dict[str, _Touch] = {}
        keys = {resource.logical_id for resource in present}
        nodes = [
            Node(
                resource.logical_id,
                resource.dependencies & keys,
                partial(self._guard, op, resource, "CREATE", partial(self._create_node, op, resource, touched)),
            )
            for resource in present
        ]
        result = self._phase(op, "create", nodes, stop_on_failure=True)
        problem = self._outputs(op, resolver) if result.ok else None
        if result.ok and problem is None:
            self._set_status(op, "CREATE_COMPLETE")
            return
        failed = sorted(key for key, touch in touched.items() if touch.result in ("failed", "cancelled"))
        reason = (
            f"The following resource(s) failed to create: [{', '.join(failed)}]. Rollback requested by user."
            if failed
            else f"Template error: {problem}. Rollback requested by user."
        )
        self._set_status(op, "ROLLBACK_IN_PROGRESS", reason)
        entries = [touch for key, touch in touched.items() if touch.result != ""]
        rollback = self._delete_created(op, "rollback", entries, remove=True)
        if rollback.ok:
            self._set_status(op, "ROLLBACK_COMPLETE")
        else:
            left = sorted(rollback.failed())
            self._set_status(
                op, "ROLLBACK_FAILED", f"The following resource(s) failed to delete: [{', '.join(left)}]. "
            )

    def _update(self, op: _Op, template: StackTemplate, values: dict[str, Any]) -> None:
        stack = op.stack
        with self._state_lock:
            before = dict(stack.resources)
        previous_template, previous_values = stack.template, stack.parameters
        operation_id = self._begin(op, "UPDATE_STACK", "UPDATE_IN_PROGRESS", "User Initiated")
        op.operation.operation_id = operation_id
        self._start_next_duplicates(op)
        resolver = self._resolver(stack, template, values)
        op.resolver = resolver
        stack.imports = set()
        present = [resource for resource in template.resources.values() if resolver.exists(resource)]
        keys = {resource.logical_id for resource in present}
        touched: dict[str, _Touch] = {}
        nodes = []
        for resource in present:
            action = self._update_node if resource.logical_id in before else self._create_node
            verb = "UPDATE" if resource.logical_id in before else "CREATE"
            work = partial(action, op, resource, touched)
            nodes.append(
                Node(resource.logical_id, resource.dependencies & keys, partial(self._guard, op, resource, verb, work))
            )
        result = self._phase(op, "update", nodes, stop_on_failure=True)
        problem = self._outputs(op, resolver) if result.ok else None
        if result.ok and problem is None:
            stack.template, stack.parameters = template, values
            self._set_status(op, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
            self._cleanup(op, before, touched, keys)
            self._set_status(op, "UPDATE_COMPLETE")
            return
        failed = sorted(key for key, touch in touched.items() if touch.result in ("failed", "cancelled"))
        verbs = {touched[key].action for key in failed}
        verb = "create" if verbs == {"Create"} else "update"
        reason = (
            f"The following resource(s) failed to {verb}: [{', '.join(failed)}]. "
            if failed
            else f"Template error: {problem}"
        )
        self._set_status(op, "UPDATE_ROLLBACK_IN_PROGRESS", reason)
        remaining = [
            key
            for key, touch in touched.items()
            if touch.action in ("Update", "Replace") and touch.result not in ("", "unchanged")
        ]
        pending = _PendingRollback(touched, before, previous_template, previous_values, remaining)
        for key, touch in touched.items():
            if touch.result == "unchanged" and touch.old is not None:
                with self._state_lock:
                    stack.resources[key] = touch.old
        self._roll_back_update(op, pending)

    def _roll_back_update(self, op: _Op, pending: _PendingRollback) -> None:
        stack = op.stack
        stack.pending_rollback = pending
        touched = pending.touched
        dependencies = {key: touched[key].definition.dependencies for key in pending.remaining}
        after = _reverse(pending.remaining, dependencies)
        nodes = [
            Node(
                key,
                after[key],
                partial(
                    self._guard, op, touched[key].definition, "UPDATE", partial(self._roll_back_node, op, touched[key])
                ),
            )
            for key in pending.remaining
        ]
        result = self._phase(op, "rollback", nodes)
        pending.remaining = [
            key for key in pending.remaining if not (key in result.outcomes and result.outcomes[key].ok)
        ]
        if pending.remaining:
            self._set_status(
                op,
                "UPDATE_ROLLBACK_FAILED",
                f"The following resource(s) failed to update: [{', '.join(sorted(pending.remaining))}]. ",
            )
            return
        stack.template, stack.parameters = pending.template, pending.parameters
        stack.pending_rollback = None
        self._set_status(op, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
        created = [touch for touch in touched.values() if touch.action == "Create" and touch.result != ""]
        replaced = [touch for touch in touched.values() if touch.action == "Replace" and touch.provisioned]
        self._delete_created(op, "rollback-cleanup", created, remove=True)
        self._delete_created(op, "rollback-cleanup", replaced, remove=False)
        with self._state_lock:
            stack.resources = {key: live for key, live in pending.before.items()}
        if stack.template is not None:
            stack.outputs, stack.exports = self._evaluate_outputs(
                self._resolver(stack, stack.template, stack.parameters)
            )
        self._set_status(op, "UPDATE_ROLLBACK_COMPLETE")

    def _delete_stack(self, op: _Op) -> None:
        stack = op.stack
        operation_id = self._begin(op, "DELETE_STACK", "DELETE_IN_PROGRESS", "User Initiated")
        op.operation.operation_id = op.operation.operation_id or operation_id
        self._start_next_duplicates(op)
        with self._state_lock:
            lives = list(stack.resources.values())
        after = _reverse(
            [live.logical_id for live in lives], {live.logical_id: live.definition.dependencies for live in lives}
        )
        nodes = [
            Node(
                live.logical_id,
                after[live.logical_id],
                partial(self._guard, op, live.definition, "DELETE", partial(self._delete_node, op, live)),
            )
            for live in reversed(lives)
        ]
        result = self._phase(op, "delete", nodes)
        if result.ok:
            self._set_status(op, "DELETE_COMPLETE")
            with self._state_lock:
                if self._stacks.get(stack.name) is stack:
                    del self._stacks[stack.name]
            return
        failed = sorted(result.failed())
        self._set_status(op, "DELETE_FAILED", f"The following resource(s) failed to delete: [{', '.join(failed)}]. ")

    def _cleanup(self, op: _Op, before: Mapping[str, _Live], touched: Mapping[str, _Touch], keys: set[str]) -> None:
        """``UPDATE_COMPLETE_CLEANUP_IN_PROGRESS``: the old ids of replaced resources, then removed resources."""
        entries: dict[str, tuple[_Live, bool]] = {}
        for key, touch in touched.items():
            if touch.action == "Replace" and touch.result == "ok" and touch.old is not None:
                entries[key] = (touch.old, True)
        for key, live in before.items():
            if key not in keys:
                entries[key] = (live, False)
        after = _reverse(entries, {key: live.definition.dependencies for key, (live, _) in entries.items()})
        order = [key for key in reversed(list(before)) if key in entries]
        nodes = [
            Node(
                key,
                after[key],
                partial(
                    self._guard,
                    op,
                    entries[key][0].definition,
                    "DELETE",
                    partial(self._cleanup_node, op, *entries[key]),
                ),
            )
            for key in order
        ]
        self._phase(op, "cleanup", nodes)

    # -- phases and events ---------------------------------------------------------------------

    def _phase(self, op: _Op, phase: str, nodes: list[Node], *, stop_on_failure: bool = False) -> PhaseResult:
        def choose(ready: list[str]) -> str:
            if op.replay:
                wanted, _, key = op.replay[0].partition(":")
                if wanted == phase and key in ready:
                    op.replay.pop(0)
                    return key
            return ready[op.rng.randrange(len(ready))]

        labelled = [Node(node.key, node.after, partial(self._started, op, phase, node)) for node in nodes]
        sequential = self.mode == "sequential" or op.replay is not None
        return run_phase(self.clock, labelled, sequential=sequential, choose=choose, stop_on_failure=stop_on_failure)

    def _started(self, op: _Op, phase: str, node: Node, control: Control) -> Outcome:
        with self._report_lock:
            op.operation.order.append(f"{phase}:{node.key}")
        return node.action(control)

    def _guard(
        self, op: _Op, resource: ResourceDefinition, verb: str, work: Callable[[Control], Outcome], control: Control
    ) -> Outcome:
        try:
            return work(control)
        except Exception as error:  # a bug or an unexpected state: shown as the resource's failure
            self._resource_event(op, resource, f"{verb}_FAILED", f"Internal error of the rehearsal: {error!r}")
            return Outcome(ok=False, error=error)

    def _emit(self, op: _Op, event: StackEvent) -> None:
        with self._report_lock:
            op.operation.events.append(event)
            if self._report is not None:
                self._report(op.stack.name, event)

    def _stack_event(self, op: _Op, status: str, reason: str = "") -> None:
        op.stack.status = status
        self._emit(
            op,
            StackEvent(op.stack.name, status, reason, STACK_RESOURCE_TYPE, op.stack.stack_id, self.clock.now()),
        )

    def _begin(self, op: _Op, operation_type: str, status: str, reason: str) -> str:
        operation_id = self.registry.begin_operation(op.stack.stack_id, operation_type, status, reason)
        self._stack_event(op, status, reason)
        return operation_id

    def _set_status(self, op: _Op, status: str, reason: str = "") -> None:
        self.registry.set_stack_status(op.stack.stack_id, status, reason)
        self._stack_event(op, status, reason)

    def _resource_event(
        self,
        op: _Op,
        resource: ResourceDefinition,
        status: str,
        reason: str = "",
        *,
        physical_id: str | None = None,
        result: _Result | None = None,
        log_only: bool = False,
        remove: bool = False,
    ) -> None:
        stack_id_ = op.stack.stack_id
        logical_id, resource_type = resource.logical_id, resource.resource_type
        if log_only:
            self.registry.add_event(stack_id_, logical_id, resource_type, status, reason, physical_id=physical_id or "")
        else:
            self.registry.set_resource(
                stack_id_, logical_id, resource_type, status, physical_id=physical_id, reason=reason
            )
        if remove:
            self.registry.remove_resource(stack_id_, logical_id)
        event = StackEvent(
            logical_id,
            status,
            reason,
            resource_type,
            physical_id or "",
            self.clock.now(),
            request_id=result.request_id if result else "",
            delivery=result.delivery if result else None,
        )
        self._emit(op, event)

    def _start_next_duplicates(self, op: _Op) -> None:
        waiting, op.stack.next_duplicates = op.stack.next_duplicates, []
        for function, event in waiting:
            op.deliveries.append(_Delivery(self, op, function, event, only_duplicate=True).start())

    def _outputs(self, op: _Op, resolver: Resolver) -> str | None:
        try:
            outputs, exports = self._evaluate_outputs(resolver)
        except RehearsalError as error:
            return str(error)
        op.stack.outputs, op.stack.exports = outputs, exports
        return None

    def _evaluate_outputs(self, resolver: Resolver) -> tuple[dict[str, Any], dict[str, Any]]:
        outputs: dict[str, Any] = {}
        exports: dict[str, Any] = {}
        for name, spec in resolver.template.outputs.items():
            if "Condition" in spec and not resolver.condition(str(spec["Condition"])):
                continue
            value = resolver.resolve(spec.get("Value"))
            outputs[name] = value
            if isinstance(spec.get("Export"), dict) and "Name" in spec["Export"]:
                exports[str(resolver.resolve(spec["Export"]["Name"]))] = value
        return outputs, exports

    # -- resource actions ----------------------------------------------------------------------

    def _resolve(self, op: _Op, resource: ResourceDefinition) -> Mapping[str, Any]:
        assert op.resolver is not None
        properties = op.resolver.resolve(dict(resource.properties))
        assert isinstance(properties, dict)
        return properties

    def _create_node(
        self, op: _Op, resource: ResourceDefinition, touched: dict[str, _Touch], control: Control
    ) -> Outcome:
        touch = touched[resource.logical_id] = _Touch(resource, "Create")
        self._resource_event(op, resource, "CREATE_IN_PROGRESS")
        try:
            properties = self._resolve(op, resource)
        except RehearsalError as error:
            touch.result = "failed"
            self._resource_event(op, resource, "CREATE_FAILED", str(error))
            return Outcome(ok=False)
        touch.properties = properties
        if resource.is_custom:
            touch.called = True
            result = self._send(op, control, resource, "Create", properties)
        else:
            result = self._apply_standin(op, control, resource, "Create", properties)
        return self._created(op, resource, touch, result)

    def _created(self, op: _Op, resource: ResourceDefinition, touch: _Touch, result: _Result) -> Outcome:
        touch.result = result.status
        touch.physical_id = result.physical_id
        if result.status == "ok":
            touch.provisioned = True
            live = _Live(
                resource,
                result.physical_id,
                touch.properties,
                result.attributes,
                result.function,
                op.operation.operation_id,
            )
            with self._state_lock:
                op.stack.resources[resource.logical_id] = live
            self._resource_event(op, resource, "CREATE_COMPLETE", physical_id=result.physical_id, result=result)
            return Outcome(ok=True)
        if result.status == "cancelled":
            self._resource_event(op, resource, "CREATE_FAILED", "Resource creation cancelled", result=result)
            return Outcome(ok=False, cancelled=True)
        self._resource_event(
            op, resource, "CREATE_FAILED", result.reason, physical_id=result.physical_id, result=result
        )
        return Outcome(ok=False)

    def _update_node(
        self, op: _Op, resource: ResourceDefinition, touched: dict[str, _Touch], control: Control
    ) -> Outcome:
        with self._state_lock:
            old = op.stack.resources[resource.logical_id]
        touch = touched[resource.logical_id] = _Touch(resource, "Update", old=old)
        try:
            properties = self._resolve(op, resource)
        except RehearsalError as error:
            touch.result = "failed"
            self._resource_event(op, resource, "UPDATE_IN_PROGRESS", physical_id=old.physical_id)
            self._resource_event(op, resource, "UPDATE_FAILED", str(error), physical_id=old.physical_id)
            return Outcome(ok=False)
        touch.properties = properties
        if old.resource_type != resource.resource_type:
            return self._refuse_update(
                op,
                touch,
                "Update of resource type is not permitted. The new template modifies resource type of the following "
                f"resources: [{resource.logical_id}]",
            )
        if properties == old.properties and _asset_name(old.definition) == _asset_name(resource):
            touch.result = "unchanged"
            with self._state_lock:
                op.stack.resources[resource.logical_id] = replace(old, definition=resource)
            return Outcome(ok=True)
        if resource.is_custom:
            if properties.get("ServiceToken") != old.properties.get("ServiceToken"):
                return self._refuse_update(op, touch, "Modifying service token is not allowed.")
            self._resource_event(op, resource, "UPDATE_IN_PROGRESS", physical_id=old.physical_id)
            touch.called = True
            result = self._send(
                op, control, resource, "Update", properties, old_properties=old.properties, physical_id=old.physical_id
            )
            if result.status == "ok" and result.physical_id != old.physical_id:
                touch.action = "Replace"
            return self._updated(op, resource, touch, result)
        if requires_replacement(resource.resource_type, old.properties, properties):
            name = custom_name(resource.resource_type, properties)
            if name is not None and name == custom_name(resource.resource_type, old.properties):
                return self._refuse_update(
                    op,
                    touch,
                    "CloudFormation cannot update a stack when a custom-named resource requires replacing. "
                    f"Rename {name[0]} and update the stack again.",
                )
            touch.action = "Replace"
            self._resource_event(op, resource, "UPDATE_IN_PROGRESS", _REPLACING, physical_id=old.physical_id)
            result = self._apply_standin(op, control, resource, "Update", properties)
            return self._updated(op, resource, touch, result)
        self._resource_event(op, resource, "UPDATE_IN_PROGRESS", physical_id=old.physical_id)
        result = self._apply_standin(op, control, resource, "Update", properties, in_place_of=old)
        return self._updated(op, resource, touch, result)

    def _refuse_update(self, op: _Op, touch: _Touch, reason: str) -> Outcome:
        assert touch.old is not None
        touch.result = "failed"
        physical = touch.old.physical_id
        self._resource_event(op, touch.definition, "UPDATE_IN_PROGRESS", physical_id=physical)
        self._resource_event(op, touch.definition, "UPDATE_FAILED", reason, physical_id=physical)
        return Outcome(ok=False)

    def _updated(self, op: _Op, resource: ResourceDefinition, touch: _Touch, result: _Result) -> Outcome:
        assert touch.old is not None
        old = touch.old
        touch.result = result.status
        if result.status == "ok":
            touch.physical_id = result.physical_id
            touch.provisioned = touch.action == "Replace"
            live = _Live(
                resource, result.physical_id, touch.properties, result.attributes, result.function, old.created_in
            )
            with self._state_lock:
                op.stack.resources[resource.logical_id] = live
            self._resource_event(op, resource, "UPDATE_COMPLETE", physical_id=result.physical_id, result=result)
            return Outcome(ok=True)
        if result.status == "cancelled":
            self._resource_event(
                op, resource, "UPDATE_FAILED", "Resource update cancelled", physical_id=old.physical_id, result=result
            )
            return Outcome(ok=False, cancelled=True)
        self._resource_event(op, resource, "UPDATE_FAILED", result.reason, physical_id=old.physical_id, result=result)
        return Outcome(ok=False)

    def _roll_back_node(self, op: _Op, touch: _Touch, control: Control) -> Outcome:
        """UPDATE_ROLLBACK_IN_PROGRESS: update one resource back to what it was before the update."""
        assert touch.old is not None
        old, resource = touch.old, touch.definition
        self._resource_event(op, resource, "UPDATE_IN_PROGRESS", physical_id=old.physical_id)
        if resource.is_custom and touch.called:
            result = self._send(
                op,
                control,
                resource,
                "Update",
                old.properties,
                old_properties=touch.properties,
                physical_id=old.physical_id,
            )
        elif resource.is_custom:
            result = _Result("ok", old.physical_id)
        else:
            result = self._apply_standin(op, control, resource, "Update", old.properties, in_place_of=old, restore=old)
        if result.status != "ok":
            self._resource_event(
                op, resource, "UPDATE_FAILED", result.reason, physical_id=old.physical_id, result=result
            )
            return Outcome(ok=False)
        self._restore(op.stack, touch)
        self._resource_event(op, resource, "UPDATE_COMPLETE", physical_id=old.physical_id, result=result)
        return Outcome(ok=True)

    def _restore(self, stack: _Stack, touch: _Touch) -> None:
        if touch.old is not None:
            with self._state_lock:
                stack.resources[touch.old.logical_id] = touch.old

    def _delete_created(self, op: _Op, phase: str, touches: list[_Touch], *, remove: bool) -> PhaseResult:
        """Delete what an operation created (rollback of a create; cleanup after a rolled-back update)."""
        by_key = {touch.definition.logical_id: touch for touch in touches}
        after = _reverse(by_key, {key: touch.definition.dependencies for key, touch in by_key.items()})
        nodes = [
            Node(
                key,
                after[key],
                partial(
                    self._guard,
                    op,
                    by_key[key].definition,
                    "DELETE",
                    partial(self._delete_created_node, op, by_key[key], remove),
                ),
            )
            for key in reversed(list(by_key))
        ]
        return self._phase(op, phase, nodes)

    def _delete_created_node(self, op: _Op, touch: _Touch, remove: bool, control: Control) -> Outcome:
        resource = touch.definition
        made_up = touch.physical_id or self._made_up_id(op.stack.name, resource.logical_id)
        log_only = not remove
        if resource.deletion_policy == "Retain" and touch.provisioned:
            self._resource_event(op, resource, "DELETE_SKIPPED", physical_id=made_up, log_only=log_only, remove=remove)
            self._forget(op.stack, resource.logical_id, remove)
            return Outcome(ok=True)
        self._resource_event(op, resource, "DELETE_IN_PROGRESS", physical_id=made_up, log_only=log_only)
        if resource.is_custom and touch.called:
            result = self._send(op, control, resource, "Delete", touch.properties, physical_id=made_up)
        elif touch.provisioned and not resource.is_custom:
            result = self._delete_standin(op, control, resource, made_up, touch.properties)
        else:
            result = _Result("ok", made_up)
        if result.status != "ok":
            self._resource_event(
                op, resource, "DELETE_FAILED", result.reason, physical_id=made_up, result=result, log_only=log_only
            )
            return Outcome(ok=False)
        self._resource_event(
            op, resource, "DELETE_COMPLETE", physical_id=made_up, result=result, log_only=log_only, remove=remove
        )
        self._forget(op.stack, resource.logical_id, remove)
        return Outcome(ok=True)

    def _forget(self, stack: _Stack, logical_id: str, remove: bool) -> None:
        if remove:
            with self._state_lock:
                stack.resources.pop(logical_id, None)

    def _delete_node(self, op: _Op, live: _Live, control: Control) -> Outcome:
        """DELETE_IN_PROGRESS of the stack: one resource."""
        resource = live.definition
        if resource.deletion_policy in _RETAIN:
            self._resource_event(op, resource, "DELETE_SKIPPED", physical_id=live.physical_id, remove=True)
            self._forget(op.stack, live.logical_id, True)
            return Outcome(ok=True)
        self._resource_event(op, resource, "DELETE_IN_PROGRESS", physical_id=live.physical_id)
        if resource.is_custom:
            result = self._send(op, control, resource, "Delete", live.properties, physical_id=live.physical_id)
        else:
            result = self._delete_standin(op, control, resource, live.physical_id, live.properties)
        if result.status != "ok":
            self._resource_event(
                op, resource, "DELETE_FAILED", result.reason, physical_id=live.physical_id, result=result
            )
            return Outcome(ok=False)
        self._resource_event(op, resource, "DELETE_COMPLETE", physical_id=live.physical_id, result=result, remove=True)
        self._forget(op.stack, live.logical_id, True)
        return Outcome(ok=True)

    def _cleanup_node(self, op: _Op, live: _Live, replaced: bool, control: Control) -> Outcome:
        """UPDATE_COMPLETE_CLEANUP_IN_PROGRESS: the old physical resource of a replacement, or a removed one."""
        resource = live.definition
        policy = resource.update_replace_policy if replaced else resource.deletion_policy
        log_only, remove = replaced, not replaced
        if policy in _RETAIN:
            self._resource_event(
                op, resource, "DELETE_SKIPPED", physical_id=live.physical_id, log_only=log_only, remove=remove
            )
            if not replaced:
                self._forget(op.stack, live.logical_id, True)
            return Outcome(ok=True)
        self._resource_event(op, resource, "DELETE_IN_PROGRESS", physical_id=live.physical_id, log_only=log_only)
        if resource.is_custom:
            result = self._send(op, control, resource, "Delete", live.properties, physical_id=live.physical_id)
        else:
            result = self._delete_standin(op, control, resource, live.physical_id, live.properties)
        status = "DELETE_COMPLETE" if result.status == "ok" else "DELETE_FAILED"
        # A failed cleanup leaves the stack UPDATE_COMPLETE: the resource is left behind, outside the stack.
        self._resource_event(
            op,
            resource,
            status,
            result.reason,
            physical_id=live.physical_id,
            result=result,
            log_only=log_only,
            remove=remove,
        )
        if not replaced:
            self._forget(op.stack, live.logical_id, True)
        return Outcome(ok=result.status == "ok")

    def _made_up_id(self, stack_name: str, logical_id: str) -> str:
        return self._standins_or_fail().generated_name(stack_name, logical_id)

    # -- stand-ins -------------------------------------------------------------------------------

    def _apply_standin(
        self,
        op: _Op,
        control: Control,
        resource: ResourceDefinition,
        request_type: str,
        properties: Mapping[str, Any],
        *,
        in_place_of: _Live | None = None,
        restore: _Live | None = None,
    ) -> _Result:
        """Create (or update in place) a resource that is not a custom resource, with its faults."""
        stack_name, logical_id, resource_type = op.stack.name, resource.logical_id, resource.resource_type
        slow = self.faults._take("slow", stack_name, logical_id, resource_type, request_type)
        if slow is not None and not control.sleep(slow.seconds):
            return _Result("cancelled")
        fail = self.faults._take("fail", stack_name, logical_id, resource_type, request_type)
        if fail is not None:
            if fail.seconds and not control.sleep(fail.seconds):
                return _Result("cancelled")
            if fail.watch is not None:
                for _ in range(int(WATCH_LIMIT_SECONDS / 0.02)):
                    if fail.signal.wait(0.02) or control.cancelled:
                        break
                if control.cancelled:
                    return _Result("cancelled")
            return _Result("failed", reason=fail.reason)
        if control.cancelled:
            return _Result("cancelled")
        if restore is not None:
            return _Result("ok", restore.physical_id, restore.attributes, function=restore.function)
        try:
            if in_place_of is not None:
                made = Provisioned(in_place_of.physical_id, in_place_of.attributes)
            else:
                made = self._standins_or_fail().create(stack_name, logical_id, resource_type, properties)
            function = (
                self._function_spec(resource, properties, made.physical_id)
                if resource_type == LAMBDA_FUNCTION
                else None
            )
        except StandInError as error:
            return _Result("failed", reason=str(error))
        return _Result("ok", made.physical_id, made.attributes, function=function)

    def _delete_standin(
        self, op: _Op, control: Control, resource: ResourceDefinition, physical_id: str, properties: Mapping[str, Any]
    ) -> _Result:
        stack_name, logical_id, resource_type = op.stack.name, resource.logical_id, resource.resource_type
        slow = self.faults._take("slow", stack_name, logical_id, resource_type, "Delete")
        if slow is not None:
            control.sleep(slow.seconds)
        fail = self.faults._take("fail", stack_name, logical_id, resource_type, "Delete")
        if fail is not None:
            control.sleep(fail.seconds)
            return _Result("failed", reason=fail.reason)
        try:
            self._standins_or_fail().delete(resource_type, physical_id, properties)
        except StandInError as error:
            return _Result("failed", reason=str(error))
        return _Result("ok", physical_id)

    def _function_spec(self, resource: ResourceDefinition, properties: Mapping[str, Any], name: str) -> FunctionSpec:
        asset = resource.asset_dir
        if asset is None:
            code = (properties.get("Code") or {}).get("ZipFile")
            if not isinstance(code, str):
                raise StandInError(f"{resource.logical_id}: the function has neither an asset nor inline code")
            asset = inline_asset(code)
        variables = (properties.get("Environment") or {}).get("Variables") or {}
        return FunctionSpec(
            logical_id=resource.logical_id,
            asset_dir=asset,
            handler=str(properties.get("Handler", "index.handler")),
            timeout=float(properties.get("Timeout", 3)),
            memory_mb=int(properties.get("MemorySize", 128)),
            environment={str(key): str(stringify(value)) for key, value in variables.items()},
            runtime=str(properties.get("Runtime", "")),
            function_name=name,
        )

    # -- custom resources ------------------------------------------------------------------------

    def _function_for(self, token: str) -> FunctionSpec | None:
        """The function behind a ServiceToken (its Arn or name), with its EventInvokeConfig's retry settings."""
        with self._state_lock:
            lives = [live for stack in self._stacks.values() for live in stack.resources.values()]
        function = next(
            (
                live
                for live in lives
                if live.resource_type == LAMBDA_FUNCTION and token in (live.attributes.get("Arn"), live.physical_id)
            ),
            None,
        )
        if function is None or function.function is None:
            return None
        spec = function.function
        names = {function.physical_id, str(function.attributes.get("Arn"))}
        for live in lives:
            if live.resource_type == EVENT_INVOKE_CONFIG and str(live.properties.get("FunctionName")) in names:
                spec = replace(
                    spec,
                    retry_attempts=int(live.properties.get("MaximumRetryAttempts", spec.retry_attempts)),
                    maximum_event_age=float(live.properties.get("MaximumEventAgeInSeconds", spec.maximum_event_age)),
                )
        return spec

    def _accepted(self, url: str) -> ResponseAttempt | None:
        """The first response CloudFormation accepted for ``url`` (kept once found: it never changes)."""
        found = self._answers.get(url)
        if found is None:
            found = next((attempt for attempt in self.responses.attempts(url) if attempt.accepted), None)
            if found is not None:
                self._answers[url] = found
        return found

    def _send(
        self,
        op: _Op,
        control: Control,
        resource: ResourceDefinition,
        request_type: str,
        properties: Mapping[str, Any],
        *,
        old_properties: Mapping[str, Any] | None = None,
        physical_id: str | None = None,
    ) -> _Result:
        """Send one custom-resource event and wait for CloudFormation's answer (or its ServiceTimeout)."""
        token = str(properties.get("ServiceToken", ""))
        function = self._function_for(token)
        if function is None:
            return _Result(
                "failed",
                physical_id or "",
                reason=f"Invalid service token {token!r}: the rehearsal runs custom resources backed by a Lambda "
                "function it has deployed, and there is none with this Arn",
            )
        stack_name, logical_id, resource_type = op.stack.name, resource.logical_id, resource.resource_type
        url = self.responses.new_response_url(logical_id)
        event = cloudformation_event(
            request_type,
            properties,
            old_properties=old_properties,
            physical_id=physical_id,
            logical_id=logical_id,
            stack=op.stack.stack_id,
            resource_type=resource_type,
            service_token=token,
            response_url=url,
        )
        request_id = str(event["RequestId"])
        crash = self.faults._take("crash", stack_name, logical_id, resource_type, request_type)
        lost = self.faults._take("lose_answer", stack_name, logical_id, resource_type, request_type) is not None
        duplicate = self.faults._take("duplicate", stack_name, logical_id, resource_type, request_type)
        when = duplicate.when if duplicate is not None else None
        if when == "end":
            op.deferred_end.append((function, event))
        elif when == "next":
            op.stack.next_duplicates.append((function, event))
        delivery = _Delivery(
            self, op, function, event, crash=crash, duplicate=when if when in ("concurrent", "after") else None
        )
        op.deliveries.append(delivery.start())
        timeout = _service_timeout(properties)
        deadline = self.clock.monotonic() + timeout
        control.wait_until(deadline, lambda: not lost and self._accepted(url) is not None)
        if control.cancelled:
            return _Result("cancelled", delivery=delivery, request_id=request_id)
        attempt = None if lost else self._accepted(url)
        if attempt is None:
            what = "its answer was lost (faults.lose_answer)" if lost else _why_silent(delivery)
            reason = (
                _NO_ANSWER.format(request_id=request_id)
                + f" (Rehearsal: no answer within the ServiceTimeout of {timeout:.0f} s; {what}.)"
            )
            return _Result("failed", physical_id or "", reason=reason, delivery=delivery, request_id=request_id)
        body = attempt.body or {}
        answered_id = str(body.get("PhysicalResourceId") or "")
        if attempt.problems:
            reason = "Invalid response from the custom resource: " + "; ".join(attempt.problems)
            return _Result("failed", physical_id or "", reason=reason, delivery=delivery, request_id=request_id)
        if body.get("Status") != "SUCCESS":
            reason = (
                f"Received response status [FAILED] from custom resource. Message returned: {body.get('Reason', '')} "
                f"(RequestId: {request_id})"
            )
            return _Result("failed", answered_id, reason=reason, delivery=delivery, request_id=request_id)
        data = body.get("Data")
        return _Result(
            "ok",
            answered_id,
            dict(data) if isinstance(data, dict) else {},
            delivery=delivery,
            request_id=request_id,
        )


def _why_silent(delivery: _Delivery) -> str:
    """What the function did instead of answering, for the ServiceTimeout reason."""
    runs = list(delivery.runs)
    finished = [run.invocation for run in runs if run.invocation is not None and run.kind != "duplicate"]
    if not finished:
        return "the function was still running"
    last = finished[-1]
    if last.killed:
        return "the function's process was killed (faults.crash)"
    tries = f" (run {len(finished)} times)" if len(finished) > 1 else ""
    if delivery.dropped:
        tries += "; Lambda dropped the event after its MaximumEventAgeInSeconds"
    return f"{last.reason}{tries}"


def _asset_name(resource: ResourceDefinition) -> str | None:
    """What CloudFormation sees of a function's code beyond its properties: the asset's name (its hash)."""
    return resource.asset_dir.name if resource.asset_dir is not None else None


def _running(server: Any) -> bool:
    try:
        server.port  # noqa: B018 - raises when the server is not running
    except RuntimeError:
        return False
    return True
