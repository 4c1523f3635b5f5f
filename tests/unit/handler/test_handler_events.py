"""Create, Update and Delete through the real handler: crhelper, botocore, HTTPS, the AppStream fake."""

from __future__ import annotations

import logging

import pytest
from conftest import cfn_event, properties, seed

from constructs_lib.testing import BATCH_ASSOCIATE, BATCH_DISASSOCIATE, DESCRIBE_ASSOCIATIONS

CREATED_PREFIX = "appstream-user-stack-association:"
FAILED_PREFIX = "appstream-user-stack-association-failed:"


def users(count: int, domain: str = "example.com") -> list[str]:
    return [f"user{n:04d}@{domain}" for n in range(count)]


def assoc(stack: str, names: list[str]) -> set[tuple[str, str, str]]:
    return {(stack, name, "USERPOOL") for name in names}


def batch_calls(server, operation: str) -> list:
    return [call for call in server.calls_for(operation)]


# --------------------------------------------------------------------------------------- Create


def test_create_associates_every_user_in_batches_of_at_most_25(appstream, invoke) -> None:
    names = users(60)
    seed(appstream, stacks=["demo"], users=names)

    answer = invoke(cfn_event("Create", properties("demo", names)))

    assert answer.status == "SUCCESS"
    assert answer.physical_id.startswith(CREATED_PREFIX)
    assert answer.body["Reason"] == ""
    assert appstream.state.associations() == assoc("demo", names)
    calls = batch_calls(appstream, BATCH_ASSOCIATE)
    assert sorted(call.item_count for call in calls) == [10, 25, 25]
    operations = [call.operation for call in appstream.calls]
    assert operations[0] == DESCRIBE_ASSOCIATIONS, "existing associations must be read before any change"


