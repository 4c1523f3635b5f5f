"""Reading a synthesized cloud assembly (``cdk.out``) without aws-cdk-lib or the testing kit.

A cloud assembly is a directory with a ``manifest.json`` whose ``artifacts`` name, among other
things, CloudFormation stacks (``aws:cloudformation:stack``: a template file, the stack's name and
environment) and nested assemblies (``cdk:cloud-assembly``: one per ``Stage``, in a
sub-directory). :func:`read_assembly` returns every stack of the assembly and of its nested ones.

:class:`Resolver` evaluates the intrinsic functions CDK puts into an association's properties
(``Ref`` of a parameter, of a pseudo parameter or of a resource, ``Fn::Join``, ``Fn::Sub``,
``Fn::Select``, ``Fn::Split``, ``Fn::FindInMap``, ``Fn::ImportValue`` of another stack of the
assembly); what it cannot know before the deployment (``Fn::GetAtt``, a resource not deployed
yet, an SSM parameter, a condition) raises :class:`Unresolved` naming it, rather than guessing.

Standard library only.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESOURCE_TYPE = "Custom::AppStreamUserStackAssociation"
"""The association resource's type (``appstream_handler.rules.RESOURCE_TYPE``)."""
DEPLOYMENT_RESOURCE_TYPE = "Custom::AppStreamUserStackAssociationDeployment"
PROVIDER_ID = "AppStreamUserStackAssociationProvider"
"""Construct id of the per-stack provider (``constructs_lib._provider.PROVIDER_ID``)."""
STATE_TABLE_PREFIX = f"{PROVIDER_ID}State"
"""How the logical id of the provider's own state table begins."""
STATE_TABLE_VARIABLE = "STATE_TABLE"
TABLE_TYPE = "AWS::DynamoDB::Table"
APPSTREAM_STACK_TYPE = "AWS::AppStream::Stack"
_UNKNOWN = ("unknown-account", "unknown-region")


class AssemblyError(Exception):
    """The assembly cannot be read; the message says what to do."""


