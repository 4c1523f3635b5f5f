"""The per-stack parts shared by every ``UserStackAssociation`` of a CDK stack.

One :class:`AssociationProvider` lives directly under the stack with the fixed id
:data:`PROVIDER_ID`. It holds the Lambda ``Function``, its ``LogGroup``, its execution role (its
own ``Role`` with no managed policies, or the caller's), the state store (a DynamoDB table of its
own, or the caller's shared one), the deployment marker (one
``Custom::AppStreamUserStackAssociationDeployment`` every association depends on), the base
``Policy`` and one batch policy per AppStream stack name.

Why one function per stack, and not one per combination of settings: a custom resource's
``ServiceToken`` cannot change ("Modifying service token is not allowed"), so a function whose
identity depended on its settings would make every later change of a setting fail the
deployment. The function keeps its logical id; its settings change in place. Function-level
settings (:class:`FunctionSettings`) are therefore shared: the first association of a stack
decides them; a later one may repeat them or leave them out, and a different value is an error
naming both associations (aws-cdk#13601).

The provider does not hold the associations: each registers a frozen
:class:`~constructs_lib._records.Declaration` (see there for why).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import jsii
from aws_cdk import (
    Acknowledgment,
    Annotations,
    Aspects,
    Aws,
    CfnResource,
    CustomResource,
    Duration,
    Fn,
    IAspect,
    IListProducer,
    INumberProducer,
    IResolveContext,
    IStringProducer,
    Lazy,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct, IValidation

from constructs_lib import _asset, _timing
from constructs_lib._handler import rules
from constructs_lib._ordering import order_declarations
from constructs_lib._records import Declaration
from constructs_lib._tokens import is_unresolved
from constructs_lib._validation import FunctionSettings, overlap_problems, python_version, settings_conflicts
from constructs_lib._version import __version__

PROVIDER_ID = "AppStreamUserStackAssociationProvider"
"""Construct id of the shared provider, directly under the stack (public contract)."""

BATCH_ACTIONS = ("appstream:BatchAssociateUserStack", "appstream:BatchDisassociateUserStack")
BATCH_POLICY_NAME_PREFIX = "AppStreamBatch-"
"""Inline policy names for AppStream stack names that are tokens: the prefix, then the name (at most 128)."""
DESCRIBE_ACTION = "appstream:DescribeUserStackAssociations"
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
STATE_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
    "dynamodb:ConditionCheckItem",
)
"""What the handler does to the state table (TransactWriteItems needs UpdateItem and ConditionCheckItem)."""
STACK_READ_ACTIONS = ("cloudformation:DescribeStacks", "cloudformation:DescribeStackResource")
"""What the handler reads of its own stack (the phase and the resource's status)."""

ARCHITECTURE = lambda_.Architecture.ARM_64
MEMORY_SIZE_MIB = 256
# Lambda's minimum: an async event not started within a minute is dropped, not run late.
MAX_EVENT_AGE_SECONDS = 60
TABLE_TTL_ATTRIBUTE = "expires"

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


@jsii.implements(INumberProducer)
class _Number:
    def __init__(self, produce: Any) -> None:
        self._produce = produce

    def produce(self, context: IResolveContext) -> int:
        return int(self._produce())


@jsii.implements(IStringProducer)
class _String:
    def __init__(self, produce: Any) -> None:
        self._produce = produce

    def produce(self, context: IResolveContext) -> str:
        return str(self._produce())


@jsii.implements(IListProducer)
class _List:
    def __init__(self, produce: Any) -> None:
        self._produce = produce

    def produce(self, context: IResolveContext) -> list[str]:
        return list(self._produce())


@jsii.implements(IAspect)
class _Finalize:
    """At synthesis: order associations after declared AppStream stacks/users; check timeouts."""

    def __init__(self, provider: AssociationProvider) -> None:
        self._provider = provider

    def visit(self, node: IConstruct) -> None:
        if node.node.path == self._provider.node.path:
            self._provider.finalize()


@jsii.implements(IValidation)
class _AcrossStacks:
    """Stacks of one app that declare the same association must share one state store."""

    def __init__(self, provider: AssociationProvider) -> None:
        self._provider = provider

    def validate(self) -> list[str]:
        return self._provider.overlap_problems()


def table_identity(table: dynamodb.ITable) -> str:
    """What tells two tables apart at synthesis: the construct path, or the imported name."""
    name = table.table_name
    return f"name:{name}" if not is_unresolved(name) else f"path:{table.node.path}"


class AssociationProvider(Construct):
    """Shared function, role, state store, policies and deployment marker of a stack's associations.

    Use :meth:`of` rather than the constructor.
    """

    def __init__(self, scope: Stack, construct_id: str, *, settings: FunctionSettings, created_by: str) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        """The settings the function was created with (None: default)."""
        self.created_by = created_by
        """Path of the association that created the provider."""
        self.declarations: list[Declaration] = []
        """What every association using this provider declares, in construction order."""
        self._finalized_warning = False
        self._marker: tuple[str, list[str]] | None = None

        # An explicit log group, created before the function (the function references it), so
        # that the first invocation cannot race CloudFormation into creating it.
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=settings.log_retention or DEFAULT_LOG_RETENTION,
            removal_policy=settings.log_removal_policy or DEFAULT_LOG_REMOVAL_POLICY,
        )
        self.role: iam.IRole = settings.role or iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Runs the AppStream user-stack association custom resource handler",
        )
        self.table: dynamodb.ITable = settings.state_table or dynamodb.Table(
            self,
            "State",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=TABLE_TTL_ATTRIBUTE,
            # Deleted with the stack, after every association (they depend on the function, which
            # references the table): the claims it holds mean nothing once the stack is gone.
            removal_policy=RemovalPolicy.DESTROY,
        )
        """The state store: what each association resource claims (see the README's "State store")."""

        self._stack_policies: dict[str, iam.Policy | iam.CfnRolePolicy] = {}
        self.policy = iam.Policy(
            self,
            "Policy",
            statements=[
                # DescribeUserStackAssociations has no resource type: it can only be granted on "*".
                iam.PolicyStatement(actions=[DESCRIBE_ACTION], resources=["*"]),
                # The inline equivalent of AWSLambdaBasicExecutionRole, scoped to the function's
                # log group (its Arn attribute ends in ":*", which covers the log streams).
                iam.PolicyStatement(actions=list(LOG_ACTIONS), resources=[self.log_group.log_group_arn]),
                iam.PolicyStatement(actions=list(STATE_ACTIONS), resources=[self.table.table_arn]),
                # The function's own stack only: the phase of a deployment and a resource's status.
                iam.PolicyStatement(actions=list(STACK_READ_ACTIONS), resources=[Aws.STACK_ID]),
            ],
            roles=[self.role],
        )
        self._acknowledge_describe_wildcard()

        staged = _asset.stage_asset()
        if not _asset.has_handler_module(staged):
            Annotations.of(self).add_warning_v2(
                "appstream-associations:missing-handler",
                f"the Lambda asset {str(staged)!r} has no {_asset.HANDLER_MODULE}: the handler "
                "index.handler will fail at run time and CloudFormation will wait for a response",
            )
        timeout = (
            settings.timeout
            if settings.timeout is not None
            else Duration.seconds(Lazy.uncached_number(_Number(self.timeout_seconds)))
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
            environment={
                "LOG_LEVEL": "INFO",
                "OWN_STACK_ID": Aws.STACK_ID,
                "STATE_TABLE": self.table.table_name,
                "APPSTREAM_ASSOCIATIONS_VERSION": __version__,
            },
            role=self.role,
            log_group=self.log_group,
            # CloudFormation invokes asynchronously. A Lambda retry, or an event that waited in a
            # throttled queue, could run after CloudFormation gave up (ServiceTimeout): the handler
            # answers every event itself, so a late second run is never wanted.
            retry_attempts=0,
            max_event_age=Duration.seconds(MAX_EVENT_AGE_SECONDS),
        )
        function_resource = self.function.node.default_child
        if isinstance(function_resource, CfnResource):
            # lambda.Function adds a DependsOn on its role, which its Role: Fn::GetAtt implies
            # already (cfn-lint W3005): acknowledged here, on this resource only.
            function_resource.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})

        invoke_config = self.function.node.try_find_child("EventInvokeConfig")
        self.deployment = CustomResource(
            self,
            "Deployment",
            service_token=self.function.function_arn,
            resource_type=rules.DEPLOYMENT_RESOURCE_TYPE,
            properties={
                "Generation": Lazy.uncached_string(_String(self._generation)),
                "References": Lazy.uncached_list(_List(self._references)),
            },
        )
        """Marks where each deployment of this stack begins and when it has succeeded."""
        deployment_resource = self.deployment.node.default_child
        assert isinstance(deployment_resource, CfnResource)
        deployment_resource.add_property_override(
            "ServiceTimeout", Lazy.uncached_number(_Number(self.default_service_timeout_seconds))
        )
        self.deployment.node.add_dependency(self.policy)
        if invoke_config is not None:
            self.deployment.node.add_dependency(invoke_config)
        Aspects.of(self).add(_Finalize(self))
        self.node.add_validation(_AcrossStacks(self))

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
        problems = settings_conflicts(
            existing.settings, wanted, created_by=existing.created_by, where=existing.node.path
        )
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

    def stack_policy(self, stack_name: str, owner_path: str) -> iam.Policy | iam.CfnRolePolicy:
        """The policy allowing the batch actions on one AppStream stack, one per stack name.

        Every such policy must outlive the association's last call on its stack: CloudFormation
        disassociates from an old stack only when the deployment succeeded, in its cleanup phase
        (the deployment marker's Delete of its old id, which depends on every stack policy).

        A literal name gets one ``AWS::IAM::Policy`` with a construct id derived from the name:
        when the name changes or the association goes, the policy of the old name leaves the
        template and CloudFormation deletes it in the cleanup phase, after the marker's Delete.

        A name that is a token (``CfnStack.ref``, a parameter, an import) cannot be read at
        synthesis, so its policy is keyed on the association (``owner_path``). It is an
        ``AWS::IAM::RolePolicy`` named after the stack name: a new name changes ``PolicyName``,
        which CloudFormation can only *replace* (create the new one, delete the old one in the
        cleanup phase), so the old stack stays allowed until the marker has disassociated from
        it. An updated ``AWS::IAM::Policy`` would lose the old stack at once. (A role imported
        from another app keeps an ``AWS::IAM::Policy``: an imported role may be immutable.)
        """
        key = f"path:{owner_path}" if is_unresolved(stack_name) else f"name:{stack_name}"
        policy = self._stack_policies.get(key)
        if policy is not None:
            return policy
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12].upper()
        arn = Stack.of(self).format_arn(service="appstream", resource="stack", resource_name=stack_name)
        statement = iam.PolicyStatement(actions=list(BATCH_ACTIONS), resources=[arn])
        if is_unresolved(stack_name) and isinstance(self.role, iam.Role):
            policy = iam.CfnRolePolicy(
                self,
                f"StackPolicy{digest}",
                policy_name=Fn.join("", [BATCH_POLICY_NAME_PREFIX, stack_name]),
                role_name=self.role.role_name,
                policy_document=iam.PolicyDocument(statements=[statement]),
            )
        else:
            policy = iam.Policy(self, f"StackPolicy{digest}", statements=[statement], roles=[self.role])
        self.deployment.node.add_dependency(policy)
        self._stack_policies[key] = policy
        return policy

    def register(self, declaration: Declaration) -> None:
        """Remember what one association declares (for ordering, timeouts and the marker)."""
        self.declarations.append(declaration)
        for shard in declaration.shards:
            shard.resource.node.add_dependency(self.deployment)

    # The deployment marker's properties --------------------------------------------------------

    def _association_properties(self) -> list[Any]:
        stack = Stack.of(self)
        described = []
        for declaration in self.declarations:
            for shard in declaration.shards:
                cfn = shard.resource.node.default_child
                assert isinstance(cfn, CfnResource)
                described.append([stack.resolve(cfn.logical_id), stack.resolve(dict(shard.properties))])
        return described

    def _marker_properties(self) -> tuple[str, list[str]]:
        """The marker's ``Generation`` and ``References``, computed once at synthesis (in :meth:`finalize`)."""
        if self._marker is None:
            text = json.dumps(self._association_properties(), sort_keys=True, separators=(",", ":"), default=str)
            references: list[str] = []
            for declaration in self.declarations:
                for shard in declaration.shards:
                    for value in shard.properties.values():
                        values = value if isinstance(value, list) else [value]
                        references += [item for item in values if isinstance(item, str) and is_unresolved(item)]
            self._marker = (hashlib.sha256(text.encode("utf-8")).hexdigest(), references)
        return self._marker

    def _generation(self) -> str:
        """A digest of every association's properties as synthesized (intrinsics included)."""
        return self._marker_properties()[0]

    def _references(self) -> list[str]:
        """Every value of the associations' properties known only at deployment (Ref, GetAtt, ...).

        CloudFormation resolves them in the marker's properties too, so a deployment that changes
        only what a reference resolves to (a replaced ``CfnStack`` with a new name) updates the
        marker as well, and starts a new epoch like any other.
        """
        return self._marker_properties()[1]

    # Timeouts ---------------------------------------------------------------------------------

    def needed_seconds(self) -> int:
        """Seconds the function needs for the largest shard it serves (see :mod:`_timing`)."""
        shards: list[tuple[str, int, int]] = []
        for declaration in self.declarations:
            key = declaration.stack_name  # a token's string is unique to it
            concurrency = declaration.max_concurrency if isinstance(declaration.max_concurrency, int) else 1
            shards.extend((key, shard.timing_users, concurrency) for shard in declaration.shards)
        return _timing.needed_for_shards(shards)

    def timeout_seconds(self) -> int:
        """The function's timeout in seconds: the given one, or the one sized to the work."""
        if self.settings.timeout is not None:
            return math.ceil(self.settings.timeout.to_seconds())
        return _timing.function_timeout_seconds(self.needed_seconds())

    def default_service_timeout_seconds(self) -> int:
        """``ServiceTimeout`` of custom resources that do not set ``service_timeout``."""
        return _timing.default_service_timeout_seconds(self.timeout_seconds())

    # Synthesis ------------------------------------------------------------------------------

    def finalize(self) -> None:
        """Synthesis-time work over every association of the stack (run once, from an aspect)."""
        order_declarations(Stack.of(self), self.declarations)
        self._marker = None
        self._marker_properties()
        needed = self.needed_seconds()
        timeout = self.timeout_seconds()
        if needed > timeout and not self._finalized_warning:
            self._finalized_warning = True
            Annotations.of(self.function).add_warning_v2(
                "appstream-associations:timeout-short",
                f"the largest shard may need about {needed} s in the worst case (every AppStream call "
                f"slow, or paced at {rules.ASSUMED_CALLS_PER_SECOND:g} call/s), more than the function's "
                f"timeout of {timeout} s: the handler stops early, undoes its work and fails the "
                "deployment. Raise max_concurrency, use more shards, or raise timeout",
            )

    def overlap_problems(self) -> list[str]:
        """Associations this stack declares that another stack of the app declares with another state store."""
        mine = set().union(*(declaration.literal_associations() for declaration in self.declarations))
        if not mine:
            return []
        others = [
            construct
            for construct in self.node.root.node.find_all()
            if isinstance(construct, AssociationProvider) and construct is not self
        ]
        return overlap_problems(
            self.node.path,
            table_identity(self.table),
            mine,
            [
                (
                    other.node.path,
                    table_identity(other.table),
                    set().union(*(declaration.literal_associations() for declaration in other.declarations)),
                )
                for other in others
            ],
        )
