"""``make bench``: speed and scale figures, printed as a table. Nothing here asserts a time.

1. Calls per event: AppStream calls at the floor (``ceil(N/25)`` batches + Describe pages), and
   every other call (CloudFormation reads, state-store reads and writes) counted, for creates,
   an update and its commit, a delete.
2. Parallel batches: a Create of 1,000 users with 20 ms per AppStream call, pool of 1, 4 and 8
   (with how long the local DynamoDB, moto in this process, was busy meanwhile).
3. Rate limits: a Create of 1,000 users against a token-bucket AppStream at 4 and at 1 call per
   second (time against the rate floor ``(batches - burst) / rate``, throttled calls per accepted
   call), and at 0.2 calls per second with the default timeout (FAILED, AppStream as before).
4. Cold start: import-to-first-response of a Create in a fresh process (the bundled asset, run as
   Lambda runs it), against ``import boto3`` plus one client and plus the three clients it uses.
5. Past the peers' limits: 1,000 users with the construct vs 1,000 ``CfnStackUserAssociation``;
   5,000 users with the construct (shards, largest request CloudFormation would send).
6. Asset size: the zipped Lambda asset.

The handler runs in-process (``handle_event``, real boto3 clients) against the AppStream fake,
moto's DynamoDB and the testing kit's CloudFormation API, on real time.
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
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lambda_src"))

import boto3  # noqa: E402

from appstream_handler import rules  # noqa: E402
from appstream_handler.clients import client_config  # noqa: E402
from appstream_handler.handler import Answer, Clients, Environment, handle_event  # noqa: E402
from constructs_lib import _timing  # noqa: E402
from constructs_lib.testing import (  # noqa: E402
    BATCH_ASSOCIATE,
    BATCH_DISASSOCIATE,
    DESCRIBE_ASSOCIATIONS,
    AppStreamServer,
    AppStreamState,
    CloudFormationApi,
    FunctionSpec,
    LambdaProcess,
    LocalAws,
    ResponseServer,
    StackRegistry,
)
from constructs_lib.testing.events import association_properties, cloudformation_event, stack_id  # noqa: E402

Row = tuple[str, str, str]
TABLE = "bench-state"
TABLE_PROPERTIES = {
    "TableName": TABLE,
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
}
VERBS = {"Create": "CREATE", "Update": "UPDATE", "Delete": "DELETE"}


def names(count: int, start: int = 0) -> list[str]:
    return [f"user{n:05d}@example.com" for n in range(start, start + count)]


class _CallTimer:
    """Wall seconds during which at least one state-store call was in flight (botocore hooks).

    The local DynamoDB is moto, in this process and serial: it parses and validates every update
    expression in Python, about 8 ms per item, so each 26-item write-ahead transaction keeps it
    busy some 0.2 s, where DynamoDB takes tens of milliseconds. The rows show how long it was busy.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._since = 0.0
        self.seconds = 0.0

    def start(self, **_: Any) -> None:
        with self._lock:
            if self._in_flight == 0:
                self._since = time.perf_counter()
            self._in_flight += 1

    def stop(self, **_: Any) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if self._in_flight == 0:
                self.seconds += time.perf_counter() - self._since

    def reset(self) -> None:
        with self._lock:
            self.seconds = 0.0


