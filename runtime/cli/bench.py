"""recon-bench: latency per backend × batch size, the runtime's overhead over bare onnxruntime, and
optionally the original PyTorch pipeline side by side."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from recon.runtime import limits
from recon.runtime.artifact.manifest import ArtifactError
from recon.runtime.backends.base import BackendError
from recon.runtime.cli.base import PRECISIONS, Command, int_list, parse_size
from recon.runtime.io.files import write_json_atomic

BENCH_EPILOG = """\b
Examples:
  recon-bench artifacts/resunet-deblur
  recon-bench artifacts/resunet-deblur --backend cpu,cuda,tensorrt --batch 1,8,32 --iters 200
  recon-bench artifacts/resunet-deblur --backend all --batch 1,8 --threads 2
  recon-bench artifacts/resunet-deblur --threads 1 --json-out bench.json --plot latency.png
  recon-bench artifacts/resunet-deblur --batch 1 --json | jq '.rows[0].p50_ms'
  recon-bench artifacts/resunet-deblur --batch 1,8 --threads 2 --compare-torch
  recon-bench artifacts/resunet-deblur --size 256,256 --size 512,512 --batch 1   # latency vs pixels
"""


def _profile_sizes(
    rec: Any, image_sizes: list[tuple[int, int]], batch_size: int, iters: int, warmup: int
) -> dict[tuple[int, int], Any]:
    """One LatencyReport per image size, timed in alternating blocks of up to 5 runs, so that load from
    other processes on a shared machine hits every size alike (the ratio is what --size is for)."""
    import numpy as np

    from recon.runtime.profiling import LatencyReport, profile

    batches = {
        hw: np.random.default_rng(0).random((batch_size, 1, *hw), dtype=np.float32) for hw in image_sizes
    }
    parts: dict[tuple[int, int], list[Any]] = {hw: [] for hw in image_sizes}
    done = 0
    while done < iters:
        block = min(5, iters - done)
        for hw, batch in batches.items():
            parts[hw].append(profile(rec, batch_size, block, warmup if done == 0 else 1, batch=batch))
        done += block
    merged = {}
    for hw, reports in parts.items():
        stages: dict[str, list[float]] = {}
        for report in reports:
            for stage, values in report.stages_s.items():
                stages.setdefault(stage, []).extend(values)
        latencies = [t for report in reports for t in report.latencies_s]
        merged[hw] = LatencyReport(reports[0].label, batch_size, latencies, stages, warmup, reports[0].meta)
    return merged


def _print_pixel_scaling(rows: list[dict[str, Any]]) -> None:
    """p50 latency of each --size against the first one, next to the pixel ratio (same backend, batch)."""
    first: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if "size" not in r or "p50_ms" not in r:
            continue
        key = (r["backend"], r["batch_size"])
        base = first.setdefault(key, r)
        if base is r:
            continue
        pixels = (r["size"][0] * r["size"][1]) / (base["size"][0] * base["size"][1])
        click.echo(
            f"latency vs pixels ({r['backend']}, batch {r['batch_size']}, p50): "
            f"{r['size'][0]}×{r['size'][1]} / {base['size'][0]}×{base['size'][1]} = "
            f"{r['p50_ms'] / base['p50_ms']:.2f}× for {pixels:.2f}× the pixels"
        )


def torch_reports(
    artifact: Path, batches: list[int], iters: int, warmup: int, threads: int | None
) -> tuple[list[Any], str]:
    """`--compare-torch`: eager PyTorch latency of the artifact's source pipeline, same threads and batch.

    The export side times it (`recon.export.reference.torch_reports`, registered as the "torch" entry point of
    "recon.bench_references"): the runtime never imports torch or recon.export, not even here.
    """
    from recon.runtime import plugins

    needs = "--compare-torch needs the training extra: `pip install recon[train]`"
    return plugins.load(plugins.BENCH_REFERENCES, "torch", needs)(artifact, batches, iters, warmup, threads)


def all_cells(manifest: Any) -> list[tuple[str, str]]:
    """`--backend all`: every installed backend × every precision it can run for this artifact."""
    import shutil

    from recon.runtime.backends.onnxruntime import available_providers
    from recon.runtime.backends.openvino import bf16_refusal_here, openvino_available

    files = [p for p in ("fp32", "fp16", "int8") if manifest.onnx_file(p) is not None]
    cpu = [p for p in files if p != "fp16"]  # FP16 graphs run at FP32 speed on CPUs (casts around FP32)
    providers = available_providers()
    cells = [("onnxruntime-cpu", p) for p in cpu] if "CPUExecutionProvider" in providers else []
    if openvino_available():
        bf16 = ["bf16"] if "fp32" in files and bf16_refusal_here() is None else []
        cells += [("openvino", p) for p in cpu[:1] + bf16 + cpu[1:]]
    if "CUDAExecutionProvider" in providers:
        cells += [("onnxruntime-cuda", p) for p in files]
    if manifest.plan_file() is not None and shutil.which("nvidia-smi"):
        cells.append(("tensorrt", manifest.files[manifest.plan_file()].precision or "auto"))
    return cells


def _row(report: Any, bare: Any | None) -> dict[str, Any]:
    row = report.summary()
    if bare is not None:
        row["bare_p50_ms"] = bare.p50_ms
        row["overhead_vs_bare"] = report.p50_ms / bare.p50_ms
    return row


def _cell(row: dict[str, Any]) -> str:
    """A row's name in the summaries, unique among the rows: backend, precision, size, batch (two cells
    of one backend at two precisions read alike without the precision)."""
    size = f" {row['size'][0]}×{row['size'][1]}" if "size" in row else ""
    return f"{row['backend']} {row.get('precision') or '-'}{size}, batch {row['batch_size']}"


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'backend':<30}{'prec':<6}{'batch':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}"
        f"{'std':>8}{'img/s':>10}{'bare p50':>10}{'overhead':>10}  stages (mean ms)"
    )
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        if "error" in r:
            click.echo(f"{r['backend']:<30}unavailable: {r['error']}")
            continue
        label = r["backend"] if "size" not in r else f"{r['backend']} {r['size'][0]}×{r['size'][1]}"
        bare = (
            f"{r['bare_p50_ms']:>10.2f}{(r['overhead_vs_bare'] - 1) * 100:>+9.1f}%"
            if "bare_p50_ms" in r
            else f"{'-':>10}{'-':>10}"
        )
        stages = " ".join(f"{k} {v:.2f}" for k, v in r["stages_ms"].items())
        click.echo(
            f"{label:<30}{r['precision'] or '-':<6}{r['batch_size']:>6}{r['p50_ms']:>10.2f}"
            f"{r['p90_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['mean_ms']:>10.2f}{r['std_ms']:>8.2f}"
            f"{r['throughput_img_s']:>10.1f}{bare}  {stages}"
        )


def check_bench_options(sizes: list[int], threads: int | None, iters: int, warmup: int) -> None:
    """Every numeric option against recon.runtime.limits or the machine, before an artifact is loaded
    (`--batch 100000` ended in "internal error MemoryError")."""
    try:
        for size in sizes:
            limits.check_batch(size)
        limits.check_threads(threads)
        limits.check_count("--iters", iters, limits.MAX_BENCH_ITERS, "recon.runtime.limits.MAX_BENCH_ITERS")
        limits.check_count("--warmup", warmup, limits.MAX_BENCH_ITERS, "limits.MAX_BENCH_ITERS", low=0)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command("bench", cls=Command, epilog=BENCH_EPILOG)
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--backend",
    "-b",
    "backends",
    default="auto",
    show_default=True,
    help="One backend or a comma list to compare side by side (auto, cpu, openvino, cuda, "
    "onnxruntime-tensorrt, tensorrt), or `all`: every installed backend at every precision it runs.",
)
@click.option("--batch", "batches", default="1,8", show_default=True, help="Batch sizes, comma-separated.")
@click.option(
    "--size",
    "image_sizes",
    multiple=True,
    callback=parse_size,
    metavar="H,W",
    help="Input image size (repeatable: sizes are timed side by side and compared per pixel); default: "
    "the artifact's own size (256 for a symbolic one). No bare-session column with --size.",
)
@click.option("--iters", type=int, default=50, show_default=True, help="Timed runs per cell.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first.")
@click.option(
    "--threads", type=int, default=None, help="onnxruntime intra-op threads (default: one per core)."
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Which of the artifact's files to time (auto: the backend's best).",
)
@click.option(
    "--bare/--no-bare",
    default=True,
    show_default=True,
    help="Also time the engine called directly (onnxruntime InferenceSession.run, OpenVINO "
    "InferRequest.infer) and print the runtime's overhead.",
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
    "as_json",
    is_flag=True,
    help="Print every cell's report (with each run's latency) as JSON on stdout; the table goes to stderr.",
)
@click.option(
    "--json-out",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write that JSON to this file (atomically).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a latency histogram PNG (needs matplotlib).",
)
@click.option(
    "--consistency/--no-consistency",
    default=True,
    show_default=True,
    help="Run the artifact's consistency check in every timed run and report its cost beside the rest.",
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
    image_sizes: list[tuple[int, int]],
    iters: int,
    warmup: int,
    threads: int | None,
    precision: str,
    bare: bool,
    bare_session: str,
    as_json: bool,
    json_path: Path | None,
    plot_path: Path | None,
    consistency: bool,
    compare_torch: bool,
) -> int:
    """Latency per backend × batch size, and the runtime's overhead over the engine called directly."""
    from recon.runtime.artifact.manifest import load_manifest
    from recon.runtime.profiling import cpu_description, save_histogram

    sizes = int_list(batches, "--batch")
    check_bench_options(sizes, threads, iters, warmup)
    if iters < 1 or warmup < 0:
        raise click.BadParameter("--iters must be >= 1 and --warmup >= 0")
    manifest = load_manifest(artifact)  # a damaged artifact stops here; a backend that cannot run gets a row
    cells = _cells(manifest, backends, precision)
    timing = Timing(sizes, image_sizes, iters, warmup, threads, bare, bare_session == "new", consistency)
    rows, reports, failed = _time_cells(artifact, cells, timing)
    torch_note = None
    if compare_torch:
        torch_list, torch_note = torch_reports(artifact, sizes, iters, warmup, threads)
        reports += torch_list
        rows += [{**_row(report, None), "reason": torch_note} for report in torch_list]
    # --json: stdout holds the JSON alone, the human summary goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        _print_summary(rows, consistency, torch_note)
    result = {
        "artifact": str(artifact),
        "cpu": cpu_description(),
        "rows": rows,
        "reports": [r.to_json() for r in reports],
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
    if json_path is not None:
        write_json_atomic(json_path, result)
    if plot_path is not None and reports:
        save_histogram([r for r in reports if not r.label.startswith("bare")] or reports, plot_path)
    return 1 if failed else 0


def _print_summary(rows: list[dict[str, Any]], consistency: bool, torch_note: str | None) -> None:
    from recon.runtime.profiling import cpu_description

    click.echo(f"CPU: {cpu_description()}")  # CPU engines rank differently with these flags
    _print_table(rows)
    _print_pixel_scaling(rows)
    _print_comparisons(rows, torch_note, consistency)


@dataclass(frozen=True)
class Timing:
    """How each cell is timed (the command's options)."""

    batches: list[int]
    image_sizes: list[tuple[int, int]]
    iters: int
    warmup: int
    threads: int | None
    bare: bool
    new_bare_session: bool
    consistency: bool


def _cells(manifest: Any, backends: str, precision: str) -> list[tuple[str, str]]:
    """(backend, precision) pairs to time: `all`, or the names given (unknown names fail before timing)."""
    from recon.runtime.backends import resolve_name

    names = [part.strip() for part in backends.split(",") if part.strip()]
    if names == ["all"]:
        return [c for c in all_cells(manifest) if precision in ("auto", c[1])]
    for name in names:
        resolve_name(name)
    return [(name, precision) for name in names]


def _time_cells(
    artifact: Path, cells: list[tuple[str, str]], timing: Timing
) -> tuple[list[dict[str, Any]], list[Any], bool]:
    """(table rows, reports, whether a backend could not run) for every cell; a failing cell is a row."""
    from recon.runtime.profiling import profile, profile_against_bare
    from recon.runtime.reconstructor import Reconstructor

    rows: list[dict[str, Any]] = []
    reports = []
    failed = False
    t = timing
    for name, cell in cells:
        try:
            rec = Reconstructor.from_artifact(
                artifact, backend=name, precision=cell, threads=t.threads, consistency=t.consistency
            )
        except (BackendError, ArtifactError) as error:
            rows.append({"backend": name, "error": str(error)})
            failed = True
            continue
        with rec:
            for size in t.batches if t.image_sizes else []:  # --size: sizes side by side, then per pixel
                for (height, width), report in _profile_sizes(
                    rec, t.image_sizes, size, t.iters, t.warmup
                ).items():
                    reports.append(report)
                    rows.append({**_row(report, None), "size": [height, width], "reason": rec.backend_reason})
            for size in t.batches if not t.image_sizes else []:
                if t.bare and (rec.backend_name.startswith("onnxruntime") or rec.backend_name == "openvino"):
                    report, bare_report = profile_against_bare(
                        rec, size, t.iters, t.warmup, new_session=t.new_bare_session
                    )
                    reports += [report, bare_report]
                else:
                    report, bare_report = profile(rec, size, t.iters, t.warmup), None
                    reports.append(report)
                rows.append({**_row(report, bare_report), "reason": rec.backend_reason})
    return rows, reports, failed


def _print_comparisons(rows: list[dict[str, Any]], torch_note: str | None, consistency: bool) -> None:
    """The lines under the table: speed-up over torch, overhead over the bare engine, own cost, the check."""
    if torch_note is not None:
        eager = {r["batch_size"]: r["p50_ms"] for r in rows if r.get("backend") == "torch-eager"}
        click.echo(
            f"speed-up over torch eager ({torch_note}; p50): "
            + ", ".join(
                f"{eager[r['batch_size']] / r['p50_ms']:.2f}x ({_cell(r)})"
                for r in rows
                if "p50_ms" in r and r.get("backend") != "torch-eager" and r["batch_size"] in eager
            )
        )
    overheads = [r for r in rows if "overhead_vs_bare" in r]
    if overheads:
        click.echo(
            "runtime overhead over the engine called directly (onnxruntime InferenceSession.run, "
            "OpenVINO InferRequest.infer; p50): "
            + ", ".join(f"{(r['overhead_vs_bare'] - 1) * 100:+.1f}% ({_cell(r)})" for r in overheads)
        )
    owns = [r for r in rows if r.get("own_ms")]
    if owns:
        click.echo(
            "runtime's own cost per run (validate, convert, split, clip; mean): "
            + ", ".join(
                f"{r['own_ms']:.3f} ms = {r['own_ms'] / (r['mean_ms'] - r['own_ms']) * 100:.2f}% of backend "
                f"({_cell(r)})"
                for r in owns
            )
        )
    guarded = [r for r in rows if r.get("consistency_ms")]
    if guarded:  # measured in the same runs as the rest: load from elsewhere hits both alike
        click.echo(
            "consistency check (with vs without, same runs; mean): "
            + ", ".join(
                f"{r['mean_ms']:.2f} vs {r['mean_ms'] - r['consistency_ms']:.2f} ms = "
                f"+{r['consistency_ms'] / (r['mean_ms'] - r['consistency_ms']) * 100:.1f}% "
                f"({_cell(r)})"
                for r in guarded
            )
        )
    elif consistency:
        click.echo("consistency check: this artifact has none (exported before it existed); re-export it")
