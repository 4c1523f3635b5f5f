"""``Token.is_unresolved`` without a jsii round trip for plain strings.

Each ``Token.is_unresolved`` call crosses into the jsii runtime (about 0.2 ms); thousands of user
names made it the bulk of a large association's construction time. aws-cdk-lib's own check
(``unresolved`` in ``core/lib/private/encoding``) starts with ``str.includes("Token[")`` for
strings, so a string without that marker is never a token; everything else is asked of CDK.
"""

from __future__ import annotations

from aws_cdk import Token

_MARKER = "Token["


def is_unresolved(value: object) -> bool:
    """Same answer as ``Token.is_unresolved(value)``."""
    if isinstance(value, str):
        return _MARKER in value and Token.is_unresolved(value)
    if isinstance(value, int):
        # Number tokens are encoded as doubles (about -1.9e289): a Python int never is one.
        return False
    if isinstance(value, (list, tuple)) and len(value) != 1:
        # A token-encoded list is a one-element list; a longer list is never one.
        return False
    return Token.is_unresolved(list(value) if isinstance(value, tuple) else value)
