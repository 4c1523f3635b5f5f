"""The function's AWS clients: built through boto3's standard configuration, lazily, and reused.

Standard configuration means ``AWS_ENDPOINT_URL_<SERVICE>`` (or ``AWS_ENDPOINT_URL``) redirects a
client, as the testing kit does; nothing here names an endpoint. A client is built on first use
(an event that needs no DynamoDB call builds no DynamoDB client) from one shared session, and kept
while the region and endpoints stay the same (a warm Lambda environment reuses them).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from typing import Any

import boto3
from botocore.config import Config

from . import rules

VERSION_VARIABLE = "APPSTREAM_ASSOCIATIONS_VERSION"
"""The construct library's version, set in the function's environment by the construct."""

_lock = threading.Lock()


ASSET_METADATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "asset.json")
"""``asset.json`` at the asset's root (written when the construct stages the asset)."""


def version() -> str:
    """The library's version: from the function's environment, else the asset's metadata."""
    from_environment = os.environ.get(VERSION_VARIABLE)
    if from_environment:
        return from_environment
    try:
        with open(ASSET_METADATA, encoding="utf-8") as metadata:
            return str(json.load(metadata).get("version") or "unknown")
    except (OSError, ValueError, AttributeError):
        return "unknown"


def user_agent() -> str:
    """``appstream-user-stack-association/<version>``."""
    return f"appstream-user-stack-association/{version()}"


def client_config(service: str) -> Config:
    """Timeouts that keep one attempt within :data:`rules.CALL_SECONDS`; botocore's standard retries.

    AppStream gets one attempt per call: the runner (``batches``) paces throttling and retries
    transient failures itself, on the event's clock and deadline. DynamoDB and CloudFormation get
    botocore's standard mode (5 attempts).
    """
    attempts = 1 if service == "appstream" else 5
    return Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=rules.CONNECT_TIMEOUT,
        read_timeout=rules.READ_TIMEOUT,
        max_pool_connections=rules.MAX_CONCURRENCY_MAX,
        user_agent_extra=user_agent(),
    )


@functools.lru_cache(maxsize=1)
def _session(region: str) -> boto3.session.Session:
    return boto3.session.Session(region_name=region)


@functools.lru_cache(maxsize=8)
def _client(service: str, region: str, endpoints: tuple[str, str]) -> Any:
    with _lock:
        return _session(region).client(service, config=client_config(service))  # type: ignore[call-overload]


def region() -> str:
    """The function's region; raises RuntimeError when the environment has none."""
    found = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not found:
        raise RuntimeError("AWS_REGION is not set in the function's environment")
    return found


def client(service: str) -> Any:
    """The client of ``service`` (``appstream``, ``cloudformation``, ``dynamodb``)."""
    variable = f"AWS_ENDPOINT_URL_{service.upper()}"
    endpoints = (os.environ.get(variable, ""), os.environ.get("AWS_ENDPOINT_URL", ""))
    return _client(service, region(), endpoints)


class LazyClients:
    """The three clients an event may use, each built on first attribute access."""

    @property
    def appstream(self) -> Any:
        return client("appstream")

    @property
    def cloudformation(self) -> Any:
        return client("cloudformation")

    @property
    def dynamodb(self) -> Any:
        return client("dynamodb")
