"""Hand-written assemblies for testing the rehearsal itself, independent of the product's handler.

A template holds a Lambda function ``Fn`` whose asset is :data:`RECORDER` and custom resources
(``Custom::Recorder``) backed by it, next to whatever other resources a test declares. For each
event the recorder appends a line to a JSON-lines file: the event's ids and properties, what the
CloudFormation API says of the stack and the resource at that moment, the run's application id
and which version of the code ran; then it does what its ``Behave`` property says for the
event's request type (AppStream calls, a DynamoDB item, waiting for another resource's status,
sleeping, raising, not answering) and answers as told (SUCCESS/FAILED, a physical id, Data).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECORDER = '''
"""Records each event and what CloudFormation says at that moment; answers what its properties say."""
import http.client, json, os, pathlib, ssl, time, urllib.parse

import boto3

CODE = os.environ.get("CODE", "v1")


def record(**entry):
    with open(os.environ["RECORDER_LOG"], "a", encoding="utf-8") as stream:
        stream.write(json.dumps(entry) + "\\n")


def observe(cfn, event):
    seen = {}
    try:
        stack = cfn.describe_stacks(StackName=event["StackId"])["Stacks"][0]
        seen["StackStatus"] = stack["StackStatus"]
        seen["LastUpdated"] = "LastUpdatedTime" in stack
        seen["OperationId"] = (stack.get("LastOperations") or [{}])[0].get("OperationId")
        detail = cfn.describe_stack_resource(StackName=event["StackId"], LogicalResourceId=event["LogicalResourceId"])
        seen["ResourceStatus"] = detail["StackResourceDetail"]["ResourceStatus"]
        resources = cfn.describe_stack_resources(StackName=event["StackId"])["StackResources"]
        busy = [r["LogicalResourceId"] for r in resources if r["ResourceStatus"].endswith("_IN_PROGRESS")]
        seen["InProgress"] = sorted(busy)
    except Exception as error:
        seen["error"] = repr(error)
    return seen


def wait_for(cfn, event, spec):
    deadline = time.monotonic() + float(spec.get("Seconds", "5"))
    while time.monotonic() < deadline:
        try:
            detail = cfn.describe_stack_resource(StackName=event["StackId"], LogicalResourceId=spec["Resource"])
            if detail["StackResourceDetail"]["ResourceStatus"] == spec["Status"]:
                return True
        except Exception:
            pass
        time.sleep(0.05)
    return False


def answer(event, plan):
    failing = plan.get("Status") == "FAILED"
    physical = plan.get("Id") or event.get("PhysicalResourceId") or event["LogicalResourceId"] + "-1"
    body = json.dumps({
        "Status": "FAILED" if failing else "SUCCESS", "Reason": plan.get("Reason", "told to fail") if failing else "",
        "PhysicalResourceId": physical, "StackId": event["StackId"], "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"], "Data": plan.get("Data", {}),
    })
    url = urllib.parse.urlsplit(event["ResponseURL"])
    connection = http.client.HTTPSConnection(url.netloc, context=ssl.create_default_context(), timeout=5)
    connection.request("PUT", f"{url.path}?{url.query}", body=body, headers={"content-type": ""})
    connection.getresponse().read()
    return physical


def handler(event, context):
    request = event["RequestType"]
    props = event["ResourceProperties"]
    plan = (props.get("Behave") or {}).get(request) or {}
    cfn = boto3.client("cloudformation")
    base = {"RequestType": request, "LogicalResourceId": event["LogicalResourceId"], "RequestId": event["RequestId"],
            "ResponseURL": event["ResponseURL"], "PhysicalResourceId": event.get("PhysicalResourceId"),
            "StackId": event["StackId"], "app_id": os.environ.get("AWS_SDK_UA_APP_ID"), "code": CODE}
    record(phase="start", Properties=props, OldProperties=event.get("OldResourceProperties"),
           seen=observe(cfn, event), **base)
    if "WaitFor" in plan:
        record(phase="waited", saw=wait_for(cfn, event, plan["WaitFor"]), **base)
    errors = []
    if plan.get("Associate"):
        appstream = boto3.client("appstream")
        for user in plan["Associate"]:
            result = appstream.batch_associate_user_stack(
                UserStackAssociations=[{"StackName": plan["Stack"], "UserName": user, "AuthenticationType": "USERPOOL"}]
            )
            errors += [item["ErrorCode"] for item in result.get("errors", [])]
        record(phase="associated", errors=errors, **base)
    if plan.get("PutItem"):
        boto3.client("dynamodb").put_item(TableName=os.environ["TABLE"], Item={"pk": {"S": plan["PutItem"]}})
    if plan.get("RaiseOnce"):
        marker = pathlib.Path(plan["RaiseOnce"])
        if not marker.exists():
            marker.write_text("raised")
            raise RuntimeError("the first run fails")
    if plan.get("Raise"):
        raise RuntimeError(plan["Raise"])
    time.sleep(float(plan.get("Sleep", "0")))
    if plan.get("NoAnswer") == "true":
        record(phase="silent", errors=errors, **base)
        return
    physical = answer(event, plan)
    record(phase="answered", answered=physical, errors=errors, seen=observe(cfn, event), **base)
'''


def custom(behave: Mapping[str, Any] | None = None, **properties: Any) -> dict[str, Any]:
    """A ``Custom::Recorder`` resource; ``behave`` maps request types to what to do (see :data:`RECORDER`)."""
    body: dict[str, Any] = {"ServiceToken": {"Fn::GetAtt": ["Fn", "Arn"]}, **properties}
    if behave is not None:
        body["Behave"] = dict(behave)
    return {"Type": "Custom::Recorder", "Properties": body}


def with_(resource: Mapping[str, Any], **attributes: Any) -> dict[str, Any]:
    """``resource`` with resource attributes added (``DependsOn``, ``DeletionPolicy``, ``Condition``, ...)."""
    return {**resource, **attributes}


def _after_invoke_config(resource: Mapping[str, Any]) -> dict[str, Any]:
    if resource.get("Type") != "Custom::Recorder":
        return dict(resource)
    depends = resource.get("DependsOn", [])
    depends = [depends] if isinstance(depends, str) else list(depends)
    return {**resource, "DependsOn": [*depends, "FnInvokeConfig"]}


class App:
    """Writes versions of a hand-written app (one or more stacks) under ``root``; reads the recorder's log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "recorder.jsonl"
        self._count = 0
        root.mkdir(parents=True, exist_ok=True)
        self.log.touch()

    def function(
        self,
        *,
        code: str = "v1",
        retries: int | None = 0,
        timeout: int = 10,
        environment: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The resources of the recorder function: ``Fn`` and, unless ``retries`` is None, its EventInvokeConfig."""
        variables = {"RECORDER_LOG": str(self.log), "CODE": code, **(environment or {})}
        resources: dict[str, Any] = {
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Handler": "recorder.handler",
                    "Runtime": "python3.12",
                    "Timeout": timeout,
                    "MemorySize": 128,
                    "Code": {"S3Bucket": "assets", "S3Key": f"recorder-{code}.zip"},
                    "Environment": {"Variables": variables},
                },
                "Metadata": {"aws:asset:path": "asset.recorder"},
            }
        }
        if retries is not None:
            resources["FnInvokeConfig"] = {
                "Type": "AWS::Lambda::EventInvokeConfig",
                "Properties": {"FunctionName": {"Ref": "Fn"}, "Qualifier": "$LATEST", "MaximumRetryAttempts": retries},
            }
        return resources

    def version(
        self,
        stacks: Mapping[str, Mapping[str, Any]],
        *,
        dependencies: Mapping[str, list[str]] | None = None,
        function: Mapping[str, Any] | None = None,
    ) -> Path:
        """The next version of the app: an assembly with one template per stack (``{"Resources": ...}``, ...).

        Every stack gets the recorder function (``function``: options of :meth:`function`)
        unless its template declares ``Fn`` itself.
        """
        self._count += 1
        directory = self.root / f"v{self._count}"
        (directory / "asset.recorder").mkdir(parents=True)
        (directory / "asset.recorder" / "recorder.py").write_text(RECORDER, encoding="utf-8")
        artifacts: dict[str, Any] = {}
        for name, template in stacks.items():
            body = dict(template)
            resources = dict(body.get("Resources", {}))
            if "Fn" not in resources:
                resources = {**self.function(**(function or {})), **resources}
            if "FnInvokeConfig" in resources:  # as the construct does: no event before the retry settings
                resources = {key: _after_invoke_config(value) for key, value in resources.items()}
            body["Resources"] = resources
            (directory / f"{name}.template.json").write_text(json.dumps(body), encoding="utf-8")
            artifacts[name] = {
                "type": "aws:cloudformation:stack",
                "properties": {"templateFile": f"{name}.template.json"},
                "dependencies": list((dependencies or {}).get(name, [])),
            }
        (directory / "manifest.json").write_text(json.dumps({"version": "48.0.0", "artifacts": artifacts}))
        return directory

    def one(self, resources: Mapping[str, Any], **template: Any) -> Path:
        """The next version of a one-stack app ``Echo``."""
        return self.version({"Echo": {"Resources": dict(resources), **template}})

    def records(self, phase: str | None = "start") -> list[dict[str, Any]]:
        """The recorder's entries so far (only those of ``phase``, if given), oldest first."""
        entries = [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line]
        return [entry for entry in entries if phase is None or entry["phase"] == phase]

    def calls(self) -> list[tuple[str, str, str | None]]:
        """(RequestType, LogicalResourceId, PhysicalResourceId sent) of every event the recorder got."""
        return [(e["RequestType"], e["LogicalResourceId"], e["PhysicalResourceId"]) for e in self.records()]

    def clear(self) -> None:
        """Forget the entries so far."""
        self.log.write_text("", encoding="utf-8")

    def remove(self) -> None:
        """Delete every version written."""
        shutil.rmtree(self.root, ignore_errors=True)
