"""Rehearse a synthesized CDK app's AppStream associations the way CloudFormation would run them.

:class:`Rehearsal` reads a cloud assembly (``cdk.out``), finds every
``Custom::AppStreamUserStackAssociation`` and the function behind its ServiceToken, and plays
CloudFormation: it sends real custom-resource events (scalars stringified, OldResourceProperties
on update, the PhysicalResourceId returned earlier, a ResponseURL on an HTTPS server on
loopback) to the function's bundled asset, run in a separate Python process the way Lambda
runs it, against a local AppStream (:class:`~constructs_lib.testing.appstream.AppStreamServer`).
It rolls back on failure as CloudFormation does and reports what CloudFormation would show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from constructs_lib.testing.appstream import AppStreamServer
from constructs_lib.testing.cloudformation import ResponseServer, cfn_response_problems

RESOURCE_TYPE = "Custom::AppStreamUserStackAssociation"
ACCOUNT = "123456789012"
_BOOTSTRAP = Path(__file__).with_name("_bootstrap.py")
_GRACE_SECONDS = 2.0


class RehearsalError(Exception):
    """The assembly cannot be rehearsed (a missing asset, an intrinsic the runner cannot resolve)."""


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


@dataclass(frozen=True)
class AssociationResource:
    """One ``Custom::AppStreamUserStackAssociation`` with its properties resolved."""

    logical_id: str
    properties: Mapping[str, Any]
    function: FunctionSpec


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


class _Resolver:
    """Resolves the intrinsic functions CDK apps commonly put into association properties."""

    def __init__(self, template: Mapping[str, Any], stack_name: str, region: str,
                 parameters: Mapping[str, str]) -> None:
        self._resources: Mapping[str, Any] = template.get("Resources", {})
        self._parameters = {
            name: parameters.get(name, spec.get("Default"))
            for name, spec in template.get("Parameters", {}).items()
        }
        self._pseudo = {
            "AWS::Region": region, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
            "AWS::StackName": stack_name, "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": None,
        }

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
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
                return str(separator).join(str(self.resolve(part)) for part in self.resolve(parts))
            if key == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(separator)
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Sub" and isinstance(argument, str):
                return self._sub(argument)
            if key.startswith("Fn::"):
                raise RehearsalError(f"{key} is not supported by the rehearsal")
        return {key: self.resolve(item) for key, item in value.items()}

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
        ref_property = {"AWS::AppStream::Stack": "Name", "AWS::AppStream::User": "UserName",
                        "AWS::Lambda::Function": "FunctionName"}.get(resource.get("Type"))
        if ref_property and ref_property in properties:
            return self.resolve(properties[ref_property])
        return f"{name}-physical-id"

    def _get_att(self, argument: Any) -> Any:
        name, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
        resource = self._resources.get(name, {})
        if resource.get("Type") == "AWS::Lambda::Function" and attribute == "Arn":
            return f"arn:aws:lambda:{self._pseudo['AWS::Region']}:{ACCOUNT}:function:{name}"
        raise RehearsalError(f"Fn::GetAtt {name}.{attribute} is not supported by the rehearsal")

    def _sub(self, text: str) -> str:
        out, rest = [], text
        while "${" in rest:
            before, _, tail = rest.partition("${")
            name, _, rest = tail.partition("}")
            out.append(before)
            out.append(str(self._ref(name)))
        out.append(rest)
        return "".join(out)


def _asset_dir(assembly: Path, stack_artifact: str, function: Mapping[str, Any]) -> Path:
    metadata = function.get("Metadata", {})
    if "aws:asset:path" in metadata:
        candidate = assembly / metadata["aws:asset:path"]
        if candidate.is_dir():
            return candidate
    s3_key = function.get("Properties", {}).get("Code", {}).get("S3Key")
    asset_hash = s3_key.removesuffix(".zip") if isinstance(s3_key, str) else None
    for manifest in assembly.glob("*.assets.json"):
        files = json.loads(manifest.read_text()).get("files", {})
        source = files.get(asset_hash, {}).get("source", {})
        if source.get("path") and (assembly / source["path"]).is_dir():
            return assembly / source["path"]
    raise RehearsalError(f"the asset of function {stack_artifact}/{function.get('_logical_id')} is not in {assembly}")


def read_assembly(directory: str | os.PathLike[str], *, region: str = "us-east-1",
                  parameters: Mapping[str, str] | None = None) -> list[StackTemplate]:
    """Every stack of a cloud assembly directory with its association resources."""
    assembly = Path(directory)
    manifest_path = assembly / "manifest.json"
    if not manifest_path.is_file():
        raise RehearsalError(f"{assembly} is not a cloud assembly (no manifest.json): run cdk synth first")
    manifest = json.loads(manifest_path.read_text())
    stacks: list[StackTemplate] = []
    for artifact_id, artifact in sorted(manifest.get("artifacts", {}).items()):
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        stack_name = artifact.get("properties", {}).get("stackName", artifact_id)
        template = json.loads((assembly / artifact["properties"]["templateFile"]).read_text())
        resolver = _Resolver(template, stack_name, region, parameters or {})
        resources = template.get("Resources", {})
        found: list[AssociationResource] = []
        for logical_id, resource in resources.items():
            if resource.get("Type") != RESOURCE_TYPE:
                continue
            token = resource.get("Properties", {}).get("ServiceToken", {})
            function_id = token.get("Fn::GetAtt", [None])[0] if isinstance(token, dict) else None
            function = resources.get(function_id or "", {})
            if function.get("Type") != "AWS::Lambda::Function":
                raise RehearsalError(f"{stack_name}/{logical_id}: ServiceToken is not a function of this stack")
            fn_props = function.get("Properties", {})
            spec = FunctionSpec(
                logical_id=str(function_id),
                asset_dir=_asset_dir(assembly, artifact_id, {**function, "_logical_id": function_id}),
                handler=str(fn_props.get("Handler", "index.handler")),
                timeout=float(fn_props.get("Timeout", 3)),
                memory_mb=int(fn_props.get("MemorySize", 128)),
                environment={k: str(resolver.resolve(v))
                             for k, v in fn_props.get("Environment", {}).get("Variables", {}).items()},
            )
            found.append(AssociationResource(logical_id, stringify(resolver.resolve(resource["Properties"])), spec))
        stacks.append(StackTemplate(stack_name, tuple(found)))
    return stacks


# ---------------------------------------------------------------------------------------------
# Running the function


@dataclass(frozen=True)
class Invocation:
    """One event sent to the function and what came back."""

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
        return "function timed out without answering" if self.timed_out else "function did not answer"

    @property
    def physical_resource_id(self) -> str:
        """The PhysicalResourceId of the response."""
        return str(self.response.get("PhysicalResourceId", "")) if self.response else ""


class LambdaProcess:
    """Runs a function's asset in a fresh Python process per event, as Lambda runs it."""

    def __init__(self, appstream: AppStreamServer, responses: ResponseServer, *,
                 python: str = sys.executable, region: str = "us-east-1") -> None:
        self._appstream = appstream
        self._responses = responses
        self._python = python
        self._region = region

    def environment(self, function: FunctionSpec) -> dict[str, str]:
        """The process environment: Lambda's variables, fake credentials, the local endpoints."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "AWS_REGION": self._region,
            "AWS_DEFAULT_REGION": self._region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - a fake credential for a local endpoint
            "AWS_SESSION_TOKEN": "testing",  # noqa: S105
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_APPSTREAM": self._appstream.endpoint_url,
            "SSL_CERT_FILE": self._responses.ca_bundle_path,
            "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(function.timeout)),
            "LAMBDA_TASK_ROOT": str(function.asset_dir),
            **function.environment,
        }

    def invoke(self, function: FunctionSpec, event: dict[str, Any], *, timeout: float | None = None) -> Invocation:
        """Send ``event`` (its ResponseURL is filled in here) and collect the answer."""
        url = self._responses.new_response_url(str(event.get("LogicalResourceId", "response")))
        event = {**event, "ResponseURL": url}
        limit = function.timeout if timeout is None else timeout
        request = {"asset_dir": str(function.asset_dir), "handler": function.handler, "timeout": limit,
                   "memory_mb": function.memory_mb, "function_name": function.logical_id, "event": event}
        started = time.monotonic()
        timed_out, exit_code, output = False, None, ""
        try:
            completed = subprocess.run(  # noqa: S603 - our own interpreter and bootstrap
                [self._python, "-I", "-c", _BOOTSTRAP.read_text()], input=json.dumps(request), text=True,
                capture_output=True, timeout=limit + _GRACE_SECONDS, env=self.environment(function),
                cwd=function.asset_dir, check=False,
            )
            exit_code, output = completed.returncode, completed.stdout + completed.stderr
        except subprocess.TimeoutExpired as expired:
            timed_out = True
            output = _text(expired.stdout) + _text(expired.stderr)
        seconds = time.monotonic() - started
        timings: dict[str, float] = {}
        lines = []
        for line in output.splitlines():
            if line.startswith("REHEARSAL-TIMINGS "):
                timings = json.loads(line.removeprefix("REHEARSAL-TIMINGS "))
            else:
                lines.append(line)
        attempts = self._responses.attempts(url)
        bodies = tuple(self._responses.responses(url))
        problems = tuple(problem for attempt in attempts if attempt.accepted for problem in attempt.problems)
        return Invocation(str(event.get("RequestType")), str(event.get("LogicalResourceId")), event, bodies,
                          problems, "\n".join(lines), exit_code, timed_out, seconds, timings)


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


@dataclass
class StackEvent:
    """One line of what CloudFormation's console would show."""

    logical_id: str
    status: str
    reason: str = ""
    invocation: Invocation | None = None


