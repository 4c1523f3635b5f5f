"""The rehearsal plays CloudFormation's order of events: updates, replacements, rollbacks, cleanup.

Hand-written assemblies (a manifest, a template, an asset of a few lines) hold custom resources
backed by an echo function that answers over HTTPS as told by its properties: ``Id`` is the
physical id to return, ``FailOn`` the request type to fail. Which events reach the function,
in which order and with which ids, is then CloudFormation's part, played by the rehearsal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from constructs_lib.testing import AppStreamServer, Rehearsal, RehearsalError, ResponseServer, StackOperation

ECHO = """
import http.client, json, ssl, urllib.parse

def handler(event, context):
    props = event["ResourceProperties"]
    failing = props.get("FailOn") == event["RequestType"]
    if event["RequestType"] == "Delete":
        physical_id = event["PhysicalResourceId"]
    else:
        physical_id = props.get("Id") or event.get("PhysicalResourceId") or event["LogicalResourceId"] + "-1"
    body = json.dumps({
        "Status": "FAILED" if failing else "SUCCESS", "Reason": "told to fail" if failing else "",
        "PhysicalResourceId": physical_id, "StackId": event["StackId"], "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"], "Data": {},
    })
    url = urllib.parse.urlsplit(event["ResponseURL"])
    connection = http.client.HTTPSConnection(url.netloc, context=ssl.create_default_context(), timeout=5)
    connection.request("PUT", f"{url.path}?{url.query}", body=body, headers={"content-type": ""})
    connection.getresponse().read()
"""


def write_assembly(directory: Path, resources: Mapping[str, Mapping[str, Any]]) -> Path:
    """A one-stack assembly ``Echo`` whose custom resources (properties, DependsOn) are given."""
    asset = directory / "asset.echo"
    asset.mkdir(parents=True)
    (asset / "echo.py").write_text(ECHO, encoding="utf-8")
    template: dict[str, Any] = {
        "Resources": {
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {"Handler": "echo.handler", "Timeout": 10, "Runtime": "python3.14"},
                "Metadata": {"aws:asset:path": "asset.echo"},
            }
        }
    }
    for logical_id, spec in resources.items():
        properties = {"ServiceToken": {"Fn::GetAtt": ["Fn", "Arn"]}, **spec.get("Properties", {})}
        resource: dict[str, Any] = {"Type": "Custom::AppStreamUserStackAssociation", "Properties": properties}
        if "DependsOn" in spec:
            resource["DependsOn"] = spec["DependsOn"]
        template["Resources"][logical_id] = resource
    (directory / "Echo.template.json").write_text(json.dumps(template), encoding="utf-8")
    manifest = {
        "version": "48.0.0",
        "artifacts": {
            "Echo": {"type": "aws:cloudformation:stack", "properties": {"templateFile": "Echo.template.json"}}
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory


@pytest.fixture
def rehearsal(appstream: AppStreamServer, cfn: ResponseServer) -> Rehearsal:
    return Rehearsal(appstream, cfn)


@pytest.fixture
def version(tmp_path: Path) -> Any:
    """``version(resources)`` writes the next version of the app's assembly."""
    count = iter(range(100))

    def make(resources: Mapping[str, Mapping[str, Any]]) -> Path:
        return write_assembly(tmp_path / f"v{next(count)}", resources)

    return make


def calls(operation: StackOperation) -> list[tuple[str, str, str | None]]:
    """(RequestType, LogicalResourceId, PhysicalResourceId sent) of every event the function got."""
    return [
        (str(i.event["RequestType"]), str(i.event["LogicalResourceId"]), i.event.get("PhysicalResourceId"))
        for i in operation.invocations
    ]


def stack_statuses(operation: StackOperation) -> list[str]:
    return [event.status for event in operation.events if event.logical_id == operation.stack_name]


def test_resources_are_created_after_what_they_depend_on_and_deleted_in_reverse(
    rehearsal: Rehearsal, version: Any
) -> None:
    app = version({"B": {"DependsOn": ["C"]}, "A": {}, "C": {"DependsOn": "A"}})
    [created] = rehearsal.deploy(app)
    assert calls(created) == [("Create", "A", None), ("Create", "C", None), ("Create", "B", None)]
    deleted = rehearsal.destroy("Echo")
    assert calls(deleted) == [("Delete", "B", "B-1"), ("Delete", "C", "C-1"), ("Delete", "A", "A-1")]
    assert rehearsal.status("Echo") is None


def test_a_failed_create_rolls_back_every_resource_with_the_ids_they_answered(
    rehearsal: Rehearsal, version: Any
) -> None:
    app = version({"A": {}, "B": {"Properties": {"FailOn": "Create", "Id": "b-failed"}}, "C": {}})
    [operation] = rehearsal.deploy(app)
    assert calls(operation) == [
        ("Create", "A", None),
        ("Create", "B", None),
        ("Delete", "B", "b-failed"),
        ("Delete", "A", "A-1"),
    ]
    assert stack_statuses(operation) == ["CREATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE"]
    assert rehearsal.status("Echo") == "ROLLBACK_COMPLETE"
    # Deploying again deletes the rolled-back stack first, as cdk deploy does.
    [again] = rehearsal.deploy(version({"A": {}}))
    assert stack_statuses(again) == ["DELETE_IN_PROGRESS", "DELETE_COMPLETE", "CREATE_IN_PROGRESS", "CREATE_COMPLETE"]
    assert calls(again) == [("Create", "A", None)]


