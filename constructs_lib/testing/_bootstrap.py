"""Runs inside the child process that plays the Lambda runtime; stdlib only.

Reads one invocation (asset directory, handler string, timeout, event) as JSON from stdin,
imports the handler from the asset the way Lambda does, and calls it with a context whose
remaining time counts down from the function's timeout. Imports of third-party modules
that neither the asset nor Lambda's Python runtime provides fail, as they would on Lambda.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from types import ModuleType
from typing import Any

# What Lambda's Python runtimes provide beyond the standard library.
LAMBDA_RUNTIME_MODULES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six", "awslambdaric", "_cffi_backend"}
)


class AssetOnlyFinder(importlib.abc.MetaPathFinder):
    """Refuses top-level third-party modules found outside the asset and Lambda's runtime set."""

    def __init__(self, asset_dir: str) -> None:
        self._asset_dir = os.path.realpath(asset_dir)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if "." in fullname or top in sys.stdlib_module_names or top in LAMBDA_RUNTIME_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, [self._asset_dir])
        if spec is None and importlib.machinery.PathFinder.find_spec(fullname) is not None:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} in the function's asset (Lambda's runtime does not provide it)",
                name=fullname,
            )
        return spec


class LambdaContext:
    """The parts of Lambda's context object handlers use."""

    def __init__(self, function_name: str, timeout: float, memory_mb: int) -> None:
        self._deadline = time.monotonic() + timeout
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{os.environ.get('AWS_REGION', 'us-east-1')}:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "rehearsal"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the function's timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    """Read the invocation, run the handler, report timings on the last stdout line."""
    started = time.monotonic()
    request: dict[str, Any] = json.loads(sys.stdin.read())
    asset_dir = request["asset_dir"]
    sys.path.insert(0, asset_dir)
    sys.meta_path.insert(0, AssetOnlyFinder(asset_dir))
    logging.basicConfig(
        stream=sys.stdout, format="[%(levelname)s]\t%(asctime)s\t%(name)s\t%(message)s", level=logging.WARNING
    )
    module_name, _, function_name = request["handler"].rpartition(".")
    module = importlib.import_module(module_name)
    imported = time.monotonic()
    context = LambdaContext(request["function_name"], float(request["timeout"]), int(request["memory_mb"]))
    getattr(module, function_name)(request["event"], context)
    finished = time.monotonic()
    sys.stdout.flush()
    print("REHEARSAL-TIMINGS " + json.dumps({"init": imported - started, "invoke": finished - imported}))


if __name__ == "__main__":
    main()
