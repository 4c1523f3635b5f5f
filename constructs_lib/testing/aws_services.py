"""Local AWS services for a rehearsal: moto's server mode on loopback, and CloudFormation-style provisioning.

:class:`LocalAws` runs :class:`moto.server.ThreadedMotoServer` on ``127.0.0.1`` (a free port) in
this process, quietly (werkzeug's request log is dropped while it runs). A separate process
sends every AWS call to it with the environment from :meth:`LocalAws.client_env` (the global
``AWS_ENDPOINT_URL``; service-specific ``AWS_ENDPOINT_URL_<SERVICE>`` variables, such as the
rehearsal's AppStream and CloudFormation ones, still win).

:meth:`LocalAws.create_resource` and :meth:`LocalAws.delete_resource` play CloudFormation's part
for the resource types in :data:`PROVISIONED_TYPES`: they turn a template's ``Properties`` into
the service calls CloudFormation makes, and return the physical id (``Ref``) and the ``GetAtt``
attributes. Properties moto cannot honour are skipped and listed in
:attr:`ProvisionedResource.ignored`.

moto keeps its backends in module-level state: every ``LocalAws`` in one process (and any
``moto.mock_aws`` in it) shares the same accounts and resources, and :meth:`LocalAws.reset`
empties them all. Run one at a time.

Needs ``moto[server,dynamodb]`` and boto3 (``pip install 'appstream-user-stack-association[testing]'``);
both are imported when first needed, so importing this module needs only the standard library.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import logging
import random
import string
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from constructs_lib.testing._loopback import ServerContext

if TYPE_CHECKING:
    pass

__all__ = [
    "ACCOUNT_ID",
    "PROVISIONED_TYPES",
    "LocalAws",
    "ProvisionedResource",
    "ProvisioningError",
    "UnsupportedResourceType",
]

ACCOUNT_ID: Final = "123456789012"
"""The account moto serves for the fake credentials of :meth:`LocalAws.client_env` (its default)."""

DYNAMODB_TABLE: Final = "AWS::DynamoDB::Table"
SSM_PARAMETER: Final = "AWS::SSM::Parameter"
S3_BUCKET: Final = "AWS::S3::Bucket"
PROVISIONED_TYPES: Final = frozenset({DYNAMODB_TABLE, SSM_PARAMETER, S3_BUCKET})
"""The resource types :meth:`LocalAws.create_resource` provisions."""

_INSTALL_HINT: Final = "pip install 'appstream-user-stack-association[testing]'"
_CREDENTIAL: Final = "testing"


class UnsupportedResourceType(ValueError):
    """:meth:`LocalAws.create_resource` does not provision this resource type."""

    def __init__(self, resource_type: str) -> None:
        self.resource_type = resource_type
        super().__init__(
            f"LocalAws cannot provision {resource_type!r}; it provisions {', '.join(sorted(PROVISIONED_TYPES))}"
        )


class ProvisioningError(RuntimeError):
    """A resource could not be created or deleted, as CloudFormation would report it (``CREATE_FAILED``, ...).

    ``code`` is the service's error code (``ValidationException``, ``ResourceInUseException``,
    ...) or ``ValidationError`` for properties CloudFormation itself would reject; ``reason`` is
    the text for the resource's status reason.
    """

    def __init__(self, resource_type: str, name: str, code: str, reason: str) -> None:
        self.resource_type, self.name, self.code, self.reason = resource_type, name, code, reason
        super().__init__(f"{resource_type} {name}: {reason} ({code})")


@dataclass(frozen=True)
class ProvisionedResource:
    """What CloudFormation knows of a created resource: its ``Ref`` and its ``GetAtt`` attributes."""

    physical_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    """Properties given but not applied (moto cannot honour them); dotted paths, sorted."""


# --------------------------------------------------------------------------- property helpers


class _PropertyError(ValueError):
    """A property CloudFormation would reject."""


def _bool(value: object, where: str) -> bool:
    """A template boolean: ``true``/``false`` or the strings CloudFormation accepts for them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _PropertyError(f"{where}: expected a boolean, got {value!r}")


