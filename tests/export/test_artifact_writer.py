"""The artifact directory appears whole or not at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recon.export.artifact import ArtifactWriter, exchange_paths, remove_stale_partials
from recon.export.errors import ExportError


def _write(writer: ArtifactWriter, content: str) -> Path:
    with writer as tmp:
        (tmp / "manifest.json").write_text(content)
        (tmp / "model.onnx").write_bytes(b"x" * 10)
        return writer.commit()


def test_a_new_artifact_appears_by_rename_and_no_temp_folder_is_left(tmp_path):
    target = _write(ArtifactWriter(tmp_path / "art"), "new")
    assert (target / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert oct(target.stat().st_mode & 0o777) == "0o755"


def test_an_existing_target_needs_force(tmp_path):
    _write(ArtifactWriter(tmp_path / "art"), "old")
    with pytest.raises(ExportError, match="--force"):
        _write(ArtifactWriter(tmp_path / "art"), "new")
    assert (tmp_path / "art" / "manifest.json").read_text() == "old"


def test_force_replaces_the_artifact_whole(tmp_path):
    _write(ArtifactWriter(tmp_path / "art"), "old")
    (tmp_path / "art" / "stale-file").write_text("from the old artifact")
    _write(ArtifactWriter(tmp_path / "art", force=True), "new")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["manifest.json", "model.onnx"]
    assert (tmp_path / "art" / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_an_error_before_commit_leaves_nothing(tmp_path):
    writer = ArtifactWriter(tmp_path / "art")
    with pytest.raises(RuntimeError), writer as tmp:
        (tmp / "model.onnx").write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_two_directories_swap_atomically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "x").write_text("b")
    if not exchange_paths(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here (the fallback renames twice)")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_temp_folders_of_dead_exports_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "art"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_dir = tmp_path / f".art.partial-{int(dead.stdout)}-abc"
    live_dir = tmp_path / f".art.partial-{os.getpid()}-def"
    other = tmp_path / f".other.partial-{int(dead.stdout)}-abc"
    for folder in (dead_dir, live_dir, other):
        folder.mkdir()
    assert remove_stale_partials(target) == [dead_dir]
    assert live_dir.exists() and other.exists()
