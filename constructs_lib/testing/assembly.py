"""Reading a synthesized cloud assembly, and resolving CloudFormation's intrinsic functions.

:func:`read_assembly` turns a cloud assembly directory (``cdk.out``, or what ``app.synth()``
returns), nested stage assemblies included, into :class:`StackTemplate` objects in the order the
manifest's stack dependencies require: every resource (:class:`ResourceDefinition`, with the
logical ids it depends on through ``Ref``, ``Fn::GetAtt``, ``Fn::Sub`` and ``DependsOn``), the
parameters, conditions, mappings and outputs. Templates are checked the way CloudFormation
validates them before it starts (unresolved dependencies, circular ones, a Lambda function whose
asset is missing) and otherwise kept as written: values are resolved later, at the moment
CloudFormation would resolve them, by a :class:`Resolver` that reads live values (physical ids,
attributes, exports) through a :class:`LiveValues`.

The resolver knows ``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``, ``Fn::Select``,
``Fn::Split``, ``Fn::If``, ``Fn::Equals``, ``Fn::And``, ``Fn::Or``, ``Fn::Not``, ``Condition``,
``Fn::ImportValue``, ``Fn::GetAZs``, ``Fn::Base64``, ``Fn::FindInMap``, ``Fn::ToJsonString``
and ``Fn::Length``, and the pseudo parameters. CDK's ``Rules`` are ignored; its
``BootstrapVersion`` parameter (``AWS::SSM::Parameter::Value<String>``) needs nothing.
Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from constructs_lib.testing.events import ACCOUNT

__all__ = [
    "PSEUDO_PARAMETERS",
    "AssemblySource",
    "CloudAssemblyLike",
    "LiveValues",
    "Pseudo",
    "RehearsalError",
    "Resolver",
    "ResourceDefinition",
    "StackTemplate",
    "inline_asset",
    "read_assembly",
    "references",
    "resolve_parameters",
]

LAMBDA_FUNCTION = "AWS::Lambda::Function"
BOOTSTRAP_VERSION = "30"
"""What an ``AWS::SSM::Parameter::Value<...>`` parameter naming CDK's bootstrap version resolves to."""

PSEUDO_PARAMETERS = frozenset(
    {
        "AWS::AccountId",
        "AWS::NotificationARNs",
        "AWS::NoValue",
        "AWS::Partition",
        "AWS::Region",
        "AWS::StackId",
        "AWS::StackName",
        "AWS::URLSuffix",
    }
)


class RehearsalError(Exception):
    """The assembly cannot be rehearsed, or a request CloudFormation would refuse (a stack in ``*_FAILED``)."""


class CloudAssemblyLike(Protocol):
    """What :func:`read_assembly` needs of ``aws_cdk.cx_api.CloudAssembly`` (``app.synth()``)."""

    @property
    def directory(self) -> str:
        """The assembly's directory."""
        ...


AssemblySource = str | os.PathLike[str] | CloudAssemblyLike
"""A cloud assembly directory, or the object ``app.synth()`` returns."""


# ---------------------------------------------------------------------------------------------
# Templates


@dataclass(frozen=True)
class ResourceDefinition:
    """One resource as the template declares it (properties unresolved)."""

    logical_id: str
    resource_type: str
    properties: Mapping[str, Any]
    dependencies: frozenset[str]
    """Logical ids of the resources it needs first: ``Ref``, ``Fn::GetAtt``, ``Fn::Sub`` and ``DependsOn``."""
    condition: str | None = None
    deletion_policy: str = "Delete"
    update_replace_policy: str = "Delete"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    asset_dir: Path | None = None
    """For a Lambda function with a file asset: its directory (inline ``ZipFile`` code: None)."""

    @property
    def is_custom(self) -> bool:
        """Whether CloudFormation hands this resource to a custom resource provider."""
        return self.resource_type.startswith("Custom::") or self.resource_type == "AWS::CloudFormation::CustomResource"


