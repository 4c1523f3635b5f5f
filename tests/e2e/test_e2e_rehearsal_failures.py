"""The rehearsal's CloudFormation when things go wrong: rollbacks, cancellations, timeouts, retries, faults.

Same recorder function as ``test_e2e_rehearsal_semantics``: each event is logged with what the
CloudFormation API said at that moment, so the tests can check what the function saw, in which
order, and which run it was (its application id).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from constructs_lib.testing import (
    AppStreamServer,
    Rehearsal,
    RehearsalError,
    ResponseServer,
    StackEvent,
    StackOperation,
)

from .recorder_app import App, custom, with_

Make = Callable[..., Rehearsal]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path / "app")


@pytest.fixture
def rehearse(appstream: AppStreamServer, cfn: ResponseServer) -> Iterator[Make]:
    made: list[Rehearsal] = []

    def make(**options: Any) -> Rehearsal:
        rehearsal = Rehearsal(appstream, cfn, **options)
        made.append(rehearsal)
        return rehearsal

    yield make
    for rehearsal in made:
        rehearsal.close()


def only(operations: list[StackOperation]) -> StackOperation:
    [single] = operations
    return single


def stack_statuses(operation: StackOperation) -> list[str]:
    return [event.status for event in operation.events if event.logical_id == operation.stack_name]


def outcome(operation: StackOperation, logical_id: str, status: str) -> StackEvent:
    [event] = [event for event in operation.resource(logical_id) if event.status == status]
    return event


def line_of(app: App, phase: str, logical_id: str, request_type: str) -> int:
    """Where in the recorder's log an entry is (its position among all entries)."""
    entries = app.records(None)
    return next(
        index
        for index, entry in enumerate(entries)
        if (entry["phase"], entry["LogicalResourceId"], entry["RequestType"]) == (phase, logical_id, request_type)
    )


# -- rollbacks -------------------------------------------------------------------------------------


def test_a_failed_create_cancels_what_is_in_flight_and_deletes_it_with_a_made_up_id_while_it_runs(
    app: App, rehearse: Make
) -> None:
    rehearsal = rehearse()
    rehearsal.faults.fail("Database", reason="Quota exceeded for DB instances", after_seconds=0.5)
    rehearsal.faults.slow("AWS::SQS::Queue", seconds=5)
    resources = {
        "Early": custom(),
        "Database": with_({"Type": "AWS::RDS::DBInstance", "Properties": {}}, DependsOn="Early"),
        "Slow": custom({"Create": {"Sleep": 3}}),
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
    }
    operation = only(rehearsal.deploy(app.one(resources)))
    assert operation.status == "ROLLBACK_COMPLETE", operation
    assert outcome(operation, "Database", "CREATE_FAILED").reason == "Quota exceeded for DB instances"
    assert outcome(operation, "Slow", "CREATE_FAILED").reason == "Resource creation cancelled"
    assert outcome(operation, "Queue", "CREATE_FAILED").reason == "Resource creation cancelled"
    assert outcome(operation, "Early", "CREATE_COMPLETE").physical_resource_id == "Early-1"
    assert operation.events[-1].status == "ROLLBACK_COMPLETE"
    rollback = next(event for event in operation.events if event.status == "ROLLBACK_IN_PROGRESS")
    assert rollback.reason == (
        "The following resource(s) failed to create: [Database, Queue, Slow]. Rollback requested by user."
    )
    deletes = {entry["LogicalResourceId"]: entry for entry in app.records() if entry["RequestType"] == "Delete"}
    assert deletes["Early"]["PhysicalResourceId"] == "Early-1"
    assert deletes["Slow"]["PhysicalResourceId"].startswith("Echo-Slow-")  # made up by CloudFormation
    assert deletes["Slow"]["seen"]["StackStatus"] == "ROLLBACK_IN_PROGRESS"
    # The Delete was sent while the cancelled Create still ran; its late answer changed nothing.
    assert line_of(app, "start", "Slow", "Delete") < line_of(app, "answered", "Slow", "Create")
    assert [event.status for event in operation.resource("Slow")] == [
        "CREATE_IN_PROGRESS",
        "CREATE_FAILED",
        "DELETE_IN_PROGRESS",
        "DELETE_COMPLETE",
    ]
    assert rehearsal.deployed("Echo") == {}


