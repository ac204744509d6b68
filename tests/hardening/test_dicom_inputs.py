"""Hostile and real-world DICOM inputs (issue 11, rules 2 and 3): sizes checked before decoding, files named
by UID, MONOCHROME1, big endian, and a new series for every run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))  # dicom_files

from dicom_files import write_series, write_slice  # noqa: E402
from fuzzing import recon_run  # noqa: E402
from runtime_artifacts import H, W  # noqa: E402

from recon.runtime.io import dicom  # noqa: E402
from recon.runtime.io.imageio import ImageIOError, read_image  # noqa: E402


def _deflated_bomb(path: Path, side: int) -> None:
    """A deflated DICOM whose side × side uint16 zeros are all there (≈ 1/1000 of their size on disk)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = write_slice(path, np.zeros((4, 4), np.uint16))  # a valid header to start from
    del ds.PixelData
    ds.Rows = ds.Columns = side
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    n_bytes = side * side * 2
    # (7FE0,0010) OW, 2 reserved bytes, 4-byte length, then the zeros
    element = b"\xe0\x7f\x10\x00OW\x00\x00" + n_bytes.to_bytes(4, "little")
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 24)
    parts = [deflate.compress(body.getvalue() + element)]
    for start in range(0, n_bytes, len(zeros)):
        parts.append(deflate.compress(zeros[: min(len(zeros), n_bytes - start)]))
    parts.append(deflate.flush())
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    path.write_bytes(head.getvalue() + b"".join(parts))


def test_a_small_deflated_dicom_declaring_20000_squared_is_refused_without_inflating_it(tmp_path):
    path = tmp_path / "bomb.dcm"
    _deflated_bomb(path, 20000)  # 800 MB of pixels in under 1 MB
    assert path.stat().st_size < 2 * 1024 * 1024
    # in a child process with a 2 GB address-space cap, its peak memory measured
    probe = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from recon.runtime.io.imageio import ImageIOError, read_image
        try:
            read_image({str(path)!r})
        except ImageIOError as error:
            print(error)
        # VmHWM, not ru_maxrss: getrusage keeps the parent's peak across fork + execve (getrusage(2))
        status = open("/proc/self/status").read()
        print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    message, peak_mb = result.stdout.strip().splitlines()
    assert message.startswith(f"{path}: DICOM declares 20000×20000 pixels × 1 frame(s), above recon's limits")
    assert int(peak_mb) < 400, f"peak RSS {peak_mb} MB"


def test_a_deflated_dicom_inflating_past_what_it_declares_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "long.dcm"
    _deflated_bomb(path, 2048)  # 8 MB of pixels (more than HEADER_PREFIX): within the limits, and read
    assert read_image(path).data.shape == (2048, 2048)
    # the same stream against a header that declares 16 × 16 pixels and no slack: refused
    monkeypatch.setattr(dicom, "HEADER_SLACK", 0)
    monkeypatch.setattr(dicom, "check_declared_size", lambda ds, path: 16 * 16 * 2)
    with pytest.raises(ImageIOError, match=r"long.dcm: deflated DICOM inflates to more than the 512 bytes"):
        read_image(path)


def test_an_uncompressed_file_much_larger_than_its_declared_pixels_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "padded.dcm"
    write_slice(path, np.zeros((16, 16), np.uint16), ImageComments="x" * 10_000)
    monkeypatch.setattr(dicom, "HEADER_SLACK", 1000)
    with pytest.raises(ImageIOError, match=r"padded.dcm: \d+ bytes, far more than the 512 bytes of pixels"):
        read_image(path)


@pytest.mark.parametrize("rows", [8193, 65535])
def test_a_header_declaring_more_than_the_limits_is_refused_in_one_line(tmp_path, rows):
    ds = write_slice(tmp_path / "big.dcm", np.zeros((4, 4), np.uint16))
    ds.Rows = rows
    ds.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    with pytest.raises(ImageIOError, match=rf"big.dcm: DICOM declares {rows}×4 pixels") as info:
        read_image(tmp_path / "big.dcm")
    assert "\n" not in str(info.value)


