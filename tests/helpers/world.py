"""A local AWS for the handler's tests: AppStream, DynamoDB and CloudFormation on loopback.

:class:`World` runs the AppStream fake, moto's DynamoDB (server mode) with the state table, and the
testing kit's CloudFormation read API over a :class:`StackRegistry`; :class:`StackDriver` plays one
CloudFormation stack by hand: it sets the stack's status (the phase) and the resource's status, sends
one event to :func:`appstream_handler.handler.handle_event` through real boto3 clients, and records
the resource's outcome as CloudFormation would. Time is a :class:`FakeClock` (sleeps advance it).

AppStream's slowness is played on the same clock: :attr:`World.appstream_seconds` is how far
each AppStream request (every attempt) moves the fake clock, through a botocore ``before-send``
hook on the world's AppStream clients, so "time runs out mid-way" needs no real waiting.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from appstream_handler import rules
from appstream_handler.batches import ItemRetry
from appstream_handler.clients import client_config
from appstream_handler.handler import Answer, Clients, Clocks, Environment, handle_event
from constructs_lib.testing.appstream import AppStreamServer, AppStreamState
from constructs_lib.testing.aws_services import LocalAws
from constructs_lib.testing.cloudformation_api import CloudFormationApi
from constructs_lib.testing.events import association_properties, cloudformation_event, stack_id
from constructs_lib.testing.stack_registry import StackRegistry

TABLE_PROPERTIES = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
    "TimeToLiveSpecification": {"AttributeName": "expires", "Enabled": True},
}
VERBS = {"Create": "CREATE", "Update": "UPDATE", "Delete": "DELETE"}


class FakeClock:
    """Wall and monotonic time that only a sleep moves (thread-safe), with sleeps that overlap.

    Each thread keeps its own "now": the clock as it last read it, plus what it slept since. A
    sleep moves the shared clock to the sleeping thread's wake-up time if that is later, so two
    threads that each sleep 10 s from the same moment take 10 s of clock, as they would in real
    time (a clock that added every sleep would make parallel waits look serial).
    """

    START = 1000.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._wall_at_start = time.time()
        self._mono = self.START
        self._epoch = 0
        self.slept = 0.0

    def _read(self) -> float:
        self._local.now = self._mono
        self._local.epoch = self._epoch
        return self._mono

    def wall(self) -> float:
        with self._lock:
            return self._wall_at_start + (self._read() - self.START)

    def monotonic(self) -> float:
        with self._lock:
            return self._read()

    def restart(self) -> None:
        """Back to the start (a new test)."""
        with self._lock:
            self._wall_at_start = time.time()
            self._mono = self.START
            self._epoch += 1
            self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        with self._lock:
            step = max(0.0, seconds)
            known = getattr(self._local, "now", None)
            if known is None or getattr(self._local, "epoch", -1) != self._epoch:
                known = self._mono
            wake = known + step
            self._local.now = wake
            self._local.epoch = self._epoch
            if wake > self._mono:
                self.slept += wake - self._mono
                self._mono = wake

    @property
    def clocks(self) -> Clocks:
        return Clocks(wall=self.wall, monotonic=self.monotonic, sleep=self.sleep)


@dataclass
class World:
    """The three local services and clients that reach them."""

    appstream: AppStreamServer
    aws: LocalAws
    cloudformation: CloudFormationApi
    registry: StackRegistry
    table: str
    clients: Clients
    clock: FakeClock = field(default_factory=FakeClock)
    appstream_seconds: float = 0.0
    """How far each AppStream request moves the fake clock (its latency, played on the clock)."""
    session: Any = None
    """The boto3 session of the world's clients (fake credentials, us-east-1)."""
    appstream_hooks: list[Callable[[str], None]] = field(default_factory=list)
    """Called with the operation name before each AppStream request is sent (see :meth:`on_appstream_request`)."""

    def reset(self) -> None:
        """A fresh account: empty AppStream, an empty state table, no stacks, no faults, no latency."""
        self.appstream.reset()
        self.registry.forget()
        self.cloudformation.reset_calls()
        self.cloudformation.faults.clear()
        _fresh_table(self.aws, self.table)
        self.clock.restart()
        self.appstream_seconds = 0.0
        self.appstream_hooks.clear()

    def on_appstream_request(self, hook: Callable[[str], None]) -> None:
        """Run ``hook(operation)`` before each AppStream request (every attempt) until the next reset.

        A hook may install faults for the request about to be sent, e.g. refuse only the second batch.
        """
        self.appstream_hooks.append(hook)

    def environment(self, own_stack_id: str, *, table: str | None = None) -> Environment:
        """The function's configuration for a function of stack ``own_stack_id``."""
        return Environment(own_stack_id=own_stack_id, table=self.table if table is None else table)

    def handle(
        self,
        event: Mapping[str, Any],
        *,
        own_stack_id: str,
        remaining: float = 300.0,
        clients: Clients | None = None,
        item_retry: ItemRetry | None = None,
        table: str | None = None,
    ) -> Answer:
        """``handle_event`` as the function of stack ``own_stack_id`` runs it (no registry changes)."""
        return handle_event(
            event,
            clients or self.clients,
            remaining,
            environment=self.environment(own_stack_id, table=table),
            clocks=self.clock.clocks,
            item_retry=item_retry,
        )

    def appstream_client(self, **config: Any) -> Any:
        """A new AppStream client like the function's, with ``config`` overriding its botocore Config.

        E.g. ``read_timeout=0.2`` (a hang ends quickly) or ``user_agent_appid="x"`` (for
        ``faults.crash``). It moves the fake clock like the world's own client.
        """
        client = self._session().client(
            "appstream",
            endpoint_url=self.appstream.endpoint_url,
            config=client_config("appstream").merge(Config(**config)),
        )
        client.meta.events.register("before-send.appstream", self._on_appstream_send)
        return client

    def clients_with(self, *, appstream: Any = None, dynamodb: Any = None, cloudformation: Any = None) -> Clients:
        """The world's clients with some replaced."""
        return Clients(
            appstream=appstream or self.clients.appstream,
            cloudformation=cloudformation or self.clients.cloudformation,
            dynamodb=dynamodb or self.clients.dynamodb,
        )

    def _session(self) -> Any:
        return self.session or _session()

    def _on_appstream_send(self, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        for hook in list(self.appstream_hooks):
            hook(operation)
        if self.appstream_seconds:
            self.clock.sleep(self.appstream_seconds)

    def seed(
        self,
        *,
        stacks: Sequence[str] = (),
        users: Sequence[str] = (),
        associated: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Stacks, USERPOOL users and associations that exist in AppStream before anything runs."""
        for name in stacks:
            self.appstream.state.add_stack(name)
        for user in users:
            self.appstream.state.add_user(user)
        for stack, names in (associated or {}).items():
            for user in names:
                self.appstream.state.associate(stack, user)

    def associations(self) -> set[tuple[str, str]]:
        """(stack, user) of every association AppStream holds."""
        return {(stack, user) for stack, user, _ in self.appstream.state.associations()}

    def stack(self, name: str = "Main") -> StackDriver:
        """A new CloudFormation stack in CREATE_IN_PROGRESS."""
        identifier = stack_id(name)
        self.registry.create_stack(identifier, name)
        return StackDriver(self, identifier, name)

    def deployed(
        self, resources: Mapping[str, Sequence[str]], *, stack: str, name: str = "Main", **options: Any
    ) -> StackDriver:
        """A stack whose first deployment created ``resources`` (logical id -> users on ``stack``) and succeeded."""
        driver = self.stack(name)
        answer = driver.begin()
        assert answer.status == "SUCCESS", answer.reason
        for logical_id, users in resources.items():
            answer = driver.create(logical_id, stack, users, **options)
            assert answer.status == "SUCCESS", answer.reason
        driver.phase("CREATE_COMPLETE")
        return driver

    def items(self) -> list[dict[str, Any]]:
        """Every item of the state table (for assertions on the schema)."""
        return list(self.aws.client("dynamodb").scan(TableName=self.table, ConsistentRead=True)["Items"])


@dataclass
class StackDriver:
    """One CloudFormation stack, played by hand."""

    world: World
    stack_id: str
    name: str
    physical_ids: dict[str, str] = field(default_factory=dict)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    previous_marker: str = ""
    """The deployment marker's id before the last deployment began (what the commit deletes)."""

    def phase(self, status: str) -> StackDriver:
        """Move the stack to ``status`` (CREATE_IN_PROGRESS, UPDATE_ROLLBACK_IN_PROGRESS, ...)."""
        self.world.registry.set_stack_status(self.stack_id, status)
        return self

    def event(
        self,
        request_type: str,
        logical_id: str,
        properties: Mapping[str, Any] | None = None,
        *,
        old: Mapping[str, Any] | None = None,
        physical_id: str | None = None,
        resource_type: str = rules.RESOURCE_TYPE,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """The event CloudFormation would send now (old properties and ids from what was answered)."""
        if properties is None:
            properties = self.properties.get(logical_id, {})
        if request_type == "Update" and old is None:
            old = self.properties.get(logical_id)
        if request_type != "Create" and physical_id is None:
            physical_id = (
                self.physical_ids.get(logical_id) or f"{self.name}-{logical_id}-{uuid.uuid4().hex[:12].upper()}"
            )
        return cloudformation_event(
            request_type,
            properties,
            old_properties=old,
            physical_id=physical_id,
            logical_id=logical_id,
            stack=self.stack_id,
            resource_type=resource_type,
            request_id=request_id,
            response_url="https://127.0.0.1/unused",
        )

    def send(
        self,
        event: Mapping[str, Any],
        *,
        remaining: float = 300.0,
        in_progress: bool = True,
        clients: Clients | None = None,
        item_retry: ItemRetry | None = None,
    ) -> Answer:
        """Deliver ``event`` with the resource shown in progress; record the outcome as CloudFormation would."""

        def run(delivered: Mapping[str, Any]) -> Answer:
            return handle_event(
                delivered,
                clients or self.world.clients,
                remaining,
                environment=Environment(own_stack_id=self.stack_id, table=self.world.table),
                clocks=self.world.clock.clocks,
                item_retry=item_retry,
            )

        return self.send_through(event, run, in_progress=in_progress)

    def send_through(
        self, event: Mapping[str, Any], deliver: Callable[[Mapping[str, Any]], Answer], *, in_progress: bool = True
    ) -> Answer:
        """Like :meth:`send`, with ``deliver`` running the function (e.g. ``index.handler`` over HTTPS)."""
        logical_id = str(event["LogicalResourceId"])
        verb = VERBS[str(event["RequestType"])]
        registry = self.world.registry
        if in_progress:
            registry.set_resource(self.stack_id, logical_id, str(event["ResourceType"]), f"{verb}_IN_PROGRESS")
        answer = deliver(event)
        if in_progress:
            status = f"{verb}_{'COMPLETE' if answer.status == 'SUCCESS' else 'FAILED'}"
            registry.set_resource(
                self.stack_id, logical_id, str(event["ResourceType"]), status, physical_id=answer.physical_resource_id
            )
        if answer.status == "SUCCESS" and event["RequestType"] != "Delete":
            self.physical_ids[logical_id] = answer.physical_resource_id
            self.properties[logical_id] = dict(event["ResourceProperties"])
        if answer.status == "SUCCESS" and event["RequestType"] == "Delete":
            self.physical_ids.pop(logical_id, None)
        return answer

    def create(self, logical_id: str, stack: str, users: Sequence[str], **options: Any) -> Answer:
        """Create an association resource."""
        return self.send(self.event("Create", logical_id, association_properties(stack, users, **options)))

    def update(self, logical_id: str, stack: str, users: Sequence[str], **options: Any) -> Answer:
        """Update an association resource to new properties."""
        return self.send(self.event("Update", logical_id, association_properties(stack, users, **options)))

    def delete(self, logical_id: str) -> Answer:
        """Delete a resource (with the physical id it was given)."""
        return self.send(self.event("Delete", logical_id))

    def begin(self, properties: Mapping[str, Any] | None = None) -> Answer:
        """The deployment marker's Create or Update: a deployment begins."""
        props = dict(properties or {"Generation": uuid.uuid4().hex})
        previous = self.physical_ids.get("Deployment")
        request = "Update" if previous else "Create"
        answer = self.send(self.event(request, "Deployment", props, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE))
        if answer.status == "SUCCESS" and previous and previous != answer.physical_resource_id:
            self.previous_marker = previous
        return answer

    def begin_update(self) -> StackDriver:
        """A new deployment of this stack: UPDATE_IN_PROGRESS and the marker's Update."""
        self.phase("UPDATE_IN_PROGRESS")
        answer = self.begin()
        assert answer.status == "SUCCESS", answer.reason
        return self

    def commit(self) -> Answer:
        """The cleanup-phase Delete of the marker's old id: the deployment succeeded.

        The marker keeps its new id (the one a later deployment's Update is sent to).
        """
        self.phase("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
        current = self.physical_ids.get("Deployment")
        answer = self.send(
            self.event(
                "Delete",
                "Deployment",
                {},
                resource_type=rules.DEPLOYMENT_RESOURCE_TYPE,
                physical_id=self.previous_marker or "old-marker",
            ),
            in_progress=False,
        )
        if current is not None:
            self.physical_ids["Deployment"] = current
        return answer


def _session() -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
        region_name="us-east-1",
    )


def _fresh_table(aws: LocalAws, table: str) -> None:
    """An empty state table named ``table`` (moto's backends outlive a server: drop any left over)."""
    dynamodb = aws.client("dynamodb")
    with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):
        dynamodb.delete_table(TableName=table)
    aws.create_resource("AWS::DynamoDB::Table", "State", {**TABLE_PROPERTIES, "TableName": table}, stack_name="t")


@contextmanager
def running_world(table: str = "state") -> Iterator[World]:
    """Start the three services (about a second), yield the world, stop them."""
    registry = StackRegistry()
    clock = FakeClock()
    state = AppStreamState(clock=clock.monotonic)
    with AppStreamServer(state) as appstream, LocalAws() as aws, CloudFormationApi(registry) as cfn:
        _fresh_table(aws, table)
        session = _session()
        clients = Clients(
            appstream=session.client(
                "appstream", endpoint_url=appstream.endpoint_url, config=client_config("appstream")
            ),
            cloudformation=session.client(
                "cloudformation", endpoint_url=cfn.endpoint_url, config=client_config("cloudformation")
            ),
            dynamodb=session.client("dynamodb", endpoint_url=aws.endpoint_url, config=client_config("dynamodb")),
        )
        world = World(appstream, aws, cfn, registry, table, clients, clock, session=session)
        clients.appstream.meta.events.register("before-send.appstream", world._on_appstream_send)
        yield world
