"""Runs inside the child process that plays the Lambda runtime; standard library only.

The parent (:class:`constructs_lib.testing.lambda_runtime.LambdaProcess`) starts
``python -I -B -c <this file>`` with a clean environment, in the asset directory, and writes
one invocation as JSON on stdin: asset directory, handler string, timeout, memory size,
function name, event, the path of a report file and the request id (Lambda's
``aws_request_id``; the parent also makes it botocore's application id).

Like Lambda's Python runtime, this

* puts the asset directory first on ``sys.path`` and refuses third-party modules that are
  neither in the asset nor provided by Lambda's runtime (boto3 and its dependencies), so a
  package that is installed on this machine but missing from the asset fails to import here
  as it would on Lambda;
* imports the handler module named by the handler string (``index.handler``) during an init
  phase of at most :data:`INIT_TIMEOUT` seconds, reporting ``Runtime.ImportModuleError``,
  ``Runtime.HandlerNotFound`` or ``Runtime.MalformedHandlerName`` as Lambda does;
* calls the handler with a context whose ``get_remaining_time_in_millis`` counts down from the
  function's timeout, and ends the process when the timeout passes ("Task timed out");
* freezes nothing but ends the process as soon as the handler returns: work left running in
  background threads is lost, as it is when Lambda freezes the execution environment;
* writes START/END/REPORT lines like the function's CloudWatch log stream.

The report file receives the init and invoke durations, the error (if any), whether the
timeout struck, and where each top-level third-party module was imported from.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn

LAMBDA_RUNTIME_MODULES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six", "awslambdaric", "_cffi_backend"}
)
"""What Lambda's Python runtimes provide beyond the standard library."""

INIT_TIMEOUT = 10.0
"""Lambda's limit on the init phase (importing the handler module) of an on-demand function."""

TIMEOUT_EXIT_CODE = 124
"""Exit status of a child ended by the function's timeout."""

ERROR_EXIT_CODE = 1
"""Exit status of a child whose handler could not be imported or raised."""

_LOG_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s"


class AssetOnlyFinder(importlib.abc.MetaPathFinder):
    """Refuses top-level third-party modules found outside the asset and Lambda's runtime set."""

    def __init__(self, asset_dir: str) -> None:
        self._asset_dir = os.path.realpath(asset_dir)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """Find top-level modules in the asset; refuse those only found elsewhere."""
        if "." in fullname or fullname in sys.stdlib_module_names or fullname in LAMBDA_RUNTIME_MODULES:
            return None  # submodules follow their package; the rest is what the runtime has
        spec = importlib.machinery.PathFinder.find_spec(fullname, [self._asset_dir])
        if spec is None and importlib.machinery.PathFinder.find_spec(fullname) is not None:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} in the function's asset {self._asset_dir} "
                "(it is installed on this machine, but Lambda's runtime does not provide it)",
                name=fullname,
            )
        return spec


