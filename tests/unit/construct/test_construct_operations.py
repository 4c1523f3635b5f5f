"""Operational settings: log group, timeouts, runtime, role, and how the shared function takes them."""

from __future__ import annotations

import json
import re
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Annotations, Match, Template

from constructs_lib import AssociationValidationError, UserStackAssociation
from constructs_lib import _timing as timing
from tests.helpers.templates import CUSTOM_TYPE, cfn_lint, new_stack, only_logical_id, resources_of_type

USERS = ["a@example.com", "b@example.com"]


def build(stack: cdk.Stack | None = None, id: str = "A", **kwargs: Any) -> UserStackAssociation:
    return UserStackAssociation(stack or new_stack(), id, **{"stack_name": "s", "user_names": USERS, **kwargs})


def function_of(template: Template) -> dict[str, Any]:
    functions = resources_of_type(template, "AWS::Lambda::Function")
    (function,) = functions.values()
    return function  # type: ignore[no-any-return]


def service_timeouts(template: Template) -> list[int]:
    return [r["Properties"]["ServiceTimeout"] for r in resources_of_type(template, CUSTOM_TYPE).values()]


# The formula ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "concurrency", "stack_users", "work"),
    [
        # overhead 2 s * (5 calls + pages), 30 s for users or stacks not yet visible, then the batch
        # calls: 13 s per round at their worst, or one call a second (the assumed rate), the longer.
        (1, 4, 1, 2 * (5 + 2) + 30 + 13),  # 1 page + 1 spare page, 1 batch
        (25, 4, 25, 2 * (5 + 2) + 30 + 13),
        (26, 1, 26, 2 * (5 + 2) + 30 + 13 * 2),  # 2 batches one at a time
        (100, 4, 100, 2 * (5 + 2) + 30 + 13),  # 4 batches in one round
        (101, 4, 101, 2 * (5 + 2) + 30 + 13 * 2),
        (900, 4, 900, 2 * (5 + 3) + 30 + 13 * 9),  # 36 batches, 9 rounds; 2 pages + 1
        (313, 4, 5000, 2 * (5 + 11) + 30 + 13 * 4),  # one of 16 shards of a 5,000-user stack
        (1000, 16, 1000, 2 * (5 + 3) + 30 + 40),  # 40 batches in 3 rounds: the rate decides
    ],
)
def test_shard_work(users: int, concurrency: int, stack_users: int, work: int) -> None:
    assert timing.shard_work_seconds(users, concurrency, stack_users) == work


@pytest.mark.parametrize(
    ("needed", "timeout"),
    [(1, 120), (120, 120), (121, 180), (138, 180), (300, 300), (301, 420), (900, 900), (5000, 900)],
)
def test_timeout_steps(needed: int, timeout: int) -> None:
    assert timing.function_timeout_seconds(needed) == timeout


@pytest.mark.parametrize(("timeout", "service"), [(120, 360), (180, 480), (900, 1920), (1800, 3600)])
def test_default_service_timeout(timeout: int, service: int) -> None:
    assert timing.default_service_timeout_seconds(timeout) == service


# Defaults -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_template() -> Template:
    stack = new_stack()
    build(stack)
    return Template.from_stack(stack)


def test_log_group_keeps_logs_a_year_and_outlives_the_stack(default_template: Template) -> None:
    default_template.has_resource(
        "AWS::Logs::LogGroup",
        {"Properties": {"RetentionInDays": 365}, "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"},
    )


def test_timeouts_default_to_the_formula(default_template: Template) -> None:
    # 2 users, concurrency 4: 60 + 2 * 13 * (2 pages + 1 round) = 138 s -> 180 s; 2 * 180 + 120 = 480 s.
    assert function_of(default_template)["Properties"]["Timeout"] == 180
    assert service_timeouts(default_template) == [480]


