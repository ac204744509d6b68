"""Fuzzing recon-run's file readers (runtime/io/imageio.py) and recon-run itself on whole and damaged files.

`read_image` on a whole file returns exactly what was written (DICOM: the rescaled, windowed values) or
refuses it with an ImageIOError that names the file and the reason. On a damaged file (truncated, bits
flipped, bytes overwritten, junk appended, emptied) it either refuses the same way or returns an array
of 2 or 3 dimensions, none empty: formats without checksums (NPY, TIFF, uncompressed DICOM) cannot tell
a flipped pixel from a real one, so a readable damaged file is not an error here. Never another
exception type, never a traceback out of recon-run.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from fuzzing import SCALES, assert_clear, fuzz_settings, recon_run
from hypothesis import given, note
from hypothesis import strategies as st
from image_files import NPY, NPY_DTYPES, READABLE, TIFF, TIFF_DTYPES, VARIANTS, suffix, write_variant
from runtime_artifacts import H, W

from recon.runtime.io.imageio import ImageIOError, read_image

DAMAGE = [None, "truncate", "flip", "overwrite", "append", "empty", "zero-head"]


def damage(path: Path, how: str | None, rng: np.random.Generator) -> None:
    if how is None:
        return
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: int(rng.integers(0, len(data)))]
    elif how == "flip":
        for _ in range(int(rng.integers(1, 9))):
            position = int(rng.integers(0, len(data)))
            data[position] ^= 1 << int(rng.integers(0, 8))
    elif how == "overwrite":
        start = int(rng.integers(0, len(data)))
        data[start : start + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
    elif how == "append":
        data += rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    elif how == "empty":
        data = bytearray()
    else:
        data[: int(rng.integers(1, 64))] = bytes(64)[: len(data)]
    path.write_bytes(bytes(data))


@st.composite
def files(
    draw: st.DrawFn, size: tuple[int, int] | None = None, whole: float = 1 / 3, readable: float = 0.0
) -> dict:
    """A file to write: variant (one recon-run reads for about `readable` of them), dtype, size,
    damage (None for about `whole` of them) and a seed."""
    readable_only = draw(st.floats(0, 1)) < readable
    variant = draw(st.sampled_from(READABLE if readable_only else VARIANTS))
    dtypes = TIFF_DTYPES if variant in TIFF else NPY_DTYPES if variant in NPY else ["uint16"]
    return {
        "variant": variant,
        "dtype": draw(st.sampled_from(dtypes)),
        "size": size or (draw(st.integers(1, 40)), draw(st.integers(1, 40))),
        "damage": None if draw(st.floats(0, 1)) < whole else draw(st.sampled_from(DAMAGE[1:])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def make(folder: Path, spec: dict, name: str = "image"):
    rng = np.random.default_rng(spec["seed"])
    path = folder / f"{name}{suffix(spec['variant'])}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values written on purpose
        expectation = write_variant(path, spec["variant"], rng, *spec["size"], spec["dtype"])
    damage(path, spec["damage"], rng)
    return path, expectation


@pytest.mark.parametrize("scale", SCALES)
def test_readers_return_what_was_written_or_refuse_with_the_file_and_reason(tmp_path, scale):
    outcomes: dict[str, int] = {}

    @fuzz_settings(scale, quick=150)
    @given(spec=files())
    def fuzz(spec: dict) -> None:
        note(str(spec))
        folder = Path(tempfile.mkdtemp(dir=tmp_path))  # replays of a failing case get their own
        path, expectation = make(folder, spec)
        whole = spec["damage"] is None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom/tifffile warn on some damaged files
                image = read_image(path)
        except Exception as error:  # noqa: BLE001 - every exception is judged
            assert isinstance(error, ImageIOError), f"{type(error).__name__}: {error}"
            assert_clear(error, *(expectation.errors if whole else ()))
            assert str(error).startswith(f"{path}: "), str(error)
            key = f"refused ({'whole' if whole else 'damaged'})"
            outcomes[key] = outcomes.get(key, 0) + 1
            return
        if whole:
            assert expectation.data is not None, f"should have been refused ({expectation.errors})"
            assert image.data.dtype.kind == expectation.data.dtype.kind
            if expectation.data.dtype.kind in "fiu":
                np.testing.assert_allclose(image.data, expectation.data, rtol=0, atol=expectation.atol)
            else:  # bool, complex, structured
                np.testing.assert_array_equal(image.data, expectation.data)
        assert image.data.ndim in (2, 3) and 0 not in image.data.shape
        key = f"read ({'whole' if whole else 'damaged'})"
        outcomes[key] = outcomes.get(key, 0) + 1

    fuzz()
    print(f"\nread_image fuzz ({scale}): {sum(outcomes.values())} cases {outcomes}")
    assert outcomes.get("read (whole)") and outcomes.get("refused (whole)")


@pytest.mark.parametrize("scale", SCALES)
def test_recon_run_writes_every_readable_file_and_reports_each_bad_one(tmp_path, hardening_artifacts, scale):
    """Whole pipeline: read, scale, reconstruct, write; inputs untouched, no traceback, no temp files.

    Each file on its own: the good ones are written whatever the others hold, each bad one is reported by
    name (one stderr line each), and the exit status says whether any failed.
    """
    outcomes: dict[str, int] = {}

    @fuzz_settings(scale, quick=25)
    @given(
        specs=st.lists(files(size=(H, W), whole=0.8, readable=0.8), min_size=1, max_size=3),
        batch=st.integers(1, 4),
    )
    def fuzz(specs: list[dict], batch: int) -> None:
        note(str(specs))
        case = Path(tempfile.mkdtemp(dir=tmp_path))
        inputs, out = case / "in", case / "out"
        inputs.mkdir(parents=True)
        paths = [make(inputs, spec, f"image{i}")[0] for i, spec in enumerate(specs)]
        before = {p: p.read_bytes() for p in paths}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code, stderr = recon_run(
                hardening_artifacts["conv"], *paths, "--out", out, "--batch", batch, "--threads", "1"
            )
        assert {p: p.read_bytes() for p in paths} == before
        assert not [p for p in out.glob(".*")] if out.exists() else True  # no temp files left
        lines = stderr.strip().splitlines()
        failed = [p for p in paths if any(line.startswith(f"error: {p}: ") for line in lines)]
        assert len(lines) == len(failed), stderr  # one line per failed file, nothing else
        assert code == (1 if failed else 0), stderr
        written = sorted(out.iterdir()) if out.exists() else []
        assert [p.name for p in written] == sorted(p.name for p in paths if p not in failed)
        for path in written:
            result = read_image(path).data
            assert result.ndim in (2, 3) and result.shape[-2:] == (H, W)
            assert np.isfinite(result.astype(np.float64)).all()
        outcomes["written"] = outcomes.get("written", 0) + len(written)
        outcomes["refused"] = outcomes.get("refused", 0) + len(failed)

    fuzz()
    print(f"\nrecon-run fuzz ({scale}): {sum(outcomes.values())} files {outcomes}")
    assert outcomes.get("written") and outcomes.get("refused")


def test_a_compressed_dicom_without_a_decoder_is_refused_by_name(tmp_path):
    path, _ = make(tmp_path, {"variant": "dcm-jpeg-lossless", "dtype": "uint16", "size": (4, 4),
                              "damage": None, "seed": 0})  # fmt: skip
    with pytest.raises(ImageIOError, match=r"image.dcm: compressed DICOM \('JPEG Lossless") as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_recon_run_outputs_and_manifests_are_readable_by_other_accounts(tmp_path, hardening_artifacts):
    from recon.runtime.io.files import write_json_atomic

    np.save(tmp_path / "a.npy", np.zeros((H, W), np.float32))
    previous = os.umask(0o022)
    try:
        assert recon_run(hardening_artifacts["conv"], tmp_path / "a.npy", "--out", tmp_path / "o")[0] == 0
        write_json_atomic(tmp_path / "manifest.json", {})
    finally:
        os.umask(previous)
    # mkstemp's 0600 would lock the scanner's other services out of the images and the manifest
    assert (tmp_path / "o" / "a.npy").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o644