class LambdaContext:
    """The parts of Lambda's context object that handlers use.

    ``get_remaining_time_in_millis`` counts down from ``timeout`` seconds on ``clock`` (a
    monotonic clock in seconds; tests pass a fake one). This is the one Lambda context of the
    repository: the child process uses it, and :mod:`constructs_lib.testing.events` exports it.
    """

    def __init__(
        self,
        function_name: str = "AssociationsHandler",
        timeout: float = 300.0,
        memory_mb: int = 256,
        request_id: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._deadline = clock() + timeout
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{region}:123456789012:function:{function_name}"
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "rehearsal"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the function's timeout."""
        return max(0, int((self._deadline - self._clock()) * 1000))


class _RequestIdFilter(logging.Filter):
    """Adds ``aws_request_id`` to every record, as Lambda's log handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


class _Invocation:
    """One run of the handler: ends the process exactly once, with a report."""

    def __init__(self, report_path: str, asset_dir: str, request_id: str | None = None) -> None:
        self._report_path = report_path
        self._asset_dir = os.path.realpath(asset_dir)
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.request_id = request_id or str(uuid.uuid4())
        self.init_seconds: float | None = None
        self.invoke_started: float | None = None
        self.memory_mb = 0

    def imports(self) -> dict[str, str]:
        """Where each imported top-level third-party module came from."""
        found = {}
        for name, module in list(sys.modules.items()):
            if "." in name or name in sys.stdlib_module_names or name == "__main__":
                continue
            origin = getattr(module, "__file__", None)
            if isinstance(origin, str):
                found[name] = os.path.realpath(origin)
        return found

    def finish(self, code: int, *, error: str | None = None, timed_out: bool = False) -> NoReturn:
        """Write the report and the END/REPORT lines, then end the process at once."""
        with self._lock:  # a second caller (handler vs. timeout) blocks here until the exit
            now = time.monotonic()
            invoke = None if self.invoke_started is None else now - self.invoke_started
            if self.invoke_started is not None:
                duration = (invoke or 0.0) * 1000
                max_rss_mb = _max_rss_mb()
                init = f"\tInit Duration: {(self.init_seconds or 0.0) * 1000:.2f} ms"
                print(f"END RequestId: {self.request_id}")
                print(
                    f"REPORT RequestId: {self.request_id}\tDuration: {duration:.2f} ms\t"
                    f"Billed Duration: {max(1, int(duration + 0.999))} ms\tMemory Size: {self.memory_mb} MB\t"
                    f"Max Memory Used: {max_rss_mb} MB{init}"
                )
            report = {
                "init": self.init_seconds,
                "invoke": invoke,
                "error": error,
                "timed_out": timed_out,
                "imports": self.imports(),
                "request_id": self.request_id,
            }
            try:
                with open(self._report_path, "w", encoding="utf-8") as stream:
                    json.dump(report, stream)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)


def _max_rss_mb() -> int:
    """Peak resident memory of this process in MB (0 where the platform cannot tell)."""
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:
        return 0
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return int(max_rss // (1024 * 1024 if sys.platform == "darwin" else 1024))


def _runtime_error(invocation: _Invocation, kind: str, message: str) -> NoReturn:
    """Log a runtime error the way Lambda shows it, and end the process."""
    print(f"[ERROR] Runtime.{kind}: {message}")
    invocation.finish(ERROR_EXIT_CODE, error=f"Runtime.{kind}: {message}")


def _load_handler(invocation: _Invocation, handler: str) -> Callable[[Any, Any], Any]:
    """Import the handler's module and return the handler (Lambda's init phase)."""
    module_name, _, function_name = handler.rpartition(".")
    if not module_name or not function_name:
        _runtime_error(invocation, "MalformedHandlerName", f"Bad handler '{handler}': not enough values to unpack")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except (Exception, SystemExit) as error:  # reported as Lambda reports it
        _runtime_error(invocation, "ImportModuleError", f"Unable to import module '{module_name}': {error}")
    function = getattr(module, function_name, None)
    if not callable(function):
        _runtime_error(invocation, "HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return function  # type: ignore[no-any-return]


SKIPPED_VARIABLE = "REHEARSAL_SKIPPED_SECONDS"
"""Seconds of waiting the rehearsal jumped over before this run (its clock reads that much later)."""


def _shift_wall_clock() -> None:
    """Make ``time.time`` read as late as the rehearsal's clock (waits it skipped have passed).

    A run after a skipped ServiceTimeout sees the leases that a crashed run recorded (in wall-clock
    seconds) as long expired, as it would on AWS. Monotonic time needs no shift: nothing compares
    it across processes.
    """
    try:
        skipped = float(os.environ.get(SKIPPED_VARIABLE, "0") or 0)
    except ValueError:
        skipped = 0.0
    if skipped > 0:
        real = time.time
        time.time = lambda: real() + skipped


def main() -> None:
    """Read the invocation from stdin, run it, and end the process with the report written."""
    _shift_wall_clock()
    request: dict[str, Any] = json.loads(sys.stdin.read())
    asset_dir = str(request["asset_dir"])
    invocation = _Invocation(str(request["report_path"]), asset_dir, request.get("request_id"))
    invocation.memory_mb = int(request["memory_mb"])
    timeout = float(request["timeout"])

    sys.path.insert(0, asset_dir)
    sys.meta_path.insert(0, AssetOnlyFinder(asset_dir))
    request_filter = _RequestIdFilter()
    handler_out = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(_LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler_out.setFormatter(formatter)
    handler_out.addFilter(request_filter)
    logging.root.addHandler(handler_out)
    logging.root.setLevel(logging.WARNING)

    init_watchdog = threading.Timer(
        INIT_TIMEOUT,
        lambda: _runtime_error(invocation, "InitTimeout", f"init phase exceeded {INIT_TIMEOUT:.0f} seconds"),
    )
    init_watchdog.daemon = True
    init_watchdog.start()
    function = _load_handler(invocation, str(request["handler"]))
    init_watchdog.cancel()
    invocation.init_seconds = time.monotonic() - invocation._started

    request_filter.request_id = invocation.request_id
    print(f"START RequestId: {invocation.request_id} Version: $LATEST")
    sys.stdout.flush()
    invocation.invoke_started = time.monotonic()
    context = LambdaContext(str(request["function_name"]), timeout, invocation.memory_mb, invocation.request_id)

    def timed_out() -> None:
        print(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z {invocation.request_id} "
            f"Task timed out after {timeout:.2f} seconds"
        )
        invocation.finish(TIMEOUT_EXIT_CODE, error=f"Task timed out after {timeout:.2f} seconds", timed_out=True)

    watchdog = threading.Timer(timeout, timed_out)
    watchdog.daemon = True
    watchdog.start()
    try:
        function(request["event"], context)
    except Exception as error:  # reported as Lambda reports it
        print(f"[ERROR] {type(error).__name__}: {error}")
        print("".join(traceback.format_exception(error)).rstrip())
        invocation.finish(ERROR_EXIT_CODE, error=f"{type(error).__name__}: {error}")
    except SystemExit as exit_:
        _runtime_error(invocation, "ExitError", f"Runtime exited with error: exit status {exit_.code}")
    invocation.finish(0)


if __name__ == "__main__":
    main()
