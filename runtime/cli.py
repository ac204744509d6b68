"""recon-run, recon-bench and `recon {run,bench,inspect}`.

User mistakes print one line, `error: …`, and exit non-zero (RECON_DEBUG=1 shows the traceback).
Heavy modules load inside the commands so `--help` and a one-image run start fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from recon.runtime.backends.base import BackendError
from recon.runtime.imageio import ImageIOError
from recon.runtime.manifest import ArtifactError

PRECISIONS = ["auto", "fp32", "fp16", "int8"]


def _fail(message: str, code: int = 1) -> None:
    # one line even when the message quotes a damaged file's text (a stray CR/LF in a DICOM tag)
    click.echo("error: " + " ".join(str(message).splitlines()), err=True)
    sys.exit(code)


class _OneLineErrors:
    """click's `main`, with user errors reduced to one line and no traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)  # type: ignore[misc]
        except click.UsageError as error:
            hint = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
            _fail(error.format_message() + hint, 2)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (ArtifactError, BackendError, ImageIOError, ValueError, OSError, RuntimeError) as error:
            if os.environ.get("RECON_DEBUG"):
                raise
            _fail(str(error) or type(error).__name__)
        sys.exit(result if isinstance(result, int) else 0)


class Command(_OneLineErrors, click.Command):
    pass


class Group(_OneLineErrors, click.Group):
    pass


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"--dicom-window takes LOW,HIGH (two numbers), got {text!r}") from None
    return low, high


# -- recon-run -----------------------------------------------------------------------------------------------
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
    dicom_window: str | None,
    as_json: bool,
) -> None:
    """Reconstruct image files (PNG, TIFF, NPY, DICOM) with an exported artifact.

    INPUTS are files or folders. CT artifacts take sinograms (NPY/TIFF, n_angles × n_detectors).
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

    with Reconstructor.from_artifact(artifact, backend=backend, precision=precision, threads=threads) as rec:
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
                    if want is not None and got != want:
                        raise ValueError(
                            f"{path}: {rec._what} of shape {tuple(shape)}, the artifact takes "
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


# -- recon-bench ---------------------------------------------------------------------------------------------
BENCH_EPILOG = """\b
Examples:
  recon-bench artifacts/resunet-deblur
  recon-bench artifacts/resunet-deblur --backend cpu,cuda,tensorrt --batch 1,8,32 --iters 200
  recon-bench artifacts/resunet-deblur --threads 1 --json bench.json --plot latency.png
  recon-bench artifacts/resunet-deblur --batch 1,8 --threads 2 --compare-torch
