"""What CloudFormation says about the event's stack and resource at this moment.

Two reads of the function's own stack (IAM allows nothing else): ``DescribeStacks`` for the
stack's status, which names the phase of the deployment (a rollback Update looks like any other
Update: only the status tells them apart), and ``DescribeStackResource`` for the resource's status
(an event CloudFormation really sent finds its resource in progress). Nothing here depends on
``GetTemplate``, whose answer during an update is undocumented.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .model import Phase, phase_of

logger = logging.getLogger(__name__)

IN_PROGRESS = {"Create": "CREATE_IN_PROGRESS", "Update": "UPDATE_IN_PROGRESS", "Delete": "DELETE_IN_PROGRESS"}
"""The status CloudFormation shows for a resource while it waits for that request's answer."""

PHASES_OF_REQUEST = {
    "Create": frozenset({"CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS"}),
    "Update": frozenset({"UPDATE_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS"}),
    "Delete": frozenset(
        {
            "ROLLBACK_IN_PROGRESS",
            "DELETE_IN_PROGRESS",
            "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
            "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        }
    ),
}
"""The stack statuses in which CloudFormation sends each request type."""


@dataclass(frozen=True)
class StackFacts:
    """The stack's and the resource's status, read from CloudFormation."""

    stack_status: str
    resource_status: str
    physical_id: str = ""

    @property
    def phase(self) -> Phase:
        return phase_of(self.stack_status)


class StackUnreadable(Exception):
    """CloudFormation could not be asked (``label``: the error code); nothing is known."""

    def __init__(self, label: str, message: str = "") -> None:
        self.label = label
        self.message = message
        super().__init__(f"{label}: {message}" if message else label)


class NotInStack(Exception):
    """CloudFormation says the stack or the resource does not exist."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def read_facts(client: Any, stack_id: str, logical_id: str) -> StackFacts:
    """Read the stack's status and the resource's (the two calls at once).

    :raises NotInStack: the stack or resource does not exist (a foreign or stale event).
    :raises StackUnreadable: any other failure (access denied, throttling beyond retries, network).
    """
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="cloudformation") as pool:
        stacks = pool.submit(_call, client.describe_stacks, StackName=stack_id)
        detail = pool.submit(_call, client.describe_stack_resource, StackName=stack_id, LogicalResourceId=logical_id)
        found = (stacks.result().get("Stacks") or [None])[0]
        if not found:
            raise NotInStack(f"stack {stack_id} does not exist")
        resource = detail.result().get("StackResourceDetail") or {}
    return StackFacts(
        str(found.get("StackStatus", "")),
        str(resource.get("ResourceStatus", "")),
        str(resource.get("PhysicalResourceId", "")),
    )


def _call(method: Any, **kwargs: Any) -> Any:
    try:
        return method(**kwargs)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", "ClientError"))
        message = str(error.response.get("Error", {}).get("Message", ""))
        if code == "ValidationError" and "does not exist" in message:
            raise NotInStack(message) from None
        raise StackUnreadable(code, message) from None
    except BotoCoreError as error:
        raise StackUnreadable(type(error).__name__, "could not reach CloudFormation") from None


def stack_name_of(stack_id: str) -> str:
    """``Name`` of ``arn:aws:cloudformation:<region>:<account>:stack/<Name>/<uuid>`` (or the id itself)."""
    parts = stack_id.split("/")
    return parts[1] if len(parts) >= 3 and parts[0].endswith(":stack") else stack_id


CLEANUP_PHASES = frozenset({"UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"})
"""Phases in which CloudFormation deletes the other physical resource of a replaced one."""


def is_replaced_delete(request_type: str, facts: StackFacts, physical_id: str) -> bool:
    """A cleanup Delete of a replaced resource's other physical id.

    CloudFormation reports the logical id's current resource (the one that stays, not in progress),
    so such a Delete is recognised by its phase and by a physical id that is not the current one.
    """
    return (
        request_type == "Delete"
        and facts.stack_status in CLEANUP_PHASES
        and bool(physical_id)
        and bool(facts.physical_id)
        and physical_id != facts.physical_id
    )


def refusal(request_type: str, facts: StackFacts, logical_id: str, stack_id: str, physical_id: str = "") -> str | None:
    """Why CloudFormation cannot be waiting for this event's answer, or None when it can be."""
    name = stack_name_of(stack_id)
    expected = IN_PROGRESS[request_type]
    if is_replaced_delete(request_type, facts, physical_id):
        return None
    if facts.stack_status not in PHASES_OF_REQUEST[request_type]:
        return (
            f"Refused: stack {name} is {facts.stack_status or 'in an unknown state'}, in which CloudFormation "
            f"sends no {request_type}: a stale or duplicate event; nothing was changed"
        )
    if facts.resource_status != expected:
        return (
            f"Refused: resource {logical_id} is {facts.resource_status or 'unknown'} in stack {name}, not "
            f"{expected}: a stale event, or not sent by CloudFormation; nothing was changed"
        )
    return None
