"""``make bench``: speed and scale figures, printed as a table. Nothing here asserts a time.

1. API calls at the floor: batch calls and Describe pages for creates and updates.
2. Parallel batches: a Create of 1,000 users with 20 ms per AppStream call, pool of 1 vs 4 vs 8.
3. Cold start: import-to-first-response of a Create with 3 users in a fresh process, against
   ``import boto3`` plus one client in the same run; and what crhelper's three clients cost.
4. Past the peers' limits: 1,000 users with the construct vs 1,000 ``CfnStackUserAssociation``;
   then 5,000 users with the construct (shards, largest request CloudFormation would send).
5. Asset size: the zipped Lambda asset.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lambda_src"))

from constructs_lib.testing import (  # noqa: E402
    BATCH_ASSOCIATE,
    BATCH_DISASSOCIATE,
    DESCRIBE_ASSOCIATIONS,
    AppStreamServer,
    AppStreamState,
    ResponseServer,
    client_env,
)
from constructs_lib.testing.rehearsal import stringify  # noqa: E402

STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/Bench/00000000-0000-4000-8000-000000000000"
Row = tuple[str, str, str]


class Context:
    """Lambda's context with a countdown."""

    def __init__(self, seconds: float = 900.0) -> None:
        self._end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._end - time.monotonic()) * 1000)


def props(users: list[str], concurrency: int = 4) -> dict[str, Any]:
    return stringify(
        {
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
            "StackName": "bench",
            "UserNames": users,
            "AuthenticationType": "USERPOOL",
            "SendEmailNotification": False,
            "MaxConcurrency": concurrency,
        }
    )


def names(count: int, start: int = 0) -> list[str]:
    return [f"user{n:05d}@example.com" for n in range(start, start + count)]


@contextmanager
def environment() -> Iterator[tuple[AppStreamServer, ResponseServer, Callable[..., dict[str, Any]]]]:
    """A local AppStream and ResponseURL, and a function that runs one event through index.handler."""
    with AppStreamServer(AppStreamState()) as appstream, ResponseServer() as cfn:
        os.environ.update(client_env(appstream))
        os.environ.update(cfn.ssl_env())
        import index  # noqa: PLC0415 - after the environment is set

        def run(
            request_type: str, new: dict[str, Any], old: dict[str, Any] | None = None, physical_id: str | None = None
        ) -> dict[str, Any]:
            url = cfn.new_response_url("bench")
            event: dict[str, Any] = {
                "RequestType": request_type,
                "ResponseURL": url,
                "StackId": STACK_ID,
                "RequestId": str(uuid.uuid4()),
                "LogicalResourceId": "Associations",
                "ResourceType": "Custom::AppStreamUserStackAssociation",
                "ResourceProperties": new,
            }
            if old is not None:
                event["OldResourceProperties"] = old
            if physical_id is not None:
                event["PhysicalResourceId"] = physical_id
            index.handler(event, Context())
            return cfn.wait_for_response(url)

        yield appstream, cfn, run


def reset(appstream: AppStreamServer, users: list[str]) -> None:
    appstream.reset()
    appstream.state.add_stack("bench")
    for user in users:
        appstream.state.add_user(user)


def count(appstream: AppStreamServer) -> tuple[int, int]:
    batches = len(appstream.calls_for(BATCH_ASSOCIATE)) + len(appstream.calls_for(BATCH_DISASSOCIATE))
    return batches, len(appstream.calls_for(DESCRIBE_ASSOCIATIONS))


