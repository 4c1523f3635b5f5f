"""The local CloudFormation read API, driven only through real boto3 clients.

botocore serializes every request with the real CloudFormation model (AWS Query) and parses
every answer with its own XML parser, so these tests pin the server to the wire contract a
function meets on AWS. Registry states are built by hand with :class:`StackRegistry`'s methods,
the way the rehearsal's engine writes them.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from constructs_lib.testing.cloudformation_api import (
    DESCRIBE_STACK_EVENTS,
    DESCRIBE_STACKS,
    XML_NAMESPACE,
    CloudFormationApi,
)
from constructs_lib.testing.stack_registry import StackRegistry

REPO_ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "123456789012"
T0 = 1_700_000_000.25  # exact in milliseconds, so the wire format loses nothing


def stack_id(name: str, suffix: str = "1") -> str:
    """A CloudFormation stack id (ARN)."""
    return f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/{name}/4f1a2b3c-0000-4000-8000-00000000000{suffix}"


def at(seconds: float) -> datetime:
    """The datetime botocore parses from the wire for ``seconds``."""
    return datetime.fromtimestamp(seconds, UTC)


class Clock:
    """A settable clock for the registry: timestamps are exact and known."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


CLOCK = Clock()


@pytest.fixture(scope="module")
def api() -> Iterator[CloudFormationApi]:
    """One server for the module; ``registry`` empties it for each test."""
    with CloudFormationApi(StackRegistry(clock=CLOCK), clock=CLOCK) as server:
        yield server


@pytest.fixture
def registry(api: CloudFormationApi) -> Iterator[StackRegistry]:
    """The served registry, empty, with no faults, no call log and the default page size."""
    api.registry.forget()
    api.faults.clear()
    api.reset_calls()
    api.page_size = 100
    CLOCK.now = T0
    yield api.registry
    api.faults.clear()


def make_client(api: CloudFormationApi, *, attempts: int = 4, read_timeout: float = 5.0, **config: Any) -> Any:
    """An unmodified CloudFormation client on the server, botocore's standard retry mode."""
    return boto3.client(
        "cloudformation",
        region_name="us-east-1",
        endpoint_url=api.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=2,
            read_timeout=read_timeout,
            **config,
        ),
    )


@pytest.fixture(scope="module")
def cfn(api: CloudFormationApi) -> Any:
    """One client for the module (botocore clients are thread-safe and reusable)."""
    return make_client(api)


def deployed(registry: StackRegistry, name: str = "Main", suffix: str = "1") -> str:
    """A stack created with a table and a custom resource; returns its id."""
    sid = stack_id(name, suffix)
    registry.create_stack(sid, name, operation_id="op-create")
    CLOCK.tick()
    registry.set_resource(sid, "StateTable", "AWS::DynamoDB::Table", "CREATE_IN_PROGRESS")
    CLOCK.tick()
    registry.set_resource(sid, "StateTable", "AWS::DynamoDB::Table", "CREATE_COMPLETE", physical_id=f"{name}-State")
    CLOCK.tick()
    registry.set_resource(
        sid, "Analysts", "Custom::AppStreamUserStackAssociation", "CREATE_COMPLETE", physical_id=f"{name}-analysts"
    )
    CLOCK.tick()
    registry.set_stack_status(sid, "CREATE_COMPLETE")
    return sid


