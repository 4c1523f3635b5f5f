"""Running a Lambda function's asset the way Lambda runs it: one separate Python process per event.

:class:`LambdaProcess` starts ``python -I -B`` with :mod:`constructs_lib.testing._bootstrap` (no
user site, no ``PYTHON*`` variables, no bytecode written into the asset), in the asset directory,
with an environment made only of Lambda's variables, the function's own ``Environment``, fake
credentials and every local endpoint (the AppStream fake, and whatever else the caller serves:
the CloudFormation API, moto). The bootstrap imports the handler with Lambda's init timeout,
refuses third-party modules that are neither in the asset nor in Lambda's runtime, runs the
handler with the function's timeout and writes START/END/REPORT lines.

Each run (:class:`LambdaRun`) has its own id, which is both Lambda's request id and botocore's
application id (``AWS_SDK_UA_APP_ID``): every AWS call the run makes carries ``app/<id>`` in its
``User-Agent``, so a fake can tell which run is calling (and crash it there: :meth:`LambdaRun.kill`).
Runs are started with ``Popen`` and can be waited for, polled or killed from any thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constructs_lib.testing import _bootstrap
from constructs_lib.testing.appstream import AppStreamServer
from constructs_lib.testing.assembly import RehearsalError
from constructs_lib.testing.response_server import ResponseServer

__all__ = [
    "DEFAULT_MAXIMUM_EVENT_AGE",
    "DEFAULT_RETRY_ATTEMPTS",
    "NOWHERE",
    "FunctionSpec",
    "Invocation",
    "LambdaProcess",
    "LambdaRun",
]

DEFAULT_RETRY_ATTEMPTS = 2
"""How often Lambda retries a failed asynchronous invocation unless an ``EventInvokeConfig`` says otherwise."""

DEFAULT_MAXIMUM_EVENT_AGE = 21600.0
"""How long (s) Lambda keeps an asynchronous event for retries unless an ``EventInvokeConfig`` says otherwise."""

NOWHERE = "http://127.0.0.1:9"
"""The global ``AWS_ENDPOINT_URL`` when no local AWS runs: nothing listens there, nothing leaves the machine."""

KILLED_ERROR = "Runtime.ExitError: Runtime exited with error: signal: killed"
"""The error Lambda reports for a process killed during an invocation."""

_BOOTSTRAP = Path(_bootstrap.__file__)
_GRACE_SECONDS = 5.0  # beyond init + timeout, before the parent kills a child that ignored its own watchdog
_PYTHON_CHECKS: dict[str, str | None] = {}
_PYTHON_CHECKS_LOCK = threading.Lock()


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function as the template declares it (values resolved): what a run needs."""

    logical_id: str
    asset_dir: Path
    handler: str
    timeout: float
    memory_mb: int
    environment: Mapping[str, str]
    runtime: str = ""
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS
    """``MaximumRetryAttempts`` of the function's ``AWS::Lambda::EventInvokeConfig`` (Lambda's default: 2)."""
    maximum_event_age: float = DEFAULT_MAXIMUM_EVENT_AGE
    """``MaximumEventAgeInSeconds`` of the ``EventInvokeConfig`` (Lambda's default: 6 hours)."""
    function_name: str = ""
    """The deployed function's name (its physical id); the logical id if empty."""

    @property
    def name(self) -> str:
        """The function's name, as ``AWS_LAMBDA_FUNCTION_NAME`` shows it."""
        return self.function_name or self.logical_id


