"""The rehearsal's Lambda runtime runs an asset as Lambda would, and fails where Lambda would.

Probe assets (a few lines of Python in a temporary directory) report what the child process
sees; copies of the real asset and assembly, altered one way each, show that a missing
crhelper, the template's handler string and its timeout have the effect they have on Lambda.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from constructs_lib.testing import (
    AppStreamServer,
    AppStreamState,
    FunctionSpec,
    LambdaProcess,
    Rehearsal,
    ResponseServer,
    read_assembly,
)
from constructs_lib.testing.lambda_runtime import KILLED_ERROR, NOWHERE
from tools.demo import INITIAL


def probe_asset(directory: Path, source: str, module: str = "probe") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return directory


def spec(
    asset_dir: Path, handler: str, *, timeout: float = 5.0, environment: Mapping[str, str] | None = None
) -> FunctionSpec:
    return FunctionSpec(
        logical_id="ProbeFunction", asset_dir=asset_dir, handler=handler, timeout=timeout, memory_mb=128,
        environment=dict(environment or {}), runtime="python3.14",
    )  # fmt: skip


def create_event(logical_id: str = "Probe") -> dict[str, Any]:
    return {
        "RequestType": "Create", "RequestId": "request-1", "LogicalResourceId": logical_id,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/Probe/1",
        "ResourceType": "Custom::AppStreamUserStackAssociation", "ResourceProperties": {"ServiceToken": "arn"},
    }  # fmt: skip


PROBE = """
    import json, os, sys
    def main(event, context):
        print("PROBE " + json.dumps({
            "remaining_ms": context.get_remaining_time_in_millis(),
            "function_name": context.function_name,
            "memory": context.memory_limit_in_mb,
            "path0": sys.path[0],
            "cwd": os.getcwd(),
            "isolated": sys.flags.isolated,
            "no_bytecode": sys.dont_write_bytecode,
            "env": sorted(os.environ),
            "handler_env": os.environ.get("_HANDLER"),
            "log_level": os.environ.get("LOG_LEVEL"),
            "response_url": event["ResponseURL"],
        }))
