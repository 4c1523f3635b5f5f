"""The rehearsal's live CloudFormation state: what its local CloudFormation API answers from.

:class:`StackRegistry` is written by the rehearsal's CloudFormation engine as it plays a deploy
(stack status, each resource's status and physical id, the event log) and read, at any moment
and from other threads, by :class:`~constructs_lib.testing.cloudformation_api.CloudFormationApi`
(``DescribeStacks``, ``DescribeStackResource(s)``, ``ListStackResources``,
``DescribeStackEvents``). Readers get immutable snapshots. Standard library only.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

__all__ = ["ResourceRecord", "StackEventRecord", "StackRecord", "StackRegistry"]


@dataclass(frozen=True)
class ResourceRecord:
    """One resource of a stack as CloudFormation reports it."""

    logical_id: str
    resource_type: str
    status: str
    """``CREATE_IN_PROGRESS``, ``CREATE_COMPLETE``, ``UPDATE_IN_PROGRESS``, ``DELETE_FAILED``, ..."""
    physical_id: str = ""
    status_reason: str = ""
    last_updated: float = field(default_factory=time.time)
    """Seconds since the epoch (wall clock), as CloudFormation's timestamps."""


@dataclass(frozen=True)
class StackEventRecord:
    """One entry of ``DescribeStackEvents`` (the stack's own events have its name as logical id)."""

    event_id: str
    logical_id: str
    resource_type: str
    status: str
    physical_id: str = ""
    status_reason: str = ""
    timestamp: float = field(default_factory=time.time)
    operation_id: str = ""


@dataclass(frozen=True)
class StackRecord:
    """One stack, at one instant."""

    stack_id: str
    stack_name: str
    status: str
    status_reason: str = ""
    creation_time: float = field(default_factory=time.time)
    last_updated_time: float | None = None
    deletion_time: float | None = None
    resources: tuple[ResourceRecord, ...] = ()
    events: tuple[StackEventRecord, ...] = ()
    """Oldest first (the API answers newest first)."""
    operation_id: str = ""
    """The id of the stack operation in progress or last run (``LastOperations``)."""
    operation_type: str = ""
    """``CREATE_STACK``, ``UPDATE_STACK`` or ``DELETE_STACK``."""

    def resource(self, logical_id: str) -> ResourceRecord | None:
        """The resource with this logical id, or None."""
        return next((item for item in self.resources if item.logical_id == logical_id), None)


class StackRegistry:
    """Thread-safe store of :class:`StackRecord`; the writer is the rehearsal, readers see snapshots.

    Stacks are found by name (the live stack of that name) or by stack id (live or deleted, as
    CloudFormation keeps deleted stacks visible by id for a while).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._by_id: dict[str, StackRecord] = {}

    # -- reading --------------------------------------------------------------------------

    def find(self, name_or_id: str) -> StackRecord | None:
        """The stack with this id, or the live stack with this name; None if there is none."""
        with self._lock:
            found = self._by_id.get(name_or_id)
            if found is not None:
                return found
            live = [
                stack
                for stack in self._by_id.values()
                if stack.stack_name == name_or_id and stack.status != "DELETE_COMPLETE"
            ]
            return live[-1] if live else None

    def stacks(self, *, include_deleted: bool = False) -> tuple[StackRecord, ...]:
        """Every stack, oldest first."""
        with self._lock:
            return tuple(
                stack for stack in self._by_id.values() if include_deleted or stack.status != "DELETE_COMPLETE"
            )

    # -- writing (the rehearsal) ------------------------------------------------------------

    def create_stack(self, stack_id: str, stack_name: str, *, operation_id: str = "") -> StackRecord:
        """Register a new stack in ``CREATE_IN_PROGRESS``."""
        now = self._clock()
        record = StackRecord(
            stack_id=stack_id,
            stack_name=stack_name,
            status="CREATE_IN_PROGRESS",
            creation_time=now,
            operation_id=operation_id or str(uuid.uuid4()),
            operation_type="CREATE_STACK",
        )
        with self._lock:
            self._by_id[stack_id] = record
        self.add_event(stack_id, stack_name, "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated")
        return record

    def begin_operation(self, stack_id: str, operation_type: str, status: str, reason: str = "") -> str:
        """Start an update or delete: a new operation id, the stack's new status and its event."""
        operation_id = str(uuid.uuid4())
        now = self._clock()
        with self._lock:
            stack = self._by_id[stack_id]
            updated = replace(stack, operation_id=operation_id, operation_type=operation_type)
            if operation_type == "UPDATE_STACK":
                updated = replace(updated, last_updated_time=now)
            self._by_id[stack_id] = updated
        self.set_stack_status(stack_id, status, reason)
        return operation_id

    def set_stack_status(self, stack_id: str, status: str, reason: str = "") -> None:
        """Move the stack to ``status`` and log the stack event."""
        now = self._clock()
        with self._lock:
            stack = self._by_id[stack_id]
            changes: dict[str, object] = {"status": status, "status_reason": reason}
            if status == "DELETE_COMPLETE":
                changes["deletion_time"] = now
            self._by_id[stack_id] = replace(stack, **changes)  # type: ignore[arg-type]
            name = stack.stack_name
        self.add_event(stack_id, name, "AWS::CloudFormation::Stack", status, reason, physical_id=stack_id)

    def set_resource(
        self,
        stack_id: str,
        logical_id: str,
        resource_type: str,
        status: str,
        *,
        physical_id: str | None = None,
        reason: str = "",
        log: bool = True,
    ) -> None:
        """Set a resource's status (and physical id, when given); log its event unless ``log`` is False."""
        now = self._clock()
        with self._lock:
            stack = self._by_id[stack_id]
            old = stack.resource(logical_id)
            record = ResourceRecord(
                logical_id=logical_id,
                resource_type=resource_type,
                status=status,
                physical_id=(physical_id if physical_id is not None else old.physical_id if old else ""),
                status_reason=reason,
                last_updated=now,
            )
            others = tuple(item for item in stack.resources if item.logical_id != logical_id)
            self._by_id[stack_id] = replace(stack, resources=(*others, record))
        if log:
            self.add_event(stack_id, logical_id, resource_type, status, reason, physical_id=record.physical_id)

    def remove_resource(self, stack_id: str, logical_id: str) -> None:
        """Forget a resource (deleted, or retained and no longer part of the stack)."""
        with self._lock:
            stack = self._by_id[stack_id]
            self._by_id[stack_id] = replace(
                stack, resources=tuple(item for item in stack.resources if item.logical_id != logical_id)
            )

    def add_event(
        self,
        stack_id: str,
        logical_id: str,
        resource_type: str,
        status: str,
        reason: str = "",
        *,
        physical_id: str = "",
    ) -> StackEventRecord:
        """Append one event to the stack's log."""
        with self._lock:
            stack = self._by_id[stack_id]
            event = StackEventRecord(
                event_id=str(uuid.uuid4()),
                logical_id=logical_id,
                resource_type=resource_type,
                status=status,
                physical_id=physical_id,
                status_reason=reason,
                timestamp=self._clock(),
                operation_id=stack.operation_id,
            )
            self._by_id[stack_id] = replace(stack, events=(*stack.events, event))
        return event

    def forget(self, stack_ids: Iterable[str] | None = None) -> None:
        """Drop stacks entirely (all of them by default): a fresh account."""
        with self._lock:
            for key in list(self._by_id) if stack_ids is None else list(stack_ids):
                self._by_id.pop(key, None)
