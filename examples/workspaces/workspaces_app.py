#!/usr/bin/env python3
"""A small, complete app: an AppStream stack and a user declared next to two associations.

``cdk synth`` (with ``"app": "python workspaces_app.py"`` in cdk.json) or ``build()`` from a test. The
AppStream stack ``analysts`` and the user ``carol`` are created by this CDK stack; the
associations wait for them. ``admins`` is an AppStream stack that exists already.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_appstream as appstream
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from constructs_lib import UserStackAssociation


class Workspaces(cdk.Stack):
    """AppStream access for two teams, as code."""

    def __init__(self, scope: Construct, construct_id: str, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        stack = appstream.CfnStack(self, "Analysts", name="analysts")
        carol = appstream.CfnUser(self, "Carol", user_name="carol@example.com", authentication_type="USERPOOL")
        UserStackAssociation(
            self,
            "AnalystAccess",
            stack_name=stack.ref,  # a token: the association waits for the stack
            user_names=["alice@example.com", "bob@example.com", carol.user_name],
        )
        UserStackAssociation(
            self,
            "AdminAccess",
            stack_name="admins",
            user_names=["dave@example.com"],
            existing_associations="keep",  # whoever had admins access before keeps it, whatever happens here
        )
        # Something else the stack holds: when it fails, the whole deploy rolls back.
        ssm.StringParameter(self, "Settings", parameter_name="/workspaces/settings", string_value="{}")


def build(outdir: str | None = None) -> cdk.App:
    """The app, for ``cdk synth`` and for tests."""
    app = cdk.App(outdir=outdir)
    Workspaces(app, "Workspaces")
    return app


if __name__ == "__main__":
    build().synth()
