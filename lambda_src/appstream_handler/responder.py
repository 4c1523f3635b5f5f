"""Delivering the answer to CloudFormation's pre-signed ResponseURL, bounded.

crhelper's own sender has no socket timeout, ignores the HTTP status and retries a broken
connection forever, so a flaky URL spins until Lambda kills the function. This one makes at
most :data:`MAX_ATTEMPTS` attempts, each with a timeout, within the time left; it retries
connection failures and 5xx answers, stops at other 4xx answers (an expired URL will not heal),
and keeps the body within CloudFormation's limits. It never logs the URL or the body.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from http.client import HTTPSConnection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import rules

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
ATTEMPT_TIMEOUT = 5.0
MIN_ATTEMPT_TIMEOUT = 1.0
MAX_BODY_BYTES = rules.RESPONSE_BODY_LIMIT
MAX_ID_BYTES = rules.PHYSICAL_ID_LIMIT
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _body_len(body: Mapping[str, Any]) -> int:
    """Bytes of ``body`` as :func:`put_response` sends it (``json.dumps``: non-ASCII as ``\\uXXXX``)."""
    return len(json.dumps(body))


def _cut_json(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose JSON string encoding (quotes aside) is at most ``limit`` bytes."""
    size = 0
    for index, character in enumerate(text):
        size += len(json.dumps(character)) - 2
        if size > limit:
            return text[:index]
    return text


def _cut_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


def normalise_body(body: Mapping[str, Any], fallback_id: str) -> dict[str, Any]:
    """A copy of ``body`` that CloudFormation accepts.

    Status is SUCCESS or FAILED; a FAILED one has a reason; PhysicalResourceId is non-empty and
    at most 1 KB; the JSON is at most 4096 bytes as sent (Data goes first, then the reason shrinks,
    then echoed ids that only a forged event makes too long).
    """
    fixed = dict(body)
    if fixed.get("Status") not in ("SUCCESS", "FAILED"):
        fixed["Status"] = "FAILED"
        fixed["Reason"] = fixed.get("Reason") or "Handler produced no valid status"
    if fixed["Status"] == "FAILED" and not str(fixed.get("Reason") or "").strip():
        fixed["Reason"] = "Failed without a reason; see the function's logs"
    physical_id = str(fixed.get("PhysicalResourceId") or "") or fallback_id
    fixed["PhysicalResourceId"] = _cut_utf8(physical_id, MAX_ID_BYTES)
    for key in ("StackId", "RequestId", "LogicalResourceId", "Reason"):
        fixed[key] = str(fixed.get(key) or "")
    if not isinstance(fixed.get("Data"), dict):
        fixed["Data"] = {}
    fixed["NoEcho"] = fixed.get("NoEcho") is True
    if _body_len(fixed) > MAX_BODY_BYTES:
        fixed["Data"] = {}
    # Then the reason, then the echoed ids (oversized ones come only from a forged event).
    for key in ("Reason", "RequestId", "LogicalResourceId", "StackId", "PhysicalResourceId"):
        overflow = _body_len(fixed) - MAX_BODY_BYTES
        if overflow <= 0:
            break
        fixed[key] = _cut_json(fixed[key], _body_len({key: fixed[key]}) - len(f'{{"{key}": ""}}') - overflow - 8)
    if fixed["Status"] == "FAILED" and not fixed["Reason"].strip():
        fixed["Reason"] = "Failed"
    if not fixed["PhysicalResourceId"]:
        fixed["PhysicalResourceId"] = _cut_json(fallback_id, 64) or "failed"
    return fixed


def _ssl_context(ssl_verify: bool | str | None) -> ssl.SSLContext:
    """The same trust rules as crhelper: a CA file path, False for none, else the default store."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if isinstance(ssl_verify, str) and os.path.exists(ssl_verify):
        context.load_verify_locations(cafile=ssl_verify)
    if ssl_verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def put_response(
    url: str,
    body: Mapping[str, Any],
    ssl_verify: bool | str | None,
    *,
    seconds_left: Callable[[], float],
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """PUT ``body`` to ``url``; True once CloudFormation's store answered 2xx."""
    payload = json.dumps(body).encode("utf-8", "surrogatepass")
    parts = urlsplit(url)
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    headers = {"content-type": "", "content-length": str(len(payload))}
    context = _ssl_context(ssl_verify)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        timeout = max(MIN_ATTEMPT_TIMEOUT, min(ATTEMPT_TIMEOUT, seconds_left()))
        connection = HTTPSConnection(parts.netloc, timeout=timeout, context=context)
        try:
            connection.request("PUT", path, body=payload, headers=headers)
            status = connection.getresponse().status
        except (OSError, ValueError) as error:
            status, problem = 0, type(error).__name__
        else:
            problem = f"HTTP {status}"
        finally:
            connection.close()
        if 200 <= status < 300:
            logger.info("Response delivered: %s (attempt %d)", body.get("Status"), attempt)
            return True
        permanent = 400 <= status < 500 and status not in RETRYABLE_CLIENT_STATUSES
        logger.error("Response attempt %d failed: %s%s", attempt, problem, " (not retried)" if permanent else "")
        delay = min(4.0, 0.5 * 2 ** (attempt - 1))
        if permanent or attempt == MAX_ATTEMPTS or seconds_left() < delay + MIN_ATTEMPT_TIMEOUT:
            break
        sleep(delay)
    logger.error("Response could not be delivered; CloudFormation will time the resource out")
    return False
