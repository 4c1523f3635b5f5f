"""The testing kit as a team using the construct would use it, and what it keeps out of the asset.

The pytest example in ``constructs_lib.testing``'s documentation is run as written; a second
app, with a Stage and a stack name given as a token, shows the assembly reader following both.
"""

from __future__ import annotations

import json
import textwrap
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_appstream as appstream_l1

import constructs_lib.testing
from constructs_lib import UserStackAssociation
from constructs_lib._version import __version__
from constructs_lib.testing import AppStreamServer, AppStreamState, Rehearsal, ResponseServer, read_assembly
from tools.demo import INITIAL

REPO = Path(__file__).resolve().parents[2]


def documented_example() -> str:
    """The code block of the package documentation that follows "In a pytest suite"."""
    doc = constructs_lib.testing.__doc__ or ""
    after = doc[doc.index("In a pytest suite") :].split("::\n\n", 1)[1]
    lines = []
    for line in after.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_the_documented_pytest_example_runs_as_written(tmp_path: Path) -> None:
    source = documented_example()
    assert "def test_" in source
    assert "Rehearsal(appstream, cfn)" in source
    namespace: dict[str, Any] = {}
    exec(compile(source, "constructs_lib/testing/__init__.py (example)", "exec"), namespace)
    [test] = [value for name, value in namespace.items() if name.startswith("test_")]
    test(tmp_path)
    assert (tmp_path / "manifest.json").is_file()  # it really synthesized and rehearsed an app


def test_stages_and_a_stack_name_given_as_a_ref_are_followed(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stage = cdk.Stage(app, "Prod")
    stack = cdk.Stack(stage, "Workspaces")
    appstream_stack = appstream_l1.CfnStack(stack, "Stack", name="analysts")
    UserStackAssociation(stack, "Analysts", stack_name=appstream_stack.ref, user_names=["alice@example.com"])
    assembly = app.synth()

    [template] = read_assembly(assembly)
    assert template.stack_name == "Prod-Workspaces"
    [resource] = template.of_type("Custom::AppStreamUserStackAssociation")
    [declared] = template.of_type("AWS::AppStream::Stack")
    assert resource.properties["StackName"] == {"Ref": declared.logical_id}  # resolved when deployed
    assert declared.logical_id in resource.dependencies

    state = AppStreamState.from_seed({"users": [{"UserName": "alice@example.com"}]})
    with AppStreamServer(state) as appstream, ResponseServer() as cfn, Rehearsal(appstream, cfn) as rehearsal:
        [operation] = rehearsal.deploy(assembly)
        assert operation.status == "CREATE_COMPLETE", operation
        assert rehearsal.status("Prod-Workspaces") == "CREATE_COMPLETE"
        assert appstream.state.stacks() == {"analysts"}  # the CfnStack, created by the rehearsal
        assert appstream.state.associations() == {("analysts", "alice@example.com", "USERPOOL")}
        [create] = [run for run in operation.invocations if run.event["ResourceType"] == resource.resource_type]
        assert create.event["ResourceProperties"]["StackName"] == "analysts"  # Ref of a CfnStack: its name
        assert rehearsal.destroy("Prod-Workspaces").status == "DELETE_COMPLETE"
        assert appstream.state.stacks() == set()


def test_the_asset_holds_the_handler_and_crhelper_and_nothing_of_the_testing_kit(
    assemblies: Mapping[str, Path],
) -> None:
    [template] = read_assembly(assemblies[INITIAL.name])
    [function] = template.of_type("AWS::Lambda::Function")
    asset = function.asset_dir
    assert asset is not None
    files = {path.relative_to(asset).as_posix() for path in asset.rglob("*") if path.is_file()}
    handler_files = {path.relative_to(REPO / "lambda_src").as_posix() for path in (REPO / "lambda_src").rglob("*.py")}
    wheel = REPO / "constructs_lib" / "_vendor" / "crhelper-2.0.12-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        crhelper_files = {
            name for name in archive.namelist() if PurePosixPath(name).parts[0] == "crhelper" and not name.endswith("/")
        }
    assert files == handler_files | crhelper_files | {"asset.json"}
    metadata = json.loads((asset / "asset.json").read_text(encoding="utf-8"))
    assert metadata == {"name": "appstream-user-stack-association", "version": __version__, "crhelper": "2.0.12"}
    kit_modules = {path.name for path in (REPO / "constructs_lib" / "testing").glob("*.py")} - {"__init__.py"}
    assert not kit_modules & {PurePosixPath(name).name for name in files}
    for name in files:
        text = (asset / name).read_bytes()
        assert b"constructs_lib" not in text, name
        assert b"aws_cdk" not in text, name
