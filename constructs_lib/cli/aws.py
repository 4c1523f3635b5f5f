"""AWS clients for the command line, the read calls it makes, and every AWS error as one line.

Clients come from boto3's standard configuration (``AWS_PROFILE``, ``AWS_REGION``, the shared
config and credentials files, ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>``), so the same
command reads a real account or the testing kit's local servers. Only the operations in
:data:`PERMISSIONS` are ever called: all of them read.

boto3 is imported when an :class:`Aws` is made, never when this module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from constructs_lib._version import __version__

PERMISSIONS: Mapping[str, str] = {
    "DescribeStacks": "cloudformation:DescribeStacks",
    "ListStackResources": "cloudformation:ListStackResources",
    "Query": "dynamodb:Query",
    "DescribeUserStackAssociations": "appstream:DescribeUserStackAssociations",
}
"""Every AWS operation the command line calls, and the IAM action it needs."""

_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedException", "Forbidden"}
)
_BAD_CREDENTIALS = frozenset(
    {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidSignatureException"}
)
_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"})
_THROTTLED = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "ProvisionedThroughputExceededException"}
)


class CliError(Exception):
    """A failure the user can act on; ``str()`` is one line."""


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def explain(error: BaseException, *, operation: str, target: str = "", region: str | None = None) -> str:
    """One actionable line for an AWS error of ``operation`` on ``target``."""
    from botocore import exceptions  # noqa: PLC0415 - boto3 is present once a call was made

    action = PERMISSIONS.get(operation, operation)
    on = f" on {target}" if target else ""
    where = f" in {region}" if region else ""
    if isinstance(error, exceptions.NoCredentialsError):
        return (
            "no AWS credentials found: set AWS_PROFILE (then `aws sso login` if it uses SSO), run `aws configure`, "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(error, exceptions.NoRegionError):
        return "no AWS region: set AWS_REGION (or a region in your AWS profile), or pass --region"
    if isinstance(error, exceptions.ProfileNotFound):
        return f"{one_line(str(error))}: check AWS_PROFILE or --profile against ~/.aws/config"
    if isinstance(error, exceptions.TokenRetrievalError | exceptions.SSOTokenLoadError):
        return (
            f"the AWS SSO session has expired or was never started: run `aws sso login` ({one_line(str(error), 120)})"
        )
    if isinstance(error, exceptions.EndpointConnectionError | exceptions.ConnectTimeoutError):
        url = getattr(error, "kwargs", {}).get("endpoint_url", "")
        return (
            f"cannot reach {action.partition(':')[0]}{' at ' + url if url else ''}{where}: check the network, "
            "AWS_REGION and any AWS_ENDPOINT_URL* variables"
        )
    if isinstance(error, exceptions.ReadTimeoutError | exceptions.ConnectionClosedError):
        return f"{action}{on} timed out or the connection dropped{where}: try again"
    if isinstance(error, exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", "ClientError"))
        message = one_line(str(error.response.get("Error", {}).get("Message", "")), 160)
        if code in _DENIED:
            return (
                f"access denied: {action}{on}{where} is not allowed for these credentials ({code}); "
                "grant it (see the README's IAM permissions of the command line)"
            )
        if code in _BAD_CREDENTIALS:
            return f"the AWS credentials are not valid ({code}): check AWS_PROFILE or the access key"
        if code in _EXPIRED:
            return f"the AWS credentials have expired ({code}): refresh them (e.g. `aws sso login`)"
        if code in _THROTTLED:
            return f"{action}{on} was throttled through every retry ({code}){where}: try again later"
        if operation == "Query" and code == "ResourceNotFoundException":
            return (
                f"state table {target or '?'} not found{where}: pass --table NAME (stacks that share another "
                "stack's table), or check the region"
            )
        if code == "ValidationError" and "does not exist" in message:
            return f"CloudFormation stack {target or '?'} does not exist{where}: check the name and the region"
        return f"{action}{on} failed{where}: {code}: {message}"
    if isinstance(error, exceptions.BotoCoreError):
        return f"{action}{on} failed{where}: {one_line(str(error), 200)}"
    return f"{action}{on} failed: {type(error).__name__}: {one_line(str(error), 200)}"


@dataclass(frozen=True)
class StackSummary:
    """A deployed CloudFormation stack."""

    stack_id: str
    stack_name: str
    status: str
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StackResource:
    """One resource of a deployed stack."""

    logical_id: str
    resource_type: str
    physical_id: str
    status: str


def stack_name_of(stack_id: str) -> str:
    """``Name`` of ``arn:aws:cloudformation:<region>:<account>:stack/<Name>/<uuid>`` (or the id)."""
    parts = stack_id.split("/")
    return parts[1] if len(parts) >= 3 and parts[0].endswith(":stack") else stack_id


def region_of(stack_id: str) -> str | None:
    """The region in a stack ARN, or None."""
    parts = stack_id.split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None


class Aws:
    """Read-only AWS access with clients per (service, region), and caches of what was read."""

    def __init__(
        self,
        *,
        profile: str | None = None,
        region: str | None = None,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        import boto3  # noqa: PLC0415 - the library itself must import without boto3
        from botocore.config import Config  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415

        # AWS_REGION first, as the AWS CLI v2 and the other SDKs read it (boto3 reads only AWS_DEFAULT_REGION).
        region = region or os.environ.get("AWS_REGION") or None
        try:
            self._session = boto3.session.Session(profile_name=profile, region_name=region)
        except BotoCoreError as error:
            raise CliError(explain(error, operation="session")) from None
        self._config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=5,
            read_timeout=30,
            user_agent_extra=f"appstream-user-stack-association-cli/{__version__}",
        )
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._stacks: dict[tuple[str, str | None], StackSummary | None] = {}
        self._resources: dict[tuple[str, str | None], dict[str, StackResource]] = {}
        self._associations: dict[tuple[str, str | None], frozenset[tuple[str, str, str]]] = {}
        self.progress = progress
        self.calls: dict[str, int] = {}

    @property
    def default_region(self) -> str | None:
        """The region of boto3's configuration (``--region``, AWS_REGION, the profile)."""
        return self._session.region_name

    def client(self, service: str, region: str | None = None) -> Any:
        """The client of ``service`` in ``region`` (default: the configured one)."""
        key = (service, region or self.default_region)
        if key not in self._clients:
            from botocore.exceptions import BotoCoreError  # noqa: PLC0415

            try:
                self._clients[key] = self._session.client(service, region_name=key[1], config=self._config)  # type: ignore[call-overload]
            except BotoCoreError as error:
                raise CliError(explain(error, operation=service)) from None
        return self._clients[key]

    def _call(self, service: str, operation: str, region: str | None, target: str, **kwargs: Any) -> Any:
        """One call; any error becomes a :class:`CliError` line."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        client = self.client(service, region)
        method = client.meta.method_to_api_mapping
        name = next((python for python, api in method.items() if api == operation), None)
        if name is None:  # pragma: no cover - a typo in this module
            raise AssertionError(operation)
        self.calls[operation] = self.calls.get(operation, 0) + 1
        try:
            return getattr(client, name)(**kwargs)
        except (BotoCoreError, ClientError) as error:
            raise CliError(explain(error, operation=operation, target=target, region=region)) from None

    # -- CloudFormation ----------------------------------------------------------------------

    def stack(self, name_or_id: str, region: str | None = None) -> StackSummary | None:
        """The deployed stack, or None when CloudFormation has no such stack (or it was deleted)."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        key = (name_or_id, region)
        if key in self._stacks:
            return self._stacks[key]
        self.progress(f"CloudFormation: reading stack {stack_name_of(name_or_id)}")
        self.calls["DescribeStacks"] = self.calls.get("DescribeStacks", 0) + 1
        try:
            answer = self.client("cloudformation", region).describe_stacks(StackName=name_or_id)
        except ClientError as error:
            message = str(error.response.get("Error", {}).get("Message", ""))
            if error.response.get("Error", {}).get("Code") == "ValidationError" and "does not exist" in message:
                self._stacks[key] = None
                return None
            raise CliError(
                explain(error, operation="DescribeStacks", target=stack_name_of(name_or_id), region=region)
            ) from None
        except CliError:
            raise
        except Exception as error:
            raise CliError(
                explain(error, operation="DescribeStacks", target=stack_name_of(name_or_id), region=region)
            ) from None
        stacks = answer.get("Stacks") or []
        found = None
        if stacks and stacks[0].get("StackStatus") != "DELETE_COMPLETE":
            item = stacks[0]
            found = StackSummary(
                stack_id=str(item["StackId"]),
                stack_name=str(item.get("StackName", stack_name_of(str(item["StackId"])))),
                status=str(item.get("StackStatus", "")),
                parameters={
                    str(p["ParameterKey"]): str(p.get("ResolvedValue", p.get("ParameterValue", "")))
                    for p in item.get("Parameters") or []
                    if "ParameterKey" in p
                },
            )
        self._stacks[key] = found
        return found

    def resources(self, stack: StackSummary, region: str | None = None) -> dict[str, StackResource]:
        """Every resource of a deployed stack by logical id (ListStackResources, all pages)."""
        key = (stack.stack_id, region)
        if key in self._resources:
            return self._resources[key]
        found: dict[str, StackResource] = {}
        token: str | None = None
        while True:
            self.progress(f"CloudFormation: listing the resources of {stack.stack_name} ({len(found)} so far)")
            kwargs: dict[str, Any] = {"StackName": stack.stack_id}
            if token:
                kwargs["NextToken"] = token
            page = self._call("cloudformation", "ListStackResources", region, stack.stack_name, **kwargs)
            for item in page.get("StackResourceSummaries") or []:
                found[str(item["LogicalResourceId"])] = StackResource(
                    logical_id=str(item["LogicalResourceId"]),
                    resource_type=str(item.get("ResourceType", "")),
                    physical_id=str(item.get("PhysicalResourceId", "")),
                    status=str(item.get("ResourceStatus", "")),
                )
            token = page.get("NextToken")
            if not token:
                break
        self._resources[key] = found
        return found

    # -- AppStream ---------------------------------------------------------------------------

    def associations(self, stack_name: str, region: str | None = None) -> frozenset[tuple[str, str, str]]:
        """(stack, user, authentication type) of every user AppStream associates with ``stack_name``.

        A stack AppStream does not know has none (it may be created by the next deployment).
        """
        from botocore.exceptions import ClientError  # noqa: PLC0415

        key = (stack_name, region)
        if key in self._associations:
            return self._associations[key]
        found: set[tuple[str, str, str]] = set()
        token: str | None = None
        client = self.client("appstream", region)
        while True:
            self.progress(f"AppStream: reading the users of stack {stack_name} ({len(found)} so far)")
            kwargs: dict[str, Any] = {"StackName": stack_name, "MaxResults": 500}
            if token:
                kwargs["NextToken"] = token
            self.calls["DescribeUserStackAssociations"] = self.calls.get("DescribeUserStackAssociations", 0) + 1
            try:
                page = client.describe_user_stack_associations(**kwargs)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    break
                raise CliError(
                    explain(error, operation="DescribeUserStackAssociations", target=stack_name, region=region)
                ) from None
            except CliError:
                raise
            except Exception as error:
                raise CliError(
                    explain(error, operation="DescribeUserStackAssociations", target=stack_name, region=region)
                ) from None
            for item in page.get("UserStackAssociations") or []:
                found.add((str(item["StackName"]), str(item["UserName"]), str(item["AuthenticationType"])))
            token = page.get("NextToken")
            if not token:
                break
        result = frozenset(found)
        self._associations[key] = result
        return result

    # -- DynamoDB ------------------------------------------------------------------------------

    def dynamodb(self, region: str | None = None) -> Any:
        """The DynamoDB client the state store reads through (only Query is called on it)."""
        return _QueryOnly(self, region)


class _QueryOnly:
    """A DynamoDB client that can only Query, counting calls and reporting progress."""

    def __init__(self, aws: Aws, region: str | None) -> None:
        self._aws = aws
        self._region = region
        self._client = aws.client("dynamodb", region)

    def query(self, **kwargs: Any) -> Any:
        """DynamoDB Query; an error is raised as a :class:`CliError` line naming the table."""
        self._aws.calls["Query"] = self._aws.calls.get("Query", 0) + 1
        key = kwargs.get("ExpressionAttributeValues", {}).get(":pk", {}).get("S", "")
        self._aws.progress(f"State store: reading {describe_key(str(key))}")
        try:
            return self._client.query(**kwargs)
        except Exception as error:
            target = str(kwargs.get("TableName", ""))
            raise CliError(explain(error, operation="Query", target=target, region=self._region)) from None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the command line only reads the state store with Query, not {name}")


def describe_key(pk: str) -> str:
    """What a state store partition key names, for progress lines."""
    if pk.startswith("A#"):
        return f"the associations of AppStream stack {pk[2:]}"
    if pk.startswith("S#"):
        return f"the records of stack {stack_name_of(pk[2:])}"
    return pk
