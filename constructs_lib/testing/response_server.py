"""The CloudFormation side of a custom resource: an HTTPS server taking response PUTs.

:class:`ResponseServer` plays the pre-signed S3 ``ResponseURL`` that CloudFormation
hands a custom resource. It listens on ``https://127.0.0.1:<port>`` with a
certificate from a throwaway test CA (made with ``trustme``, imported lazily),
writes that CA to :attr:`ResponseServer.ca_bundle_path`, and records every request.

A process answering with ``http.client.HTTPSConnection`` and
``ssl.create_default_context()`` (crhelper does) trusts the server when
``SSL_CERT_FILE`` names the CA file (:meth:`ResponseServer.ssl_env`); nothing needs
patching.

Like S3, the server answers a PUT to an issued URL with 200 and an empty body,
a URL whose query string was altered with 403, and any other path with 404.
It does not judge the body; :func:`cfn_response_problems` checks it against the
rules CloudFormation applies (fields, 4096-byte limit).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import quote, urlsplit

from constructs_lib._handler import rules
from constructs_lib.testing._loopback import LoopbackHTTPServer, ServerContext, serve_in_thread, stop_serving

__all__ = [
    "MAX_RESPONSE_BYTES",
    "ResponseAttempt",
    "ResponseFaults",
    "ResponseServer",
    "cfn_response_problems",
]

MAX_RESPONSE_BYTES: Final = rules.RESPONSE_BODY_LIMIT
"""CloudFormation rejects a custom-resource response body larger than this."""

_MAX_PHYSICAL_ID_BYTES: Final = rules.PHYSICAL_ID_LIMIT
_PATH_PREFIX: Final = "/cfn-response/"
_HANDSHAKE_TIMEOUT: Final = 10.0


def cfn_response_problems(raw: bytes) -> tuple[str, ...]:
    """Return why CloudFormation would reject this response body (empty if it would not).

    Checks the size limit, JSON shape, ``Status``, ``Reason`` for FAILED, a non-empty
    ``PhysicalResourceId`` of at most 1 KB, the echoed ids, and ``Data``/``NoEcho`` types.
    """
    problems = []
    if len(raw) > MAX_RESPONSE_BYTES:
        problems.append(f"body is {len(raw)} bytes, more than {MAX_RESPONSE_BYTES}")
    try:
        body = json.loads(raw)
    except ValueError:
        return (*problems, "body is not valid JSON")
    if not isinstance(body, dict):
        return (*problems, "body is not a JSON object")
    return (*problems, *_field_problems(body))


def _field_problems(body: Mapping[str, Any]) -> list[str]:
    """Check the fields of a parsed response body."""
    problems = []
    status = body.get("Status")
    if status not in ("SUCCESS", "FAILED"):
        problems.append(f"Status must be SUCCESS or FAILED, got {status!r}")
    if status == "FAILED" and not body.get("Reason"):
        problems.append("Reason is required when Status is FAILED")
    physical_id = body.get("PhysicalResourceId")
    if not isinstance(physical_id, str) or not physical_id:
        problems.append(f"PhysicalResourceId must be a non-empty string, got {physical_id!r}")
    elif len(physical_id.encode()) > _MAX_PHYSICAL_ID_BYTES:
        problems.append(f"PhysicalResourceId is longer than {_MAX_PHYSICAL_ID_BYTES} bytes")
    for key in ("StackId", "RequestId", "LogicalResourceId"):
        if not isinstance(body.get(key), str) or not body.get(key):
            problems.append(f"{key} must be echoed from the request, got {body.get(key)!r}")
    if "Data" in body and not isinstance(body["Data"], dict):
        problems.append(f"Data must be an object, got {type(body['Data']).__name__}")
    if "NoEcho" in body and not isinstance(body["NoEcho"], bool):
        problems.append(f"NoEcho must be a boolean, got {body['NoEcho']!r}")
    return problems


@dataclass(frozen=True)
class ResponseAttempt:
    """One request the server received, whatever happened to it.

    ``url`` is the issued response URL it was sent to (None for an unknown path);
    ``status`` is what the server answered (None when the connection was reset);
    ``fault`` names the injected fault (``"http_500"``, ``"http_503"``, ``"reset"``,
    ``"delay"``) or is None.
    """

    url: str | None
    method: str
    target: str
    headers: Mapping[str, str]
    raw: bytes
    status: int | None
    fault: str | None = None
    received_at: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        """Length of the body in bytes."""
        return len(self.raw)

    @property
    def accepted(self) -> bool:
        """Whether this was a PUT to an issued URL answered with 200 (S3 stored it)."""
        return self.status == 200

    @property
    def body(self) -> dict[str, Any] | None:
        """The body parsed as a JSON object, or None if it is not one."""
        try:
            parsed = json.loads(self.raw)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    @property
    def problems(self) -> tuple[str, ...]:
        """Why CloudFormation would reject this body (see :func:`cfn_response_problems`)."""
        return cfn_response_problems(self.raw)


_ResponseFaultKind = Literal["http_500", "http_503", "reset", "delay"]


@dataclass
class _ResponseRule:
    """One pending fault for response PUTs."""

    kind: _ResponseFaultKind
    remaining: int
    url: str | None
    seconds: float = 0.0


class ResponseFaults:
    """Thread-safe fault injection for :class:`ResponseServer`; may change while it runs.

    Faults queue up in the order added; each PUT to an issued URL takes the first
    pending one whose ``url`` filter matches (None matches every URL), using up one
    of its ``count``. Faulted attempts are recorded like any other.
    """

    def __init__(self) -> None:
        """Start with no faults."""
        self._lock = threading.Lock()
        self._rules: list[_ResponseRule] = []

    def fail(self, count: int = 1, *, status: int = 500, url: str | None = None) -> None:
        """Answer the next ``count`` PUTs with HTTP ``status`` (500 or 503) and store nothing."""
        if status not in (500, 503):
            raise ValueError(f"status must be 500 or 503, got {status}")
        self._add(_ResponseRule("http_500" if status == 500 else "http_503", count, url))

    def reset_connection(self, count: int = 1, *, url: str | None = None) -> None:
        """Reset the connection (TCP RST, no response, nothing stored) on the next ``count`` PUTs."""
        self._add(_ResponseRule("reset", count, url))

    def delay(self, seconds: float, *, count: int = 1, url: str | None = None) -> None:
        """Hold the response to the next ``count`` PUTs for ``seconds``, then handle them normally.

        The body is read first and is stored, as S3 would once it has the whole
        request, even if the client has given up waiting meanwhile. Stopping the
        server ends a delay at once, with no answer and nothing stored.
        """
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        self._add(_ResponseRule("delay", count, url, seconds))

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._rules.clear()

    def pending(self) -> int:
        """Return how many fault uses remain."""
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    def _add(self, rule: _ResponseRule) -> None:
        """Queue a fault after validating its count."""
        if rule.remaining < 1:
            raise ValueError(f"count must be at least 1, got {rule.remaining}")
        with self._lock:
            self._rules.append(rule)

    def _take(self, url: str) -> _ResponseRule | None:
        """Use up one count of the first pending fault matching ``url``."""
        with self._lock:
            for rule in self._rules:
                if rule.url in (None, url):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule
        return None


class _Handler(BaseHTTPRequestHandler):
    """Quiet HTTP/1.1 handler delegating every method to :class:`ResponseServer`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _TLSServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the server records every attempt."""

    def do_PUT(self) -> None:
        """Handle a response PUT."""
        self.server.owner._handle(self)

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT  # noqa: N815 - stdlib naming

    def read_body(self) -> bytes:
        """Read the request body announced by Content-Length."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, body: bytes = b"", *, etag: str | None = None) -> None:
        """Send a response with an explicit Content-Length."""
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/xml")
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def reset(self) -> None:
        """Close the connection with a TCP RST and no response."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


class _TLSServer(LoopbackHTTPServer):
    """Loopback server doing the TLS handshake in each request thread."""

    def __init__(self, owner: ResponseServer, context: ssl.SSLContext) -> None:
        self.owner = owner
        self.tls_errors: list[str] = []
        super().__init__(_Handler)
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Complete the TLS handshake, then handle the request (in the request thread)."""
        tls = cast(ssl.SSLSocket, request)
        try:
            tls.settimeout(_HANDSHAKE_TIMEOUT)
            tls.do_handshake()
            tls.settimeout(None)
        except (ssl.SSLError, OSError) as error:
            with self._lock:
                self.tls_errors.append(f"{client_address}: {error}")
            return
        super().finish_request(request, client_address)


