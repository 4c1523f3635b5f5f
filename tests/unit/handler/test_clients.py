"""The function's user agent names the library's one version: from its environment, else the asset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appstream_handler import clients
from constructs_lib import _asset
from constructs_lib._version import __version__


def test_the_version_comes_from_the_function_s_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(clients.VERSION_VARIABLE, "9.8.7")
    assert clients.user_agent() == "appstream-user-stack-association/9.8.7"
    config = clients.client_config("appstream")
    assert "appstream-user-stack-association/9.8.7" in str(getattr(config, "user_agent_extra", ""))


def test_without_it_the_version_comes_from_the_staged_asset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(clients.VERSION_VARIABLE, raising=False)
    staged = _asset.stage_asset(staging_root=tmp_path)
    monkeypatch.setattr(clients, "ASSET_METADATA", str(staged / _asset.ASSET_METADATA))
    assert clients.version() == __version__
    assert json.loads((staged / _asset.ASSET_METADATA).read_text(encoding="utf-8"))["version"] == __version__


def test_with_neither_it_says_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(clients.VERSION_VARIABLE, raising=False)
    monkeypatch.setattr(clients, "ASSET_METADATA", str(tmp_path / "missing.json"))
    assert clients.user_agent() == "appstream-user-stack-association/unknown"
