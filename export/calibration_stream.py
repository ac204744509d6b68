"""Calibration sets as a stream of batches, with bounded memory.

The consistency check's calibration runs 500 in-distribution inputs through the artifact. At a scanner's
scale (512², 180 views) the whole set is GBs (sinograms, outputs, the FBP inputs nobody needed) and took an
hour with no sign of life. Here each batch is simulated once, run once, and spilled to a scratch folder as
it comes, so memory holds one batch whatever the set's size; later passes (scoring, once the graph is
fitted) read the batches back one at a time.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np


def progress_bar(total: int, description: str, enabled: bool = True, unit: str = "image") -> Any:
    """A tqdm bar on stderr (never stdout, which --json owns); silent where stderr is not a terminal or
    progress is off (the step lines say what runs)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=f"recon-export: {description}",
        unit=unit,
        file=sys.stderr,
        disable=not (enabled and sys.stderr.isatty()),
        leave=False,
        dynamic_ncols=True,
    )


class SpilledBatches:
    """Batches of equal-length arrays (e.g. network output, measurement) written to a scratch folder as
    they are made and read back one batch at a time. A context manager: the folder goes on exit."""

    def __init__(self, prefix: str = "recon-calibration-") -> None:
        self._folder = tempfile.TemporaryDirectory(prefix=prefix)
        self.root = Path(self._folder.name)
        self.count = 0  # batches
        self.rows = 0  # items over all batches

    def add(self, *arrays: np.ndarray) -> None:
        for k, array in enumerate(arrays):
            np.save(self.root / f"{self.count:06d}-{k}.npy", np.ascontiguousarray(array))
        self.count += 1
        self.rows += len(arrays[0])

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        for index in range(self.count):
            parts = sorted(self.root.glob(f"{index:06d}-*.npy"))
            yield tuple(np.load(part) for part in parts)

    def first(self) -> tuple[np.ndarray, ...]:
        return next(iter(self))

    def __enter__(self) -> SpilledBatches:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._folder.cleanup()


def simulate_and_run(
    directory: Path,
    batches: Iterable[tuple[np.ndarray, Any]],
    n: int,
    threads: int | None,
    stored: np.ndarray | None,
    spill: SpilledBatches,
    show_progress: bool,
) -> None:
    """Each batch of measurements (simulated once, e.g. `training.data.measurement_batches`): run through
    the artifact (or read from `stored` outputs) and spilled as (x̂ (b, 1, N, N), y) — the same numbers
    `consistency.run_artifact` gives for the whole set at once."""
    from recon.runtime.reconstructor import Reconstructor

    bar = progress_bar(n, "simulating and running the calibration set", show_progress)
    rec = None
    if stored is None:
        rec = Reconstructor.from_artifact(directory, backend="cpu", threads=threads, consistency=False)
    try:
        done = 0
        for measurements, _ in batches:
            if rec is None:
                images = np.asarray(stored[done : done + len(measurements)])
            else:
                # the profile's OPT batch, not MAX: a CT graph's per-batch temporaries grow with the batch
                # (backprojection gathers over every pixel × angle × image)
                step = max(1, min(rec.max_batch, rec.manifest.batch.opt))
                images = np.concatenate(
                    [rec.run(measurements[lo : lo + step]) for lo in range(0, len(measurements), step)]
                )
            spill.add(images if images.ndim == 4 else images[:, None], measurements)
            done += len(measurements)
            bar.update(len(measurements))
    finally:
        bar.close()
        if rec is not None:
            rec.close()


def save_outputs(path: Path, spill: SpilledBatches) -> None:
    """The spilled outputs as one .npy (the `cache` of `write_consistency`), written batch by batch."""
    first = spill.first()[0]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=first.dtype, shape=(spill.rows, *first.shape[1:]))
    lo = 0
    for images, _ in spill:
        out[lo : lo + len(images)] = images
        lo += len(images)
    out.flush()
    del out