@dataclass(frozen=True)
class StackTemplate:
    """One CloudFormation stack of an assembly: its template and where it came from."""

    stack_name: str
    artifact_id: str
    directory: Path
    """The (possibly nested) assembly directory holding the template and its assets."""
    body: Mapping[str, Any]
    """The whole template, as synthesized."""
    resources: Mapping[str, ResourceDefinition]
    """In template order."""
    dependencies: tuple[str, ...] = ()
    """Artifact ids of the stacks of the same assembly that must be deployed first."""

    @property
    def parameters(self) -> Mapping[str, Mapping[str, Any]]:
        """The template's ``Parameters``."""
        return dict(self.body.get("Parameters") or {})

    @property
    def conditions(self) -> Mapping[str, Any]:
        """The template's ``Conditions``."""
        return dict(self.body.get("Conditions") or {})

    @property
    def mappings(self) -> Mapping[str, Any]:
        """The template's ``Mappings``."""
        return dict(self.body.get("Mappings") or {})

    @property
    def outputs(self) -> Mapping[str, Any]:
        """The template's ``Outputs``."""
        return dict(self.body.get("Outputs") or {})

    def of_type(self, resource_type: str) -> list[ResourceDefinition]:
        """The resources of one type, in template order."""
        return [resource for resource in self.resources.values() if resource.resource_type == resource_type]


def references(value: Any) -> set[str]:
    """Every name ``value`` refers to through ``Ref``, ``Fn::GetAtt`` and ``Fn::Sub`` (pseudo parameters too)."""
    found: set[str] = set()
    _collect(value, found)
    return found


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, list):
        for item in value:
            _collect(item, found)
        return
    if not isinstance(value, dict):
        return
    if len(value) == 1:
        key, argument = next(iter(value.items()))
        if key == "Ref" and isinstance(argument, str):
            found.add(argument)
            return
        if key == "Fn::GetAtt":
            name = argument[0] if isinstance(argument, list) and argument else str(argument).split(".", 1)[0]
            if isinstance(name, str):
                found.add(name)
            if isinstance(argument, list):
                _collect(argument[1:], found)
            return
        if key == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
            local = set(variables) if isinstance(variables, dict) else set()
            for name in _sub_names(str(text)):
                if name.split(".", 1)[0] not in local and name not in local:
                    found.add(name.split(".", 1)[0])
            _collect(variables, found)
            return
    for item in value.values():
        _collect(item, found)


_SUB = re.compile(r"\$\{([^}]*)\}")


def _sub_names(text: str) -> list[str]:
    """The ``${Name}`` / ``${Name.Attr}`` references of a ``Fn::Sub`` string (``${!Literal}`` left out)."""
    return [match.strip() for match in _SUB.findall(text) if not match.startswith("!")]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(item) for item in value]


def _read_template(directory: Path, artifact_id: str, artifact: Mapping[str, Any]) -> StackTemplate:
    properties = artifact.get("properties", {})
    stack_name = str(properties.get("stackName", artifact_id))
    path = directory / str(properties["templateFile"])
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RehearsalError(f"{stack_name}: cannot read its template {path}: {error}") from error
    declared: Mapping[str, Any] = body.get("Resources") or {}
    if not declared:
        raise RehearsalError(f"{stack_name}: Template format error: At least one Resources member must be defined.")
    names = set(declared) | set(body.get("Parameters") or {}) | PSEUDO_PARAMETERS
    resources: dict[str, ResourceDefinition] = {}
    for logical_id, resource in declared.items():
        depends = _as_list(resource.get("DependsOn"))
        referenced = references(resource.get("Properties") or {})
        unresolved = sorted((referenced - names) | (set(depends) - set(declared)))
        if unresolved:
            raise RehearsalError(
                f"{stack_name}: Template format error: Unresolved resource dependencies "
                f"[{', '.join(unresolved)}] in the Resources block of the template"
            )
        resource_type = str(resource.get("Type", ""))
        asset = None
        if resource_type == LAMBDA_FUNCTION:
            asset = _asset_dir(directory, stack_name, logical_id, resource)
        deletion = str(resource.get("DeletionPolicy", "Delete"))
        resources[logical_id] = ResourceDefinition(
            logical_id=logical_id,
            resource_type=resource_type,
            properties=dict(resource.get("Properties") or {}),
            dependencies=frozenset((referenced & set(declared)) | set(depends)),
            condition=resource.get("Condition"),
            deletion_policy=deletion,
            update_replace_policy=str(resource.get("UpdateReplacePolicy", "Delete")),
            metadata=dict(resource.get("Metadata") or {}),
            asset_dir=asset,
        )
    _check_cycles(stack_name, resources)
    return StackTemplate(stack_name, artifact_id, directory, body, resources)


