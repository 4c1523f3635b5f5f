"""Reading cloud assemblies and resolving intrinsic functions, without running anything."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from constructs_lib.testing.assembly import (
    Pseudo,
    RehearsalError,
    Resolver,
    StackTemplate,
    inline_asset,
    read_assembly,
    references,
    resolve_parameters,
)

PSEUDO = Pseudo(
    region="eu-west-1", stack_name="Main", stack_id="arn:aws:cloudformation:eu-west-1:123456789012:stack/Main/1"
)


class Live:
    """Deployed values: physical ids ``<id>-id``, attributes ``<id>.<attr>``, one export."""

    def ref(self, logical_id: str) -> Any:
        return f"{logical_id}-id"

    def get_att(self, logical_id: str, attribute: str) -> Any:
        return f"{logical_id}.{attribute}"

    def import_value(self, name: str) -> Any:
        if name != "shared":
            raise RehearsalError(f"No export named {name} found.")
        return "imported"


def write_stack(
    directory: Path, name: str, template: Mapping[str, Any], dependencies: list[str] | None = None
) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.template.json").write_text(json.dumps(template), encoding="utf-8")
    return {
        "type": "aws:cloudformation:stack",
        "properties": {"templateFile": f"{name}.template.json"},
        "dependencies": [*(dependencies or []), f"{name}.assets"],
    }


def write_manifest(directory: Path, artifacts: Mapping[str, Any]) -> Path:
    (directory / "manifest.json").write_text(
        json.dumps({"version": "48.0.0", "artifacts": artifacts}), encoding="utf-8"
    )
    return directory


def template_of(resources: Mapping[str, Any], tmp_path: Path, **body: Any) -> StackTemplate:
    artifacts = {"Main": write_stack(tmp_path, "Main", {"Resources": dict(resources), **body})}
    [template] = read_assembly(write_manifest(tmp_path, artifacts))
    return template


def resolver(template: StackTemplate, **parameters: Any) -> Resolver:
    return Resolver(template, pseudo=PSEUDO, parameters=resolve_parameters(template, parameters), live=Live())


TOPIC = {"Type": "AWS::SNS::Topic", "Properties": {}}


def test_references_follow_ref_getatt_and_sub_but_not_sub_variables_or_literals() -> None:
    value = {
        "A": {"Ref": "Alpha"},
        "B": {"Fn::GetAtt": ["Beta", "Arn"]},
        "C": {"Fn::GetAtt": "Gamma.Arn"},
        "D": {"Fn::Sub": "${Delta}-${Epsilon.Name}-${!Literal}-${AWS::Region}"},
        "E": {"Fn::Sub": ["${Local}-${Zeta}", {"Local": {"Ref": "Eta"}}]},
        "F": [{"Fn::If": ["Cond", {"Ref": "Theta"}, {"Ref": "Iota"}]}],
    }
    assert references(value) == {
        "Alpha",
        "Beta",
        "Gamma",
        "Delta",
        "Epsilon",
        "AWS::Region",
        "Zeta",
        "Eta",
        "Theta",
        "Iota",
    }


def test_every_intrinsic_resolves_against_parameters_pseudo_parameters_and_live_values(tmp_path: Path) -> None:
    template = template_of(
        {"Res": TOPIC},
        tmp_path,
        Parameters={
            "Size": {"Type": "Number", "Default": 3},
            "Names": {"Type": "CommaDelimitedList", "Default": "a,b"},
        },
        Mappings={"Map": {"eu-west-1": {"Ami": "ami-1"}}},
        Conditions={"Big": {"Fn::Equals": [{"Ref": "Size"}, "3"]}, "Small": {"Fn::Not": [{"Condition": "Big"}]}},
    )
    resolve = resolver(template).resolve
    assert resolve({"Ref": "Res"}) == "Res-id"
    assert resolve({"Fn::GetAtt": ["Res", "TopicName"]}) == "Res.TopicName"
    assert resolve({"Fn::Sub": "${Res}/${Res.Arn}/${AWS::StackName}/${!Raw}"}) == "Res-id/Res.Arn/Main/${Raw}"
    assert resolve({"Fn::Sub": ["${X}!", {"X": {"Ref": "Size"}}]}) == "3!"
    assert resolve({"Fn::Join": [":", ["a", {"Ref": "AWS::AccountId"}, True]]}) == "a:123456789012:true"
    assert resolve({"Fn::Select": [1, {"Ref": "Names"}]}) == "b"
    assert resolve({"Fn::Split": ["/", "x/y"]}) == ["x", "y"]
    assert resolve({"Fn::If": ["Big", "big", "small"]}) == "big"
    assert resolve({"Fn::If": ["Small", "big", "small"]}) == "small"
    assert resolve({"Fn::And": [{"Condition": "Big"}, {"Fn::Or": [{"Condition": "Small"}, True]}]}) is True
    assert resolve({"Fn::ImportValue": "shared"}) == "imported"
    assert resolve({"Fn::GetAZs": ""}) == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    assert resolve({"Fn::Base64": "hello"}) == "aGVsbG8="
    assert resolve({"Fn::FindInMap": ["Map", {"Ref": "AWS::Region"}, "Ami"]}) == "ami-1"
    assert resolve({"Fn::FindInMap": ["Map", "us-east-1", "Ami", {"DefaultValue": "none"}]}) == "none"
    assert resolve({"Fn::ToJsonString": {"a": [1, {"Ref": "Size"}]}}) == '{"a":[1,"3"]}'
    assert resolve({"Fn::Length": {"Ref": "Names"}}) == 2
    assert resolve({"Keep": 1, "Drop": {"Ref": "AWS::NoValue"}, "List": ["a", {"Ref": "AWS::NoValue"}]}) == {
        "Keep": 1,
        "List": ["a"],
    }
    with pytest.raises(RehearsalError, match="No export named other found"):
        resolve({"Fn::ImportValue": "other"})
    with pytest.raises(RehearsalError, match="Fn::Cidr is not supported"):
        resolve({"Fn::Cidr": ["10.0.0.0/16", 2, 8]})
    with pytest.raises(RehearsalError, match="Ref to unknown Nope"):
        resolve({"Ref": "Nope"})
    with pytest.raises(RehearsalError, match="out of range"):
        resolve({"Fn::Select": [5, ["a"]]})


def test_resource_conditions_decide_what_the_stack_holds(tmp_path: Path) -> None:
    template = template_of(
        {"Always": TOPIC, "OnlyProd": {**TOPIC, "Condition": "Prod"}},
        tmp_path,
        Parameters={"Env": {"Type": "String", "Default": "dev", "AllowedValues": ["dev", "prod"]}},
        Conditions={"Prod": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}},
    )
    exists = {name: resolver(template).exists(resource) for name, resource in template.resources.items()}
    assert exists == {"Always": True, "OnlyProd": False}
    assert resolver(template, Env="prod").exists(template.resources["OnlyProd"])


def test_parameters_take_overrides_defaults_and_cdk_s_bootstrap_version(tmp_path: Path) -> None:
    template = template_of(
        {"Res": TOPIC},
        tmp_path,
        Parameters={
            "Plain": {"Type": "String", "Default": "d"},
            "Count": {"Type": "Number", "Default": 2},
            "List": {"Type": "List<Number>", "Default": "1, 2"},
            "BootstrapVersion": {
                "Type": "AWS::SSM::Parameter::Value<String>",
                "Default": "/cdk-bootstrap/hnb659fds/version",
            },
            "Choice": {"Type": "String", "Default": "a", "AllowedValues": ["a", "b"]},
        },
        Rules={"Check": {"Assertions": [{"Assert": {"Fn::Contains": [["x"], "y"]}}]}},  # ignored
    )
    assert resolve_parameters(template, {"Plain": "given"}) == {
        "Plain": "given",
        "Count": "2",
        "List": ["1", "2"],
        "BootstrapVersion": "30",
        "Choice": "a",
    }
    with pytest.raises(RehearsalError, match="Parameter 'Choice' must be one of AllowedValues"):
        resolve_parameters(template, {"Choice": "c"})
    required = template_of({"Res": TOPIC}, tmp_path / "required", Parameters={"Needed": {"Type": "String"}})
    with pytest.raises(RehearsalError, match=r"Parameters: \[Needed\] must have values"):
        resolve_parameters(required)


def test_stacks_come_in_the_manifest_s_dependency_order_nested_stages_included(tmp_path: Path) -> None:
    stage = tmp_path / "assembly-Prod"
    write_manifest(stage, {"ProdApp": write_stack(stage, "ProdApp", {"Resources": {"T": TOPIC}})})
    artifacts = {
        "App": write_stack(tmp_path, "App", {"Resources": {"T": TOPIC}}, dependencies=["Base"]),
        "Base": write_stack(tmp_path, "Base", {"Resources": {"T": TOPIC}}),
        "Prod": {"type": "cdk:cloud-assembly", "properties": {"directoryName": "assembly-Prod"}},
    }
    templates = read_assembly(write_manifest(tmp_path, artifacts))
    assert [(template.stack_name, template.dependencies) for template in templates] == [
        ("Base", ()),
        ("App", ("Base",)),
        ("ProdApp", ()),
    ]
    assert templates[2].directory == stage


def test_dependencies_are_refs_getatts_subs_and_depends_on_between_resources(tmp_path: Path) -> None:
    template = template_of(
        {
            "A": TOPIC,
            "B": {"Type": "AWS::SNS::Topic", "Properties": {"X": {"Fn::Sub": "${A.TopicName}"}}, "DependsOn": "C"},
            "C": {"Type": "AWS::SNS::Topic", "Properties": {"Y": {"Ref": "AWS::Region"}}},
        },
        tmp_path,
    )
    assert {key: set(resource.dependencies) for key, resource in template.resources.items()} == {
        "A": set(),
        "B": {"A", "C"},
        "C": set(),
    }


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            {"A": {"Type": "AWS::SNS::Topic", "Properties": {"X": {"Ref": "Missing"}}}},
            r"Unresolved resource dependencies \[Missing\]",
        ),
        ({"A": {**TOPIC, "DependsOn": ["Nowhere"]}}, r"Unresolved resource dependencies \[Nowhere\]"),
        (
            {
                "A": {**TOPIC, "DependsOn": "B"},
                "B": {"Type": "AWS::SNS::Topic", "Properties": {"X": {"Fn::GetAtt": ["A", "Arn"]}}},
            },
            r"Circular dependency between resources: \[A, B\]",
        ),
        ({}, "At least one Resources member must be defined"),
        (
            {"Fn": {"Type": "AWS::Lambda::Function", "Properties": {"Code": {"S3Key": "nothing.zip"}}}},
            "the function's asset directory is not in",
        ),
    ],
)
def test_templates_cloudformation_would_reject_are_refused_before_anything_runs(
    tmp_path: Path, resources: Mapping[str, Any], message: str
) -> None:
    with pytest.raises(RehearsalError, match=message):
        template_of(resources, tmp_path)


def test_function_assets_are_found_by_metadata_or_asset_manifest_and_inline_code_is_unpacked(tmp_path: Path) -> None:
    (tmp_path / "asset.abc").mkdir(parents=True)
    (tmp_path / "Main.assets.json").write_text(
        json.dumps({"files": {"abc": {"source": {"path": "asset.abc", "packaging": "zip"}}}}), encoding="utf-8"
    )
    template = template_of(
        {
            "ByMetadata": {
                "Type": "AWS::Lambda::Function",
                "Properties": {},
                "Metadata": {"aws:asset:path": "asset.abc"},
            },
            "ByManifest": {"Type": "AWS::Lambda::Function", "Properties": {"Code": {"S3Key": "abc.zip"}}},
            "Inline": {"Type": "AWS::Lambda::Function", "Properties": {"Code": {"ZipFile": "def handler(e, c): pass"}}},
        },
        tmp_path,
    )
    assert template.resources["ByMetadata"].asset_dir == tmp_path / "asset.abc"
    assert template.resources["ByManifest"].asset_dir == tmp_path / "asset.abc"
    assert template.resources["Inline"].asset_dir is None
    unpacked = inline_asset("def handler(e, c): pass")
    assert (unpacked / "index.py").read_text(encoding="utf-8") == "def handler(e, c): pass"
    assert inline_asset("def handler(e, c): pass") == unpacked
