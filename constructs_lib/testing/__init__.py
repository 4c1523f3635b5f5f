"""Testing kit: rehearse a CDK app's AppStream associations locally, as CloudFormation would run them.

* :class:`AppStreamServer` serves a stateful AppStream 2.0 fake
  (:class:`AppStreamState`, seeded from a dict or a JSON file) over HTTP to unmodified boto3
  clients, with fault injection (:class:`Faults`) and a call log (:class:`CallRecord`).
* :class:`ResponseServer` plays CloudFormation's pre-signed ``ResponseURL`` over HTTPS with a
  throwaway test CA, recording every response PUT (:class:`ResponseAttempt`), with its own
  faults (:class:`ResponseFaults`).
* :class:`Rehearsal` reads a synthesized cloud assembly, finds every
  ``Custom::AppStreamUserStackAssociation`` and runs its function's bundled asset in a separate
  Python process the way Lambda does (:class:`LambdaProcess`), sending CloudFormation's events
  for create, update, rollback and delete, and reporting CloudFormation's
  (:class:`StackOperation`, :class:`StackEvent`).

What :mod:`aws_cdk.assertions` does for templates, this does for what the deployed function
does to AppStream. In a pytest suite (needs ``pip install 'appstream-user-stack-association[testing]'``
for boto3 and trustme)::

    import aws_cdk as cdk
    from constructs_lib import UserStackAssociation
    from constructs_lib.testing import AppStreamServer, AppStreamState, Rehearsal, ResponseServer

    def test_analysts_get_their_stack(tmp_path):
        app = cdk.App(outdir=str(tmp_path))
        stack = cdk.Stack(app, "Workspaces")
        UserStackAssociation(stack, "Analysts", stack_name="analysts",
                             user_names=["alice@example.com", "bob@example.com"])
        assembly = app.synth()

        state = AppStreamState.from_seed({"stacks": ["analysts"],
                                          "users": [{"UserName": "alice@example.com"},
                                                    {"UserName": "bob@example.com"}]})
        with AppStreamServer(state) as appstream, ResponseServer() as cfn:
            rehearsal = Rehearsal(appstream, cfn)
            [created] = rehearsal.deploy(assembly)
            assert created.status == "CREATE_COMPLETE"
            assert appstream.state.associations() == {("analysts", "alice@example.com", "USERPOOL"),
                                                      ("analysts", "bob@example.com", "USERPOOL")}
            assert rehearsal.destroy("Workspaces").status == "DELETE_COMPLETE"
            assert appstream.state.associations() == set()

Each :class:`Invocation` (``created.invocations``) holds the event sent, the response
CloudFormation received, the function's logs and timings. The function runs with the
Python running the tests, which must have boto3 (Lambda's runtime provides it); everything
else, crhelper included, must come from the asset, as on Lambda.

Importing this package needs only the standard library (``trustme`` is imported when a
:class:`ResponseServer` starts) and neither aws-cdk-lib nor boto3. None of it is part of the
function's asset.
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
from constructs_lib.testing.rehearsal import (
    AssociationResource,
    FunctionSpec,
    Invocation,
    LambdaProcess,
    Rehearsal,
    RehearsalError,
    StackEvent,
    StackOperation,
    StackTemplate,
    format_state,
    read_assembly,
    stringify,
    summarise_users,
    write_event,
)
from constructs_lib.testing.response_server import (
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
    "AssociationResource",
    "CallRecord",
    "Faults",
    "FunctionSpec",
    "Invocation",
    "LambdaProcess",
    "Rehearsal",
    "RehearsalError",
    "ResponseAttempt",
    "ResponseFaults",
    "ResponseServer",
    "SeedError",
    "StackEvent",
    "StackOperation",
    "StackTemplate",
    "StateSnapshot",
    "User",
    "cfn_response_problems",
    "client_env",
    "format_state",
    "read_assembly",
    "stringify",
    "summarise_users",
    "write_event",
]
