"""Rehearse a synthesized CDK app's AppStream associations the way CloudFormation would run them.

:class:`Rehearsal` reads a cloud assembly (``cdk.out``), finds every
``Custom::AppStreamUserStackAssociation`` and the function behind its ServiceToken, and plays
CloudFormation: it sends real custom-resource events (scalars stringified, OldResourceProperties
on update, the PhysicalResourceId returned earlier, a ResponseURL on an HTTPS server on
loopback) to the function's bundled asset, run in a separate Python process the way Lambda
runs it (:class:`LambdaProcess`), against a local AppStream
(:class:`~constructs_lib.testing.appstream.AppStreamServer`). It rolls back on failure as
CloudFormation does and reports the events CloudFormation would show (:class:`StackEvent`).

Only the association resources and their functions are played; the other resources of the
template (roles, log groups, ...) are taken as created. Stack names, parameters and the
intrinsic functions CDK commonly puts into association properties (``Ref``, ``Fn::Join``,
``Fn::Sub``, ``Fn::Select``, ``Fn::Split``, ``Fn::GetAtt`` of a function's ``Arn``) are resolved;
anything else raises :class:`RehearsalError`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

from constructs_lib._handler import rules
from constructs_lib.testing import _bootstrap
from constructs_lib.testing.appstream import AppStreamServer
from constructs_lib.testing.response_server import ResponseServer

__all__ = [
    "ACCOUNT",
    "RESOURCE_TYPE",
    "STACK_RESOURCE_TYPE",
    "AssociationResource",
    "FunctionSpec",
    "Invocation",
    "LambdaProcess",
    "Rehearsal",
    "RehearsalError",
    "StackEvent",
    "StackOperation",
    "StackTemplate",
    "format_state",
    "read_assembly",
    "stringify",
    "summarise_users",
    "write_event",
]

RESOURCE_TYPE = rules.RESOURCE_TYPE
STACK_RESOURCE_TYPE = "AWS::CloudFormation::Stack"
ACCOUNT = "123456789012"
DEFAULT_SERVICE_TIMEOUT = 3600.0
"""How long CloudFormation waits for a custom resource's answer unless ``ServiceTimeout`` says otherwise."""

LAMBDA_RETRY_DELAYS = (60.0, 120.0)
"""Lambda waits about a minute before the first retry of a failed asynchronous invocation, two before the second."""

_BOOTSTRAP = Path(_bootstrap.__file__)
_GRACE_SECONDS = 5.0  # beyond init + timeout, before the parent kills a child that ignored its own watchdog


class RehearsalError(Exception):
    """The assembly cannot be rehearsed (a missing asset, an intrinsic the runner cannot resolve)."""


class CloudAssemblyLike(Protocol):
    """What :func:`read_assembly` needs of ``aws_cdk.cx_api.CloudAssembly`` (``app.synth()``)."""

    @property
    def directory(self) -> str:
        """The assembly's directory."""
        ...


AssemblySource = str | os.PathLike[str] | CloudAssemblyLike
"""A cloud assembly directory, or the object ``app.synth()`` returns."""


# ---------------------------------------------------------------------------------------------
# Reading the assembly


@dataclass(frozen=True)
class FunctionSpec:
    """The Lambda function behind a custom resource, as the template declares it."""

    logical_id: str
    asset_dir: Path
    handler: str
    timeout: float
    memory_mb: int
    environment: Mapping[str, str]
    runtime: str = ""
    retry_attempts: int = 2
    """How often Lambda retries an asynchronous invocation that failed (``EventInvokeConfig``; default 2)."""


@dataclass(frozen=True)
class AssociationResource:
    """One ``Custom::AppStreamUserStackAssociation`` with its properties resolved and stringified."""

    logical_id: str
    properties: Mapping[str, Any]
    function: FunctionSpec
    service_timeout: float = DEFAULT_SERVICE_TIMEOUT


@dataclass(frozen=True)
class StackTemplate:
    """One CloudFormation stack of the assembly, reduced to what a rehearsal needs."""

    stack_name: str
    associations: tuple[AssociationResource, ...]