def test_an_update_goes_only_to_changed_resources_and_unchanged_apps_get_no_events(
    rehearsal: Rehearsal, version: Any
) -> None:
    rehearsal.deploy(version({"A": {"Properties": {"Users": ["x"]}}, "B": {"Properties": {"Users": ["y"]}}}))
    [updated] = rehearsal.deploy(
        version({"A": {"Properties": {"Users": ["x"]}}, "B": {"Properties": {"Users": ["z", 1]}}})
    )
    [update] = updated.invocations
    assert (update.event["RequestType"], update.event["LogicalResourceId"]) == ("Update", "B")
    assert update.event["OldResourceProperties"]["Users"] == ["y"]
    assert update.event["ResourceProperties"]["Users"] == ["z", "1"]  # scalars in lists are strings too
    assert stack_statuses(updated) == ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_COMPLETE"]
    [unchanged] = rehearsal.deploy(
        version({"A": {"Properties": {"Users": ["x"]}}, "B": {"Properties": {"Users": ["z", 1]}}})
    )
    assert (unchanged.status, unchanged.events) == ("UPDATE_COMPLETE", [])


def test_a_new_physical_id_is_a_replacement_whose_old_id_is_deleted_in_the_cleanup(
    rehearsal: Rehearsal, version: Any
) -> None:
    rehearsal.deploy(version({"A": {"Properties": {"Id": "first"}}, "Gone": {}}))
    [operation] = rehearsal.deploy(version({"A": {"Properties": {"Id": "second"}}}))
    assert calls(operation) == [("Update", "A", "first"), ("Delete", "A", "first"), ("Delete", "Gone", "Gone-1")]
    assert rehearsal.deployed("Echo") == {"A": "second"}


def test_a_failed_update_is_rolled_back_with_old_and_new_properties_swapped(rehearsal: Rehearsal, version: Any) -> None:
    rehearsal.deploy(version({"A": {"Properties": {"Users": ["a"]}}, "B": {"Properties": {"Users": ["b"]}}}))
    [operation] = rehearsal.deploy(
        version({
            "A": {"Properties": {"Users": ["a2"]}},
            "B": {"Properties": {"Users": ["b2"], "FailOn": "Update"}},
            "New": {},
        })
    )  # fmt: skip
    assert calls(operation) == [
        ("Update", "A", "A-1"),
        ("Update", "B", "B-1"),
        ("Update", "B", "B-1"),
        ("Update", "A", "A-1"),
    ]
    rollback_a = operation.invocations[-1].event
    assert rollback_a["ResourceProperties"]["Users"] == ["a"]
    assert rollback_a["OldResourceProperties"]["Users"] == ["a2"]
    assert stack_statuses(operation) == [
        "UPDATE_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE",
    ]
    assert rehearsal.deployed("Echo") == {"A": "A-1", "B": "B-1"}


def test_a_resource_created_by_a_failed_update_is_deleted_in_the_rollback_cleanup(
    rehearsal: Rehearsal, version: Any
) -> None:
    rehearsal.deploy(version({"A": {}}))
    [operation] = rehearsal.deploy(version({"A": {}, "New": {"Properties": {"FailOn": "Create", "Id": "new-x"}}}))
    assert calls(operation) == [("Create", "New", None), ("Delete", "New", "new-x")]
    assert operation.status == "UPDATE_ROLLBACK_COMPLETE"


def test_a_failed_delete_leaves_the_stack_in_delete_failed_and_a_retry_deletes_the_rest(
    rehearsal: Rehearsal, version: Any
) -> None:
    rehearsal.deploy(version({"A": {}, "B": {"Properties": {"FailOn": "Delete"}}}))
    failed = rehearsal.destroy("Echo")
    assert failed.status == "DELETE_FAILED"
    assert calls(failed) == [("Delete", "B", "B-1"), ("Delete", "A", "A-1")]
    assert failed.events[-1].reason == "The following resource(s) failed to delete: ['B']."
    with pytest.raises(RehearsalError, match="DELETE_FAILED state and can not be updated"):
        rehearsal.deploy(version({"A": {}}))
    assert calls(rehearsal.destroy("Echo")) == [("Delete", "B", "B-1")]


def test_unsupported_intrinsics_and_missing_assets_are_named(tmp_path: Path, rehearsal: Rehearsal) -> None:
    app = write_assembly(tmp_path / "imports", {"A": {"Properties": {"StackName": {"Fn::ImportValue": "x"}}}})
    with pytest.raises(RehearsalError, match=r"Fn::ImportValue is not supported"):
        rehearsal.deploy(app)
    with pytest.raises(RehearsalError, match=r"no manifest.json.*run cdk synth first"):
        rehearsal.deploy(tmp_path / "nothing")