"""


def probe_output(logs: str) -> dict[str, Any]:
    [line] = [line for line in logs.splitlines() if line.startswith("PROBE ")]
    result: dict[str, Any] = json.loads(line.removeprefix("PROBE "))
    return result


def test_the_child_gets_lambda_s_context_path_and_a_clean_environment(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME_SECRET_TOKEN", "must-not-leak")
    asset = probe_asset(tmp_path / "asset", PROBE)
    process = LambdaProcess(appstream, cfn)
    invocation = process.invoke(
        spec(asset, "probe.main", timeout=7, environment={"LOG_LEVEL": "DEBUG"}), create_event()
    )
    assert invocation.error is None, invocation.logs
    seen = probe_output(invocation.logs)
    assert 5000 < seen["remaining_ms"] <= 7000
    assert (seen["function_name"], seen["memory"], seen["handler_env"]) == ("ProbeFunction", 128, "probe.main")
    assert seen["path0"] == str(asset)
    assert seen["cwd"] == str(asset.resolve())
    assert (seen["isolated"], seen["no_bytecode"]) == (1, True)
    assert seen["log_level"] == "DEBUG"
    assert "HOME_SECRET_TOKEN" not in seen["env"]
    assert "AWS_PROFILE" not in seen["env"]
    assert {"AWS_REGION", "AWS_ENDPOINT_URL_APPSTREAM", "SSL_CERT_FILE", "LAMBDA_TASK_ROOT"} <= set(seen["env"])
    assert "AWS_ENDPOINT_URL" in seen["env"]  # NOWHERE: no call can reach real AWS
    assert seen["response_url"].startswith(cfn.base_url + "/cfn-response/Probe/")
    assert not (asset / "__pycache__").exists()  # Lambda's /var/task is read-only: nothing written
    assert invocation.status == "NO_RESPONSE"  # the probe never answers


def test_the_handler_string_picks_module_and_function(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer
) -> None:
    asset = probe_asset(tmp_path / "asset", "def handler(event, context):\n    print('WRONG')\n", module="index")
    probe_asset(asset / "pkg", "def entry(event, context):\n    print('RIGHT')\n", module="mod")
    (asset / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    invocation = LambdaProcess(appstream, cfn).invoke(spec(asset, "pkg/mod.entry"), create_event())
    assert "RIGHT" in invocation.logs
    assert "WRONG" not in invocation.logs


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        ("index.missing", "Runtime.HandlerNotFound: Handler 'missing' missing on module 'index'"),
        (
            "nomodule.handler",
            "Runtime.ImportModuleError: Unable to import module 'nomodule': No module named 'nomodule'",
        ),
        ("handler", "Runtime.MalformedHandlerName: Bad handler 'handler'"),
    ],
)
def test_bad_handler_strings_fail_as_on_lambda(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer, handler: str, error: str
) -> None:
    asset = probe_asset(tmp_path / "asset", "def handler(event, context):\n    pass\n", module="index")
    invocation = LambdaProcess(appstream, cfn).invoke(spec(asset, handler), create_event())
    assert invocation.error is not None
    assert invocation.error.startswith(error)
    assert f"[ERROR] {error}" in invocation.logs
    assert (invocation.status, invocation.exit_code) == ("NO_RESPONSE", 1)


def test_a_handler_exception_is_logged_with_its_traceback(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer
) -> None:
    asset = probe_asset(tmp_path / "asset", "def handler(event, context):\n    raise ValueError('boom')\n", "index")
    invocation = LambdaProcess(appstream, cfn).invoke(spec(asset, "index.handler"), create_event())
    assert invocation.error == "ValueError: boom"
    assert "[ERROR] ValueError: boom" in invocation.logs
    assert "Traceback (most recent call last)" in invocation.logs
    assert invocation.reason == "the function failed without answering: ValueError: boom"


def test_a_handler_that_exits_the_process_is_a_runtime_exit_error(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer
) -> None:
    asset = probe_asset(tmp_path / "asset", "import sys\ndef handler(event, context):\n    sys.exit(3)\n", "index")
    invocation = LambdaProcess(appstream, cfn).invoke(spec(asset, "index.handler"), create_event())
    assert invocation.error == "Runtime.ExitError: Runtime exited with error: exit status 3"
    assert invocation.exit_code == 1


def test_the_timeout_ends_the_function_like_lambda(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer
) -> None:
    slow = "import time\ndef handler(event, context):\n    print('started', flush=True)\n    time.sleep(60)\n"
    asset = probe_asset(tmp_path / "asset", slow, "index")
    invocation = LambdaProcess(appstream, cfn).invoke(spec(asset, "index.handler", timeout=1), create_event())
    assert invocation.timed_out
    assert invocation.status == "NO_RESPONSE"
    assert "started" in invocation.logs
    assert "Task timed out after 1.00 seconds" in invocation.logs
    assert invocation.seconds < 5
    assert 0.9 < invocation.timings["invoke"] < 3


def test_modules_outside_the_asset_and_the_runtime_cannot_be_imported(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer
) -> None:
    assert importlib.util.find_spec("trustme") is not None  # installed here, so only the guard can refuse it
    source = """
        def handler(event, context):
            import boto3, botocore, dateutil, jmespath, urllib3  # Lambda's runtime has these
            print("RUNTIME OK", flush=True)
            import trustme
    """
    asset = probe_asset(tmp_path / "asset", source, "index")
    invocation = LambdaProcess(appstream, cfn).invoke(spec(asset, "index.handler"), create_event())
    assert "RUNTIME OK" in invocation.logs
    assert invocation.error is not None
    assert invocation.error.startswith(
        f"ModuleNotFoundError: No module named 'trustme' in the function's asset {asset.resolve()}"
    )


def test_each_run_has_its_own_id_as_lambda_s_request_id_and_botocore_s_app_id(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer
) -> None:
    source = """
        import os
        def handler(event, context):
            print("IDS", context.aws_request_id, os.environ["AWS_SDK_UA_APP_ID"], os.environ["AWS_ENDPOINT_URL"])
            print("CFN", os.environ["AWS_ENDPOINT_URL_CLOUDFORMATION"])
    """
    asset = probe_asset(tmp_path / "asset", source, "index")
    process = LambdaProcess(appstream, cfn, endpoints=lambda: {"AWS_ENDPOINT_URL_CLOUDFORMATION": "http://127.0.0.1:1"})
    invocation = process.start(spec(asset, "index.handler"), create_event(), request_id="run-1").wait()
    assert f"IDS run-1 run-1 {NOWHERE}" in invocation.logs
    assert "START RequestId: run-1 Version: $LATEST" in invocation.logs
    assert "CFN http://127.0.0.1:1" in invocation.logs
    assert invocation.request_id == "run-1"
    assert process.invoke(spec(asset, "index.handler"), create_event()).request_id not in ("", "run-1")


def test_a_run_can_be_killed_while_it_runs_as_a_crashed_lambda_process(
    tmp_path: Path, appstream: AppStreamServer, cfn: ResponseServer
) -> None:
    marker = tmp_path / "started"
    source = f"""
        import pathlib, time
        def handler(event, context):
            pathlib.Path({str(marker)!r}).write_text("running")
            time.sleep(30)
    """
    asset = probe_asset(tmp_path / "asset", source, "index")
    run = LambdaProcess(appstream, cfn).start(spec(asset, "index.handler", timeout=60), create_event())
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists()
    assert not run.done
    run.kill()
    invocation = run.wait(timeout=10)
    assert run.done
    assert invocation.killed
    assert invocation.error == KILLED_ERROR
    assert (invocation.status, invocation.timed_out) == ("NO_RESPONSE", False)
    assert invocation.reason == f"the function was killed without answering ({KILLED_ERROR})"
    assert invocation.seconds < 20


# -- the real asset, altered -----------------------------------------------------------------------


@pytest.fixture
def assembly_copy(assemblies: Mapping[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "cdk.out"
    shutil.copytree(assemblies[INITIAL.name], copy)
    return copy


def asset_of(assembly: Path) -> Path:
    [stack] = read_assembly(assembly)
    [function] = stack.of_type("AWS::Lambda::Function")
    assert function.asset_dir is not None
    return function.asset_dir


def seeded() -> AppStreamState:
    users = [{"UserName": user} for user in INITIAL.users]
    return AppStreamState.from_seed({"stacks": ["demo-stack"], "users": users})


def edit_template(assembly: Path, edit: Callable[[dict[str, Any], str, str], None]) -> None:
    """Change the copied template: ``edit(resources, function_id, association_id)``."""
    path = assembly / "AppStreamUserAssociationsDemo.template.json"
    template = json.loads(path.read_text(encoding="utf-8"))
    resources = template["Resources"]
    [function_id] = [key for key, r in resources.items() if r["Type"] == "AWS::Lambda::Function"]
    [association_id] = [key for key, r in resources.items() if r["Type"] == "Custom::AppStreamUserStackAssociation"]
    edit(resources, function_id, association_id)
    path.write_text(json.dumps(template), encoding="utf-8")


def test_the_bundled_asset_without_crhelper_fails_to_import_although_crhelper_is_installed(
    assembly_copy: Path, cfn: ResponseServer
) -> None:
    assert importlib.util.find_spec("crhelper") is not None  # the dev environment has crhelper
    shutil.rmtree(asset_of(assembly_copy) / "crhelper")
    with AppStreamServer(seeded()) as appstream, Rehearsal(appstream, cfn) as rehearsal:
        [operation] = rehearsal.deploy(assembly_copy)
        assert appstream.calls == ()
    create = operation.invocations[0]
    assert create.error is not None
    assert create.error.startswith(
        "Runtime.ImportModuleError: Unable to import module 'index': No module named 'crhelper'"
    )
    assert str(asset_of(assembly_copy).resolve()) in create.error
    # The construct turns Lambda's async retries off, so the failed run is not repeated; there is
    # no answer to the Create, none to the rollback Delete: CloudFormation gives up after
    # ServiceTimeout each time and ends in ROLLBACK_FAILED.
    assert operation.status == "ROLLBACK_FAILED"
    failed = [event for event in operation.resource_events if event.invocation]
    assert [(event.status, len(event.attempts)) for event in failed] == [("CREATE_FAILED", 1), ("DELETE_FAILED", 1)]
    assert failed[0].reason.startswith("CloudFormation did not receive a response from your Custom Resource")
    [stack] = read_assembly(assembly_copy)
    [association] = stack.of_type("Custom::AppStreamUserStackAssociation")
    assert f"ServiceTimeout of {association.properties['ServiceTimeout']} s" in failed[0].reason
    assert operation.skipped >= 2 * int(association.properties["ServiceTimeout"]) - 10  # waited virtually, twice


def test_the_template_s_handler_timeout_and_retry_setting_are_the_ones_run(
    assembly_copy: Path, cfn: ResponseServer
) -> None:
    def stuck_without_retries(resources: dict[str, Any], function_id: str, association_id: str) -> None:
        resources[function_id]["Properties"].update({"Handler": "stuck.wait", "Timeout": 1})
        resources["NoRetries"] = {
            "Type": "AWS::Lambda::EventInvokeConfig",
            "Properties": {"FunctionName": {"Ref": function_id}, "Qualifier": "$LATEST", "MaximumRetryAttempts": 0},
        }

    edit_template(assembly_copy, stuck_without_retries)
    probe_asset(asset_of(assembly_copy), "import time\ndef wait(event, context):\n    time.sleep(30)\n", "stuck")
    with AppStreamServer(seeded()) as appstream, Rehearsal(appstream, cfn) as rehearsal:
        [operation] = rehearsal.deploy(assembly_copy)
    create, rollback_delete = operation.invocations  # no retries
    assert create.timed_out
    assert "Task timed out after 1.00 seconds" in create.logs
    assert create.seconds < 5
    assert rollback_delete.timed_out  # the rollback Delete goes to the same stuck handler
    assert operation.status == "ROLLBACK_FAILED"
    assert [event.status for event in operation.resource_events if event.invocation] == [
        "CREATE_FAILED",
        "DELETE_FAILED",
    ]


FLAKY = """
    import os, pathlib
    def handler(event, context):
        marker = pathlib.Path(os.environ["FLAKY_MARKER"])
        if event["ResourceType"] == "Custom::AppStreamUserStackAssociation" and not marker.exists():
            marker.write_text("crashed once")
            raise RuntimeError("first run crashes")
        import index
        return index.handler(event, context)