def _s3_error(code: str, message: str) -> bytes:
    """An S3-style XML error document."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
    ).encode()


def _presigned_query(key: str) -> str:
    """A query string shaped like an S3 SigV4 pre-signed URL's (the signature is random)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    signature = hashlib.sha256(f"{key}{uuid.uuid4()}".encode()).hexdigest()
    return (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Date={stamp}&X-Amz-SignedHeaders=host&X-Amz-Expires=7200"
        f"&X-Amz-Credential=AKIAEXAMPLETESTING%2F{stamp[:8]}%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Signature={signature}"
    )


class ResponseServer(ServerContext):
    """HTTPS server on 127.0.0.1 recording custom-resource response PUTs.

    Use as a context manager (``with ResponseServer() as cfn:``) or call
    :meth:`start`/:meth:`stop`. Stopping wakes delayed requests, closes every
    connection and deletes the CA file.
    """

    def __init__(self) -> None:
        """Prepare a server; the test CA and port are made by :meth:`start`."""
        self.faults: ResponseFaults = ResponseFaults()
        self._lock = threading.Condition()
        self._issued: dict[str, str] = {}
        self._attempts: list[ResponseAttempt] = []
        self._stopping = threading.Event()
        self._tempdir: Path | None = None
        self._httpd: _TLSServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------

    def start(self) -> ResponseServer:
        """Create the test CA and server certificate, bind a free port, start serving."""
        if self._httpd is not None:
            raise RuntimeError("ResponseServer is already running")
        import trustme  # noqa: PLC0415 - lazy: importing the package must not need trustme

        ca = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._tempdir = Path(tempfile.mkdtemp(prefix="cfn-response-ca-"))
        ca.cert_pem.write_to_path(str(self._tempdir / "ca.pem"))
        self._stopping.clear()
        self._httpd = _TLSServer(self, context)
        self._thread = serve_in_thread(self._httpd, f"cfn-response-{self.port}")
        return self

    def stop(self) -> None:
        """Stop serving, close connections and remove the CA file (idempotent)."""
        httpd, thread = self._httpd, self._thread
        if httpd is not None and thread is not None:
            self._stopping.set()
            stop_serving(httpd, thread)
        self._httpd = self._thread = None
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    # addresses and trust -------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (only while running)."""
        return int(self._running().server_address[1])

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_bundle_path(self) -> str:
        """PEM file of the test CA, to use as ``SSL_CERT_FILE`` (only while running)."""
        self._running()
        assert self._tempdir is not None
        return str(self._tempdir / "ca.pem")

    def ssl_env(self) -> dict[str, str]:
        """Environment making ``ssl.create_default_context()`` trust this server."""
        return {"SSL_CERT_FILE": self.ca_bundle_path}

    @property
    def tls_errors(self) -> tuple[str, ...]:
        """Failed TLS handshakes, e.g. from a client that does not trust the test CA."""
        httpd = self._running()
        with httpd._lock:
            return tuple(httpd.tls_errors)

    def new_response_url(self, name: str = "response") -> str:
        """Issue a unique pre-signed-looking URL ``https://127.0.0.1:<port>/cfn-response/...``.

        ``name`` (e.g. the logical resource id) appears, URL-quoted, in the path.
        """
        path = f"{_PATH_PREFIX}{quote(name, safe='')}/{uuid.uuid4()}"
        url = f"{self.base_url}{path}?{_presigned_query(path)}"
        with self._lock:
            self._issued[path] = url
        return url

    # recorded requests ---------------------------------------------------------

    def attempts(self, url: str | None = None) -> list[ResponseAttempt]:
        """Every request received (for ``url`` only, if given), failed ones included, in order."""
        with self._lock:
            return [a for a in self._attempts if url is None or a.url == url]

    def responses(self, url: str) -> list[dict[str, Any]]:
        """The bodies of the accepted PUTs to ``url``, parsed from JSON, in order.

        A body that is not a JSON object appears as ``{}``; see :meth:`attempts` for raw bytes.
        """
        return [a.body or {} for a in self.attempts(url) if a.accepted]

    def wait_for_response(self, url: str, timeout: float = 10.0) -> dict[str, Any]:
        """Block until a PUT to ``url`` was accepted and return the first one's parsed body.

        Raises ``TimeoutError`` naming the URL and the attempts seen if none arrives.
        """
        self._check_issued(url)
        deadline = time.monotonic() + timeout
        with self._lock:
            while not any(a.accepted for a in self._attempts if a.url == url):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [a.status for a in self._attempts if a.url == url]
                    raise TimeoutError(
                        f"no response PUT accepted for {url} within {timeout:g} s "
                        f"(attempts answered with: {seen or 'none'})"
                    )
                self._lock.wait(left)
        return self.responses(url)[0]

    def clear(self) -> None:
        """Forget recorded attempts (issued URLs stay valid)."""
        with self._lock:
            self._attempts.clear()

    # request handling ----------------------------------------------------------

    def _running(self) -> _TLSServer:
        """Return the live HTTP server or raise if not started."""
        if self._httpd is None:
            raise RuntimeError("ResponseServer is not running")
        return self._httpd

    def _check_issued(self, url: str) -> None:
        """Reject a URL this server never issued (a test bug, not a timeout)."""
        with self._lock:
            if url not in self._issued.values():
                raise ValueError(f"{url} was not issued by this ResponseServer")

    def _handle(self, handler: _Handler) -> None:
        """Record one request and answer it (or apply a fault)."""
        raw = handler.read_body()
        split = urlsplit(handler.path)
        with self._lock:
            url = self._issued.get(split.path)
        if url is None:
            self._answer(handler, None, raw, 404, _s3_error("NoSuchKey", "Unknown key."))
        elif urlsplit(url).query != split.query:
            body = _s3_error("SignatureDoesNotMatch", "The query string was altered.")
            self._answer(handler, url, raw, 403, body)
        elif handler.command != "PUT":
            self._answer(handler, url, raw, 405, _s3_error("MethodNotAllowed", "Use PUT."))
        else:
            self._put(handler, url, raw)

    def _put(self, handler: _Handler, url: str, raw: bytes) -> None:
        """Apply a pending fault to a PUT on an issued URL, or accept it."""
        rule = self.faults._take(url)
        if rule is not None and rule.kind == "delay" and self._stopping.wait(rule.seconds):
            self._record(handler, url, raw, None, "delay")  # stopped meanwhile: no answer
            handler.reset()
        elif rule is None or rule.kind == "delay":
            etag = f'"{hashlib.md5(raw, usedforsecurity=False).hexdigest()}"'
            fault = None if rule is None else rule.kind
            self._answer(handler, url, raw, 200, b"", fault=fault, etag=etag)
        elif rule.kind == "reset":
            self._record(handler, url, raw, None, "reset")
            handler.reset()
        else:
            status = 500 if rule.kind == "http_500" else 503
            code = "InternalError" if status == 500 else "ServiceUnavailable"
            self._answer(handler, url, raw, status, _s3_error(code, "Injected fault."), fault=rule.kind)

    def _answer(
        self,
        handler: _Handler,
        url: str | None,
        raw: bytes,
        status: int,
        body: bytes,
        *,
        fault: str | None = None,
        etag: str | None = None,
    ) -> None:
        """Record the attempt, then send the response."""
        self._record(handler, url, raw, status, fault)
        handler.reply(status, body, etag=etag)

    def _record(self, handler: _Handler, url: str | None, raw: bytes, status: int | None, fault: str | None) -> None:
        """Append an attempt and wake :meth:`wait_for_response` callers."""
        attempt = ResponseAttempt(
            url=url,
            method=handler.command,
            target=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            raw=raw,
            status=status,
            fault=fault,
        )
        with self._lock:
            self._attempts.append(attempt)
            self._lock.notify_all()
