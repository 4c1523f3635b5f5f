#!/usr/bin/env python3
"""Demo CDK app: one stack ``AppStreamUserAssociationsDemo`` with one ``UserStackAssociation``.

Next to it, an SSM parameter records what the stack manages (the AppStream stack and how many
users), for people looking at the account; ``make demo`` also uses it as the resource whose
failure rolls a deploy back.

Settings come from CDK context (``cdk synth -c key=value`` or the ``context`` of cdk.json):

=========================== ================================================ =======================
context key                 meaning                                          default
=========================== ================================================ =======================
``appstream_stack_name``    name of the existing AppStream stack             ``demo-stack``
``appstream_users``         users: comma-separated string or JSON list       ``alice@example.com,``
                                                                             ``bob@example.com,``
                                                                             ``carol@example.com``
``authentication_type``     API, SAML, USERPOOL or AWS_AD                    ``USERPOOL``
``send_email_notification`` ``true`` or ``false``                            ``false``
=========================== ================================================ =======================

Example::

    cdk synth -c appstream_stack_name=my-stack -c appstream_users=x@example.com,y@example.com
    cdk synth -c 'appstream_users=["x@example.com", "y@example.com"]'

The account and region come from ``CDK_DEFAULT_ACCOUNT``/``CDK_DEFAULT_REGION`` (set by the
CDK CLI); nothing here calls AWS at synth time. Bad values stop the synth with one message.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_ssm as ssm

from constructs_lib import AssociationValidationError, UserStackAssociation

STACK_ID = "AppStreamUserAssociationsDemo"
DEFAULT_APPSTREAM_STACK_NAME = "demo-stack"
DEFAULT_APPSTREAM_USERS = "alice@example.com,bob@example.com,carol@example.com"
DEFAULT_AUTHENTICATION_TYPE = "USERPOOL"
DEFAULT_SEND_EMAIL_NOTIFICATION = False


class ContextError(ValueError):
    """A CDK context value cannot be used."""


def parse_users(value: object) -> list[str]:
    """Parse ``appstream_users``: a JSON list of strings, or a comma-separated string."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ContextError(
                f"context appstream_users {value!r} looks like JSON but is not valid JSON ({error}); "
                'write ["a@example.com","b@example.com"] or a@example.com,b@example.com'
            ) from error
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        if any(not item for item in items):
            raise ContextError(
                f"context appstream_users {value!r} has an empty entry; separate user names "
                "with single commas, e.g. a@example.com,b@example.com"
            )
        return items
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ContextError(
        f"context appstream_users must be a comma-separated string or a JSON list of strings, got {value!r}"
    )


def parse_bool(key: str, value: object) -> bool:
    """Parse a boolean context value: true/false, as JSON booleans or strings (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ContextError(f"context {key} must be true or false, got {value!r}")


def parse_str(key: str, value: object) -> str:
    """Parse a string context value (non-empty)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ContextError(f"context {key} must be a non-empty string, got {value!r}")


def build_app(context: Mapping[str, object] | None = None, outdir: str | None = None) -> cdk.App:
    """Build the app; ``context`` is added to what the CDK CLI passes (used by tests)."""
    app = cdk.App(context=dict(context) if context else None, outdir=outdir)

    def get(key: str, default: object) -> object:
        value = app.node.try_get_context(key)
        return default if value is None else value

    stack_name = parse_str("appstream_stack_name", get("appstream_stack_name", DEFAULT_APPSTREAM_STACK_NAME))
    users = parse_users(get("appstream_users", DEFAULT_APPSTREAM_USERS))
    authentication_type = parse_str("authentication_type", get("authentication_type", DEFAULT_AUTHENTICATION_TYPE))
    send_email = parse_bool("send_email_notification", get("send_email_notification", DEFAULT_SEND_EMAIL_NOTIFICATION))

    stack = cdk.Stack(
        app,
        STACK_ID,
        description="Demo: AppStream 2.0 user-stack associations managed by a custom resource",
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
    )
    UserStackAssociation(
        stack,
        "Associations",
        stack_name=stack_name,
        user_names=users,
        authentication_type=authentication_type,
        send_email_notification=send_email,
    )
    ssm.StringParameter(
        stack,
        "ManagedAssociations",
        description="What this stack manages in AppStream 2.0",
        string_value=f"AppStream stack {stack_name}: {len(users)} {authentication_type} users",
    )
    return app


def main() -> None:
    """Synthesize; run directly (not by the CDK CLI), write to ``./cdk.out`` and say so."""
    direct = not os.environ.get("CDK_OUTDIR")  # the CDK CLI sets it
    try:
        app = build_app(outdir="cdk.out" if direct else None)
    except (ContextError, AssociationValidationError) as error:
        sys.exit(f"app.py: {error}")
    assembly = app.synth()
    if direct:
        stacks = ", ".join(stack.stack_name for stack in assembly.stacks)
        print(
            f"app.py: synthesized {stacks} into {os.path.relpath(assembly.directory)}/ "
            "(review with `npx cdk diff`, deploy with `npx cdk deploy` or `make deploy`)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