def _check_cycles(stack_name: str, resources: Mapping[str, ResourceDefinition]) -> None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(logical_id: str) -> None:
        state[logical_id] = 1
        path.append(logical_id)
        for other in sorted(resources[logical_id].dependencies):
            if state.get(other) == 1:
                cycle = path[path.index(other) :]
                raise RehearsalError(f"{stack_name}: Circular dependency between resources: [{', '.join(cycle)}]")
            if other not in state:
                visit(other)
        path.pop()
        state[logical_id] = 2

    for logical_id in resources:
        if logical_id not in state:
            visit(logical_id)


def _asset_dir(directory: Path, stack_name: str, logical_id: str, function: Mapping[str, Any]) -> Path | None:
    """The directory of a Lambda function's code; None for inline ``ZipFile`` code."""
    metadata = function.get("Metadata") or {}
    if "aws:asset:path" in metadata:
        candidate = directory / str(metadata["aws:asset:path"])
        if candidate.is_dir():
            return candidate
    code = (function.get("Properties") or {}).get("Code") or {}
    if "ZipFile" in code:
        return None
    s3_key = code.get("S3Key")
    asset_hash = s3_key.removesuffix(".zip") if isinstance(s3_key, str) else None
    for manifest in sorted(directory.glob("*.assets.json")):
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
        source = files.get(asset_hash, {}).get("source", {})
        if source.get("path") and (directory / source["path"]).is_dir():
            return directory / str(source["path"])
    raise RehearsalError(
        f"{stack_name}/{logical_id}: the function's asset directory is not in {directory} "
        "(was the app synthesized with --no-staging, or the directory cleaned?)"
    )


def inline_asset(code: str) -> Path:
    """A directory holding ``index.py`` with this inline (``ZipFile``) code, as Lambda unpacks it.

    The directory is named by the code's digest, so the same code gives the same directory.
    """
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    directory = Path(tempfile.gettempdir()) / f"rehearsal-inline-{digest}"
    directory.mkdir(exist_ok=True)
    target = directory / "index.py"
    if not target.is_file() or target.read_text(encoding="utf-8") != code:
        target.write_text(code, encoding="utf-8")
    return directory


def _assembly_dir(source: AssemblySource) -> Path:
    directory = getattr(source, "directory", None)
    if isinstance(directory, str):
        return Path(directory)
    return Path(os.fspath(source))  # type: ignore[arg-type]


def _manifest_stacks(directory: Path) -> Iterator[StackTemplate]:
    """The assembly's stacks in manifest order, each after the stacks it depends on; stages where they appear."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise RehearsalError(f"{directory} is not a cloud assembly (no manifest.json): run cdk synth first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    artifacts: Mapping[str, Any] = manifest.get("artifacts", {})
    stack_ids = {key for key, artifact in artifacts.items() if artifact.get("type") == "aws:cloudformation:stack"}
    stacks: dict[str, StackTemplate] = {}
    entries: list[str | Path] = []  # a stack's artifact id, or a stage's nested assembly
    for artifact_id, artifact in artifacts.items():
        kind = artifact.get("type")
        if kind == "aws:cloudformation:stack":
            template = _read_template(directory, artifact_id, artifact)
            wanted = tuple(key for key in artifact.get("dependencies", []) if key in stack_ids)
            stacks[artifact_id] = StackTemplate(
                template.stack_name, artifact_id, directory, template.body, template.resources, wanted
            )
            entries.append(artifact_id)
        elif kind == "cdk:cloud-assembly":  # a Stage
            entries.append(directory / artifact.get("properties", {}).get("directoryName", ""))
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(key: str) -> Iterator[StackTemplate]:
        if key in done:
            return
        if key in visiting:
            raise RehearsalError(f"the stacks {sorted(visiting)} depend on each other")
        visiting.add(key)
        for other in stacks[key].dependencies:
            yield from visit(other)
        visiting.discard(key)
        done.add(key)
        yield stacks[key]

    for entry in entries:
        yield from (_manifest_stacks(entry) if isinstance(entry, Path) else visit(entry))


def read_assembly(source: AssemblySource) -> list[StackTemplate]:
    """Every stack of a cloud assembly (nested stage assemblies included), dependencies first.

    :param source: the assembly directory (``cdk.out``) or what ``app.synth()`` returns.
    :raises RehearsalError: if the directory is no assembly, a template is invalid (a
        dependency on something it does not declare, a circular dependency), or a Lambda
        function's asset is missing.
    """
    return list(_manifest_stacks(_assembly_dir(source)))


# ---------------------------------------------------------------------------------------------
# Parameters and intrinsic functions


def resolve_parameters(template: StackTemplate, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The value of each of the template's parameters: the one given, else its default.

    ``CommaDelimitedList`` and ``List<...>`` values become lists. An
    ``AWS::SSM::Parameter::Value<...>`` parameter takes the given value; without one, CDK's
    bootstrap version parameter resolves to :data:`BOOTSTRAP_VERSION`.

    :raises RehearsalError: for a parameter with neither, or a value outside ``AllowedValues``.
    """
    values: dict[str, Any] = {}
    given = given or {}
    for name, spec in template.parameters.items():
        kind = str(spec.get("Type", "String"))
        if name in given:
            value: Any = given[name]
        elif kind.startswith("AWS::SSM::Parameter::Value<") and "cdk-bootstrap" in str(spec.get("Default", "")):
            value = BOOTSTRAP_VERSION
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise RehearsalError(
                f"{template.stack_name}: Parameters: [{name}] must have values: pass it in parameters="
            )
        allowed = spec.get("AllowedValues")
        if allowed is not None and str(value) not in [str(item) for item in allowed]:
            raise RehearsalError(f"{template.stack_name}: Parameter '{name}' must be one of AllowedValues")
        if "List" in kind and isinstance(value, str):
            value = [item.strip() for item in value.split(",")] if value else []
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        values[name] = value
    return values