@dataclass
class Local:
    """The three local services, clients that count their calls, and one CloudFormation stack played by hand."""

    appstream: AppStreamServer
    aws: LocalAws
    cfn_api: CloudFormationApi
    registry: StackRegistry
    clients: Clients
    dynamodb_calls: Counter[str] = field(default_factory=Counter)
    dynamodb_timer: _CallTimer = field(default_factory=_CallTimer)
    stack: str = ""
    ids: dict[str, str] = field(default_factory=dict)
    props: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fresh(self, users: list[str], *, rate: tuple[float, int] | None = None, latency: float = 0.0) -> None:
        """An empty account with the users and stack ``bench``; an empty state table; a new stack."""
        self.appstream.reset()
        self.appstream.state.add_stack("bench")
        for user in users:
            self.appstream.state.add_user(user)
        if rate is not None:
            self.appstream.faults.rate_limit(rate[0], burst=rate[1])
        if latency:
            self.appstream.faults.latency(latency)
        dynamodb = self.aws.client("dynamodb")
        dynamodb.delete_table(TableName=TABLE)
        self.aws.create_resource("AWS::DynamoDB::Table", "State", TABLE_PROPERTIES, stack_name="bench")
        self.stack = stack_id("Bench")
        self.registry.create_stack(self.stack, "Bench")
        self.ids.clear()
        self.props.clear()
        self.send("Create", "Deployment", {"Generation": "0"}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE)

    def phase(self, status: str) -> None:
        self.registry.set_stack_status(self.stack, status)

    def reset_counts(self) -> None:
        self.appstream.reset_calls()
        self.cfn_api.reset_calls()
        self.dynamodb_calls.clear()
        self.dynamodb_timer.reset()

    def send(
        self,
        request: str,
        logical_id: str,
        properties: Mapping[str, Any],
        *,
        resource_type: str = rules.RESOURCE_TYPE,
        physical_id: str | None = None,
        remaining: float = 900.0,
    ) -> Answer:
        event = cloudformation_event(
            request,
            properties,
            old_properties=self.props.get(logical_id) if request == "Update" else None,
            physical_id=physical_id or (self.ids.get(logical_id) if request != "Create" else None),
            logical_id=logical_id,
            stack=self.stack,
            resource_type=resource_type,
            response_url="https://127.0.0.1/unused",
        )
        if physical_id is None:
            self.registry.set_resource(self.stack, logical_id, resource_type, f"{VERBS[request]}_IN_PROGRESS")
        answer = handle_event(
            event, self.clients, remaining, environment=Environment(own_stack_id=self.stack, table=TABLE)
        )
        if answer.status == "SUCCESS" and request != "Delete":
            self.ids[logical_id] = answer.physical_resource_id
            self.props[logical_id] = dict(event["ResourceProperties"] or {})
        status = "COMPLETE" if answer.status == "SUCCESS" else "FAILED"
        self.registry.set_resource(
            self.stack, logical_id, resource_type, f"{VERBS[request]}_{status}", physical_id=answer.physical_resource_id
        )
        return answer

    def counts(self) -> tuple[int, int, int, int]:
        """(batch calls, Describe pages, CloudFormation calls, state-store calls) since the last reset."""
        batches = len(self.appstream.calls_for(BATCH_ASSOCIATE)) + len(self.appstream.calls_for(BATCH_DISASSOCIATE))
        return (
            batches,
            len(self.appstream.calls_for(DESCRIBE_ASSOCIATIONS)),
            len(self.cfn_api.calls),
            sum(self.dynamodb_calls.values()),
        )


@contextmanager
def local() -> Iterator[Local]:
    registry = StackRegistry()
    with AppStreamServer(AppStreamState()) as appstream, LocalAws() as aws, CloudFormationApi(registry) as cfn_api:
        aws.create_resource("AWS::DynamoDB::Table", "State", TABLE_PROPERTIES, stack_name="bench")
        session = boto3.session.Session(
            aws_access_key_id="x",
            aws_secret_access_key="x",  # noqa: S106 - dummy credentials for the local moto server
            aws_session_token="x",  # noqa: S106
            region_name="us-east-1",
        )
        dynamodb = session.client("dynamodb", endpoint_url=aws.endpoint_url, config=client_config("dynamodb"))
        counted: Counter[str] = Counter()
        timing = _CallTimer()
        dynamodb.meta.events.register(
            "before-call.dynamodb",
            lambda model, **_: counted.update([model.name]),
        )
        dynamodb.meta.events.register("before-call.dynamodb", timing.start)
        dynamodb.meta.events.register("after-call.dynamodb", timing.stop)
        dynamodb.meta.events.register("after-call-error.dynamodb", timing.stop)
        clients = Clients(
            appstream=session.client(
                "appstream", endpoint_url=appstream.endpoint_url, config=client_config("appstream")
            ),
            cloudformation=session.client(
                "cloudformation", endpoint_url=cfn_api.endpoint_url, config=client_config("cloudformation")
            ),
            dynamodb=dynamodb,
        )
        yield Local(appstream, aws, cfn_api, registry, clients, counted, timing)