@pytest.mark.slow
def test_a_failed_update_rolls_back_every_changed_resource_with_properties_swapped(app: App, rehearse: Make) -> None:
    rehearsal = rehearse()
    only(rehearsal.deploy(app.one({"A": custom(Users=["a"]), "B": custom(Users=["b"]), "C": custom(Users=["c"])})))
    ids = dict(rehearsal.deployed("Echo"))
    app.clear()
    v2 = {
        "A": custom(Users=["a2"]),
        "B": with_(
            custom({"Update": {"Status": "FAILED", "Reason": "b2 is wrong"}}, Users=["b2"]), DependsOn=["A", "New"]
        ),
        "C": custom({"Update": {"Sleep": 4}}, Users=["c2"]),  # still running when B fails: cancelled
        "New": custom(),
    }
    operation = only(rehearsal.deploy(app.one(v2)))
    assert operation.status == "UPDATE_ROLLBACK_COMPLETE", operation
    assert stack_statuses(operation) == [
        "UPDATE_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE",
    ]
    assert outcome(operation, "C", "UPDATE_FAILED").reason == "Resource update cancelled"
    rollback = next(event for event in operation.events if event.status == "UPDATE_ROLLBACK_IN_PROGRESS")
    assert rollback.reason == "The following resource(s) failed to update: [B, C]. "
    updates = [entry for entry in app.records() if entry["RequestType"] == "Update"]
    forward = {e["LogicalResourceId"]: e for e in updates if e["seen"]["StackStatus"] == "UPDATE_IN_PROGRESS"}
    back = {e["LogicalResourceId"]: e for e in updates if e["seen"]["StackStatus"] == "UPDATE_ROLLBACK_IN_PROGRESS"}
    assert sorted(forward) == sorted(back) == ["A", "B", "C"]  # the failed and the cancelled ones included
    for key, old in (("A", ["a"]), ("B", ["b"]), ("C", ["c"])):
        assert back[key]["Properties"]["Users"] == old
        assert back[key]["OldProperties"]["Users"] == forward[key]["Properties"]["Users"]
        assert back[key]["PhysicalResourceId"] == ids[key]
    assert line_of(app, "start", "C", "Update") < line_of(app, "answered", "C", "Update")
    # C's Update back was sent while its cancelled Update still ran.
    c_back = [i for i, e in enumerate(app.records(None)) if e["phase"] == "start" and e["LogicalResourceId"] == "C"][1]
    assert c_back < line_of(app, "answered", "C", "Update")
    [delete] = [entry for entry in app.records() if entry["RequestType"] == "Delete"]
    assert (delete["LogicalResourceId"], delete["PhysicalResourceId"]) == ("New", "New-1")
    assert delete["seen"]["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"
    assert rehearsal.deployed("Echo") == ids


def test_replacements_and_removals_are_deleted_in_the_cleanup_after_every_update(
    app: App, rehearse: Make, appstream: AppStreamServer
) -> None:
    rehearsal = rehearse()
    v1 = {
        "A": custom({"Create": {"Id": "first"}}),
        "Gone": custom(),
        "Retained": with_(custom(), DeletionPolicy="Retain"),
        "Stack": {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "old-name"}},
        "Kept": with_(
            {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "kept-1"}}, UpdateReplacePolicy="Retain"
        ),
    }
    only(rehearsal.deploy(app.one(v1)))
    app.clear()
    v2 = {
        "A": custom({"Update": {"Id": "second"}, "Delete": {"Status": "FAILED", "Reason": "cannot let go"}}),
        "Stack": {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "new-name"}},
        "Kept": with_(
            {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "kept-2"}}, UpdateReplacePolicy="Retain"
        ),
    }
    updated = only(rehearsal.deploy(app.one(v2)))
    assert updated.status == "UPDATE_COMPLETE", updated
    update, *deletes = app.calls()
    assert update == ("Update", "A", "first")
    assert sorted(deletes) == [("Delete", "A", "first"), ("Delete", "Gone", "Gone-1")]  # at once: independent
    assert [entry["seen"]["StackStatus"] for entry in app.records()][1:] == ["UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"] * 2
    cleanup = stack_statuses(updated).index("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    assert all(
        not event.status.startswith("DELETE") for event in updated.events[:cleanup] if event.logical_id != "Echo"
    )  # nothing is deleted before every create and update succeeded
    assert [event.status for event in updated.resource("Retained")] == ["DELETE_SKIPPED"]
    assert appstream.state.stacks() == {"new-name", "kept-1", "kept-2"}  # old-name replaced; kept-1 retained
    assert rehearsal.deployed("Echo") == {
        "Fn": rehearsal.deployed("Echo")["Fn"],
        "FnInvokeConfig": rehearsal.deployed("Echo")["FnInvokeConfig"],
        "A": "second",
        "Stack": "new-name",
        "Kept": "kept-2",
    }
    # A Delete failing in the cleanup leaves the stack UPDATE_COMPLETE: no rollback.
    removed = only(rehearsal.deploy(app.one({"Stack": v2["Stack"], "Kept": v2["Kept"]})))
    assert removed.status == "UPDATE_COMPLETE", removed
    assert stack_statuses(removed) == ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_COMPLETE"]
    failed = outcome(removed, "A", "DELETE_FAILED")
    assert failed.reason == (
        f"Received response status [FAILED] from custom resource. Message returned: cannot let go "
        f"(RequestId: {failed.request_id})"
    )
    assert "A" not in rehearsal.deployed("Echo")