def _int(value: object, where: str) -> int:
    """A template integer (a number or a string of digits)."""
    if isinstance(value, bool):
        raise _PropertyError(f"{where}: expected an integer, got {value!r}")
    try:
        return int(str(value))
    except ValueError:
        raise _PropertyError(f"{where}: expected an integer, got {value!r}") from None


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _PropertyError(f"{where}: expected an object, got {value!r}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _PropertyError(f"{where}: expected a list, got {value!r}")
    return value


def _tag_list(value: object, where: str) -> list[dict[str, str]]:
    """Tags as ``[{"Key": .., "Value": ..}]`` from a list of those or a ``{key: value}`` map."""
    if isinstance(value, Mapping):
        return [{"Key": str(key), "Value": str(item)} for key, item in value.items()]
    tags = []
    for index, item in enumerate(_list(value, where)):
        tag = _mapping(item, f"{where}[{index}]")
        tags.append({"Key": str(tag.get("Key")), "Value": str(tag.get("Value"))})
    return tags


class _Translation:
    """Collects the properties a translation leaves out."""

    def __init__(self) -> None:
        self.ignored: list[str] = []

    def ignore_unknown(self, known: frozenset[str], value: Mapping[str, Any], where: str = "") -> None:
        self.ignored.extend(f"{where}{key}" for key in value if key not in known)


# --------------------------------------------------------------------------- DynamoDB


_TABLE_PROPERTIES: Final = frozenset(
    {
        "TableName",
        "KeySchema",
        "AttributeDefinitions",
        "BillingMode",
        "ProvisionedThroughput",
        "GlobalSecondaryIndexes",
        "LocalSecondaryIndexes",
        "TimeToLiveSpecification",
        "PointInTimeRecoverySpecification",
        "SSESpecification",
        "StreamSpecification",
        "Tags",
        "DeletionProtectionEnabled",
        "TableClass",
    }
)
_GSI_PROPERTIES: Final = frozenset({"IndexName", "KeySchema", "Projection", "ProvisionedThroughput"})
_LSI_PROPERTIES: Final = frozenset({"IndexName", "KeySchema", "Projection"})


def _throughput(value: object, where: str) -> dict[str, int]:
    spec = _mapping(value, where)
    return {key: _int(spec.get(key), f"{where}.{key}") for key in ("ReadCapacityUnits", "WriteCapacityUnits")}


def _index(value: object, where: str, known: frozenset[str], translation: _Translation) -> dict[str, Any]:
    spec = _mapping(value, where)
    translation.ignore_unknown(known, spec, f"{where}.")
    index: dict[str, Any] = {key: spec[key] for key in ("IndexName", "KeySchema", "Projection") if key in spec}
    if "ProvisionedThroughput" in spec and "ProvisionedThroughput" in known:
        index["ProvisionedThroughput"] = _throughput(spec["ProvisionedThroughput"], f"{where}.ProvisionedThroughput")
    return index


@dataclass
class _TablePlan:
    """The calls that create one table: CreateTable, then TTL and point-in-time recovery."""

    create: dict[str, Any]
    time_to_live: dict[str, Any] | None
    point_in_time_recovery: dict[str, Any] | None
    ignored: list[str]


def _table_plan(properties: Mapping[str, Any], table_name: str) -> _TablePlan:
    """Translate ``AWS::DynamoDB::Table`` properties into DynamoDB requests."""
    translation = _Translation()
    translation.ignore_unknown(_TABLE_PROPERTIES, properties)
    create: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": _list(properties.get("KeySchema"), "KeySchema"),
        "AttributeDefinitions": _list(properties.get("AttributeDefinitions", []), "AttributeDefinitions"),
    }
    billing = str(properties.get("BillingMode", "PROVISIONED"))
    create["BillingMode"] = billing
    if "ProvisionedThroughput" in properties:
        create["ProvisionedThroughput"] = _throughput(properties["ProvisionedThroughput"], "ProvisionedThroughput")
    for key, known in (("GlobalSecondaryIndexes", _GSI_PROPERTIES), ("LocalSecondaryIndexes", _LSI_PROPERTIES)):
        if key in properties:
            items = _list(properties[key], key)
            if items:
                create[key] = [
                    _index(item, f"{key}[{number}]", known, translation) for number, item in enumerate(items)
                ]
    if "SSESpecification" in properties:
        sse = _mapping(properties["SSESpecification"], "SSESpecification")
        translation.ignore_unknown(frozenset({"SSEEnabled", "SSEType", "KMSMasterKeyId"}), sse, "SSESpecification.")
        spec: dict[str, Any] = {"Enabled": _bool(sse.get("SSEEnabled", False), "SSESpecification.SSEEnabled")}
        spec.update({key: str(sse[key]) for key in ("SSEType", "KMSMasterKeyId") if key in sse})
        create["SSESpecification"] = spec
    if "StreamSpecification" in properties:
        stream = _mapping(properties["StreamSpecification"], "StreamSpecification")
        translation.ignore_unknown(frozenset({"StreamViewType"}), stream, "StreamSpecification.")
        create["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": str(stream.get("StreamViewType"))}
    if properties.get("Tags"):
        create["Tags"] = _tag_list(properties["Tags"], "Tags")
    if "DeletionProtectionEnabled" in properties:
        create["DeletionProtectionEnabled"] = _bool(
            properties["DeletionProtectionEnabled"], "DeletionProtectionEnabled"
        )
    if "TableClass" in properties:
        create["TableClass"] = str(properties["TableClass"])

    time_to_live = None
    if "TimeToLiveSpecification" in properties:
        ttl = _mapping(properties["TimeToLiveSpecification"], "TimeToLiveSpecification")
        if _bool(ttl.get("Enabled", False), "TimeToLiveSpecification.Enabled"):
            attribute = ttl.get("AttributeName")
            if not isinstance(attribute, str) or not attribute:
                raise _PropertyError("TimeToLiveSpecification.AttributeName is required when Enabled is true")
            time_to_live = {"AttributeName": attribute, "Enabled": True}
    point_in_time_recovery: dict[str, Any] | None = None
    if "PointInTimeRecoverySpecification" in properties:
        pitr = _mapping(properties["PointInTimeRecoverySpecification"], "PointInTimeRecoverySpecification")
        where = "PointInTimeRecoverySpecification"
        translation.ignore_unknown(frozenset({"PointInTimeRecoveryEnabled", "RecoveryPeriodInDays"}), pitr, f"{where}.")
        if _bool(pitr.get("PointInTimeRecoveryEnabled", False), f"{where}.PointInTimeRecoveryEnabled"):
            point_in_time_recovery = {"PointInTimeRecoveryEnabled": True}
            if "RecoveryPeriodInDays" in pitr:
                point_in_time_recovery["RecoveryPeriodInDays"] = _int(
                    pitr["RecoveryPeriodInDays"], f"{where}.RecoveryPeriodInDays"
                )
    return _TablePlan(create, time_to_live, point_in_time_recovery, translation.ignored)


