"""The library as another CDK app gets it: built as a wheel (or ``pip install .``), installed in a
fresh virtualenv outside the checkout, imported from there, synthesizing the same Lambda asset.

The fresh virtualenvs get aws-cdk-lib, constructs and jsii through a ``.pth`` file pointing at
the test run's own site-packages (installing them from PyPI would take a minute and need the
network); the library itself is installed normally, and every run happens outside the checkout
with no PYTHONPATH, so only the installed copy can be imported (asserted on ``__file__``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

CONSUMER = """
import json, sys
from pathlib import Path
import aws_cdk as cdk
import constructs_lib
from constructs_lib import UserStackAssociation

app = cdk.App(outdir=sys.argv[1])
stack = cdk.Stack(app, "Consumer")
association = UserStackAssociation(stack, "Team", stack_name="team", user_names=["a@example.com"])
assembly = app.synth()
template = assembly.get_stack_by_name("Consumer").template
function = next(r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function")
key = function["Properties"]["Code"]["S3Key"]
asset = Path(assembly.directory) / ("asset." + key.removesuffix(".zip"))
print(json.dumps({
    "module": constructs_lib.__file__,
    "s3_key": key,
    "files": sorted(p.relative_to(asset).as_posix() for p in asset.rglob("*") if p.is_file()),
    "custom_resources": sum(
        r["Type"] == "Custom::AppStreamUserStackAssociation" for r in template["Resources"].values()
    ),
}))
"""


def run(args: list[str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files a build reads, copied out of the checkout so that building leaves nothing in it."""
    root = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO_ROOT / name).exists():
            shutil.copy2(REPO_ROOT / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("constructs_lib", "lambda_src"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=ignore)
    return root


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)],
        cwd=source,
    )
    (built,) = out.glob("*.whl")
    return built


def new_venv(root: Path) -> Path:
    """A virtualenv without pip whose site-packages also sees this run's (for aws-cdk-lib & co)."""
    run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root.parent)
    python = root / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout
    Path(purelib.strip(), "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip_install(python: Path, target: str, cwd: Path) -> None:
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            target,
        ],
        cwd=cwd,
    )


def synth_with(python: Path, cwd: Path, *extra_env: tuple[str, str]) -> dict[str, Any]:
    script = cwd / "consumer_app.py"
    script.write_text(CONSUMER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(dict(extra_env))
    result = subprocess.run(
        [str(python), str(script), str(cwd / "cdk.out")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def from_checkout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The consumer app run against the checkout (PYTHONPATH), for comparison."""
    cwd = tmp_path_factory.mktemp("checkout-app")
    return synth_with(Path(sys.executable), cwd, ("PYTHONPATH", str(REPO_ROOT)))


def test_wheel_holds_the_library_the_handler_and_crhelper(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    handler = {
        p.relative_to(REPO_ROOT / "lambda_src").as_posix()
        for p in (REPO_ROOT / "lambda_src").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert {
        n.removeprefix("constructs_lib/_lambda_src/") for n in names if n.startswith("constructs_lib/_lambda_src/")
    } == handler
    assert "constructs_lib/_lambda_src/index.py" in names
    assert "constructs_lib/py.typed" in names
    assert "constructs_lib/_vendor/crhelper-2.0.12-py3-none-any.whl" in names
    assert {
        "constructs_lib/__init__.py",
        "constructs_lib/association.py",
        "constructs_lib/testing/__init__.py",
    } <= names
    assert not any(n.startswith(("tests/", "tools/", "lambda_src/")) or "__pycache__" in n for n in names)
    # Runtime dependencies are aws-cdk-lib and constructs only (no cdk-nag, no boto3).
    requires = sorted(
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    assert requires == ["aws-cdk-lib<3,>=2.275.0", "constructs<11,>=10.0.0"]
    assert "Classifier: Typing :: Typed" in metadata


def test_installed_wheel_synthesizes_the_same_asset_as_the_checkout(
    wheel: Path, from_checkout: dict[str, Any], tmp_path: Path
) -> None:
    python = new_venv(tmp_path / "venv")
    pip_install(python, str(wheel), cwd=tmp_path)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    installed = synth_with(python, app_dir)

    assert Path(installed["module"]).is_relative_to(tmp_path / "venv"), installed["module"]
    assert Path(from_checkout["module"]).is_relative_to(REPO_ROOT)
    assert "index.py" in installed["files"]
    assert "crhelper/__init__.py" in installed["files"]
    assert installed["custom_resources"] == 1
    assert installed["files"] == from_checkout["files"]
    assert installed["s3_key"] == from_checkout["s3_key"]  # same asset hash: no redeploy on switching


def test_pip_install_of_the_source_tree_works_too(source: Path, from_checkout: dict[str, Any], tmp_path: Path) -> None:
    python = new_venv(tmp_path / "venv")
    pip_install(python, ".", cwd=source)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    installed = synth_with(python, app_dir)
    assert Path(installed["module"]).is_relative_to(tmp_path / "venv"), installed["module"]
    assert installed["s3_key"] == from_checkout["s3_key"]