def _figure(run: Local) -> str:
    batches, pages, cfn, state = run.counts()
    return f"{batches} batch + {pages} Describe; {cfn} CloudFormation + {state} state"


def bench_calls(run: Local) -> list[Row]:
    rows: list[Row] = []
    for size in (25, 1000, 5000):
        users = names(size)
        run.fresh(users)
        run.reset_counts()
        answer = run.send("Create", "Associations", association_properties("bench", users))
        batches = math.ceil(size / 25)
        rows.append(
            (
                f"Create {size:,} users",
                _figure(run),
                f"floor {batches} batch + 1 Describe; state: {batches} writes + 4; {answer.status}",
            )
        )
    users = names(1000)
    run.fresh(names(1030))
    run.send("Create", "Associations", association_properties("bench", users))
    run.phase("UPDATE_IN_PROGRESS")
    run.send("Update", "Deployment", {"Generation": "1"}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE)
    run.reset_counts()
    updated = names(980, start=20) + names(30, start=1000)  # removes 20, adds 30
    answer = run.send("Update", "Associations", association_properties("bench", updated))
    rows.append(("Update 1,000: +30 -20", _figure(run), f"the 20 removals wait for the commit; {answer.status}"))
    run.phase("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    run.reset_counts()
    answer = run.send(
        "Delete", "Deployment", {}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE, physical_id="old-marker"
    )
    rows.append(("  its commit (cleanup Delete)", _figure(run), f"withdraws the 20; {answer.status}"))
    run.phase("UPDATE_COMPLETE")
    run.phase("DELETE_IN_PROGRESS")
    run.reset_counts()
    answer = run.send("Delete", "Associations", run.props["Associations"])
    rows.append(
        ("Delete 1,010 users", _figure(run), f"floor {math.ceil(1010 / 25)} batch + 3 Describe; {answer.status}")
    )
    return rows


def bench_parallel(run: Local) -> list[Row]:
    rows: list[Row] = []
    users = names(1000)
    floor = 40 * 0.020
    for concurrency in (1, 4, 8):
        run.fresh(users, latency=0.020)
        run.reset_counts()
        started = time.perf_counter()
        answer = run.send("Create", "Associations", association_properties("bench", users, max_concurrency=concurrency))
        seconds = time.perf_counter() - started
        rows.append(
            (
                f"Create 1,000, 20 ms/call, pool {concurrency}",
                f"{seconds:.3f} s",
                f"{seconds / floor:.2f}x the sequential floor {floor:.2f} s (AppStream calls only); "
                f"the local DynamoDB busy {run.dynamodb_timer.seconds:.1f} s of it; {answer.status}",
            )
        )
    return rows


def bench_rates(run: Local) -> list[Row]:
    rows: list[Row] = []
    users = names(1000)
    batches = 40
    for rate, burst in ((4.0, 1), (1.0, 1)):
        run.fresh(users, rate=(rate, burst))
        run.reset_counts()
        started = time.perf_counter()
        answer = run.send("Create", "Associations", association_properties("bench", users))
        seconds = time.perf_counter() - started
        calls = run.appstream.calls
        throttled = sum(1 for call in calls if call.throttled)
        accepted = len(calls) - throttled
        floor = (batches - burst) / rate
        state = run.dynamodb_timer.seconds
        rows.append(
            (
                f"Create 1,000 at {rate:g} call/s (burst {burst})",
                f"{seconds:.1f} s",
                f"{seconds / floor:.2f}x the rate floor {floor:.1f} s (goal 1.15x), the local DynamoDB busy "
                f"{state:.1f} s of it; "
                f"{throttled / max(1, accepted):.2f} throttled per accepted call (goal 0.25); {answer.status}",
            )
        )
    # The construct's default timeout for a shard of 1,000 users (max_concurrency 4).
    timeout = _timing.function_timeout_seconds(_timing.needed_for_shards([("bench", 1000, 4)]))
    run.fresh(users, rate=(0.2, 1))
    before = run.appstream.state.associations()
    started = time.perf_counter()
    answer = run.send("Create", "Associations", association_properties("bench", users), remaining=float(timeout))
    seconds = time.perf_counter() - started
    same = run.appstream.state.associations() == before
    rows.append(
        (
            f"Create 1,000 at 0.2 call/s, default timeout {timeout} s",
            f"{answer.status} in {seconds:.1f} s",
            f"AppStream {'exactly as before' if same else 'CHANGED'}; reason: {answer.reason[:70]}...",
        )
    )
    return rows


FLOOR_CODE = """
import time; t = time.perf_counter()
import boto3; s = boto3.session.Session(region_name="us-east-1")
for service in {services!r}: s.client(service)
print(time.perf_counter() - t)
"""


def _child(code: str, env: dict[str, str]) -> float:
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-I", "-c", code], env=env, text=True, capture_output=True, check=True
    )
    return float(result.stdout.strip())