def error_of(raised: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a ClientError."""
    response: Any = raised.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


# --------------------------------------------------------------------------- DescribeStacks


def test_describe_stacks_by_name_and_by_id_gives_every_member_botocore_parses(
    registry: StackRegistry, cfn: Any
) -> None:
    sid = deployed(registry)
    by_name = cfn.describe_stacks(StackName="Main")["Stacks"]
    by_id = cfn.describe_stacks(StackName=sid)["Stacks"]
    assert by_name == by_id
    [stack] = by_name
    assert stack == {
        "StackId": sid,
        "StackName": "Main",
        "CreationTime": at(T0),
        "RollbackConfiguration": {},
        "StackStatus": "CREATE_COMPLETE",
        "DisableRollback": False,
        "NotificationARNs": [],
        "Tags": [],
        "EnableTerminationProtection": False,
        "DriftInformation": {"StackDriftStatus": "NOT_CHECKED"},
        "LastOperations": [{"OperationType": "CREATE_STACK", "OperationId": "op-create"}],
    }


def test_describe_stacks_answers_from_the_registry_at_the_moment_of_the_request(
    registry: StackRegistry, cfn: Any
) -> None:
    sid = deployed(registry)
    updated_at = CLOCK.tick(10)
    operation = registry.begin_operation(sid, "UPDATE_STACK", "UPDATE_IN_PROGRESS")
    [stack] = cfn.describe_stacks(StackName=sid)["Stacks"]
    assert stack["StackStatus"] == "UPDATE_IN_PROGRESS"
    assert stack["LastUpdatedTime"] == at(updated_at)
    assert stack["LastOperations"] == [{"OperationType": "UPDATE_STACK", "OperationId": operation}]

    CLOCK.tick()
    registry.set_stack_status(sid, "UPDATE_ROLLBACK_IN_PROGRESS", "Resource Analysts failed")
    [stack] = cfn.describe_stacks(StackName=sid)["Stacks"]
    assert (stack["StackStatus"], stack["StackStatusReason"]) == (
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "Resource Analysts failed",
    )


def test_a_deleted_stack_is_found_by_id_but_not_by_name(registry: StackRegistry, cfn: Any) -> None:
    sid = deployed(registry)
    registry.begin_operation(sid, "DELETE_STACK", "DELETE_IN_PROGRESS")
    deleted_at = CLOCK.tick()
    registry.set_stack_status(sid, "DELETE_COMPLETE")

    [stack] = cfn.describe_stacks(StackName=sid)["Stacks"]
    assert stack["StackStatus"] == "DELETE_COMPLETE"
    assert stack["DeletionTime"] == at(deleted_at)
    assert stack["LastOperations"][0]["OperationType"] == "DELETE_STACK"
    with pytest.raises(ClientError) as raised:
        cfn.describe_stacks(StackName="Main")
    assert error_of(raised) == ("ValidationError", "Stack with id Main does not exist", 400)

    # A new stack of the same name is the one the name finds; the old id still finds the old one.
    new_id = deployed(registry, suffix="2")
    assert cfn.describe_stacks(StackName="Main")["Stacks"][0]["StackId"] == new_id
    assert cfn.describe_stacks(StackName=sid)["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE"


def test_an_unknown_stack_is_a_validation_error_in_cloudformations_words(registry: StackRegistry, cfn: Any) -> None:
    with pytest.raises(ClientError) as raised:
        cfn.describe_stacks(StackName="Nowhere")
    assert error_of(raised) == ("ValidationError", "Stack with id Nowhere does not exist", 400)
    response: Any = raised.value.response
    assert response["Error"]["Type"] == "Sender"


def test_describe_stacks_without_a_name_pages_through_the_live_stacks(
    api: CloudFormationApi, registry: StackRegistry, cfn: Any
) -> None:
    ids = [deployed(registry, f"Stack{n}", str(n)) for n in range(7)]
    registry.set_stack_status(ids[2], "DELETE_COMPLETE")
    api.page_size = 2

    pages = list(cfn.get_paginator("describe_stacks").paginate())
    listed = [stack["StackId"] for page in pages for stack in page["Stacks"]]
    assert listed == [sid for n, sid in enumerate(ids) if n != 2]
    assert [len(page["Stacks"]) for page in pages] == [2, 2, 2]
    assert "NextToken" not in pages[-1]

    # A stack deleted between pages does not break the token it ended.
    first = cfn.describe_stacks()
    registry.set_stack_status(first["Stacks"][-1]["StackId"], "DELETE_COMPLETE")
    rest = cfn.describe_stacks(NextToken=first["NextToken"])["Stacks"]
    assert [stack["StackId"] for stack in rest] == [ids[3], ids[4]]


def test_a_foreign_or_garbled_next_token_is_a_validation_error(
    api: CloudFormationApi, registry: StackRegistry, cfn: Any
) -> None:
    sid = deployed(registry)
    api.page_size = 1
    events_token = cfn.describe_stack_events(StackName=sid)["NextToken"]
    for token in ("not-a-token", events_token):
        with pytest.raises(ClientError) as raised:
            cfn.describe_stacks(NextToken=token)
        assert error_of(raised) == ("ValidationError", "Invalid NextToken", 400)


# --------------------------------------------------------------------------- resources


def test_describe_stack_resource_gives_the_resource_detail(registry: StackRegistry, cfn: Any) -> None:
    sid = deployed(registry)
    detail = cfn.describe_stack_resource(StackName=sid, LogicalResourceId="StateTable")["StackResourceDetail"]
    assert detail == {
        "StackName": "Main",
        "StackId": sid,
        "LogicalResourceId": "StateTable",
        "PhysicalResourceId": "Main-State",
        "ResourceType": "AWS::DynamoDB::Table",
        "LastUpdatedTimestamp": at(T0 + 2),
        "ResourceStatus": "CREATE_COMPLETE",
        "DriftInformation": {"StackResourceDriftStatus": "NOT_CHECKED"},
    }

    CLOCK.tick()
    registry.set_resource(sid, "Analysts", "Custom::AppStreamUserStackAssociation", "UPDATE_FAILED", reason="boom")
    by_name = cfn.describe_stack_resource(StackName="Main", LogicalResourceId="Analysts")["StackResourceDetail"]
    assert (by_name["ResourceStatus"], by_name["ResourceStatusReason"], by_name["PhysicalResourceId"]) == (
        "UPDATE_FAILED",
        "boom",
        "Main-analysts",
    )


def test_a_resource_without_a_physical_id_yet_has_none(registry: StackRegistry, cfn: Any) -> None:
    sid = stack_id("Main")
    registry.create_stack(sid, "Main")
    registry.set_resource(sid, "StateTable", "AWS::DynamoDB::Table", "CREATE_IN_PROGRESS")
    detail = cfn.describe_stack_resource(StackName=sid, LogicalResourceId="StateTable")["StackResourceDetail"]
    assert detail["ResourceStatus"] == "CREATE_IN_PROGRESS"
    assert "PhysicalResourceId" not in detail


def test_describe_stack_resource_errors(registry: StackRegistry, cfn: Any) -> None:
    sid = deployed(registry)
    with pytest.raises(ClientError) as raised:
        cfn.describe_stack_resource(StackName=sid, LogicalResourceId="Nothing")
    assert error_of(raised) == ("ValidationError", "Resource Nothing does not exist for stack Main", 400)
    with pytest.raises(ClientError) as raised:
        cfn.describe_stack_resource(StackName="Nowhere", LogicalResourceId="StateTable")
    assert error_of(raised) == ("ValidationError", "Stack with id Nowhere does not exist", 400)


def test_describe_stack_resources_by_stack_logical_id_or_physical_id(registry: StackRegistry, cfn: Any) -> None:
    sid = deployed(registry)
    deployed(registry, "Other", "2")

    every = cfn.describe_stack_resources(StackName="Main")["StackResources"]
    assert [(r["LogicalResourceId"], r["PhysicalResourceId"]) for r in every] == [
        ("Analysts", "Main-analysts"),
        ("StateTable", "Main-State"),
    ]
    assert every[1] == {
        "StackName": "Main",
        "StackId": sid,
        "LogicalResourceId": "StateTable",
        "PhysicalResourceId": "Main-State",
        "ResourceType": "AWS::DynamoDB::Table",
        "Timestamp": at(T0 + 2),
        "ResourceStatus": "CREATE_COMPLETE",
        "DriftInformation": {"StackResourceDriftStatus": "NOT_CHECKED"},
    }
    one = cfn.describe_stack_resources(StackName=sid, LogicalResourceId="Analysts")["StackResources"]
    assert [r["LogicalResourceId"] for r in one] == ["Analysts"]

    # A physical id alone finds its stack and lists that stack's resources.
    owner = cfn.describe_stack_resources(PhysicalResourceId="Other-State")["StackResources"]
    assert {r["StackName"] for r in owner} == {"Other"}
    assert len(owner) == 2
    both = cfn.describe_stack_resources(StackName="Main", PhysicalResourceId="Main-State")["StackResources"]
    assert [r["LogicalResourceId"] for r in both] == ["StateTable"]

    with pytest.raises(ClientError) as raised:
        cfn.describe_stack_resources(PhysicalResourceId="nothing-has-this")
    assert error_of(raised) == ("ValidationError", "Stack for nothing-has-this does not exist", 400)
    with pytest.raises(ClientError) as raised:
        cfn.describe_stack_resources()
    assert error_of(raised)[0] == "ValidationError"


def test_list_stack_resources_pages_in_logical_id_order(
    api: CloudFormationApi, registry: StackRegistry, cfn: Any
) -> None:
    sid = stack_id("Main")
    registry.create_stack(sid, "Main")
    for name in ("Delta", "Alpha", "Echo", "Charlie", "Bravo"):
        registry.set_resource(sid, name, "AWS::SSM::Parameter", "CREATE_COMPLETE", physical_id=f"p-{name}")
    api.page_size = 2

    pages = list(cfn.get_paginator("list_stack_resources").paginate(StackName=sid))
    assert [[r["LogicalResourceId"] for r in page["StackResourceSummaries"]] for page in pages] == [
        ["Alpha", "Bravo"],
        ["Charlie", "Delta"],
        ["Echo"],
    ]
    assert pages[0]["StackResourceSummaries"][0] == {
        "LogicalResourceId": "Alpha",
        "PhysicalResourceId": "p-Alpha",
        "ResourceType": "AWS::SSM::Parameter",
        "LastUpdatedTimestamp": at(T0),
        "ResourceStatus": "CREATE_COMPLETE",
        "DriftInformation": {"StackResourceDriftStatus": "NOT_CHECKED"},
    }

    # Updating or removing resources between pages neither repeats nor skips the others.
    first = cfn.list_stack_resources(StackName=sid)
    registry.set_resource(sid, "Alpha", "AWS::SSM::Parameter", "UPDATE_COMPLETE")
    registry.remove_resource(sid, "Bravo")
    second = cfn.list_stack_resources(StackName=sid, NextToken=first["NextToken"])
    assert [r["LogicalResourceId"] for r in second["StackResourceSummaries"]] == ["Charlie", "Delta"]

    with pytest.raises(ClientError) as raised:
        cfn.list_stack_resources(StackName="Nowhere")
    assert error_of(raised) == ("ValidationError", "Stack with id Nowhere does not exist", 400)


# --------------------------------------------------------------------------- events


def test_describe_stack_events_newest_first_with_operation_ids(registry: StackRegistry, cfn: Any) -> None:
    sid = deployed(registry)
    events = cfn.describe_stack_events(StackName=sid)["StackEvents"]
    assert [(e["LogicalResourceId"], e["ResourceStatus"]) for e in events] == [
        ("Main", "CREATE_COMPLETE"),
        ("Analysts", "CREATE_COMPLETE"),
        ("StateTable", "CREATE_COMPLETE"),
        ("StateTable", "CREATE_IN_PROGRESS"),
        ("Main", "CREATE_IN_PROGRESS"),
    ]
    newest, *_, oldest = events
    assert {e["OperationId"] for e in events} == {"op-create"}
    assert oldest == {
        "StackId": sid,
        "EventId": oldest["EventId"],
        "StackName": "Main",
        "OperationId": "op-create",
        "LogicalResourceId": "Main",
        "PhysicalResourceId": sid,  # the stack's own events carry its id
        "ResourceType": "AWS::CloudFormation::Stack",
        "Timestamp": at(T0),
        "ResourceStatus": "CREATE_IN_PROGRESS",
        "ResourceStatusReason": "User Initiated",
    }
    assert newest["Timestamp"] == at(T0 + 4)
    assert events[3]["PhysicalResourceId"] == ""  # not known yet when it started


def test_describe_stack_events_pages_stay_consistent_while_events_arrive(
    api: CloudFormationApi, registry: StackRegistry, cfn: Any
) -> None:
    sid = deployed(registry)
    api.page_size = 2
    every = [e["EventId"] for e in cfn.describe_stack_events(StackName=sid)["StackEvents"]]
    assert len(every) == 2
    all_events = [
        e["EventId"]
        for page in cfn.get_paginator("describe_stack_events").paginate(StackName="Main")
        for e in page["StackEvents"]
    ]
    assert len(all_events) == 5
    assert len(set(all_events)) == 5

    first = cfn.describe_stack_events(StackName=sid)
    operation = registry.begin_operation(sid, "UPDATE_STACK", "UPDATE_IN_PROGRESS")
    rest = cfn.describe_stack_events(StackName=sid, NextToken=first["NextToken"])
    assert [e["EventId"] for e in rest["StackEvents"]] == all_events[2:4]
    newest = cfn.describe_stack_events(StackName=sid)["StackEvents"][0]
    assert (newest["ResourceStatus"], newest["OperationId"]) == ("UPDATE_IN_PROGRESS", operation)


def test_describe_stack_events_of_a_deleted_stack_by_id_and_unknown_stacks(registry: StackRegistry, cfn: Any) -> None:
    sid = deployed(registry)
    registry.begin_operation(sid, "DELETE_STACK", "DELETE_IN_PROGRESS")
    registry.set_stack_status(sid, "DELETE_COMPLETE")
    assert cfn.describe_stack_events(StackName=sid)["StackEvents"][0]["ResourceStatus"] == "DELETE_COMPLETE"
    with pytest.raises(ClientError) as raised:
        cfn.describe_stack_events(StackName="Main")
    assert error_of(raised) == ("ValidationError", "Stack [Main] does not exist", 400)


# --------------------------------------------------------------------------- protocol


def test_other_operations_are_answered_with_invalid_action(
    api: CloudFormationApi, registry: StackRegistry, cfn: Any
) -> None:
    with pytest.raises(ClientError) as raised:
        cfn.list_stacks()
    code, message, status = error_of(raised)
    assert (code, status) == ("InvalidAction", 400)
    assert "ListStacks" in message
    [call] = api.calls
    assert (call.operation, call.status, call.outcome) == ("ListStacks", 400, "InvalidAction")


def test_the_xml_on_the_wire_is_cloudformations(api: CloudFormationApi, registry: StackRegistry) -> None:
    deployed(registry)
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        body = "Action=DescribeStacks&Version=2010-05-15&StackName=Main"
        connection.request("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        response = connection.getresponse()
        document = ET.fromstring(response.read())
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/xml"
        ns = {"cfn": XML_NAMESPACE}
        assert document.tag == f"{{{XML_NAMESPACE}}}DescribeStacksResponse"
        created = document.findtext("cfn:DescribeStacksResult/cfn:Stacks/cfn:member/cfn:CreationTime", namespaces=ns)
        assert created == "2023-11-14T22:13:20.250Z"
        request_id = document.findtext("cfn:ResponseMetadata/cfn:RequestId", namespaces=ns)
        assert request_id == response.getheader("x-amzn-RequestId")

        connection.request("POST", "/", "Version=2010-05-15")
        response = connection.getresponse()
        error = ET.fromstring(response.read())
        assert response.status == 400
        assert error.tag == f"{{{XML_NAMESPACE}}}ErrorResponse"
        assert error.findtext("cfn:Error/cfn:Code", namespaces=ns) == "InvalidAction"
        assert error.findtext("cfn:RequestId", namespaces=ns) == response.getheader("x-amzn-RequestId")
    finally:
        connection.close()


# --------------------------------------------------------------------------- faults and call log


def test_a_throttled_call_is_retried_by_botocores_standard_mode_and_logged(
    api: CloudFormationApi, registry: StackRegistry, cfn: Any
) -> None:
    sid = deployed(registry)
    api.faults.throttle(1, operation=DESCRIBE_STACKS)
    assert cfn.describe_stacks(StackName=sid)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    calls = api.calls_for(DESCRIBE_STACKS)
    assert [(c.outcome, c.status, c.fault, c.attempt) for c in calls] == [
        ("Throttling", 400, "throttle", 1),
        ("ok", 200, None, 2),
    ]
    assert len({c.invocation_id for c in calls}) == 1
    assert calls[-1].params == {"StackName": sid}
    assert api.faults.pending() == 0


def test_throttling_beyond_the_retry_budget_reaches_the_caller(api: CloudFormationApi, registry: StackRegistry) -> None:
    deployed(registry)
    api.faults.throttle(2)
    with pytest.raises(ClientError) as raised:
        make_client(api, attempts=2).describe_stacks(StackName="Main")
    assert error_of(raised) == ("Throttling", "Rate exceeded", 400)


def test_fail_with_answers_a_chosen_error_for_a_chosen_operation(
    api: CloudFormationApi, registry: StackRegistry, cfn: Any
) -> None:
    sid = deployed(registry)
    api.faults.fail_with("AccessDenied", status=403, operation=DESCRIBE_STACK_EVENTS, message="no")
    assert cfn.describe_stacks(StackName=sid)["Stacks"]  # another operation is not affected
    with pytest.raises(ClientError) as raised:
        cfn.describe_stack_events(StackName=sid)
    assert error_of(raised) == ("AccessDenied", "no", 403)
    assert cfn.describe_stack_events(StackName=sid)["StackEvents"]  # used up

    # 5xx answers are retried by botocore.
    api.faults.fail_with("InternalFailure", status=500)
    assert cfn.describe_stacks(StackName=sid)["Stacks"]
    assert [c.outcome for c in api.calls_for(DESCRIBE_STACKS)][-2:] == ["InternalFailure", "ok"]


def test_fault_arguments_are_checked(api: CloudFormationApi) -> None:
    with pytest.raises(ValueError, match="unknown operation 'DescribeStack'"):
        api.faults.throttle(operation="DescribeStack")
    with pytest.raises(ValueError, match="count must be at least 1"):
        api.faults.fail_with("X", count=0)
    with pytest.raises(ValueError, match="HTTP error status"):
        api.faults.fail_with("X", status=200)
    with pytest.raises(ValueError, match="must not be negative"):
        api.faults.latency(-1)


def test_latency_delays_answers_past_the_clients_read_timeout(api: CloudFormationApi, registry: StackRegistry) -> None:
    deployed(registry)
    api.faults.latency(5.0, operation=DESCRIBE_STACKS)
    client = make_client(api, attempts=1, read_timeout=0.2)
    with pytest.raises(ReadTimeoutError):
        client.describe_stacks(StackName="Main")
    assert client.describe_stack_events(StackName="Main")["StackEvents"]  # other operations are not delayed
    api.faults.latency(0, operation=DESCRIBE_STACKS)
    assert client.describe_stacks(StackName="Main")["Stacks"]


def test_the_call_log_names_the_clients_app_id(api: CloudFormationApi, registry: StackRegistry) -> None:
    deployed(registry)
    make_client(api, user_agent_appid="assoc-fn").describe_stacks(StackName="Main")
    make_client(api).describe_stacks(StackName="Main")
    assert [c.app_id for c in api.calls] == ["assoc-fn", None]
    assert [c.timestamp for c in api.calls] == [T0 + 4, T0 + 4]  # the server's clock, shared with the registry here


def test_client_env_sends_a_standard_client_here_even_past_the_global_endpoint(
    api: CloudFormationApi, registry: StackRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = deployed(registry)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    for key, value in {
        **api.client_env(),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SDK_UA_APP_ID": "from-env",
    }.items():
        monkeypatch.setenv(key, value)
    assert api.client_env() == {"AWS_ENDPOINT_URL_CLOUDFORMATION": api.endpoint_url}
    client = boto3.session.Session().client("cloudformation")
    assert client.describe_stack_resource(StackName=sid, LogicalResourceId="StateTable")["StackResourceDetail"]
    assert [c.app_id for c in api.calls] == ["from-env"]


def test_a_separate_process_reaches_it_through_client_env(api: CloudFormationApi, registry: StackRegistry) -> None:
    sid = deployed(registry)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(api.client_env())
    env.update({"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"})
    code = (
        "import boto3, sys; "
        "print(boto3.client('cloudformation').describe_stacks(StackName=sys.argv[1])['Stacks'][0]['StackStatus'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, sid],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "CREATE_COMPLETE"), result.stderr


def test_stop_is_idempotent_and_the_port_is_gone_after(registry: StackRegistry) -> None:
    server = CloudFormationApi(registry).start()
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.endpoint_url
