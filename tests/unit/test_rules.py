"""One authority for AppStream's rules: synthesis, the handler and the fake agree with each other and
with botocore's service model.

``appstream_handler.rules`` is the only place the rules live; these properties make sure nobody
reads them differently: whatever ``cdk synth`` accepts, the handler's parser accepts; what the
rules say a user or stack name is, botocore's model says too (its ``\\p{..}`` pattern checked with
the ``regex`` module, which speaks Unicode properties); and the AppStream fake validates requests
the same way.
"""

from __future__ import annotations

import unicodedata
from functools import cache
from typing import Any

import botocore.session
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appstream_handler import rules
from appstream_handler.properties import MalformedProperties, parse_properties
from constructs_lib._handler import rules as construct_rules
from constructs_lib._validation import user_name_problem, validate_association
from constructs_lib.testing import appstream as fake


@cache
def model() -> Any:
    return botocore.session.get_session().get_service_model("appstream")


def member(shape: str, name: str) -> Any:
    return model().shape_for(shape).members[name]


def test_the_construct_and_the_fake_read_the_handler_s_module() -> None:
    assert construct_rules.AUTHENTICATION_TYPES == rules.AUTHENTICATION_TYPES
    assert construct_rules.__file__ == rules.__file__ or construct_rules.STACK_NAME_PATTERN.pattern == (
        rules.STACK_NAME_PATTERN.pattern
    )
    assert frozenset(rules.AUTHENTICATION_TYPES) == fake.AUTHENTICATION_TYPES
    assert fake.MAX_BATCH_SIZE == rules.BATCH_LIMIT
    assert fake.MAX_PAGE_SIZE == rules.DESCRIBE_PAGE_SIZE


def test_the_figures_are_the_service_model_s() -> None:
    user = member("UserStackAssociation", "UserName")
    assert (user.metadata["min"], user.metadata["max"]) == (rules.USER_NAME_MIN_LENGTH, rules.USER_NAME_MAX_LENGTH)
    auth = member("UserStackAssociation", "AuthenticationType")
    assert tuple(auth.enum) == rules.AUTHENTICATION_TYPES
    batch = model().operation_model("BatchAssociateUserStack").input_shape.members["UserStackAssociations"]
    assert batch.metadata["max"] == rules.BATCH_LIMIT
    page = model().operation_model("DescribeUserStackAssociations").input_shape.members["MaxResults"]
    assert page.metadata["max"] == rules.DESCRIBE_PAGE_SIZE
    codes = model().shape_for("UserStackAssociationErrorCode").enum
    assert tuple(codes) == rules.ITEM_ERROR_CODES
    stack_name = model().operation_model("CreateStack").input_shape.members["Name"].metadata["pattern"]
    assert stack_name == f"^{rules.STACK_NAME_PATTERN.pattern}$"


def model_accepts_user_name(name: str) -> bool:
    metadata = member("UserStackAssociation", "UserName").metadata
    pattern = regex.compile(metadata["pattern"])
    return metadata["min"] <= len(name) <= metadata["max"] and pattern.fullmatch(name) is not None


# Code points Python's Unicode database knows (the service's regex engine may know newer ones).
assigned = st.characters(exclude_categories=["Cn"])
names = st.one_of(
    st.text(assigned, min_size=0, max_size=140),
    st.emails().map(lambda email: email[:128]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=130),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(name=names)
def test_user_names_the_rules_accept_are_the_ones_the_model_accepts(name: str) -> None:
    assert rules.is_valid_user_name(name) == model_accepts_user_name(name), [
        f"U+{ord(char):04X} {unicodedata.category(char)}" for char in name
    ]


@settings(max_examples=300)
@given(name=st.one_of(st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}", fullmatch=True), st.text(max_size=110)))
def test_stack_names_the_rules_accept_are_the_ones_the_model_accepts(name: str) -> None:
    pattern = regex.compile(member("CreateStackRequest", "Name").metadata["pattern"])
    # Python's and Java's "$" both allow a final newline; the service matches the whole string.
    model_says = pattern.fullmatch(name) is not None and not name.endswith("\n")
    assert rules.is_valid_stack_name(name) == model_says


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    stack_name=st.one_of(st.just("analysts"), st.text(max_size=12), st.just("demo\n")),
    users=st.lists(names, min_size=0, max_size=4),
    auth=st.sampled_from([*rules.AUTHENTICATION_TYPES, "userpool", "LDAP"]),
)
def test_whatever_synthesis_accepts_the_handler_accepts(stack_name: str, users: list[str], auth: str) -> None:
    problems = validate_association(
        stack_name=stack_name,
        user_names=users,
        authentication_type=auth,
        send_email_notification=False,
        max_concurrency=4,
    )
    properties = {
        "StackName": stack_name,
        "UserNames": users,
        "AuthenticationType": auth,
        "SendEmailNotification": "false",
        "MaxConcurrency": "4",
    }
    try:
        parse_properties(properties)
        handler_accepts = True
    except MalformedProperties:
        handler_accepts = False
    if not problems:
        assert handler_accepts, properties
    if handler_accepts and len(set(users)) == len(users):
        assert not problems, problems


@pytest.mark.parametrize("name", ["a@example.com\n", "demo\u200b@example.com", "\U000e0080x@example.com", "a b"])
def test_the_names_the_old_rules_disagreed_on_are_rejected_everywhere(name: str) -> None:
    assert user_name_problem(name) is not None
    with pytest.raises(MalformedProperties):
        parse_properties({"StackName": "s", "UserNames": [name], "AuthenticationType": "USERPOOL"})
    # The fake uses the same rule:
    with pytest.raises(ValueError, match="user name"):
        fake.AppStreamState().add_user(name)
    assert not model_accepts_user_name(name)


def test_a_stack_name_with_a_trailing_newline_is_rejected_at_synthesis_and_by_the_handler() -> None:
    assert validate_association(
        stack_name="demo\n",
        user_names=["a@x.com"],
        authentication_type="USERPOOL",
        send_email_notification=False,
        max_concurrency=4,
    )
    with pytest.raises(MalformedProperties):
        parse_properties({"StackName": "demo\n", "UserNames": ["a@x.com"], "AuthenticationType": "USERPOOL"})