@dataclass
class StackOperation:
    """The outcome of one deploy or destroy of a stack."""

    stack_name: str
    status: str
    events: list[StackEvent] = field(default_factory=list)

    @property
    def invocations(self) -> list[Invocation]:
        """Every event the function received, in order."""
        return [event.invocation for event in self.events if event.invocation is not None]


class Rehearsal:
    """A small CloudFormation for association resources: deploy, update, roll back, destroy.

    ``report`` receives each :class:`StackEvent` as it happens (the demo prints them).
    """

    def __init__(self, appstream: AppStreamServer, responses: ResponseServer, *,
                 python: str = sys.executable, region: str = "us-east-1",
                 report: Callable[[str, StackEvent], None] | None = None) -> None:
        self.appstream = appstream
        self.responses = responses
        self.region = region
        self.process = LambdaProcess(appstream, responses, python=python, region=region)
        self._report = report or (lambda stack, event: None)
        self._stacks: dict[str, tuple[str, dict[str, _Deployed]]] = {}

    def deployed(self, stack_name: str) -> Mapping[str, str]:
        """Logical id to physical id of a deployed stack's association resources."""
        return {logical: item.physical_id for logical, item in self._stacks.get(stack_name, ("", {}))[1].items()}

    def deploy(self, assembly_dir: str | os.PathLike[str], *, stack_name: str | None = None,
               parameters: Mapping[str, str] | None = None) -> list[StackOperation]:
        """Create or update every stack of the assembly (``stack_name`` renames a lone stack)."""
        templates = read_assembly(assembly_dir, region=self.region, parameters=parameters)
        if stack_name is not None and len(templates) != 1:
            raise RehearsalError("stack_name= needs an assembly with exactly one stack")
        operations = []
        for template in templates:
            name = stack_name or template.stack_name
            if name in self._stacks:
                operations.append(self._update(name, template))
            else:
                operations.append(self._create(name, template))
        return operations

    def destroy(self, stack_name: str) -> StackOperation:
        """Delete a deployed stack's association resources, last created first."""
        stack_id, resources = self._stacks[stack_name]
        operation = StackOperation(stack_name, "DELETE_COMPLETE")
        for logical_id in reversed(list(resources)):
            event = self._send(operation, stack_id, "Delete", logical_id, resources[logical_id].function,
                               resources[logical_id].properties, physical_id=resources[logical_id].physical_id)
            if event.status == "DELETE_FAILED":
                operation.status = "DELETE_FAILED"
        if operation.status == "DELETE_COMPLETE":
            del self._stacks[stack_name]
        return operation

    # -- internals -------------------------------------------------------------------------------

    def _stack_id(self, stack_name: str) -> str:
        return f"arn:aws:cloudformation:{self.region}:{ACCOUNT}:stack/{stack_name}/{uuid.uuid4()}"

    def _event(self, stack_id: str, request_type: str, logical_id: str, function: FunctionSpec,
               properties: Mapping[str, Any], *, physical_id: str | None = None,
               old_properties: Mapping[str, Any] | None = None) -> dict[str, Any]:
        token = f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{function.logical_id}"
        event: dict[str, Any] = {
            "RequestType": request_type, "ServiceToken": token, "StackId": stack_id,
            "RequestId": str(uuid.uuid4()), "LogicalResourceId": logical_id, "ResourceType": RESOURCE_TYPE,
            "ResourceProperties": {**properties, "ServiceToken": token},
        }
        if physical_id is not None:
            event["PhysicalResourceId"] = physical_id
        if old_properties is not None:
            event["OldResourceProperties"] = {**old_properties, "ServiceToken": token}
        return event

    def _send(self, operation: StackOperation, stack_id: str, request_type: str, logical_id: str,
              function: FunctionSpec, properties: Mapping[str, Any], *, physical_id: str | None = None,
              old_properties: Mapping[str, Any] | None = None) -> StackEvent:
        verb = {"Create": "CREATE", "Update": "UPDATE", "Delete": "DELETE"}[request_type]
        self._report(operation.stack_name, StackEvent(logical_id, f"{verb}_IN_PROGRESS"))
        event = self._event(stack_id, request_type, logical_id, function, properties,
                            physical_id=physical_id, old_properties=old_properties)
        invocation = self.process.invoke(function, event)
        ok = invocation.status == "SUCCESS" and not invocation.response_problems
        reason = "" if ok else _why(invocation)
        result = StackEvent(logical_id, f"{verb}_{'COMPLETE' if ok else 'FAILED'}", reason, invocation)
        operation.events.append(result)
        self._report(operation.stack_name, result)
        return result

    def _create(self, stack_name: str, template: StackTemplate) -> StackOperation:
        stack_id = self._stack_id(stack_name)
        operation = StackOperation(stack_name, "CREATE_COMPLETE")
        created: dict[str, _Deployed] = {}
        failed: tuple[str, _Deployed] | None = None
        for resource in template.associations:
            event = self._send(operation, stack_id, "Create", resource.logical_id, resource.function,
                               resource.properties)
            deployed = _Deployed(event.invocation.physical_resource_id if event.invocation else "",
                                 resource.properties, resource.function)
            if event.status != "CREATE_COMPLETE":
                failed = (resource.logical_id, deployed)
                break
            created[resource.logical_id] = deployed
        if failed is None:
            self._stacks[stack_name] = (stack_id, created)
            return operation
        # Roll back: delete the failed resource (with the id its FAILED answer carried) and the rest.
        operation.status = "ROLLBACK_COMPLETE"
        for logical_id, item in [failed, *reversed(list(created.items()))]:
            event = self._send(operation, stack_id, "Delete", logical_id, item.function, item.properties,
                               physical_id=item.physical_id or f"{logical_id}-never-created")
            if event.status != "DELETE_COMPLETE":
                operation.status = "ROLLBACK_FAILED"
        return operation

    def _update(self, stack_name: str, template: StackTemplate) -> StackOperation:
        stack_id, current = self._stacks[stack_name]
        operation = StackOperation(stack_name, "UPDATE_COMPLETE")
        wanted = {resource.logical_id: resource for resource in template.associations}
        done: list[tuple[str, str]] = []  # (logical id, "Create" | "Update") in order, for rollback
        replaced: list[tuple[str, _Deployed]] = []
        new_state = dict(current)
        failed = False
        for logical_id, resource in wanted.items():
            before = current.get(logical_id)
            if before is not None and before.properties == resource.properties:
                continue
            if before is None:
                event = self._send(operation, stack_id, "Create", logical_id, resource.function, resource.properties)
                kind = "Create"
            else:
                event = self._send(operation, stack_id, "Update", logical_id, resource.function,
                                   resource.properties, physical_id=before.physical_id,
                                   old_properties=before.properties)
                kind = "Update"
            done.append((logical_id, kind))
            new_id = event.invocation.physical_resource_id if event.invocation else ""
            if not event.status.endswith("_COMPLETE"):
                failed = True
                if kind == "Create":
                    new_state[logical_id] = _Deployed(new_id, resource.properties, resource.function)
                break
            if before is not None and new_id != before.physical_id:
                replaced.append((logical_id, before))
            new_state[logical_id] = _Deployed(new_id, resource.properties, resource.function)
        if failed:
            operation.status = "UPDATE_ROLLBACK_COMPLETE"
            for logical_id, kind in reversed(done):
                item = new_state[logical_id]
                if kind == "Create":
                    event = self._send(operation, stack_id, "Delete", logical_id, item.function, item.properties,
                                       physical_id=item.physical_id or f"{logical_id}-never-created")
                else:
                    old = current[logical_id]
                    event = self._send(operation, stack_id, "Update", logical_id, old.function, old.properties,
                                       physical_id=old.physical_id, old_properties=wanted[logical_id].properties)
                if not event.status.endswith("_COMPLETE"):
                    operation.status = "UPDATE_ROLLBACK_FAILED"
            return operation
        # Cleanup phase: resources no longer in the template, and replaced physical ids.
        removed = [(logical_id, current[logical_id]) for logical_id in current if logical_id not in wanted]
        for logical_id, item in [*replaced, *removed]:
            self._send(operation, stack_id, "Delete", logical_id, item.function, item.properties,
                       physical_id=item.physical_id)
            if logical_id not in wanted:
                new_state.pop(logical_id, None)
        self._stacks[stack_name] = (stack_id, {k: v for k, v in new_state.items() if k in wanted})
        return operation