def stringify(value: Any) -> Any:
    """Scalars as CloudFormation delivers them to a custom resource: all strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return [stringify(item) for item in value]
    if isinstance(value, dict):
        return {key: stringify(item) for key, item in value.items()}
    return value


class _NoValue:
    """``Ref: AWS::NoValue``: the property or list item disappears."""


_NO_VALUE = _NoValue()


class _Resolver:
    """Resolves the intrinsic functions CDK apps commonly put into association properties."""

    def __init__(
        self, template: Mapping[str, Any], stack_name: str, region: str, parameters: Mapping[str, str]
    ) -> None:
        self._resources: Mapping[str, Any] = template.get("Resources", {})
        self._parameters = {
            name: parameters.get(name, spec.get("Default")) for name, spec in template.get("Parameters", {}).items()
        }
        self._pseudo: dict[str, Any] = {
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": stack_name,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": _NO_VALUE,
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{ACCOUNT}:stack/{stack_name}/rehearsal",
        }

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function replaced by its value."""
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            key, argument = next(iter(value.items()))
            if key == "Ref":
                return self._ref(argument)
            if key == "Fn::GetAtt":
                return self._get_att(argument)
            if key == "Fn::Join":
                separator, parts = argument
                return str(separator).join(str(part) for part in self.resolve(parts))
            if key == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(str(separator))
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return self._sub(str(text), self.resolve(variables))
            if key.startswith("Fn::"):
                raise RehearsalError(f"{key} is not supported by the rehearsal")
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            if self._parameters[name] is None:
                raise RehearsalError(f"parameter {name} has no default: pass it in parameters=")
            return self._parameters[name]
        resource = self._resources.get(name)
        if resource is None:
            raise RehearsalError(f"Ref to unknown {name}")
        properties = resource.get("Properties", {})
        ref_property = {
            "AWS::AppStream::Stack": "Name",
            "AWS::AppStream::User": "UserName",
            "AWS::Lambda::Function": "FunctionName",
        }.get(resource.get("Type"))
        if ref_property and ref_property in properties:
            return self.resolve(properties[ref_property])
        return f"{name}-physical-id"

    def _get_att(self, argument: Any) -> Any:
        name, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
        resource = self._resources.get(name, {})
        if resource.get("Type") == "AWS::Lambda::Function" and attribute == "Arn":
            return f"arn:aws:lambda:{self._pseudo['AWS::Region']}:{ACCOUNT}:function:{name}"
        raise RehearsalError(f"Fn::GetAtt {name}.{attribute} is not supported by the rehearsal")

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        out: list[str] = []
        rest = text
        while "${" in rest:
            before, _, tail = rest.partition("${")
            name, _, rest = tail.partition("}")
            out.append(before)
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")  # ${!Literal}
            elif name in variables:
                out.append(str(variables[name]))
            elif "." in name:
                out.append(str(self._get_att(name)))
            else:
                out.append(str(self._ref(name)))
        out.append(rest)
        return "".join(out)


def _assembly_dir(source: AssemblySource) -> Path:
    directory = getattr(source, "directory", None)
    if isinstance(directory, str):
        return Path(directory)
    return Path(os.fspath(source))  # type: ignore[arg-type]


def _asset_dir(assembly: Path, stack_name: str, function_id: str, function: Mapping[str, Any]) -> Path:
    metadata = function.get("Metadata", {})
    if "aws:asset:path" in metadata:
        candidate = assembly / str(metadata["aws:asset:path"])
        if candidate.is_dir():
            return candidate
    code = function.get("Properties", {}).get("Code", {})
    if "ZipFile" in code:
        raise RehearsalError(f"{stack_name}/{function_id}: inline code (ZipFile) is not supported by the rehearsal")
    s3_key = code.get("S3Key")
    asset_hash = s3_key.removesuffix(".zip") if isinstance(s3_key, str) else None
    for manifest in sorted(assembly.glob("*.assets.json")):
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
        source = files.get(asset_hash, {}).get("source", {})
        if source.get("path") and (assembly / source["path"]).is_dir():
            return assembly / str(source["path"])
    raise RehearsalError(
        f"{stack_name}/{function_id}: the function's asset directory is not in {assembly} "
        "(was the app synthesized with --no-staging, or the directory cleaned?)"
    )


def _service_timeout(properties: Mapping[str, Any]) -> float:
    value = properties.get("ServiceTimeout")
    try:
        return float(value) if value is not None else DEFAULT_SERVICE_TIMEOUT
    except (TypeError, ValueError):
        return DEFAULT_SERVICE_TIMEOUT


def _retry_attempts(resources: Mapping[str, Any], function_id: str) -> int:
    """``MaximumRetryAttempts`` of the function's ``AWS::Lambda::EventInvokeConfig``, else Lambda's 2."""
    for resource in resources.values():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Lambda::EventInvokeConfig" and properties.get("FunctionName") == {
            "Ref": function_id
        }:
            return int(properties.get("MaximumRetryAttempts", 2))
    return 2


def _read_stack(
    assembly: Path, artifact_id: str, artifact: Mapping[str, Any], region: str, parameters: Mapping[str, str]
) -> StackTemplate:
    stack_name = str(artifact.get("properties", {}).get("stackName", artifact_id))
    template = json.loads((assembly / artifact["properties"]["templateFile"]).read_text(encoding="utf-8"))
    resolver = _Resolver(template, stack_name, region, parameters)
    resources: Mapping[str, Any] = template.get("Resources", {})
    found: list[AssociationResource] = []
    for logical_id, resource in resources.items():
        if resource.get("Type") != RESOURCE_TYPE:
            continue
        token = resource.get("Properties", {}).get("ServiceToken", {})
        function_id = token.get("Fn::GetAtt", [None])[0] if isinstance(token, dict) else None
        function = resources.get(function_id or "", {})
        if function.get("Type") != "AWS::Lambda::Function":
            raise RehearsalError(
                f"{stack_name}/{logical_id}: ServiceToken is not the Arn of a function of this stack "
                f"(got {json.dumps(token)[:120]})"
            )
        fn_props = function.get("Properties", {})
        variables = fn_props.get("Environment", {}).get("Variables", {})
        spec = FunctionSpec(
            logical_id=str(function_id),
            asset_dir=_asset_dir(assembly, stack_name, str(function_id), function),
            handler=str(fn_props.get("Handler", "index.handler")),
            timeout=float(fn_props.get("Timeout", 3)),
            memory_mb=int(fn_props.get("MemorySize", 128)),
            environment={key: str(resolver.resolve(value)) for key, value in variables.items()},
            runtime=str(fn_props.get("Runtime", "")),
            retry_attempts=_retry_attempts(resources, str(function_id)),
        )
        properties = stringify(resolver.resolve(resource.get("Properties", {})))
        found.append(AssociationResource(logical_id, properties, spec, _service_timeout(properties)))
    return StackTemplate(stack_name, _dependency_order(found, resources))


