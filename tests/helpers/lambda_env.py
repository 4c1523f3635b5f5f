"""The function as Lambda runs it: ``index.handler`` with the environment the construct gives it.

:func:`function_environment` is that environment for a :class:`~tests.helpers.world.World`: the
function's own stack (``OWN_STACK_ID``) and state table (``STATE_TABLE``), the three services on
loopback (``AWS_ENDPOINT_URL_APPSTREAM`` / ``_CLOUDFORMATION`` / ``_DYNAMODB``), region and fake
credentials, and ``SSL_CERT_FILE`` so that the response PUT trusts the :class:`ResponseServer`'s
test CA. :class:`Function` delivers one event through ``index.handler`` (crhelper, the bounded
responder, HTTPS) and collects what CloudFormation received.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from appstream_handler.handler import Answer
from constructs_lib.testing import ResponseAttempt, ResponseServer
from constructs_lib.testing.events import LambdaContext
from tests.helpers.world import World

__all__ = ["Delivery", "Function", "function_environment", "patched_environment"]


def function_environment(world: World, responses: ResponseServer, own_stack_id: str) -> dict[str, str]:
    """The environment variables the function gets (and the test CA for its response PUT)."""
    return {
        "OWN_STACK_ID": own_stack_id,
        "STATE_TABLE": world.table,
        "AWS_ENDPOINT_URL_APPSTREAM": world.appstream.endpoint_url,
        "AWS_ENDPOINT_URL_CLOUDFORMATION": world.cloudformation.endpoint_url,
        "AWS_ENDPOINT_URL_DYNAMODB": world.aws.endpoint_url,
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        **responses.ssl_env(),
    }


@contextmanager
def patched_environment(variables: Mapping[str, str], *, unset: tuple[str, ...] = ("AWS_PROFILE",)) -> Iterator[None]:
    """``os.environ`` with ``variables`` set and ``unset`` removed, restored afterwards."""
    saved = dict(os.environ)
    for name in unset:
        os.environ.pop(name, None)
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Delivery:
    """What CloudFormation's ResponseURL received for one event."""

    url: str
    attempts: list[ResponseAttempt]

    @property
    def accepted(self) -> list[ResponseAttempt]:
        """The PUTs the store kept (2xx)."""
        return [attempt for attempt in self.attempts if attempt.accepted]

    @property
    def body(self) -> dict[str, Any]:
        """The one accepted body (fails the test unless there is exactly one)."""
        bodies = [attempt.body or {} for attempt in self.accepted]
        assert len(bodies) == 1, f"expected exactly one response, got {len(bodies)}"
        return bodies[0]

    @property
    def answer(self) -> Answer:
        """The accepted body as an :class:`Answer`."""
        body = self.body
        return Answer(str(body.get("Status")), str(body.get("PhysicalResourceId")), str(body.get("Reason") or ""))


@dataclass
class Function:
    """``index.handler`` behind a ResponseServer; the environment must already be set."""

    responses: ResponseServer
    last: Delivery | None = None
    """What the last :meth:`deliver` (or :meth:`answer`) collected."""

    def deliver(
        self, event: Mapping[str, Any], *, remaining: float = 300.0, url: str | None = None, settle: float = 0.0
    ) -> Delivery:
        """Invoke ``index.handler`` once with a fresh ResponseURL (unless ``url`` or the event names one).

        ``settle`` waits that long after the function returned, so that a late second answer
        (crhelper's timer) would be seen.
        """
        import index  # noqa: PLC0415 - reads its environment per event; imported once set up

        if url is None:
            url = self.responses.new_response_url(str(event.get("LogicalResourceId") or "response"))
        index.handler({**event, "ResponseURL": url}, LambdaContext(timeout=remaining))
        if settle:
            time.sleep(settle)
        self.last = Delivery(url, self.responses.attempts(url))
        return self.last

    def answer(self, event: Mapping[str, Any], *, remaining: float = 300.0) -> Answer:
        """The one answer CloudFormation received for ``event``."""
        return self.deliver(event, remaining=remaining).answer
