"""Reasons stay within what CloudFormation shows whole, and lead with what matters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appstream_handler.properties import Association, is_valid_user_name, parse_properties
from appstream_handler.reasons import MAX_REASON, failure_reason

CODES = st.sampled_from(
    [
        "STACK_NOT_FOUND",
        "USER_NAME_NOT_FOUND",
        "DIRECTORY_NOT_FOUND",
        "INTERNAL_ERROR",
        "TIME_RAN_OUT",
        "OperationNotPermittedException",
    ]
)
NAMES = st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=128)
STACKS = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    problems=st.dictionaries(st.tuples(STACKS, NAMES), CODES, min_size=1, max_size=60),
    extra=st.integers(0, 5000),
    note=st.sampled_from(
        [
            "This event's changes were undone",
            "Nothing was changed",
            "UNDO INCOMPLETE: 3 left changed (INTERNAL_ERROR); deploy again to converge",
        ]
    ),
    message=st.text(max_size=300),
)
def test_any_failure_reason_fits_and_leads_with_the_count(problems, extra, note, message) -> None:
    labelled = {Association(stack, user, "USERPOOL"): code for (stack, user), code in problems.items()}
    attempted = len(labelled) + extra
    reason = failure_reason(
        action="could not be associated",
        problems=labelled,
        attempted=attempted,
        undo_note=note,
        messages={code: message for code in labelled.values()},
    )
    assert len(reason) <= MAX_REASON
    assert reason.startswith(f"{len(labelled)} of {attempted} associations could not be associated (")
    assert note[:20] in reason, "whether the work was undone must survive any truncation"


def test_reason_names_first_users_and_counts_the_rest() -> None:
    problems = {Association("demo", f"user{n:02d}@example.com", "USERPOOL"): "USER_NAME_NOT_FOUND" for n in range(30)}
    reason = failure_reason(
        action="could not be associated",
        problems=problems,
        attempted=40,
        undo_note="This event's changes were undone",
        messages={},
    )
    assert reason.startswith(
        "30 of 40 associations could not be associated (USER_NAME_NOT_FOUND x30) on stack demo: "
        "user00@example.com, user01@example.com"
    )
    assert " more. This event's changes were undone" in reason


@given(NAMES)
def test_generated_api_names_are_valid_user_names(name: str) -> None:
    assert is_valid_user_name(name)


def test_user_names_follow_the_api_pattern() -> None:
    assert is_valid_user_name("ünïcödé+tag@example.com")
    for bad in ("", "a b", "tab\there", "x" * 129, "nbsp\u00a0x", "ctl\x07"):
        assert not is_valid_user_name(bad)


def test_scalars_are_parsed_from_cloudformation_strings() -> None:
    state = parse_properties(
        {
            "StackName": "s",
            "UserNames": ["b@x", "a@x"],
            "AuthenticationType": "SAML",
            "SendEmailNotification": "TRUE",
            "MaxConcurrency": "8",
            "ServiceToken": "arn",
        }
    )
    assert state.user_names == ("a@x", "b@x")
    assert state.send_email_notification is True
    assert state.max_concurrency == 8
    assert {a.authentication_type for a in state.associations} == {"SAML"}
