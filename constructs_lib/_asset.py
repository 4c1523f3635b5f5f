"""Stage the Lambda asset at synth time, without Docker and without network access.

The staged directory holds:

1. every ``*.py`` file of the handler source tree (``lambda_src/``), ``__pycache__`` excluded;
2. the ``crhelper`` package, extracted from the wheel vendored in ``constructs_lib/_vendor``
   after its sha256 has been checked (crhelper is not part of the Lambda runtime).

The directory is content-addressed (its name carries the sha256 of everything in it), is
built in a sibling temporary directory and moved into place with ``os.replace``, so two
synths of the same sources produce the same asset hash and concurrent synths cannot see a
half-written directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

CRHELPER_VERSION = "2.0.12"
CRHELPER_WHEEL_NAME = f"crhelper-{CRHELPER_VERSION}-py3-none-any.whl"
CRHELPER_WHEEL_SHA256 = "8788941e94af8e5613f788a8723c0a9158e7139d663896e197acc65d1630f81c"
HANDLER_MODULE = "index.py"
"""File that the function's handler ``index.handler`` lives in."""

STAGING_PREFIX = "appstream-user-stack-association-asset-"
# Bump when the layout of the staged directory changes, so old staged directories are not reused.
_LAYOUT_VERSION = b"appstream-user-stack-association-asset/2\n"

_PACKAGE_DIR = Path(__file__).resolve().parent


class AssetStagingError(RuntimeError):
    """The Lambda asset cannot be staged (missing sources, tampered wheel, ...)."""


def default_lambda_src_dir(package_dir: Path = _PACKAGE_DIR) -> Path:
    """Return the handler source tree: the packaged copy if present, else the repository's.

    :param package_dir: the ``constructs_lib`` directory. Default: where this module lives.
    """
    packaged = package_dir / "_lambda_src"
    if packaged.is_dir():
        return packaged
    return package_dir.parent / "lambda_src"


def default_crhelper_wheel() -> Path:
    """Return the path of the vendored crhelper wheel."""
    return _PACKAGE_DIR / "_vendor" / CRHELPER_WHEEL_NAME


def _read_handler_sources(lambda_src: Path) -> dict[str, bytes]:
    if not lambda_src.is_dir():
        raise AssetStagingError(
            f"handler source directory {str(lambda_src)!r} does not exist; the Lambda code is "
            "expected in lambda_src/ next to constructs_lib/ (or constructs_lib/_lambda_src/ "
            "in a packaged install)"
        )
    files: dict[str, bytes] = {}
    for path in sorted(lambda_src.rglob("*.py")):
        relative = path.relative_to(lambda_src)
        if "__pycache__" in relative.parts or not path.is_file():
            continue
        if relative.parts[0] == "crhelper":
            raise AssetStagingError(f"{str(path)!r} collides with the vendored crhelper package; rename it")
        files[relative.as_posix()] = path.read_bytes()
    return files


def _read_crhelper(wheel: Path, expected_sha256: str) -> dict[str, bytes]:
    try:
        data = wheel.read_bytes()
    except OSError as error:
        raise AssetStagingError(f"cannot read the vendored crhelper wheel {str(wheel)!r}: {error}") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise AssetStagingError(
            f"crhelper wheel {str(wheel)!r} has sha256 {actual!r}, expected {expected_sha256!r}: "
            "the vendored file is corrupt or was replaced; restore "
            f"constructs_lib/_vendor/{CRHELPER_WHEEL_NAME} from version control"
        )
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = PurePosixPath(info.filename)
            if info.is_dir() or not name.parts or name.parts[0] != "crhelper":
                continue
            if name.is_absolute() or ".." in name.parts:
                raise AssetStagingError(f"crhelper wheel member {info.filename!r} has an unsafe path")
            files[name.as_posix()] = archive.read(info)
    if "crhelper/__init__.py" not in files:
        raise AssetStagingError(f"crhelper wheel {str(wheel)!r} holds no crhelper/__init__.py")
    return files


