"""The library as another CDK app gets it: built as an sdist and a wheel (as ``make dist`` does, or
``pip install .``), installed in a fresh virtualenv outside the checkout, imported from there,
synthesizing the same Lambda asset; and the distributions' metadata and contents.

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
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import constructs_lib

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
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "CHANGELOG.md", "MANIFEST.in"):
        shutil.copy2(REPO_ROOT / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("constructs_lib", "lambda_src"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=ignore)
    return root


@pytest.fixture(scope="module")
def dist(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``make dist`` builds: the sdist, then the wheel from the sdist, offline (no isolation)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), "."], cwd=source)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    (built,) = dist.glob("*.tar.gz")
    return built


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


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
    # The command line: its package, and its console script in the entry points.
    assert {"constructs_lib/__main__.py", "constructs_lib/cli/__init__.py", "constructs_lib/cli/plan.py"} <= names
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "[console_scripts]\nappstream-associations = constructs_lib.cli:main" in entry_points


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


def test_wheel_metadata_name_version_licence_python_and_urls(wheel: Path) -> None:
    metadata = wheel_metadata(wheel)
    assert metadata["Name"] == "appstream-user-stack-association"
    assert metadata["Version"] == constructs_lib.__version__
    assert wheel.name == f"appstream_user_stack_association-{constructs_lib.__version__}-py3-none-any.whl"
    assert tuple(int(part) for part in metadata["Metadata-Version"].split(".")) >= (2, 4)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert sorted(metadata.get_all("License-File", [])) == ["LICENSE", "NOTICE"]
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Author"] == "AppStream user-stack association contributors"
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL", []))
    assert set(urls) == {"Homepage", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in urls.values())
    classifiers = metadata.get_all("Classifier", [])
    assert "Framework :: AWS CDK :: 2" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "UserStackAssociation" in metadata.get_payload()  # the README is the long description
    with zipfile.ZipFile(wheel) as archive:
        dist_info = f"appstream_user_stack_association-{constructs_lib.__version__}.dist-info"
        assert archive.read(f"{dist_info}/licenses/LICENSE") == (REPO_ROOT / "LICENSE").read_bytes()
        assert archive.read(f"{dist_info}/licenses/NOTICE") == (REPO_ROOT / "NOTICE").read_bytes()


def test_wheel_extras_testing_and_cli(wheel: Path) -> None:
    metadata = wheel_metadata(wheel)
    assert sorted(metadata.get_all("Provides-Extra", [])) == ["cli", "testing"]
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist", [])]

    def extra(name: str) -> dict[str, set[str]]:
        return {
            r.name: set(r.extras)
            for r in requirements
            if r.marker is not None and r.marker.evaluate({"extra": name}) and not r.marker.evaluate({"extra": ""})
        }

    assert extra("testing") == {"trustme": set(), "boto3": set(), "moto": {"server", "dynamodb"}}
    assert extra("cli") == {"boto3": set()}


def test_twine_check_passes_on_both_distributions(sdist: Path, wheel: Path) -> None:
    result = run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)], cwd=sdist.parent)
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_sdist_holds_licence_changelog_and_the_handler_sources(sdist: Path) -> None:
    top = f"appstream_user_stack_association-{constructs_lib.__version__}"
    assert sdist.name == f"{top}.tar.gz"
    with tarfile.open(sdist) as archive:
        members = {m.name.removeprefix(f"{top}/"): m for m in archive.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            extracted = archive.extractfile(members[name])
            assert extracted is not None
            return extracted.read()

        for name in ("LICENSE", "NOTICE", "CHANGELOG.md", "README.md", "pyproject.toml"):
            assert read(name) == (REPO_ROOT / name).read_bytes(), name
        assert "PKG-INFO" in members
        assert (
            read("constructs_lib/_vendor/crhelper-2.0.12-py3-none-any.whl")
            == (REPO_ROOT / "constructs_lib/_vendor/crhelper-2.0.12-py3-none-any.whl").read_bytes()
        )
    handler = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "lambda_src").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert handler <= set(members)
    assert "lambda_src/index.py" in members
    assert {"constructs_lib/_version.py", "constructs_lib/py.typed", "constructs_lib/testing/__init__.py"} <= set(
        members
    )
    assert not any(n.startswith(("tests/", "tools/")) or "__pycache__" in n or n.endswith(".pyc") for n in members)


def test_installed_wheel_reports_its_version(wheel: Path, tmp_path: Path) -> None:
    python = new_venv(tmp_path / "venv")
    pip_install(python, str(wheel), cwd=tmp_path)
    script = (
        "import importlib.metadata, json, constructs_lib; print(json.dumps([constructs_lib.__file__,"
        " constructs_lib.__version__, importlib.metadata.version('appstream-user-stack-association')]))"
    )
    module, version, distribution = json.loads(run([str(python), "-c", script], cwd=tmp_path).stdout)
    assert Path(module).is_relative_to(tmp_path / "venv")
    assert version == distribution == constructs_lib.__version__
    script_version = run([str(tmp_path / "venv" / "bin" / "appstream-associations"), "--version"], cwd=tmp_path)
    assert script_version.stdout == f"appstream-associations {constructs_lib.__version__}\n"