"""


def test_a_crashed_run_is_not_retried_late_so_nothing_is_left_behind(
    assembly_copy: Path, cfn: ResponseServer, tmp_path: Path
) -> None:
    """The construct's EventInvokeConfig (no retries, 60 s event age) is what the rehearsal runs.

    Were Lambda to retry the crashed run after CloudFormation gave up, the retry would associate
    users that the rollback (a Delete of an id the handler never gave out) cannot remove.
    """

    def flaky(resources: dict[str, Any], function_id: str, association_id: str) -> None:
        properties = resources[function_id]["Properties"]
        properties["Handler"] = "flaky.handler"
        properties["Environment"]["Variables"]["FLAKY_MARKER"] = str(tmp_path / "marker")
        resources[association_id]["Properties"]["ServiceTimeout"] = "30"

    edit_template(assembly_copy, flaky)
    probe_asset(asset_of(assembly_copy), FLAKY, "flaky")
    with AppStreamServer(seeded()) as appstream, Rehearsal(appstream, cfn) as rehearsal:
        before = appstream.state.associations()
        [operation] = rehearsal.deploy(assembly_copy)
        associated = appstream.state.associations()
    [create] = [event for event in operation.failures if event.resource_type == "Custom::AppStreamUserStackAssociation"]
    assert create.status == "CREATE_FAILED"
    [first] = create.attempts
    assert first.error == "RuntimeError: first run crashes"
    assert "ServiceTimeout of 30 s" in create.reason
    assert associated == before
