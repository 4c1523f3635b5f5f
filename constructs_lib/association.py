"""``UserStackAssociation``: associate a list of users with one AppStream 2.0 stack."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import jsii
from aws_cdk import CfnResource, CustomResource, Duration, INumberProducer, IResolveContext, Lazy, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs_lib import _sharding
from constructs_lib._handler import rules
from constructs_lib._provider import AssociationProvider
from constructs_lib._records import Declaration, ShardRecord
from constructs_lib._validation import (
    AssociationValidationError,
    FunctionSettings,
    ServiceTimeoutCheck,
    settings_conflicts,
    sort_user_names,
    validate_association,
)

RESOURCE_TYPE = rules.RESOURCE_TYPE
"""CloudFormation type of the custom resource."""


@jsii.implements(INumberProducer)
class _ServiceTimeoutProducer:
    """The default ``ServiceTimeout``, derived from the function's timeout at synthesis."""

    def __init__(self, provider: AssociationProvider) -> None:
        self._provider = provider

    def produce(self, context: IResolveContext) -> int:
        return self._provider.default_service_timeout_seconds()


class UserStackAssociation(Construct):
    """Associates users with an Amazon AppStream 2.0 stack through a custom resource.

    Creates one ``Custom::AppStreamUserStackAssociation`` (construct id ``Resource``) that calls
    ``BatchAssociateUserStack`` / ``BatchDisassociateUserStack`` for the whole list, so that
    hundreds of users cost one CloudFormation resource. A list too large for one resource
    (CloudFormation sends old and new properties in one Lambda request of at most 256 KiB) is
    split over ``shards`` resources: ``Resource`` for shard 0, ``Shard1``, ``Shard2``, ... for the
    others; each user's shard depends on its name only, so adding a user changes one shard.

    What the templates declare is what AppStream holds, through every CloudFormation path: the
    handler keeps a record of what each resource claims in a DynamoDB table (the *state store*),
    so a rollback withdraws exactly the grants the failed deployment made (whatever physical id
    CloudFormation sends), a user moved between two associations, a renamed construct or a
    changed ``shards`` never loses access in between, and stale, duplicate or foreign events
    change nothing. See the README's "How it keeps AppStream equal to the templates".

    All associations of a CDK stack share one Lambda function, its log group, role, policies,
    state table and deployment marker, created under the stack with the id
    ``AppStreamUserStackAssociationProvider``; the batch actions are allowed only on the AppStream
    stacks those associations name. Function-level settings (``runtime``, ``timeout``, ``role``,
    ``log_retention``, ``log_removal_policy``, ``state_table``) are taken from the first
    association of the stack; later ones may repeat them or leave them out, and a different value
    is an error.

    When the same CDK stack declares the AppStream stack (``aws_appstream.CfnStack``) or a user
    (``aws_appstream.CfnUser``) that an association names, by reference or by the same literal
    name, the association is created after them and deleted before them. AppStream may not see a
    user or stack for a few seconds after creating it; the handler waits for up to 30 s.

    Several associations (in one stack, or in stacks that share one ``state_table``) may declare
    the same user on the same AppStream stack: it stays associated while any of them declares it.
    Two stacks of one app that declare the same user with separate state stores are a synthesis
    error (each would remove the user on its own).

    The order of ``user_names`` does not matter: the names are sorted, so reordering them changes
    nothing in the template.

    :param scope: parent construct; must be inside a ``Stack``.
    :param id: construct id.
    :param stack_name: name (not ARN) of the AppStream stack, e.g. ``CfnStack.ref`` or a literal
        name. May be a token.
    :param user_names: user names (for user-pool users: their e-mail addresses, which are
        case-sensitive). Each may be a token; the list may be a token-encoded list, e.g.
        ``CfnParameter.value_as_list``, which is passed through unchecked (``shards`` must then be 1).
    :param authentication_type: one of ``API``, ``SAML``, ``USERPOOL``, ``AWS_AD``.
        Default: ``"USERPOOL"``.
    :param send_email_notification: whether AppStream e-mails each user when associated (user pool
        only; never when access is only put back by an undo or a rollback). Default: ``False``.
    :param max_concurrency: how many batch API calls the function runs in parallel for each
        resource, 1 to 16 (1 = one at a time). Default: ``4``.
    :param shards: how many custom resources share the users: 1, 2, 4, 8, 16, 32 or 64. Each must
        carry at most 120,000 bytes of user names (about 900 names of 128 characters, 3,800 of 28);
        synthesis fails with the count to use otherwise. It may be raised or lowered in any
        deployment. Default: ``1``.
    :param existing_associations: what becomes of an association that existed in AppStream before
        this construct declared it: ``"adopt"`` (kept if the deployment that declares it rolls back;
        managed like the others once it succeeded: removed when a later deployment stops
        declaring it, or the stack is deleted) or ``"keep"`` (never removed by this association).
        Default: ``"adopt"``.
    :param service_timeout: how long CloudFormation waits for the function's answer before failing
        the deployment, 1 s to 1 hour, at least the function's timeout plus 60 s. Default: twice the
        function's timeout plus 2 minutes, at most 1 hour.
    :param timeout: (function-level) the function's timeout, 60 s to 15 minutes. Default: sized to
        the largest resource in the stack (see the README's "Sizing"), rounded up to 2, 3, 4, 5, 7,
        10 or 15 minutes.
    :param runtime: (function-level) Python runtime of the function, 3.11 or newer.
        Default: the newest Python runtime that aws-cdk-lib knows.
    :param role: (function-level) execution role of the function; the provider's policies are
        attached to it (an immutable imported role gets none: grant the permissions of
        :attr:`policy` and :attr:`stack_policy` yourself). Default: a new role trusted by Lambda,
        with no managed policy.
    :param log_retention: (function-level) retention of the function's log group.
        Default: ``RetentionDays.ONE_YEAR``.
    :param log_removal_policy: (function-level) what happens to the log group when it leaves the
        stack. Default: ``RemovalPolicy.RETAIN`` (the logs of the Delete calls survive).
    :param state_table: (function-level) the state store to use, shared with other stacks that
        declare some of the same associations: a DynamoDB table with string keys ``pk`` (partition)
        and ``sk`` (sort), TTL attribute ``expires`` recommended. Default: a table of this stack's
        own (on-demand, point-in-time recovery, encrypted), deleted with the stack after every
        association.
    :raises ValueError: (an ``AssociationValidationError``) listing every invalid argument.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stack_name: str,
        user_names: Sequence[str],
        authentication_type: str = "USERPOOL",
        send_email_notification: bool = False,
        max_concurrency: int = rules.DEFAULT_MAX_CONCURRENCY,
        shards: int = 1,
        existing_associations: str = "adopt",
        service_timeout: Duration | None = None,
        timeout: Duration | None = None,
        runtime: lambda_.Runtime | None = None,
        role: iam.IRole | None = None,
        log_retention: logs.RetentionDays | None = None,
        log_removal_policy: RemovalPolicy | None = None,
        state_table: dynamodb.ITable | None = None,
    ) -> None:
        path = f"{scope.node.path}/{id}" if scope.node.path else id
        problems = validate_association(
            stack_name=stack_name,
            user_names=user_names,
            authentication_type=authentication_type,
            send_email_notification=send_email_notification,
            max_concurrency=max_concurrency,
            shards=shards,
            service_timeout=service_timeout,
            timeout=timeout,
            runtime=runtime,
            role=role,
            log_retention=log_retention,
            log_removal_policy=log_removal_policy,
            existing_associations=existing_associations,
            state_table=state_table,
        )
        settings = FunctionSettings(
            runtime=runtime,
            timeout=timeout,
            role=role,
            log_retention=log_retention,
            log_removal_policy=log_removal_policy,
            state_table=state_table,
        )
        existing = None if problems else AssociationProvider.find(scope)
        if existing is not None:
            problems += settings_conflicts(
                existing.settings, settings, created_by=existing.created_by, where=existing.node.path
            )
        if problems:
            # Raised before the construct joins the tree, so a failed call leaves nothing behind.
            raise AssociationValidationError(path, problems)
        sorted_names = sort_user_names(user_names)
        plan = _sharding.plan_shards(sorted_names, shards)

        super().__init__(scope, id)
        self.stack_name: str = stack_name
        """Name of the AppStream stack (may be a token)."""
        self.user_names: list[str] = sorted_names
        """The user names as sent to CloudFormation: literal names sorted, then tokens."""
        self.authentication_type: str = authentication_type
        """The users' authentication type."""
        self.send_email_notification: bool = send_email_notification
        """Whether AppStream e-mails users when they are associated."""
        self.max_concurrency: int = max_concurrency
        """Parallel batch calls per custom resource."""
        self.shards: int = shards
        """Number of shards the users are split into (not all need a resource)."""
        self.existing_associations: str = existing_associations
        """What becomes of associations that existed before they were declared (``adopt`` or ``keep``)."""

        provider = AssociationProvider.of(self, settings, requester=self.node.path)
        self.function: lambda_.Function = provider.function
        """The Lambda function behind the custom resources (shared by the stack's associations)."""
        self.role: iam.IRole = provider.role
        """The function's execution role (shared by the stack's associations)."""
        self.policy: iam.Policy = provider.policy
        """The function's base policy: Describe, its logs, the state table, reads of its own stack (shared)."""
        self.log_group: logs.LogGroup = provider.log_group
        """The function's log group (shared by the stack's associations)."""
        self.state_table: dynamodb.ITable = provider.table
        """The state store (shared by the stack's associations; possibly with other stacks)."""
        self.deployment: CustomResource = provider.deployment
        """The stack's deployment marker, which every association resource depends on."""
        stack_policy = provider.stack_policy(stack_name, self.node.path)
        self.stack_policy: iam.Policy | iam.CfnRolePolicy = stack_policy
        """The policy allowing the batch actions on this association's AppStream stack (an
        ``AWS::IAM::RolePolicy`` named after the stack when ``stack_name`` is a token)."""

        self.resources: list[CustomResource] = []
        """The ``Custom::AppStreamUserStackAssociation`` resources, one per shard holding users, by shard number."""
        self.shard_numbers: list[int] = []
        """The shard number of each of :attr:`resources`."""
        self.shard_user_names: list[list[str]] = []
        """The user names of each of :attr:`resources`."""
        invoke_config = provider.function.node.try_find_child("EventInvokeConfig")
        records: list[ShardRecord] = []
        for number, users in enumerate(plan.shards):
            if not users:
                continue
            properties = {
                "StackName": stack_name,
                "UserNames": list(users),
                "AuthenticationType": authentication_type,
                "SendEmailNotification": send_email_notification,
                "MaxConcurrency": max_concurrency,
                "ExistingAssociations": existing_associations,
                "ConstructPath": self.node.path,
            }
            resource = CustomResource(
                self,
                "Resource" if number == 0 else f"Shard{number}",
                service_token=provider.function.function_arn,
                resource_type=RESOURCE_TYPE,
                properties=properties,
            )
            cfn_resource = resource.node.default_child
            assert isinstance(cfn_resource, CfnResource)
            cfn_resource.add_property_override(
                "ServiceTimeout",
                int(service_timeout.to_seconds())
                if service_timeout is not None
                else Lazy.uncached_number(_ServiceTimeoutProducer(provider)),
            )
            # The policies must exist before the association runs and outlive it: CloudFormation
            # deletes (and, for a renamed stack, replaces) them only after the association is done.
            resource.node.add_dependency(provider.policy, stack_policy)
            if invoke_config is not None:  # no Lambda retries, even for the first Create and last Delete
                resource.node.add_dependency(invoke_config)
            self.resources.append(resource)
            self.shard_numbers.append(number)
            self.shard_user_names.append(list(users))
            records.append(ShardRecord(number, resource, tuple(users), properties))

        self.resource: CustomResource = self.resources[0]
        """The custom resource of shard 0 (construct id ``Resource``): the only one unless ``shards`` > 1."""
        if service_timeout is not None:
            self.node.add_validation(ServiceTimeoutCheck(provider.timeout_seconds, service_timeout))
        provider.register(
            Declaration(
                path=self.node.path,
                stack_name=stack_name,
                authentication_type=authentication_type,
                max_concurrency=max_concurrency,
                shards=tuple(records),
            )
        )


# jsii's metaclass hides the constructor's signature from help() and inspect: show the real one.
_INIT = inspect.signature(UserStackAssociation.__init__)
UserStackAssociation.__signature__ = _INIT.replace(parameters=list(_INIT.parameters.values())[1:])
