"""The rehearsal plays CloudFormation: orders, phases, ids, rollbacks, replacements, retain policies.

Hand-written assemblies (``recorder_app``) hold custom resources backed by a recorder function
that logs every event with what the local CloudFormation API says at that moment, and answers
as its properties tell it; stand-ins and AppStream resources sit next to them. Every event goes
through the real child-process runtime and the HTTPS ResponseURL server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from constructs_lib.testing import (
    AppStreamServer,
    AppStreamState,
    Rehearsal,
    RehearsalClock,
    RehearsalError,
    ResponseServer,
    StackOperation,
)

from .recorder_app import App, custom, with_

Make = Callable[..., Rehearsal]


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path / "app")


@pytest.fixture
def rehearse(appstream: AppStreamServer, cfn: ResponseServer) -> Iterator[Make]:
    """``rehearse(**options)``: a Rehearsal on this test's AppStream and the module's ResponseServer."""
    made: list[Rehearsal] = []

    def make(**options: Any) -> Rehearsal:
        rehearsal = Rehearsal(appstream, cfn, **options)
        made.append(rehearsal)
        return rehearsal

    yield make
    for rehearsal in made:
        rehearsal.close()


def stack_statuses(operation: StackOperation) -> list[str]:
    return [event.status for event in operation.events if event.logical_id == operation.stack_name]


def statuses(operation: StackOperation, logical_id: str) -> list[str]:
    return [event.status for event in operation.resource(logical_id)]


def only(operation: list[StackOperation]) -> StackOperation:
    [single] = operation
    return single


# -- order ------------------------------------------------------------------------------------------


def test_independent_resources_run_at_the_same_time(app: App, rehearse: Make) -> None:
    rehearsal = rehearse()
    # Each waits (up to 5 s) to see the other in progress, then stays in progress for half a second more.
    waits = {
        "A": {"WaitFor": {"Resource": "B", "Status": "CREATE_IN_PROGRESS"}, "Sleep": 0.5},
        "B": {"WaitFor": {"Resource": "A", "Status": "CREATE_IN_PROGRESS"}, "Sleep": 0.5},
    }
    created = only(rehearsal.deploy(app.one({key: custom({"Create": plan}) for key, plan in waits.items()})))
    assert created.status == "CREATE_COMPLETE", created
    assert {entry["LogicalResourceId"]: entry["saw"] for entry in app.records("waited")} == {"A": True, "B": True}
    # Deleting the stack runs them at the same time too.
    deleting = {
        key: {"WaitFor": {"Resource": other, "Status": "DELETE_IN_PROGRESS"}, "Sleep": 0.5}
        for key, other in ("AB", "BA")
    }
    only(rehearsal.deploy(app.one({key: custom({"Delete": plan}) for key, plan in deleting.items()})))
    app.clear()
    assert rehearsal.destroy("Echo").status == "DELETE_COMPLETE"
    assert {entry["LogicalResourceId"]: entry["saw"] for entry in app.records("waited")} == {"A": True, "B": True}


def test_references_and_depends_on_order_creation_and_reverse_deletion(app: App, rehearse: Make) -> None:
    rehearsal = rehearse()
    resources = {
        "D": with_(custom(), DependsOn="C"),
        "C": custom(Label={"Fn::Sub": "after ${B.Colour}"}),
        "B": custom({"Create": {"Data": {"Colour": "green"}}}, Upstream={"Ref": "A"}),
        "A": custom({"Create": {"Id": "a-id"}}),
    }
    created = only(rehearsal.deploy(app.one(resources)))
    assert created.status == "CREATE_COMPLETE", created
    assert [call[:2] for call in app.calls()] == [("Create", "A"), ("Create", "B"), ("Create", "C"), ("Create", "D")]
    properties = {entry["LogicalResourceId"]: entry["Properties"] for entry in app.records()}
    assert properties["B"]["Upstream"] == "a-id"  # Ref of a custom resource: its physical id
    assert properties["C"]["Label"] == "after green"  # Fn::Sub of ${B.Colour}: the Data B answered
    app.clear()
    deleted = rehearsal.destroy("Echo")
    assert app.calls() == [
        ("Delete", "D", "D-1"),
        ("Delete", "C", "C-1"),
        ("Delete", "B", "B-1"),
        ("Delete", "A", "a-id"),
    ]
    assert stack_statuses(deleted) == ["DELETE_IN_PROGRESS", "DELETE_COMPLETE"]
    assert rehearsal.status("Echo") is None


def test_sequential_mode_runs_one_action_at_a_time_in_a_seeded_replayable_order(app: App, rehearse: Make) -> None:
    topics = {key: {"Type": "AWS::SNS::Topic", "Properties": {}} for key in "ABCD"}

    def order(seed: int, **options: Any) -> list[str]:
        operation = only(rehearse(mode="sequential", seed=seed).deploy(app.one(topics), **options))
        assert operation.status == "CREATE_COMPLETE", operation
        return [entry for entry in operation.order if entry[-1] in "ABCD"]

    first = order(7)
    assert sorted(first) == ["create:A", "create:B", "create:C", "create:D"]
    assert order(7) == first  # the same seed, the same order
    assert len({tuple(order(seed)) for seed in range(1, 4)}) > 1  # other seeds, other orders
    wanted = list(reversed(first))
    assert order(7, order=wanted) == wanted  # a recorded order replayed
    # One action at a time: each custom resource sees itself alone in progress.
    only(rehearse(mode="sequential", seed=3).deploy(app.one({key: custom() for key in "ABC"})))
    assert [entry["seen"]["InProgress"] for entry in app.records()] == [[e["LogicalResourceId"]] for e in app.records()]


# -- intrinsics, parameters, several stacks -----------------------------------------------------------


def test_intrinsics_parameters_conditions_and_exports_between_stacks(app: App, rehearse: Make) -> None:
    exporter = {
        "Resources": {"Source": custom({"Create": {"Id": "source-id"}})},
        "Outputs": {"SourceId": {"Value": {"Ref": "Source"}, "Export": {"Name": "shared-source"}}},
    }
    importer = {
        "Parameters": {
            "Env": {"Type": "String", "Default": "dev", "AllowedValues": ["dev", "prod"]},
            "Names": {"Type": "CommaDelimitedList", "Default": "x,y"},
            "BootstrapVersion": {
                "Type": "AWS::SSM::Parameter::Value<String>",
                "Default": "/cdk-bootstrap/hnb659fds/version",
            },
        },
        "Rules": {
            "CheckBootstrapVersion": {
                "Assertions": [{"Assert": {"Fn::Not": [{"Fn::Contains": [["1"], {"Ref": "BootstrapVersion"}]}]}}]
            }
        },
        "Mappings": {"Sizes": {"dev": {"Count": 1}, "prod": {"Count": 3}}},
        "Conditions": {
            "IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
            "IsDev": {"Fn::Not": [{"Condition": "IsProd"}]},
            "Both": {"Fn::And": [{"Condition": "IsDev"}, {"Fn::Or": [{"Condition": "IsProd"}, True]}]},
        },
        "Resources": {
            "Probe": custom(
                Imported={"Fn::ImportValue": "shared-source"},
                Joined={
                    "Fn::Join": ["-", [{"Ref": "AWS::StackName"}, {"Ref": "AWS::Region"}, {"Ref": "AWS::AccountId"}]]
                },
                Second={"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]},
                Names={"Ref": "Names"},
                Zone={"Fn::Select": [0, {"Fn::GetAZs": ""}]},
                Encoded={"Fn::Base64": "hi"},
                Count={"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "Count"]},
                Mode={"Fn::If": ["IsProd", "big", "small"]},
                Gone={"Fn::If": ["Both", {"Ref": "AWS::NoValue"}, "kept"]},
                Sub={"Fn::Sub": ["${AWS::Partition}:${Local}:${!Literal}", {"Local": {"Ref": "Env"}}]},
                Stack={"Ref": "AWS::StackId"},
            ),
            "ProdOnly": with_(custom(), Condition="IsProd"),
        },
        "Outputs": {"Mode": {"Value": {"Fn::If": ["IsProd", "big", "small"]}}},
    }
    rehearsal = rehearse()
    assembly = app.version({"Exporter": exporter, "Importer": importer}, dependencies={"Importer": ["Exporter"]})
    operations = rehearsal.deploy(assembly)
    assert [(op.stack_name, op.status) for op in operations] == [
        ("Exporter", "CREATE_COMPLETE"),
        ("Importer", "CREATE_COMPLETE"),
    ]
    [probe] = [entry for entry in app.records() if entry["LogicalResourceId"] == "Probe"]
    properties = probe["Properties"]
    assert {
        key: properties[key]
        for key in ("Imported", "Joined", "Second", "Names", "Zone", "Encoded", "Count", "Mode", "Sub")
    } == {
        "Imported": "source-id",
        "Joined": "Importer-us-east-1-123456789012",
        "Second": "b",
        "Names": ["x", "y"],
        "Zone": "us-east-1a",
        "Encoded": "aGk=",
        "Count": "1",
        "Mode": "small",
        "Sub": "aws:dev:${Literal}",
    }
    assert "Gone" not in properties  # Ref AWS::NoValue removes the property
    assert properties["Stack"] == rehearsal.stack_id("Importer") == probe["StackId"]
    assert "ProdOnly" not in rehearsal.deployed("Importer")  # its condition is false
    assert rehearsal.outputs("Importer") == {"Mode": "small"}
    with pytest.raises(RehearsalError, match="Export shared-source cannot be deleted as it is in use by Importer"):
        rehearsal.destroy("Exporter")
    # Parameters given override the defaults; a value outside AllowedValues is refused.
    with pytest.raises(RehearsalError, match="Parameter 'Env' must be one of AllowedValues"):
        rehearsal.deploy(assembly, parameters={"Env": "test"})
    updated = rehearsal.deploy(assembly, parameters={"Env": "prod"})
    assert [op.status for op in updated] == ["CREATE_COMPLETE", "UPDATE_COMPLETE"]  # Exporter: no changes
    assert updated[0].events == []
    assert "ProdOnly" in rehearsal.deployed("Importer")
    # Destroying the assembly deletes the importer first.
    assert [(op.stack_name, op.status) for op in rehearsal.destroy_all(assembly)] == [
        ("Importer", "DELETE_COMPLETE"),
        ("Exporter", "DELETE_COMPLETE"),
    ]


def test_templates_cloudformation_would_reject_are_named(app: App, rehearse: Make, tmp_path: Path) -> None:
    rehearsal = rehearse()
    with pytest.raises(RehearsalError, match=r"Unresolved resource dependencies \[Nowhere\]"):
        rehearsal.deploy(app.one({"A": custom(Upstream={"Ref": "Nowhere"})}))
    with pytest.raises(RehearsalError, match=r"Circular dependency between resources: \[A, B\]"):
        rehearsal.deploy(app.one({"A": custom(Other={"Ref": "B"}), "B": custom(Other={"Ref": "A"})}))
    with pytest.raises(RehearsalError, match=r"Parameters: \[Needed\] must have values"):
        rehearsal.deploy(app.one({"A": custom()}, Parameters={"Needed": {"Type": "String"}}))
    with pytest.raises(RehearsalError, match=r"no manifest.json.*run cdk synth first"):
        rehearsal.deploy(tmp_path / "nothing")
    unsupported = only(rehearsal.deploy(app.one({"A": custom(Value={"Fn::Cidr": ["10.0.0.0/16", 1, 8]})})))
    assert unsupported.status == "ROLLBACK_COMPLETE"
    assert "Fn::Cidr is not supported by the rehearsal" in str(unsupported)


# -- AppStream, LocalAws and the CloudFormation API -------------------------------------------------------


def test_appstream_stacks_and_users_are_created_in_the_fake_and_deleted_with_the_stack(
    app: App, rehearse: Make, appstream: AppStreamServer
) -> None:
    rehearsal = rehearse()
    resources = {
        "Stack": {"Type": "AWS::AppStream::Stack", "Properties": {}},
        "Alice": {
            "Type": "AWS::AppStream::User",
            "Properties": {"UserName": "alice@example.com", "AuthenticationType": "USERPOOL"},
        },
        "Grant": custom({"Create": {"Stack": {"Ref": "Stack"}, "Associate": [{"Ref": "Alice"}]}}),
    }
    created = only(rehearsal.deploy(app.one(resources)))
    assert created.status == "CREATE_COMPLETE", created
    [name] = appstream.state.stacks()
    assert name.startswith("Echo-Stack-")  # generated as CloudFormation does
    assert len(name) == len("Echo-Stack-") + 12
    assert rehearsal.deployed("Echo")["Stack"] == name  # Ref of an AppStream stack is its name
    assert appstream.state.associations() == {(name, "alice@example.com", "USERPOOL")}
    assert [entry["errors"] for entry in app.records("answered")] == [[]]
    assert rehearsal.destroy("Echo").status == "DELETE_COMPLETE"
    assert not appstream.state.stacks()
    assert not appstream.state.users()
    assert not appstream.state.associations()


def test_a_new_appstream_user_is_invisible_to_batch_calls_for_the_configured_delay(app: App) -> None:
    resources = {
        "Stack": {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "analysts"}},
        "Bob": {
            "Type": "AWS::AppStream::User",
            "Properties": {"UserName": "bob@example.com", "AuthenticationType": "USERPOOL"},
        },
        "Grant": custom({"Create": {"Stack": "analysts", "Associate": [{"Ref": "Bob"}]}}),
    }
    with Rehearsal(appstream_user_delay=600) as rehearsal:  # starts its own fake, ResponseServer and API
        created = only(rehearsal.deploy(app.one(resources)))
        assert created.status == "CREATE_COMPLETE", created
        assert [entry["errors"] for entry in app.records("answered")] == [["USER_NAME_NOT_FOUND"]]
        assert rehearsal.appstream.state.associations() == set()
    with Rehearsal(appstream_user_delay=0) as rehearsal:
        app.clear()
        assert only(rehearsal.deploy(app.one(resources))).status == "CREATE_COMPLETE"
        assert [entry["errors"] for entry in app.records("answered")] == [[]]


def test_a_fake_on_the_rehearsal_s_clock_lets_a_user_appear_during_lambda_s_virtual_retry_wait(
    app: App, cfn: ResponseServer, tmp_path: Path
) -> None:
    clock = RehearsalClock()
    resources = {
        "Stack": {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "analysts"}},
        "Cy": {
            "Type": "AWS::AppStream::User",
            "Properties": {"UserName": "cy@example.com", "AuthenticationType": "USERPOOL"},
        },
        "Grant": custom(
            {"Create": {"Stack": "analysts", "Associate": [{"Ref": "Cy"}], "RaiseOnce": str(tmp_path / "m")}}
        ),
    }
    assembly = app.version({"Echo": {"Resources": resources}}, function={"retries": 1})
    with (
        AppStreamServer(AppStreamState(clock=clock.monotonic)) as appstream,
        Rehearsal(appstream, cfn, clock=clock, appstream_user_delay=30) as rehearsal,
    ):
        created = only(rehearsal.deploy(assembly))
        assert created.status == "CREATE_COMPLETE", created
        # The first run finds no user yet (and fails); Lambda's retry a minute later finds it.
        assert [entry["errors"] for entry in app.records("associated")] == [["USER_NAME_NOT_FOUND"], []]
        assert appstream.state.associations() == {("analysts", "cy@example.com", "USERPOOL")}
        assert 55 < clock.skipped <= 60


@pytest.mark.slow
def test_the_function_reads_the_phase_and_its_resource_through_the_cloudformation_api(app: App, rehearse: Make) -> None:
    rehearsal = rehearse(mode="sequential", seed=1)
    v1 = {"A": custom(Users=["a"]), "Gone": with_(custom(), DependsOn="A")}
    only(rehearsal.deploy(app.one(v1)))
    v2 = {
        "A": custom({"Update": {"Id": "a-2"}}, Users=["a2"]),  # replaced: the old id is deleted in the cleanup
        "B": with_(custom({"Create": {"Status": "FAILED"}}), DependsOn="New"),
        "New": with_(custom(), DependsOn="A"),
    }
    assert only(rehearsal.deploy(app.one(v1))).events == []  # no changes: no events
    rolled_back = only(rehearsal.deploy(app.one(v2)))
    assert rolled_back.status == "UPDATE_ROLLBACK_COMPLETE", rolled_back
    only(rehearsal.deploy(app.one({"A": custom({"Update": {"Id": "a-2"}}, Users=["a2"])})))
    rehearsal.destroy("Echo")
    seen = [
        (e["RequestType"], e["LogicalResourceId"], e["seen"]["StackStatus"], e["seen"]["ResourceStatus"])
        for e in app.records()
    ]
    assert seen == [
        ("Create", "A", "CREATE_IN_PROGRESS", "CREATE_IN_PROGRESS"),
        ("Create", "Gone", "CREATE_IN_PROGRESS", "CREATE_IN_PROGRESS"),
        ("Update", "A", "UPDATE_IN_PROGRESS", "UPDATE_IN_PROGRESS"),
        ("Create", "New", "UPDATE_IN_PROGRESS", "CREATE_IN_PROGRESS"),
        ("Create", "B", "UPDATE_IN_PROGRESS", "CREATE_IN_PROGRESS"),
        ("Update", "A", "UPDATE_ROLLBACK_IN_PROGRESS", "UPDATE_IN_PROGRESS"),  # the Update back
        ("Delete", "B", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "DELETE_IN_PROGRESS"),
        ("Delete", "New", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "DELETE_IN_PROGRESS"),
        ("Delete", "A", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_COMPLETE"),  # the replacement a-2
        ("Update", "A", "UPDATE_IN_PROGRESS", "UPDATE_IN_PROGRESS"),
        ("Delete", "Gone", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "DELETE_IN_PROGRESS"),  # removed, dependent first
        ("Delete", "A", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_COMPLETE"),  # the old id, after the update
        ("Delete", "A", "DELETE_IN_PROGRESS", "DELETE_IN_PROGRESS"),
    ]
    assert all(e["StackId"] == rolled_back.stack_id for e in app.records())
    assert [e["seen"]["LastUpdated"] for e in app.records()][:2] == [False, False]  # never updated yet
    assert all(e["seen"]["LastUpdated"] for e in app.records()[2:])
    assert {e["app_id"] for e in app.records()} == {
        run.request_id for op in rehearsal.operations for run in op.invocations
    }
    operation_ids = [e["seen"]["OperationId"] for e in app.records()]  # DescribeStacks' LastOperations
    assert set(operation_ids) == {op.operation_id for op in rehearsal.operations if op.events}
    assert operation_ids[0] == rehearsal.operations[0].operation_id
    assert operation_ids[-1] == rehearsal.operations[-1].operation_id


@pytest.mark.slow
def test_dynamodb_tables_are_created_in_local_aws_and_reached_through_aws_endpoint_url(
    app: App, rehearse: Make
) -> None:
    table = {
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    }
    resources = {
        "Table": table,
        "Kept": with_(table, DeletionPolicy="Retain"),
        "Writer": custom({"Create": {"PutItem": "written"}}, TableArn={"Fn::GetAtt": ["Table", "Arn"]}),
    }
    rehearsal = rehearse()
    assembly = app.version({"Echo": {"Resources": resources}}, function={"environment": {"TABLE": {"Ref": "Table"}}})
    created = only(rehearsal.deploy(assembly))
    assert created.status == "CREATE_COMPLETE", created
    assert rehearsal.aws is not None
    dynamodb = rehearsal.aws.client("dynamodb")
    name = rehearsal.deployed("Echo")["Table"]
    assert name.startswith("Echo-Table-")
    assert dynamodb.scan(TableName=name)["Items"] == [{"pk": {"S": "written"}}]
    [writer] = app.records()
    assert writer["Properties"]["TableArn"] == f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}"
    kept = rehearsal.deployed("Echo")["Kept"]
    deleted = rehearsal.destroy("Echo")
    assert statuses(deleted, "Kept") == ["DELETE_SKIPPED"]
    assert set(dynamodb.list_tables()["TableNames"]) >= {kept}
    assert name not in dynamodb.list_tables()["TableNames"]


def test_without_local_aws_the_services_types_are_plain_stand_ins(app: App, rehearse: Make) -> None:
    rehearsal = rehearse(aws=False)
    table = {"Type": "AWS::DynamoDB::Table", "Properties": {"TableName": "state"}}
    created = only(rehearsal.deploy(app.one({"Table": table})))
    assert created.status == "CREATE_COMPLETE", created
    assert rehearsal.deployed("Echo")["Table"] == "state"  # its name, as CloudFormation would have it
    assert rehearsal.aws is None  # moto was never started
