"""Split one association's users over several custom resources ("shards") without moving them.

Why shards: CloudFormation invokes the function asynchronously, and an Update event carries both
``ResourceProperties`` and ``OldResourceProperties``. Lambda refuses an asynchronous payload over
256 KiB, so each resource's ``UserNames`` must stay under half of that, envelope aside.

Membership: user ``u`` belongs to shard ``bucket(u) = sha256(u) mod shards``. It depends on the
user name and the shard count only, never on the other users, so adding or removing one user
changes exactly one shard's properties.

Changing the count, up or down, in one deployment is safe: a user that moves from one shard to
another is claimed by its new shard before its old shard's claim goes (the handler's state store
removes an association only when no resource declares it any more, and only once the deployment
has succeeded; see ``appstream_handler.decide``). Counts are powers of two (1 to 64) so that
raising the count splits shards rather than reshuffling every user.

Unresolved tokens among the user names cannot be hashed at synth time: they go to shard 0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from constructs_lib._handler import rules
from constructs_lib._tokens import is_unresolved

SHARD_COUNTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
"""Allowed values of ``shards``."""

LAMBDA_ASYNC_PAYLOAD_LIMIT = rules.LAMBDA_ASYNC_PAYLOAD_LIMIT
"""Largest asynchronous Lambda payload (256 KiB): the whole CloudFormation request."""

REQUEST_ALLOWANCE = 8_192
"""Bytes kept for everything but the two ``UserNames`` lists: the event envelope (``ResponseURL``
is a pre-signed S3 URL, ids, type) and the other properties, old and new."""

MAX_USER_NAMES_BYTES = 120_000
"""Largest serialized ``UserNames`` of one shard. Two of them (old and new) plus
:data:`REQUEST_ALLOWANCE` stay under :data:`LAMBDA_ASYNC_PAYLOAD_LIMIT`."""

TOKEN_USER_NAME_BYTES = 2 + 6 * rules.USER_NAME_MAX_LENGTH + 1
"""Worst case for a user name that is still a token: 128 characters, each escaped as ``\\uXXXX``."""

assert 2 * MAX_USER_NAMES_BYTES + REQUEST_ALLOWANCE < LAMBDA_ASYNC_PAYLOAD_LIMIT


def bucket(user_name: str, shards: int) -> int:
    """Shard of a literal user name: the first 8 bytes of its sha256, modulo ``shards``.

    Stable across Python versions, processes and machines (unlike ``hash()``).
    """
    digest = hashlib.sha256(user_name.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def user_names_bytes(user_names: Sequence[str]) -> int:
    """Upper bound of the size of ``UserNames`` in a CloudFormation request, in bytes.

    Measured as compact JSON with non-ASCII characters escaped (``\\uXXXX`` is never shorter
    than UTF-8); a name that is still a token counts as :data:`TOKEN_USER_NAME_BYTES`.
    """
    literal = [name for name in user_names if not is_unresolved(name)]
    tokens = len(user_names) - len(literal)
    return len(json.dumps(literal, ensure_ascii=True, separators=(",", ":"))) + tokens * TOKEN_USER_NAME_BYTES


@dataclass(frozen=True)
class ShardPlan:
    """Which user goes to which shard, and the problems with that split."""

    shards: tuple[tuple[str, ...], ...]
    """User names of each shard, in the order given (literals sorted, then tokens)."""
    problems: tuple[str, ...]
    """Why this split cannot be used; empty when it can."""

    @property
    def sizes(self) -> list[int]:
        """:func:`user_names_bytes` of each shard."""
        return [user_names_bytes(users) for users in self.shards]


def split(user_names: Sequence[str], shards: int) -> tuple[tuple[str, ...], ...]:
    """Place each user in its shard; unresolved tokens go to shard 0."""
    groups: list[list[str]] = [[] for _ in range(shards)]
    for name in user_names:
        groups[0 if is_unresolved(name) or shards == 1 else bucket(name, shards)].append(name)
    return tuple(tuple(group) for group in groups)


def _fits(groups: tuple[tuple[str, ...], ...], limit: int) -> bool:
    return all(user_names_bytes(group) <= limit for group in groups)


def recommended_shards(user_names: Sequence[str]) -> int | None:
    """Smallest count whose shards each use at most half of :data:`MAX_USER_NAMES_BYTES`
    (room for the list to double); None if none of :data:`SHARD_COUNTS` does."""
    for count in SHARD_COUNTS:
        if _fits(split(user_names, count), MAX_USER_NAMES_BYTES // 2):
            return count
    return None


def _advice(user_names: Sequence[str]) -> str:
    count = recommended_shards(user_names)
    if count is None:
        return (
            f"even shards={SHARD_COUNTS[-1]} is not enough: split the users over several "
            "UserStackAssociations (each user in one of them only)"
        )
    return f"use shards={count} (room for the list to double)"


def plan_shards(user_names: Sequence[str], shards: int) -> ShardPlan:
    """Split ``user_names`` (already validated and sorted) into ``shards`` and check the result.

    A token-encoded list (e.g. ``CfnParameter.value_as_list``) is kept whole in shard 0.
    """
    if is_unresolved(list(user_names)):
        token_problems = []
        if shards != 1:
            token_problems.append(
                f"shards={shards} cannot split a token-encoded user list (its names are unknown "
                "until deployment): use shards=1, or give the names as a list"
            )
        return ShardPlan(shards=(tuple(user_names),), problems=tuple(token_problems))

    groups = split(user_names, shards)
    problems: list[str] = []
    oversized = [
        (index, size) for index, size in enumerate(map(user_names_bytes, groups)) if size > MAX_USER_NAMES_BYTES
    ]
    if oversized:
        index, size = max(oversized, key=lambda item: item[1])
        where = "the user list" if shards == 1 else f"shard {index} of shards={shards}"
        problems.append(
            f"{len(user_names)} user names are too many for shards={shards}: {where} takes {size:,} bytes, "
            f"and one custom resource may carry at most {MAX_USER_NAMES_BYTES:,} (CloudFormation sends "
            f"old and new user lists in one Lambda request of at most {LAMBDA_ASYNC_PAYLOAD_LIMIT:,} bytes); "
            f"{_advice(user_names)}"
        )
    return ShardPlan(shards=groups, problems=tuple(problems))