def test_create_answers_the_full_crhelper_response_body(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"])
    event = cfn_event("Create", properties("demo", ["a@x.com"]))

    answer = invoke(event)

    assert set(answer.body) == {
        "Status",
        "PhysicalResourceId",
        "StackId",
        "RequestId",
        "LogicalResourceId",
        "Reason",
        "Data",
        "NoEcho",
    }
    assert answer.body["StackId"] == event["StackId"]
    assert answer.body["RequestId"] == event["RequestId"]
    assert answer.body["LogicalResourceId"] == "Associations"
    assert answer.body["NoEcho"] is False


def test_create_gives_the_same_physical_id_for_the_same_resource(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"])
    first = invoke(cfn_event("Create", properties("demo", ["a@x.com"])))
    second = invoke(cfn_event("Create", properties("demo", ["a@x.com"])))
    other = invoke(cfn_event("Create", properties("demo", ["a@x.com"]), logical_id="Other"))
    assert first.physical_id == second.physical_id
    assert other.physical_id != first.physical_id


def test_create_passes_send_email_notification_parsed_from_a_string(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"])
    invoke(cfn_event("Create", properties("demo", ["a@x.com"], email=True)))
    (call,) = batch_calls(appstream, BATCH_ASSOCIATE)
    assert call.body["UserStackAssociations"][0]["SendEmailNotification"] is True


def test_failed_create_undoes_its_own_work_and_leaves_what_existed(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com", "c@x.com"], associated={"demo": ["b@x.com"]})
    before = appstream.state.associations()

    answer = invoke(cfn_event("Create", properties("demo", ["a@x.com", "b@x.com", "c@x.com", "ghost@x.com"])))

    assert answer.status == "FAILED"
    assert answer.physical_id.startswith(FAILED_PREFIX)
    assert appstream.state.associations() == before, "a and c must be disassociated again, b left alone"
    undo = batch_calls(appstream, BATCH_DISASSOCIATE)
    undone = {item["UserName"] for call in undo for item in call.body["UserStackAssociations"]}
    assert undone == {"a@x.com", "c@x.com"}
    assert answer.reason.startswith("1 of 3 associations could not be associated (USER_NAME_NOT_FOUND)")
    assert "stack demo" in answer.reason
    assert "ghost@x.com" in answer.reason
    assert "undone" in answer.reason


def test_failure_reason_stays_short_and_counts_the_rest(appstream, invoke) -> None:
    names = [f"{'n' * 60}{n:03d}@example.com" for n in range(40)]
    seed(appstream, stacks=["demo"], users=names[:10])

    answer = invoke(cfn_event("Create", properties("demo", names)))

    assert answer.status == "FAILED"
    assert len(answer.reason) < 256, "crhelper would cut a longer reason to its last 240 characters"
    assert answer.reason.startswith("30 of 40 associations could not be associated (USER_NAME_NOT_FOUND x30)")
    assert "more" in answer.reason
    assert appstream.state.associations() == frozenset()


def test_create_on_a_missing_stack_fails_naming_the_code(appstream, invoke) -> None:
    seed(appstream, stacks=[], users=["a@x.com"])
    answer = invoke(cfn_event("Create", properties("nowhere", ["a@x.com"])))
    assert answer.status == "FAILED"
    assert "STACK_NOT_FOUND" in answer.reason
    assert "stack nowhere" in answer.reason


def test_create_of_already_associated_users_makes_no_batch_call(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"], associated={"demo": ["a@x.com"]})
    answer = invoke(cfn_event("Create", properties("demo", ["a@x.com"])))
    assert answer.status == "SUCCESS"
    assert batch_calls(appstream, BATCH_ASSOCIATE) == []


def test_transient_internal_errors_are_retried_until_they_pass(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com"])
    appstream.faults.internal_error("a@x.com", attempts=2)

    answer = invoke(cfn_event("Create", properties("demo", ["a@x.com", "b@x.com"])))

    assert answer.status == "SUCCESS"
    assert appstream.state.associations() == assoc("demo", ["a@x.com", "b@x.com"])
    retried = [call.item_count for call in batch_calls(appstream, BATCH_ASSOCIATE)]
    assert retried == [2, 1, 1], "only the failing item is sent again"


def test_persistent_internal_errors_fail_naming_internal_error_after_bounded_retries(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com"])
    appstream.faults.internal_error("a@x.com", attempts=None, operation=BATCH_ASSOCIATE)

    answer = invoke(cfn_event("Create", properties("demo", ["a@x.com", "b@x.com"])))

    assert answer.status == "FAILED"
    assert "(INTERNAL_ERROR)" in answer.reason
    assert appstream.state.associations() == frozenset()
    assert len(batch_calls(appstream, BATCH_ASSOCIATE)) == 4


def test_a_modelled_exception_fails_the_batch_and_undoes_the_rest(appstream, invoke) -> None:
    names = users(30)
    seed(appstream, stacks=["demo"], users=names)
    appstream.faults.fail_with(
        "OperationNotPermittedException", operation=BATCH_ASSOCIATE, message="fleet is domain-joined"
    )

    answer = invoke(cfn_event("Create", properties("demo", names, concurrency=1)))

    assert answer.status == "FAILED"
    assert "OperationNotPermittedException" in answer.reason
    assert appstream.state.associations() == frozenset()


# --------------------------------------------------------------------------------------- Update


def test_update_in_place_adds_and_removes_only_the_difference(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com", "c@x.com"])
    created = invoke(cfn_event("Create", properties("demo", ["a@x.com", "b@x.com"])))
    appstream.reset_calls()

    answer = invoke(
        cfn_event(
            "Update",
            properties("demo", ["b@x.com", "c@x.com"]),
            old=properties("demo", ["a@x.com", "b@x.com"]),
            physical_id=created.physical_id,
        )
    )

    assert answer.status == "SUCCESS"
    assert answer.physical_id == created.physical_id, "a different id would make CloudFormation replace it"
    assert appstream.state.associations() == assoc("demo", ["b@x.com", "c@x.com"])
    (added,) = batch_calls(appstream, BATCH_ASSOCIATE)
    (removed,) = batch_calls(appstream, BATCH_DISASSOCIATE)
    assert [i["UserName"] for i in added.body["UserStackAssociations"]] == ["c@x.com"]
    assert [i["UserName"] for i in removed.body["UserStackAssociations"]] == ["a@x.com"]


def test_update_of_send_email_notification_alone_calls_nothing(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"])
    created = invoke(cfn_event("Create", properties("demo", ["a@x.com"])))
    appstream.reset_calls()

    answer = invoke(
        cfn_event(
            "Update",
            properties("demo", ["a@x.com"], email=True, concurrency=8),
            old=properties("demo", ["a@x.com"]),
            physical_id=created.physical_id,
        )
    )

    assert answer.status == "SUCCESS"
    assert appstream.calls == ()


def test_update_that_renames_the_stack_moves_every_user(appstream, invoke) -> None:
    seed(appstream, stacks=["old", "new"], users=["a@x.com", "b@x.com"])
    created = invoke(cfn_event("Create", properties("old", ["a@x.com", "b@x.com"])))

    answer = invoke(
        cfn_event(
            "Update",
            properties("new", ["a@x.com", "b@x.com"]),
            old=properties("old", ["a@x.com", "b@x.com"]),
            physical_id=created.physical_id,
        )
    )

    assert answer.status == "SUCCESS"
    assert appstream.state.associations() == assoc("new", ["a@x.com", "b@x.com"])


def test_failed_update_is_undone_and_its_rollback_update_succeeds(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com", "c@x.com"])
    created = invoke(cfn_event("Create", properties("demo", ["a@x.com", "b@x.com"])))
    before = appstream.state.associations()
    old, new = properties("demo", ["a@x.com", "b@x.com"]), properties("demo", ["b@x.com", "c@x.com", "ghost@x.com"])

    failed = invoke(cfn_event("Update", new, old=old, physical_id=created.physical_id))

    assert failed.status == "FAILED"
    assert failed.physical_id == created.physical_id
    assert appstream.state.associations() == before, "c must not stay associated, a must not be removed"
    assert "ghost@x.com" in failed.reason

    rollback = invoke(cfn_event("Update", old, old=new, physical_id=created.physical_id))

    assert rollback.status == "SUCCESS"
    assert appstream.state.associations() == before


def test_failed_removal_in_an_update_restores_the_added_and_removed(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com", "c@x.com"])
    created = invoke(cfn_event("Create", properties("demo", ["a@x.com", "b@x.com"])))
    before = appstream.state.associations()
    appstream.faults.internal_error("a@x.com", attempts=None, operation=BATCH_DISASSOCIATE)

    answer = invoke(
        cfn_event(
            "Update",
            properties("demo", ["c@x.com"]),
            old=properties("demo", ["a@x.com", "b@x.com"]),
            physical_id=created.physical_id,
        )
    )

    assert answer.status == "FAILED"
    assert answer.reason.startswith("1 of 3 associations could not be removed (INTERNAL_ERROR)")
    assert appstream.state.associations() == before


def test_update_with_malformed_old_properties_converges_without_removing(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com"], associated={"demo": ["a@x.com"]})
    answer = invoke(
        cfn_event("Update", properties("demo", ["b@x.com"]), old={"StackName": 5}, physical_id=CREATED_PREFIX + "x")
    )
    assert answer.status == "SUCCESS"
    assert appstream.state.associations() == assoc("demo", ["a@x.com", "b@x.com"])


# --------------------------------------------------------------------------------------- Delete


def test_delete_disassociates_everything_it_declares(appstream, invoke) -> None:
    names = users(30)
    seed(appstream, stacks=["demo"], users=[*names, "other@x.com"], associated={"demo": ["other@x.com"]})
    created = invoke(cfn_event("Create", properties("demo", names)))

    answer = invoke(cfn_event("Delete", properties("demo", names), physical_id=created.physical_id))

    assert answer.status == "SUCCESS"
    assert answer.physical_id == created.physical_id
    assert appstream.state.associations() == assoc("demo", ["other@x.com"])
    assert sorted(call.item_count for call in batch_calls(appstream, BATCH_DISASSOCIATE)) == [5, 25]


def test_delete_does_not_sleep_minutes_before_answering(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"])
    created = invoke(cfn_event("Create", properties("demo", ["a@x.com"])))
    answer = invoke(
        cfn_event("Delete", properties("demo", ["a@x.com"]), physical_id=created.physical_id), remaining=900.0
    )
    assert answer.status == "SUCCESS"
    assert answer.seconds < 60, "crhelper's sleep_on_delete (120 s by default) must be off"


@pytest.mark.parametrize("gone", ["stack", "user"])
def test_delete_succeeds_when_the_stack_or_user_is_already_gone(appstream, invoke, gone: str) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com"])
    created = invoke(cfn_event("Create", properties("demo", ["a@x.com", "b@x.com"])))
    if gone == "stack":
        appstream.state.remove_stack("demo")
    else:
        appstream.state.remove_user("a@x.com")

    answer = invoke(cfn_event("Delete", properties("demo", ["a@x.com", "b@x.com"]), physical_id=created.physical_id))

    assert answer.status == "SUCCESS"
    assert appstream.state.associations() == frozenset()


def test_delete_of_an_id_never_created_calls_nothing(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"], associated={"demo": ["a@x.com"]})
    crhelper_id = "Main_Associations_AB12CD34"

    answer = invoke(cfn_event("Delete", properties("demo", ["a@x.com"]), physical_id=crhelper_id))

    assert answer.status == "SUCCESS"
    assert answer.physical_id == crhelper_id
    assert appstream.calls == ()
    assert appstream.state.associations() == assoc("demo", ["a@x.com"])


def test_rollback_delete_after_a_failed_create_calls_nothing(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"], associated={"demo": ["a@x.com"]})
    failed = invoke(cfn_event("Create", properties("demo", ["a@x.com", "ghost@x.com"])))
    appstream.reset_calls()

    answer = invoke(cfn_event("Delete", properties("demo", ["a@x.com", "ghost@x.com"]), physical_id=failed.physical_id))

    assert answer.status == "SUCCESS"
    assert appstream.calls == ()
    assert appstream.state.associations() == assoc("demo", ["a@x.com"])


def test_delete_with_persistent_errors_fails_and_restores(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com", "b@x.com"])
    created = invoke(cfn_event("Create", properties("demo", ["a@x.com", "b@x.com"])))
    appstream.faults.internal_error("b@x.com", attempts=None, operation=BATCH_DISASSOCIATE)

    answer = invoke(cfn_event("Delete", properties("demo", ["a@x.com", "b@x.com"]), physical_id=created.physical_id))

    assert answer.status == "FAILED"
    assert "INTERNAL_ERROR" in answer.reason
    assert appstream.state.associations() == assoc("demo", ["a@x.com", "b@x.com"])


# ------------------------------------------------------------------------------ malformed input

MALFORMED = {
    "no properties": (None, "expected a map"),
    "missing StackName": ({"UserNames": ["a@x.com"], "AuthenticationType": "USERPOOL"}, "StackName is missing"),
    "stack name with slash": (
        {"StackName": "a/b", "UserNames": ["a@x.com"], "AuthenticationType": "USERPOOL"},
        "'a/b' is not an AppStream stack name",
    ),
    "users not a list": (
        {"StackName": "demo", "UserNames": "a@x.com,b@x.com", "AuthenticationType": "USERPOOL"},
        "UserNames must be a list",
    ),
    "empty users": ({"StackName": "demo", "UserNames": [], "AuthenticationType": "USERPOOL"}, "UserNames is empty"),
    "user with space": (
        {"StackName": "demo", "UserNames": ["a b@x.com"], "AuthenticationType": "USERPOOL"},
        "UserNames[0] 'a b@x.com' is not a user name",
    ),
    "duplicate user": (
        {"StackName": "demo", "UserNames": ["a@x.com", "a@x.com"], "AuthenticationType": "USERPOOL"},
        "duplicates: 'a@x.com'",
    ),
    "unknown auth": (
        {"StackName": "demo", "UserNames": ["a@x.com"], "AuthenticationType": "LDAP"},
        "AuthenticationType must be one of",
    ),
    "bad bool": (
        {
            "StackName": "demo",
            "UserNames": ["a@x.com"],
            "AuthenticationType": "USERPOOL",
            "SendEmailNotification": "yes",
        },
        "SendEmailNotification must be 'true' or 'false'",
    ),
    "bad concurrency": (
        {"StackName": "demo", "UserNames": ["a@x.com"], "AuthenticationType": "USERPOOL", "MaxConcurrency": "0"},
        "MaxConcurrency must be a whole number 1-16",
    ),
}


@pytest.mark.parametrize("request_type", ["Create", "Update", "Delete"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_properties_fail_with_a_reason_and_no_call(appstream, invoke, case: str, request_type: str) -> None:
    props, expected = MALFORMED[case]
    seed(appstream, stacks=["demo"], users=["a@x.com"])
    physical_id = None if request_type == "Create" else CREATED_PREFIX + "0123"
    old = properties("demo", ["a@x.com"]) if request_type == "Update" else None

    answer = invoke(cfn_event(request_type, props, old=old, physical_id=physical_id))

    assert answer.status == "FAILED"
    assert expected in answer.reason
    assert answer.reason.startswith("ResourceProperties malformed: ")
    assert answer.physical_id, "CloudFormation rejects an empty PhysicalResourceId"
    assert appstream.calls == ()


def test_every_problem_is_listed_at_once(appstream, invoke) -> None:
    props = {"StackName": "-bad", "UserNames": ["ok@x.com", "bad user"], "AuthenticationType": "NOPE"}
    answer = invoke(cfn_event("Create", props))
    assert answer.status == "FAILED"
    for fragment in ("StackName '-bad'", "UserNames[1] 'bad user'", "AuthenticationType must be one of"):
        assert fragment in answer.reason


@pytest.mark.parametrize("request_type", ["Destroy", None, 7])
def test_unknown_request_type_gets_one_failed_answer(appstream, invoke, request_type: object) -> None:
    event = cfn_event("Create", properties("demo", ["a@x.com"]))
    event["RequestType"] = request_type
    answer = invoke(event)
    assert answer.status == "FAILED"
    assert "RequestType" in answer.reason
    assert answer.physical_id
    assert appstream.calls == ()


def test_an_event_without_stack_id_still_gets_an_answer(appstream, invoke) -> None:
    event = cfn_event("Create", properties("demo", ["a@x.com"]))
    del event["StackId"]
    answer = invoke(event, validate=False)  # there is no StackId to echo
    assert answer.status == "FAILED"
    assert "StackId" in answer.reason
    assert appstream.calls == ()


# ------------------------------------------------------------------------------------------ logs


def test_logs_hold_counts_but_no_user_names_and_no_response_url(appstream, invoke, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret_users = ["alice.secret@example.com", "bob.secret@example.com"]
    seed(appstream, stacks=["demo"], users=secret_users)

    created = invoke(cfn_event("Create", properties("demo", secret_users)))
    failed = invoke(
        cfn_event("Create", properties("demo", [*secret_users, "ghost.secret@example.com"]), logical_id="Other")
    )
    invoke(cfn_event("Delete", properties("demo", secret_users), physical_id=created.physical_id))

    assert failed.status == "FAILED"
    text = caplog.text
    assert "secret@example.com" not in text
    assert "cfn-response" not in text
    assert "X-Amz-Signature" not in text
    assert "2 to associate" in text


def test_the_client_rides_out_throttling_with_botocore_standard_retries(lambda_environment) -> None:
    import index  # noqa: PLC0415

    retries = index.appstream_client().meta.config.retries
    assert retries["mode"] in ("standard", "adaptive")
    assert retries["total_max_attempts"] >= 9, "8 consecutive ThrottlingException answers must be survivable"


def test_three_throttles_in_a_row_are_ridden_out(appstream, invoke) -> None:
    seed(appstream, stacks=["demo"], users=["a@x.com"])
    appstream.faults.throttle(3, operation=BATCH_ASSOCIATE)

    answer = invoke(cfn_event("Create", properties("demo", ["a@x.com"])))

    assert answer.status == "SUCCESS"
    attempts = batch_calls(appstream, BATCH_ASSOCIATE)
    assert [call.outcome for call in attempts] == ["ThrottlingException"] * 3 + ["ok"]
