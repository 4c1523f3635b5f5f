"""Test and rehearsal infrastructure: the AWS side of a custom resource, on loopback.

* :class:`AppStreamServer` serves a stateful AppStream 2.0 fake
  (:class:`AppStreamState`) over HTTP to unmodified boto3 clients, with
  fault injection (:class:`Faults`) and a call log (:class:`CallRecord`).
* :class:`ResponseServer` plays CloudFormation's pre-signed ``ResponseURL``
  over HTTPS with a throwaway test CA, recording every response PUT
  (:class:`ResponseAttempt`), with its own faults (:class:`ResponseFaults`).

Only the standard library is needed to import this package; ``trustme`` is
imported when a :class:`ResponseServer` starts. Nothing here imports boto3.
"""

from constructs_lib.testing.appstream import (
    AUTHENTICATION_TYPES,
    BATCH_ASSOCIATE,
    BATCH_DISASSOCIATE,
    DESCRIBE_ASSOCIATIONS,
    MAX_BATCH_SIZE,
    MAX_PAGE_SIZE,
    OPERATIONS,
    AppStreamServer,
    AppStreamState,
    Association,
    CallRecord,
    Faults,
    SeedError,
    StateSnapshot,
    User,
    client_env,
)
from constructs_lib.testing.cloudformation import (
    MAX_RESPONSE_BYTES,
    ResponseAttempt,
    ResponseFaults,
    ResponseServer,
    cfn_response_problems,
)

__all__ = [
    "AUTHENTICATION_TYPES",
    "BATCH_ASSOCIATE",
    "BATCH_DISASSOCIATE",
    "DESCRIBE_ASSOCIATIONS",
    "MAX_BATCH_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_RESPONSE_BYTES",
    "OPERATIONS",
    "AppStreamServer",
    "AppStreamState",
    "Association",
    "CallRecord",
    "Faults",
    "ResponseAttempt",
    "ResponseFaults",
    "ResponseServer",
    "SeedError",
    "StateSnapshot",
    "User",
    "cfn_response_problems",
    "client_env",
]
