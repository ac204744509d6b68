"""Rule 5 (issue 23): the work is bounded, not only the bytes.

- The tiler's weight maps are built once per kind of window, not once per window.
- Every numeric CLI option is checked against `limits` or the machine (`--threads 20000` segfaulted,
  `recon-bench --batch 100000` ended in "internal error MemoryError").
- `from_artifact` raises only ArtifactError / BackendError, never a MemoryError.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from fuzzing import recon_run
from runtime_artifacts import H, W

from recon.runtime.cli.bench import bench_command
from recon.runtime.tiling import sliding_window


def test_tiling_holds_a_few_weight_maps_not_one_per_window():
    """1024² in 16² tiles every 8 px: 16 129 windows; a trimmed copy each held 4× the image in weights."""
    image = np.random.default_rng(0).random((1, 1, 1024, 1024), dtype=np.float32)
    tracemalloc.start()
    try:
        result = sliding_window(image, lambda tiles: tiles, 16, 8, batch_size=64, trim=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(result, image, atol=1e-6)  # an identity predictor gives the image back
    assert peak < 3.5 * image.nbytes, (
        f"peak {peak / 2**20:.1f} MiB for a {image.nbytes / 2**20:.0f} MiB image"
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--threads", "20000", "--threads must lie in 1.."),
        ("--batch", "100000", "--batch must lie in 1..256"),
        ("--tile", "1000000", "--tile must lie in 1..8192"),
    ],
)
def test_recon_run_checks_every_numeric_option_before_loading(
    hardening_artifacts, tmp_path, option, value, message
):
    np.save(tmp_path / "a.npy", np.zeros((H, W), np.float32))
    code, stderr = recon_run(
        hardening_artifacts["conv"], tmp_path / "a.npy", "--out", tmp_path / "o", option, value
    )
    assert code == 2 and message in stderr and "internal error" not in stderr, stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "1,100000"], "--batch must lie in 1..256"),
        (["--threads", "20000"], "--threads must lie in 1.."),
        (["--iters", "1000000000"], "--iters must lie in 1..100000"),
        (["--size", "100000,4"], "H and W must lie in 1..8192"),
    ],
)
def test_recon_bench_checks_every_numeric_option(hardening_artifacts, args, message):
    stderr = io.StringIO()
    quiet = contextlib.redirect_stdout(io.StringIO())
    with contextlib.redirect_stderr(stderr), quiet, pytest.raises(SystemExit) as exit_:
        bench_command.main([str(hardening_artifacts["conv"]), *args], prog_name="recon-bench")
    assert exit_.value.code == 2 and message in stderr.getvalue(), stderr.getvalue()


LOAD_UNDER_A_MEMORY_LIMIT = textwrap.dedent(
    """
    import resource, sys
    import numpy, onnxruntime
    from recon.runtime import Reconstructor
    from recon.runtime.artifact.manifest import ArtifactError
    from recon.runtime.backends.base import BackendError

    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 24 * 2**20, resource.RLIM_INFINITY))
    try:
        Reconstructor.from_artifact(sys.argv[1], backend="cpu", threads=1)
    except (ArtifactError, BackendError) as error:
        print("contract:", type(error).__name__, error)
    except BaseException as error:
        print("broken:", type(error).__name__, error)
    """
)


def test_from_artifact_turns_a_memory_error_into_a_backend_error(tmp_path):
    """A 64 MB graph loaded with 24 MB to spare: MemoryError inside, BackendError out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from recon.runtime.artifact.io_spec import BatchProfile, IOSpec
    from recon.runtime.artifact.manifest import Manifest
    from recon.runtime.artifact.task_config import DeblurTask

    spec = {"name": "measurement", "shape": ["batch", 1, H, W], "dtype": "float32", "layout": "NCHW"}
    graph = helper.make_graph(
        [helper.make_node("Identity", ["measurement"], ["image"])],
        "ballast",
        [helper.make_tensor_value_info("measurement", TensorProto.FLOAT, spec["shape"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, spec["shape"])],
        [numpy_helper.from_array(np.zeros(16 * 2**20, np.float32), "ballast")],  # 64 MB, unused
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "model.onnx")
    manifest = Manifest(
        name="ballast",
        task="deblur",
        model={"name": "ballast", "config": {}, "weights_sha256": None},
        input=IOSpec.from_json({**spec, "value_range": None}, "input"),
        output=IOSpec.from_json({**spec, "name": "image", "value_range": [0.0, 1.0], "clip": True}, "output"),
        task_config=DeblurTask(image_size=H),
        batch=BatchProfile(1, 1, 4),
    )
    manifest.add_file(tmp_path, "model.onnx", "onnx", "fp32")
    manifest.save(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_UNDER_A_MEMORY_LIMIT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.startswith("contract: BackendError"), (done.stdout, done.stderr[-2000:])
    assert "not enough memory to load this artifact" in done.stdout
    assert Path(tmp_path).exists()


def test_a_dicom_header_of_more_elements_than_the_cap_is_refused_while_walked(tmp_path, monkeypatch):
    """pydicom keeps every element it walks: 8 bytes each, a 64 MB header held 8 million of them. The cap
    (a module constant hosts may change, lowered here to keep the test small) stops the walk."""
    pytest.importorskip("pydicom")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))
    from dicom_files import write_slice

    from recon.runtime import limits
    from recon.runtime.io.dicom_series import group_series
    from recon.runtime.io.imageio import ImageIOError, read_image

    monkeypatch.setattr(limits, "MAX_DICOM_ELEMENTS", 2000)
    write_slice(tmp_path / "plain.dcm", np.zeros((4, 4), np.uint16))
    raw = (tmp_path / "plain.dcm").read_bytes()
    at = raw.index(b"\xe0\x7f\x10\x00OW")  # PixelData: the private elements go just before it
    elements = b"".join(
        b"\x29\x00" + element.to_bytes(2, "little") + b"SH\x00\x00" for element in range(0x1000, 0x3000)
    )  # 8192 empty SH elements of private group 0029
    (tmp_path / "many.dcm").write_bytes(raw[:at] + elements + raw[at:])
    with pytest.raises(ImageIOError, match=r"many.dcm: DICOM header holds more than 2000 elements"):
        read_image(tmp_path / "many.dcm")
    _, failed = group_series([tmp_path / "many.dcm"])  # the series grouping reads headers the same way
    assert "more than 2000 elements" in failed[0].error
    monkeypatch.setattr(limits, "MAX_DICOM_ELEMENTS", 100_000)
    assert read_image(tmp_path / "many.dcm").data.shape == (4, 4)  # a legal file, under the default cap