def test_slices_named_by_uid_are_all_reconstructed_from_a_folder(hardening_artifacts, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_series(folder, 3, np.random.default_rng(0), size=H,
                 name=lambda k: f"1.2.840.113619.2.55.3.{123 + k}")  # fmt: skip
    code, stderr = recon_run(hardening_artifacts["conv"], folder, "--out", tmp_path / "out")
    assert code == 0, stderr
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert [p.name for p in written] == ["0001.dcm", "0002.dcm", "0003.dcm"]


def test_monochrome1_big_endian_and_signed_inputs_are_written_in_their_own_representation(
    hardening_artifacts, tmp_path
):
    cases = {
        "mono1.dcm": dict(photometric="MONOCHROME1", bits_stored=12),
        "big.dcm": dict(big_endian=True, bits_stored=12),
        "signed.dcm": dict(),
    }
    rng = np.random.default_rng(1)
    sources = {}
    for name, options in cases.items():
        dtype = np.int16 if name == "signed.dcm" else np.uint16
        pixels = rng.integers(0, 4096, (H, W)).astype(dtype)
        sources[name] = write_slice(tmp_path / name, pixels, **options)
        code, stderr = recon_run(hardening_artifacts["conv"], tmp_path / name, "--out", tmp_path / "out")
        assert code == 0, f"{name}: {stderr}"
        out = pydicom.dcmread(tmp_path / "out" / name)
        source = sources[name]
        for tag in ("PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation"):
            assert out[tag].value == source[tag].value, (name, tag)
        low, high = dicom.stored_range(source)
        assert low <= out.pixel_array.min() and out.pixel_array.max() <= high


def test_two_runs_write_two_distinct_numbered_described_series(hardening_artifacts, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    source_uid, written = write_series(folder, 2, np.random.default_rng(2), size=H)
    derived = []
    for run, extra in enumerate(([], ["--dicom-window", "-1024,3071"])):
        code, stderr = recon_run(hardening_artifacts["conv"], folder, "--out", tmp_path / f"out{run}", *extra)
        assert code == 0, stderr
        derived.append([pydicom.dcmread(p) for p in sorted((tmp_path / f"out{run}").rglob("*.dcm"))])
    first, second = derived
    assert len({d.SeriesInstanceUID for d in first}) == 1 and len({d.SeriesInstanceUID for d in second}) == 1
    assert first[0].SeriesInstanceUID != second[0].SeriesInstanceUID
    assert source_uid not in (first[0].SeriesInstanceUID, second[0].SeriesInstanceUID)
    assert first[0].SeriesNumber != second[0].SeriesNumber != written[0][1].SeriesNumber
    assert "header window" in first[0].DerivationDescription
    assert "window -1024..3071" in second[0].DerivationDescription
    assert "test-deblur" in first[0].DerivationDescription and first[0].SeriesDescription.startswith("recon ")


def test_recon_run_json_lists_every_slice_even_when_some_fail(hardening_artifacts, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _, written = write_series(folder, 3, np.random.default_rng(3), size=H)
    written[1][0].write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    out = io.StringIO()
    import contextlib

    from recon.runtime.cli.run import run_command

    args = [str(hardening_artifacts["conv"]), str(folder), "--out", str(tmp_path / "o"), "--json"]
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(io.StringIO()),
        pytest.raises(SystemExit) as exit_,
    ):
        run_command.main(args, prog_name="recon-run")
    assert exit_.value.code == 1
    summary = json.loads(out.getvalue())
    statuses = {Path(o["path"]).name: o["status"] for o in summary["outcomes"]}
    assert sorted(statuses.values()) == ["failed", "written", "written"]
    assert statuses[written[1][0].name] == "failed"