def _digest(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256(_LAYOUT_VERSION)
    for name in sorted(files):
        encoded = name.encode("utf-8")
        content = files[name]
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    # mkdtemp creates 0o700; the Lambda runtime user must be able to read everything.
    root.chmod(0o755)
    for name, content in files.items():
        target = root.joinpath(*PurePosixPath(name).parts)
        for parent in reversed(target.relative_to(root).parents):
            directory = root / parent
            if not directory.is_dir():
                directory.mkdir()
                directory.chmod(0o755)
        target.write_bytes(content)
        target.chmod(0o644)


def _tree_matches(root: Path, files: dict[str, bytes]) -> bool:
    """True if ``root`` holds exactly ``files`` (guards against tmp cleaners and tampering)."""
    try:
        present = {path.relative_to(root).as_posix() for path in root.rglob("*") if not path.is_dir()}
        return present == set(files) and all(
            root.joinpath(*PurePosixPath(name).parts).read_bytes() == content for name, content in files.items()
        )
    except OSError:
        return False


ASSET_METADATA = "asset.json"
"""A file at the asset's root naming the library and version that built it."""


def asset_metadata() -> bytes:
    """``asset.json``: the distribution and version that staged the asset (the handler's user agent)."""
    from constructs_lib._version import __version__  # noqa: PLC0415 - the one place the version lives

    document = {"name": "appstream-user-stack-association", "version": __version__, "crhelper": CRHELPER_VERSION}
    return (json.dumps(document, sort_keys=True) + "\n").encode("utf-8")


def stage_asset(
    *,
    lambda_src: Path | None = None,
    crhelper_wheel: Path | None = None,
    expected_wheel_sha256: str = CRHELPER_WHEEL_SHA256,
    staging_root: Path | None = None,
) -> Path:
    """Stage the Lambda asset and return the staged directory.

    :param lambda_src: handler source tree. Default: :func:`default_lambda_src_dir`.
    :param crhelper_wheel: crhelper wheel to extract. Default: :func:`default_crhelper_wheel`.
    :param expected_wheel_sha256: sha256 the wheel must have. Default: the vendored wheel's.
    :param staging_root: directory to stage into. Default: this user's private directory in
        ``tempfile.gettempdir()``.
    :raises AssetStagingError: if the sources are missing or the wheel's sha256 differs.
    """
    files = _read_handler_sources(lambda_src or default_lambda_src_dir())
    files.update(_read_crhelper(crhelper_wheel or default_crhelper_wheel(), expected_wheel_sha256))
    files[ASSET_METADATA] = asset_metadata()
    root = staging_root or _private_staging_root()
    staged = root / f"{STAGING_PREFIX}{_digest(files)}"
    if _tree_matches(staged, files):
        return staged

    building = Path(tempfile.mkdtemp(prefix=f".{staged.name}.", suffix=".tmp", dir=root))
    try:
        _write_tree(building, files)
        for _attempt in range(2):
            try:
                os.replace(building, staged)
                break
            except OSError:
                # Either a concurrent builder won the race (fine: same content) or a stale,
                # incomplete directory is in the way (remove it and try once more).
                if _tree_matches(staged, files):
                    break
                shutil.rmtree(staged, ignore_errors=True)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    if not _tree_matches(staged, files):
        raise AssetStagingError(f"staged Lambda asset {str(staged)!r} does not hold the expected files")
    return staged


def _private_staging_root() -> Path:
    """This user's own staging directory under the temp dir (mode 0700, checked).

    A directory every user can guess and write in would let another user on a shared build
    host put files into the asset between the content check and CDK copying it.
    """
    owner = os.getuid() if hasattr(os, "getuid") else None
    root = Path(tempfile.gettempdir()) / f"appstream-user-stack-association-{owner if owner is not None else 'user'}"
    root.mkdir(mode=0o700, exist_ok=True)
    info = root.lstat()
    if root.is_symlink() or (owner is not None and (info.st_uid != owner or info.st_mode & 0o077)):
        raise AssetStagingError(f"{str(root)!r} is not a private directory of this user: remove it and synth again")
    return root


def has_handler_module(staged: Path) -> bool:
    """True if the staged asset holds the module of the ``index.handler`` entry point."""
    return (staged / HANDLER_MODULE).is_file()