def bench_calls(appstream: AppStreamServer, run: Callable[..., dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for size in (25, 1000, 5000):
        users = names(size)
        reset(appstream, users)
        answer = run("Create", props(users))
        batches, pages = count(appstream)
        rows.append(
            (
                f"Create {size:,} users",
                f"{batches} batch + {pages} Describe",
                f"floor {math.ceil(size / 25)} + {max(1, math.ceil(0 / 500))}; {answer['Status']}",
            )
        )
    users = names(1000)
    reset(appstream, names(1030))
    created = run("Create", props(users))
    appstream.reset_calls()
    updated = names(980, start=20) + names(30, start=1000)  # removes 20, adds 30
    answer = run("Update", props(updated), old=props(users), physical_id=created["PhysicalResourceId"])
    batches, pages = count(appstream)
    rows.append(
        (
            "Update 1,000: +30 -20",
            f"{batches} batch + {pages} Describe",
            f"floor {math.ceil(30 / 25) + math.ceil(20 / 25)} + {math.ceil(1000 / 500)}; {answer['Status']}",
        )
    )
    return rows


def bench_parallel(appstream: AppStreamServer, run: Callable[..., dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    users = names(1000)
    floor = 40 * 0.020
    for concurrency in (1, 4, 8):
        reset(appstream, users)
        appstream.faults.latency(0.020)
        started = time.perf_counter()
        answer = run("Create", props(users, concurrency))
        seconds = time.perf_counter() - started
        rows.append(
            (
                f"Create 1,000, 20 ms/call, pool {concurrency}",
                f"{seconds:.3f} s",
                f"{seconds / floor:.2f}x the sequential floor {floor:.2f} s; {answer['Status']}",
            )
        )
    return rows


FLOOR_CODE = """
import time; t = time.perf_counter()
import boto3; boto3.client("appstream", region_name="us-east-1")
print(time.perf_counter() - t)
"""

HELPER_CODE = """
import os, time; {setup}
t = time.perf_counter()
import crhelper; crhelper.CfnResource(log_level="INFO")
print(time.perf_counter() - t)
"""


def _child(code: str, env: dict[str, str], cwd: Path | None = None, stdin: str = "") -> str:
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-I", "-c", code], env=env, cwd=cwd, input=stdin, text=True, capture_output=True, check=True
    )
    return result.stdout


def bench_cold_start(asset_dir: Path) -> list[Row]:
    from constructs_lib.testing.rehearsal import FunctionSpec, LambdaProcess  # noqa: PLC0415

    base = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    floors, ours, helper_plain, helper_lean = [], [], [], []
    with AppStreamServer(AppStreamState()) as appstream, ResponseServer() as cfn:
        process = LambdaProcess(appstream, cfn)
        function = FunctionSpec("Bench", asset_dir, "index.handler", 300.0, 256, {"LOG_LEVEL": "INFO"})
        for _ in range(7):
            reset(appstream, names(3))
            floors.append(float(_child(FLOOR_CODE, base)))
            event = {
                "RequestType": "Create",
                "StackId": STACK_ID,
                "RequestId": str(uuid.uuid4()),
                "LogicalResourceId": "Associations",
                "ResourceType": "Custom::AppStreamUserStackAssociation",
                "ResourceProperties": props(names(3)),
            }
            invocation = process.invoke(function, event)
            if "init" not in invocation.timings:
                raise RuntimeError(f"the function did not run: {invocation.logs[-2000:]}")
            ours.append(invocation.timings["init"] + invocation.timings["invoke"])
            pre = f"import sys; sys.path.insert(0, {str(asset_dir)!r})"
            helper_plain.append(float(_child(HELPER_CODE.format(setup=pre + "; import boto3"), base)))
            lean = pre + "; import boto3; os.environ['AWS_SAM_LOCAL'] = 'true'"
            helper_lean.append(float(_child(HELPER_CODE.format(setup=lean), base)))
    floor, mine = statistics.median(floors), statistics.median(ours)
    return [
        ("Floor: import boto3 + 1 client", f"{floor:.3f} s", "median of 7 fresh processes"),
        ("Create of 3 users, import to response", f"{mine:.3f} s", f"{mine / floor:.2f}x the floor (target 1.2x)"),
        (
            "crhelper CfnResource() as shipped",
            f"{statistics.median(helper_plain):.3f} s",
            "builds lambda, events and logs clients",
        ),
        (
            "crhelper CfnResource() as used here",
            f"{statistics.median(helper_lean):.3f} s",
            "polling clients skipped (index.Helper)",
        ),
    ]


SYNTH_CODE = """
import json, sys, time
t = time.perf_counter()
import aws_cdk as cdk
from aws_cdk import aws_appstream as appstream
from constructs_lib import UserStackAssociation
# CDK refuses more than 500 resources a stack (CloudFormation's quota); lift its check to measure.
app = cdk.App(outdir=sys.argv[1], context={"@aws-cdk/core:stackResourceLimit": 0})
stack = cdk.Stack(app, "Bench", env=cdk.Environment(account="123456789012", region="us-east-1"))
users = [f"user{n:05d}@example.com" for n in range(int(sys.argv[3]))]
if sys.argv[2] == "native":
    for n, user in enumerate(users):
        appstream.CfnStackUserAssociation(stack, f"A{n}", stack_name="bench", user_name=user,
                                          authentication_type="USERPOOL")
else:
    UserStackAssociation(stack, "Associations", stack_name="bench", user_names=users, shards=int(sys.argv[4]))
app.synth()
print(time.perf_counter() - t)
"""


def _synth(kind: str, users: int, shards: int = 1) -> tuple[dict[str, Any], int, float, Path]:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", SYNTH_CODE, str(out), kind, str(users), str(shards)],
        env=env,
        text=True,
        capture_output=True,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    raw = (out / "Bench.template.json").read_bytes()
    return json.loads(raw), len(raw), float(result.stdout.strip().splitlines()[-1]), out


def _largest_request(template: dict[str, Any]) -> tuple[int, int]:
    shards = [r for r in template["Resources"].values() if r["Type"] == "Custom::AppStreamUserStackAssociation"]
    envelope = 1200  # RequestType, ids, ResponseURL (a pre-signed S3 URL is ~ 800 bytes), ResourceType
    largest = max(len(json.dumps(stringify(shard["Properties"]))) for shard in shards)
    return len(shards), envelope + 2 * largest  # an Update carries new and old properties


def bench_peers() -> tuple[list[Row], Path]:
    rows: list[Row] = []
    ours, ours_bytes, ours_seconds, out = _synth("construct", 1000)
    native, native_bytes, native_seconds, _ = _synth("native", 1000)
    rows.append(
        (
            "1,000 users, this construct",
            f"{len(ours['Resources'])} resources",
            f"{ours_bytes:,} B template, synth {ours_seconds:.1f} s",
        )
    )
    rows.append(
        (
            "1,000 users, CfnStackUserAssociation",
            f"{len(native['Resources'])} resources",
            f"{native_bytes:,} B template, synth {native_seconds:.1f} s; over the 500 quota: "
            "CDK refuses it, CloudFormation would too",
        )
    )
    big, big_bytes, big_seconds, _ = _synth("construct", 5000, shards=4)
    shards, request = _largest_request(big)
    rows.append(
        (
            "5,000 users, this construct, shards=4",
            f"{shards} custom resources",
            f"largest Update request {request:,} B of 262,144; template {big_bytes:,} B, {big_seconds:.1f} s",
        )
    )
    return rows, out


def bench_asset(assembly: Path) -> list[Row]:
    template = json.loads((assembly / "Bench.template.json").read_text())
    function = next(r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function")
    asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    directory = assembly / f"asset.{asset_hash}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory))
    files = sum(1 for p in directory.rglob("*") if p.is_file())
    return [("Lambda asset, zipped", f"{len(buffer.getvalue()):,} B", f"{files} files: handler + crhelper")]


def main() -> None:
    started = time.perf_counter()
    rows: list[Row] = []
    with environment() as (appstream, _cfn, run):
        rows += bench_calls(appstream, run)
        rows += bench_parallel(appstream, run)
    peers, assembly = bench_peers()
    template = json.loads((assembly / "Bench.template.json").read_text())
    function = next(r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function")
    asset_dir = assembly / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"
    rows += bench_cold_start(asset_dir)
    rows += peers
    rows += bench_asset(assembly)
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"| {'measure':<{width[0]}} | {'figure':<{width[1]}} | {'context':<{width[2]}} |")
    print(f"|{'-' * (width[0] + 2)}|{'-' * (width[1] + 2)}|{'-' * (width[2] + 2)}|")
    for row in rows:
        print(f"| {row[0]:<{width[0]}} | {row[1]:<{width[1]}} | {row[2]:<{width[2]}} |")
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; bench took {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
