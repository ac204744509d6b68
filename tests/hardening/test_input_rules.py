"""Rule 3 for inputs: one rule for the API and recon-run, and no silent scaling of a sinogram.

- A CT artifact records the range its sinograms can take (export/input_range.py); a float sinogram far
  outside it (×1000) is refused, as deblur refuses 0..255 floats.
- Integer sinograms have no known scale: refused, not divided by their dtype's maximum.
- Signed-integer images: the API and recon-run apply the same rule (scaled by the dtype's maximum, then the
  range check), so both accept int16 ≥ 0 with the same result and both refuse int16 −32768.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_artifacts import ANGLES, DETECTORS, H, W, ct_reference

from recon.runtime import Reconstructor

BIN = Path(sys.executable).parent
CT_RANGE = [-1.0, 12.0]  # what export/input_range.py would record for the test geometry


def recon_run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "recon-run"), *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def ct_with_range(hardening_artifacts, tmp_path) -> Path:
    artifact = tmp_path / "ct"
    shutil.copytree(hardening_artifacts["ct"], artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["input"]["value_range"] = CT_RANGE
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    return artifact


def sinogram(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 10, (ANGLES, DETECTORS)).astype(np.float32)


def test_a_sinogram_in_range_is_reconstructed(ct_with_range):
    with Reconstructor.from_artifact(ct_with_range, backend="cpu", threads=1, clip=False) as rec:
        np.testing.assert_allclose(rec.run(sinogram()), ct_reference(sinogram()[None, None])[0, 0], rtol=1e-4)


def test_a_float_sinogram_times_1000_is_refused_by_the_api_and_recon_run(ct_with_range, tmp_path):
    scaled = sinogram() * 1000
    with (
        Reconstructor.from_artifact(ct_with_range, backend="cpu", threads=1) as rec,
        pytest.raises(ValueError, match=r"sinogram values span .* far outside the artifact's input range"),
    ):
        rec.run(scaled)
    np.save(tmp_path / "s.npy", scaled)
    result = recon_run(ct_with_range, tmp_path / "s.npy", "--out", tmp_path / "o")
    assert result.returncode == 1 and "s.npy: sinogram values span" in result.stderr


@pytest.mark.parametrize("dtype", ["uint16", "int32", "uint8"])
def test_an_integer_sinogram_is_refused_not_divided_by_its_dtype_maximum(ct_with_range, tmp_path, dtype):
    fixed_point = np.rint(sinogram() * 10).astype(dtype)  # ×10 fixed point, as some consoles store them
    expected = rf"integer sinograms \({dtype}\) have no known scale"
    with Reconstructor.from_artifact(ct_with_range, backend="cpu", threads=1) as rec:
        pytest.raises(ValueError, rec.run, fixed_point).match(expected)
    np.save(tmp_path / "s.npy", fixed_point)
    result = recon_run(ct_with_range, tmp_path / "s.npy", "--out", tmp_path / "o")
    assert result.returncode == 1 and "s.npy: integer sinograms" in result.stderr


def test_signed_integer_images_follow_one_rule_in_the_api_and_recon_run(hardening_artifacts, tmp_path):
    artifact = hardening_artifacts["conv"]
    good = np.random.default_rng(0).integers(0, 32767, (H, W), dtype=np.int16)
    bad = good.copy()
    bad[0, 0] = -32768  # -1.00003 after scaling: beyond the [0, 1] range's tolerance
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "bad.npy", bad)
    result = recon_run(
        artifact, tmp_path / "good.npy", tmp_path / "bad.npy", "--out", tmp_path / "o", "--backend", "cpu"
    )
    assert result.returncode == 1
    with Reconstructor.from_artifact(artifact, backend="cpu", threads=1) as rec:
        api_good = rec.run(good)
        with pytest.raises(ValueError) as refused:
            rec.run(bad)
    # written back in the input's type, scaled back by the maximum it was scaled by (issue 23, rule 1)
    expected = np.rint(api_good.astype(np.float64) * 32767).astype(np.int16)
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "good.npy"), expected)
    assert not (tmp_path / "o" / "bad.npy").exists()
    assert f"bad.npy: {refused.value}" in result.stderr


def test_export_records_a_ct_range_that_holds_every_simulated_training_sinogram():
    torch = pytest.importorskip("torch")
    from recon.export.input_range import input_value_range
    from recon.runtime.artifact.task_config import CTTask
    from recon.training.data import phantom
    from recon.training.tasks import simulate

    cfg = CTTask(image_size=32, n_views=12, n_detectors=46)
    low, high = input_value_range(cfg)
    assert 32 * 1.3 < high < 32 * 1.6 and low < 0  # ≈ √2·N, widened by the noise
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.stack([phantom(32, rng) for _ in range(8)])[:, None]).float()
    images[0] = 1.0  # the brightest image the network was trained for
    sinograms = simulate(images, cfg, torch.Generator().manual_seed(0)).numpy()
    assert low <= sinograms.min() and sinograms.max() <= high
    assert sinograms.max() * 1000 > high + (high - low)  # what the runtime then refuses
    # and the exporter writes it into the manifest (it wrote null before)
    from types import SimpleNamespace

    from recon.export.exporter import make_manifest

    options = SimpleNamespace(model="cnn", task="ct", batch=(1, 2, 4), name=lambda: "cnn")
    manifest = make_manifest(
        options, torch.nn.Identity(), cfg, {"kind": "random-init"}, [1, 1, 12, 46], [1, 1, 32, 32]
    )
    assert manifest.input.value_range == (low, high)
