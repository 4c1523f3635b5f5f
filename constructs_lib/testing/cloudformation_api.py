"""The rehearsal's CloudFormation read API, served over HTTP on loopback from a :class:`StackRegistry`.

:class:`CloudFormationApi` speaks the wire protocol botocore uses for CloudFormation (AWS Query,
API version 2010-05-15): ``POST /`` with a form-encoded body ``Action=<Operation>&Version=...``,
answered with ``<OperationResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">``
XML, errors as HTTP 4xx/5xx ``<ErrorResponse><Error><Type/><Code/><Message/></Error>...``. An
unmodified boto3 client reaches it through ``AWS_ENDPOINT_URL_CLOUDFORMATION`` (see
:meth:`CloudFormationApi.client_env`), so botocore serializes every request and parses every
answer with its own code and the real service model.

Every answer is read from the registry at the moment of the request, so a function running during
a rehearsed deploy sees the stack's phase (``UPDATE_ROLLBACK_IN_PROGRESS``, ...) and each
resource's status as the rehearsal's engine has them then.

Operations implemented: ``DescribeStacks``, ``DescribeStackResource``, ``DescribeStackResources``,
``ListStackResources`` and ``DescribeStackEvents``; anything else is answered with HTTP 400
``InvalidAction``. Semantics chosen where AWS documents nothing:

* ``DescribeStacks`` without ``StackName`` lists the live (not deleted) stacks in the order they
  were created. A deleted stack is found by its stack id only, as on AWS.
* ``DescribeStackResources`` with both ``StackName`` and ``PhysicalResourceId`` returns the
  resource of that stack with that physical id; with ``PhysicalResourceId`` alone, the resources
  of the stack that holds it (live stacks first).
* ``ListStackResources`` is ordered by logical id; ``DescribeStackEvents`` newest first. Page
  tokens name the last item returned, so items added between pages are neither repeated nor
  shift the rest. An unusable ``NextToken`` is a ``ValidationError``.
* The stack's own events always carry the stack id as ``PhysicalResourceId`` (as on AWS), also
  when the registry recorded none.

Run time needs only the standard library: this module never imports boto3.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

from constructs_lib.testing._loopback import LoopbackHTTPServer, ServerContext, serve_in_thread, stop_serving
from constructs_lib.testing.stack_registry import ResourceRecord, StackEventRecord, StackRecord, StackRegistry

__all__ = [
    "API_VERSION",
    "DESCRIBE_STACKS",
    "DESCRIBE_STACK_EVENTS",
    "DESCRIBE_STACK_RESOURCE",
    "DESCRIBE_STACK_RESOURCES",
    "LIST_STACK_RESOURCES",
    "OPERATIONS",
    "XML_NAMESPACE",
    "CloudFormationApi",
    "CloudFormationCall",
    "CloudFormationFaults",
]

API_VERSION: Final = "2010-05-15"
XML_NAMESPACE: Final = "http://cloudformation.amazonaws.com/doc/2010-05-15/"

DESCRIBE_STACKS: Final = "DescribeStacks"
DESCRIBE_STACK_RESOURCE: Final = "DescribeStackResource"
DESCRIBE_STACK_RESOURCES: Final = "DescribeStackResources"
LIST_STACK_RESOURCES: Final = "ListStackResources"
DESCRIBE_STACK_EVENTS: Final = "DescribeStackEvents"
OPERATIONS: Final = frozenset(
    {DESCRIBE_STACKS, DESCRIBE_STACK_RESOURCE, DESCRIBE_STACK_RESOURCES, LIST_STACK_RESOURCES, DESCRIBE_STACK_EVENTS}
)
"""The operations served; fault filters must name one of them."""

DEFAULT_PAGE_SIZE: Final = 100
_APP_ID = re.compile(r"(?:^|\s)app/(\S+)")
_ATTEMPT = re.compile(r"attempt=(\d+)")
_T = TypeVar("_T")


# --------------------------------------------------------------------------- faults

_FaultKind = Literal["throttle", "error"]


@dataclass
class _Rule:
    """One pending request-level fault."""

    kind: _FaultKind
    remaining: int
    operation: str | None
    code: str
    message: str
    status: int = 400


def _check_operation(operation: str | None) -> None:
    """Reject an operation filter the server does not implement (catches typos)."""
    if operation is not None and operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; expected one of {', '.join(sorted(OPERATIONS))}")


class CloudFormationFaults:
    """Thread-safe fault injection for :class:`CloudFormationApi`; may change while it runs.

    Request faults (:meth:`throttle`, :meth:`fail_with`) queue up in the order they are added:
    each request takes the first pending one whose ``operation`` filter matches (``None``
    matches every request) and uses up one of its ``count``. :meth:`latency` delays every
    matching request on top of that.
    """

    def __init__(self) -> None:
        """Start with no faults."""
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._latency: dict[str | None, float] = {}

    def throttle(self, count: int = 1, *, operation: str | None = None) -> None:
        """Answer the next ``count`` calls with HTTP 400 ``Throttling`` (botocore retries it)."""
        self._add(_Rule("throttle", count, operation, "Throttling", "Rate exceeded"))

    def fail_with(
        self,
        code: str,
        *,
        count: int = 1,
        status: int = 400,
        operation: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``count`` calls with error ``code`` and HTTP ``status``.

        botocore retries 5xx statuses and throttling codes; other 4xx errors reach the caller.
        """
        if not code:
            raise ValueError("code must not be empty")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        self._add(_Rule("error", count, operation, code, message or f"Injected {code}.", status))

    def latency(self, seconds: float, *, operation: str | None = None) -> None:
        """Delay every call (or every call of ``operation``) by ``seconds``; 0 removes it."""
        _check_operation(operation)
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds}")
        with self._lock:
            if seconds:
                self._latency[operation] = seconds
            else:
                self._latency.pop(operation, None)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._rules.clear()
            self._latency.clear()

    def pending(self) -> int:
        """How many counted fault uses remain (latency not counted)."""
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    # used by the server ------------------------------------------------------

    def _add(self, rule: _Rule) -> None:
        _check_operation(rule.operation)
        if rule.remaining < 1:
            raise ValueError(f"count must be at least 1, got {rule.remaining}")
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, operation: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.operation in (None, operation):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def _latency_for(self, operation: str) -> float:
        with self._lock:
            return self._latency.get(operation, self._latency.get(None, 0.0))


