"""The per-stack backing function shared by every ``UserStackAssociation`` of a CDK stack.

One :class:`AssociationProvider` lives directly under the stack with the fixed id
:data:`PROVIDER_ID`. It holds the Lambda ``Function``, its ``LogGroup``, its ``Role`` (no
managed policies) and one ``iam.Policy`` holding every permission of the function, whose
AppStream batch permissions grow as associations register their stack names.

Function-level settings live in :class:`ProviderSettings`. A second caller asking for
different settings is rejected loudly instead of being silently ignored (aws-cdk#13601).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Acknowledgment, Annotations, Duration, Stack, Token, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

from constructs_lib import _asset

PROVIDER_ID = "AppStreamUserStackAssociationProvider"
"""Construct id of the shared provider, directly under the stack (public contract)."""

BATCH_ACTIONS = ("appstream:BatchAssociateUserStack", "appstream:BatchDisassociateUserStack")
DESCRIBE_ACTION = "appstream:DescribeUserStackAssociations"
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")


@dataclass(frozen=True)
class ProviderSettings:
    """Settings of the shared function. Equal settings share one provider per stack.

    Not exposed by ``UserStackAssociation`` yet; every field has the value the construct uses.
    Adding a public knob later means: add a field here, pass it from the construct, and the
    conflict check in :meth:`AssociationProvider.of` keeps callers from overriding each other.
    """

    runtime_name: str = "python3.14"
    architecture_name: str = "arm64"
    timeout_seconds: int = 300
    memory_size_mib: int = 256
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR
    environment: tuple[tuple[str, str], ...] = (("LOG_LEVEL", "INFO"),)


_RUNTIMES: dict[str, lambda_.Runtime] = {"python3.14": lambda_.Runtime.PYTHON_3_14}
_ARCHITECTURES: dict[str, lambda_.Architecture] = {"arm64": lambda_.Architecture.ARM_64}


class AssociationProvider(Construct):
    """Shared function, role and policy backing ``Custom::AppStreamUserStackAssociation``.

    Use :meth:`of` rather than the constructor.
    """

    def __init__(self, scope: Stack, construct_id: str, *, settings: ProviderSettings) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        self._stack_names: set[str] = set()
        self._registered_users: dict[tuple[str, str, str], str] = {}

        # An explicit log group, created before the function (the function references it), so
        # that the first invocation cannot race CloudFormation into creating it (which would
        # fail with "already exists", as can happen with @aws-cdk/aws-lambda:useCdkManagedLogGroup).
        # Kept on stack deletion (CDK's default) so that the logs of the Delete calls survive.
        self.log_group = logs.LogGroup(self, "LogGroup", retention=settings.log_retention)

        # No managed policy: everything the function may do is in the one Policy below, which the
        # custom resources depend on, so it outlives them on deletion (logs included).
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Runs the AppStream user-stack association custom resource handler",
        )

        self._batch_statement = iam.PolicyStatement(actions=list(BATCH_ACTIONS), resources=[])
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
            statements=[self._batch_statement, describe_statement, logs_statement],
            roles=[self.role],
        )
        Validations.of(self.policy.node.default_child).acknowledge(  # type: ignore[arg-type]
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason=f"{DESCRIBE_ACTION} has no resource type and can only be granted on '*'; "
                "the batch actions are limited to the named AppStream stacks",
            )
        )

        staged = _asset.stage_asset()
        if not _asset.has_handler_module(staged):
            Annotations.of(self).add_warning_v2(
                "appstream-usa:missing-handler",
                f"the Lambda asset {str(staged)!r} has no {_asset.HANDLER_MODULE}: the handler "
                "index.handler will fail at run time and CloudFormation will wait for a response",
            )
        self.function = lambda_.Function(
            self,
            "Function",
            description="Manages AppStream 2.0 user-stack associations (Custom::AppStreamUserStackAssociation)",
            runtime=_RUNTIMES[settings.runtime_name],
            architecture=_ARCHITECTURES[settings.architecture_name],
            handler="index.handler",
            code=lambda_.Code.from_asset(str(staged)),
            timeout=Duration.seconds(settings.timeout_seconds),
            memory_size=settings.memory_size_mib,
            environment=dict(settings.environment),
            role=self.role,
            log_group=self.log_group,
        )

    @classmethod
    def of(cls, scope: IConstruct, settings: ProviderSettings | None = None) -> AssociationProvider:
        """Return the stack's provider, creating it on first use.

        :raises ValueError: if the provider exists with different settings.
        """
        wanted = settings or ProviderSettings()
        existing = cls.find(scope)
        if existing is None:
            return cls(Stack.of(scope), PROVIDER_ID, settings=wanted)
        if existing.settings != wanted:
            raise ValueError(
                f"{existing.node.path} already exists with settings {existing.settings!r}; "
                f"cannot share it with settings {wanted!r}. All UserStackAssociations of one "
                "stack share one function: give them the same function settings, or put them "
                "in different stacks"
            )
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

    def conflicts(self, *, stack_name: str, authentication_type: str, user_names: list[str]) -> list[str]:
        """Return problems for users that another association of this stack already manages.

        Two custom resources managing the same association would undo each other (deleting or
        updating one removes the other's user). Unresolved tokens cannot be compared: skipped.
        """
        if any(Token.is_unresolved(value) for value in (stack_name, authentication_type)):
            return []
        clashes: dict[str, list[str]] = {}
        for user in user_names:
            owner = self._registered_users.get((stack_name, authentication_type, user))
            if owner is not None and not Token.is_unresolved(user):
                clashes.setdefault(owner, []).append(user)
        return [
            f"user_names {users!r} are already associated with stack {stack_name!r} "
            f"({authentication_type}) by {owner}; manage each user of a stack in one "
            "UserStackAssociation only"
            for owner, users in clashes.items()
        ]

    def register(self, *, path: str, stack_name: str, authentication_type: str, user_names: list[str]) -> None:
        """Grant the batch actions on ``stack_name`` and remember which users ``path`` manages."""
        if stack_name not in self._stack_names:
            self._stack_names.add(stack_name)
            arn = Stack.of(self).format_arn(service="appstream", resource="stack", resource_name=stack_name)
            self._batch_statement.add_resources(arn)
        if not Token.is_unresolved(stack_name) and not Token.is_unresolved(authentication_type):
            for user in user_names:
                if not Token.is_unresolved(user):
                    self._registered_users[(stack_name, authentication_type, user)] = path
