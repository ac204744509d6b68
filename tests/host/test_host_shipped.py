"""The shipped ResUNet weights (deblur and CT) exported at their trained 256² geometry: the C++ host gives
recon.runtime's images within 1e-5 and the same scores and flags at 256² and 512², an odd size that tiles,
batch 1 and 8, FP32 and INT8. Slow: the exports and the 512² batches take minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_host_outputs import assert_same, measurements

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict[str, Path]:
    try:
        from recon.export.exporter import ExportOptions, export_artifact
    except ImportError as error:
        pytest.skip(f"recon-export is not usable here ({error})")
    root = tmp_path_factory.mktemp("host-shipped")
    made = {}
    for task in ("deblur", "ct"):
        out = root / f"resunet-{task}"
        export_artifact(
            ExportOptions(model="resunet", task=task, out=out, engine="none", batch=(1, 4, 8), threads=2,
                          int8=task == "deblur", calibration_images=8, consistency_images=32)
        )  # fmt: skip
        made[task] = out
    return made


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("task", ["deblur", "ct"])
def test_shipped_networks_at_256_match(shipped, host_lib, task, batch):
    assert_same(shipped[task], measurements(shipped[task], batch), host_lib)


def test_shipped_int8_matches(shipped, host_lib):
    assert_same(shipped["deblur"], measurements(shipped["deblur"], 8), host_lib, precision="int8")


@pytest.mark.parametrize(
    ("shape", "options", "plan"),
    [((8, 1, 512, 512), {}, "whole"), ((1, 1, 700, 389), {"tile": 320}, "tiled")],
    ids=["512-batch-8", "odd-tiled"],
)
def test_shipped_deblur_at_other_sizes_matches(shipped, host_lib, shape, options, plan):
    images = np.random.default_rng(9).uniform(0, 1, shape).astype(np.float32)
    assert assert_same(shipped["deblur"], images, host_lib, **options)[0] == plan