# --------------------------------------------------------------------------- call log


@dataclass(frozen=True)
class CloudFormationCall:
    """One request the API received and what it answered.

    ``outcome`` is ``"ok"`` or the error code sent (``"ValidationError"``, ``"Throttling"``,
    ``"InvalidAction"``, ...); ``fault`` is ``"throttle"`` or ``"error"`` when an injected fault
    answered. ``app_id`` is the ``app/<id>`` of the client's User-Agent (botocore's
    ``user_agent_appid`` / ``AWS_SDK_UA_APP_ID``), so the calls of one function can be told
    apart. ``attempt`` and ``invocation_id`` come from botocore's ``amz-sdk-request`` and
    ``amz-sdk-invocation-id`` headers: retries of one call share an ``invocation_id``.
    ``timestamp`` is the server's clock (wall clock by default, like the registry's timestamps);
    ``received_at`` is :func:`time.monotonic` when the request arrived.
    """

    operation: str
    params: Mapping[str, str]
    status: int
    outcome: str
    timestamp: float
    fault: str | None = None
    app_id: str | None = None
    attempt: int | None = None
    invocation_id: str | None = None
    client_address: tuple[str, int] = ("", 0)
    received_at: float = field(default_factory=time.monotonic)


class _CallLog:
    """Thread-safe append-only list of :class:`CloudFormationCall`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[CloudFormationCall] = []

    def append(self, record: CloudFormationCall) -> None:
        with self._lock:
            self._records.append(record)

    def all(self) -> tuple[CloudFormationCall, ...]:
        with self._lock:
            return tuple(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


# --------------------------------------------------------------------------- operations


class _ApiError(Exception):
    """An error response: HTTP ``status`` with ``code`` and ``message``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _validation_error(message: str) -> _ApiError:
    return _ApiError("ValidationError", message)


def _required(params: Mapping[str, str], name: str) -> str:
    """The value of a required parameter, or CloudFormation's validation error."""
    value = params.get(name)
    if not value:
        member = name[0].lower() + name[1:]
        raise _validation_error(
            f"1 validation error detected: Value null at '{member}' failed to satisfy constraint: "
            "Member must not be null"
        )
    return value


