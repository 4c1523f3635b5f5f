"""crhelper 2.0.12, fenced: the one place that knows its private names.

crhelper answers CloudFormation for us. Left as it is, it would log the whole event at DEBUG
(user names, the signed ResponseURL), sleep two minutes on every Delete, build three boto3
clients it only needs for polling, answer twice when its timer fires, send an empty physical id
on some failures, and retry a broken ResponseURL forever. :class:`CrhelperShell` keeps its
control flow (registration, the timer, exceptions turned into FAILED) and changes only those
behaviours. Everything it relies on in crhelper is pinned by ``tests/unit/handler/
test_crhelper_shell.py``, so an upgrade that moves any of it fails there, in one place:

* ``CfnResource(log_level=, boto_level=, sleep_on_delete=)`` and its ``create/update/delete``
  decorators; ``__call__(event, context)`` running the registered function and answering;
* ``AWS_SAM_LOCAL`` set during construction skips the ``lambda``, ``events`` and ``logs`` clients;
* the answer goes through ``self._send(status, reason, send_response=...)``, which builds the
  body from ``Status``, ``Reason``, ``PhysicalResourceId`` (what the function returned) and
  calls ``send_response(url, body, ssl_verify)``;
* the timer's ``_timeout`` calls ``_send(FAILED, "Execution timed out")`` 0.5 s before the end.

Only this module imports crhelper; the rest of the package never does.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from crhelper import CfnResource

from .responder import normalise_body, put_response

logger = logging.getLogger(__name__)

FAILED = "FAILED"

Run = Callable[[Mapping[str, Any], Any], tuple[str, str, str]]
"""The function behind every request type: ``(event, context) -> (status, physical_id, reason)``."""


class _Helper(CfnResource):
    """crhelper's CfnResource with the answer routed through :meth:`CrhelperShell.deliver`."""

    def __init__(self, shell: CrhelperShell, **options: Any) -> None:
        previous = os.environ.get("AWS_SAM_LOCAL")
        os.environ["AWS_SAM_LOCAL"] = "true"  # skip the polling clients: this function never polls
        try:
            super().__init__(**options)
        finally:
            if previous is None:
                del os.environ["AWS_SAM_LOCAL"]
            else:
                os.environ["AWS_SAM_LOCAL"] = previous
        self._shell = shell

    def _send(self, status: str | None = None, reason: str = "", send_response: Any = None) -> None:
        if not self._shell.claim_answer():
            logger.warning("A response was already sent for this event; not sending another")
            return
        if not self.PhysicalResourceId:
            self.PhysicalResourceId = self._shell.fallback_id
        super()._send(status, reason, send_response=self._shell.deliver)  # type: ignore[misc]  # not in crhelper stubs


class CrhelperShell:
    """The Lambda handler: crhelper's control flow, exactly one bounded answer per event."""

    def __init__(self, run: Run, *, log_level: str = "INFO") -> None:
        self._run = run
        self._lock = threading.Lock()
        self._answered = False
        self.fallback_id = ""
        self._seconds_left: Callable[[], float] = lambda: 0.0
        self._helper = _Helper(self, log_level=log_level, boto_level="ERROR", sleep_on_delete=0)
        # crhelper logs whole events and responses at DEBUG: keep it at INFO whatever LOG_LEVEL says.
        logging.getLogger("crhelper").setLevel(logging.INFO)
        for register in (self._helper.create, self._helper.update, self._helper.delete):
            register(self._wrapped)

    def __call__(self, event: Mapping[str, Any], context: Any, *, fallback_id: str) -> None:
        """Run ``event`` through crhelper; the answer is sent once, with ``fallback_id`` if none is set."""
        with self._lock:
            self._answered = False
        self.fallback_id = fallback_id
        self._seconds_left = lambda: float(context.get_remaining_time_in_millis()) / 1000.0
        self._helper(dict(event), context)

    def _wrapped(self, event: Mapping[str, Any], context: Any) -> str:
        status, physical_id, reason = self._run(event, context)
        if status == FAILED:
            self._helper.Status = FAILED
            self._helper.Reason = reason
        return physical_id

    def claim_answer(self) -> bool:
        """True the first time per event: the caller may send the answer."""
        with self._lock:
            if self._answered:
                return False
            self._answered = True
            return True

    def deliver(self, url: str, body: Mapping[str, Any], ssl_verify: Any = None) -> None:
        """Send ``body`` to the ResponseURL, normalised to CloudFormation's limits, bounded in time."""
        put_response(url, normalise_body(body, self.fallback_id), ssl_verify, seconds_left=self._seconds_left)

    def answer_without_crhelper(self, event: Mapping[str, Any], context: Any, reason: str, *, fallback_id: str) -> None:
        """Answer FAILED for an event crhelper cannot take (its envelope is malformed)."""
        with self._lock:
            self._answered = False
        self.fallback_id = fallback_id
        self._seconds_left = lambda: float(context.get_remaining_time_in_millis()) / 1000.0
        body: dict[str, Any] = {
            "Status": FAILED,
            "Reason": reason,
            "PhysicalResourceId": "",
            "StackId": event.get("StackId"),
            "RequestId": event.get("RequestId"),
            "LogicalResourceId": event.get("LogicalResourceId"),
            "Data": {},
        }
        if self.claim_answer():
            self.deliver(str(event.get("ResponseURL")), body, None)
