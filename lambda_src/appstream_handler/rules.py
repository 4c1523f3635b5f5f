"""AppStream's rules and limits, and this project's fixed figures: the one authority.

Pure Python (standard library only), imported by the handler (``appstream_handler.*``), by the
construct's synth-time validation and by the testing kit's AppStream fake (both load this
package from the handler tree), so that what synthesis accepts is exactly what the handler and the fake
accept. The AppStream figures come from botocore's service model ``appstream/2016-12-01``
(tests compare them with it); the others are this project's choices, named here once.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

# --- AppStream's API (botocore service model) ------------------------------------------------

AUTHENTICATION_TYPES: Final = ("API", "SAML", "USERPOOL", "AWS_AD")
"""``AuthenticationType`` enum, in the model's order."""

STACK_NAME_PATTERN: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}")
"""``CreateStack.Name`` (``^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}$``); use with :func:`is_valid_stack_name`,
which matches the whole string (``re.match`` with ``$`` would let a trailing newline through)."""

STACK_NAME_RULE: Final = "1-101 characters of a-z A-Z 0-9 _ . -, starting with a letter or digit"

USER_NAME_MIN_LENGTH: Final = 1
USER_NAME_MAX_LENGTH: Final = 128
USER_NAME_CATEGORIES: Final = frozenset("LMSNP")
"""Unicode major categories of the model's pattern ``[\\p{L}\\p{M}\\p{S}\\p{N}\\p{P}]+``: letters,
marks, symbols, numbers, punctuation. Separators (spaces, line breaks) and "other" code points
(control, format, surrogate, private use, unassigned) are outside it."""

BATCH_LIMIT: Final = 25
"""``UserStackAssociations`` of a batch call: 1 to 25 items (botocore checks only the minimum)."""

DESCRIBE_PAGE_SIZE: Final = 500
"""``DescribeUserStackAssociations.MaxResults``: 0 to 500 (0 and absent mean 500)."""

ITEM_ERROR_CODES: Final = ("STACK_NOT_FOUND", "USER_NAME_NOT_FOUND", "DIRECTORY_NOT_FOUND", "INTERNAL_ERROR")
"""``UserStackAssociationErrorCode``: what an ``errors`` item of an HTTP 200 can say."""

RETRYABLE_ITEM_CODES: Final = frozenset({"INTERNAL_ERROR"})
"""Item codes that are the service's fault and reasonable to retry."""

NOT_FOUND_ITEM_CODES: Final = frozenset({"STACK_NOT_FOUND", "USER_NAME_NOT_FOUND"})
"""Item codes that mean "no such stack or user", which right after ``CreateStack``/``CreateUser``
may only be AppStream's eventual consistency; on disassociation they mean nothing is left."""

# --- CloudFormation and Lambda ---------------------------------------------------------------

RESOURCE_TYPE: Final = "Custom::AppStreamUserStackAssociation"
"""CloudFormation type of an association resource."""

DEPLOYMENT_RESOURCE_TYPE: Final = "Custom::AppStreamUserStackAssociationDeployment"
"""CloudFormation type of the per-stack marker that tells the handler where a deployment begins
and when it has succeeded (see ``appstream_handler.deployment``)."""

RESPONSE_BODY_LIMIT: Final = 4096
"""Bytes of a custom-resource response body CloudFormation accepts."""

PHYSICAL_ID_LIMIT: Final = 1024
"""Bytes of a ``PhysicalResourceId``."""

REASON_LIMIT: Final = 255
"""Characters of a reason: crhelper keeps only the last 240 of a longer one."""

LAMBDA_ASYNC_PAYLOAD_LIMIT: Final = 262_144
"""Largest asynchronous Lambda payload (256 KiB): the whole CloudFormation request."""

SERVICE_TIMEOUT_LIMIT: Final = 3600
"""Largest ``ServiceTimeout`` (and CloudFormation's default)."""

LAMBDA_TIMEOUT_LIMIT: Final = 900
"""Lambda's largest timeout."""

# --- This project's figures ------------------------------------------------------------------

MAX_CONCURRENCY_MIN: Final = 1
MAX_CONCURRENCY_MAX: Final = 16
DEFAULT_MAX_CONCURRENCY: Final = 4
"""Batch calls in flight at once per custom resource (``max_concurrency``)."""

CONNECT_TIMEOUT: Final = 3
READ_TIMEOUT: Final = 10
CALL_SECONDS: Final = CONNECT_TIMEOUT + READ_TIMEOUT
"""Worst case of one attempt of one AWS call: the clients' connect plus read timeouts."""

CRHELPER_TIMER_LEAD: Final = 0.5
"""crhelper's own timer answers "Execution timed out" this long before the function's end."""

MAX_ANSWER_RESERVE: Final = 10.0
"""Seconds kept back for delivering the answer (bounded retries of the response PUT)."""

ANSWER_RESERVE_FRACTION: Final = 0.2
"""Share of the time left kept for the answer when that is less than ``MAX_ANSWER_RESERVE``."""

NOT_FOUND_WINDOW: Final = 30.0
"""Seconds a STACK_NOT_FOUND / USER_NAME_NOT_FOUND item is retried before it counts: AppStream
may not yet see a stack or user created moments before (terraform-provider-aws waits up to
4 minutes after CreateUser; a public test saw the association succeed about 2 s later)."""

PLAN_MARGIN: Final = 1.2
"""Throttled, the handler plans the rest of its work (and its undo) as taking this much longer
than the rate observed says."""

ASSUMED_CALLS_PER_SECOND: Final = 1.0
"""The AppStream request rate the construct's default timeout is sized for (per account, not
published; busy accounts see sustained throttling near one call per second)."""


def is_valid_stack_name(name: object) -> bool:
    """True when ``name`` is an AppStream stack name (the whole string matches the pattern)."""
    return isinstance(name, str) and STACK_NAME_PATTERN.fullmatch(name) is not None


def user_name_problem(name: str) -> str | None:
    """Why ``name`` is not an AppStream user name (model: 1-128 characters of the pattern), or None."""
    if not USER_NAME_MIN_LENGTH <= len(name) <= USER_NAME_MAX_LENGTH:
        return f"is {len(name)} characters long; AppStream accepts {USER_NAME_MIN_LENGTH} to {USER_NAME_MAX_LENGTH}"
    if name.isascii() and name.isprintable() and " " not in name:
        return None  # printable ASCII without a space: letters, digits, symbols, punctuation
    bad = sorted({char for char in name if unicodedata.category(char)[0] not in USER_NAME_CATEGORIES})
    if bad:
        shown = ", ".join(f"U+{ord(char):04X}" for char in bad[:5]) + (" ..." if len(bad) > 5 else "")
        return (
            f"contains characters outside letters, marks, symbols, numbers and punctuation ({shown}): "
            "remove spaces, line breaks and invisible characters"
        )
    return None


def is_valid_user_name(name: object) -> bool:
    """True when ``name`` is an AppStream user name."""
    return isinstance(name, str) and user_name_problem(name) is None


def is_authentication_type(value: object) -> bool:
    """True for one of :data:`AUTHENTICATION_TYPES`."""
    return value in AUTHENTICATION_TYPES
