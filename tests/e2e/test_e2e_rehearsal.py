"""app.py's lifecycle, end to end: the CLI-synthesized asset run as Lambda runs it, CloudFormation played.

One story runs once for the module (create, an update that adds and removes a user, a second
stack whose create fails on a user missing from the pool and is rolled back, delete of both);
the tests then check what CloudFormation received, what it would show, what AppStream holds
after each step, and what the function logged. Every resource of the template is played (the
role, policies, log group and function as stand-ins, the SSM parameter in a local moto); the
checks on events look at the stack's and the association's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from constructs_lib.testing import (
    AppStreamServer,
    AppStreamState,
    Invocation,
    Rehearsal,
    ResponseServer,
    StackEvent,
    StackOperation,
    StateSnapshot,
    stringify,
)
from tools.demo import BROKEN, INITIAL, UPDATE

MAIN = "AppStreamUserAssociationsDemo"
BROKEN_STACK = "BrokenAssociations"
POOL = ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com", "erin@example.com"]
SEED: dict[str, Any] = {
    "stacks": ["demo-stack"],
    "users": [{"UserName": user} for user in POOL],
    "associations": [{"StackName": "demo-stack", "UserName": "erin@example.com"}],
}
ID_PREFIX = "appstream-user-stack-association:"
ASSOCIATION = "Custom::AppStreamUserStackAssociation"


def on_demo_stack(*users: str) -> set[tuple[str, str, str]]:
    return {("demo-stack", user, "USERPOOL") for user in users}


@dataclass
class Story:
    """Everything recorded while playing the lifecycle once."""

    created: StackOperation
    updated: StackOperation
    broken: StackOperation
    deleted: StackOperation
    deleted_broken: StackOperation
    after_create: StateSnapshot
    after_update: StateSnapshot
    after_broken: StateSnapshot
    after_delete: StateSnapshot
    seed: StateSnapshot
    events: list[tuple[str, StackEvent]]
    calls: list[str]

    @property
    def invocations(self) -> list[Invocation]:
        operations = (self.created, self.updated, self.broken, self.deleted, self.deleted_broken)
        return [invocation for operation in operations for invocation in operation.invocations]


@pytest.fixture(scope="module")
def story(assemblies: Mapping[str, Path], cfn: ResponseServer) -> Iterator[Story]:
    state = AppStreamState.from_seed(SEED)
    events: list[tuple[str, StackEvent]] = []
    with (
        AppStreamServer(state) as appstream,
        Rehearsal(appstream, cfn, report=lambda stack, event: events.append((stack, event))) as rehearsal,
    ):
        seed = state.snapshot()
        [created] = rehearsal.deploy(assemblies[INITIAL.name])
        after_create = state.snapshot()
        [updated] = rehearsal.deploy(assemblies[UPDATE.name])
        after_update = state.snapshot()
        [broken] = rehearsal.deploy(assemblies[BROKEN.name], stack_name=BROKEN_STACK)
        after_broken = state.snapshot()
        deleted = rehearsal.destroy(MAIN)
        deleted_broken = rehearsal.destroy(BROKEN_STACK)
        yield Story(
            created=created,
            updated=updated,
            broken=broken,
            deleted=deleted,
            deleted_broken=deleted_broken,
            after_create=after_create,
            after_update=after_update,
            after_broken=after_broken,
            after_delete=state.snapshot(),
            seed=seed,
            events=events,
            calls=[call.operation for call in appstream.calls],
        )


def association_runs(operation: StackOperation) -> list[Invocation]:
    """The runs of the association resource (the deployment marker's are left out)."""
    return [run for run in operation.invocations if run.event.get("ResourceType") == ASSOCIATION]


def only(operation: StackOperation) -> Invocation:
    [invocation] = association_runs(operation)
    return invocation


def shown(operation: StackOperation) -> list[tuple[str, str]]:
    """The stack's events and the association's, as (logical id, status)."""
    return [
        (event.logical_id, event.status)
        for event in operation.events
        if event.logical_id == operation.stack_name or event.resource_type == ASSOCIATION
    ]


# -- what CloudFormation would show ---------------------------------------------------------------


def test_create_update_failed_create_and_delete_end_in_cloudformation_s_statuses(story: Story) -> None:
    assert [story.created.status, story.updated.status, story.broken.status, story.deleted.status] == [
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "ROLLBACK_COMPLETE",
        "DELETE_COMPLETE",
    ]
    assert story.deleted_broken.status == "DELETE_COMPLETE"
    assert story.deleted_broken.invocations == []  # a rolled-back stack has nothing left to delete


def test_stack_events_are_the_ones_cloudformation_lists(story: Story) -> None:
    [resource] = {event.logical_id for event in story.created.resource_events if event.resource_type == ASSOCIATION}
    assert resource.startswith("Associations")
    others = {event.resource_type for event in story.created.resource_events} - {ASSOCIATION}
    assert {"AWS::Lambda::Function", "AWS::IAM::Role", "AWS::SSM::Parameter"} <= others  # the whole template
    assert shown(story.created) == [
        (MAIN, "CREATE_IN_PROGRESS"),
        (resource, "CREATE_IN_PROGRESS"),
        (resource, "CREATE_COMPLETE"),
        (MAIN, "CREATE_COMPLETE"),
    ]
    assert shown(story.updated) == [
        (MAIN, "UPDATE_IN_PROGRESS"),
        (resource, "UPDATE_IN_PROGRESS"),
        (resource, "UPDATE_COMPLETE"),
        (MAIN, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"),
        (MAIN, "UPDATE_COMPLETE"),
    ]
    assert shown(story.broken) == [
        (BROKEN_STACK, "CREATE_IN_PROGRESS"),
        (resource, "CREATE_IN_PROGRESS"),
        (resource, "CREATE_FAILED"),
        (BROKEN_STACK, "ROLLBACK_IN_PROGRESS"),
        (resource, "DELETE_IN_PROGRESS"),
        (resource, "DELETE_COMPLETE"),
        (BROKEN_STACK, "ROLLBACK_COMPLETE"),
    ]
    assert shown(story.deleted) == [
        (MAIN, "DELETE_IN_PROGRESS"),
        (resource, "DELETE_IN_PROGRESS"),
        (resource, "DELETE_COMPLETE"),
        (MAIN, "DELETE_COMPLETE"),
    ]
    reported = [event for _, event in story.events]
    recorded = [event for op in (story.created, story.updated, story.broken, story.deleted) for event in op.events]
    assert reported[: len(recorded)] == recorded  # the report callback saw every event, in order


def test_failed_create_event_shows_cloudformation_s_reason_and_the_rollback_cause(story: Story) -> None:
    failed = next(event for event in story.broken.events if event.status == "CREATE_FAILED")
    assert failed.reason.startswith("Received response status [FAILED] from custom resource. Message returned: ")
    rollback = next(event for event in story.broken.events if event.status == "ROLLBACK_IN_PROGRESS")
    assert rollback.reason == (
        f"The following resource(s) failed to create: [{failed.logical_id}]. Rollback requested by user."
    )


# -- what the function received and answered ------------------------------------------------------


def test_create_event_carries_stringified_properties_and_an_https_response_url(
    story: Story, assemblies: Mapping[str, Path]
) -> None:
    event = only(story.created).event
    assert event["RequestType"] == "Create"
    assert "PhysicalResourceId" not in event
    assert "OldResourceProperties" not in event
    assert event["ResourceType"] == "Custom::AppStreamUserStackAssociation"
    assert event["StackId"].startswith(f"arn:aws:cloudformation:us-east-1:123456789012:stack/{MAIN}/")
    assert event["ResponseURL"].startswith("https://127.0.0.1:")
    properties = dict(event["ResourceProperties"])
    assert properties.pop("ServiceToken").startswith("arn:aws:lambda:us-east-1:123456789012:function:")
    template = json.loads((assemblies[INITIAL.name] / f"{MAIN}.template.json").read_text(encoding="utf-8"))
    declared = template["Resources"][event["LogicalResourceId"]]["Properties"]
    assert properties == stringify({key: value for key, value in declared.items() if key != "ServiceToken"})
    assert declared["SendEmailNotification"] is False  # a JSON boolean in the template...
    assert properties["SendEmailNotification"] == "false"  # ...a string in the event
    assert properties["MaxConcurrency"] == "4"
    assert properties["UserNames"] == sorted(INITIAL.users)
    assert (properties["StackName"], properties["AuthenticationType"]) == ("demo-stack", "USERPOOL")


def test_create_answers_success_with_the_handler_s_physical_id_and_the_echoed_ids(story: Story) -> None:
    invocation = only(story.created)
    assert invocation.response_problems == ()
    assert len(invocation.responses) == 1
    body = dict(invocation.responses[0])
    assert body["PhysicalResourceId"].startswith(ID_PREFIX)
    assert body == {
        "Status": "SUCCESS",
        "Reason": "",
        "PhysicalResourceId": body["PhysicalResourceId"],
        "StackId": invocation.event["StackId"],
        "RequestId": invocation.event["RequestId"],
        "LogicalResourceId": invocation.event["LogicalResourceId"],
        "Data": {},
        "NoEcho": False,
    }


def test_update_sends_old_properties_and_the_created_id_and_keeps_that_id(story: Story) -> None:
    created_id = only(story.created).physical_resource_id
    invocation = only(story.updated)
    assert invocation.event["RequestType"] == "Update"
    assert invocation.event["PhysicalResourceId"] == created_id
    assert invocation.event["OldResourceProperties"]["UserNames"] == list(INITIAL.users)
    assert invocation.event["ResourceProperties"]["UserNames"] == list(UPDATE.users)
    assert invocation.event["StackId"] == only(story.created).event["StackId"]
    assert (invocation.status, invocation.physical_resource_id, invocation.response_problems) == (
        "SUCCESS",
        created_id,
        (),
    )


def test_failed_create_answers_failed_with_count_code_and_the_missing_user(story: Story) -> None:
    create, _rollback_delete = association_runs(story.broken)
    assert create.status == "FAILED"
    assert create.response_problems == ()
    reason = create.reason
    assert reason.startswith("1 of 2 associations could not be associated (USER_NAME_NOT_FOUND) on stack demo-stack")
    assert "mallory@example.com" in reason
    assert "carol@example.com" not in reason  # carol was associated, then undone: not a failure
    assert "undone" in reason
    assert len(reason) <= 256  # crhelper would cut a longer one from the front


def test_rollback_delete_carries_the_id_of_the_failed_answer_and_succeeds(story: Story) -> None:
    create, delete = association_runs(story.broken)
    assert not create.physical_resource_id.startswith(ID_PREFIX)  # not a resource the handler made
    assert delete.event["RequestType"] == "Delete"
    assert delete.event["PhysicalResourceId"] == create.physical_resource_id
    assert (delete.status, delete.physical_resource_id) == ("SUCCESS", create.physical_resource_id)


def test_delete_sends_the_current_properties_and_id(story: Story) -> None:
    invocation = only(story.deleted)
    assert invocation.event["RequestType"] == "Delete"
    assert invocation.event["PhysicalResourceId"] == only(story.created).physical_resource_id
    assert invocation.event["ResourceProperties"]["UserNames"] == list(UPDATE.users)
    assert invocation.status == "SUCCESS"


# -- what AppStream holds -------------------------------------------------------------------------


def test_appstream_holds_exactly_the_declared_users_plus_what_existed(story: Story) -> None:
    assert story.seed.associations == on_demo_stack("erin@example.com")
    assert story.after_create.associations == on_demo_stack(*INITIAL.users, "erin@example.com")
    assert story.after_update.associations == on_demo_stack(*UPDATE.users, "erin@example.com")


def test_failed_create_leaves_appstream_exactly_as_it_was(story: Story) -> None:
    assert story.after_broken == story.after_update
    assert "erin@example.com" in BROKEN.users  # declared, already associated: the undo must keep it


def test_delete_leaves_the_seed(story: Story) -> None:
    assert story.after_delete == story.seed


def test_the_function_reads_before_it_writes_and_writes_in_batches(story: Story) -> None:
    assert story.calls[0] == "DescribeUserStackAssociations"
    assert set(story.calls) == {
        "DescribeUserStackAssociations",
        "BatchAssociateUserStack",
        "BatchDisassociateUserStack",
    }


# -- how the function ran -------------------------------------------------------------------------


def test_function_logs_hold_no_user_names_or_signed_urls(story: Story) -> None:
    # 5 association runs, and the deployment marker's 6 (begin, commit, rollback, deletion)
    assert sum(1 for run in story.invocations if run.event["ResourceType"] == ASSOCIATION) == 5
    assert len(story.invocations) == 11
    for invocation in story.invocations:
        assert "[INFO]" in invocation.logs  # LOG_LEVEL=INFO from the template: there are logs to check
        assert "@example.com" not in invocation.logs
        assert "X-Amz-Signature" not in invocation.logs
        assert "cfn-response" not in invocation.logs


def test_each_invocation_reports_init_and_invoke_time_like_lambda(story: Story) -> None:
    for invocation in story.invocations:
        assert invocation.exit_code == 0
        assert not invocation.timed_out
        assert invocation.error is None
        assert 0 < invocation.timings["init"] < 10
        assert 0 < invocation.timings["invoke"] < invocation.seconds
        assert "\tInit Duration: " in invocation.logs
        assert invocation.logs.splitlines()[-1].startswith("REPORT RequestId: ")


def test_crhelper_and_the_handler_come_from_the_asset_and_boto3_from_the_runtime(
    story: Story, assemblies: Mapping[str, Path]
) -> None:
    invocation = only(story.created)
    asset_dir = str(assemblies[INITIAL.name].resolve())
    imports = invocation.imports
    assert imports["crhelper"].startswith(asset_dir)
    assert imports["crhelper"].endswith("/crhelper/__init__.py")
    assert imports["index"].startswith(asset_dir)
    assert not imports["boto3"].startswith(asset_dir)
    assert not any(name.startswith(("constructs_lib", "aws_cdk", "jsii", "moto")) for name in imports)
