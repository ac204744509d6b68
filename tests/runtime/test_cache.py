"""Caches live where the platform keeps them (XDG on Linux), not in a hard-coded ~/.cache."""

from __future__ import annotations

from pathlib import Path

from recon.runtime.cache import cache_root


def test_linux_follows_xdg_cache_home_and_ignores_a_relative_one(tmp_path):
    assert cache_root({"XDG_CACHE_HOME": str(tmp_path)}, "linux") == tmp_path / "recon"
    assert cache_root({"XDG_CACHE_HOME": "relative/dir"}, "linux") == Path.home() / ".cache" / "recon"
    assert cache_root({}, "linux") == Path.home() / ".cache" / "recon"


def test_macos_and_windows_use_their_own_cache_folders(tmp_path):
    assert cache_root({"XDG_CACHE_HOME": str(tmp_path)}, "darwin") == Path.home() / "Library/Caches/recon"
    assert cache_root({"LOCALAPPDATA": str(tmp_path)}, "win32") == tmp_path / "recon" / "Cache"


def test_the_environment_is_read_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "recon"
