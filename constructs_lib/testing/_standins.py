"""What the rehearsal's CloudFormation does for resources that are not custom resources.

AppStream stacks and users are created in the AppStream fake; the types
:class:`~constructs_lib.testing.aws_services.LocalAws` provisions (DynamoDB tables, SSM
parameters, S3 buckets) are created there; every other type is a stand-in that only gets a
physical id and made-up attributes. This module also knows which property changes need a
replacement (:data:`REPLACEMENT_PROPERTIES`) and the names CloudFormation generates.
"""

from __future__ import annotations

import hashlib
import random
import string
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from constructs_lib.testing.appstream import AppStreamState
from constructs_lib.testing.aws_services import PROVISIONED_TYPES, LocalAws, ProvisioningError
from constructs_lib.testing.events import ACCOUNT

__all__ = ["REPLACEMENT_PROPERTIES", "Provisioned", "StandInError", "StandIns"]

APPSTREAM_STACK = "AWS::AppStream::Stack"
APPSTREAM_USER = "AWS::AppStream::User"
LAMBDA_FUNCTION = "AWS::Lambda::Function"

REPLACEMENT_PROPERTIES: Mapping[str, frozenset[str]] = {
    APPSTREAM_STACK: frozenset({"Name"}),
    APPSTREAM_USER: frozenset({"UserName", "AuthenticationType", "FirstName", "LastName", "MessageAction"}),
    "AWS::DynamoDB::Table": frozenset({"TableName", "KeySchema", "LocalSecondaryIndexes"}),
    "AWS::SSM::Parameter": frozenset({"Name"}),
    "AWS::S3::Bucket": frozenset({"BucketName", "ObjectLockEnabled"}),
    LAMBDA_FUNCTION: frozenset({"FunctionName", "PackageType"}),
    "AWS::Lambda::EventInvokeConfig": frozenset({"FunctionName", "Qualifier"}),
    "AWS::IAM::Role": frozenset({"RoleName", "Path"}),
    "AWS::IAM::ManagedPolicy": frozenset({"ManagedPolicyName", "Path"}),
    "AWS::IAM::RolePolicy": frozenset({"PolicyName", "RoleName"}),
    "AWS::Logs::LogGroup": frozenset({"LogGroupName", "KmsKeyId"}),
    "AWS::SQS::Queue": frozenset({"QueueName", "FifoQueue"}),
    "AWS::SNS::Topic": frozenset({"TopicName", "FifoTopic"}),
}
"""Per resource type, the properties whose change makes CloudFormation replace the resource."""

NAME_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    APPSTREAM_STACK: ("Name",),
    APPSTREAM_USER: ("UserName", "AuthenticationType"),
    "AWS::DynamoDB::Table": ("TableName",),
    "AWS::SSM::Parameter": ("Name",),
    "AWS::S3::Bucket": ("BucketName",),
    LAMBDA_FUNCTION: ("FunctionName",),
    "AWS::IAM::Role": ("RoleName",),
    "AWS::IAM::ManagedPolicy": ("ManagedPolicyName",),
    "AWS::Logs::LogGroup": ("LogGroupName",),
    "AWS::SQS::Queue": ("QueueName",),
    "AWS::SNS::Topic": ("TopicName",),
}
"""Per resource type, the properties that name the physical resource (a custom name, when given)."""

_NAME_LIMITS = {APPSTREAM_STACK: 100, LAMBDA_FUNCTION: 64, "AWS::IAM::Role": 64, "AWS::Logs::LogGroup": 512}


class StandInError(Exception):
    """The resource could not be created, updated or deleted; the message is the status reason."""


@dataclass(frozen=True)
class Provisioned:
    """A physical resource: its id (what ``Ref`` returns for most types) and its ``GetAtt`` attributes."""

    physical_id: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


