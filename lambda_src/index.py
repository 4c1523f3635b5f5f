"""Lambda entry point: crhelper wired to :mod:`associations`, with its sharp edges filed off.

crhelper 2.0.12 answers CloudFormation for us. Left as it is, it would log the whole event at
DEBUG (user names, the signed ResponseURL), sleep two minutes on every Delete, build three boto3
clients it only needs for polling, answer twice when its timer fires, send an empty physical
id on some failures, and retry a broken ResponseURL forever. :class:`Helper` keeps its control
flow and changes only those behaviours, through its constructor options and its ``_send`` hook.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import boto3
from botocore.config import Config
from crhelper import CfnResource

from appstream_handler.associations import FAILED, Answer, failed_create_id, handle_event
from appstream_handler.reasons import MAX_REASON, clip
from appstream_handler.responder import normalise_body, put_response

logger = logging.getLogger(__name__)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
REQUEST_TYPES = ("Create", "Update", "Delete")
# botocore's standard retry mode rides out throttling: 10 attempts in all survive 9 consecutive
# ThrottlingException answers; timeouts keep each attempt short enough to plan around.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 10},
    connect_timeout=3,
    read_timeout=10,
    max_pool_connections=16,
    user_agent_extra="appstream-user-stack-association/1.0",
)


class Helper(CfnResource):
    """crhelper's CfnResource that answers exactly once per event, within bounds."""

    def __init__(self, **options: Any) -> None:
        # With AWS_SAM_LOCAL set, crhelper skips building the lambda, events and logs clients
        # that only its polling mode uses (this function never polls): a faster cold start.
        previous = os.environ.get("AWS_SAM_LOCAL")
        os.environ["AWS_SAM_LOCAL"] = "true"
        try:
            super().__init__(**options)
        finally:
            if previous is None:
                del os.environ["AWS_SAM_LOCAL"]
            else:
                os.environ["AWS_SAM_LOCAL"] = previous
        self._answer_lock = threading.Lock()
        self._answered = False
        self._fallback_id = ""
        self._seconds_left: Callable[[], float] = lambda: 0.0

    def begin(self, event: Mapping[str, Any], context: Any) -> None:
        """Reset the per-event state before crhelper sees ``event``."""
        with self._answer_lock:
            self._answered = False
        self._fallback_id = str(event.get("PhysicalResourceId") or "") or failed_create_id(event)
        self._seconds_left = lambda: float(context.get_remaining_time_in_millis()) / 1000.0

    def _send(self, status: str | None = None, reason: str = "", send_response: Any = None) -> None:
        with self._answer_lock:
            if self._answered:
                logger.warning("A response was already sent for this event; not sending another")
                return
            self._answered = True
        if not self.PhysicalResourceId:
            self.PhysicalResourceId = self._fallback_id
        super()._send(status, reason, send_response=self._deliver)  # type: ignore[misc]  # not in crhelper's stubs

    def _deliver(self, url: str, body: Mapping[str, Any], ssl_verify: Any) -> None:
        put_response(url, normalise_body(body, self._fallback_id), ssl_verify, seconds_left=self._seconds_left)


helper = Helper(log_level=LOG_LEVEL, boto_level="ERROR", sleep_on_delete=0)
# crhelper logs whole events and responses at DEBUG: keep it at INFO whatever LOG_LEVEL says.
logging.getLogger("crhelper").setLevel(logging.INFO)


@functools.lru_cache(maxsize=4)
def _client_for(region: str, endpoint: str) -> Any:
    return boto3.client("appstream", region_name=region, config=CLIENT_CONFIG)


def appstream_client() -> Any:
    """The AppStream client, built on first use and reused while the environment is the same."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise RuntimeError("AWS_REGION is not set in the function's environment")
    return _client_for(region, os.environ.get("AWS_ENDPOINT_URL_APPSTREAM", ""))


def _run(event: Mapping[str, Any], context: Any) -> str:
    try:
        answer = handle_event(event, appstream_client(), context.get_remaining_time_in_millis() / 1000.0)
    except Exception as error:  # a bug or a broken environment: say so, without logging data
        logger.error("Unexpected %s:\n%s", type(error).__name__, "".join(traceback.format_tb(error.__traceback__)))
        answer = Answer(FAILED, helper._fallback_id, clip(f"Handler error {type(error).__name__}: {error}", MAX_REASON))
    logger.info("%s answered %s", event.get("RequestType"), answer.status)
    if answer.status == FAILED:
        helper.Status = FAILED
        helper.Reason = answer.reason
    return answer.physical_resource_id


helper.create(_run)
helper.update(_run)
helper.delete(_run)


def _envelope_problem(event: Mapping[str, Any]) -> str | None:
    if event.get("RequestType") not in REQUEST_TYPES:
        return f"Unknown RequestType {str(event.get('RequestType'))[:40]!r}"
    missing = [key for key in ("StackId", "RequestId", "LogicalResourceId") if not isinstance(event.get(key), str)]
    if missing:
        return f"Malformed event: {', '.join(missing)} missing or not a string"
    return None


def handler(event: Any, context: Any) -> None:
    """Lambda handler: one CloudFormation custom-resource event in, exactly one response out."""
    if not isinstance(event, Mapping):
        logger.error("Event is a %s, not a CloudFormation request; nothing to answer", type(event).__name__)
        return
    url = event.get("ResponseURL")
    if not isinstance(url, str) or not url.startswith("https://"):
        logger.error("Event has no https ResponseURL; nothing to answer")
        return
    # crhelper reads its own polling keys from the event; CloudFormation never sends them.
    event = {key: value for key, value in event.items() if not str(key).startswith("CrHelper")}
    helper.begin(event, context)
    problem = _envelope_problem(event)
    if problem is None:
        helper(event, context)
        return
    logger.error("%s", problem)
    body = {
        "Status": FAILED,
        "Reason": problem,
        "PhysicalResourceId": "",
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "Data": {},
    }
    helper._deliver(url, body, None)