@dataclass(frozen=True)
class Invocation:
    """One run of the function with one event, and what came of it.

    ``logs`` is what the function wrote (its CloudWatch log stream, START/END/REPORT lines
    included); ``timings`` holds ``init`` and ``invoke`` seconds as measured inside the child;
    ``imports`` maps each top-level third-party module the child imported to its file;
    ``responses`` are the bodies of the PUTs to the event's ResponseURL accepted by the time the
    run ended (earlier runs of the same event included); ``response_problems`` says why
    CloudFormation would reject the first of them; ``error`` is the runtime error
    (``Runtime.ImportModuleError: ...``, an exception the handler raised, ``Task timed out after
    ...``, a killed process) or None. ``request_id`` is the run's id (Lambda's request id and
    the ``app/<id>`` of its AWS calls); ``kind`` is ``invocation``, ``retry`` (Lambda retried a
    failed run) or ``duplicate`` (the same event delivered again).
    """

    request_type: str
    logical_id: str
    event: Mapping[str, Any]
    responses: tuple[Mapping[str, Any], ...]
    response_problems: tuple[str, ...]
    logs: str
    exit_code: int | None
    timed_out: bool
    seconds: float
    timings: Mapping[str, float]
    imports: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    request_id: str = ""
    kind: str = "invocation"
    killed: bool = False
    """Whether the run was killed from outside (a crash), not ended by itself."""

    @property
    def response(self) -> Mapping[str, Any] | None:
        """The first (normally the only) response CloudFormation received."""
        return self.responses[0] if self.responses else None

    @property
    def status(self) -> str:
        """SUCCESS, FAILED, or NO_RESPONSE (CloudFormation would wait for ServiceTimeout)."""
        return str(self.response.get("Status")) if self.response else "NO_RESPONSE"

    @property
    def reason(self) -> str:
        """The response's reason, or why there was none."""
        if self.response:
            return str(self.response.get("Reason", ""))
        if self.killed:
            return f"the function was killed without answering ({self.error})"
        if self.timed_out:
            return f"the function timed out without answering ({self.error or 'killed'})"
        if self.error:
            return f"the function failed without answering: {self.error}"
        return "the function returned without answering"

    @property
    def physical_resource_id(self) -> str:
        """The PhysicalResourceId of the response."""
        return str(self.response.get("PhysicalResourceId", "")) if self.response else ""


