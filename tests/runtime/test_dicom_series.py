"""Whole DICOM series: grouping by SeriesInstanceUID, slice order, one derived series per source series with
its spatial tags, per-file outcomes, and recon-run on a folder of series."""

from __future__ import annotations

import json

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from dicom_files import ct_slice, write_series, write_slice  # noqa: E402
from runtime_artifacts import H, W, conv_reference  # noqa: E402
from test_runtime_cli import cli  # noqa: E402

from recon.runtime.io.dicom_series import SeriesJob, group_series, slice_normal  # noqa: E402

SPATIAL = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
           "SpacingBetweenSlices", "FrameOfReferenceUID", "StudyInstanceUID", "PatientID", "PatientName",
           "Rows", "Columns")  # fmt: skip


def _two_interleaved_series(folder, n_each, rng, size, **options):
    """Two series of `n_each` slices in one folder, files named by random UIDs (so a listing interleaves
    and shuffles them), with the dataset of each slice in anatomical order."""
    folder.mkdir(exist_ok=True)
    uid_a, a = write_series(folder, n_each, rng, size=size, series_number=3, **options)
    uid_b, b = write_series(
        folder, n_each, rng, size=size, series_number=4, series_description="CORONAL", **options
    )
    return (uid_a, a), (uid_b, b)


def _by_uid(series):
    return {s.uid: s for s in series}


def test_300_shuffled_uid_named_slices_of_two_interleaved_series_are_grouped_and_ordered(tmp_path):
    rng = np.random.default_rng(1)
    (uid_a, a), (uid_b, b) = _two_interleaved_series(tmp_path / "in", 150, rng, size=32)
    files = sorted((tmp_path / "in").iterdir())
    assert len(files) == 300 and all(".dcm" not in f.name for f in files)
    listed = [p for p, _ in a + b]
    assert listed != sorted(listed)  # the listing order is neither series nor slice order
    series, failed = group_series(files)
    assert failed == [] and len(series) == 2
    for uid, written in ((uid_a, a), (uid_b, b)):
        got = _by_uid(series)[uid]
        instances = [pydicom.dcmread(s.path, stop_before_pixels=True).InstanceNumber for s in got.slices]
        assert instances == list(range(1, 151))
        sops = [pydicom.dcmread(s.path, stop_before_pixels=True).SOPInstanceUID for s in got.slices]
        assert sops == [ds.SOPInstanceUID for _, ds in written]