def test_cloudformation_refuses_a_custom_named_replacement_and_a_new_service_token(app: App, rehearse: Make) -> None:
    rehearsal = rehearse()
    user: dict[str, Any] = {
        "Type": "AWS::AppStream::User",
        "Properties": {"UserName": "ann@example.com", "AuthenticationType": "USERPOOL", "FirstName": "Ann"},
    }
    second = app.function()["Fn"]
    only(rehearsal.deploy(app.one({"User": user, "Fn2": second, "A": custom()})))
    renamed = {**user, "Properties": {**user["Properties"], "FirstName": "Anna"}}
    refused = only(rehearsal.deploy(app.one({"User": renamed, "Fn2": second, "A": custom()})))
    assert refused.status == "UPDATE_ROLLBACK_COMPLETE", refused
    assert outcome(refused, "User", "UPDATE_FAILED").reason == (
        "CloudFormation cannot update a stack when a custom-named resource requires replacing. "
        "Rename ann@example.com and update the stack again."
    )
    moved = custom(Moved="yes")
    moved["Properties"]["ServiceToken"] = {"Fn::GetAtt": ["Fn2", "Arn"]}
    refused = only(rehearsal.deploy(app.one({"User": user, "Fn2": second, "A": moved})))
    assert outcome(refused, "A", "UPDATE_FAILED").reason == "Modifying service token is not allowed."
    assert [call[0] for call in app.calls()] == ["Create"]  # neither reached the function


def test_retain_keeps_what_a_rolled_back_create_made_unless_retain_except_on_create(
    app: App, rehearse: Make, appstream: AppStreamServer
) -> None:
    rehearsal = rehearse()
    rehearsal.faults.fail("Broken")
    resources = {
        "Kept": with_({"Type": "AWS::AppStream::Stack", "Properties": {"Name": "kept"}}, DeletionPolicy="Retain"),
        "Dropped": with_(
            {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "dropped"}}, DeletionPolicy="RetainExceptOnCreate"
        ),
        "Recorded": with_(custom(), DeletionPolicy="Retain"),
        "Broken": with_({"Type": "AWS::SNS::Topic", "Properties": {}}, DependsOn=["Kept", "Dropped", "Recorded"]),
    }
    operation = only(rehearsal.deploy(app.one(resources)))
    assert operation.status == "ROLLBACK_COMPLETE", operation
    assert [event.status for event in operation.resource("Kept")][-1] == "DELETE_SKIPPED"
    assert [event.status for event in operation.resource("Recorded")][-1] == "DELETE_SKIPPED"
    assert [event.status for event in operation.resource("Dropped")][-2:] == ["DELETE_IN_PROGRESS", "DELETE_COMPLETE"]
    assert appstream.state.stacks() == {"kept"}
    assert [call[0] for call in app.calls()] == ["Create"]  # the retained custom resource got no Delete
    # On stack deletion RetainExceptOnCreate retains.
    only(rehearsal.deploy(app.one({"Dropped": resources["Dropped"]}), stack_name="Other"))
    assert [event.status for event in rehearsal.destroy("Other").resource("Dropped")] == ["DELETE_SKIPPED"]
    assert appstream.state.stacks() == {"kept", "dropped"}


