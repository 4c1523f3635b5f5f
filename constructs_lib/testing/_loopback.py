"""The loopback HTTP server shared by the AppStream fake and the CloudFormation response server.

:class:`LoopbackHTTPServer` binds a free port on 127.0.0.1, handles each connection in a
daemon thread, tracks live connections so :meth:`~LoopbackHTTPServer.close_connections`
can end them, and stays quiet about request errors. :func:`serve_in_thread` and
:func:`stop_serving` run and stop one in a background thread.

Standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["LoopbackHTTPServer", "ServerContext", "serve_in_thread", "stop_serving"]


class LoopbackHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on 127.0.0.1 that is quiet and can close live connections.

    ``_lock`` guards the set of live connections; subclasses may use it for their own
    small pieces of shared state too.
    """

    daemon_threads = True

    def __init__(self, handler_class: type[BaseHTTPRequestHandler]) -> None:
        """Bind a free port on 127.0.0.1 and serve requests with ``handler_class``."""
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler_class)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection so :meth:`close_connections` can end it."""
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection (wakes threads blocked on reads, keep-alive ones too)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients resetting connections or giving up on delayed responses is expected."""


def serve_in_thread(httpd: LoopbackHTTPServer, name: str) -> threading.Thread:
    """Start ``httpd.serve_forever`` in a daemon thread called ``name`` and return the thread."""
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.01},
        name=name,
        daemon=True,
    )
    thread.start()
    return thread


def stop_serving(httpd: LoopbackHTTPServer, thread: threading.Thread) -> None:
    """Stop ``httpd``'s serve loop, close its connections and socket, and join ``thread`` (5 s at most)."""
    httpd.shutdown()
    httpd.close_connections()
    httpd.server_close()
    thread.join(timeout=5)


class ServerContext:
    """``with Server(...) as server:`` for a class with ``start() -> Self`` and ``stop()``."""

    def start(self) -> Self:
        """Start serving; return ``self``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()
