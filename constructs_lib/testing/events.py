"""CloudFormation's custom-resource requests and Lambda's context: the one builder of the repository.

Tests, the benchmark and the rehearsal build every event here, so that all of them send what
CloudFormation sends: every scalar of the properties a string (:func:`stringify`), the
``ServiceToken`` inside the properties, ``OldResourceProperties`` and ``PhysicalResourceId`` only
where CloudFormation puts them. Standard library only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from constructs_lib._handler import rules
from constructs_lib.testing._bootstrap import LambdaContext

__all__ = [
    "ACCOUNT",
    "DEFAULT_SERVICE_TOKEN",
    "DEFAULT_STACK_ID",
    "LambdaContext",
    "association_properties",
    "cloudformation_event",
    "stack_id",
    "stringify",
]

ACCOUNT = "123456789012"
"""The account of every ARN the testing kit makes up."""

DEFAULT_STACK_ID = f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/Main/4f1a2b3c-0000-4000-8000-000000000001"
DEFAULT_SERVICE_TOKEN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:AssociationsHandler"


def stack_id(stack_name: str, *, region: str = "us-east-1", unique: str | None = None) -> str:
    """A CloudFormation stack ARN, ``arn:aws:cloudformation:<region>:<account>:stack/<name>/<uuid>``."""
    return f"arn:aws:cloudformation:{region}:{ACCOUNT}:stack/{stack_name}/{unique or uuid.uuid4()}"


def stringify(value: Any) -> Any:
    """Scalars as CloudFormation delivers them to a custom resource: all strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return [stringify(item) for item in value]
    if isinstance(value, dict):
        return {key: stringify(item) for key, item in value.items()}
    return value


def association_properties(
    stack_name: str,
    user_names: Sequence[str],
    *,
    authentication_type: str = "USERPOOL",
    send_email_notification: bool = False,
    max_concurrency: int = rules.DEFAULT_MAX_CONCURRENCY,
    **extra: Any,
) -> dict[str, Any]:
    """``ResourceProperties`` of an association as the construct declares them (not yet stringified)."""
    return {
        "StackName": stack_name,
        "UserNames": list(user_names),
        "AuthenticationType": authentication_type,
        "SendEmailNotification": send_email_notification,
        "MaxConcurrency": max_concurrency,
        **extra,
    }


def cloudformation_event(
    request_type: str,
    properties: Mapping[str, Any] | None,
    *,
    old_properties: Mapping[str, Any] | None = None,
    physical_id: str | None = None,
    logical_id: str = "Associations",
    stack: str = DEFAULT_STACK_ID,
    resource_type: str = rules.RESOURCE_TYPE,
    service_token: str = DEFAULT_SERVICE_TOKEN,
    request_id: str | None = None,
    response_url: str | None = None,
) -> dict[str, Any]:
    """One custom-resource request as CloudFormation sends it to the function.

    ``properties`` and ``old_properties`` are stringified and get the ``ServiceToken``; pass None
    for ``properties`` to send a malformed event without them. ``ResponseURL`` is left out unless
    given (the harness that delivers the event issues one).
    """
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": service_token,
        "StackId": stack,
        "RequestId": request_id or str(uuid.uuid4()),
        "LogicalResourceId": logical_id,
        "ResourceType": resource_type,
        "ResourceProperties": None if properties is None else _with_token(properties, service_token),
    }
    if response_url is not None:
        event["ResponseURL"] = response_url
    if old_properties is not None:
        event["OldResourceProperties"] = _with_token(old_properties, service_token)
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    return event


def _with_token(properties: Mapping[str, Any], service_token: str) -> dict[str, Any]:
    stringified: dict[str, Any] = stringify({"ServiceToken": service_token, **properties})
    return stringified