def test_the_function_s_dependency_on_its_role_is_acknowledged_on_that_resource_only(
    default_template: Template,
) -> None:
    function = function_of(default_template)
    role_id = only_logical_id(default_template, "AWS::IAM::Role")
    assert function["Properties"]["Role"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert function["DependsOn"] == [role_id]  # lambda.Function adds it; its GetAtt implies it
    assert function["Metadata"]["cfn-lint"] == {"config": {"ignore_checks": ["W3005"]}}
    assert cfn_lint(default_template.to_json()) == []


def test_lint_check_does_report_the_dependency_without_the_acknowledgment(default_template: Template) -> None:
    # The clean result above could not be trusted if cfn-lint were not looking.
    template = json.loads(json.dumps(default_template.to_json()))
    function_id = only_logical_id(default_template, "AWS::Lambda::Function")
    del template["Resources"][function_id]["Metadata"]["cfn-lint"]
    assert [finding[:5] for finding in cfn_lint(template)] == ["W3005"]


def test_the_largest_shard_of_the_stack_sizes_the_timeout() -> None:
    stack = new_stack()
    build(stack, "Small")
    many = [f"user{n:04d}@example.com" for n in range(900)]
    build(stack, "Large", stack_name="large", user_names=many, max_concurrency=2)
    template = Template.from_stack(stack)
    # 900 users, concurrency 2: 36 batches, 18 rounds, 3 pages: 60 + 2 * 13 * 21 = 606 s -> 900 s.
    assert function_of(template)["Properties"]["Timeout"] == 900
    assert service_timeouts(template) == [1920, 1920]


def test_work_beyond_15_minutes_is_capped_with_a_warning() -> None:
    stack = new_stack()
    many = [f"u{n:05d}@example.com" for n in range(4000)]
    build(stack, stack_name="huge", user_names=many, max_concurrency=1)
    template = Template.from_stack(stack)
    assert function_of(template)["Properties"]["Timeout"] == 900
    Annotations.from_stack(stack).has_warning(
        "/Main/AppStreamUserStackAssociationProvider/Function",
        Match.string_like_regexp(r"largest shard may need about \d+ s .* timeout of 900 s.*Raise max_concurrency"),
    )


def test_a_token_concurrency_counts_as_one_call_at_a_time() -> None:
    stack = new_stack()
    concurrency = cdk.CfnParameter(stack, "Concurrency", type="Number").value_as_number
    many = [f"user{n:04d}@example.com" for n in range(200)]
    build(stack, user_names=many, max_concurrency=concurrency)
    # 8 batches one at a time, 2 pages: 60 + 2 * 13 * 10 = 320 s -> 420 s.
    assert function_of(Template.from_stack(stack))["Properties"]["Timeout"] == 420


# Overrides ------------------------------------------------------------------------------------


def test_log_settings_can_be_overridden() -> None:
    association = build(log_retention=logs.RetentionDays.ONE_MONTH, log_removal_policy=cdk.RemovalPolicy.DESTROY)
    Template.from_stack(cdk.Stack.of(association)).has_resource(
        "AWS::Logs::LogGroup",
        {"Properties": {"RetentionInDays": 30}, "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"},
    )


def test_timeout_can_be_given_and_the_service_timeout_follows() -> None:
    association = build(timeout=cdk.Duration.minutes(4))
    template = Template.from_stack(cdk.Stack.of(association))
    assert function_of(template)["Properties"]["Timeout"] == 240
    assert service_timeouts(template) == [600]


def test_a_timeout_shorter_than_the_work_is_kept_with_a_warning() -> None:
    many = [f"user{n:04d}@example.com" for n in range(900)]
    association = build(user_names=many, timeout=cdk.Duration.seconds(60))
    stack = cdk.Stack.of(association)
    assert function_of(Template.from_stack(stack))["Properties"]["Timeout"] == 60
    Annotations.from_stack(stack).has_warning(
        "/Main/AppStreamUserStackAssociationProvider/Function",
        Match.string_like_regexp(r"more than the function's timeout of 60 s"),
    )


def test_service_timeout_can_be_given() -> None:
    association = build(service_timeout=cdk.Duration.minutes(5))
    assert service_timeouts(Template.from_stack(cdk.Stack.of(association))) == [300]


def test_a_service_timeout_shorter_than_the_function_fails_synthesis() -> None:
    association = build(service_timeout=cdk.Duration.minutes(3))  # the function may run 180 s
    with pytest.raises(RuntimeError, match=r"service_timeout is 180 s but .* may run 180 s.*at least 240 s"):
        Template.from_stack(cdk.Stack.of(association))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"service_timeout": cdk.Duration.hours(2)},
            r"service_timeout is 7200 s; it must be a whole number .* 1 to 3600",
        ),
        ({"service_timeout": cdk.Duration.millis(1500)}, r"service_timeout is 1.5 s; it must be a whole number"),
        ({"service_timeout": 600}, r"service_timeout must be a Duration .*got int 600"),
        (
            {"timeout": cdk.Duration.minutes(20)},
            r"timeout is 1200 s; it must be a whole number of seconds from 60 to 900",
        ),
        ({"timeout": cdk.Duration.seconds(10)}, r"timeout is 10 s"),
        ({"runtime": lambda_.Runtime.NODEJS_22_X}, r"runtime nodejs22.x cannot run the handler: give a Python runtime"),
        ({"runtime": lambda_.Runtime.PYTHON_3_10}, r"runtime python3.10 cannot run the handler.*python3.11 on"),
        ({"role": "arn:aws:iam::123456789012:role/x"}, r"role must be an iam.IRole"),
        ({"log_retention": 30}, r"log_retention must be a RetentionDays \(e.g. RetentionDays.ONE_YEAR\), got int 30"),
        ({"log_removal_policy": "retain"}, r"log_removal_policy must be a RemovalPolicy"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(AssociationValidationError, match=message):
        build(**kwargs)


def test_a_token_duration_is_rejected() -> None:
    stack = new_stack()
    seconds = cdk.CfnParameter(stack, "Seconds", type="Number").value_as_number
    with pytest.raises(AssociationValidationError, match=r"timeout must be known at synth time"):
        build(stack, timeout=cdk.Duration.seconds(seconds))


def test_runtime_can_be_chosen() -> None:
    association = build(runtime=lambda_.Runtime.PYTHON_3_12)
    assert function_of(Template.from_stack(cdk.Stack.of(association)))["Properties"]["Runtime"] == "python3.12"


def test_a_role_of_the_stack_can_be_given() -> None:
    stack = new_stack()
    role = iam.Role(stack, "MyRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    association = build(stack, role=role)
    assert association.role is role
    template = Template.from_stack(stack)
    role_id = only_logical_id(template, "AWS::IAM::Role")  # no role of the provider's own
    assert role_id.startswith("MyRole")
    function = function_of(template)
    assert function["Properties"]["Role"] == {"Fn::GetAtt": [role_id, "Arn"]}
    template.has_resource_properties("AWS::IAM::Policy", {"Roles": [{"Ref": role_id}]})
    assert cfn_lint(template.to_json()) == []


def test_an_imported_role_can_be_given() -> None:
    stack = new_stack()
    role = iam.Role.from_role_arn(stack, "Imported", "arn:aws:iam::123456789012:role/appstream-associations")
    build(stack, role=role)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::IAM::Role", 0)
    assert function_of(template)["Properties"]["Role"] == "arn:aws:iam::123456789012:role/appstream-associations"
    template.has_resource_properties("AWS::IAM::Policy", {"Roles": ["appstream-associations"]})


# One function per stack -----------------------------------------------------------------------


def test_later_associations_may_repeat_or_omit_the_settings() -> None:
    stack = new_stack()
    role = iam.Role(stack, "MyRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    first = build(stack, "First", role=role, timeout=cdk.Duration.minutes(5), runtime=lambda_.Runtime.PYTHON_3_13)
    repeated = build(stack, "Repeated", stack_name="t", role=role, timeout=cdk.Duration.seconds(300))
    omitted = build(stack, "Omitted", stack_name="u")
    assert first.function is repeated.function is omitted.function
    assert omitted.role is role
    template = Template.from_stack(stack)
    assert function_of(template)["Properties"]["Timeout"] == 300
    assert function_of(template)["Properties"]["Runtime"] == "python3.13"


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ({}, {"timeout": cdk.Duration.minutes(5)}, r"timeout 300 s differs from the default \(sized to the work\)"),
        (
            {"timeout": cdk.Duration.minutes(5)},
            {"timeout": cdk.Duration.minutes(6)},
            r"timeout 360 s differs from the 300 s",
        ),
        ({}, {"runtime": lambda_.Runtime.PYTHON_3_12}, r"runtime python3.12 differs from the default"),
        (
            {"log_retention": logs.RetentionDays.ONE_WEEK},
            {"log_retention": logs.RetentionDays.ONE_MONTH},
            r"log_retention ONE_MONTH differs from the ONE_WEEK",
        ),
        ({}, {"log_removal_policy": cdk.RemovalPolicy.DESTROY}, r"log_removal_policy DESTROY differs from the default"),
    ],
)
def test_a_different_setting_is_rejected_loudly(first: dict[str, Any], second: dict[str, Any], message: str) -> None:
    stack = new_stack()
    build(stack, "First", **first)
    with pytest.raises(AssociationValidationError) as caught:
        build(stack, "Second", stack_name="t", **second)
    (problem,) = caught.value.problems
    assert "UserStackAssociation 'Main/Second'" in str(caught.value)
    assert "of the function that Main/First created for this stack" in problem
    assert "to the first of them, and the same value or none to the others" in problem
    assert re.search(message, problem), problem
    assert stack.node.try_find_child("Second") is None


def test_a_role_after_the_function_exists_is_rejected() -> None:
    stack = new_stack()
    build(stack, "First")
    role = iam.Role(stack, "MyRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    with pytest.raises(AssociationValidationError, match=r"role Main/MyRole differs from the default of the function"):
        build(stack, "Second", stack_name="t", role=role)


def test_changing_settings_keeps_the_function_and_the_service_token() -> None:
    # CloudFormation refuses to change a custom resource's ServiceToken: the function must stay.
    def ids(**kwargs: Any) -> tuple[str, Any]:
        stack = new_stack()
        if kwargs.pop("own_role", False):
            kwargs["role"] = iam.Role(stack, "MyRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        build(stack, **kwargs)
        template = Template.from_stack(stack)
        (custom,) = resources_of_type(template, CUSTOM_TYPE).values()
        return only_logical_id(template, "AWS::Lambda::Function"), custom["Properties"]["ServiceToken"]

    baseline = ids()
    for variant in (
        {"timeout": cdk.Duration.minutes(7)},
        {"runtime": lambda_.Runtime.PYTHON_3_12},
        {"log_retention": logs.RetentionDays.ONE_WEEK},
        {"log_removal_policy": cdk.RemovalPolicy.DESTROY},
        {"own_role": True},
    ):
        assert ids(**variant) == baseline, variant