def _why(invocation: Invocation) -> str:
    if invocation.response_problems:
        return "invalid response: " + "; ".join(invocation.response_problems)
    if len(invocation.responses) > 1:
        return f"{len(invocation.responses)} responses for one request"
    return invocation.reason


def summarise_users(users: Iterable[str], limit: int = 4) -> str:
    """``a, b, c +N more`` for long user lists."""
    names = sorted(users)
    shown = ", ".join(names[:limit])
    return f"{shown} +{len(names) - limit} more" if len(names) > limit else shown or "(none)"


def format_state(server: AppStreamServer, *, indent: str = "  ") -> str:
    """AppStream's associations per stack, one line per stack, long user lists summarised."""
    per_stack: dict[str, list[str]] = {name: [] for name in sorted(server.state.stacks())}
    for association in server.state.associations():
        per_stack.setdefault(association[0], []).append(association[1])
    lines = [f"{indent}{stack}: {len(users)} user(s): {summarise_users(users)}" for stack, users in per_stack.items()]
    return "\n".join(lines)


def write_event(out: TextIO, stack_name: str, event: StackEvent, *, color: bool = False) -> None:
    """Print one stack event the way CloudFormation's console lists it."""
    colours = {"COMPLETE": "\033[32m", "FAILED": "\033[31m", "IN_PROGRESS": "\033[33m"}
    status = event.status
    if color:
        tone = next((code for suffix, code in colours.items() if status.endswith(suffix)), "")
        status = f"{tone}{status}\033[0m"
    timing = f" ({event.invocation.seconds:.1f} s)" if event.invocation else ""
    reason = f"  {event.reason}" if event.reason else ""
    out.write(f"  {stack_name:<32} {event.logical_id:<28} {status}{timing}{reason}\n")