def requires_replacement(resource_type: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether changing ``old`` properties to ``new`` makes CloudFormation replace the resource."""
    return any(old.get(name) != new.get(name) for name in REPLACEMENT_PROPERTIES.get(resource_type, ()))


def custom_name(resource_type: str, properties: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The custom name the properties give the resource (None if CloudFormation generates one)."""
    keys = NAME_PROPERTIES.get(resource_type, ())
    if not keys or properties.get(keys[0]) in (None, ""):
        return None
    return tuple(properties.get(key) for key in keys)


class StandIns:
    """Creates and deletes non-custom resources: in the AppStream fake, in LocalAws, or as stand-ins.

    ``appstream`` is the fake's state; ``aws`` returns the LocalAws to use (started on first
    use by the caller), or is None to treat LocalAws's types as stand-ins too; ``user_delay``
    is the eventual-consistency delay of created AppStream users (``visible_after``);
    ``names`` generates CloudFormation's random name suffixes.
    """

    def __init__(
        self,
        *,
        appstream: AppStreamState,
        aws: Callable[[], LocalAws] | None,
        region: str,
        names: random.Random,
        user_delay: float = 0.0,
    ) -> None:
        self._appstream = appstream
        self._aws = aws
        self._region = region
        self._names = names
        self._names_lock = threading.Lock()
        self._user_delay = user_delay

    def generated_name(self, stack_name: str, logical_id: str, *, limit: int = 128) -> str:
        """``<stack>-<logicalId>-<RANDOM12>``, cut to ``limit`` characters, as CloudFormation names things."""
        with self._names_lock:
            suffix = "".join(self._names.choice(string.ascii_uppercase + string.digits) for _ in range(12))
        return f"{f'{stack_name}-{logical_id}'[: limit - 13]}-{suffix}"

    # -- create / update / delete --------------------------------------------------------------

    def create(
        self, stack_name: str, logical_id: str, resource_type: str, properties: Mapping[str, Any]
    ) -> Provisioned:
        """Create the physical resource for ``properties``.

        :raises StandInError: with CloudFormation's status reason, if it cannot be created.
        """
        if resource_type == APPSTREAM_STACK:
            return self._create_appstream_stack(stack_name, logical_id, properties)
        if resource_type == APPSTREAM_USER:
            return self._create_appstream_user(properties)
        if resource_type in PROVISIONED_TYPES and self._aws is not None:
            try:
                made = self._aws().create_resource(resource_type, logical_id, properties, stack_name=stack_name)
            except ProvisioningError as error:
                raise StandInError(f"{error.reason} (Service: {error.code})") from error
            return Provisioned(made.physical_id, dict(made.attributes))
        limit = _NAME_LIMITS.get(resource_type, 128)
        keys = NAME_PROPERTIES.get(resource_type)
        name = str(properties.get(keys[0])) if keys and properties.get(keys[0]) else None
        physical = name or self.generated_name(stack_name, logical_id, limit=limit)
        return Provisioned(physical, self._attributes(resource_type, physical))

    def delete(self, resource_type: str, physical_id: str, properties: Mapping[str, Any]) -> None:
        """Delete the physical resource; one already gone counts as deleted.

        :raises StandInError: with CloudFormation's status reason, if it cannot be deleted.
        """
        if resource_type == APPSTREAM_STACK:
            self._appstream.remove_stack(physical_id)
        elif resource_type == APPSTREAM_USER:
            self._appstream.remove_user(physical_id, str(properties.get("AuthenticationType", "USERPOOL")))
        elif resource_type in PROVISIONED_TYPES and self._aws is not None:
            try:
                self._aws().delete_resource(resource_type, physical_id)
            except ProvisioningError as error:
                raise StandInError(f"{error.reason} (Service: {error.code})") from error

    def provisions(self, resource_type: str) -> bool:
        """Whether ``resource_type`` is created somewhere real (the AppStream fake, LocalAws)."""
        return resource_type in (APPSTREAM_STACK, APPSTREAM_USER) or (
            resource_type in PROVISIONED_TYPES and self._aws is not None
        )

    def attribute(self, resource_type: str, physical_id: str, attribute: str) -> Any:
        """A ``GetAtt`` attribute CloudFormation would know; made up for stand-ins."""
        known = self._attributes(resource_type, physical_id)
        if attribute in known:
            return known[attribute]
        service, _, kind = resource_type.removeprefix("AWS::").partition("::")
        if attribute == "Arn":
            return f"arn:aws:{service.lower()}:{self._region}:{ACCOUNT}:{kind.lower()}/{physical_id}"
        return f"{physical_id}.{attribute}"

    # -- per type --------------------------------------------------------------------------------

    def _attributes(self, resource_type: str, physical_id: str) -> dict[str, Any]:
        region = self._region
        if resource_type == LAMBDA_FUNCTION:
            return {"Arn": f"arn:aws:lambda:{region}:{ACCOUNT}:function:{physical_id}"}
        if resource_type == "AWS::IAM::Role":
            role_id = "AROA" + hashlib.sha256(physical_id.encode()).hexdigest()[:17].upper()
            return {"Arn": f"arn:aws:iam::{ACCOUNT}:role/{physical_id}", "RoleId": role_id}
        if resource_type == "AWS::Logs::LogGroup":
            return {"Arn": f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{physical_id}:*"}
        if resource_type == APPSTREAM_STACK:
            return {"Arn": f"arn:aws:appstream:{region}:{ACCOUNT}:stack/{physical_id}"}
        return {}

    def _create_appstream_stack(self, stack_name: str, logical_id: str, properties: Mapping[str, Any]) -> Provisioned:
        name = str(properties.get("Name") or self.generated_name(stack_name, logical_id, limit=100))
        if name in self._appstream.stacks():
            raise StandInError(f"The stack {name} already exists. (Service: AppStream, ResourceAlreadyExistsException)")
        try:
            self._appstream.add_stack(name)
        except ValueError as error:
            raise StandInError(f"{error} (Service: AppStream, ValidationException)") from error
        return Provisioned(name, self._attributes(APPSTREAM_STACK, name))

    def _create_appstream_user(self, properties: Mapping[str, Any]) -> Provisioned:
        name = str(properties.get("UserName", ""))
        auth = str(properties.get("AuthenticationType", ""))
        if (name, auth) in self._appstream.users():
            raise StandInError(f"The user {name} already exists. (Service: AppStream, ResourceAlreadyExistsException)")
        try:
            self._appstream.add_user(name, auth, visible_after=self._user_delay)
        except ValueError as error:
            raise StandInError(f"{error} (Service: AppStream, ValidationException)") from error
        arn = f"arn:aws:appstream:{self._region}:{ACCOUNT}:user/{auth.lower()}/{name}"
        return Provisioned(name, {"Arn": arn})
