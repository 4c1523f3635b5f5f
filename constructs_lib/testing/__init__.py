"""Testing kit: rehearse a CDK app locally, as CloudFormation and Lambda would run it.

* :class:`Rehearsal` reads a synthesized cloud assembly (:func:`read_assembly`) and plays
  CloudFormation on every resource of every template: dependency order and parallelism,
  rollbacks, replacements, cleanup, retain policies, ServiceTimeout and Lambda's retries in
  virtual time, faults (:class:`RehearsalFaults`: a resource failing or slow, an event delivered
  twice, a crashed function, a lost answer). Custom resources get real events, run by the
  function's bundled asset in a separate Python process the way Lambda does
  (:class:`LambdaProcess`); what happened is in :class:`StackOperation` and :class:`StackEvent`
  (``str(operation)`` is a summary for an assert message).
* :class:`AppStreamServer` serves a stateful AppStream 2.0 fake (:class:`AppStreamState`, seeded
  from a dict or a JSON file) over HTTP to unmodified boto3 clients, with fault injection
  (:class:`Faults`) and a call log (:class:`CallRecord`). The rehearsal creates the templates'
  ``AWS::AppStream::Stack`` and ``AWS::AppStream::User`` resources in it.
* :class:`ResponseServer` plays CloudFormation's pre-signed ``ResponseURL`` over HTTPS with a
  throwaway test CA, recording every response PUT (:class:`ResponseAttempt`).
* :class:`CloudFormationApi` serves the rehearsal's live state (:class:`StackRegistry`) to the
  function: ``DescribeStacks`` (the phase a deploy is in), ``DescribeStackResource(s)``, ...
* :class:`LocalAws` runs moto on loopback: the templates' DynamoDB tables, SSM parameters and S3
  buckets are created there, and the function reaches them through ``AWS_ENDPOINT_URL``.

What :mod:`aws_cdk.assertions` does for templates, this does for what the deployed function
does. In a pytest suite (needs ``pip install 'appstream-user-stack-association[testing]'``
for boto3, moto and trustme)::

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
        with AppStreamServer(state) as appstream, ResponseServer() as cfn, Rehearsal(appstream, cfn) as rehearsal:
            [created] = rehearsal.deploy(assembly)
            assert created.status == "CREATE_COMPLETE", created
            assert appstream.state.associations() == {("analysts", "alice@example.com", "USERPOOL"),
                                                      ("analysts", "bob@example.com", "USERPOOL")}
            assert rehearsal.destroy("Workspaces").status == "DELETE_COMPLETE"
            assert appstream.state.associations() == set()

Each :class:`Invocation` (``created.invocations``) holds the event sent, the response
CloudFormation received, the function's logs and timings. The function runs with the Python
running the tests (``python=`` picks another), which must have boto3 (Lambda's runtime provides
it); everything else, crhelper included, must come from the asset, as on Lambda. None of the kit
is part of the function's asset.
"""

import importlib.util as _importlib_util

_EXTRAS = ("trustme", "boto3", "moto")


def _missing_extras() -> list[str]:
    missing = []
    for name in _EXTRAS:
        try:
            found = _importlib_util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


if _missing_extras():
    raise ImportError(
        f"constructs_lib.testing needs {', '.join(_missing_extras())}, which this environment lacks: "
        "pip install 'appstream-user-stack-association[testing]'"
    )

from constructs_lib.testing.appstream import (  # noqa: E402 - after the check for the extras
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
    RateLimit,
    SeedError,
    StateSnapshot,
    User,
    client_env,
)
from constructs_lib.testing.assembly import (  # noqa: E402
    ResourceDefinition,
    StackTemplate,
    read_assembly,
)
from constructs_lib.testing.aws_services import (  # noqa: E402
    PROVISIONED_TYPES,
    LocalAws,
    ProvisionedResource,
    ProvisioningError,
)
from constructs_lib.testing.cloudformation_api import (  # noqa: E402
    CloudFormationApi,
    CloudFormationCall,
    CloudFormationFaults,
)
from constructs_lib.testing.events import (  # noqa: E402
    LambdaContext,
    association_properties,
    cloudformation_event,
    stringify,
)
from constructs_lib.testing.lambda_runtime import FunctionSpec, Invocation, LambdaProcess, LambdaRun  # noqa: E402
from constructs_lib.testing.rehearsal import (  # noqa: E402
    Rehearsal,
    RehearsalClock,
    RehearsalError,
    RehearsalFaults,
    StackEvent,
    StackOperation,
)
from constructs_lib.testing.report import summarise_users, summary, write_event  # noqa: E402
from constructs_lib.testing.response_server import (  # noqa: E402
    MAX_RESPONSE_BYTES,
    ResponseAttempt,
    ResponseFaults,
    ResponseServer,
    cfn_response_problems,
)
from constructs_lib.testing.stack_registry import (  # noqa: E402
    ResourceRecord,
    StackEventRecord,
    StackRecord,
    StackRegistry,
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
    "PROVISIONED_TYPES",
    "AppStreamServer",
    "AppStreamState",
    "Association",
    "CallRecord",
    "CloudFormationApi",
    "CloudFormationCall",
    "CloudFormationFaults",
    "Faults",
    "FunctionSpec",
    "Invocation",
    "LambdaContext",
    "LambdaProcess",
    "LambdaRun",
    "LocalAws",
    "ProvisionedResource",
    "ProvisioningError",
    "RateLimit",
    "Rehearsal",
    "RehearsalClock",
    "RehearsalError",
    "RehearsalFaults",
    "ResourceDefinition",
    "ResourceRecord",
    "ResponseAttempt",
    "ResponseFaults",
    "ResponseServer",
    "SeedError",
    "StackEvent",
    "StackEventRecord",
    "StackOperation",
    "StackRecord",
    "StackRegistry",
    "StackTemplate",
    "StateSnapshot",
    "User",
    "association_properties",
    "cfn_response_problems",
    "client_env",
    "cloudformation_event",
    "read_assembly",
    "stringify",
    "summarise_users",
    "summary",
    "write_event",
]