class LiveValues(Protocol):
    """The values a :class:`Resolver` reads from what has been deployed so far."""

    def ref(self, logical_id: str) -> Any:
        """``Ref`` of a resource: its physical id (or the value its type returns)."""
        ...

    def get_att(self, logical_id: str, attribute: str) -> Any:
        """``Fn::GetAtt`` of a resource."""
        ...

    def import_value(self, name: str) -> Any:
        """``Fn::ImportValue``: the value another stack exports under ``name``."""
        ...


@dataclass(frozen=True)
class Pseudo:
    """The pseudo parameters of one stack."""

    region: str
    stack_name: str
    stack_id: str
    account: str = ACCOUNT
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"

    def values(self) -> dict[str, Any]:
        """``AWS::Region`` and the rest, by name."""
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": self.partition,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::NotificationARNs": [],
        }


class _NoValue:
    """``Ref: AWS::NoValue``: the property or list item disappears."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()


class Resolver:
    """Resolves a stack's intrinsic functions against its parameters, conditions and live values.

    ``live`` answers ``Ref``/``Fn::GetAtt`` of resources and ``Fn::ImportValue``; without one,
    those raise :class:`RehearsalError`. Conditions are evaluated once, when first asked for.
    """

    def __init__(
        self,
        template: StackTemplate,
        *,
        pseudo: Pseudo,
        parameters: Mapping[str, Any],
        live: LiveValues | None = None,
    ) -> None:
        self.template = template
        self._pseudo = pseudo.values()
        self._region = pseudo.region
        self._parameters = dict(parameters)
        self._live = live
        self._conditions: dict[str, bool] = {}

    # -- conditions --------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        """The value of the template's condition ``name``."""
        if name not in self._conditions:
            definitions = self.template.conditions
            if name not in definitions:
                raise RehearsalError(f"{self.template.stack_name}: Template error: unresolved condition {name}")
            self._conditions[name] = bool(self._truth(definitions[name]))
        return self._conditions[name]

    def exists(self, resource: ResourceDefinition) -> bool:
        """Whether the resource is part of the stack (its ``Condition``, if any, holds)."""
        return resource.condition is None or self.condition(resource.condition)

    def _truth(self, value: Any) -> bool:
        if isinstance(value, dict) and len(value) == 1 and "Condition" in value:
            return self.condition(str(value["Condition"]))
        resolved = self.resolve(value)
        if isinstance(resolved, bool):
            return resolved
        return str(resolved).lower() == "true"

    # -- resolution ---------------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function replaced by its value (``AWS::NoValue`` items dropped)."""
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            key, argument = next(iter(value.items()))
            handler = self._functions.get(key)
            if handler is not None:
                return handler(self, argument)
            if key.startswith("Fn::"):
                raise RehearsalError(f"{key} is not supported by the rehearsal")
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _ref(self, name: Any) -> Any:
        name = str(name)
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            return self._parameters[name]
        if name in self.template.resources:
            return self._needs_live(f"Ref {name}").ref(name)
        raise RehearsalError(f"Ref to unknown {name}")

    def _get_att(self, argument: Any) -> Any:
        if isinstance(argument, list):
            name, attribute = str(argument[0]), str(self.resolve(argument[1]))
        else:
            name, _, attribute = str(argument).partition(".")
        if name not in self.template.resources:
            raise RehearsalError(f"Fn::GetAtt of unknown resource {name}")
        return self._needs_live(f"Fn::GetAtt {name}.{attribute}").get_att(name, attribute)

    def _needs_live(self, what: str) -> LiveValues:
        if self._live is None:
            raise RehearsalError(f"{what} needs the deployed resources")
        return self._live

    def _join(self, argument: Any) -> str:
        separator, parts = argument
        return str(separator).join(_text(part) for part in self.resolve(parts))

    def _split(self, argument: Any) -> list[str]:
        separator, text = argument
        return str(self.resolve(text)).split(str(separator))

    def _select(self, argument: Any) -> Any:
        index, items = argument
        values = self.resolve(items)
        position = int(self.resolve(index))
        if not isinstance(values, list) or not 0 <= position < len(values):
            raise RehearsalError(f"Fn::Select index {position} is out of range for {values!r}")
        return values[position]

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        local = self.resolve(variables) if variables else {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return _text(local[name])
            if "." in name and name.split(".", 1)[0] in self.template.resources:
                return _text(self._get_att(name))
            return _text(self._ref(name))

        return _SUB.sub(replace, str(text))

    def _if(self, argument: Any) -> Any:
        name, when_true, when_false = argument
        return self.resolve(when_true if self.condition(str(name)) else when_false)

    def _equals(self, argument: Any) -> bool:
        left, right = (self.resolve(item) for item in argument)
        return bool(_text(left) == _text(right))

    def _and(self, argument: Any) -> bool:
        return all(self._truth(item) for item in argument)

    def _or(self, argument: Any) -> bool:
        return any(self._truth(item) for item in argument)

    def _not(self, argument: Any) -> bool:
        [item] = argument
        return not self._truth(item)

    def _condition_function(self, argument: Any) -> bool:
        return self.condition(str(argument))

    def _import_value(self, argument: Any) -> Any:
        name = str(self.resolve(argument))
        return self._needs_live(f"Fn::ImportValue {name}").import_value(name)

    def _get_azs(self, argument: Any) -> list[str]:
        region = str(self.resolve(argument)) or self._region
        return [f"{region}{zone}" for zone in "abc"]

    def _base64(self, argument: Any) -> str:
        return base64.b64encode(_text(self.resolve(argument)).encode()).decode()

    def _find_in_map(self, argument: Any) -> Any:
        name, top, second, *rest = argument
        mapping = self.template.mappings.get(str(self.resolve(name)))
        try:
            return self.resolve(mapping[str(self.resolve(top))][str(self.resolve(second))])  # type: ignore[index]
        except (KeyError, TypeError) as error:
            if rest and isinstance(rest[0], dict) and "DefaultValue" in rest[0]:
                return self.resolve(rest[0]["DefaultValue"])
            raise RehearsalError(f"Fn::FindInMap {argument!r}: no such key in the template's Mappings") from error

    def _to_json_string(self, argument: Any) -> str:
        return json.dumps(self.resolve(argument), separators=(",", ":"))

    def _length(self, argument: Any) -> int:
        value = self.resolve(argument)
        return len(value) if isinstance(value, list) else 0

    _functions: Mapping[str, Any] = {
        "Ref": _ref,
        "Fn::GetAtt": _get_att,
        "Fn::Join": _join,
        "Fn::Split": _split,
        "Fn::Select": _select,
        "Fn::Sub": _sub,
        "Fn::If": _if,
        "Fn::Equals": _equals,
        "Fn::And": _and,
        "Fn::Or": _or,
        "Fn::Not": _not,
        "Condition": _condition_function,
        "Fn::ImportValue": _import_value,
        "Fn::GetAZs": _get_azs,
        "Fn::Base64": _base64,
        "Fn::FindInMap": _find_in_map,
        "Fn::ToJsonString": _to_json_string,
        "Fn::Length": _length,
    }


def _text(value: Any) -> str:
    """A resolved scalar as CloudFormation turns it into text (``true``/``false`` for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