"""


def torch_reports(
    artifact: Path, batches: list[int], iters: int, warmup: int, threads: int | None
) -> tuple[list[Any], str]:
    """`--compare-torch`: eager PyTorch latency of the artifact's source pipeline, same threads and batch.

    It needs the training extra; imported here, never at module level (the runtime stays torch-free).
    """
    try:
        import torch

        from recon.export.reference import torch_pipeline
    except ImportError:
        raise click.ClickException(
            "--compare-torch needs the training extra: `pip install recon[train]`"
        ) from None
    from recon.runtime.manifest import load_manifest
    from recon.runtime.profiling import LatencyReport

    manifest = load_manifest(artifact)
    pipeline, note = torch_pipeline(manifest)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    _, _, height, width = manifest.input["shape"]
    reports = []
    for size in batches:
        batch = torch.rand(size, 1, int(height), int(width), generator=torch.Generator().manual_seed(0))
        latencies = []
        with torch.inference_mode():
            for step in range(warmup + iters):
                start = time.perf_counter()
                pipeline(batch)
                if step >= warmup:
                    latencies.append(time.perf_counter() - start)
        meta = {"backend": "torch-eager", "precision": "fp32", "threads": torch.get_num_threads()}
        reports.append(LatencyReport("torch-eager", size, latencies, {}, warmup, meta))
    return reports, note


def _row(report: Any, bare: Any | None) -> dict[str, Any]:
    row = report.summary()
    if bare is not None:
        row["bare_p50_ms"] = bare.p50_ms
        row["overhead_vs_bare"] = report.p50_ms / bare.p50_ms
    return row


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'backend':<22}{'prec':<6}{'batch':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}"
        f"{'std':>8}{'img/s':>10}{'bare p50':>10}{'overhead':>10}  stages (mean ms)"
    )
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        if "error" in r:
            click.echo(f"{r['backend']:<22}unavailable: {r['error']}")
            continue
        bare = (
            f"{r['bare_p50_ms']:>10.2f}{(r['overhead_vs_bare'] - 1) * 100:>+9.1f}%"
            if "bare_p50_ms" in r
            else f"{'-':>10}{'-':>10}"
        )
        stages = " ".join(f"{k} {v:.2f}" for k, v in r["stages_ms"].items())
        click.echo(
            f"{r['backend']:<22}{r['precision'] or '-':<6}{r['batch_size']:>6}{r['p50_ms']:>10.2f}"
            f"{r['p90_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['mean_ms']:>10.2f}{r['std_ms']:>8.2f}"
            f"{r['throughput_img_s']:>10.1f}{bare}  {stages}"
        )


@click.command("bench", cls=Command, epilog=BENCH_EPILOG)
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--backend",
    "-b",
    "backends",
    default="auto",
    show_default=True,
    help="One backend or a comma list to compare side by side (auto, cpu, cuda, "
    "onnxruntime-tensorrt, tensorrt).",
)
@click.option("--batch", "batches", default="1,8", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--iters", type=int, default=50, show_default=True, help="Timed runs per cell.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first.")
@click.option(
    "--threads", type=int, default=None, help="onnxruntime intra-op threads (default: one per core)."
)
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option(
    "--bare/--no-bare",
    default=True,
    show_default=True,
    help="Also time a bare onnxruntime InferenceSession.run (ONNX Runtime backends) and print "
    "the runtime's overhead.",
)
@click.option(
    "--bare-session",
    type=click.Choice(["same", "new"]),
    default="same",
    show_default=True,
    help="same: call the Reconstructor's own InferenceSession directly (isolates the runtime's cost); "
    "new: a second session built with the same options.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every cell's report (with each run's latency) to this JSON file.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a latency histogram PNG (needs matplotlib).",
)
@click.option(
    "--compare-torch",
    is_flag=True,
    help="Also time the original PyTorch pipeline (eager, same threads and batch) and print the speed-up "
    "(needs the training extra).",
)
def bench_command(
    artifact: Path,
    backends: str,
    batches: str,
    iters: int,
    warmup: int,
    threads: int | None,
    precision: str,
    bare: bool,
    bare_session: str,
    json_path: Path | None,
    plot_path: Path | None,
    compare_torch: bool,
) -> int:
    """Latency per backend × batch size, and the runtime's overhead over bare onnxruntime."""
    from recon.runtime.backends import resolve_name
    from recon.runtime.manifest import load_manifest
    from recon.runtime.profiling import profile, profile_against_bare, save_histogram
    from recon.runtime.reconstructor import Reconstructor

    sizes = _int_list(batches, "--batch")
    if iters < 1 or warmup < 0:
        raise click.BadParameter("--iters must be >= 1 and --warmup >= 0")
    names = [part.strip() for part in backends.split(",") if part.strip()]
    for name in names:
        resolve_name(name)  # unknown names fail before any timing
    load_manifest(artifact)  # a damaged artifact stops here; a backend that cannot run here gets a row
    rows: list[dict[str, Any]] = []
    reports = []
    failed = False
    for name in names:
        try:
            rec = Reconstructor.from_artifact(artifact, backend=name, precision=precision, threads=threads)
        except (BackendError, ArtifactError) as error:
            rows.append({"backend": name, "error": str(error)})
            failed = True
            continue
        with rec:
            for size in sizes:
                if bare and rec.backend_name.startswith("onnxruntime"):
                    report, bare_report = profile_against_bare(
                        rec, size, iters, warmup, new_session=bare_session == "new"
                    )
                    reports += [report, bare_report]
                else:
                    report, bare_report = profile(rec, size, iters, warmup), None
                    reports.append(report)
                rows.append({**_row(report, bare_report), "reason": rec.backend_reason})
    torch_note = None
    if compare_torch:
        torch_list, torch_note = torch_reports(artifact, sizes, iters, warmup, threads)
        reports += torch_list
        rows += [{**_row(report, None), "reason": torch_note} for report in torch_list]
    _print_table(rows)
    if torch_note is not None:
        eager = {r["batch_size"]: r["p50_ms"] for r in rows if r.get("backend") == "torch-eager"}
        click.echo(
            f"speed-up over torch eager ({torch_note}; p50): "
            + ", ".join(
                f"{eager[r['batch_size']] / r['p50_ms']:.2f}x ({r['backend']}, batch {r['batch_size']})"
                for r in rows
                if "p50_ms" in r and r.get("backend") != "torch-eager" and r["batch_size"] in eager
            )
        )
    overheads = [r for r in rows if "overhead_vs_bare" in r]
    if overheads:
        click.echo(
            "runtime overhead over bare onnxruntime.InferenceSession.run (p50): "
            + ", ".join(
                f"{(r['overhead_vs_bare'] - 1) * 100:+.1f}% ({r['backend']}, batch {r['batch_size']})"
                for r in overheads
            )
        )
    owns = [r for r in rows if r.get("own_ms")]
    if owns:
        click.echo(
            "runtime's own cost per run (validate, convert, split, clip; mean): "
            + ", ".join(
                f"{r['own_ms']:.3f} ms = {r['own_ms'] / (r['mean_ms'] - r['own_ms']) * 100:.2f}% of backend "
                f"({r['backend']}, batch {r['batch_size']})"
                for r in owns
            )
        )
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {"artifact": str(artifact), "rows": rows, "reports": [r.to_json() for r in reports]}, indent=2
            )
            + "\n"
        )
    if plot_path is not None and reports:
        save_histogram([r for r in reports if not r.label.startswith("bare")] or reports, plot_path)
    return 1 if failed else 0