class Unresolved(Exception):
    """A value known only once CloudFormation deploys the stack (or not at all from here)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


@dataclass(frozen=True)
class StackArtifact:
    """One CloudFormation stack of the assembly."""

    artifact_id: str
    stack_name: str
    """The name CloudFormation knows it by (``stackName``, else the artifact id)."""
    display_name: str
    """The construct path of the stack, e.g. ``Prod/Workspaces``."""
    account: str | None
    region: str | None
    """None when the stack is environment-agnostic (the caller's region applies)."""
    template: Mapping[str, Any]

    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        """The template's resources by logical id."""
        resources = self.template.get("Resources") or {}
        return resources if isinstance(resources, Mapping) else {}

    def associations(self) -> list[DeclaredResource]:
        """The association resources, in template order."""
        found = []
        for logical_id, resource in self.resources().items():
            if isinstance(resource, Mapping) and resource.get("Type") == RESOURCE_TYPE:
                properties = resource.get("Properties") or {}
                metadata = resource.get("Metadata") or {}
                path = properties.get("ConstructPath") if isinstance(properties, Mapping) else None
                if not isinstance(path, str):
                    cdk_path = metadata.get("aws:cdk:path") if isinstance(metadata, Mapping) else None
                    path = cdk_path.removesuffix("/Default") if isinstance(cdk_path, str) else ""
                found.append(
                    DeclaredResource(
                        logical_id=logical_id,
                        properties=properties if isinstance(properties, Mapping) else {},
                        path=path,
                        function=_function_of(properties),
                        condition=str(resource.get("Condition") or ""),
                    )
                )
        return found

    def state_table_reference(self) -> Any:
        """The ``STATE_TABLE`` variable of the function behind the associations (raw), or None."""
        resources = self.resources()
        functions = [item.function for item in self.associations() if item.function]
        for logical_id in dict.fromkeys(functions):
            function = resources.get(logical_id) or {}
            variables = (((function.get("Properties") or {}).get("Environment") or {}).get("Variables")) or {}
            if STATE_TABLE_VARIABLE in variables:
                return variables[STATE_TABLE_VARIABLE]
        return None

    def exported(self, export_name: str) -> Any:
        """The value (raw) of the output exported as ``export_name``, or None."""
        outputs = self.template.get("Outputs") or {}
        for output in outputs.values() if isinstance(outputs, Mapping) else ():
            export = (output or {}).get("Export") or {}
            if isinstance(export, Mapping) and export.get("Name") == export_name:
                return output.get("Value")
        return None


@dataclass(frozen=True)
class DeclaredResource:
    """One association resource of a template."""

    logical_id: str
    properties: Mapping[str, Any]
    """As synthesized (intrinsics unresolved)."""
    path: str
    """The construct path (``ConstructPath``, else the ``aws:cdk:path`` metadata)."""
    function: str = ""
    """Logical id of the function behind the ServiceToken."""
    condition: str = ""


def _function_of(properties: Any) -> str:
    token = properties.get("ServiceToken") if isinstance(properties, Mapping) else None
    if isinstance(token, Mapping):
        attribute = token.get("Fn::GetAtt")
        if isinstance(attribute, list) and attribute:
            return str(attribute[0])
    return ""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssemblyError(f"{path} is missing: synthesize the app first (cdk synth)") from None
    except (OSError, ValueError) as error:
        raise AssemblyError(f"{path} cannot be read ({error}): synthesize the app again (cdk synth)") from None


def _environment(value: object) -> tuple[str | None, str | None]:
    """(account, region) of ``aws://<account>/<region>``; None for CDK's ``unknown-*``."""
    if not isinstance(value, str) or not value.startswith("aws://"):
        return None, None
    account, _, region = value.removeprefix("aws://").partition("/")
    return (None if account in _UNKNOWN else account or None), (None if region in _UNKNOWN else region or None)


def read_assembly(directory: Path) -> list[StackArtifact]:
    """Every stack of the assembly in ``directory`` and of its nested assemblies (stages)."""
    if not directory.is_dir():
        raise AssemblyError(
            f"no cloud assembly at {directory}: run `cdk synth` first, or pass --app with the cdk.out directory"
        )
    stacks: list[StackArtifact] = []
    _read(directory, stacks, seen=set())
    return stacks


def _read(directory: Path, stacks: list[StackArtifact], seen: set[Path]) -> None:
    resolved = directory.resolve()
    if resolved in seen:
        return
    seen.add(resolved)
    manifest = _load_json(directory / "manifest.json")
    artifacts = manifest.get("artifacts") if isinstance(manifest, Mapping) else None
    if not isinstance(artifacts, Mapping):
        raise AssemblyError(f"{directory / 'manifest.json'} lists no artifacts: synthesize the app again")
    for artifact_id, artifact in artifacts.items():
        if not isinstance(artifact, Mapping):
            continue
        kind = artifact.get("type")
        properties = artifact.get("properties") or {}
        if kind == "aws:cloudformation:stack":
            template_file = properties.get("templateFile")
            if not isinstance(template_file, str):
                raise AssemblyError(f"stack {artifact_id} of {directory} has no template file")
            template = _load_json(directory / template_file)
            account, region = _environment(artifact.get("environment"))
            stacks.append(
                StackArtifact(
                    artifact_id=str(artifact_id),
                    stack_name=str(properties.get("stackName") or artifact_id),
                    display_name=str(artifact.get("displayName") or artifact_id),
                    account=account,
                    region=region,
                    template=template if isinstance(template, Mapping) else {},
                )
            )
        elif kind == "cdk:cloud-assembly":
            nested = properties.get("directoryName")
            if isinstance(nested, str):
                _read(directory / nested, stacks, seen)


def select(stacks: Sequence[StackArtifact], patterns: Sequence[str]) -> list[StackArtifact]:
    """The stacks whose name, display name or artifact id matches one of ``patterns`` (globs); all if none.

    :raises AssemblyError: a pattern matches no stack.
    """
    if not patterns:
        return list(stacks)
    chosen: dict[str, StackArtifact] = {}
    for pattern in patterns:
        matched = [
            stack
            for stack in stacks
            if any(
                fnmatch.fnmatchcase(name, pattern) for name in (stack.stack_name, stack.display_name, stack.artifact_id)
            )
        ]
        if not matched:
            known = ", ".join(stack.display_name for stack in stacks) or "none"
            raise AssemblyError(f"no stack of the assembly matches {pattern!r} (stacks: {known})")
        for stack in matched:
            chosen.setdefault(stack.artifact_id, stack)
    return [stack for stack in stacks if stack.artifact_id in chosen]


# -- intrinsic functions --------------------------------------------------------------------------

_NO_VALUE = object()
LIST_PARAMETER_TYPES = ("CommaDelimitedList", "List<")


def describe(value: Any, limit: int = 60) -> str:
    """A short JSON rendering of an intrinsic, for messages."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Resolver:
    """Evaluates a template's intrinsic functions as CloudFormation would for the next deployment.

    ``physical_id`` gives the physical id of a deployed resource of this stack (None: not
    deployed); ``imported`` the value of another stack's export. ``parameters`` are the values
    the deployment will use (given ones, else the deployed stack's, else the defaults).
    """

    template: Mapping[str, Any]
    stack_name: str
    region: str | None = None
    account: str | None = None
    stack_id: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    physical_id: Callable[[str], str | None] = lambda _: None
    imported: Callable[[str], str | None] = lambda _: None

    @property
    def partition(self) -> str:
        region = self.region or ""
        if region.startswith("cn-"):
            return "aws-cn"
        if region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic evaluated; raises :class:`Unresolved`."""
        result = self._resolve(value)
        if result is _NO_VALUE:
            return None
        return result

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self._resolve(item) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            (key, argument), *_ = value.items()
            if key == "Ref":
                return self.ref(str(argument))
            if key.startswith("Fn::"):
                return self._function(key, argument)
        resolved = {key: self._resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def _function(self, name: str, argument: Any) -> Any:
        if name == "Fn::Join" and isinstance(argument, list) and len(argument) == 2:
            delimiter, items = self._resolve(argument[0]), self._resolve(argument[1])
            if isinstance(items, list):
                return str(delimiter).join(self._text(item) for item in items)
        if name == "Fn::Select" and isinstance(argument, list) and len(argument) == 2:
            index, items = self._resolve(argument[0]), self._resolve(argument[1])
            if isinstance(items, list) and str(index).isdigit() and int(str(index)) < len(items):
                return items[int(str(index))]
        if name == "Fn::Split" and isinstance(argument, list) and len(argument) == 2:
            delimiter, text = self._resolve(argument[0]), self._resolve(argument[1])
            return self._text(text).split(str(delimiter))
        if name == "Fn::Sub":
            return self._sub(argument)
        if name == "Fn::FindInMap" and isinstance(argument, list) and len(argument) == 3:
            keys = [self._text(self._resolve(item)) for item in argument]
            mappings = self.template.get("Mappings") or {}
            try:
                return mappings[keys[0]][keys[1]][keys[2]]
            except (KeyError, TypeError):
                raise Unresolved(f"Fn::FindInMap {describe(keys)} (no such mapping entry)") from None
        if name == "Fn::ImportValue":
            export = self._text(self._resolve(argument))
            found = self.imported(export)
            if found is None:
                raise Unresolved(f"Fn::ImportValue {export!r} (not exported by a deployed stack of this assembly)")
            return found
        if name == "Fn::GetAtt":
            raise Unresolved(f"Fn::GetAtt {describe(argument)} (known only after the deployment)")
        raise Unresolved(f"{name} {describe(argument)}")

    def _text(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        raise Unresolved(f"{describe(value)} is not a string")

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], Mapping):
            text, variables = argument[0], {key: self._resolve(item) for key, item in argument[1].items()}
        else:
            text, variables = argument, {}
        if not isinstance(text, str):
            raise Unresolved(f"Fn::Sub {describe(argument)}")
        out: list[str] = []
        index = 0
        while index < len(text):
            start = text.find("${", index)
            if start < 0:
                out.append(text[index:])
                break
            out.append(text[index:start])
            end = text.find("}", start)
            if end < 0:
                raise Unresolved(f"Fn::Sub {text!r} (unclosed ${{)")
            name = text[start + 2 : end]
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in variables:
                out.append(self._text(variables[name]))
            elif "." in name:
                raise Unresolved(f"Fn::Sub ${{{name}}} (an attribute, known only after the deployment)")
            else:
                out.append(self._text(self.ref(name)))
            index = end + 1
        return "".join(out)

    def ref(self, name: str) -> Any:
        """What ``Ref`` of ``name`` gives in the next deployment."""
        pseudo = self._pseudo(name)
        if pseudo is not None:
            return pseudo
        parameters = self.template.get("Parameters") or {}
        if name in parameters:
            return self._parameter(name, parameters[name] or {})
        resource = (self.template.get("Resources") or {}).get(name)
        if resource is None:
            raise Unresolved(f"Ref {name} (neither a parameter nor a resource of the template)")
        if resource.get("Type") == APPSTREAM_STACK_TYPE:
            # Ref of an AppStream stack is its name: the template's, which the deployment will give it.
            declared = (resource.get("Properties") or {}).get("Name")
            if declared is not None:
                return self._text(self._resolve(declared))
        found = self.physical_id(name)
        if found:
            return found
        raise Unresolved(f"Ref {name} ({resource.get('Type')}, not deployed yet: its id is known only after)")

    def _pseudo(self, name: str) -> Any:
        if not name.startswith("AWS::"):
            return None
        values: dict[str, Any] = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::StackId": self.stack_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com",
            "AWS::NoValue": _NO_VALUE,
        }
        if name not in values:
            raise Unresolved(f"Ref {name}")
        if values[name] is None:
            raise Unresolved(f"Ref {name} (not known here: pass --region, or deploy the stack first)")
        return values[name]

    def _parameter(self, name: str, declaration: Mapping[str, Any]) -> Any:
        kind = str(declaration.get("Type", "String"))
        if name in self.parameters:
            value: str | None = self.parameters[name]
        elif "Default" in declaration:
            value = str(declaration["Default"])
        else:
            value = None
        if kind.startswith("AWS::SSM::Parameter::Value"):
            raise Unresolved(f"Ref {name} (an SSM parameter, read by CloudFormation at deployment)")
        if value is None:
            raise Unresolved(f"Ref {name} (a parameter without a value: pass --parameter {name}=VALUE)")
        if kind.startswith(LIST_PARAMETER_TYPES):
            return [item.strip() for item in value.split(",")] if value else []
        return value


def exported_by(stacks: Iterable[StackArtifact], export_name: str) -> tuple[StackArtifact, Any] | None:
    """The stack of the assembly that exports ``export_name``, and the export's raw value."""
    for stack in stacks:
        value = stack.exported(export_name)
        if value is not None:
            return stack, value
    return None