def _timestamp(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds, as CloudFormation sends them (``2024-05-01T12:00:00.123Z``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _add(parent: ET.Element, tag: str, value: str | bool | float | None = None) -> ET.Element:
    """Append ``<tag>value</tag>`` (``value`` None: an empty element) and return it."""
    element = ET.SubElement(parent, tag)
    if isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)
    return element


def _add_optional(parent: ET.Element, tag: str, value: str) -> None:
    """Append ``<tag>value</tag>`` unless ``value`` is empty (CloudFormation omits such members)."""
    if value:
        _add(parent, tag, value)


class _Paging:
    """Opaque page tokens: the operation, the query and the key of the last item returned."""

    @staticmethod
    def encode(operation: str, query: str, after: str) -> str:
        raw = json.dumps({"op": operation, "q": query, "after": after}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @staticmethod
    def decode(token: str, operation: str, query: str) -> str:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
            if decoded["op"] != operation or decoded["q"] != query or not isinstance(decoded["after"], str):
                raise ValueError("token belongs to another request")
        except (binascii.Error, ValueError, KeyError, TypeError) as error:
            raise _validation_error("Invalid NextToken") from error
        return str(decoded["after"])


def _page(
    items: Sequence[_T],
    key: Callable[[_T], str],
    params: Mapping[str, str],
    where: tuple[str, str],
    page_size: int,
    *,
    keep: Callable[[_T], bool] = lambda _: True,
    sorted_keys: bool = False,
) -> tuple[list[_T], str | None]:
    """One page of the ``items`` that ``keep`` accepts, after the token's item; the next token, if any.

    ``where`` is the operation and query the token must belong to. With ``sorted_keys`` the page
    starts after the token's key even if that item has gone since; otherwise the item must
    still be in ``items`` (which only grow, or keep their deleted members).
    """
    start = 0
    token = params.get("NextToken")
    if token:
        after = _Paging.decode(token, *where)
        keys = [key(item) for item in items]
        if sorted_keys:
            start = next((index for index, item_key in enumerate(keys) if item_key > after), len(keys))
        elif after in keys:
            start = keys.index(after) + 1
        else:
            raise _validation_error("Invalid NextToken")
    kept = [item for item in items[start:] if keep(item)]
    page = kept[:page_size]
    more = len(kept) > page_size
    return page, (_Paging.encode(*where, key(page[-1])) if more else None)


class _Operations:
    """The operations, answering from one registry; each returns the ``<XxxResult>`` element."""

    def __init__(self, registry: StackRegistry, page_size: Callable[[], int]) -> None:
        self._registry = registry
        self._page_size = page_size

    def run(self, operation: str, params: Mapping[str, str]) -> ET.Element:
        handlers: dict[str, Callable[[Mapping[str, str], ET.Element], None]] = {
            DESCRIBE_STACKS: self._describe_stacks,
            DESCRIBE_STACK_RESOURCE: self._describe_stack_resource,
            DESCRIBE_STACK_RESOURCES: self._describe_stack_resources,
            LIST_STACK_RESOURCES: self._list_stack_resources,
            DESCRIBE_STACK_EVENTS: self._describe_stack_events,
        }
        handler = handlers.get(operation)
        if handler is None:
            what = f"CloudFormation operation {operation!r}" if operation else "A request without Action"
            raise _ApiError(
                "InvalidAction",
                f"{what} is not served here; this local CloudFormation API answers {', '.join(sorted(OPERATIONS))}.",
            )
        result = ET.Element(f"{operation}Result")
        handler(params, result)
        return result

    # lookups -----------------------------------------------------------------

    def _stack(self, name_or_id: str, message: str = "Stack with id {} does not exist") -> StackRecord:
        stack = self._registry.find(name_or_id)
        if stack is None:
            raise _validation_error(message.format(name_or_id))
        return stack

    # DescribeStacks ----------------------------------------------------------

    def _describe_stacks(self, params: Mapping[str, str], result: ET.Element) -> None:
        name = params.get("StackName")
        if name:
            stacks: Sequence[StackRecord] = [self._stack(name)]
            token = None
        else:
            stacks, token = _page(
                self._registry.stacks(include_deleted=True),
                lambda stack: stack.stack_id,
                params,
                (DESCRIBE_STACKS, ""),
                self._page_size(),
                keep=lambda stack: stack.status != "DELETE_COMPLETE",
            )
        members = _add(result, "Stacks")
        for stack in stacks:
            _stack_xml(_add(members, "member"), stack)
        if token:
            _add(result, "NextToken", token)

    # resources ---------------------------------------------------------------

    def _describe_stack_resource(self, params: Mapping[str, str], result: ET.Element) -> None:
        stack = self._stack(_required(params, "StackName"))
        logical_id = _required(params, "LogicalResourceId")
        resource = stack.resource(logical_id)
        if resource is None:
            raise _validation_error(f"Resource {logical_id} does not exist for stack {stack.stack_name}")
        detail = _add(result, "StackResourceDetail")
        _resource_xml(detail, resource, stack, time_tag="LastUpdatedTimestamp")
        drift = _add(detail, "DriftInformation")
        _add(drift, "StackResourceDriftStatus", "NOT_CHECKED")

    def _describe_stack_resources(self, params: Mapping[str, str], result: ET.Element) -> None:
        name, physical_id = params.get("StackName"), params.get("PhysicalResourceId")
        if name:
            stack = self._stack(name)
        elif physical_id:
            stack = self._stack_holding(physical_id)
        else:
            raise _validation_error("Either StackName or PhysicalResourceId must be specified")
        resources: Iterable[ResourceRecord] = _by_logical_id(stack.resources)
        if name and physical_id:
            resources = [item for item in resources if item.physical_id == physical_id]
        logical_id = params.get("LogicalResourceId")
        if logical_id:
            resources = [item for item in resources if item.logical_id == logical_id]
        members = _add(result, "StackResources")
        for resource in resources:
            member = _add(members, "member")
            _resource_xml(member, resource, stack, time_tag="Timestamp")
            _add(_add(member, "DriftInformation"), "StackResourceDriftStatus", "NOT_CHECKED")

    def _stack_holding(self, physical_id: str) -> StackRecord:
        stacks = self._registry.stacks(include_deleted=True)
        for stack in sorted(stacks, key=lambda s: s.status == "DELETE_COMPLETE"):
            if any(item.physical_id == physical_id for item in stack.resources):
                return stack
        raise _validation_error(f"Stack for {physical_id} does not exist")

    def _list_stack_resources(self, params: Mapping[str, str], result: ET.Element) -> None:
        stack = self._stack(_required(params, "StackName"))
        resources, token = _page(
            _by_logical_id(stack.resources),
            lambda resource: resource.logical_id,
            params,
            (LIST_STACK_RESOURCES, stack.stack_id),
            self._page_size(),
            sorted_keys=True,
        )
        members = _add(result, "StackResourceSummaries")
        for resource in resources:
            member = _add(members, "member")
            _add(member, "LogicalResourceId", resource.logical_id)
            _add_optional(member, "PhysicalResourceId", resource.physical_id)
            _add(member, "ResourceType", resource.resource_type)
            _add(member, "LastUpdatedTimestamp", _timestamp(resource.last_updated))
            _add(member, "ResourceStatus", resource.status)
            _add_optional(member, "ResourceStatusReason", resource.status_reason)
            _add(_add(member, "DriftInformation"), "StackResourceDriftStatus", "NOT_CHECKED")
        if token:
            _add(result, "NextToken", token)

    # events ------------------------------------------------------------------

    def _describe_stack_events(self, params: Mapping[str, str], result: ET.Element) -> None:
        stack = self._stack(_required(params, "StackName"), "Stack [{}] does not exist")
        events, token = _page(
            tuple(reversed(stack.events)),
            lambda event: event.event_id,
            params,
            (DESCRIBE_STACK_EVENTS, stack.stack_id),
            self._page_size(),
        )
        members = _add(result, "StackEvents")
        for event in events:
            _event_xml(_add(members, "member"), event, stack)
        if token:
            _add(result, "NextToken", token)


def _by_logical_id(resources: Iterable[ResourceRecord]) -> list[ResourceRecord]:
    return sorted(resources, key=lambda item: item.logical_id)


def _stack_xml(member: ET.Element, stack: StackRecord) -> None:
    """Fill one ``Stack`` structure."""
    _add(member, "StackId", stack.stack_id)
    _add(member, "StackName", stack.stack_name)
    _add(member, "CreationTime", _timestamp(stack.creation_time))
    if stack.last_updated_time is not None:
        _add(member, "LastUpdatedTime", _timestamp(stack.last_updated_time))
    if stack.deletion_time is not None:
        _add(member, "DeletionTime", _timestamp(stack.deletion_time))
    _add(member, "RollbackConfiguration")
    _add(member, "StackStatus", stack.status)
    _add_optional(member, "StackStatusReason", stack.status_reason)
    _add(member, "DisableRollback", value=False)
    _add(member, "NotificationARNs")
    _add(member, "Tags")
    _add(member, "EnableTerminationProtection", value=False)
    _add(_add(member, "DriftInformation"), "StackDriftStatus", "NOT_CHECKED")
    if stack.operation_id:
        entry = _add(_add(member, "LastOperations"), "member")
        _add_optional(entry, "OperationType", stack.operation_type)
        _add(entry, "OperationId", stack.operation_id)


def _resource_xml(member: ET.Element, resource: ResourceRecord, stack: StackRecord, *, time_tag: str) -> None:
    """Fill the members ``StackResource`` and ``StackResourceDetail`` share."""
    _add(member, "StackName", stack.stack_name)
    _add(member, "StackId", stack.stack_id)
    _add(member, "LogicalResourceId", resource.logical_id)
    _add_optional(member, "PhysicalResourceId", resource.physical_id)
    _add(member, "ResourceType", resource.resource_type)
    _add(member, time_tag, _timestamp(resource.last_updated))
    _add(member, "ResourceStatus", resource.status)
    _add_optional(member, "ResourceStatusReason", resource.status_reason)


def _event_xml(member: ET.Element, event: StackEventRecord, stack: StackRecord) -> None:
    """Fill one ``StackEvent`` structure."""
    physical_id = event.physical_id
    if not physical_id and event.resource_type == "AWS::CloudFormation::Stack" and event.logical_id == stack.stack_name:
        physical_id = stack.stack_id
    _add(member, "StackId", stack.stack_id)
    _add(member, "EventId", event.event_id)
    _add(member, "StackName", stack.stack_name)
    _add_optional(member, "OperationId", event.operation_id)
    _add(member, "LogicalResourceId", event.logical_id)
    _add(member, "PhysicalResourceId", physical_id)
    _add(member, "ResourceType", event.resource_type)
    _add(member, "Timestamp", _timestamp(event.timestamp))
    _add(member, "ResourceStatus", event.status)
    _add_optional(member, "ResourceStatusReason", event.status_reason)


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class _Incoming:
    """A parsed request as the HTTP layer saw it."""

    method: str
    path: str
    params: Mapping[str, str]
    user_agent: str
    attempt: int | None
    invocation_id: str | None
    client_address: tuple[str, int]


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    request_id: str


def _response_xml(operation: str, result: ET.Element, request_id: str) -> bytes:
    root = ET.Element(f"{operation}Response", {"xmlns": XML_NAMESPACE})
    root.append(result)
    _add(_add(root, "ResponseMetadata"), "RequestId", request_id)
    return ET.tostring(root, encoding="unicode").encode()


def _error_xml(code: str, message: str, status: int, request_id: str) -> bytes:
    root = ET.Element("ErrorResponse", {"xmlns": XML_NAMESPACE})
    error = _add(root, "Error")
    _add(error, "Type", "Receiver" if status >= 500 else "Sender")
    _add(error, "Code", code)
    _add(error, "Message", message)
    _add(root, "RequestId", request_id)
    return ET.tostring(root, encoding="unicode").encode()


def _parse_params(query: str, body: bytes) -> dict[str, str]:
    """The request's parameters: the query string's, then the form body's (the body wins)."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.update(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return params


class _Handler(BaseHTTPRequestHandler):
    """Quiet HTTP/1.1 (keep-alive) handler delegating to :class:`CloudFormationApi`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the call log records every request."""

    def do_POST(self) -> None:
        """Read the request, let the API answer it, send the XML."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        attempt = _ATTEMPT.search(self.headers.get("amz-sdk-request") or "")
        incoming = _Incoming(
            method=self.command,
            path=url.path,
            params=_parse_params(url.query, body),
            user_agent=self.headers.get("User-Agent", ""),
            attempt=int(attempt.group(1)) if attempt else None,
            invocation_id=self.headers.get("amz-sdk-invocation-id"),
            client_address=(str(self.client_address[0]), int(self.client_address[1])),
        )
        reply = self.server.owner._handle(incoming)
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("x-amzn-RequestId", reply.request_id)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST  # noqa: N815 - stdlib naming; the Query protocol also allows GET with a query string


class _LoopbackServer(LoopbackHTTPServer):
    """The API's HTTP server; requests go to its :class:`CloudFormationApi` ``owner``."""

    def __init__(self, owner: CloudFormationApi) -> None:
        self.owner = owner
        super().__init__(_Handler)


class CloudFormationApi(ServerContext):
    """CloudFormation's read API for ``registry`` on ``http://127.0.0.1:<port>``, served by a daemon thread.

    Use as a context manager (``with CloudFormationApi(registry) as api:``) or call :meth:`start`
    and :meth:`stop`. Point a boto3 client at :attr:`endpoint_url` (``endpoint_url=`` or the
    environment from :meth:`client_env`). ``page_size`` (default 100) is how many items a page
    of ``DescribeStacks``, ``ListStackResources`` and ``DescribeStackEvents`` holds; it may be
    changed while the server runs. ``clock`` stamps the call log (default: wall clock).
    """

    def __init__(
        self,
        registry: StackRegistry,
        *,
        faults: CloudFormationFaults | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Serve ``registry`` with ``faults`` (default: none)."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.registry = registry
        self.faults: CloudFormationFaults = faults if faults is not None else CloudFormationFaults()
        self.page_size = page_size
        self._clock = clock
        self._operations = _Operations(registry, lambda: max(1, self.page_size))
        self._log = _CallLog()
        self._stopping = threading.Event()
        self._httpd: _LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------

    def start(self) -> CloudFormationApi:
        """Bind a free loopback port and start serving; return ``self``."""
        if self._httpd is not None:
            raise RuntimeError("CloudFormationApi is already running")
        self._stopping.clear()
        self._httpd = _LoopbackServer(self)
        self._thread = serve_in_thread(self._httpd, f"cloudformation-api-{self.port}")
        return self

    def stop(self) -> None:
        """Stop serving and close every connection; wakes delayed requests."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        stop_serving(httpd, thread)
        self._httpd = self._thread = None

    @property
    def port(self) -> int:
        """The bound TCP port (only while running)."""
        if self._httpd is None:
            raise RuntimeError("CloudFormationApi is not running")
        return int(self._httpd.server_address[1])

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``, for ``endpoint_url=`` or ``AWS_ENDPOINT_URL_CLOUDFORMATION``."""
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """``{"AWS_ENDPOINT_URL_CLOUDFORMATION": endpoint_url}``: sends a standard boto3 client here.

        It wins over the global ``AWS_ENDPOINT_URL``; credentials and region come from elsewhere
        (e.g. :meth:`LocalAws.client_env <constructs_lib.testing.aws_services.LocalAws.client_env>`).
        """
        return {"AWS_ENDPOINT_URL_CLOUDFORMATION": self.endpoint_url}

    # call log ------------------------------------------------------------------

    @property
    def calls(self) -> tuple[CloudFormationCall, ...]:
        """Every request received since start or :meth:`reset_calls`, oldest first."""
        return self._log.all()

    def calls_for(self, operation: str) -> tuple[CloudFormationCall, ...]:
        """The recorded requests for ``operation``, oldest first."""
        return tuple(call for call in self._log.all() if call.operation == operation)

    def reset_calls(self) -> None:
        """Forget the recorded requests."""
        self._log.clear()

    # request handling ----------------------------------------------------------

    def _handle(self, incoming: _Incoming) -> _Reply:
        """Answer one request and record it in the call log."""
        received_at = time.monotonic()
        operation = incoming.params.get("Action", "")
        request_id = str(uuid.uuid4())
        delay = self.faults._latency_for(operation)
        if delay:
            self._stopping.wait(delay)
        rule = self.faults._take_rule(operation)
        status, outcome = 200, "ok"
        try:
            if rule is not None:
                raise _ApiError(rule.code, rule.message, rule.status)
            if incoming.path not in ("", "/"):
                raise _ApiError("InvalidAction", f"Unknown path {incoming.path!r}; the Query protocol uses POST /.")
            body = _response_xml(operation, self._operations.run(operation, incoming.params), request_id)
        except _ApiError as error:
            status, outcome = error.status, error.code
            body = _error_xml(error.code, error.message, error.status, request_id)
        app_id = _APP_ID.search(incoming.user_agent)
        self._log.append(
            CloudFormationCall(
                operation=operation,
                params={key: value for key, value in incoming.params.items() if key not in ("Action", "Version")},
                status=status,
                outcome=outcome,
                timestamp=self._clock(),
                fault=rule.kind if rule else None,
                app_id=app_id.group(1) if app_id else None,
                attempt=incoming.attempt,
                invocation_id=incoming.invocation_id,
                client_address=incoming.client_address,
                received_at=received_at,
            )
        )
        return _Reply(status, body, request_id)
