"""``UserStackAssociation``: associate a list of users with one AppStream 2.0 stack."""

from __future__ import annotations

from collections.abc import Sequence

import jsii
from aws_cdk import CfnResource, CustomResource, Duration, INumberProducer, IResolveContext, Lazy, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IValidation

from constructs_lib import _sharding, _timing
from constructs_lib._handler import rules
from constructs_lib._provider import AssociationProvider, FunctionSettings
from constructs_lib._tokens import is_unresolved
from constructs_lib._validation import AssociationValidationError, sort_user_names, validate_association

RESOURCE_TYPE = rules.RESOURCE_TYPE
"""CloudFormation type of the custom resource."""


@jsii.implements(IValidation)
class _ServiceTimeoutCheck:
    """A given ``service_timeout`` must outlast the function's timeout (known only at synthesis)."""

    def __init__(self, provider: AssociationProvider, service_timeout: Duration) -> None:
        self._provider = provider
        self._seconds = int(service_timeout.to_seconds())

    def validate(self) -> list[str]:
        timeout = self._provider.timeout_seconds()
        least = timeout + _timing.SERVICE_TIMEOUT_MARGIN_SECONDS
        if self._seconds >= least:
            return []
        return [
            f"service_timeout is {self._seconds} s but the stack's association function may run "
            f"{timeout} s: CloudFormation would give up before the answer; give at least {least} s "
            "or leave service_timeout out"
        ]


@jsii.implements(INumberProducer)
class _ServiceTimeoutProducer:
    """The default ``ServiceTimeout``, derived from the function's timeout at synthesis."""

    def __init__(self, provider: AssociationProvider) -> None:
        self._provider = provider

    def produce(self, context: IResolveContext) -> int:
        return self._provider.default_service_timeout_seconds()