# --------------------------------------------------------------------------- quiet werkzeug


class _DropRequestLog(logging.Filter):
    """Drops werkzeug's per-request INFO lines; warnings and errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


# --------------------------------------------------------------------------- LocalAws


def _cheap_transactions() -> None:
    """Make moto's ``TransactWriteItems`` snapshot only the items it touches (installed once).

    moto rolls a cancelled transaction back by deep-copying every table it touches beforehand:
    about a millisecond per item in the table, on every call, so a state table of 1,000
    associations costs a second per transaction and a rehearsal of a large list minutes. Under
    :class:`_SerialMotoServer` nothing else runs during a transaction, so a snapshot of the touched
    items is an exact rollback: moto's own code still checks every condition and applies every
    update; only the snapshot is cheaper. ``tests/unit/testing/test_local_aws_transactions.py``
    pins both the atomicity and the cost.
    """
    from moto.dynamodb import models  # noqa: PLC0415 - optional dependency

    if getattr(models.DynamoDBBackend.transact_write_items, "_cheap", False):
        return
    original = models.DynamoDBBackend.transact_write_items

    class _Copy:
        """``copy`` as moto's module sees it during a transaction: tables are not copied."""

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, models.Table) else copy.deepcopy(value, memo)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        touched = []
        for item in transact_items[:100]:
            try:
                _, op = next(iter(item.items()))
                table = self.get_table(op["TableName"])
                keys = op.get("Key") or op.get("Item") or {}
                hash_key, range_key = self.get_keys_value(table, keys)
            except Exception:  # noqa: S112 - moto reports the problem itself below
                continue
            touched.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        models.copy = _Copy()  # type: ignore[attr-defined,assignment]
        try:
            original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, before in reversed(touched):
                if before is None:
                    table.delete_item(hash_key, range_key)
                elif range_key is not None:
                    table.items[hash_key][range_key] = before
                else:
                    table.items[hash_key] = before
            raise
        finally:
            models.copy = copy  # type: ignore[attr-defined]

    transact_write_items._cheap = True  # type: ignore[attr-defined]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