def test_rollback_complete_is_deleted_before_a_new_create_and_failed_states_refuse_updates(
    app: App, rehearse: Make
) -> None:
    rehearsal = rehearse()
    failed = only(rehearsal.deploy(app.one({"A": custom({"Create": {"Status": "FAILED"}})})))
    assert failed.status == "ROLLBACK_COMPLETE"
    again = only(rehearsal.deploy(app.one({"A": custom()})))
    assert stack_statuses(again) == ["DELETE_IN_PROGRESS", "DELETE_COMPLETE", "CREATE_IN_PROGRESS", "CREATE_COMPLETE"]
    assert again.stack_id != failed.stack_id
    # ROLLBACK_FAILED: the rollback Delete failed too.
    stuck = custom({"Create": {"Status": "FAILED"}, "Delete": {"Status": "FAILED"}})
    assert only(rehearsal.deploy(app.one({"A": stuck}), stack_name="Stuck")).status == "ROLLBACK_FAILED"
    with pytest.raises(RehearsalError, match="is in ROLLBACK_FAILED state and can not be updated"):
        rehearsal.deploy(app.one({"A": custom()}), stack_name="Stuck")
    # DELETE_FAILED: a retry deletes what is left.
    only(rehearsal.deploy(app.one({"A": custom(), "B": custom({"Delete": {"Status": "FAILED"}})}), stack_name="Del"))
    app.clear()
    deleted = rehearsal.destroy("Del")
    assert deleted.status == "DELETE_FAILED"
    assert deleted.events[-1].reason == "The following resource(s) failed to delete: [B]. "
    with pytest.raises(RehearsalError, match="DELETE_FAILED state and can not be updated"):
        rehearsal.deploy(app.one({"A": custom()}), stack_name="Del")
    app.clear()
    assert rehearsal.destroy("Del").status == "DELETE_FAILED"
    assert app.calls() == [("Delete", "B", "B-1")]


def test_a_failed_update_rollback_is_continued_with_resources_skipped(app: App, rehearse: Make) -> None:
    rehearsal = rehearse()
    only(rehearsal.deploy(app.one({"A": custom({"Update": {"Status": "FAILED"}}, Users=["a"])})))
    failed = only(rehearsal.deploy(app.one({"A": custom({"Update": {"Status": "FAILED"}}, Users=["a2"])})))
    assert failed.status == "UPDATE_ROLLBACK_FAILED", failed  # the Update back fails too
    with pytest.raises(RehearsalError, match="UPDATE_ROLLBACK_FAILED state and can not be updated"):
        rehearsal.deploy(app.one({"A": custom(Users=["a3"])}))
    app.clear()
    continued = rehearsal.continue_update_rollback("Echo", skip=["A"])
    assert continued.status == "UPDATE_ROLLBACK_COMPLETE", continued
    assert stack_statuses(continued)[0] == "UPDATE_ROLLBACK_IN_PROGRESS"
    assert app.calls() == []  # skipped: no event
    assert only(rehearsal.deploy(app.one({"A": custom(Users=["a3"])}))).status == "UPDATE_COMPLETE"


# -- time: ServiceTimeout, Lambda's retries ------------------------------------------------------------


def test_an_unanswered_event_fails_after_the_service_timeout_in_virtual_time(app: App, rehearse: Make) -> None:
    rehearsal = rehearse()
    operation = only(rehearsal.deploy(app.one({"A": custom({"Create": {"NoAnswer": "true"}})})))
    assert operation.status == "ROLLBACK_COMPLETE"
    failed = outcome(operation, "A", "CREATE_FAILED")
    started = operation.resource("A")[0]
    assert failed.reason.startswith(
        "CloudFormation did not receive a response from your Custom Resource. Please check your logs for requestId "
        f"[{failed.request_id}]."
    )
    assert "no answer within the ServiceTimeout of 3600 s" in failed.reason
    assert failed.timestamp - started.timestamp >= 3600  # CloudFormation's clock: an hour passed...
    assert 3500 < operation.skipped <= 3600  # ...and the rehearsal skipped it
    assert "3600 s of virtual time skipped" in str(operation)


