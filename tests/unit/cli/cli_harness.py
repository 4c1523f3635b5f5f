"""Helpers for the command line's tests: run it as a user does, against a deployed-by-hand stack.

:class:`Cli` runs ``python -m constructs_lib ...`` in a separate process whose boto3 reaches the
local AppStream (``AWS_ENDPOINT_URL_APPSTREAM``), the testing kit's CloudFormation API
(``AWS_ENDPOINT_URL_CLOUDFORMATION``) and moto's DynamoDB (the global ``AWS_ENDPOINT_URL``), with
fake credentials and no shared config files. :func:`deploy` plays a stack's first deployment with
the real handler through :class:`tests.helpers.world.StackDriver`, so the state store holds what
the handler writes, and registers the stack's table and AppStream stacks in CloudFormation as
CloudFormation would.

(A uniquely named module, not conftest: test trees are imported by basename.)
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appstream_handler import rules
from tests.helpers.world import StackDriver, World

REPO_ROOT = Path(__file__).resolve().parents[3]
USERS = {name: f"{name}@example.com" for name in ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "root")}


@dataclass(frozen=True)
class Ran:
    """One run of the command line."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    """Runs the command line in a separate process against the world's local services."""

    world: World
    cwd: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The process environment: local endpoints, fake credentials, no colour settings inherited."""
        drop = ("AWS_", "NO_COLOR", "COLUMNS", "LINES", "TERM", "PYTHONPATH")
        env = {key: value for key, value in os.environ.items() if not key.startswith(drop)}
        env.update(self.world.aws.client_env())
        env["AWS_ENDPOINT_URL_APPSTREAM"] = self.world.appstream.endpoint_url
        env["AWS_ENDPOINT_URL_CLOUDFORMATION"] = self.world.cloudformation.endpoint_url
        env["AWS_CONFIG_FILE"] = os.devnull
        env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        env["PYTHONPATH"] = str(REPO_ROOT)
        env.update(self.extra_env)
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, *args: str, env: Mapping[str, str] | None = None) -> Ran:
        """``python -m constructs_lib *args`` with pipes (not a terminal)."""
        result = subprocess.run(
            [sys.executable, "-m", "constructs_lib", *args],
            cwd=self.cwd,
            env=dict(env) if env is not None else self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Ran(result.returncode, result.stdout, result.stderr)

    def run_on_terminal(self, *args: str, env: Mapping[str, str] | None = None) -> Ran:
        """The same with stdout and stderr on pseudo-terminals (what a person at a terminal gets)."""
        out_main, out_child = pty.openpty()
        err_main, err_child = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "constructs_lib", *args],
            cwd=self.cwd,
            env=dict(env) if env is not None else self.env(TERM="xterm", COLUMNS="100"),
            stdin=subprocess.DEVNULL,
            stdout=out_child,
            stderr=err_child,
        )
        os.close(out_child)
        os.close(err_child)
        chunks: dict[int, bytearray] = {out_main: bytearray(), err_main: bytearray()}
        open_fds = {out_main, err_main}
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [], 60)
            if not ready:
                process.kill()
                raise AssertionError("the command line hung on a terminal")
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the child closed its side
                    data = b""
                if data:
                    chunks[fd] += data
                else:
                    open_fds.discard(fd)
                    os.close(fd)
        code = process.wait(timeout=60)
        return Ran(code, _decode(chunks[out_main]), _decode(chunks[err_main]))


def _decode(raw: bytes | bytearray) -> str:
    """A terminal's bytes as text (the terminal turns each newline into CR LF)."""
    return raw.decode("utf-8", "replace").replace("\r\n", "\n")


def association_resources(template: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """Construct path -> (logical id, properties) of the template's association resources."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == rules.RESOURCE_TYPE:
            found[resource["Properties"]["ConstructPath"]] = (logical_id, resource["Properties"])
    return found


def _stack_name(template: Mapping[str, Any], value: Any) -> str:
    """The AppStream stack an association names: a literal, a CfnStack's Ref or a parameter's default."""
    if isinstance(value, str):
        return value
    target = value["Ref"]
    if target in template.get("Parameters", {}):
        return str(template["Parameters"][target]["Default"])
    return str(template["Resources"][target]["Properties"]["Name"])


def deploy(
    world: World,
    template: Mapping[str, Any],
    stack_name: str,
    users: Mapping[str, Sequence[str]],
    *,
    extra: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    table: str | None = None,
    status: str = "CREATE_COMPLETE",
    authentication_type: str = "USERPOOL",
) -> StackDriver:
    """Play the first deployment of ``template`` as ``stack_name`` with the real handler.

    ``users``: construct path -> the users that deployment declared (the template's declaration
    may have changed since: that is what ``plan`` is for). ``extra``: logical id -> (AppStream
    stack, users) of resources the template no longer has. The stack's own table is registered
    with physical id ``table`` (default: the world's table, which the handler writes to).
    """
    driver = world.stack(stack_name)
    registry = world.registry
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::DynamoDB::Table":
            registry.set_resource(
                driver.stack_id, logical_id, resource["Type"], "CREATE_COMPLETE", physical_id=table or world.table
            )
        elif resource["Type"] == "AWS::AppStream::Stack":
            registry.set_resource(
                driver.stack_id,
                logical_id,
                resource["Type"],
                "CREATE_COMPLETE",
                physical_id=resource["Properties"]["Name"],
            )
    assert driver.begin().status == "SUCCESS"
    declared = association_resources(template)
    for path, names in users.items():
        logical_id, properties = declared[path]
        answer = driver.create(
            logical_id,
            _stack_name(template, properties["StackName"]),
            names,
            authentication_type=authentication_type,
            ConstructPath=path,
            ExistingAssociations=properties.get("ExistingAssociations", "adopt"),
        )
        assert answer.status == "SUCCESS", answer.reason
    for logical_id, (appstream_stack, names) in (extra or {}).items():
        answer = driver.create(logical_id, appstream_stack, names, ConstructPath=f"{stack_name}/{logical_id}")
        assert answer.status == "SUCCESS", answer.reason
    driver.phase(status)
    return driver