# -- recon inspect -------------------------------------------------------------------------------------------
@click.command(
    "inspect",
    cls=Command,
    epilog="\b\nExamples:\n  recon inspect artifacts/resunet-deblur\n"
    "  recon inspect artifacts/resunet-deblur --json",
)
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check every file's sha256.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and the check as JSON.")
def inspect_command(artifact: Path, verify: bool, as_json: bool) -> None:
    """Summarise an artifact's manifest and check its files."""
    from recon.runtime.manifest import load_manifest

    manifest = load_manifest(artifact, verify=verify)
    if as_json:
        click.echo(
            json.dumps(
                {"artifact": str(artifact), "verified": verify, "manifest": manifest.to_json()}, indent=2
            )
        )
        return
    m = manifest
    click.echo(
        f"{m.name}  (task {m.task}, model {m.model.get('name')}, format v{m.format_version}, "
        f"recon {m.recon_version})"
    )
    for side in ("input", "output"):
        spec = getattr(m, side)
        click.echo(
            f"  {side:<7} {spec['name']}: {spec['shape']} {spec.get('dtype', 'float32')}"
            f"  range {spec.get('value_range')}" + ("  clipped" if spec.get("clip") else "")
        )
    click.echo(f"  batch   min {m.batch.get('min')}, opt {m.batch.get('opt')}, max {m.batch.get('max')}")
    for name, entry in m.files.items():
        trt = entry.tensorrt or {}
        extra = (
            f"  TensorRT {trt.get('version')} sm {trt.get('compute_capability')}"
            + (" version-compatible" if trt.get("version_compatible") else "")
            if trt
            else ""
        )
        click.echo(
            f"  {name:<18} {entry.kind:<9} {entry.precision or '':<5} {entry.size:>12,d} B  "
            f"sha256 {entry.sha256[:12]}…{extra}"
        )
    if m.parity is not None:
        click.echo(f"  parity  {'passed' if m.parity.get('passed') else 'FAILED'}")
    click.echo("  files verified (sha256)" if verify else "  files not verified (--no-verify)")


@click.group(
    "recon",
    cls=Group,
    epilog="\b\nExamples:\n  recon inspect artifacts/resunet-deblur\n"
    "  recon run artifacts/resunet-deblur blurred/ --out restored/\n"
    "  recon bench artifacts/resunet-deblur --batch 1,8",
)
def main() -> None:
    """recon's runtime: run, benchmark and inspect exported artifacts."""


main.add_command(run_command)
main.add_command(bench_command)
main.add_command(inspect_command)

run_main = run_command
bench_main = bench_command
