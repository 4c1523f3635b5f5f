"""Lambda asset staging: deterministic, no Docker, crhelper from the verified vendored wheel."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
import zipfile
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from constructs_lib import AssetStagingError, UserStackAssociation, _asset
from constructs_lib._version import __version__
from tests.helpers.templates import REPO_ROOT, new_stack, only_logical_id

WHEEL = REPO_ROOT / "constructs_lib" / "_vendor" / "crhelper-2.0.12-py3-none-any.whl"


def wheel_crhelper_files() -> dict[str, bytes]:
    with zipfile.ZipFile(WHEEL) as archive:
        return {
            name: archive.read(name)
            for name in archive.namelist()
            if name.startswith("crhelper/") and not name.endswith("/")
        }


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def handler_src(tmp_path: Path) -> Path:
    """A throwaway handler tree (only in tmp_path) with files that must and must not be staged."""
    src = tmp_path / "lambda_src"
    (src / "pkg").mkdir(parents=True)
    (src / "__pycache__").mkdir()
    (src / "index.py").write_text("def handler(event, context):\n    return None\n")
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "logic.py").write_text("VALUE = 1\n")
    (src / "__pycache__" / "index.cpython-311.py").write_text("stale")
    (src / "README.md").write_text("not code")
    (src / "requirements.txt").write_text("crhelper\n")
    return src


def test_vendored_wheel_has_the_pinned_sha256() -> None:
    assert hashlib.sha256(WHEEL.read_bytes()).hexdigest() == _asset.CRHELPER_WHEEL_SHA256


def test_staged_tree_holds_handler_py_files_and_crhelper_only(handler_src: Path, tmp_path: Path) -> None:
    staged = _asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path)
    crhelper = wheel_crhelper_files()
    assert tree(staged) == {
        "index.py": (handler_src / "index.py").read_bytes(),
        "pkg/__init__.py": b"",
        "pkg/logic.py": b"VALUE = 1\n",
        "asset.json": _asset.asset_metadata(),
        **crhelper,
    }
    assert {"crhelper/__init__.py", "crhelper/resource_helper.py"} <= set(crhelper)
    assert not any("dist-info" in name for name in tree(staged))
    assert staged.parent == tmp_path
    assert staged.name.startswith("appstream-user-stack-association-asset-")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_staging_is_content_addressed(handler_src: Path, tmp_path: Path) -> None:
    first = _asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path)
    assert _asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path) == first
    (handler_src / "pkg" / "logic.py").write_text("VALUE = 2\n")
    second = _asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path)
    assert second != first
    assert (second / "pkg" / "logic.py").read_text() == "VALUE = 2\n"
    assert (first / "pkg" / "logic.py").read_text() == "VALUE = 1\n"


def test_files_are_readable_by_the_lambda_runtime_whatever_the_umask(handler_src: Path, tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        staged = _asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path)
    finally:
        os.umask(previous)
    for path in [staged, *staged.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_a_damaged_staged_directory_is_rebuilt(handler_src: Path, tmp_path: Path) -> None:
    staged = _asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path)
    (staged / "crhelper" / "utils.py").unlink()  # e.g. a tmp cleaner removed an old file
    (staged / "extra.py").write_text("x = 1\n")
    again = _asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path)
    assert again == staged
    assert "crhelper/utils.py" in tree(again)
    assert "extra.py" not in tree(again)


def test_concurrent_builders_agree(handler_src: Path, tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def build() -> None:
        try:
            start.wait()
            results.append(_asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert set(tree(results[0])) == {
        "index.py",
        "pkg/__init__.py",
        "pkg/logic.py",
        "asset.json",
        *wheel_crhelper_files(),
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_wheel_with_another_sha256_is_refused(tmp_path: Path, handler_src: Path) -> None:
    tampered = tmp_path / WHEEL.name
    shutil.copyfile(WHEEL, tampered)
    # the untouched copy is accepted: the seam works, so the failure below is the content's
    _asset.stage_asset(lambda_src=handler_src, crhelper_wheel=tampered, staging_root=tmp_path)
    with tampered.open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(AssetStagingError, match=r"crhelper wheel .* has sha256 '[0-9a-f]{64}', expected '8788941e"):
        _asset.stage_asset(lambda_src=handler_src, crhelper_wheel=tampered, staging_root=tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_missing_handler_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AssetStagingError, match=r"handler source directory .*nowhere.* does not exist"):
        _asset.stage_asset(lambda_src=tmp_path / "nowhere", staging_root=tmp_path)


def test_handler_tree_must_not_shadow_crhelper(handler_src: Path, tmp_path: Path) -> None:
    (handler_src / "crhelper").mkdir()
    (handler_src / "crhelper" / "__init__.py").write_text("")
    with pytest.raises(AssetStagingError, match="collides with the vendored crhelper package"):
        _asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path)


def test_handler_module_check(handler_src: Path, tmp_path: Path) -> None:
    assert _asset.has_handler_module(_asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path))
    (handler_src / "index.py").unlink()
    assert not _asset.has_handler_module(_asset.stage_asset(lambda_src=handler_src, staging_root=tmp_path))


def test_sources_are_located_from_the_package_not_the_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert _asset.default_lambda_src_dir() == REPO_ROOT / "lambda_src"
    assert _asset.default_crhelper_wheel() == WHEEL
    package = tmp_path / "site-packages" / "constructs_lib"
    package.mkdir(parents=True)
    assert _asset.default_lambda_src_dir(package) == tmp_path / "site-packages" / "lambda_src"
    (package / "_lambda_src").mkdir()
    assert _asset.default_lambda_src_dir(package) == package / "_lambda_src"


def test_default_staging_holds_the_repository_handler_and_crhelper(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # the cwd must not matter
    staged = _asset.stage_asset(staging_root=tmp_path)
    source = REPO_ROOT / "lambda_src"
    expected_py = {
        p.relative_to(source).as_posix(): p.read_bytes()
        for p in source.rglob("*.py")
        if "__pycache__" not in p.relative_to(source).parts
    }
    assert tree(staged) == {**expected_py, **wheel_crhelper_files(), "asset.json": _asset.asset_metadata()}


def test_the_asset_names_the_version_that_built_it(tmp_path: Path) -> None:
    staged = _asset.stage_asset(staging_root=tmp_path)
    metadata = json.loads((staged / "asset.json").read_text(encoding="utf-8"))
    assert metadata == {"name": "appstream-user-stack-association", "version": __version__, "crhelper": "2.0.12"}


def code_s3_key(template: Template) -> str:
    function_id = only_logical_id(template, "AWS::Lambda::Function")
    key = template.to_json()["Resources"][function_id]["Properties"]["Code"]["S3Key"]
    assert isinstance(key, str)
    return key


def test_two_synths_give_the_same_asset_hash() -> None:
    keys = []
    for stack_id in ("One", "Two"):
        stack = new_stack(stack_id)
        UserStackAssociation(stack, "A", stack_name="s", user_names=["a@example.com"])
        keys.append(code_s3_key(Template.from_stack(stack)))
    assert keys[0] == keys[1]
    assert keys[0].endswith(".zip")


def test_synthesized_asset_directory_matches_the_staged_tree(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path / "cdk.out"))
    stack = cdk.Stack(app, "Asset")
    UserStackAssociation(stack, "A", stack_name="s", user_names=["a@example.com"])
    assembly = app.synth()
    asset_hash = code_s3_key(Template.from_stack(stack)).removesuffix(".zip")
    asset_dir = Path(assembly.directory) / f"asset.{asset_hash}"
    assert tree(asset_dir) == tree(_asset.stage_asset())
    assert "crhelper/resource_helper.py" in tree(asset_dir)


def test_the_default_staging_directory_is_private_to_the_user() -> None:
    staged = _asset.stage_asset()
    root = staged.parent
    assert root.name == f"appstream-user-stack-association-{os.getuid()}"
    assert root.stat().st_uid == os.getuid()
    assert root.stat().st_mode & 0o077 == 0, "other users must not be able to write into the asset"
