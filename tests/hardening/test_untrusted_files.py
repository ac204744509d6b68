"""Files recon did not write: weights never unpickled, DICOM with odd tags, inputs never overwritten.

The DICOM and overwrite cases are fuzzed in test_fuzz_image_files.py; here each is a named specification.
"""

from __future__ import annotations

import ast
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from fuzzing import assert_clear, recon_run
from image_files import write_variant
from runtime_artifacts import H, W

from recon.runtime.io.imageio import ImageIOError, read_image

REPO = Path(__file__).resolve().parents[2]


# -- weights -----------------------------------------------------------------------------------------------
def _unsafe_loads(path: Path) -> list[str]:
    """`torch.load(...)` calls without weights_only=True, and pickle.load(s) calls, in one source file."""
    found = []
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        if owner == "torch" and node.func.attr == "load":
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                found.append(f"{where}:{node.lineno} torch.load without weights_only=True")
        if owner in ("pickle", "cPickle", "dill", "joblib") and node.func.attr in ("load", "loads"):
            found.append(f"{where}:{node.lineno} {owner}.{node.func.attr}")
        pickles = any(k.arg == "allow_pickle" and getattr(k.value, "value", 0) is True for k in node.keywords)
        if owner in ("np", "numpy") and node.func.attr == "load" and pickles:
            found.append(f"{where}:{node.lineno} np.load(allow_pickle=True)")
    return found


def test_no_code_path_unpickles_weights_or_checkpoints():
    """Weights are safetensors, checkpoints torch.load(weights_only=True); nothing else unpickles."""
    sources = [
        p
        for folder in ("training", "export", "runtime", "bench", "scripts")
        for p in (REPO / folder).rglob("*.py")
    ]
    assert sources
    assert [hit for path in sources for hit in _unsafe_loads(path)] == []


def test_the_unsafe_load_detector_sees_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import torch, pickle\ntorch.load('a')\ntorch.load('b', weights_only=False)\n"
                     "torch.load('c', weights_only=True)\npickle.loads(b'')\n")  # fmt: skip
    assert [hit.split(" ", 1)[0].rsplit(":", 1)[1] for hit in _unsafe_loads(probe)] == ["2", "3", "5"]


# -- DICOM with missing or odd tags ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variant", "outcome"),
    [
        ("dcm-no-pixels", "without pixel data"),
        ("dcm-no-rescale", None),  # slope 1, intercept 0
        ("dcm-empty-rescale", None),
        ("dcm-zero-slope", r"RescaleSlope 0.0 .* \(need a finite, non-zero slope"),
        ("dcm-nan-slope", "RescaleSlope nan"),
        # refused undecoded either way: no decoder, or (with [dicom]'s pylibjpeg) a bogus frame header
        ("dcm-jpeg-lossless", r"compressed DICOM \('JPEG Lossless.*'\) (and no decoder|frame declares)"),
        ("dcm-multiframe", "multi-frame or colour DICOM"),
        ("dcm-rgb", "multi-frame or colour DICOM"),
        ("dcm-palette", r"PhotometricInterpretation PALETTE COLOR \(a colour map"),
        ("dcm-monochrome1", None),  # physical values do not depend on the display polarity
        ("dcm-big-endian", None),
        ("dcm-deflated", None),
        ("dcm-signed", None),
        ("dcm-short-pixels", "not a readable DICOM file"),
    ],
)
def test_dicom_with_odd_tags_is_read_or_refused_clearly(tmp_path, variant, outcome):
    pytest.importorskip("pydicom")
    path = tmp_path / "slice.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the NaN it is asked to write
        expectation = write_variant(path, variant, np.random.default_rng(0), 8, 6, "uint16")
    if outcome is None:
        np.testing.assert_allclose(read_image(path).data, expectation.data, atol=1e-6)
        return
    with pytest.raises(ImageIOError) as info:
        read_image(path)
    assert_clear(info.value, rf"^{path}: .*{outcome}")


