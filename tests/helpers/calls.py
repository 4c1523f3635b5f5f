"""Reading the AppStream fake's call log and building what CloudFormation would receive.

Small helpers shared by the handler's tests: the batch calls of one operation, the items they
carried, and the response body crhelper would build from an :class:`Answer` (normalised as the
handler's responder sends it), checked against the rules CloudFormation applies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from appstream_handler.handler import Answer, answer_ids
from appstream_handler.responder import normalise_body
from constructs_lib.testing import BATCH_ASSOCIATE, BATCH_DISASSOCIATE, DESCRIBE_ASSOCIATIONS, CallRecord
from constructs_lib.testing.response_server import cfn_response_problems

__all__ = [
    "BATCH_ASSOCIATE",
    "BATCH_DISASSOCIATE",
    "DESCRIBE_ASSOCIATIONS",
    "batch_calls",
    "batch_items",
    "changing_calls",
    "email_flags",
    "response_body",
    "response_problems",
    "user_names",
    "users",
]


def users(count: int, prefix: str = "user", domain: str = "example.com") -> list[str]:
    """``count`` distinct user names, ``user000@example.com`` ... (sorted as generated)."""
    return [f"{prefix}{index:03d}@{domain}" for index in range(count)]


def batch_calls(calls: Iterable[CallRecord], operation: str) -> list[CallRecord]:
    """The recorded calls of ``operation``, oldest first."""
    return [call for call in calls if call.operation == operation]


def changing_calls(calls: Iterable[CallRecord]) -> list[CallRecord]:
    """Every batch (dis)association call, throttled or faulted ones included."""
    return [call for call in calls if call.operation in (BATCH_ASSOCIATE, BATCH_DISASSOCIATE)]


def batch_items(call: CallRecord) -> list[Mapping[str, Any]]:
    """The ``UserStackAssociations`` items one batch call carried."""
    items = call.body.get("UserStackAssociations") or []
    return [item for item in items if isinstance(item, Mapping)]


def user_names(calls: Iterable[CallRecord]) -> list[str]:
    """The user names of every item of ``calls``, in the order sent."""
    return [str(item.get("UserName")) for call in calls for item in batch_items(call)]


def email_flags(calls: Iterable[CallRecord]) -> set[object]:
    """The ``SendEmailNotification`` values sent (``None`` where the key was left out)."""
    return {item.get("SendEmailNotification") for call in calls for item in batch_items(call)}


def response_body(event: Mapping[str, Any], answer: Answer) -> dict[str, Any]:
    """The body crhelper builds from ``answer``, normalised as the function's responder sends it."""
    body: dict[str, Any] = {
        "Status": answer.status,
        "PhysicalResourceId": answer.physical_resource_id,
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "Reason": answer.reason,
        "Data": {},
        "NoEcho": False,
    }
    return normalise_body(body, answer_ids(event)[1])


def response_problems(event: Mapping[str, Any], answer: Answer) -> Sequence[str]:
    """Why CloudFormation would reject the answer to ``event`` (empty: it would accept it)."""
    body = response_body(event, answer)
    problems = list(cfn_response_problems(json.dumps(body).encode("utf-8", "surrogatepass")))
    for key in ("StackId", "RequestId", "LogicalResourceId"):
        if body[key] != event.get(key):
            problems.append(f"{key} not echoed")
    return problems
