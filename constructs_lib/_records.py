"""What the shared provider needs to know of each association: a small frozen record.

The provider (function, role, policies, state table, deployment marker) serves every association
of a CDK stack. It does not hold the constructs themselves: each ``UserStackAssociation``
registers a :class:`Declaration` with the values that synthesis-time work needs (ordering after
``CfnStack``/``CfnUser``, sizing the function's timeout, the deployment marker's generation, the
checks across stacks). So the provider, the ordering and the timing never import the construct.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import CustomResource

from constructs_lib import _timing
from constructs_lib._tokens import is_unresolved


@dataclass(frozen=True)
class ShardRecord:
    """One custom resource of an association: its shard number, resource and users."""

    number: int
    resource: CustomResource
    user_names: tuple[str, ...]
    """Literal names sorted, then tokens; or one token-encoded list."""
    properties: Mapping[str, Any]
    """The resource's properties as declared (tokens unresolved)."""

    @property
    def timing_users(self) -> int:
        """How many users this shard counts for sizing (a token-encoded list: a guess)."""
        if is_unresolved(list(self.user_names)):
            return _timing.UNKNOWN_LIST_USERS
        return len(self.user_names)


@dataclass(frozen=True)
class Declaration:
    """One ``UserStackAssociation`` as the provider sees it."""

    path: str
    stack_name: str
    """The AppStream stack's name (may be a token)."""
    authentication_type: str
    max_concurrency: int
    shards: tuple[ShardRecord, ...]

    def literal_associations(self) -> set[tuple[str, str, str]]:
        """(stack, user, auth) of every association whose three parts are known at synthesis."""
        if is_unresolved(self.stack_name) or is_unresolved(self.authentication_type):
            return set()
        found: set[tuple[str, str, str]] = set()
        for shard in self.shards:
            if is_unresolved(list(shard.user_names)):
                continue
            found.update(
                (self.stack_name, user, self.authentication_type)
                for user in shard.user_names
                if not is_unresolved(user)
            )
        return found
