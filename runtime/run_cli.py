"""recon-run: reconstruct image files with an exported artifact.

Heavy modules load inside the command so `--help` and a one-image run start fast.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from recon.runtime.cli_base import PRECISIONS, Command


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"--dicom-window takes LOW,HIGH (two numbers), got {text!r}") from None
    return low, high


def collect_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """Files as given, folders' image files (not recursive), in order; refuses unknown formats."""
    from recon.runtime.imageio import SUFFIXES, detect_format

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p
                for p in item.iterdir()
                if p.is_file() and not p.name.startswith(".") and detect_format(p) is not None
            )
            if not found:
                raise ValueError(f"{item}: no image files in this folder ({', '.join(sorted(SUFFIXES))})")
            files.extend(found)
        elif detect_format(item) is None:
            raise ValueError(f"{item}: unknown image format; recon-run reads {', '.join(sorted(SUFFIXES))}")
        else:
            files.append(item)
    return files


def plan_outputs(files: list[Path], out: Path, force: bool) -> list[Path]:
    """One output per input (same name) in `out`; never an input, never an existing file without force."""
    inputs = {f.resolve() for f in files}
    outputs: list[Path] = []
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise ValueError(f"{seen[f.name]} and {f} would both write {out / f.name}; run them separately")
        seen[f.name] = f
        target = out / f.name
        if target.resolve() in inputs:
            raise ValueError(f"--out {out} would overwrite the input {f}; choose another output folder")
        outputs.append(target)
    existing = [p for p in outputs if p.exists()]
    for target in existing:  # a hard link to an input resolves to another path but is the same file
        same = next((f for f in files if os.path.samefile(f, target)), None)
        if same is not None:
            raise ValueError(f"{target} is the input {same} (a link); choose another output folder")
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(f"{existing[0]}{more} already exist(s); pass --force to overwrite")
    return outputs


RUN_EPILOG = """\b
Examples:
  recon-run artifacts/resunet-deblur blurred/ --out restored/
  recon-run artifacts/resunet-deblur scan.dcm --out out/ --backend cpu --threads 2
  recon-run artifacts/fbpconvnet-ct sinograms/*.npy --out images/ --batch 16 --json
"""


@click.command("run", cls=Command, epilog=RUN_EPILOG)
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "-o",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (created); outputs keep each input's name and format.",
)
@click.option(
    "--backend",
    "-b",
    default="auto",
    show_default=True,
    help="auto, cpu (onnxruntime-cpu), cuda (onnxruntime-cuda), onnxruntime-tensorrt, tensorrt.",
)
@click.option("--batch", type=int, default=None, help="Images per run (default: the artifact's opt batch).")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: FP32 on the CPU, plan or FP16 on a GPU.",
)
@click.option(
    "--threads", type=int, default=None, help="onnxruntime intra-op threads (default: one per core)."
)
@click.option("--force", is_flag=True, help="Overwrite existing outputs (inputs are never overwritten).")
@click.option(
    "--tile",
    type=click.IntRange(1),
    default=None,
    help="Tile side in px: larger images run as blended tiles (a memory cap); default: the artifact's.",
)
@click.option(
    "--overlap", type=click.IntRange(0), default=None, help="Tile overlap in px; default: the artifact's."
)
@click.option(
    "--dicom-window",
    default=None,
    metavar="LOW,HIGH",
    help="Physical values mapped to [0, 1] for DICOM inputs (default: the stored bits' range).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def run_command(
    artifact: Path,
    inputs: tuple[str, ...],
    out: Path,
    backend: str,
    batch: int | None,
    precision: str,
    threads: int | None,
    force: bool,
    tile: int | None,
    overlap: int | None,
    dicom_window: str | None,
    as_json: bool,
) -> None:
    """Reconstruct image files (PNG, TIFF, NPY, DICOM) with an exported artifact.

    INPUTS are files or folders. CT artifacts take sinograms (NPY/TIFF, n_angles × n_detectors). Image
    artifacts take any size: whole where the graph can, as blended tiles above its maximum side.
    """
    import numpy as np
    from tqdm import tqdm

    from recon.runtime.imageio import read_image, write_image
    from recon.runtime.inputs import as_float_images
    from recon.runtime.reconstructor import Reconstructor

    started = time.perf_counter()
    window = _window(dicom_window)
    if batch is not None and batch < 1:
        raise click.BadParameter(f"--batch must be >= 1, got {batch}")
    files = collect_inputs(inputs)
    outputs = plan_outputs(files, out, force)
    out.mkdir(parents=True, exist_ok=True)

    with Reconstructor.from_artifact(
        artifact, backend=backend, precision=precision, threads=threads, tile=tile, overlap=overlap
    ) as rec:
        per_run = batch or rec.manifest.batch.get("opt", 1)
        run_times: list[float] = []
        n_images = 0
        group: list[tuple[Any, Path]] = []

        def flush() -> None:
            nonlocal n_images
            if not group:
                return
            stacks = [as_float_images(img.data).reshape(-1, *img.data.shape[-2:]) for img, _ in group]
            results = rec.run(np.concatenate(stacks) if len(stacks) > 1 else stacks[0])
            run_times.append(rec.last_timings["total"])
            first = 0
            for (img, target), stack in zip(group, stacks, strict=True):
                part = results[first : first + len(stack)]
                first += len(stack)
                write_image(target, part[0] if img.data.ndim == 2 else part, img)
            n_images += first
            group.clear()

        with tqdm(total=len(files), unit="file", desc="recon-run", disable=None, leave=False) as bar:
            for path, target in zip(files, outputs, strict=True):
                image = read_image(path, dicom_window=window)
                if image.data.dtype.kind not in "fiu":  # a stack is concatenated with other files' pixels
                    raise ValueError(
                        f"{path}: pixels of type {image.data.dtype}; recon-run reconstructs integer or "
                        "floating-point images"
                    )
                shape = image.data.shape[-2:]
                for got, want in zip(shape, rec.input_hw, strict=True):
                    if rec.spatial is None and want is not None and got != want:
                        raise ValueError(
                            f"{path}: {rec.input_kind} of shape {tuple(shape)}, the artifact takes "
                            f"({rec.input_hw[0]}, {rec.input_hw[1]})"
                        )
                if group and group[0][0].data.shape[-2:] != shape:
                    flush()  # a batch holds one size
                group.append((image, target))
                if sum(len(g.data) if g.data.ndim == 3 else 1 for g, _ in group) >= per_run:
                    flush()
                bar.update(1)
            flush()
        wall = time.perf_counter() - started
        ms = np.asarray(run_times) * 1e3
        summary = {
            "artifact": str(artifact),
            "backend": rec.backend_name,
            "reason": rec.backend_reason,
            "precision": rec.precision,
            "files": len(files),
            "images": n_images,
            "runs": len(run_times),
            "run_ms": {
                "p50": float(np.percentile(ms, 50)),
                "p90": float(np.percentile(ms, 90)),
                "mean": float(ms.mean()),
                "max": float(ms.max()),
            },
            "per_image_ms": float(ms.sum() / max(n_images, 1)),
            "wall_s": wall,
            "out": str(out),
        }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"{n_images} image(s) from {len(files)} file(s) → {out}/  [{rec.backend_name}, "
            f"{rec.precision}; {rec.backend_reason}]"
        )
        click.echo(
            f"latency per run of ≤{per_run}: p50 {summary['run_ms']['p50']:.2f} ms, "
            f"p90 {summary['run_ms']['p90']:.2f} ms, max {summary['run_ms']['max']:.2f} ms; "
            f"{summary['per_image_ms']:.2f} ms per image; wall {wall:.2f} s"
        )
