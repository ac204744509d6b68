"""Rule 2 (issue 23): every input is accounted for, and every flag reaches its output.

- The consistency check's scores and flag reach the series path's JSON and DICOM tags, through recon-run and
  through the Python API (`SeriesJob(...).run(rec.run)`).
- A folder entry that is not a readable slice is reported as skipped with its reason (stderr and --json),
  and the exit status says so.
- A series is checked before anything is written: one study, unique instances, distinct positions, one size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))  # dicom_files

from dicom_files import write_series, write_slice  # noqa: E402
from runtime_artifacts import H, W  # noqa: E402

from recon.runtime import Reconstructor  # noqa: E402
from recon.runtime.cli.run import run_command  # noqa: E402
from recon.runtime.io.dicom_series import SeriesJob, series_inputs  # noqa: E402


def _run_json(*args: object) -> tuple[int, dict, str]:
    """recon-run --json in this process: (exit code, the JSON summary, stderr)."""
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            run_command.main([*map(str, args), "--json"], prog_name="recon-run")
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, json.loads(stdout.getvalue()), stderr.getvalue()


@pytest.fixture
def series_folder(tmp_path) -> Path:
    folder = tmp_path / "series"
    folder.mkdir()
    write_series(folder, 3, np.random.default_rng(5), size=H)
    return folder


def test_flagged_series_slices_are_flagged_in_the_json_and_in_their_tags(hardening_artifacts, series_folder):
    code, summary, stderr = _run_json(
        hardening_artifacts["flagging"], series_folder, "--out", series_folder.parent / "o"
    )
    assert code == 0, stderr
    assert summary["flagged"] == 3 and summary["series"][0]["flagged"] == 3
    for outcome in summary["outcomes"]:
        assert outcome["flagged"] is True and outcome["consistency"][0]["reasons"] == [
            f"residual {outcome['consistency'][0]['residual']:.4g} > -1"
        ]
        out = pydicom.dcmread(outcome["out"])
        assert "consistency check FLAGGED" in out.ImageComments and "FLAGGED" in out.DerivationDescription
    assert stderr.count("consistency check FLAGGED the output") == 3  # one line per slice, named


def test_the_python_series_api_carries_the_flags_of_rec_run(hardening_artifacts, series_folder, tmp_path):
    """The README's `SeriesJob(files, out).run(rec.run, batch=8)`: flagged slices say so in their tags."""
    job = SeriesJob(series_inputs([series_folder]), tmp_path / "api")
    with Reconstructor.from_artifact(hardening_artifacts["flagging"], backend="cpu", threads=1) as rec:
        outcomes = job.run(rec.run, batch=2)
    assert [o.status for o in outcomes] == ["ok"] * 3
    for outcome in outcomes:
        assert outcome.flagged is True and outcome.to_json()["consistency"][0]["flagged"] is True
        assert "consistency check FLAGGED" in pydicom.dcmread(outcome.output).ImageComments
    assert job.summary()[0]["flagged"] == 3


def test_a_folder_entry_that_is_not_a_readable_slice_is_reported_as_skipped(hardening_artifacts, tmp_path):
    """Slice 3's preamble is damaged: it was dropped silently and the others renumbered 0001..0004."""
    folder = tmp_path / "series"
    folder.mkdir()
    _, written = write_series(folder, 5, np.random.default_rng(6), size=H, name=lambda k: f"IM{k:04d}")
    damaged = written[2][0]
    raw = bytearray(damaged.read_bytes())
    raw[128:132] = b"DIXM"
    damaged.write_bytes(bytes(raw))
    (folder / "sub").mkdir()
    code, summary, stderr = _run_json(hardening_artifacts["conv"], folder, "--out", tmp_path / "out")
    assert code == 1 and not summary["ok"] and summary["skipped"] == 2
    skipped = {Path(o["path"]).name: o["reason"] for o in summary["outcomes"] if o["status"] == "skipped"}
    assert set(skipped) == {"IM0002", "sub"} and "no PNG/TIFF/NPY/DICOM signature" in skipped["IM0002"]
    assert f"skipped: {damaged}: not an image file recon reads" in stderr
    assert summary["series"][0]["written"] == 4


@pytest.mark.parametrize("conflict", ["study", "instance", "position", "size"])
def test_a_series_that_does_not_hold_together_is_refused_before_anything_is_written(
    hardening_artifacts, tmp_path, conflict
):
    folder = tmp_path / "series"
    folder.mkdir()
    _, written = write_series(folder, 3, np.random.default_rng(7), size=H)
    first = written[0][1]
    same = dict(series_uid=first.SeriesInstanceUID, study_uid=first.StudyInstanceUID, instance=4,
                position=(-100.0, -120.0, 35.5 + 3 * 1.25), bits_stored=12)  # fmt: skip
    size = (H, W)
    if conflict == "study":
        same["study_uid"] = pydicom.uid.generate_uid()
    elif conflict == "instance":
        same["instance"] = 2
    elif conflict == "position":
        same["position"] = tuple(float(v) for v in first.ImagePositionPatient)
    else:
        size = (H + 2, W)
    write_slice(folder / "extra", np.zeros(size, np.uint16), **same)
    reason = {
        "study": "belong to 2 studies",
        "instance": "two slices share InstanceNumber 2",
        "position": "two slices lie at the same position",
        "size": f"2 sizes ({H}×{W}, {H + 2}×{W})",
    }[conflict]
    code, summary, stderr = _run_json(hardening_artifacts["conv"], folder, "--out", tmp_path / "out")
    assert code == 1 and summary["failed"] == 4, stderr
    assert all(reason in o["reason"] for o in summary["outcomes"]), summary["outcomes"]
    assert summary["series"][0]["written"] == 0 and reason in summary["series"][0]["refused"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.dcm"))
