"""The CloudFormation ResponseURL stand-in, driven the way crhelper sends responses.

crhelper PUTs with ``http.client.HTTPSConnection`` and ``ssl.create_default_context()``;
these tests do the same, trusting the test CA through ``cafile=`` or ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from constructs_lib.testing import (
    MAX_RESPONSE_BYTES,
    ResponseServer,
    cfn_response_problems,
)

GOOD_BODY: dict[str, Any] = {
    "Status": "SUCCESS",
    "Reason": "See CloudWatch",
    "PhysicalResourceId": "demo-stack/associations",
    "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/demo/guid",
    "RequestId": "req-1",
    "LogicalResourceId": "Associations",
    "Data": {"Count": "2"},
}


@pytest.fixture
def cfn() -> Iterator[ResponseServer]:
    """A running response server."""
    with ResponseServer() as server:
        yield server


def put(
    url: str,
    body: bytes,
    *,
    cafile: str | None,
    timeout: float | None = 5.0,
    target: str | None = None,
) -> int:
    """PUT like crhelper: empty content-type, explicit content-length; return the status."""
    split = urlsplit(url)
    context = ssl.create_default_context(cafile=cafile)
    connection = http.client.HTTPSConnection(split.hostname or "", split.port, context=context, timeout=timeout)
    try:
        connection.request(
            "PUT",
            target or f"{split.path}?{split.query}",
            body=body,
            headers={"content-type": "", "content-length": str(len(body))},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_put_is_recorded_and_answered_like_s3(cfn: ResponseServer) -> None:
    url = cfn.new_response_url("Associations")
    raw = json.dumps(GOOD_BODY).encode()
    assert put(url, raw, cafile=cfn.ca_bundle_path) == 200
    assert cfn.wait_for_response(url, timeout=1) == GOOD_BODY
    assert cfn.responses(url) == [GOOD_BODY]
    [attempt] = cfn.attempts(url)
    assert (attempt.method, attempt.status, attempt.size, attempt.raw) == ("PUT", 200, len(raw), raw)
    assert attempt.headers["content-length"] == str(len(raw))
    assert attempt.problems == ()


def test_urls_are_unique_and_look_presigned(cfn: ResponseServer) -> None:
    first, second = cfn.new_response_url("Res"), cfn.new_response_url("Res")
    assert first != second
    split = urlsplit(first)
    assert (split.scheme, split.hostname, split.port) == ("https", "127.0.0.1", cfn.port)
    assert split.path.startswith("/cfn-response/Res/")
    assert "X-Amz-Signature=" in split.query
    put(first, b"{}", cafile=cfn.ca_bundle_path)
    assert cfn.attempts(second) == []


def test_ssl_cert_file_makes_the_default_context_trust_the_server(
    cfn: ResponseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = cfn.new_response_url()
    for name, value in cfn.ssl_env().items():
        monkeypatch.setenv(name, value)
    assert put(url, b"{}", cafile=None) == 200


def test_untrusted_client_fails_the_handshake(
    cfn: ResponseServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "empty.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    url = cfn.new_response_url()
    with pytest.raises(ssl.SSLCertVerificationError):
        put(url, b"{}", cafile=None)
    deadline = time.monotonic() + 2
    while not cfn.tls_errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cfn.tls_errors
    assert cfn.attempts(url) == []


def test_several_puts_are_kept_in_order(cfn: ResponseServer) -> None:
    url = cfn.new_response_url()
    for status in ("SUCCESS", "FAILED"):
        put(url, json.dumps({**GOOD_BODY, "Status": status}).encode(), cafile=cfn.ca_bundle_path)
    assert [r["Status"] for r in cfn.responses(url)] == ["SUCCESS", "FAILED"]
    assert cfn.wait_for_response(url)["Status"] == "SUCCESS"


def test_unknown_path_altered_query_and_wrong_method(cfn: ResponseServer) -> None:
    url = cfn.new_response_url()
    path = urlsplit(url).path
    assert put(url, b"{}", cafile=cfn.ca_bundle_path, target="/cfn-response/nope/x") == 404
    assert put(url, b"{}", cafile=cfn.ca_bundle_path, target=f"{path}?X-Amz-Signature=0") == 403
    assert [a.status for a in cfn.attempts(url)] == [403]
    assert [a.status for a in cfn.attempts()] == [404, 403]
    assert cfn.responses(url) == []


@pytest.mark.parametrize("status", [500, 503])
def test_http_error_faults_are_recorded(cfn: ResponseServer, status: int) -> None:
    url = cfn.new_response_url()
    cfn.faults.fail(2, status=status)
    results = [put(url, b'{"n": 1}', cafile=cfn.ca_bundle_path) for _ in range(3)]
    assert results == [status, status, 200]
    assert [(a.status, a.fault) for a in cfn.attempts(url)] == [
        (status, f"http_{status}"),
        (status, f"http_{status}"),
        (200, None),
    ]
    assert cfn.responses(url) == [{"n": 1}]
    assert cfn.faults.pending() == 0


def test_connection_reset_fault(cfn: ResponseServer) -> None:
    url = cfn.new_response_url()
    cfn.faults.reset_connection(1, url=url)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, ssl.SSLError)):
        put(url, b"{}", cafile=cfn.ca_bundle_path)
    assert put(url, b"{}", cafile=cfn.ca_bundle_path) == 200
    assert [(a.status, a.fault) for a in cfn.attempts(url)] == [(None, "reset"), (200, None)]


def test_fault_for_another_url_does_not_fire(cfn: ResponseServer) -> None:
    url, other = cfn.new_response_url(), cfn.new_response_url()
    cfn.faults.fail(1, url=other)
    assert put(url, b"{}", cafile=cfn.ca_bundle_path) == 200
    assert cfn.faults.pending() == 1


def test_delay_trips_a_client_timeout_but_the_body_is_stored(cfn: ResponseServer) -> None:
    url = cfn.new_response_url()
    cfn.faults.delay(0.6)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        put(url, b'{"late": true}', cafile=cfn.ca_bundle_path, timeout=0.2)
    assert time.monotonic() - started < 0.5
    assert cfn.wait_for_response(url, timeout=2) == {"late": True}
    assert cfn.attempts(url)[0].fault == "delay"


def test_wait_for_response_times_out_clearly(cfn: ResponseServer) -> None:
    url = cfn.new_response_url()
    cfn.faults.fail(1)
    put(url, b"{}", cafile=cfn.ca_bundle_path)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no response PUT accepted .* \[500\]"):
        cfn.wait_for_response(url, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1
    with pytest.raises(ValueError, match="not issued"):
        cfn.wait_for_response("https://127.0.0.1:1/elsewhere", timeout=0.1)


def test_wait_for_response_wakes_on_arrival(cfn: ResponseServer) -> None:
    url = cfn.new_response_url()
    sender = threading.Timer(0.1, put, args=(url, b'{"a": 1}'), kwargs={"cafile": cfn.ca_bundle_path})
    started = time.monotonic()
    sender.start()
    assert cfn.wait_for_response(url, timeout=5) == {"a": 1}
    assert time.monotonic() - started < 2  # woken by the PUT, not by the timeout
    sender.join()


def test_stop_removes_the_ca_and_is_quick_during_a_delay() -> None:
    before = set(threading.enumerate())
    server = ResponseServer().start()
    ca_path = server.ca_bundle_path
    url = server.new_response_url()
    server.faults.delay(60)
    errors: list[Exception] = []

    def send() -> None:
        try:
            put(url, b"{}", cafile=ca_path, timeout=10)
        except (OSError, http.client.HTTPException) as error:
            errors.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 5
    while server.faults.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.faults.pending() == 0  # the PUT is inside its delay
    started = time.monotonic()
    server.stop()
    sender.join(timeout=5)
    assert time.monotonic() - started < 2
    assert not sender.is_alive()
    assert len(errors) == 1
    assert [(a.status, a.fault) for a in server.attempts(url)] == [(None, "delay")]
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=1)
        assert not thread.is_alive(), thread.name
    assert not os.path.exists(ca_path)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.ca_bundle_path


def test_response_body_rules() -> None:
    assert cfn_response_problems(json.dumps(GOOD_BODY).encode()) == ()
    failed = {**GOOD_BODY, "Status": "FAILED", "Reason": "", "PhysicalResourceId": ""}
    assert cfn_response_problems(json.dumps(failed).encode()) == (
        "Reason is required when Status is FAILED",
        "PhysicalResourceId must be a non-empty string, got ''",
    )
    huge = {**GOOD_BODY, "Data": {"Blob": "x" * MAX_RESPONSE_BYTES}}
    problems = cfn_response_problems(json.dumps(huge).encode())
    assert len(problems) == 1
    assert problems[0].startswith("body is 4")
    assert cfn_response_problems(b"nope") == ("body is not valid JSON",)


def test_server_is_quiet_even_when_faults_fire(capfd: pytest.CaptureFixture[str]) -> None:
    with ResponseServer() as server:
        url = server.new_response_url()
        server.faults.reset_connection(1)
        server.faults.fail(1)
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected, ssl.SSLError)):
            put(url, b"{}", cafile=server.ca_bundle_path)
        assert put(url, b"{}", cafile=server.ca_bundle_path) == 500
        assert put(url, b"{}", cafile=server.ca_bundle_path) == 200
    assert capfd.readouterr() == ("", "")