class LambdaRun:
    """One run of a function with one event in a child process; made by :meth:`LambdaProcess.prepare`.

    :meth:`start` it, then :meth:`wait` for its :class:`Invocation`, :meth:`kill` it (from
    any thread: a crash), or look at :attr:`done`.
    """

    def __init__(
        self,
        process: LambdaProcess,
        function: FunctionSpec,
        event: Mapping[str, Any],
        *,
        request_id: str,
        timeout: float,
        kind: str,
    ) -> None:
        self.process = process
        self.function = function
        self.event = event
        self.request_id = request_id
        self.kind = kind
        self._timeout = timeout
        self._lock = threading.Lock()
        self._popen: subprocess.Popen[str] | None = None
        self._kill_requested = False
        self._finished = threading.Event()
        self._invocation: Invocation | None = None
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None

    @property
    def done(self) -> bool:
        """Whether the child has ended and its :class:`Invocation` is ready."""
        return self._finished.is_set()

    @property
    def invocation(self) -> Invocation | None:
        """The result, once :attr:`done`."""
        return self._invocation

    def start(self) -> LambdaRun:
        """Start the child process (returns at once); return ``self``."""
        if self._thread is not None:
            raise RuntimeError("this run was already started")
        self.process.check_python()
        self._thread = threading.Thread(target=self._run, name=f"lambda-run-{self.request_id[:8]}", daemon=True)
        self._thread.start()
        return self

    def kill(self) -> None:
        """End the child at once, without letting it answer (as a crashed Lambda process ends)."""
        with self._lock:
            self._kill_requested = True
            popen = self._popen
        if popen is not None and popen.poll() is None:
            popen.kill()

    def wait(self, timeout: float | None = None) -> Invocation:
        """Block until the run has ended; return its :class:`Invocation`.

        :raises TimeoutError: if it has not ended within ``timeout`` seconds.
        """
        if self._thread is None:
            raise RuntimeError("this run was not started")
        if not self._finished.wait(timeout):
            raise TimeoutError(f"run {self.request_id} still running after {timeout} s")
        assert self._invocation is not None
        return self._invocation

    def _run(self) -> None:
        try:
            self._invocation = self._execute()
        finally:
            self._finished.set()

    def _execute(self) -> Invocation:
        function, event = self.function, self.event
        workdir = Path(tempfile.mkdtemp(prefix="rehearsal-"))
        report_path = workdir / "report.json"
        request = {
            "asset_dir": str(function.asset_dir),
            "handler": function.handler,
            "timeout": self._timeout,
            "memory_mb": function.memory_mb,
            "function_name": function.name,
            "event": event,
            "report_path": str(report_path),
            "request_id": self.request_id,
        }
        limit = self._timeout + _bootstrap.INIT_TIMEOUT + _GRACE_SECONDS
        self.started_at = time.monotonic()
        overdue, output = False, ""
        exit_code: int | None = None
        seconds = 0.0
        report: dict[str, Any] = {}
        try:
            with self._lock:
                popen = subprocess.Popen(  # noqa: S603 - our own interpreter and bootstrap
                    [self.process.python, "-I", "-B", "-c", _BOOTSTRAP.read_text(encoding="utf-8")],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    encoding="utf-8",
                    errors="replace",
                    env=self.process.environment(function, app_id=self.request_id),
                    cwd=function.asset_dir,
                )
                self._popen = popen
                if self._kill_requested:
                    popen.kill()
            try:
                output, _ = popen.communicate(json.dumps(request), timeout=limit)
            except subprocess.TimeoutExpired:
                overdue = True
                popen.kill()
                output, _ = popen.communicate()
            exit_code = popen.returncode
            seconds = time.monotonic() - self.started_at
            try:
                report = json.loads(report_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                report = {}
        except OSError as failure:  # the interpreter could not be started
            report = {"error": f"the process could not be started: {failure}"}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        killed = self._kill_requested and not report
        timings = {key: float(report[key]) for key in ("init", "invoke") if report.get(key) is not None}
        error = report.get("error")
        if killed:
            error = KILLED_ERROR
        elif overdue:
            error = f"killed after {limit:.0f} s"
        elif error is None and exit_code not in (0, None):
            error = f"the process exited with status {exit_code}"
        url = str(event.get("ResponseURL", ""))
        responses = self.process.responses
        attempts = responses.attempts(url) if url else []
        first = next((attempt for attempt in attempts if attempt.accepted), None)  # CloudFormation ignores the rest
        return Invocation(
            request_type=str(event.get("RequestType")),
            logical_id=str(event.get("LogicalResourceId")),
            event=event,
            responses=tuple(attempt.body or {} for attempt in attempts if attempt.accepted),
            response_problems=first.problems if first is not None else (),
            logs=(output or "").rstrip("\n"),
            exit_code=exit_code,
            timed_out=overdue or bool(report.get("timed_out")),
            seconds=seconds,
            timings=timings,
            imports=dict(report.get("imports") or {}),
            error=str(error) if error is not None else None,
            request_id=self.request_id,
            kind=self.kind,
            killed=killed,
        )


class LambdaProcess:
    """Runs a function's asset in a fresh Python process per event, as Lambda runs it.

    ``python`` must have boto3 installed (Lambda's runtime provides it); any other package must
    come from the asset. ``endpoints`` adds environment variables for further local services
    (``AWS_ENDPOINT_URL_CLOUDFORMATION``, the global ``AWS_ENDPOINT_URL`` of a local moto):
    a mapping, or a callable asked at each run (for services started lazily). Without a global
    ``AWS_ENDPOINT_URL`` among them, it points to :data:`NOWHERE`, so that no call of the
    function can reach real AWS.
    """

    def __init__(
        self,
        appstream: AppStreamServer,
        responses: ResponseServer,
        *,
        python: str = sys.executable,
        region: str = "us-east-1",
        endpoints: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.appstream = appstream
        self.responses = responses
        self.python = python
        self.region = region
        self._endpoints = endpoints

    def check_python(self) -> None:
        """Make sure ``python`` can run a function: it must import boto3, as Lambda's runtime does.

        :raises RehearsalError: naming the interpreter and what to do, if it cannot.
        """
        with _PYTHON_CHECKS_LOCK:
            if self.python not in _PYTHON_CHECKS:
                _PYTHON_CHECKS[self.python] = _python_problem(self.python)
            problem = _PYTHON_CHECKS[self.python]
        if problem is not None:
            raise RehearsalError(problem)

    def environment(self, function: FunctionSpec, *, app_id: str | None = None) -> dict[str, str]:
        """The process environment: Lambda's variables, the function's, fake credentials, local endpoints.

        :param app_id: botocore's application id for the run (``AWS_SDK_UA_APP_ID``). Default: none.
        """
        extra = self._endpoints() if callable(self._endpoints) else dict(self._endpoints or {})
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "_HANDLER": function.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime or 'python'}",
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "rehearsal",
            "LAMBDA_TASK_ROOT": str(function.asset_dir),
            **function.environment,
            # Last, so that nothing in the function's environment can send it to real AWS.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # fake credentials for the local endpoints
            "AWS_SESSION_TOKEN": "testing",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
            "AWS_ENDPOINT_URL": NOWHERE,
            **extra,
            "AWS_ENDPOINT_URL_APPSTREAM": self.appstream.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "SSL_CERT_FILE": self.responses.ca_bundle_path,
        }
        if app_id is not None:
            env["AWS_SDK_UA_APP_ID"] = app_id
        env.pop("AWS_PROFILE", None)
        return env

    def prepare(
        self,
        function: FunctionSpec,
        event: Mapping[str, Any],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        kind: str = "invocation",
    ) -> LambdaRun:
        """A run of ``event``, not started yet (so that a fault can be armed with its id first).

        :param event: the event; a new ResponseURL is issued unless it has one.
        :param request_id: the run's id. Default: a new UUID.
        :param timeout: seconds the handler may run. Default: the function's ``Timeout``.
        :param kind: what the run is (``invocation``, ``retry``, ``duplicate``), for the record.
        """
        url = event.get("ResponseURL") or self.responses.new_response_url(str(event.get("LogicalResourceId")))
        return LambdaRun(
            self,
            function,
            {**event, "ResponseURL": url},
            request_id=request_id or str(uuid.uuid4()),
            timeout=function.timeout if timeout is None else timeout,
            kind=kind,
        )

    def start(self, function: FunctionSpec, event: Mapping[str, Any], **options: Any) -> LambdaRun:
        """:meth:`prepare` a run and start it."""
        return self.prepare(function, event, **options).start()

    def invoke(self, function: FunctionSpec, event: Mapping[str, Any], *, timeout: float | None = None) -> Invocation:
        """Run ``event`` to its end and return what came of it.

        ``responses`` and ``response_problems`` of the result cover every PUT to the event's
        ResponseURL so far, earlier runs with the same event included.

        :param event: the event; a new ResponseURL is issued unless it has one (a retry).
        :param timeout: seconds the handler may run. Default: the function's ``Timeout``.
        """
        return self.start(function, event, timeout=timeout).wait()


def _python_problem(python: str) -> str | None:
    """Why ``python`` cannot run a function (None if it can)."""
    try:
        completed = subprocess.run(  # noqa: S603 - the interpreter the caller chose
            [python, "-I", "-c", "import boto3"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as error:
        return f"the rehearsal's Python {python} cannot be run: {error}"
    except subprocess.TimeoutExpired:
        return f"the rehearsal's Python {python} did not import boto3 within 60 s"
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        return (
            f"the rehearsal's Python {python} cannot import boto3 ({last}); Lambda's Python runtime provides "
            "boto3, so the function's process needs it: install boto3 into that interpreter, or pass python= "
            "an interpreter that has it"
        )
    return None