# -- outputs never overwrite inputs ------------------------------------------------------------------------
@pytest.fixture
def one_input(tmp_path) -> Path:
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.arange(H * W, dtype=np.uint8).reshape(H, W)).save(folder / "a.png")
    return folder / "a.png"


def test_the_input_folder_as_output_is_refused_even_with_force(hardening_artifacts, one_input):
    before = one_input.read_bytes()
    for extra in ((), ("--force",)):
        code, stderr = recon_run(hardening_artifacts["conv"], one_input, "--out", one_input.parent, *extra)
        assert code == 1 and "would overwrite the input" in stderr
    assert one_input.read_bytes() == before


def test_an_output_path_that_links_to_the_input_is_refused_even_with_force(hardening_artifacts, one_input):
    before = one_input.read_bytes()
    for link in (os.symlink, os.link):
        out = one_input.parent.parent / f"out-{link.__name__}"
        out.mkdir()
        link(one_input, out / "a.png")
        code, stderr = recon_run(hardening_artifacts["conv"], one_input, "--out", out, "--force")
        assert code == 1 and ("would overwrite the input" in stderr or "is the input" in stderr), stderr
        assert one_input.read_bytes() == before


def test_an_existing_output_needs_force_and_force_replaces_only_the_output(hardening_artifacts, one_input):
    out = one_input.parent.parent / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"older result")
    code, stderr = recon_run(hardening_artifacts["conv"], one_input, "--out", out)
    assert code == 1 and "already exist(s); pass --force" in stderr
    assert (out / "a.png").read_bytes() == b"older result"
    assert recon_run(hardening_artifacts["conv"], one_input, "--out", out, "--force")[0] == 0
    assert read_image(out / "a.png").data.shape == (H, W)
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no temp files


def test_two_inputs_with_one_name_are_refused_before_anything_is_written(
    hardening_artifacts, one_input, tmp_path
):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes(one_input.read_bytes())
    code, stderr = recon_run(hardening_artifacts["conv"], one_input, other / "a.png", "--out", tmp_path / "o")
    assert code == 1 and "would both write" in stderr
    assert not (tmp_path / "o").exists()


def test_a_file_that_fails_midway_leaves_no_partial_output(hardening_artifacts, one_input, tmp_path):
    (one_input.parent / "b.npy").write_bytes(b"\x93NUMPY broken")
    code, stderr = recon_run(
        hardening_artifacts["conv"], one_input.parent, "--out", tmp_path / "o", "--batch", "1"
    )
    assert code == 1 and "b.npy: not a readable NPY file" in stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png"]  # written before; whole
    assert read_image(tmp_path / "o" / "a.png").data.shape == (H, W)


def test_a_file_of_non_numeric_pixels_is_refused_by_name(hardening_artifacts, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((H, W), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((H, W), dtype=[("x", "<f4"), ("y", "<i2")]))
    code, stderr = recon_run(
        hardening_artifacts["conv"], tmp_path / "a.npy", tmp_path / "b.npy", "--out", tmp_path / "o"
    )
    expected = "b.npy: images must be a numeric array, got dtype [('x', '<f4'), ('y', '<i2')]"
    assert code == 1 and expected in stderr and len(stderr.strip().splitlines()) == 1


def test_an_error_quoting_a_damaged_tag_stays_on_one_line(hardening_artifacts, tmp_path):
    path = tmp_path / "slice.dcm"
    write_variant(path, "dcm", np.random.default_rng(0), H, W, "uint16")
    path.write_bytes(path.read_bytes().replace(b"MONOCHROME2", b"MONOCHRO\rE2"))
    code, stderr = recon_run(hardening_artifacts["conv"], path, "--out", tmp_path / "o")
    assert code == 1 and len(stderr.strip().splitlines()) == 1
    assert "photometric interpretation 'MONOCHRO\\rE2'" in stderr