def _dependency_order(
    found: list[AssociationResource], resources: Mapping[str, Any]
) -> tuple[AssociationResource, ...]:
    """``found`` in template order, moved so that each comes after the associations it ``DependsOn``."""
    by_id = {resource.logical_id: resource for resource in found}
    ordered: list[AssociationResource] = []
    visiting: set[str] = set()

    def visit(logical_id: str) -> None:
        if logical_id in visiting or by_id[logical_id] in ordered:
            return
        visiting.add(logical_id)
        depends = resources[logical_id].get("DependsOn", [])
        for other in [depends] if isinstance(depends, str) else depends:
            if other in by_id:
                visit(other)
        ordered.append(by_id[logical_id])

    for resource in found:
        visit(resource.logical_id)
    return tuple(ordered)


def read_assembly(
    source: AssemblySource, *, region: str = "us-east-1", parameters: Mapping[str, str] | None = None
) -> list[StackTemplate]:
    """Every stack of a cloud assembly (nested stage assemblies included) with its association resources.

    :param source: the assembly directory (``cdk.out``) or what ``app.synth()`` returns.
    :param region: the region of ``AWS::Region``. Default: ``us-east-1``.
    :param parameters: values for template parameters without a default. Default: none.
    :raises RehearsalError: if the directory is no assembly, an asset is missing, or a property
        uses an intrinsic function the rehearsal cannot resolve.
    """
    assembly = _assembly_dir(source)
    manifest_path = assembly / "manifest.json"
    if not manifest_path.is_file():
        raise RehearsalError(f"{assembly} is not a cloud assembly (no manifest.json): run cdk synth first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    stacks: list[StackTemplate] = []
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        kind = artifact.get("type")
        if kind == "aws:cloudformation:stack":
            stacks.append(_read_stack(assembly, artifact_id, artifact, region, parameters or {}))
        elif kind == "cdk:cloud-assembly":  # a Stage
            nested = assembly / artifact.get("properties", {}).get("directoryName", "")
            stacks.extend(read_assembly(nested, region=region, parameters=parameters))
    return stacks


# ---------------------------------------------------------------------------------------------
# Running the function


@dataclass(frozen=True)
class Invocation:
    """One event sent to the function and what came back.

    ``logs`` is what the function wrote (its CloudWatch log stream, START/END/REPORT lines
    included); ``timings`` holds ``init`` and ``invoke`` seconds as measured inside the child;
    ``imports`` maps each top-level third-party module the child imported to its file;
    ``response_problems`` says why CloudFormation would reject the first accepted response;
    ``error`` is the runtime error (``Runtime.ImportModuleError: ...``, an exception the handler
    raised, ``Task timed out after ...``) or None.
    """

    request_type: str
    logical_id: str
    event: Mapping[str, Any]
    responses: tuple[Mapping[str, Any], ...]
    response_problems: tuple[str, ...]
    logs: str
    exit_code: int | None
    timed_out: bool
    seconds: float
    timings: Mapping[str, float]
    imports: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def response(self) -> Mapping[str, Any] | None:
        """The first (normally the only) response CloudFormation received."""
        return self.responses[0] if self.responses else None

    @property
    def status(self) -> str:
        """SUCCESS, FAILED, or NO_RESPONSE (CloudFormation would wait for ServiceTimeout)."""
        return str(self.response.get("Status")) if self.response else "NO_RESPONSE"

    @property
    def reason(self) -> str:
        """The response's reason, or why there was none."""
        if self.response:
            return str(self.response.get("Reason", ""))
        if self.timed_out:
            return f"the function timed out without answering ({self.error or 'killed'})"
        if self.error:
            return f"the function failed without answering: {self.error}"
        return "the function returned without answering"

    @property
    def physical_resource_id(self) -> str:
        """The PhysicalResourceId of the response."""
        return str(self.response.get("PhysicalResourceId", "")) if self.response else ""


class LambdaProcess:
    """Runs a function's asset in a fresh Python process per event, as Lambda runs it.

    The child is ``python -I -B`` (no user site, no ``PYTHON*`` variables, no bytecode written
    into the asset) with an environment made only of Lambda's variables, the function's own
    ``Environment``, fake credentials and the local endpoints. ``python`` must have boto3
    installed (Lambda's runtime provides it); any other package must come from the asset.
    """

    def __init__(
        self,
        appstream: AppStreamServer,
        responses: ResponseServer,
        *,
        python: str = sys.executable,
        region: str = "us-east-1",
    ) -> None:
        self._appstream = appstream
        self._responses = responses
        self._python = python
        self._region = region

    def environment(self, function: FunctionSpec) -> dict[str, str]:
        """The process environment: Lambda's variables, the function's, fake credentials, local endpoints."""
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "_HANDLER": function.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime or 'python'}",
            "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.logical_id}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "rehearsal",
            "LAMBDA_TASK_ROOT": str(function.asset_dir),
            **function.environment,
            # Last, so that nothing in the function's environment can send it to real AWS.
            "AWS_REGION": self._region,
            "AWS_DEFAULT_REGION": self._region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # fake credentials for the local endpoints
            "AWS_SESSION_TOKEN": "testing",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_APPSTREAM": self._appstream.endpoint_url,
            "SSL_CERT_FILE": self._responses.ca_bundle_path,
        }

    def invoke(self, function: FunctionSpec, event: Mapping[str, Any], *, timeout: float | None = None) -> Invocation:
        """Send ``event`` and collect the answer.

        ``responses`` and ``response_problems`` of the result cover every PUT to the event's
        ResponseURL so far, earlier runs with the same event included.

        :param event: the event; a new ResponseURL is issued unless it has one (a retry).
        :param timeout: seconds the handler may run. Default: the function's ``Timeout``.
        """
        url = str(event.get("ResponseURL") or self._responses.new_response_url(str(event.get("LogicalResourceId"))))
        sent = {**event, "ResponseURL": url}
        limit = function.timeout if timeout is None else timeout
        workdir = Path(tempfile.mkdtemp(prefix="rehearsal-"))
        report_path = workdir / "report.json"
        request = {
            "asset_dir": str(function.asset_dir),
            "handler": function.handler,
            "timeout": limit,
            "memory_mb": function.memory_mb,
            "function_name": function.logical_id,
            "event": sent,
            "report_path": str(report_path),
        }
        started = time.monotonic()
        killed, exit_code, output = False, None, ""
        try:
            completed = subprocess.run(  # noqa: S603 - our own interpreter and bootstrap
                [self._python, "-I", "-B", "-c", _BOOTSTRAP.read_text(encoding="utf-8")],
                input=json.dumps(request),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                encoding="utf-8",
                errors="replace",
                timeout=limit + _bootstrap.INIT_TIMEOUT + _GRACE_SECONDS,
                env=self.environment(function),
                cwd=function.asset_dir,
                check=False,
            )
            exit_code, output = completed.returncode, completed.stdout
        except subprocess.TimeoutExpired as expired:
            killed = True
            output = _text(expired.stdout)
        seconds = time.monotonic() - started
        try:
            report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report = {}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        timings = {key: float(report[key]) for key in ("init", "invoke") if report.get(key) is not None}
        error = report.get("error")
        if error is None and exit_code not in (0, None):
            error = f"the process exited with status {exit_code}"
        if killed:
            error = f"killed after {limit + _bootstrap.INIT_TIMEOUT + _GRACE_SECONDS:.0f} s"
        attempts = self._responses.attempts(url)
        bodies = tuple(self._responses.responses(url))
        first = next((attempt for attempt in attempts if attempt.accepted), None)  # CloudFormation ignores the rest
        problems = first.problems if first is not None else ()
        return Invocation(
            request_type=str(event.get("RequestType")),
            logical_id=str(event.get("LogicalResourceId")),
            event=sent,
            responses=bodies,
            response_problems=problems,
            logs=output.rstrip("\n"),
            exit_code=exit_code,
            timed_out=killed or bool(report.get("timed_out")),
            seconds=seconds,
            timings=timings,
            imports=dict(report.get("imports") or {}),
            error=str(error) if error is not None else None,
        )


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


