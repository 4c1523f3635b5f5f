"""Shared fixtures: a local AppStream, CloudFormation's HTTPS ResponseURL, and the handler harness.

The handler runs in-process through its real entry point (``index.handler``, crhelper and
all); its AppStream client reaches the fake through ``AWS_ENDPOINT_URL_APPSTREAM`` and its
response goes over HTTPS to a server on 127.0.0.1 that the process trusts via ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from constructs_lib.testing import AppStreamServer, AppStreamState, ResponseServer, client_env
from constructs_lib.testing.rehearsal import stringify

STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/Main/4f1a2b3c-0000-4000-8000-000000000001"
TOKEN = "arn:aws:lambda:us-east-1:123456789012:function:AssociationsHandler"


@pytest.fixture(scope="session")
def appstream_server() -> Iterator[AppStreamServer]:
    """One local AppStream for the session; ``appstream`` empties it for each test."""
    with AppStreamServer(AppStreamState()) as server:
        yield server


@pytest.fixture(scope="session")
def response_server() -> Iterator[ResponseServer]:
    """CloudFormation's side: records every response PUT."""
    with ResponseServer() as server:
        yield server


@pytest.fixture(scope="session")
def lambda_environment(appstream_server: AppStreamServer, response_server: ResponseServer) -> Iterator[None]:
    """The process environment the function sees: region, fake credentials, local endpoints."""
    saved = dict(os.environ)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(client_env(appstream_server))
    os.environ.update(response_server.ssl_env())
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def appstream(appstream_server: AppStreamServer, lambda_environment: None) -> AppStreamServer:
    """The local AppStream, emptied, with no faults and an empty call log."""
    appstream_server.reset()
    return appstream_server


def seed(
    server: AppStreamServer, *, stacks: list[str], users: list[str], associated: Mapping[str, list[str]] | None = None
) -> None:
    """Add USERPOOL users, stacks and existing associations to the fake."""
    for stack in stacks:
        server.state.add_stack(stack)
    for user in users:
        server.state.add_user(user)
    for stack, names in (associated or {}).items():
        for user in names:
            server.state.associate(stack, user)


def properties(
    stack: str, users: list[str], *, auth: str = "USERPOOL", email: bool = False, concurrency: int = 4
) -> dict[str, Any]:
    """ResourceProperties as CloudFormation delivers them: every scalar a string."""
    return stringify(
        {
            "ServiceToken": TOKEN,
            "StackName": stack,
            "UserNames": users,
            "AuthenticationType": auth,
            "SendEmailNotification": email,
            "MaxConcurrency": concurrency,
        }
    )


def cfn_event(
    request_type: str,
    props: Mapping[str, Any] | None,
    *,
    old: Mapping[str, Any] | None = None,
    physical_id: str | None = None,
    logical_id: str = "Associations",
) -> dict[str, Any]:
    """A CloudFormation custom-resource request (the ResponseURL is set by the harness)."""
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": TOKEN,
        "StackId": STACK_ID,
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": logical_id,
        "ResourceType": "Custom::AppStreamUserStackAssociation",
        "ResourceProperties": props,
    }
    if old is not None:
        event["OldResourceProperties"] = old
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    return event


class Context:
    """Lambda's context: the remaining time counts down from ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self.function_name = "AssociationsHandler"
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


@dataclass
class Answered:
    """What CloudFormation received for one event."""

    body: dict[str, Any]
    bodies: list[dict[str, Any]]
    seconds: float

    @property
    def status(self) -> str:
        return str(self.body["Status"])

    @property
    def reason(self) -> str:
        return str(self.body.get("Reason", ""))

    @property
    def physical_id(self) -> str:
        return str(self.body["PhysicalResourceId"])


@pytest.fixture
def invoke(response_server: ResponseServer, lambda_environment: None) -> Any:
    """Call ``index.handler`` with an event; return the single response CloudFormation got."""
    import index  # noqa: PLC0415 - needs the environment set up first

    def run(event: dict[str, Any], *, remaining: float = 300.0, settle: float = 0.0, validate: bool = True) -> Answered:
        url = response_server.new_response_url(event.get("LogicalResourceId", "response"))
        event = {**event, "ResponseURL": url}
        started = time.monotonic()
        index.handler(event, Context(remaining))
        seconds = time.monotonic() - started
        if settle:
            time.sleep(settle)  # let a late second answer (if any) arrive before counting
        bodies = response_server.responses(url)
        assert len(bodies) == 1, f"expected exactly one response, got {len(bodies)}"
        problems = [p for attempt in response_server.attempts(url) if attempt.accepted for p in attempt.problems]
        assert not (validate and problems), problems
        return Answered(bodies[0], bodies, seconds)

    return run