class UserStackAssociation(Construct):
    """Associates users with an Amazon AppStream 2.0 stack through a custom resource.

    Creates one ``Custom::AppStreamUserStackAssociation`` (construct id ``Resource``) that
    calls ``BatchAssociateUserStack`` / ``BatchDisassociateUserStack`` for the whole list, so
    that hundreds of users cost one CloudFormation resource. A list too large for one resource
    (CloudFormation sends old and new properties in one Lambda request of at most 256 KiB) is
    split over ``shards`` resources: ``Resource`` for shard 0, ``Shard1``, ``Shard2``, ... for
    the others; each user's shard depends on its name only, so adding a user changes one shard.

    All associations of a CDK stack share one Lambda function, its log group, role and policy,
    created under the stack with the id ``AppStreamUserStackAssociationProvider``; the policy
    allows the batch actions only on the AppStream stacks that those associations name.
    Function-level settings (``runtime``, ``timeout``, ``role``, ``log_retention``,
    ``log_removal_policy``) are taken from the first association of the stack; later ones may
    repeat them or leave them out, and a different value is an error.

    When the same CDK stack declares the AppStream stack (``aws_appstream.CfnStack``) or a user
    (``aws_appstream.CfnUser``) that an association names, by reference or by the same literal
    name, the association is created after them and deleted before them, wherever they are
    declared.

    The order of ``user_names`` does not matter: the names are sorted, so reordering them
    changes nothing in the template.

    **Lowering shards.** A deployed association must not lower ``shards`` in one deployment:
    CloudFormation deletes the resources of the dropped shards last, and their Delete would
    disassociate users now held by the remaining shards. Instead: (1) deploy with the old
    ``shards`` after calling ``apply_removal_policy(RemovalPolicy.RETAIN)`` on every
    resource of :attr:`resources` whose shard number is at least the new count
    (``shard_numbers``); (2) deploy with the new ``shards`` and the same users; (3) then change
    users as usual. Raising ``shards`` is safe in one deployment (moved users are disassociated
    for the few seconds between their old shard's update and their new shard's creation).

    **Construct ids are part of the contract.** Renaming or moving an association, like lowering
    ``shards``, creates new resources and deletes the old ones last: its users would end up
    disassociated.

    :param scope: parent construct; must be inside a ``Stack``.
    :param id: construct id.
    :param stack_name: name (not ARN) of the AppStream stack, e.g. ``CfnStack.ref`` or a
        literal name. May be a token.
    :param user_names: user names (for user-pool users: their e-mail addresses, which are
        case-sensitive). Each may be a token; the list may be a token-encoded list, e.g.
        ``CfnParameter.value_as_list``, which is passed through unchecked (``shards`` must then be 1).
    :param authentication_type: one of ``API``, ``SAML``, ``USERPOOL``, ``AWS_AD``.
        Default: ``"USERPOOL"``.
    :param send_email_notification: whether AppStream e-mails each user when associated
        (user pool only). Default: ``False``.
    :param max_concurrency: how many batch API calls the function runs in parallel for each
        resource, 1 to 16 (1 = one at a time). Default: ``4``.
    :param shards: how many custom resources share the users: 1, 2, 4, 8, 16, 32 or 64. Each must
        carry at most 120,000 bytes of user names (about 900 names of 128 characters, 3,800 of
        28), and shards 0 to ``shards/2 - 1`` must each hold a user; synthesis fails with the
        count to use otherwise. Never lower it in one deployment (see above). Default: ``1``.
    :param service_timeout: how long CloudFormation waits for the function's answer before
        failing the deployment, 1 s to 1 hour, at least the function's timeout plus 60 s.
        Default: twice the function's timeout plus 2 minutes (one run, one retry by Lambda),
        at most 1 hour.
    :param timeout: (function-level) the function's timeout, 30 s to 15 minutes. Default: sized
        to the largest resource in the stack: ``60 s + 2 * 13 s * (describe pages + batch
        rounds)``, rounded up to 2, 3, 4, 5, 7, 10 or 15 minutes.
    :param runtime: (function-level) Python runtime of the function, 3.11 or newer.
        Default: the newest Python runtime that aws-cdk-lib knows.
    :param role: (function-level) execution role of the function; the provider's policy is
        attached to it (an immutable imported role gets no policy: grant the permissions of
        :attr:`policy` yourself). Default: a new role trusted by Lambda, with no managed policy.
    :param log_retention: (function-level) retention of the function's log group.
        Default: ``RetentionDays.ONE_YEAR``.
    :param log_removal_policy: (function-level) what happens to the log group when it leaves
        the stack. Default: ``RemovalPolicy.RETAIN`` (the logs of the Delete calls survive).
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
        max_concurrency: int = 4,
        shards: int = 1,
        service_timeout: Duration | None = None,
        timeout: Duration | None = None,
        runtime: lambda_.Runtime | None = None,
        role: iam.IRole | None = None,
        log_retention: logs.RetentionDays | None = None,
        log_removal_policy: RemovalPolicy | None = None,
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
        )
        settings = FunctionSettings(
            runtime=runtime,
            timeout=timeout,
            role=role,
            log_retention=log_retention,
            log_removal_policy=log_removal_policy,
        )
        sorted_names = [] if problems else sort_user_names(user_names)
        plan = None if problems else _sharding.plan_shards(sorted_names, shards)
        if plan is not None:
            problems += plan.problems
        existing = None if problems else AssociationProvider.find(scope)
        if existing is not None:
            problems += existing.settings_conflicts(settings)
            problems += existing.conflicts(
                stack_name=stack_name, authentication_type=authentication_type, user_names=sorted_names
            )
        if problems:
            # Raised before the construct joins the tree, so a failed call leaves nothing behind.
            raise AssociationValidationError(path, problems)
        assert plan is not None

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

        provider = AssociationProvider.of(self, settings, requester=self.node.path)
        self._provider = provider
        self.function: lambda_.Function = provider.function
        """The Lambda function behind the custom resources (shared by the stack's associations)."""
        self.role: iam.IRole = provider.role
        """The function's execution role (shared by the stack's associations)."""
        self.policy: iam.Policy = provider.policy
        """The function's base policy: DescribeUserStackAssociations and its logs (shared)."""
        self.log_group: logs.LogGroup = provider.log_group
        """The function's log group (shared by the stack's associations)."""

        self.resources: list[CustomResource] = []
        """The ``Custom::AppStreamUserStackAssociation`` resources, one per shard holding users, by shard number."""
        self.shard_numbers: list[int] = []
        """The shard number of each of :attr:`resources`."""
        self.shard_user_names: list[list[str]] = []
        """The user names of each of :attr:`resources`."""
        stack_policy = provider.stack_policy(stack_name, self.node.path)
        self.stack_policy: iam.Policy = stack_policy
        """The policy allowing the batch actions on this association's AppStream stack."""
        invoke_config = provider.function.node.try_find_child("EventInvokeConfig")
        by_shard: dict[int, CustomResource] = {}
        for number, users in enumerate(plan.shards):
            if not users:
                continue
            resource = CustomResource(
                self,
                "Resource" if number == 0 else f"Shard{number}",
                service_token=provider.function.function_arn,
                resource_type=RESOURCE_TYPE,
                properties={
                    "StackName": stack_name,
                    "UserNames": list(users),
                    "AuthenticationType": authentication_type,
                    "SendEmailNotification": send_email_notification,
                    "MaxConcurrency": max_concurrency,
                },
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
            # A shard is created/updated after the shard it split from (see _sharding).
            for ancestor in _sharding.ancestors(number):
                if ancestor in by_shard:
                    resource.node.add_dependency(by_shard[ancestor])
                    break
            by_shard[number] = resource
            self.resources.append(resource)
            self.shard_numbers.append(number)
            self.shard_user_names.append(list(users))

        self._timing_sizes = tuple(
            _timing.UNKNOWN_LIST_USERS if is_unresolved(users) else len(users) for users in self.shard_user_names
        )
        self.resource: CustomResource = self.resources[0]
        """The custom resource of shard 0 (construct id ``Resource``): the only one unless ``shards`` > 1."""
        if service_timeout is not None:
            self.node.add_validation(_ServiceTimeoutCheck(provider, service_timeout))
        provider.register(self)

    def _shard_sizes_for_timing(self) -> list[int]:
        """Users of each resource, for sizing the function's timeout (a token list: a guess)."""
        return list(self._timing_sizes)