class _SerialMotoServer:
    """moto's server, as ``moto.server.ThreadedMotoServer`` runs it, but one request at a time.

    moto's DynamoDB is not safe under concurrent requests: ``TransactWriteItems`` deep-copies the
    table to roll back with, and fails ("dictionary changed size during iteration") when another
    request writes meanwhile; nor is a transaction atomic with respect to them. The rehearsal runs
    functions in parallel, so every request is served under one lock (each is short).
    """

    def __init__(self) -> None:
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        from moto.moto_server.werkzeug_app import (  # noqa: PLC0415 - what ThreadedMotoServer serves
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server  # noqa: PLC0415

        _cheap_transactions()
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serial(environ: Any, start_response: Any) -> list[bytes]:
            with lock:
                return list(app(environ, start_response))

        try:
            self._server = make_server("127.0.0.1", 0, serial, threaded=True, request_handler=MotoRequestHandler)
        except BaseException as error:
            self._error = error
            self._ready.set()
            raise
        self._ready.set()
        self._server.serve_forever()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="local-aws", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def get_host_and_port(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)


class LocalAws(ServerContext):
    """moto's server mode on ``http://127.0.0.1:<port>``, with CloudFormation-style provisioning.

    Use as a context manager (``with LocalAws() as aws:``) or call :meth:`start` and
    :meth:`stop`. ``region`` (default ``us-east-1``) is the region of :meth:`client_env`, of
    :meth:`client` and of the resources created; ``seed`` makes generated names repeatable.
    """

    def __init__(self, *, region: str = "us-east-1", seed: int | None = None) -> None:
        """Prepare a server for ``region``; nothing runs until :meth:`start`."""
        self.region = region
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._server: _SerialMotoServer | None = None
        self._port = 0
        self._log_filter = _DropRequestLog()
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    # lifecycle -----------------------------------------------------------------

    def start(self) -> LocalAws:
        """Start moto's server on a free loopback port (about half a second); return ``self``.

        Raises ImportError naming the package extra to install when moto's server mode is missing.
        """
        if self._server is not None:
            raise RuntimeError("LocalAws is already running")
        try:
            import moto.server  # noqa: F401, PLC0415 - optional dependency, imported when used
        except ImportError as error:
            raise ImportError(
                f"LocalAws needs moto's server mode (moto[server,dynamodb]) and boto3: {_INSTALL_HINT}"
            ) from error
        logging.getLogger("werkzeug").addFilter(self._log_filter)
        server = _SerialMotoServer()
        try:
            server.start()
            self._port = int(server.get_host_and_port()[1])
        except BaseException:
            logging.getLogger("werkzeug").removeFilter(self._log_filter)
            raise
        self._server = server
        return self

    def stop(self) -> None:
        """Stop the server (its backends keep their state until :meth:`reset` or the process ends)."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            server.stop()
        finally:
            logging.getLogger("werkzeug").removeFilter(self._log_filter)
            with self._clients_lock:
                self._clients.clear()

    @property
    def port(self) -> int:
        """The bound TCP port (only while running)."""
        if self._server is None:
            raise RuntimeError("LocalAws is not running")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``: every service moto implements answers here."""
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment that sends every AWS call of a separate process's boto3/botocore here.

        The global ``AWS_ENDPOINT_URL`` (``AWS_ENDPOINT_URL_<SERVICE>`` variables set next to it
        win for their service), fake static credentials, the region, no instance-metadata lookup,
        and ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=false`` (so an inherited ``true`` cannot
        switch the endpoints off). Environment settings beat the shared config files; unset
        ``AWS_PROFILE`` in the child, as a profile that does not exist there is an error.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
            "AWS_ACCESS_KEY_ID": _CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": _CREDENTIAL,
            "AWS_SESSION_TOKEN": _CREDENTIAL,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service_name: str) -> Any:
        """A boto3 client for ``service_name`` on this server (cached; standard retries, 3 attempts)."""
        endpoint_url = self.endpoint_url
        with self._clients_lock:
            cached = self._clients.get(service_name)
            if cached is None:
                import boto3  # noqa: PLC0415 - optional dependency, imported when used
                from botocore.config import Config  # noqa: PLC0415

                session = boto3.session.Session(
                    aws_access_key_id=_CREDENTIAL,
                    aws_secret_access_key=_CREDENTIAL,
                    aws_session_token=_CREDENTIAL,
                    region_name=self.region,
                )
                config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)
                cached = session.client(service_name, endpoint_url=endpoint_url, config=config)  # type: ignore[call-overload]
                self._clients[service_name] = cached
            return cached

    def reset(self) -> None:
        """Empty every moto backend (all services, all accounts) through ``/moto-api/reset``."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", "/moto-api/reset", body=b"")
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"moto's reset endpoint answered HTTP {response.status}")

    # provisioning --------------------------------------------------------------

    @staticmethod
    def provisions(resource_type: str) -> bool:
        """Whether :meth:`create_resource` provisions ``resource_type``."""
        return resource_type in PROVISIONED_TYPES

    def create_resource(
        self, resource_type: str, logical_id: str, properties: Mapping[str, Any], *, stack_name: str
    ) -> ProvisionedResource:
        """Create a resource from its template ``Properties`` as CloudFormation would.

        Names not given in the properties are generated as CloudFormation does
        (``<stack>-<logicalId>-<RANDOM>``; lower case for buckets; ``CFN-<logicalId>-<RANDOM>``
        for parameters). Raises :class:`UnsupportedResourceType` for a type outside
        :data:`PROVISIONED_TYPES` and :class:`ProvisioningError` when CloudFormation would
        report ``CREATE_FAILED`` (invalid properties, the service refusing the request); a
        failed create leaves nothing behind.
        """
        creators: dict[str, Callable[[str, Mapping[str, Any], str], ProvisionedResource]] = {
            DYNAMODB_TABLE: self._create_table,
            SSM_PARAMETER: self._create_parameter,
            S3_BUCKET: self._create_bucket,
        }
        creator = creators.get(resource_type)
        if creator is None:
            raise UnsupportedResourceType(resource_type)
        try:
            return creator(logical_id, properties, stack_name)
        except _PropertyError as error:
            raise ProvisioningError(resource_type, logical_id, "ValidationError", str(error)) from error

    def delete_resource(self, resource_type: str, physical_id: str) -> None:
        """Delete the resource with this physical id (``Ref``); one already gone counts as deleted.

        Raises :class:`ProvisioningError` when CloudFormation would report ``DELETE_FAILED``
        (a table with deletion protection, a bucket that is not empty, ...).
        """
        deleters: dict[str, Callable[[str], None]] = {
            DYNAMODB_TABLE: self._delete_table,
            SSM_PARAMETER: self._delete_parameter,
            S3_BUCKET: self._delete_bucket,
        }
        deleter = deleters.get(resource_type)
        if deleter is None:
            raise UnsupportedResourceType(resource_type)
        deleter(physical_id)

    # names ---------------------------------------------------------------------

    def _suffix(self, length: int, alphabet: str) -> str:
        with self._random_lock:
            return "".join(self._random.choice(alphabet) for _ in range(length))

    def _generated_name(self, stack_name: str, logical_id: str, *, max_length: int, lower: bool = False) -> str:
        alphabet = string.digits + (string.ascii_lowercase if lower else string.ascii_uppercase)
        suffix = self._suffix(13 if max_length > 100 else 12, alphabet)
        prefix = f"{stack_name}-{logical_id}"[: max_length - len(suffix) - 1]
        name = f"{prefix}-{suffix}"
        return name.lower() if lower else name

    # DynamoDB ------------------------------------------------------------------

    def _create_table(self, logical_id: str, properties: Mapping[str, Any], stack_name: str) -> ProvisionedResource:
        name = str(properties.get("TableName") or self._generated_name(stack_name, logical_id, max_length=255))
        plan = _table_plan(properties, name)
        dynamodb = self.client("dynamodb")
        with _service_errors(DYNAMODB_TABLE, logical_id):
            table = dynamodb.create_table(**plan.create)["TableDescription"]
        try:
            with _service_errors(DYNAMODB_TABLE, logical_id):
                if plan.time_to_live is not None:
                    dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=plan.time_to_live)
                if plan.point_in_time_recovery is not None:
                    dynamodb.update_continuous_backups(
                        TableName=name, PointInTimeRecoverySpecification=plan.point_in_time_recovery
                    )
        except ProvisioningError:
            if table.get("DeletionProtectionEnabled"):
                dynamodb.update_table(TableName=name, DeletionProtectionEnabled=False)
            dynamodb.delete_table(TableName=name)
            raise
        attributes = {"Arn": str(table["TableArn"])}
        if table.get("LatestStreamArn"):
            attributes["StreamArn"] = str(table["LatestStreamArn"])
        return ProvisionedResource(name, attributes, tuple(sorted(plan.ignored)))

    def _delete_table(self, name: str) -> None:
        with _service_errors(DYNAMODB_TABLE, name, gone=("ResourceNotFoundException",)):
            self.client("dynamodb").delete_table(TableName=name)

    # SSM -----------------------------------------------------------------------

    def _create_parameter(self, logical_id: str, properties: Mapping[str, Any], stack_name: str) -> ProvisionedResource:
        known = frozenset({"Name", "Type", "Value", "Description", "AllowedPattern", "Tier", "DataType", "Tags"})
        ignored = [key for key in properties if key not in known]
        name = str(properties.get("Name") or f"CFN-{logical_id}-{self._suffix(12, string.ascii_letters)}")
        if "Type" not in properties or "Value" not in properties:
            raise _PropertyError("Type and Value are required")
        request: dict[str, Any] = {"Name": name, "Type": str(properties["Type"]), "Value": str(properties["Value"])}
        for key in ("Description", "AllowedPattern", "Tier", "DataType"):
            if key in properties:
                request[key] = str(properties[key])
        if properties.get("Tags"):
            request["Tags"] = _tag_list(properties["Tags"], "Tags")
        with _service_errors(SSM_PARAMETER, logical_id):
            self.client("ssm").put_parameter(**request)
        return ProvisionedResource(name, {"Type": request["Type"], "Value": request["Value"]}, tuple(sorted(ignored)))

    def _delete_parameter(self, name: str) -> None:
        with _service_errors(SSM_PARAMETER, name, gone=("ParameterNotFound",)):
            self.client("ssm").delete_parameter(Name=name)

    # S3 ------------------------------------------------------------------------

    def _create_bucket(self, logical_id: str, properties: Mapping[str, Any], stack_name: str) -> ProvisionedResource:
        known = frozenset({"BucketName", "Tags", "VersioningConfiguration"})
        ignored = [key for key in properties if key not in known]
        name = str(
            properties.get("BucketName") or self._generated_name(stack_name, logical_id, max_length=63, lower=True)
        )
        s3 = self.client("s3")
        request: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with _service_errors(S3_BUCKET, logical_id):
            s3.create_bucket(**request)
        try:
            with _service_errors(S3_BUCKET, logical_id):
                if properties.get("Tags"):
                    s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tag_list(properties["Tags"], "Tags")})
                if "VersioningConfiguration" in properties:
                    versioning = _mapping(properties["VersioningConfiguration"], "VersioningConfiguration")
                    s3.put_bucket_versioning(
                        Bucket=name, VersioningConfiguration={"Status": str(versioning.get("Status"))}
                    )
        except (ProvisioningError, _PropertyError):
            s3.delete_bucket(Bucket=name)
            raise
        region = self.region
        attributes = {
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{region}.amazonaws.com",
            "DualStackDomainName": f"{name}.s3.dualstack.{region}.amazonaws.com",
            "WebsiteURL": f"http://{name}.s3-website-{region}.amazonaws.com",
        }
        return ProvisionedResource(name, attributes, tuple(sorted(ignored)))

    def _delete_bucket(self, name: str) -> None:
        with _service_errors(S3_BUCKET, name, gone=("NoSuchBucket",)):
            self.client("s3").delete_bucket(Bucket=name)


@contextlib.contextmanager
def _service_errors(resource_type: str, name: str, *, gone: tuple[str, ...] = ()) -> Iterator[None]:
    """Turn a botocore ``ClientError`` into :class:`ProvisioningError`; codes in ``gone`` count as success."""
    from botocore.exceptions import ClientError, ParamValidationError  # noqa: PLC0415 - optional, imported when used

    try:
        yield
    except ClientError as error:
        details = error.response.get("Error", {})
        code = str(details.get("Code", "Unknown"))
        if code not in gone:
            raise ProvisioningError(resource_type, name, code, str(details.get("Message", error))) from error
    except ParamValidationError as error:
        raise ProvisioningError(resource_type, name, "ValidationError", str(error)) from error
