"""``UserStackAssociation``: associate a list of users with one AppStream 2.0 stack."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import CustomResource
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from constructs_lib._provider import AssociationProvider
from constructs_lib._validation import AssociationValidationError, sort_user_names, validate_association

RESOURCE_TYPE = "Custom::AppStreamUserStackAssociation"
"""CloudFormation type of the custom resource."""


class UserStackAssociation(Construct):
    """Associates users with an Amazon AppStream 2.0 stack through one custom resource.

    Creates one ``Custom::AppStreamUserStackAssociation`` (construct id ``Resource``) that
    calls ``BatchAssociateUserStack`` / ``BatchDisassociateUserStack`` for the whole list,
    so that hundreds of users cost one CloudFormation resource. All associations of a CDK
    stack share one Lambda function, role and policy, created under the stack with the id
    ``AppStreamUserStackAssociationProvider``; the policy allows the batch actions only on
    the AppStream stacks that those associations name.

    The order of ``user_names`` does not matter: the names are sorted, so reordering them
    changes nothing in the template.

    :param scope: parent construct; must be inside a ``Stack``.
    :param id: construct id.
    :param stack_name: name (not ARN) of the AppStream stack, e.g. ``CfnStack.ref``
        or a literal name. May be a token.
    :param user_names: user names (for user-pool users: their e-mail addresses, which are
        case-sensitive). Each may be a token; the list may be a token-encoded list, e.g.
        ``CfnParameter.value_as_list``, which is passed through unchecked.
    :param authentication_type: one of ``API``, ``SAML``, ``USERPOOL``, ``AWS_AD``.
        Default: ``"USERPOOL"``.
    :param send_email_notification: whether AppStream e-mails each user when associated
        (user pool only). Default: ``False``.
    :param max_concurrency: how many batch API calls the function runs in parallel,
        1 to 16 (1 = one at a time). Default: ``4``.
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
    ) -> None:
        path = f"{scope.node.path}/{id}" if scope.node.path else id
        problems = validate_association(
            stack_name=stack_name,
            user_names=user_names,
            authentication_type=authentication_type,
            send_email_notification=send_email_notification,
            max_concurrency=max_concurrency,
        )
        sorted_names = [] if problems else sort_user_names(user_names)
        existing = None if problems else AssociationProvider.find(scope)
        if existing is not None:
            problems += existing.conflicts(
                stack_name=stack_name, authentication_type=authentication_type, user_names=sorted_names
            )
        if problems:
            # Raised before the construct joins the tree, so a failed call leaves nothing behind.
            raise AssociationValidationError(path, problems)

        super().__init__(scope, id)
        self.stack_name: str = stack_name
        """Name of the AppStream stack (may be a token)."""
        self.user_names: list[str] = sorted_names
        """The user names as sent to CloudFormation: literal names sorted, then tokens."""
        self.authentication_type: str = authentication_type
        self.send_email_notification: bool = send_email_notification
        self.max_concurrency: int = max_concurrency

        provider = AssociationProvider.of(self)
        provider.register(
            path=self.node.path,
            stack_name=stack_name,
            authentication_type=authentication_type,
            user_names=sorted_names,
        )
        self.function: lambda_.Function = provider.function
        """The Lambda function behind the custom resource (shared by the stack's associations)."""
        self.role: iam.IRole = provider.role
        """The function's execution role (shared by the stack's associations)."""

        self.resource = CustomResource(
            self,
            "Resource",
            service_token=provider.function.function_arn,
            resource_type=RESOURCE_TYPE,
            properties={
                "StackName": stack_name,
                "UserNames": sorted_names,
                "AuthenticationType": authentication_type,
                "SendEmailNotification": send_email_notification,
                "MaxConcurrency": max_concurrency,
            },
        )
        """The ``Custom::AppStreamUserStackAssociation`` resource."""
        # On stack deletion CloudFormation must delete the association before the policy that
        # allows BatchDisassociateUserStack; on creation the policy must exist first.
        self.resource.node.add_dependency(provider.policy)
