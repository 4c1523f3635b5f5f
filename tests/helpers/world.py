"""A local AWS for the handler's tests: AppStream, DynamoDB and CloudFormation on loopback.

:class:`World` runs the AppStream fake, moto's DynamoDB (server mode) with the state table, and the
testing kit's CloudFormation read API over a :class:`StackRegistry`; :class:`StackDriver` plays one
CloudFormation stack by hand: it sets the stack's status (the phase) and the resource's status, sends
one event to :func:`appstream_handler.handler.handle_event` through real boto3 clients, and records
the resource's outcome as CloudFormation would. Time is a :class:`FakeClock` (sleeps advance it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3

from appstream_handler import rules
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
    """Wall and monotonic time that only a sleep moves (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wall = time.time()
        self._mono = 1000.0
        self.slept = 0.0

    def wall(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def restart(self) -> None:
        """Back to the start (a new test)."""
        with self._lock:
            self._wall = time.time()
            self._mono = 1000.0
            self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        with self._lock:
            step = max(0.0, seconds)
            self._wall += step
            self._mono += step
            self.slept += step

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

    def reset(self) -> None:
        """A fresh account: empty AppStream, an empty state table, no stacks."""
        self.appstream.reset()
        self.registry.forget()
        self.cloudformation.reset_calls()
        dynamodb = self.aws.client("dynamodb")
        dynamodb.delete_table(TableName=self.table)
        self.aws.create_resource(
            "AWS::DynamoDB::Table", "State", {**TABLE_PROPERTIES, "TableName": self.table}, stack_name="t"
        )
        self.clock.restart()

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

    def send(self, event: Mapping[str, Any], *, remaining: float = 300.0, in_progress: bool = True) -> Answer:
        """Deliver ``event`` with the resource shown in progress; record the outcome as CloudFormation would."""
        logical_id = str(event["LogicalResourceId"])
        verb = VERBS[str(event["RequestType"])]
        registry = self.world.registry
        if in_progress:
            registry.set_resource(self.stack_id, logical_id, str(event["ResourceType"]), f"{verb}_IN_PROGRESS")
        answer = handle_event(
            event,
            self.world.clients,
            remaining,
            environment=Environment(own_stack_id=self.stack_id, table=self.world.table),
            clocks=self.world.clock.clocks,
        )
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
        request = "Update" if "Deployment" in self.physical_ids else "Create"
        return self.send(self.event(request, "Deployment", props, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE))

    def commit(self) -> Answer:
        """The cleanup-phase Delete of the marker's old id: the deployment succeeded."""
        self.phase("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
        return self.send(
            self.event(
                "Delete", "Deployment", {}, resource_type=rules.DEPLOYMENT_RESOURCE_TYPE, physical_id="old-marker"
            ),
            in_progress=False,
        )


@contextmanager
def running_world(table: str = "state") -> Iterator[World]:
    """Start the three services (about a second), yield the world, stop them."""
    registry = StackRegistry()
    clock = FakeClock()
    state = AppStreamState(clock=clock.monotonic)
    with AppStreamServer(state) as appstream, LocalAws() as aws, CloudFormationApi(registry) as cfn:
        aws.create_resource("AWS::DynamoDB::Table", "State", {**TABLE_PROPERTIES, "TableName": table}, stack_name="t")
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
            region_name="us-east-1",
        )
        clients = Clients(
            appstream=session.client(
                "appstream", endpoint_url=appstream.endpoint_url, config=client_config("appstream")
            ),
            cloudformation=session.client(
                "cloudformation", endpoint_url=cfn.endpoint_url, config=client_config("cloudformation")
            ),
            dynamodb=session.client("dynamodb", endpoint_url=aws.endpoint_url, config=client_config("dynamodb")),
        )
        yield World(appstream, aws, cfn, registry, table, clients, clock)