def bench_cold_start(run: Local, asset_dir: Path) -> list[Row]:
    base = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    one, three, ours = [], [], []
    with ResponseServer() as responses:
        process = LambdaProcess(
            run.appstream,
            responses,
            endpoints=lambda: {**run.aws.client_env(), **run.cfn_api.client_env()},
        )
        function = FunctionSpec(
            "Bench",
            asset_dir,
            "index.handler",
            300.0,
            256,
            {"LOG_LEVEL": "INFO", "STATE_TABLE": TABLE, "APPSTREAM_ASSOCIATIONS_VERSION": "bench"},
        )
        for _ in range(7):
            run.fresh(names(3))
            one.append(_child(FLOOR_CODE.format(services=("appstream",)), base))
            three.append(_child(FLOOR_CODE.format(services=("appstream", "cloudformation", "dynamodb")), base))
            spec = FunctionSpec(
                **{**function.__dict__, "environment": {**function.environment, "OWN_STACK_ID": run.stack}}
            )
            event = cloudformation_event(
                "Create",
                association_properties("bench", names(3)),
                logical_id="Cold",
                stack=run.stack,
                request_id=str(uuid.uuid4()),
            )
            run.registry.set_resource(run.stack, "Cold", rules.RESOURCE_TYPE, "CREATE_IN_PROGRESS")
            invocation = process.invoke(spec, event)
            if "init" not in invocation.timings or invocation.status != "SUCCESS":
                raise RuntimeError(f"the function did not run: {invocation.logs[-2000:]}")
            ours.append(invocation.timings["init"] + invocation.timings["invoke"])
    floor, floor3, mine = statistics.median(one), statistics.median(three), statistics.median(ours)
    return [
        ("Floor: import boto3 + 1 client", f"{floor:.3f} s", "median of 7 fresh processes"),
        ("Floor: import boto3 + 3 clients", f"{floor3:.3f} s", "AppStream, CloudFormation, DynamoDB"),
        (
            "Create of 3 users, import to response",
            f"{mine:.3f} s",
            f"{mine / floor:.2f}x the 1-client floor, {mine / floor3:.2f}x the 3-client floor; "
            "2 CloudFormation reads, 4 state calls, 3 AppStream calls",
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
    from constructs_lib.testing.events import stringify  # noqa: PLC0415

    shards = [r for r in template["Resources"].values() if r["Type"] == rules.RESOURCE_TYPE]
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


def bench_asset(assembly: Path) -> tuple[list[Row], Path]:
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
    return [("Lambda asset, zipped", f"{len(buffer.getvalue()):,} B", f"{files} files: handler + crhelper")], directory


def main() -> None:
    started = time.perf_counter()
    rows: list[Row] = []
    peers, assembly = bench_peers()
    asset_rows, asset_dir = bench_asset(assembly)
    with local() as run:
        rows += bench_calls(run)
        rows += bench_parallel(run)
        rows += bench_rates(run)
        rows += bench_cold_start(run, asset_dir)
    rows += peers
    rows += asset_rows
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
