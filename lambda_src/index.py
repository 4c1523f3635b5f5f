"""Lambda entry point (``index.handler``): crhelper's shell around :mod:`appstream_handler.handler`.

The logic lives in the ``appstream_handler`` package, which takes its AWS clients as arguments;
this module only reads the function's environment, builds the clients lazily, and answers
CloudFormation exactly once per event through :class:`~appstream_handler.crhelper_shell.CrhelperShell`.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Mapping
from typing import Any

from appstream_handler.clients import LazyClients
from appstream_handler.crhelper_shell import CrhelperShell
from appstream_handler.handler import FAILED, Answer, Environment, answer_ids, handle_event
from appstream_handler.reasons import MAX_REASON, clip

logger = logging.getLogger(__name__)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
REQUEST_TYPES = ("Create", "Update", "Delete")
_clients = LazyClients()


def environment() -> Environment:
    """The function's configuration: its own stack and its state table."""
    return Environment(own_stack_id=os.environ.get("OWN_STACK_ID", ""), table=os.environ.get("STATE_TABLE", ""))


def _run(event: Mapping[str, Any], context: Any) -> tuple[str, str, str]:
    try:
        answer = handle_event(
            event, _clients, context.get_remaining_time_in_millis() / 1000.0, environment=environment()
        )
    except Exception as error:  # a bug or a broken environment: say so, without logging data
        logger.error("Unexpected %s:\n%s", type(error).__name__, "".join(traceback.format_tb(error.__traceback__)))
        answer = Answer(
            FAILED, answer_ids(event)[1], clip(f"Handler error {type(error).__name__}: {error}", MAX_REASON)
        )
    logger.info("%s answered %s", event.get("RequestType"), answer.status)
    return answer.status, answer.physical_resource_id, answer.reason


shell = CrhelperShell(_run, log_level=LOG_LEVEL)


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
    fallback_id = str(event.get("PhysicalResourceId") or "") or answer_ids(event)[1]
    problem = _envelope_problem(event)
    if problem is None:
        shell(event, context, fallback_id=fallback_id)
        return
    logger.error("%s", problem)
    shell.answer_without_crhelper(event, context, problem, fallback_id=fallback_id)