# ---------------------------------------------------------------------------------------------
# Playing CloudFormation


@dataclass
class _Deployed:
    physical_id: str
    properties: Mapping[str, Any]
    function: FunctionSpec
    service_timeout: float = DEFAULT_SERVICE_TIMEOUT


@dataclass
class _Stack:
    stack_id: str
    status: str
    resources: dict[str, _Deployed]


@dataclass
class StackEvent:
    """One line of what CloudFormation's console would show.

    Stack-level events have the stack's name as ``logical_id`` and the resource type
    ``AWS::CloudFormation::Stack``; resource events carry the :class:`Invocation` behind them,
    and in ``retries`` the runs of the same event with which Lambda retried a failed one.
    """

    logical_id: str
    status: str
    reason: str = ""
    invocation: Invocation | None = None
    resource_type: str = RESOURCE_TYPE
    timestamp: float = field(default_factory=time.time)
    retries: tuple[Invocation, ...] = ()
    physical_resource_id: str = ""
    """The id CloudFormation took from the answer ("" if it had none in time)."""

    @property
    def attempts(self) -> tuple[Invocation, ...]:
        """Every run of the function for this event: the invocation, then Lambda's retries."""
        return (self.invocation, *self.retries) if self.invocation is not None else ()


@dataclass
class StackOperation:
    """The outcome of one deploy or destroy of a stack: its final status and every event."""

    stack_name: str
    status: str
    events: list[StackEvent] = field(default_factory=list)

    @property
    def invocations(self) -> list[Invocation]:
        """Every run of the function, in order (Lambda's retries included)."""
        return [attempt for event in self.events for attempt in event.attempts]

    @property
    def resource_events(self) -> list[StackEvent]:
        """The events of the association resources (stack-level events left out)."""
        return [event for event in self.events if event.resource_type != STACK_RESOURCE_TYPE]