@pytest.mark.parametrize(
    ("config", "runs", "dropped"),
    [
        ({}, 3, False),  # no EventInvokeConfig: Lambda's 2 retries
        ({"MaximumRetryAttempts": 1}, 2, False),
        ({"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 100}, 2, True),  # the 2nd retry would be at 180 s
    ],
)
def test_lambda_retries_a_failed_run_after_its_virtual_waits_as_the_invoke_config_says(
    app: App, rehearse: Make, config: dict[str, Any], runs: int, dropped: bool
) -> None:
    rehearsal = rehearse()
    resources: dict[str, Any] = {"A": custom({"Create": {"Raise": "boom"}}, ServiceTimeout=1000)}
    if config:
        resources["FnInvokeConfig"] = {
            "Type": "AWS::Lambda::EventInvokeConfig",
            "Properties": {"FunctionName": {"Ref": "Fn"}, "Qualifier": "$LATEST", **config},
        }
    assembly = app.version({"Echo": {"Resources": resources}}, function={"retries": None})
    operation = only(rehearsal.deploy(assembly))
    failed = outcome(operation, "A", "CREATE_FAILED")
    assert [run.kind for run in failed.attempts] == ["invocation"] + ["retry"] * (runs - 1)
    assert all(run.error == "RuntimeError: boom" for run in failed.attempts)
    assert f"(run {runs} times)" in failed.reason
    assert ("Lambda dropped the event" in failed.reason) == dropped
    assert 900 < operation.skipped <= 1000


def test_a_retry_that_succeeds_answers_in_time_and_one_after_the_timeout_still_runs(
    app: App, rehearse: Make, tmp_path: Path
) -> None:
    rehearsal = rehearse()
    flaky = custom({"Create": {"RaiseOnce": str(tmp_path / "first")}})
    assembly = app.version({"Echo": {"Resources": {"A": flaky}}}, function={"retries": 1})
    operation = only(rehearsal.deploy(assembly))
    assert operation.status == "CREATE_COMPLETE", operation
    assert [run.kind for run in outcome(operation, "A", "CREATE_COMPLETE").attempts] == ["invocation", "retry"]
    assert 55 < operation.skipped <= 60  # Lambda's one-minute wait before the retry
    # With a ServiceTimeout under that minute, CloudFormation gives up first, rolls back (a Delete of an
    # id it made up), and Lambda's retry of the Create still runs afterwards.
    app.clear()
    late = custom({"Create": {"RaiseOnce": str(tmp_path / "second")}}, ServiceTimeout=30)
    assembly = app.version({"Echo": {"Resources": {"A": late}}}, function={"retries": 1})
    operation = only(rehearsal.deploy(assembly, stack_name="Late"))
    assert operation.status == "ROLLBACK_COMPLETE", operation
    assert [call[0] for call in app.calls()] == ["Create", "Delete", "Create"]
    retry = app.records()[2]
    assert retry["seen"]["StackStatus"] == "ROLLBACK_COMPLETE"
    assert retry["RequestId"] == app.records()[0]["RequestId"]


# -- faults of delivery ----------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["concurrent", "after", "end", "next"])
def test_a_duplicate_delivery_repeats_the_event_with_its_request_id_and_response_url(
    app: App, rehearse: Make, when: str
) -> None:
    rehearsal = rehearse()
    only(rehearsal.deploy(app.one({"A": custom(Users=["a"])})))
    rehearsal.faults.duplicate("A", on="Update", when=when)
    app.clear()
    # Concurrent runs both look at the stack before either answers (they sleep a second first).
    a2 = custom({"Update": {"Sleep": 1 if when == "concurrent" else 0}}, Users=["a2"])
    updated = only(rehearsal.deploy(app.one({"A": a2})))
    assert updated.status == "UPDATE_COMPLETE", updated
    runs = updated.invocations
    if when == "next":
        later = only(rehearsal.deploy(app.one({"A": a2, "B": custom({"Create": {"Sleep": 2}})})))
        assert [run.kind for run in later.invocations].count("duplicate") == 1
        runs = runs + later.invocations
    kinds = {run.request_id: run.kind for run in runs}
    updates = [entry for entry in app.records() if entry["RequestType"] == "Update"]
    [first] = [entry for entry in updates if kinds[entry["app_id"]] == "invocation"]
    [duplicate] = [entry for entry in updates if kinds[entry["app_id"]] == "duplicate"]
    assert (duplicate["RequestId"], duplicate["ResponseURL"]) == (first["RequestId"], first["ResponseURL"])
    assert duplicate["app_id"] != first["app_id"]  # another run
    assert first["seen"]["StackStatus"] == "UPDATE_IN_PROGRESS"
    expected = {
        "concurrent": "UPDATE_IN_PROGRESS",
        "after": None,  # right after the first run: the stack may or may not have moved on
        "end": "UPDATE_COMPLETE",
        "next": "UPDATE_IN_PROGRESS",
    }[when]
    if expected is not None:
        assert duplicate["seen"]["StackStatus"] == expected
    if when == "after":
        assert line_of(app, "answered", "A", "Update") < app.records(None).index(duplicate)
    if when == "next":
        assert duplicate["seen"]["InProgress"] == ["B"]  # during the next deploy
    if when in ("concurrent", "after", "end"):
        assert sorted(run.kind for run in updated.invocations) == ["duplicate", "invocation"]
        assert len(outcome(updated, "A", "UPDATE_COMPLETE").duplicates) == (1 if when != "end" else 0)
    assert len(rehearsal.responses.responses(first["ResponseURL"])) == 2  # both answered; the first counted


def test_a_crash_after_the_nth_appstream_call_kills_the_run_and_cloudformation_times_out(
    app: App, rehearse: Make, appstream: AppStreamServer
) -> None:
    appstream.state.add_stack("s")
    for user in ("u1@example.com", "u2@example.com", "u3@example.com"):
        appstream.state.add_user(user)
    rehearsal = rehearse()
    rehearsal.faults.crash("A", on="Create", after_calls=2)
    grant = custom(
        {"Create": {"Stack": "s", "Associate": ["u1@example.com", "u2@example.com", "u3@example.com"]}},
        ServiceTimeout=300,
    )
    operation = only(rehearsal.deploy(app.one({"A": grant})))
    assert operation.status == "ROLLBACK_COMPLETE", operation
    failed = outcome(operation, "A", "CREATE_FAILED")
    [run] = failed.attempts
    assert run.killed
    assert run.error == "Runtime.ExitError: Runtime exited with error: signal: killed"
    assert "the function's process was killed (faults.crash)" in failed.reason
    assert 250 < operation.skipped <= 300
    # The second call landed before the kill; the third never came.
    assert appstream.state.associations() == {("s", "u1@example.com", "USERPOOL"), ("s", "u2@example.com", "USERPOOL")}
    calls = appstream.calls_for("BatchAssociateUserStack")
    assert [call.app_id for call in calls] == [run.request_id] * 2
    [delete] = [entry for entry in app.records() if entry["RequestType"] == "Delete"]
    assert delete["PhysicalResourceId"].startswith("Echo-A-")  # no answer: an id CloudFormation made up


def test_a_lost_answer_fails_after_the_service_timeout_and_the_rollback_uses_a_made_up_id(
    app: App, rehearse: Make
) -> None:
    rehearsal = rehearse()
    rehearsal.faults.lose_answer("A", on="Create")
    operation = only(rehearsal.deploy(app.one({"A": custom(ServiceTimeout=120)})))
    assert operation.status == "ROLLBACK_COMPLETE", operation
    failed = outcome(operation, "A", "CREATE_FAILED")
    assert failed.invocation is not None
    assert failed.invocation.status == "SUCCESS"  # the function did answer
    assert "its answer was lost (faults.lose_answer)" in failed.reason
    [delete] = [entry for entry in app.records() if entry["RequestType"] == "Delete"]
    assert delete["PhysicalResourceId"] != "A-1"
    assert delete["PhysicalResourceId"].startswith("Echo-A-")


# -- which code answers ---------------------------------------------------------------------------------


def test_events_go_to_the_function_s_current_code_rollbacks_included(app: App, rehearse: Make) -> None:
    rehearsal = rehearse()
    only(rehearsal.deploy(app.version({"Echo": {"Resources": {"A": custom(Users=["a"])}}}, function={"code": "v1"})))
    v2 = app.version({"Echo": {"Resources": {"A": custom(Users=["a2"])}}}, function={"code": "v2"})
    assert only(rehearsal.deploy(v2)).status == "UPDATE_COMPLETE"
    v3 = {"A": custom(Users=["a3"]), "B": with_(custom({"Create": {"Status": "FAILED"}}), DependsOn="A")}
    assert only(rehearsal.deploy(app.version({"Echo": {"Resources": v3}}, function={"code": "v3"}))).status == (
        "UPDATE_ROLLBACK_COMPLETE"
    )
    spec = rehearsal.function("Echo", "Fn")
    assert spec is not None
    assert spec.environment["CODE"] == "v2"  # the function was rolled back too
    assert [(e["RequestType"], e["LogicalResourceId"], e["code"]) for e in app.records()] == [
        ("Create", "A", "v1"),
        ("Update", "A", "v2"),  # after the function's update
        ("Update", "A", "v3"),
        ("Create", "B", "v3"),
        ("Update", "A", "v3"),  # the Update back: the function is rolled back after the resources using it
        ("Delete", "B", "v2"),  # in the rollback's cleanup, the function's old code is back
    ]


def test_stacks_of_several_assemblies_share_one_appstream_account(
    app: App, tmp_path: Path, rehearse: Make, appstream: AppStreamServer
) -> None:
    appstream.state.add_user("zoe@example.com")
    rehearsal = rehearse()
    one = app.version(
        {"One": {"Resources": {"Shared": {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "shared"}}}}}
    )
    other = App(tmp_path / "other")
    two = other.version(
        {"Two": {"Resources": {"Grant": custom({"Create": {"Stack": "shared", "Associate": ["zoe@example.com"]}})}}}
    )
    three = other.version(
        {"Three": {"Resources": {"Again": {"Type": "AWS::AppStream::Stack", "Properties": {"Name": "shared"}}}}}
    )
    assert [op.status for op in rehearsal.deploy(one) + rehearsal.deploy(two)] == ["CREATE_COMPLETE", "CREATE_COMPLETE"]
    assert appstream.state.associations() == {("shared", "zoe@example.com", "USERPOOL")}
    clash = only(rehearsal.deploy(three))
    assert outcome(clash, "Again", "CREATE_FAILED").reason.startswith("The stack shared already exists.")
    assert {stack.stack_name for stack in rehearsal.registry.stacks()} == {"One", "Two", "Three"}
    assert "shared" in appstream.state.stacks()  # Three's rollback did not delete One's stack


# -- what a user sees ----------------------------------------------------------------------------------


def test_str_of_an_operation_names_the_failures_and_the_function_s_own_error(app: App, rehearse: Make) -> None:
    rehearsal = rehearse()
    function = app.function()
    function["Fn"]["Properties"]["Handler"] = "missing.handler"
    operation = only(rehearsal.deploy(app.one({**function, "A": custom(ServiceTimeout=60)})))
    text = str(operation)
    lines = text.splitlines()
    assert lines[0].startswith("Echo: ROLLBACK_")
    assert "A CREATE_FAILED: CloudFormation did not receive a response from your Custom Resource." in text
    assert (
        "function error in A Create (invocation): Runtime.ImportModuleError: Unable to import module 'missing'" in text
    )
    assert len(lines) <= 6


def test_a_rehearsal_python_without_boto3_is_refused_before_anything_runs(
    app: App, rehearse: Make, tmp_path: Path
) -> None:
    python = tmp_path / "python-without-site"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    rehearsal = rehearse(python=str(python))
    with pytest.raises(RehearsalError, match=r"cannot import boto3 .*install boto3 into that interpreter"):
        rehearsal.deploy(app.one({"A": custom()}))
    assert rehearsal.registry.stacks() == ()


def test_importing_the_testing_kit_without_its_extras_names_the_pip_command() -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'moto':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import constructs_lib.testing\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocker], cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        "ImportError: constructs_lib.testing needs moto, which this environment lacks: "
        "pip install 'appstream-user-stack-association[testing]'" in result.stderr
    )
