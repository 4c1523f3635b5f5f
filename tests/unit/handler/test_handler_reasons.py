"""Reasons stay within what CloudFormation shows whole (255 characters) and lead with what matters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from appstream_handler import rules
from appstream_handler.model import Association
from appstream_handler.reasons import MAX_REASON, clip, failure_reason, users_within
from appstream_handler.rules import is_valid_user_name
from tests.helpers.fuzzing import quick

CODES = st.sampled_from(
    [
        "STACK_NOT_FOUND",
        "USER_NAME_NOT_FOUND",
        "DIRECTORY_NOT_FOUND",
        "INTERNAL_ERROR",
        "TIME_RAN_OUT",
        "ThrottlingException",
        "OperationNotPermittedException",
    ]
)
NAMES = st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=128)
STACKS = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}", fullmatch=True)
NOTES = [
    "This event's changes were undone",
    "Nothing was changed",
    "UNDO INCOMPLETE: 3 left changed (INTERNAL_ERROR); deploy again to converge",
]


def test_the_reason_limit_is_what_crhelper_keeps_whole() -> None:
    assert MAX_REASON == rules.REASON_LIMIT < 256


@quick
@given(
    problems=st.dictionaries(st.tuples(STACKS, NAMES), CODES, min_size=1, max_size=60),
    extra=st.integers(0, 5000),
    note=st.sampled_from(NOTES),
    message=st.text(max_size=300),
    action=st.sampled_from(["could not be associated", "could not be removed"]),
)
def test_any_failure_reason_fits_and_leads_with_the_count(
    problems: dict[tuple[str, str], str], extra: int, note: str, message: str, action: str
) -> None:
    labelled = {Association(stack, user, "USERPOOL"): code for (stack, user), code in problems.items()}
    attempted = len(labelled) + extra
    reason = failure_reason(
        action=action,
        problems=labelled,
        attempted=attempted,
        undo_note=note,
        messages={code: message for code in labelled.values()},
    )
    assert len(reason) <= MAX_REASON
    assert reason.startswith(f"{len(labelled)} of {attempted} associations {action} (")
    assert note[:20] in reason, "whether the work was undone must survive any truncation"


def test_a_reason_names_the_code_the_stack_the_first_users_and_counts_the_rest() -> None:
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


def test_several_codes_and_stacks_are_counted() -> None:
    problems = {
        Association("a", "u1@x", "USERPOOL"): "INTERNAL_ERROR",
        Association("b", "u2@x", "USERPOOL"): "STACK_NOT_FOUND",
        Association("c", "u3@x", "USERPOOL"): "STACK_NOT_FOUND",
    }
    reason = failure_reason(
        action="could not be removed", problems=problems, attempted=3, undo_note="Nothing was changed", messages={}
    )
    assert reason.startswith("3 of 3 associations could not be removed (INTERNAL_ERROR, STACK_NOT_FOUND x2) ")
    assert "on stacks a, b +1 more" in reason


def test_appstream_s_message_is_added_when_there_is_room() -> None:
    problems = {Association("demo", "u@x", "USERPOOL"): "OperationNotPermittedException"}
    reason = failure_reason(
        action="could not be associated",
        problems=problems,
        attempted=1,
        undo_note="Nothing was changed",
        messages={"OperationNotPermittedException": "The fleet is domain-joined."},
    )
    assert reason.endswith("Nothing was changed (The fleet is domain-joined.)")


def test_clip_and_users_within() -> None:
    assert clip("short", 10) == "short"
    assert clip("a" * 20, 10) == "a" * 7 + "..."
    assert users_within(["a@x", "b@x", "c@x"], 100) == "a@x, b@x, c@x"
    assert users_within(["a@x", "b@x", "c@x"], 12) == "a@x +2 more"
    assert users_within(["a@x", "b@x"], 3) == "2 users"


@given(NAMES)
def test_generated_api_names_are_valid_user_names(name: str) -> None:
    assert is_valid_user_name(name)


def test_user_names_follow_the_api_pattern() -> None:
    assert is_valid_user_name("ünïcödé+tag@example.com")
    for bad in ("", "a b", "tab\there", "x" * 129, "nbsp\u00a0x", "ctl\x07", "zero\u200bwidth"):
        assert not is_valid_user_name(bad)