class Rehearsal:
    """A small CloudFormation for association resources: deploy, update, roll back, destroy.

    ``report`` receives each :class:`StackEvent` as it happens (the demo prints them). The
    semantics follow CloudFormation's: a failed Create rolls the new stack back (Delete with the
    physical id the FAILED answer carried) to ``ROLLBACK_COMPLETE``; a failed Update sends the
    updated resources an Update back to their old properties and deletes the ones it created,
    ending in ``UPDATE_ROLLBACK_COMPLETE``; an Update answered with a new physical id is a
    replacement whose old id gets a Delete in the cleanup phase; resources removed from the
    template are deleted in the cleanup phase. Deploying onto a stack in ``ROLLBACK_COMPLETE``
    deletes it first, as ``cdk deploy`` does. A stack whose association properties and
    functions are unchanged gets no events (``cdk deploy`` reports "no changes").

    Like Lambda with an asynchronous invocation, a run that fails (an exception, the timeout, a
    module that cannot be imported) is retried with the same event, up to the function's
    ``retry_attempts`` (2 unless an ``EventInvokeConfig`` says otherwise), at once rather than
    after Lambda's one and two minutes; those minutes still count against the resource's
    ``ServiceTimeout``: an answer that would arrive later fails the resource, as CloudFormation
    would have stopped waiting.
    """

    def __init__(
        self,
        appstream: AppStreamServer,
        responses: ResponseServer,
        *,
        python: str = sys.executable,
        region: str = "us-east-1",
        report: Callable[[str, StackEvent], None] | None = None,
    ) -> None:
        self.appstream = appstream
        self.responses = responses
        self.region = region
        self.process = LambdaProcess(appstream, responses, python=python, region=region)
        self._report = report or (lambda stack, event: None)
        self._stacks: dict[str, _Stack] = {}

    def deployed(self, stack_name: str) -> Mapping[str, str]:
        """Logical id to physical id of a deployed stack's association resources."""
        stack = self._stacks.get(stack_name)
        return {logical: item.physical_id for logical, item in stack.resources.items()} if stack else {}

    def status(self, stack_name: str) -> str | None:
        """The stack's status (``CREATE_COMPLETE``, ``ROLLBACK_COMPLETE``, ...), None if it does not exist."""
        stack = self._stacks.get(stack_name)
        return stack.status if stack else None

    def deploy(
        self, assembly: AssemblySource, *, stack_name: str | None = None, parameters: Mapping[str, str] | None = None
    ) -> list[StackOperation]:
        """Create or update every stack of the assembly, in the assembly's order.

        :param assembly: the assembly directory (``cdk.out``) or what ``app.synth()`` returns.
        :param stack_name: deploy a lone stack under this name instead of its own. Default: its own.
        :param parameters: values for template parameters without a default. Default: none.
        :raises RehearsalError: if the assembly cannot be rehearsed, or a stack is in a state
            CloudFormation would refuse to update (``*_FAILED``).
        """
        templates = read_assembly(assembly, region=self.region, parameters=parameters)
        if stack_name is not None and len(templates) != 1:
            raise RehearsalError(f"stack_name= needs an assembly with exactly one stack, found {len(templates)}")
        operations = []
        for template in templates:
            name = stack_name or template.stack_name
            existing = self._stacks.get(name)
            if existing is not None and existing.status.endswith("_FAILED"):
                raise RehearsalError(f"Stack:{name} is in {existing.status} state and can not be updated.")
            if existing is None or existing.status == "ROLLBACK_COMPLETE":
                operations.append(self._create(name, template))
            else:
                operations.append(self._update(name, template))
        return operations

    def destroy(self, stack_name: str) -> StackOperation:
        """Delete a stack: its association resources get a Delete, last created first.

        :raises RehearsalError: if the stack does not exist.
        """
        stack = self._stacks.get(stack_name)
        if stack is None:
            raise RehearsalError(f"Stack with id {stack_name} does not exist")
        operation = StackOperation(stack_name, "DELETE_COMPLETE")
        self._stack_event(operation, "DELETE_IN_PROGRESS", "User Initiated")
        for logical_id in reversed(list(stack.resources)):
            item = stack.resources[logical_id]
            event = self._send(
                operation, stack.stack_id, "Delete", logical_id, item, item.properties, physical_id=item.physical_id
            )
            if event.status == "DELETE_COMPLETE":
                del stack.resources[logical_id]
            else:
                operation.status = "DELETE_FAILED"
        if operation.status == "DELETE_COMPLETE":
            del self._stacks[stack_name]
            self._stack_event(operation, "DELETE_COMPLETE")
        else:
            stack.status = "DELETE_FAILED"
            failed = [event.logical_id for event in operation.resource_events if event.status == "DELETE_FAILED"]
            self._stack_event(operation, "DELETE_FAILED", f"The following resource(s) failed to delete: {failed}.")
        return operation

    # -- internals -------------------------------------------------------------------------------

    def _stack_id(self, stack_name: str) -> str:
        return f"arn:aws:cloudformation:{self.region}:{ACCOUNT}:stack/{stack_name}/{uuid.uuid4()}"

    def _stack_event(self, operation: StackOperation, status: str, reason: str = "") -> None:
        event = StackEvent(operation.stack_name, status, reason, resource_type=STACK_RESOURCE_TYPE)
        operation.events.append(event)
        self._report(operation.stack_name, event)

    def _event(
        self,
        stack_id: str,
        request_type: str,
        logical_id: str,
        function: FunctionSpec,
        properties: Mapping[str, Any],
        *,
        physical_id: str | None = None,
        old_properties: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        token = f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{function.logical_id}"
        event: dict[str, Any] = {
            "RequestType": request_type,
            "ServiceToken": token,
            "StackId": stack_id,
            "RequestId": str(uuid.uuid4()),
            "LogicalResourceId": logical_id,
            "ResourceType": RESOURCE_TYPE,
            "ResourceProperties": {**properties, "ServiceToken": token},
        }
        if physical_id is not None:
            event["PhysicalResourceId"] = physical_id
        if old_properties is not None:
            event["OldResourceProperties"] = {**old_properties, "ServiceToken": token}
        return event

    def _send(
        self,
        operation: StackOperation,
        stack_id: str,
        request_type: str,
        logical_id: str,
        target: _Deployed,
        properties: Mapping[str, Any],
        *,
        physical_id: str | None = None,
        old_properties: Mapping[str, Any] | None = None,
    ) -> StackEvent:
        """Send one event to ``target.function`` and report the resource's IN_PROGRESS and outcome."""
        verb = {"Create": "CREATE", "Update": "UPDATE", "Delete": "DELETE"}[request_type]
        started = StackEvent(logical_id, f"{verb}_IN_PROGRESS")
        operation.events.append(started)
        self._report(operation.stack_name, started)
        event = self._event(
            stack_id,
            request_type,
            logical_id,
            target.function,
            properties,
            physical_id=physical_id,
            old_properties=old_properties,
        )
        event["ResponseURL"] = self.responses.new_response_url(logical_id)
        attempts, answered_after = self._run_with_retries(target.function, event)
        last = attempts[-1]  # its responses cover every run's
        late = answered_after is not None and answered_after > target.service_timeout
        ok = last.status == "SUCCESS" and not last.response_problems and not late
        reason = "" if ok else _why(last, target.service_timeout, len(attempts), answered_after if late else None)
        status = f"{verb}_{'COMPLETE' if ok else 'FAILED'}"
        physical_resource_id = "" if late else last.physical_resource_id
        result = StackEvent(
            logical_id,
            status,
            reason,
            attempts[0],
            retries=tuple(attempts[1:]),
            physical_resource_id=physical_resource_id,
        )
        operation.events.append(result)
        self._report(operation.stack_name, result)
        return result

    def _run_with_retries(
        self, function: FunctionSpec, event: Mapping[str, Any]
    ) -> tuple[list[Invocation], float | None]:
        """Run the event, and again as Lambda retries a failed asynchronous invocation.

        Returns the runs and, if an answer arrived, when CloudFormation would have had it
        (seconds since the request, counting Lambda's waits before retries).
        """
        attempts: list[Invocation] = []
        elapsed, answered_after = 0.0, None
        for number in range(1 + max(0, function.retry_attempts)):
            if number:
                elapsed += LAMBDA_RETRY_DELAYS[min(number, len(LAMBDA_RETRY_DELAYS)) - 1]
            attempt = self.process.invoke(function, event)
            attempts.append(attempt)
            elapsed += attempt.seconds
            if answered_after is None and attempt.responses:
                answered_after = elapsed
            if attempt.error is None:
                break
        return attempts, answered_after

    def _create(self, stack_name: str, template: StackTemplate) -> StackOperation:
        operation = StackOperation(stack_name, "CREATE_COMPLETE")
        previous = self._stacks.pop(stack_name, None)
        if previous is not None:  # ROLLBACK_COMPLETE: cdk deploy deletes the stack, then creates it again
            self._stack_event(operation, "DELETE_IN_PROGRESS", "User Initiated")
            self._stack_event(operation, "DELETE_COMPLETE")
        stack_id = self._stack_id(stack_name)
        self._stack_event(operation, "CREATE_IN_PROGRESS", "User Initiated")
        created: dict[str, _Deployed] = {}
        failed: tuple[str, _Deployed] | None = None
        for resource in template.associations:
            item = _Deployed("", resource.properties, resource.function, resource.service_timeout)
            event = self._send(operation, stack_id, "Create", resource.logical_id, item, resource.properties)
            item.physical_id = event.physical_resource_id
            if event.status != "CREATE_COMPLETE":
                failed = (resource.logical_id, item)
                break
            created[resource.logical_id] = item
        if failed is None:
            self._stacks[stack_name] = _Stack(stack_id, "CREATE_COMPLETE", created)
            self._stack_event(operation, "CREATE_COMPLETE")
            return operation
        # Roll back: delete the failed resource (with the id its FAILED answer carried) and the rest.
        self._stack_event(
            operation,
            "ROLLBACK_IN_PROGRESS",
            f"The following resource(s) failed to create: [{failed[0]}]. Rollback requested by user.",
        )
        operation.status = "ROLLBACK_COMPLETE"
        left: dict[str, _Deployed] = {}
        for logical_id, item in [failed, *reversed(list(created.items()))]:
            event = self._send(
                operation,
                stack_id,
                "Delete",
                logical_id,
                item,
                item.properties,
                physical_id=item.physical_id or f"{stack_name}-{logical_id}-{uuid.uuid4().hex[:12]}",
            )
            if event.status != "DELETE_COMPLETE":
                operation.status = "ROLLBACK_FAILED"
                left[logical_id] = item
        self._stacks[stack_name] = _Stack(stack_id, operation.status, left)
        self._stack_event(operation, operation.status)
        return operation

    def _update(self, stack_name: str, template: StackTemplate) -> StackOperation:
        stack = self._stacks[stack_name]
        current = stack.resources
        operation = StackOperation(stack_name, "UPDATE_COMPLETE")
        wanted = {resource.logical_id: resource for resource in template.associations}
        if set(wanted) == set(current) and all(
            current[key].properties == resource.properties
            and _deployed_as(current[key].function) == _deployed_as(resource.function)
            for key, resource in wanted.items()
        ):
            operation.status = stack.status  # nothing to do: cdk deploy says "no changes"
            return operation
        self._stack_event(operation, "UPDATE_IN_PROGRESS", "User Initiated")
        done: list[tuple[str, str]] = []  # (logical id, "Create" | "Update") in order, for rollback
        replaced: list[tuple[str, _Deployed]] = []
        new_state: dict[str, _Deployed] = {}
        failed: str | None = None
        for logical_id, resource in wanted.items():
            before = current.get(logical_id)
            item = _Deployed(
                before.physical_id if before else "", resource.properties, resource.function, resource.service_timeout
            )
            if before is not None and before.properties == resource.properties:
                new_state[logical_id] = item  # no event; later events go to the updated function
                continue
            if before is None:
                event = self._send(operation, stack.stack_id, "Create", logical_id, item, resource.properties)
                kind = "Create"
            else:
                event = self._send(
                    operation,
                    stack.stack_id,
                    "Update",
                    logical_id,
                    item,
                    resource.properties,
                    physical_id=before.physical_id,
                    old_properties=before.properties,
                )
                kind = "Update"
            done.append((logical_id, kind))
            item.physical_id = event.physical_resource_id or item.physical_id
            new_state[logical_id] = item
            if not event.status.endswith("_COMPLETE"):
                failed = logical_id
                break
            if before is not None and item.physical_id != before.physical_id:
                replaced.append((logical_id, before))
        if failed is not None:
            self._roll_back_update(operation, stack, failed, done, new_state, wanted)
            return operation
        # Cleanup phase: resources no longer in the template, and the old ids of replaced ones.
        self._stack_event(operation, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
        # A function still in the template has been updated by now: it is the one that gets the Delete.
        functions = {resource.function.logical_id: resource.function for resource in wanted.values()}
        removed = [(logical_id, current[logical_id]) for logical_id in current if logical_id not in wanted]
        for logical_id, item in [*replaced, *reversed(removed)]:
            target = replace(item, function=functions.get(item.function.logical_id, item.function))
            self._send(
                operation, stack.stack_id, "Delete", logical_id, target, item.properties, physical_id=item.physical_id
            )
        stack.resources = new_state
        stack.status = "UPDATE_COMPLETE"
        self._stack_event(operation, "UPDATE_COMPLETE")
        return operation

    def _roll_back_update(
        self,
        operation: StackOperation,
        stack: _Stack,
        failed: str,
        done: list[tuple[str, str]],
        new_state: Mapping[str, _Deployed],
        wanted: Mapping[str, AssociationResource],
    ) -> None:
        """Update changed resources back to their old properties, then delete the created ones."""
        kind = dict(done)[failed]
        verb = "create" if kind == "Create" else "update"
        self._stack_event(
            operation, "UPDATE_ROLLBACK_IN_PROGRESS", f"The following resource(s) failed to {verb}: [{failed}]."
        )
        operation.status = "UPDATE_ROLLBACK_COMPLETE"
        for logical_id, kind in reversed(done):
            if kind != "Update":
                continue
            old = stack.resources[logical_id]
            # The function is rolled back after the resources that depend on it: the new code answers.
            target = replace(old, function=wanted[logical_id].function)
            event = self._send(
                operation,
                stack.stack_id,
                "Update",
                logical_id,
                target,
                old.properties,
                physical_id=old.physical_id,
                old_properties=wanted[logical_id].properties,
            )
            if not event.status.endswith("_COMPLETE"):
                operation.status = "UPDATE_ROLLBACK_FAILED"
        if operation.status == "UPDATE_ROLLBACK_COMPLETE":
            self._stack_event(operation, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
            for logical_id, kind in reversed(done):
                item = new_state[logical_id]
                if kind == "Create":
                    physical_id = item.physical_id or f"{operation.stack_name}-{logical_id}-{uuid.uuid4().hex[:12]}"
                elif item.physical_id != stack.resources[logical_id].physical_id:
                    physical_id = item.physical_id  # the replacement made by the failed update
                else:
                    continue
                self._send(
                    operation, stack.stack_id, "Delete", logical_id, item, item.properties, physical_id=physical_id
                )
        stack.status = operation.status
        self._stack_event(operation, operation.status)


def _deployed_as(function: FunctionSpec) -> FunctionSpec:
    """What CloudFormation compares: the asset by its name (CDK names it by its hash), not where it lies."""
    return replace(function, asset_dir=Path(function.asset_dir.name))


def _why(invocation: Invocation, service_timeout: float, runs: int, late_by: float | None) -> str:
    """The status reason CloudFormation would show for a resource whose event did not succeed."""
    retried = f" (run {runs} times: Lambda retried the failed invocation)" if runs > 1 else ""
    if late_by is not None:
        return (
            f"CloudFormation did not receive a response from your Custom Resource within the ServiceTimeout "
            f"of {service_timeout:.0f} s: the answer came after Lambda's retries, about {late_by:.0f} s "
            f"after the request{retried}."
        )
    if invocation.response_problems:
        return "Invalid response from the custom resource: " + "; ".join(invocation.response_problems)
    if invocation.response is None:
        return (
            f"CloudFormation did not receive a response from your Custom Resource: {invocation.reason}{retried}. "
            f"(CloudFormation would wait for the ServiceTimeout of {service_timeout:.0f} s first.)"
        )
    return f"Received response status [FAILED] from custom resource. Message returned: {invocation.reason}"


# ---------------------------------------------------------------------------------------------
# Showing it


def summarise_users(users: Iterable[str], limit: int = 4, *, width: int | None = None) -> str:
    """``a, b, c +N more`` for long user lists (sorted).

    :param limit: most names shown. Default: 4.
    :param width: most characters used, if given (at least one name is always shown).
    """
    names = sorted(users)
    if not names:
        return "(none)"
    shown: list[str] = []
    for index, name in enumerate(names[:limit]):
        rest = len(names) - index - 1
        candidate = ", ".join([*shown, name]) + (f" +{rest} more" if rest else "")
        if shown and width is not None and len(candidate) > width:
            break
        shown.append(name)
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" +{more} more" if more else "")


def format_state(server: AppStreamServer, *, indent: str = "  ", limit: int = 4, width: int | None = None) -> str:
    """AppStream's associations per stack, one line per stack, long user lists summarised.

    Users of an authentication type other than USERPOOL are shown as ``name (TYPE)``.

    :param limit: most user names shown per stack. Default: 4.
    :param width: most characters per line, if given.
    """
    per_stack: dict[str, list[str]] = {name: [] for name in sorted(server.state.stacks())}
    for stack, user, auth in server.state.associations():
        per_stack.setdefault(stack, []).append(user if auth == "USERPOOL" else f"{user} ({auth})")
    lines = []
    for stack, users in per_stack.items():
        head = f"{indent}{stack}: {len(users)} user{'' if len(users) == 1 else 's'}"
        room = None if width is None else max(1, width - len(head) - 2)
        lines.append(f"{head}: {summarise_users(users, limit, width=room)}" if users else head)
    return "\n".join(lines)


_COLOURS = (("FAILED", "\033[31m"), ("ROLLBACK", "\033[31m"), ("IN_PROGRESS", "\033[33m"), ("COMPLETE", "\033[32m"))


def write_event(
    out: TextIO, stack_name: str, event: StackEvent, *, color: bool = False, width: int = 100, id_width: int = 30
) -> None:
    """Print one stack event the way CloudFormation's console lists it: time, logical id, status, reason.

    A short reason stays on the event's line; a longer one goes on the following lines, wrapped
    to ``width`` characters. With ``color``, statuses are coloured and the stack's own events
    (``logical_id == stack_name``) are bold.
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
    pad = " " * max(1, id_width - len(event.logical_id) + 1)
    logical_id = f"\033[1m{event.logical_id}\033[0m" if color and event.logical_id == stack_name else event.logical_id
    runs = event.attempts
    timing = f"  {sum(run.seconds for run in runs):.1f} s" if runs else ""
    timing += f" ({len(runs)} runs)" if len(runs) > 1 else ""
    plain = f"  {stamp}  {event.logical_id}{pad}{event.status}{timing}"
    status = event.status
    if color:
        tone = next((code for word, code in _COLOURS if word in status), "")
        status = f"{tone}{status}\033[0m"
    line = f"  {stamp}  {logical_id}{pad}{status}{timing}"
    if event.reason and len(plain) + 2 + len(event.reason) <= width:
        out.write(f"{line}  {event.reason}\n")
        return
    out.write(f"{line}\n")
    if event.reason:
        indent = " " * 12
        for text in textwrap.wrap(event.reason, width=max(40, width - len(indent)), break_on_hyphens=False):
            out.write(f"{indent}{text}\n")
