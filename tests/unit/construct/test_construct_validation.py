"""Synth-time validation: every problem in one ValueError, tokens skipped."""

from __future__ import annotations

import re
from typing import Any

import aws_cdk as cdk
import pytest

from constructs_lib import PROVIDER_ID, AssociationValidationError, UserStackAssociation
from constructs_lib._validation import user_name_problem

VALID: dict[str, Any] = {"stack_name": "my-stack", "user_names": ["a@example.com"]}


@pytest.fixture
def stack() -> cdk.Stack:
    return cdk.Stack(cdk.App(), "V")


def build(stack: cdk.Stack, **overrides: Any) -> UserStackAssociation:
    return UserStackAssociation(stack, "A", **{**VALID, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"user_names": []}, r"user_names is empty: give at least one user name"),
        (
            {"user_names": ["b@example.com", "a@example.com", "b@example.com", "a@example.com"]},
            r"user_names lists 'a@example.com', 'b@example.com' more than once",
        ),
        ({"user_names": ["ok@example.com", ""]}, r"user name '' is 0 characters long; AppStream accepts 1 to 128"),
        ({"user_names": ["x" * 129]}, r"user name 'x{129}' is 129 characters long"),
        ({"user_names": ["a b@example.com"]}, r"user name 'a b@example.com' contains characters outside .*U\+0020"),
        ({"user_names": ["a@example.com\n"]}, r"user name 'a@example.com\\n' contains characters outside .*U\+000A"),
        ({"user_names": ["a\u200b@example.com"]}, r"contains characters outside .*\(U\+200B\)"),
        ({"user_names": ["a\x00@example.com"]}, r"U\+0000"),
        (
            {"user_names": "a@example.com"},
            r"not the single string 'a@example.com': for one user write \['a@example.com'\]",
        ),
        ({"user_names": ["a@example.com", 7]}, r"user_names\[1\] must be a string, got int 7"),
        (
            {"stack_name": "my stack"},
            r"stack_name 'my stack' is not a valid AppStream stack name: it must be 1-101 characters",
        ),
        ({"stack_name": "-leading-dash"}, r"stack_name '-leading-dash' is not a valid"),
        ({"stack_name": "a" * 102}, r"stack_name 'a{102}' is not a valid"),
        (
            {"stack_name": "arn:aws:appstream:eu-west-1:123456789012:stack/s"},
            r"give the stack's Name, not its ARN",
        ),
        ({"stack_name": ""}, r"stack_name '' is not a valid"),
        (
            {"authentication_type": "USER_POOL"},
            r"authentication_type 'USER_POOL' is not one of API, SAML, USERPOOL, AWS_AD",
        ),
        ({"authentication_type": "userpool"}, r"did you mean 'USERPOOL'\? the value is case-sensitive"),
        ({"max_concurrency": 0}, r"max_concurrency 0 must be a whole number from 1 to 16"),
        ({"max_concurrency": 17}, r"max_concurrency 17 must be a whole number from 1 to 16"),
        ({"max_concurrency": True}, r"max_concurrency True must be a whole number"),
        ({"max_concurrency": 2.0}, r"max_concurrency 2.0 must be a whole number"),
        ({"max_concurrency": "4"}, r"max_concurrency '4' must be a whole number"),
        ({"send_email_notification": "false"}, r"send_email_notification must be True or False, got str 'false'"),
    ],
)
def test_each_rule(stack: cdk.Stack, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        build(stack, **overrides)
    assert isinstance(caught.value, AssociationValidationError)
    assert len(caught.value.problems) == 1, caught.value.problems
    assert str(caught.value).startswith("UserStackAssociation 'V/A' has 1 problem:")


@pytest.mark.parametrize(
    "overrides",
    [
        {"stack_name": "a" * 101},
        {"stack_name": "My_Stack.2-b"},
        {"user_names": ["x" * 128]},
        {"user_names": ["Ünïcødé+tag@例え.jp", "o'brien@example.com", "user😀@example.com"]},
        {"user_names": ["A@example.com", "a@example.com"]},  # case-sensitive: two users
        {"authentication_type": "API"},
        {"authentication_type": "SAML"},
        {"authentication_type": "AWS_AD"},
        {"max_concurrency": 1},
        {"max_concurrency": 16},
        {"send_email_notification": True},
    ],
)
def test_valid_edge_values_are_accepted(stack: cdk.Stack, overrides: dict[str, Any]) -> None:
    build(stack, **overrides)


def test_several_problems_in_one_error(stack: cdk.Stack) -> None:
    with pytest.raises(ValueError, match=r"has 5 problems:") as caught:
        build(
            stack,
            stack_name="bad/name",
            user_names=["ok@example.com", "bad name", "ok@example.com"],
            authentication_type="LDAP",
            max_concurrency=99,
        )
    text = str(caught.value)
    for expected in ("'bad/name'", "'bad name'", "'ok@example.com' more than once", "'LDAP'", "max_concurrency 99"):
        assert expected in text
    assert len(re.findall(r"^  - ", text, flags=re.MULTILINE)) == 5


def test_a_failed_call_leaves_nothing_in_the_tree(stack: cdk.Stack) -> None:
    with pytest.raises(ValueError, match="user_names is empty"):
        build(stack, user_names=[])
    assert stack.node.try_find_child("A") is None
    assert stack.node.try_find_child(PROVIDER_ID) is None
    build(stack)  # the id is still free


def test_unresolved_tokens_are_skipped(stack: cdk.Stack) -> None:
    def param(name: str, type_: str = "String") -> cdk.CfnParameter:
        return cdk.CfnParameter(stack, name, type=type_)

    user = param("User").value_as_string
    association = build(
        stack,
        stack_name=param("Stack").value_as_string,
        user_names=[user, user, "ok@example.com"],  # a repeated token is not judged either
        authentication_type=param("Auth").value_as_string,
        max_concurrency=param("Concurrency", "Number").value_as_number,
    )
    assert association.user_names == ["ok@example.com", user, user]


def test_tokens_do_not_hide_problems_of_literal_values(stack: cdk.Stack) -> None:
    user = cdk.CfnParameter(stack, "User").value_as_string
    with pytest.raises(ValueError, match=r"has 1 problem:\n  - user name 'not valid'"):
        build(stack, stack_name=cdk.Aws.STACK_NAME, user_names=[user, "not valid"])


def test_token_encoded_user_list_is_accepted_unvalidated(stack: cdk.Stack) -> None:
    users = cdk.CfnParameter(stack, "Users", type="CommaDelimitedList").value_as_list
    assert build(stack, user_names=users).user_names == users


def test_string_token_given_as_user_list_is_rejected(stack: cdk.Stack) -> None:
    users = cdk.CfnParameter(stack, "Users").value_as_string
    with pytest.raises(ValueError, match=r"for a CommaDelimitedList parameter use CfnParameter.value_as_list"):
        build(stack, user_names=users)


def test_user_name_rule_in_isolation() -> None:
    assert user_name_problem("alice@example.com") is None
    assert user_name_problem("tab\tname") is not None
    assert user_name_problem("nbsp\u00a0name") is not None  # Unicode space separator
    assert user_name_problem("\u2028") is not None  # line separator
