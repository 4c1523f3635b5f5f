"""The per-stack backing function shared by every ``UserStackAssociation`` of a CDK stack.

One :class:`AssociationProvider` lives directly under the stack with the fixed id
:data:`PROVIDER_ID`. It holds the Lambda ``Function``, its ``LogGroup``, its execution role (its
own ``Role`` with no managed policies, or the caller's) and one ``iam.Policy`` holding every
permission of the function, whose AppStream batch permissions grow as associations register
their stack names.

Why one function per stack, and not one per combination of settings: a custom resource's
``ServiceToken`` cannot change ("Modifying service token is not allowed"), so a function whose
identity depended on its settings would make every later change of a setting fail the
deployment. The function keeps its logical id; its settings change in place.

Function-level settings (:class:`FunctionSettings`) are therefore shared: the first association
of a stack creates the function with its settings (defaults for those it leaves out); a later
association may repeat them or leave them out, and one that asks for a different value is
rejected with an error naming both associations, instead of being silently ignored
(aws-cdk#13601).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import jsii
from aws_cdk import (
    Acknowledgment,
    Annotations,
    Aspects,
    CfnResource,
    Duration,
    IAspect,
    INumberProducer,
    IResolveContext,
    Lazy,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct, IValidation

from constructs_lib import _asset, _timing
from constructs_lib._ordering import order_associations
from constructs_lib._tokens import is_unresolved
from constructs_lib._validation import python_version

if TYPE_CHECKING:
    from constructs_lib.association import UserStackAssociation

PROVIDER_ID = "AppStreamUserStackAssociationProvider"
"""Construct id of the shared provider, directly under the stack (public contract)."""

BATCH_ACTIONS = ("appstream:BatchAssociateUserStack", "appstream:BatchDisassociateUserStack")
DESCRIBE_ACTION = "appstream:DescribeUserStackAssociations"
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")

ARCHITECTURE = lambda_.Architecture.ARM_64
MEMORY_SIZE_MIB = 256
# Lambda's minimum: an async event not started within a minute is dropped, not run late.
MAX_EVENT_AGE_SECONDS = 60
ENVIRONMENT = {"LOG_LEVEL": "INFO"}

DEFAULT_LOG_RETENTION = logs.RetentionDays.ONE_YEAR
DEFAULT_LOG_REMOVAL_POLICY = RemovalPolicy.RETAIN

DESCRIBE_ACKNOWLEDGMENT_REASON = (
    f"{DESCRIBE_ACTION} has no resource type and can only be granted on '*'; "
    "the batch actions are limited to the named AppStream stacks"
)


def newest_python_runtime() -> lambda_.Runtime:
    """The newest Python runtime aws-cdk-lib knows (what cdk-nag's AwsSolutions-L1 expects)."""
    versioned = [(version, runtime) for runtime in lambda_.Runtime.ALL if (version := python_version(runtime))]
    return max(versioned, key=lambda item: item[0])[1]


@dataclass(frozen=True)
class FunctionSettings:
    """Settings of the shared function; None leaves a setting to the stack's function.

    See :class:`~constructs_lib.UserStackAssociation` for their meaning and defaults.
    """

    runtime: lambda_.Runtime | None = None
    timeout: Duration | None = None
    role: iam.IRole | None = None
    log_retention: logs.RetentionDays | None = None
    log_removal_policy: RemovalPolicy | None = None


def _shown(name: str, value: object) -> str:
    if value is None:
        return "default" if name != "timeout" else "default (sized to the work)"
    if isinstance(value, lambda_.Runtime):
        return value.name
    if isinstance(value, Duration):
        return f"{value.to_seconds():g} s"
    if name == "role":
        return str(value.node.path)  # type: ignore[attr-defined]
    return str(getattr(value, "name", value))


def _same(name: str, left: object, right: object) -> bool:
    if left is None or right is None:
        return left is right
    if name == "runtime":
        return bool(left.name == right.name)  # type: ignore[attr-defined]
    if name == "timeout":
        return bool(left.to_seconds() == right.to_seconds())  # type: ignore[attr-defined]
    if name == "role":
        return bool(left.node.path == right.node.path)  # type: ignore[attr-defined]
    return left == right


@jsii.implements(INumberProducer)
class _Producer:
    def __init__(self, produce: Any) -> None:
        self._produce = produce

    def produce(self, context: IResolveContext) -> int:
        return int(self._produce())


@jsii.implements(IAspect)
class _Finalize:
    """At synthesis: order associations after declared AppStream stacks/users; check timeouts."""

    def __init__(self, provider: AssociationProvider) -> None:
        self._provider = provider

    def visit(self, node: IConstruct) -> None:
        if node.node.path == self._provider.node.path:
            self._provider.finalize()


@jsii.implements(IValidation)
class _DropImpliedRoleDependency:
    """Removes the function's ``DependsOn`` on its role, which its ``Role: Fn::GetAtt`` implies.

    ``lambda.Function`` adds a dependency on its whole role construct, so that a role's default
    policy exists before the function. This role has no default policy (the permissions are
    in the provider's ``Policy``, which each custom resource depends on), so the only
    dependency left is one CloudFormation derives from the ``Fn::GetAtt`` already, and cfn-lint
    reports it (W3005). Dependencies become ``DependsOn`` entries after aspects run and before
    validation, so this runs as a validation, and reports nothing.
    """

    def __init__(self, function: CfnResource, role: CfnResource) -> None:
        self._function = function
        self._role = role

    def validate(self) -> list[str]:
        self._function.remove_resource_dependency(self._role)
        return []


class AssociationProvider(Construct):
    """Shared function, role and policy backing ``Custom::AppStreamUserStackAssociation``.

    Use :meth:`of` rather than the constructor.
    """

    def __init__(self, scope: Stack, construct_id: str, *, settings: FunctionSettings, created_by: str) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        """The settings the function was created with (None: default)."""
        self.created_by = created_by
        """Path of the association that created the provider."""
        self.associations: list[UserStackAssociation] = []
        """Every association using this provider, in construction order."""
        self._registered_users: dict[tuple[str, str, str], str] = {}
        self._finalized_warning = False

        # An explicit log group, created before the function (the function references it), so
        # that the first invocation cannot race CloudFormation into creating it.
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=settings.log_retention or DEFAULT_LOG_RETENTION,
            removal_policy=settings.log_removal_policy or DEFAULT_LOG_REMOVAL_POLICY,
        )

        # No managed policy: everything the function may do is in the one Policy below, which the
        # custom resources depend on, so it outlives them on deletion (logs included).
        self.role: iam.IRole = settings.role or iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Runs the AppStream user-stack association custom resource handler",
        )

        self._stack_policies: dict[str, iam.Policy] = {}
        describe_statement = iam.PolicyStatement(
            # DescribeUserStackAssociations has no resource type: it can only be granted on "*".
            actions=[DESCRIBE_ACTION],
            resources=["*"],
        )
        logs_statement = iam.PolicyStatement(
            # The inline equivalent of AWSLambdaBasicExecutionRole, scoped to the function's log
            # group (its Arn attribute ends in ":*", which covers the log streams).
            actions=list(LOG_ACTIONS),
            resources=[self.log_group.log_group_arn],
        )
        self.policy = iam.Policy(
            self,
            "Policy",
            statements=[describe_statement, logs_statement],
            roles=[self.role],
        )
        self._acknowledge_describe_wildcard()

        staged = _asset.stage_asset()
        if not _asset.has_handler_module(staged):
            Annotations.of(self).add_warning_v2(
                "appstream-usa:missing-handler",
                f"the Lambda asset {str(staged)!r} has no {_asset.HANDLER_MODULE}: the handler "
                "index.handler will fail at run time and CloudFormation will wait for a response",
            )
        timeout = (
            settings.timeout
            if settings.timeout is not None
            else Duration.seconds(Lazy.uncached_number(_Producer(self.timeout_seconds)))
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description="Manages AppStream 2.0 user-stack associations (Custom::AppStreamUserStackAssociation)",
            runtime=settings.runtime or newest_python_runtime(),
            architecture=ARCHITECTURE,
            handler="index.handler",
            code=lambda_.Code.from_asset(str(staged)),
            timeout=timeout,
            memory_size=MEMORY_SIZE_MIB,
            environment=dict(ENVIRONMENT),
            role=self.role,
            log_group=self.log_group,
            # CloudFormation invokes asynchronously. A Lambda retry, or an event that waited in a
            # throttled queue, could run after CloudFormation gave up (ServiceTimeout) and rolled
            # back, and associate users nothing would ever remove: the handler answers every event
            # itself, so a late second run is never wanted.
            retry_attempts=0,
            max_event_age=Duration.seconds(MAX_EVENT_AGE_SECONDS),
        )
        role_resource = self.role.node.default_child
        function_resource = self.function.node.default_child
        if (
            isinstance(role_resource, CfnResource)
            and isinstance(function_resource, CfnResource)
            and Stack.of(role_resource).node.path == Stack.of(self).node.path
        ):
            self.function.node.add_validation(_DropImpliedRoleDependency(function_resource, role_resource))
        Aspects.of(self).add(_Finalize(self))

    def _acknowledge_describe_wildcard(self) -> None:
        """Acknowledge AwsSolutions-IAM5 for ``Resource::*`` on this policy's resource only.

        cdk-nag 3 reads CDK's ``Validations`` acknowledgments; cdk-nag 2 reads the ``cdk_nag``
        metadata of the CloudFormation resource. Neither needs cdk-nag installed here.
        """
        policy_resource = self.policy.node.default_child
        assert isinstance(policy_resource, CfnResource)
        Validations.of(policy_resource).acknowledge(
            Acknowledgment(id="AwsSolutions::AwsSolutions-IAM5[Resource::*]", reason=DESCRIBE_ACKNOWLEDGMENT_REASON)
        )
        policy_resource.add_metadata(
            "cdk_nag",
            {
                "rules_to_suppress": [
                    {"id": "AwsSolutions-IAM5", "reason": DESCRIBE_ACKNOWLEDGMENT_REASON, "applies_to": ["Resource::*"]}
                ]
            },
        )

    @classmethod
    def of(
        cls, scope: IConstruct, settings: FunctionSettings | None = None, *, requester: str = ""
    ) -> AssociationProvider:
        """Return the stack's provider, creating it with ``settings`` on first use.

        :raises ValueError: if the provider exists and ``settings`` conflict with it.
        """
        wanted = settings or FunctionSettings()
        existing = cls.find(scope)
        if existing is None:
            return cls(Stack.of(scope), PROVIDER_ID, settings=wanted, created_by=requester)
        problems = existing.settings_conflicts(wanted)
        if problems:
            raise ValueError("; ".join(problems))
        return existing

    @classmethod
    def find(cls, scope: IConstruct) -> AssociationProvider | None:
        """Return the provider of ``scope``'s stack if one exists."""
        stack = Stack.of(scope)
        existing = stack.node.try_find_child(PROVIDER_ID)
        if existing is None:
            return None
        if not isinstance(existing, cls):
            raise ValueError(
                f"{stack.node.path} already has a child {PROVIDER_ID!r} that is not an "
                f"AssociationProvider ({type(existing).__name__}); that construct id is reserved"
            )
        return existing

    def settings_conflicts(self, wanted: FunctionSettings) -> list[str]:
        """Problems with sharing this provider's function with an association asking for ``wanted``."""
        problems = []
        for field in fields(FunctionSettings):
            asked = getattr(wanted, field.name)
            have = getattr(self.settings, field.name)
            if asked is None or _same(field.name, asked, have):
                continue
            problems.append(
                f"{field.name} {_shown(field.name, asked)} differs from the {_shown(field.name, have)} "
                f"of the function that {self.created_by or 'another association'} created for this stack "
                f"({self.node.path}); all UserStackAssociations of a stack share one function: give "
                f"{field.name} to the first of them, and the same value or none to the others"
            )
        return problems

    def conflicts(self, *, stack_name: str, authentication_type: str, user_names: list[str]) -> list[str]:
        """Return problems for users that another association of this stack already manages.

        Two custom resources managing the same association would undo each other (deleting or
        updating one removes the other's user). Unresolved tokens cannot be compared: skipped.
        """
        if any(is_unresolved(value) for value in (stack_name, authentication_type)):
            return []
        if is_unresolved(user_names):
            return []
        clashes: dict[str, list[str]] = {}
        for user in user_names:
            owner = self._registered_users.get((stack_name, authentication_type, user))
            if owner is not None and not is_unresolved(user):
                clashes.setdefault(owner, []).append(user)
        return [
            f"user_names {users[:5]!r}{' and more' if len(users) > 5 else ''} are already associated with "
            f"stack {stack_name!r} ({authentication_type}) by {owner}; manage each user of a stack in one "
            "UserStackAssociation only"
            for owner, users in clashes.items()
        ]

    def stack_policy(self, stack_name: str, owner_path: str) -> iam.Policy:
        """The policy allowing the batch actions on one AppStream stack, one per stack name.

        One policy per literal name, with a construct id derived from the name, rather than one
        policy listing every name: when an association's stack is renamed or the association
        removed, the policy of the old name leaves the template, and CloudFormation deletes it
        only after the custom resources that depend on it were updated or deleted, so
        disassociating from the old stack is still allowed then. A name that is a token cannot
        be read at construction: its policy is keyed on the association (``owner_path``).
        """
        key = f"path:{owner_path}" if is_unresolved(stack_name) else f"name:{stack_name}"
        policy = self._stack_policies.get(key)
        if policy is None:
            digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12].upper()
            arn = Stack.of(self).format_arn(service="appstream", resource="stack", resource_name=stack_name)
            policy = iam.Policy(
                self,
                f"StackPolicy{digest}",
                statements=[iam.PolicyStatement(actions=list(BATCH_ACTIONS), resources=[arn])],
                roles=[self.role],
            )
            self._stack_policies[key] = policy
        return policy

    def register(self, association: UserStackAssociation) -> None:
        """Remember the association and its users (for ordering, timeouts and conflicts)."""
        self.associations.append(association)
        stack_name = association.stack_name
        authentication_type = association.authentication_type
        if is_unresolved(stack_name) or is_unresolved(authentication_type):
            return
        if is_unresolved(association.user_names):
            return
        path = association.node.path
        for user in association.user_names:
            if not is_unresolved(user):
                self._registered_users[(stack_name, authentication_type, user)] = path

    # Timeouts ---------------------------------------------------------------------------------

    def needed_seconds(self) -> int:
        """Seconds the function needs for the largest shard it serves (see :mod:`_timing`)."""
        users_per_stack: dict[str, int] = {}
        for association in self.associations:
            users_per_stack[association.stack_name] = users_per_stack.get(association.stack_name, 0) + sum(
                association._shard_sizes_for_timing()
            )
        work = 0
        for association in self.associations:
            # A token (a float) counts as one call at a time.
            concurrency = association.max_concurrency if isinstance(association.max_concurrency, int) else 1
            stack_users = users_per_stack[association.stack_name]
            for users in association._shard_sizes_for_timing():
                work = max(work, _timing.shard_work_seconds(users, concurrency, stack_users))
        return _timing.needed_seconds(work)

    def timeout_seconds(self) -> int:
        """The function's timeout in seconds: the given one, or the one sized to the work."""
        if self.settings.timeout is not None:
            return math.ceil(self.settings.timeout.to_seconds())
        return _timing.function_timeout_seconds(self.needed_seconds())

    def default_service_timeout_seconds(self) -> int:
        """``ServiceTimeout`` of custom resources that do not set ``service_timeout``."""
        return _timing.default_service_timeout_seconds(self.timeout_seconds())

    def finalize(self) -> None:
        """Synthesis-time work over every association of the stack (run once, from an aspect)."""
        order_associations(Stack.of(self), self.associations)
        needed = self.needed_seconds()
        timeout = self.timeout_seconds()
        if needed > timeout and not self._finalized_warning:
            self._finalized_warning = True
            Annotations.of(self.function).add_warning_v2(
                "appstream-usa:timeout-short",
                f"the largest shard may need about {needed} s in the worst case (every AppStream call "
                f"slow), more than the function's timeout of {timeout} s: the handler stops early, "
                "undoes its work and fails the deployment. Raise max_concurrency, use more shards, "
                "or raise timeout",
            )
