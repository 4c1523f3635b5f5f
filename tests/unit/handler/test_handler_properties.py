"""Parsing CloudFormation's stringly-typed properties, strictly, in one place (``parse_properties``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appstream_handler import rules
from appstream_handler.model import Association
from appstream_handler.properties import MalformedProperties, parse_properties
from constructs_lib.testing.events import association_properties, stringify
from tests.helpers.fuzzing import quick

VALID = {"StackName": "demo", "UserNames": ["a@x.com"], "AuthenticationType": "USERPOOL"}


def test_scalars_arrive_as_strings_and_are_parsed() -> None:
    state = parse_properties(
        {
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
            "StackName": "s",
            "UserNames": ["b@x", "a@x"],
            "AuthenticationType": "SAML",
            "SendEmailNotification": "TRUE",
            "MaxConcurrency": "8",
            "ExistingAssociations": "keep",
            "ConstructPath": "App/Stack/Analysts",
            "AwaitUsers": ["b@x"],
            "AwaitStack": "true",
            "FutureKey": {"any": ["thing"]},
        }
    )
    assert state.user_names == ("a@x", "b@x")  # sorted: same input, same calls
    assert state.send_email_notification is True
    assert state.max_concurrency == 8
    assert state.keep_existing is True
    assert state.path == "App/Stack/Analysts"
    assert state.associations == {Association("s", "a@x", "SAML"), Association("s", "b@x", "SAML")}
    assert state.awaits(Association("s", "b@x", "SAML"), "USER_NAME_NOT_FOUND")
    assert not state.awaits(Association("s", "a@x", "SAML"), "USER_NAME_NOT_FOUND")
    assert state.awaits(Association("s", "a@x", "SAML"), "STACK_NOT_FOUND")


def test_defaults_for_what_is_left_out() -> None:
    state = parse_properties(VALID)
    assert (state.send_email_notification, state.max_concurrency, state.keep_existing, state.path) == (
        False,
        rules.DEFAULT_MAX_CONCURRENCY,
        False,
        "",
    )
    assert (state.await_users, state.await_stack) == (frozenset(), False)
    assert not state.awaits(Association("demo", "a@x.com", "USERPOOL"), "USER_NAME_NOT_FOUND")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"StackName": "tail\n"}, "StackName 'tail\\n' is not an AppStream stack name"),
        ({"StackName": "x" * 102}, "is not an AppStream stack name"),
        ({"UserNames": ["ok@x.com", 5]}, "UserNames[1] must be a string, got int"),
        ({"UserNames": ["x" * 129]}, "is not a user name (1-128 chars, no spaces)"),
        ({"UserNames": None}, "UserNames is missing"),
        ({"AuthenticationType": "userpool"}, "AuthenticationType must be one of API|SAML|USERPOOL|AWS_AD"),
        ({"MaxConcurrency": "17"}, "MaxConcurrency must be a whole number 1-16, got '17'"),
        ({"MaxConcurrency": "\u0663"}, "MaxConcurrency must be a whole number"),
        ({"MaxConcurrency": True}, "MaxConcurrency must be a whole number"),
        ({"ExistingAssociations": "drop"}, "ExistingAssociations must be adopt or keep, got 'drop'"),
        ({"ConstructPath": 5}, "ConstructPath must be a string, got int"),
        ({"AwaitUsers": "a@x.com"}, "AwaitUsers must be a list of user names, got 'a@x.com'"),
        ({"AwaitStack": "yes"}, "AwaitStack must be 'true' or 'false', got 'yes'"),
    ],
)
def test_each_defect_is_named(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(MalformedProperties) as malformed:
        parse_properties({**VALID, **change})
    assert str(malformed.value).startswith("ResourceProperties malformed: ")
    assert expected in str(malformed.value)


def test_every_problem_is_listed_at_once_within_a_reason() -> None:
    raw = {"StackName": "-bad", "UserNames": ["ok@x.com", "bad user"], "AuthenticationType": "NOPE"}
    with pytest.raises(MalformedProperties) as malformed:
        parse_properties(raw)
    message = str(malformed.value)
    for fragment in ("StackName '-bad'", "UserNames[1] 'bad user'", "AuthenticationType must be one of"):
        assert fragment in message
    assert len(malformed.value.problems) == 3


def test_many_problems_are_counted_and_the_message_stays_short() -> None:
    raw = {**VALID, "UserNames": [f"bad user {index}" for index in range(50)], "MaxConcurrency": "x"}
    with pytest.raises(MalformedProperties) as malformed:
        parse_properties(raw, "OldResourceProperties")
    message = str(malformed.value)
    assert message.startswith("OldResourceProperties malformed: ")
    assert message.endswith("; +48 more")
    assert len(message) <= rules.REASON_LIMIT


user_names = st.text(st.characters(categories=["L", "M", "N", "P", "S"]), min_size=1, max_size=128)


@quick
@given(
    names=st.lists(user_names, min_size=1, max_size=30, unique=True),
    auth=st.sampled_from(rules.AUTHENTICATION_TYPES),
    email=st.booleans(),
    concurrency=st.integers(rules.MAX_CONCURRENCY_MIN, rules.MAX_CONCURRENCY_MAX),
)
def test_what_the_construct_declares_parses_back(names: list[str], auth: str, email: bool, concurrency: int) -> None:
    raw = stringify(
        association_properties(
            "Stack_9.x-y", names, authentication_type=auth, send_email_notification=email, max_concurrency=concurrency
        )
    )
    state = parse_properties(raw)
    assert state.user_names == tuple(sorted(names))
    assert (state.authentication_type, state.send_email_notification, state.max_concurrency) == (
        auth,
        email,
        concurrency,
    )


@quick
@given(
    raw=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from([*VALID, "MaxConcurrency", "x"]), inner, max_size=5)
        ),
        max_leaves=15,
    )
)
def test_anything_else_is_parsed_or_refused_with_a_short_reason(raw: object) -> None:
    problem: MalformedProperties | None = None
    try:
        parse_properties(raw)
    except MalformedProperties as malformed:
        problem = malformed
    if problem is not None:
        assert str(problem).startswith("ResourceProperties malformed: ")
        assert len(str(problem)) <= rules.REASON_LIMIT
        assert problem.problems