def test_without_instance_numbers_slices_follow_their_position_along_an_oblique_normal(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "in"
    folder.mkdir()
    orientation = (0.8, 0.6, 0.0, 0.0, 0.0, -1.0)  # an oblique plane: the normal is not the z axis
    _, written = write_series(folder, 12, rng, size=8, orientation=orientation, instance_numbers=False,
                              name=lambda k: f"{(k * 7) % 12:02d}")  # fmt: skip
    normal = slice_normal(orientation)
    assert normal is not None and abs(normal[2]) < 1e-9
    (series,), _ = group_series(sorted(folder.iterdir()))
    assert [s.path for s in series.slices] == [p for p, _ in written]
    positions = [s.position for s in series.slices]
    assert positions == sorted(positions) and positions[1] - positions[0] == pytest.approx(1.25)


def test_instance_number_comes_before_position_and_position_breaks_ties(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "in"
    folder.mkdir()
    _, written = write_series(folder, 4, rng, size=8)
    for path, ds in written:  # reverse the instance numbers: they win over the positions
        ds.InstanceNumber = 5 - ds.InstanceNumber
        ds.save_as(path, enforce_file_format=True)
    (series,), _ = group_series(sorted(folder.iterdir()))
    assert [s.path for s in series.slices] == [p for p, _ in reversed(written)]
    for path, ds in written:  # all the same number: position decides
        ds.InstanceNumber = 1
        ds.save_as(path, enforce_file_format=True)
    (series,), _ = group_series(sorted(folder.iterdir()))
    assert [s.path for s in series.slices] == [p for p, _ in written]


def test_a_series_job_writes_one_derived_series_per_source_series_with_its_spatial_tags(tmp_path):
    rng = np.random.default_rng(4)
    (uid_a, a), (uid_b, b) = _two_interleaved_series(tmp_path / "in", 5, rng, size=8)
    job = SeriesJob(sorted((tmp_path / "in").iterdir()), tmp_path / "out")
    batches = []

    def identity(batch):
        batches.append(batch.shape)
        return batch

    outcomes = job.run(identity, batch=3)
    assert [o.status for o in outcomes] == ["ok"] * 10
    assert batches == [(3, 8, 8), (2, 8, 8)] * 2  # batches never mix series
    for uid, written in ((uid_a, a), (uid_b, b)):
        folder = {row["series_uid"]: row for row in job.summary()}[uid]["out"]
        out = [pydicom.dcmread(f"{folder}/{k:04d}.dcm") for k in range(1, 6)]
        assert len({ds.SeriesInstanceUID for ds in out}) == 1 and out[0].SeriesInstanceUID != uid
        for (_, source), derived in zip(written, out, strict=True):
            for tag in SPATIAL:
                assert derived[tag].value == source[tag].value, tag
            np.testing.assert_array_equal(derived.pixel_array, source.pixel_array)
    rows = job.summary()
    assert [(r["slices"], r["written"], r["failed"]) for r in rows] == [(5, 5, 0), (5, 5, 0)]
    assert len({r["out"] for r in rows}) == 2


def test_a_bad_slice_is_reported_by_name_and_the_rest_of_its_series_is_written(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "in"
    folder.mkdir()
    _, written = write_series(folder, 4, rng, size=8)
    bad = written[2][0]
    bad.write_bytes(bad.read_bytes()[:-20])  # pixel data cut short
    job = SeriesJob(sorted(folder.iterdir()), tmp_path / "out")
    outcomes = {o.path: o for o in job.run(lambda x: x, batch=8)}
    assert outcomes[bad].status == "failed" and outcomes[bad].error.startswith(f"{bad}: ")
    assert sum(o.status == "ok" for o in outcomes.values()) == 3
    assert job.summary()[0]["failed"] == 1


def test_existing_outputs_are_refused_before_anything_runs_unless_forced(tmp_path):
    rng = np.random.default_rng(6)
    folder = tmp_path / "in"
    folder.mkdir()
    write_series(folder, 2, rng, size=8)
    SeriesJob(sorted(folder.iterdir()), tmp_path / "out").run(lambda x: x, batch=2)
    with pytest.raises(ValueError, match="already exist.*pass --force"):
        SeriesJob(sorted(folder.iterdir()), tmp_path / "out")
    assert SeriesJob(sorted(folder.iterdir()), tmp_path / "out", force=True).n_slices == 2


def test_recon_run_on_a_folder_of_series_writes_derived_series_and_a_json_summary(deblur_artifact, tmp_path):
    rng = np.random.default_rng(7)
    (uid_a, a), (uid_b, b) = _two_interleaved_series(tmp_path / "in", 20, rng, size=H)
    (tmp_path / "in" / "notes.txt").write_text("not an image")  # neither DICOM nor a known suffix
    from PIL import Image

    Image.fromarray(rng.integers(0, 255, (H, W), dtype=np.uint8)).save(tmp_path / "in" / "photo.png")
    result = cli("recon-run", deblur_artifact, tmp_path / "in", "--out", tmp_path / "out", "--json",
                 "--batch", "8", "--dicom-window", "-1024,3071")  # fmt: skip
    assert result.returncode == 1, result.stderr  # notes.txt is reported as skipped, and the status says so
    summary = json.loads(result.stdout)
    assert summary["images"] == 41 and summary["files"] == 42 and summary["skipped"] == 1
    assert "skipped: " in result.stderr and "notes.txt: not an image file recon reads" in result.stderr
    rows = {row["series_uid"]: row for row in summary["series"]}
    assert [(rows[u]["slices"], rows[u]["written"]) for u in (uid_a, uid_b)] == [(20, 20), (20, 20)]
    slices = [o for o in summary["outcomes"] if o.get("series")]
    assert len(slices) == 40 and {o["status"] for o in summary["outcomes"]} == {"written", "skipped"}
    assert (tmp_path / "out" / "photo.png").is_file()  # other files as before
    derived = [pydicom.dcmread(f"{rows[uid_a]['out']}/{k:04d}.dcm") for k in range(1, 21)]
    assert [float(d.ImagePositionPatient[2]) for d in derived] == [
        float(ds.ImagePositionPatient[2]) for _, ds in a
    ]
    numbers = {d.SeriesNumber for d in derived}
    assert len(numbers) == 1 and numbers.pop() % 1000 == 3
    assert "model" in derived[0].DerivationDescription and "test-deblur" in derived[0].DerivationDescription
    source = a[4][1].pixel_array / 4095.0
    expected = np.clip(conv_reference(source[None, None]), 0, 1)[0, 0] * 4095 - 1024
    physical = derived[4].pixel_array * float(derived[4].RescaleSlope) + float(derived[4].RescaleIntercept)
    np.testing.assert_allclose(physical, expected, atol=0.5)
    # a second run: new series, not the first run's
    again = cli("recon-run", deblur_artifact, tmp_path / "in", "--out", tmp_path / "out2", "--json")
    assert again.returncode == 1, again.stderr
    second = pydicom.dcmread(f"{json.loads(again.stdout)['series'][0]['out']}/0001.dcm")
    assert second.SeriesInstanceUID not in {d.SeriesInstanceUID for d in derived}


def test_recon_run_reports_every_bad_slice_by_name_writes_the_others_and_exits_non_zero(
    deblur_artifact, tmp_path
):
    rng = np.random.default_rng(8)
    folder = tmp_path / "in"
    folder.mkdir()
    _, written = write_series(folder, 6, rng, size=H)
    uid = written[0][1].SeriesInstanceUID
    study = written[0][1].StudyInstanceUID
    # a slice of the series whose pixels cannot be read as its header says (a zero RescaleSlope)
    write_slice(folder / "1.2.3.999", np.zeros((H, W), np.uint16), series_uid=uid, study_uid=study,
                instance=7, position=(-100.0, -120.0, 35.5 + 6 * 1.25), slope="0")  # fmt: skip
    result = cli("recon-run", deblur_artifact, folder, "--out", tmp_path / "out", "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    failed = [o for o in summary["outcomes"] if o["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["path"].endswith("1.2.3.999")
    assert "RescaleSlope 0.0" in failed[0]["reason"]
    assert summary["series"][0]["written"] == 6 and summary["series"][0]["failed"] == 1
    text = cli("recon-run", deblur_artifact, folder, "--out", tmp_path / "out2")
    assert text.returncode == 1
    errors = [line for line in text.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "1.2.3.999" in errors[0] and "RescaleSlope 0.0" in errors[0]


def test_a_512_ct_series_runs_end_to_end_on_an_any_size_artifact(any_size_artifact, tmp_path):
    rng = np.random.default_rng(9)
    folder = tmp_path / "ct"
    folder.mkdir()
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    sources = [ct_slice(folder / f"1.2.840.{k}", rng, size=512, series_uid=uid, study_uid=study,
                        instance=k + 1, position=(-180.0, -180.0, 1.25 * k)) for k in range(3)]  # fmt: skip
    # symbolic H × W (a spatial entry up to 1024): 512² runs whole, as it would on recon-export's ResUNet
    result = cli("recon-run", any_size_artifact, folder, "--out", tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)["series"][0]
    assert (row["slices"], row["written"]) == (3, 3)
    for k, source in enumerate(sources, start=1):
        out = pydicom.dcmread(f"{row['out']}/{k:04d}.dcm")
        assert (out.Rows, out.Columns, out.PixelRepresentation) == (512, 512, 1)
        assert list(out.ImagePositionPatient) == list(source.ImagePositionPatient)
        hu = out.pixel_array * float(out.RescaleSlope) + float(out.RescaleIntercept)
        source_hu = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
        outside = (source_hu < -160) | (source_hu > 239)  # the header's window 40/400 (LINEAR)
        assert outside.any()
        np.testing.assert_array_equal(hu[outside], source_hu[outside])  # kept, not clipped
        assert hu[~outside].min() >= -160 and hu[~outside].max() <= 239


@pytest.mark.slow
def test_a_512_ct_series_runs_end_to_end_through_a_really_exported_512_artifact(tmp_path):
    import subprocess
    import sys

    try:
        import recon.export  # noqa: F401 - needs the training extra (torch)
    except ImportError as error:
        pytest.skip(f"recon-export is not usable here ({error})")
    artifact = tmp_path / "cnn-512"
    command = [sys.executable, "-m", "recon.export.cli", "--model", "cnn", "--task", "deblur",
               "--random-init", "--size", "512", "--batch", "1:2:4", "--engine", "none", "--threads", "1",
               "--quiet", "--out", str(artifact)]  # fmt: skip
    exported = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert exported.returncode == 0, exported.stderr
    rng = np.random.default_rng(10)
    folder = tmp_path / "ct"
    folder.mkdir()
    uid = pydicom.uid.generate_uid()
    sources = [ct_slice(folder / f"1.2.840.{k}", rng, size=512, series_uid=uid, instance=3 - k,
                        position=(-180.0, -180.0, 1.25 * (3 - k))) for k in range(3)]  # fmt: skip
    result = cli("recon-run", artifact, folder, "--out", tmp_path / "out", "--json", "--threads", "1")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)["series"][0]
    assert (row["slices"], row["written"]) == (3, 3)
    for k, source in enumerate(reversed(sources), start=1):
        out = pydicom.dcmread(f"{row['out']}/{k:04d}.dcm")
        assert (out.Rows, out.Columns, out.PixelRepresentation, out.InstanceNumber) == (512, 512, 1, k)
        assert list(out.ImagePositionPatient) == list(source.ImagePositionPatient)
        hu = out.pixel_array * float(out.RescaleSlope) + float(out.RescaleIntercept)
        assert hu.min() >= -160 and hu.max() <= 240  # through the header's window 40/400
