"""`recon-export`: a trained network → an artifact directory (ONNX, FP16 ONNX, INT8 ONNX, TensorRT plan)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from recon.runtime.cli.base import Command
from recon.training.task_options import task_options, task_overrides

EXAMPLES = """
\b
Examples:
  recon-export --model resunet --fp16                # deblur, shipped weights → artifacts/resunet-deblur
  recon-export --model resunet --task ct --fp16 --out art/ct   # sinogram in, image out (FBP in the graph)
  recon-export --model cnn --weights runs/cnn-deblur.safetensors --int8
  recon-export --model resunet --int8 --bf16 --add   # into artifacts/resunet-deblur, keeping its FP16
  recon-export --model unet --random-init --size 64 --batch 1:4:8 --engine none --json
  recon-export --model resunet --spatial 64:512:4096 --out art/resunet   # whole images up to 4096²
  recon-export --model resunet --fp16 --engine trt --lean --batch 1:8:32 --triton-repo models/
  recon-export --model cnn --task ct --triton-repo models/ --triton-flavour python --triton-instances 2
  recon-export --network monai.networks.nets:BasicUNet --network-arg spatial_dims=2 \
      --network-arg in_channels=1 --network-arg out_channels=1 --weights ckpt.pt --task ct --fp16 --int8
  recon-export --onnx denoiser.onnx --task ct --views 60 --fp16   # a graph exported elsewhere, FBP in front
\b
The artifact is written atomically: a temp folder beside --out, renamed into place when every check passed.
Parity (torch vs onnxruntime at batch 1, 3 and OPT; TensorRT too when built) must pass, or nothing is written.
"""


def _parse_batch(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        parts = tuple(int(p) for p in value.split(":"))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        example = "64:512:2048" if param.name == "spatial" else "1:8:32"
        raise click.BadParameter(f"expected MIN:OPT:MAX (three integers, e.g. {example}), got {value!r}")
    return parts  # type: ignore[return-value]


class _Steps:
    """Progress for the long steps: a tqdm line on a terminal, plain lines on stderr otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=None, bar_format="recon-export: {desc} [{elapsed}]", file=sys.stderr, leave=False
            )

    def __call__(self, step: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(step)
            self.bar.update(1)
        else:
            done = step.startswith("loaded ")  # a report, not a step under way
            click.echo(f"recon-export: {step}{'' if done else '…'}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command(
    name="recon-export",
    cls=Command,
    epilog=EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.option("--model", default="resunet", show_default=True, help="Registered model name (see recon-info).")
@click.option(
    "--network",
    metavar="PACKAGE.MODULE:FACTORY",
    help="Your own network instead of --model: FACTORY(**network args) returns a torch.nn.Module mapping "
    "(B, 1, H, W) to (B, 1, H, W); its sizes, receptive field and batch independence are probed "
    "(docs/your-own-network.md).",
)
@click.option(
    "--onnx",
    "onnx_file",
    type=click.Path(path_type=Path),
    metavar="FILE.onnx",
    help="An already exported image-to-image ONNX graph (dynamic batch) instead of --model/--network; for "
    "CT the FBP is composed in front of it. Parity is checked against onnxruntime on the file itself.",
)
@click.option(
    "--network-arg",
    "network_arg",
    multiple=True,
    metavar="KEY=VALUE",
    help='An argument of FACTORY (repeatable; VALUE parses as JSON: 2, [16, 32], true, "batch").',
)
@click.option(
    "--task",
    type=click.Choice(["deblur", "ct"]),
    default="deblur",
    show_default=True,
    help="deblur: image in, image out; ct: sinogram in, image out (FBP inside the graph).",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="Trained weights (.safetensors or .json card, or a folder holding MODEL-TASK.*); default: the "
    "shipped weights. With --network: a state dict (torch.load weights_only), a Lightning checkpoint or "
    ".safetensors.",
)
@click.option("--random-init", is_flag=True, help="Export an untrained (randomly initialised) network.")
@click.option("--preset", help="Model preset, with --random-init (e.g. small, paper).")
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), help="Artifact directory [artifacts/MODEL-TASK]."
)
@click.option("--force", is_flag=True, help="Replace an existing artifact (atomically).")
@click.option(
    "--version-of",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model folder (models/NAME): write its next numbered version, NAME/1, 2, ... (instead of --out).",
)
@click.option(
    "--golden-images",
    type=click.IntRange(0, 64),
    default=4,
    show_default=True,
    help="Held-out inputs stored with their outputs and tolerances for `recon verify` (0: none).",
)
@click.option(
    "--add",
    is_flag=True,
    help="Add the asked variants (--fp16, --int8, --bf16) to the existing artifact at --out, keeping what "
    "it holds: re-made from the same weights, every file re-verified, replaced atomically.",
)
@click.option(
    "--fp16", is_flag=True, help="Also write model.fp16.onnx (FP32 islands, FP32 I/O); engines are FP16."
)
@click.option(
    "--keep-fp32",
    "keep_fp32",
    multiple=True,
    metavar="NODE",
    help="Keep this node of model.onnx in FP32 in the FP16 file (repeatable; a failed FP16 parity names it).",
)
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (static QDQ, CPU) and time it.")
@click.option(
    "--bf16",
    is_flag=True,
    help="Measure the held-out PSNR loss of running model.onnx in bf16 (OpenVINO, CPUs with AVX512_BF16 or "
    "AMX) into the report.",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "trt", "none"]),
    default="auto",
    show_default=True,
    help="TensorRT engine: auto builds where TensorRT and a GPU exist; trt requires it.",
)
@click.option(
    "--batch",
    default="1:8:32",
    show_default=True,
    callback=_parse_batch,
    help="Dynamic batch profile MIN:OPT:MAX.",
)
@click.option(
    "--spatial",
    callback=_parse_batch,
    help="Image sides MIN:OPT:MAX a fully convolutional deblur graph takes whole (symbolic H, W; the "
    "TensorRT profile); larger images are tiled by the runtime. [64:512:2048; MIN lowered to a smaller "
    "--image-size]",
)
@task_options
@click.option(
    "--allow-geometry-change",
    is_flag=True,
    help="Deploy trained weights at another geometry (CT views/detectors/size, blur kernel); both are "
    "recorded and the quality at the new one is measured.",
)
@click.option(
    "--geometry-heldout",
    type=click.IntRange(2, 32),
    default=8,
    show_default=True,
    help="Held-out images for the quality report at a changed geometry.",
)
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (≤ 19 with GridSample).")
@click.option("--workspace-mb", type=int, default=4096, show_default=True, help="TensorRT workspace limit.")
@click.option(
    "--opt-level",
    type=click.IntRange(0, 5),
    default=3,
    show_default=True,
    help="TensorRT builder optimization level.",
)
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    help="TensorRT timing cache file [$XDG_CACHE_HOME/recon/tensorrt-timing.cache; ~/.cache when unset].",
)
@click.option(
    "--lean", is_flag=True, help="Version-compatible engine for the lean runtime (lean runtime excluded)."
)
@click.option(
    "--triton-repo", type=click.Path(path_type=Path), help="Also write a Triton model repository here."
)
@click.option(
    "--triton-flavour",
    type=click.Choice(["native", "python", "both"]),
    default="both",
    show_default=True,
    help="native: onnxruntime/TensorRT models (NGC container); python: recon.runtime in Triton's python "
    "backend (docs/triton.md).",
)
@click.option(
    "--triton-instances",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Triton instances per model (instance_group count).",
)
@click.option(
    "--triton-max-queue-delay-us",
    type=click.IntRange(0, 10_000_000),
    default=100,
    show_default=True,
    help="Dynamic batching: how long a request may wait for others.",
)
@click.option(
    "--triton-threads",
    type=click.IntRange(1, 256),
    help="Python flavour: onnxruntime threads per instance [onnxruntime's default].",
)
@click.option("--allow-mismatch", is_flag=True, help="Write the artifact even when parity fails (recorded).")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="FP32 parity: max abs difference.")
@click.option(
    "--fp16-min-psnr", type=float, default=50.0, show_default=True, help="FP16 parity: PSNR vs torch (dB)."
)
@click.option(
    "--int8-min-psnr", type=float, default=35.0, show_default=True, help="INT8 parity: PSNR vs torch (dB)."
)
@click.option(
    "--trt-atol", type=float, default=5e-2, show_default=True, help="TensorRT parity: max abs difference."
)
@click.option(
    "--threads", type=click.IntRange(1, 256), help="onnxruntime intra-op threads for parity and timing."
)
@click.option(
    "--calibration-images",
    type=click.IntRange(1, 4096),
    default=32,
    show_default=True,
    help="INT8: simulated training-distribution measurements to calibrate on.",
)
@click.option(
    "--consistency-images",
    type=click.IntRange(0, 100_000),
    default=500,
    show_default=True,
    help="In-distribution inputs that calibrate the consistency check (consistency.onnx); 0: no check.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the simulated test/calibration data."
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def cli(**kw: Any) -> None:
    """Export a reconstruction network to an artifact: ONNX (+ FP16, INT8, TensorRT), checked for parity."""
    from recon.export.exporter import ExportOptions, export_artifact
    from recon.export.parity import DEFAULT_TOLERANCES, Tolerance

    tolerances = dict(DEFAULT_TOLERANCES)
    tolerances["onnxruntime-fp32"] = Tolerance(atol=kw["atol"])
    tolerances["onnxruntime-fp16"] = Tolerance(min_psnr=kw["fp16_min_psnr"])
    tolerances["onnxruntime-int8"] = Tolerance(min_psnr=kw["int8_min_psnr"])
    tolerances["tensorrt"] = Tolerance(atol=kw["trt_atol"], min_psnr=DEFAULT_TOLERANCES["tensorrt"].min_psnr)
    from recon.training.info import parse_overrides

    context = click.get_current_context()
    model_given = context.get_parameter_source("model") != click.core.ParameterSource.DEFAULT
    given = [name for name, on in (("--model", model_given), ("--network", kw["network"] is not None),
             ("--onnx", kw["onnx_file"] is not None)) if on]  # fmt: skip
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} exclude each other")
    kw["onnx"] = kw["onnx_file"]
    if kw["network_arg"] and kw["network"] is None:
        raise click.UsageError("--network-arg needs --network PACKAGE.MODULE:FACTORY")
    kw["network_args"] = parse_overrides(kw["network_arg"], "--network-arg")
    overrides = task_overrides(kw["task"], kw)  # the trained task is known only once the weights are read
    passed_through = ("model", "task", "out", "weights", "random_init", "preset", "fp16", "int8", "bf16",
                      "engine", "batch", "spatial", "opset", "workspace_mb", "opt_level", "timing_cache",
                      "lean", "triton_repo", "force", "add", "allow_mismatch", "threads",
                      "calibration_images", "consistency_images", "seed", "allow_geometry_change",
                      "geometry_heldout", "golden_images", "version_of", "network", "network_args",
                      "onnx", "keep_fp32")  # fmt: skip
    context = click.get_current_context()
    triton_given = [f"--{key.replace('_', '-')}" for key in ("triton_flavour", "triton_instances",
                    "triton_max_queue_delay_us", "triton_threads")
                    if context.get_parameter_source(key) != click.core.ParameterSource.DEFAULT]  # fmt: skip
    if triton_given and kw["triton_repo"] is None:
        raise click.UsageError(f"{', '.join(triton_given)} need(s) --triton-repo DIR")
    triton = {
        "flavour": kw["triton_flavour"],
        "instances": kw["triton_instances"],
        "max_queue_delay_us": kw["triton_max_queue_delay_us"],
        "python_threads": kw["triton_threads"],
    }
    options = ExportOptions(
        **{key: kw[key] for key in passed_through},
        task_overrides=overrides,
        tolerances=tolerances,
        triton=triton,
        show_progress=not kw["quiet"],
    )
    steps = _Steps(enabled=not kw["quiet"])
    try:
        summary = export_artifact(options, progress=steps)
    finally:
        steps.close()
    if kw["as_json"]:
        click.echo(json.dumps(summary, indent=2))
        return
    if summary.get("weights_path"):
        click.echo(f"weights {summary['weights_path']} (sha256 {summary['weights_sha256']})")
    click.echo(
        f"wrote {summary['artifact']}  ({summary['task']}, input {summary['input_shape']} → "
        f"output {summary['output_shape']}, batch {summary['batch']})"
    )
    spatial = summary.get("spatial")
    if spatial:
        taken = (
            f"whole {spatial['min']}..{spatial['max']} px per side, tiled above"
            if spatial["whole_image"]
            else f"tiled only, tiles of {spatial['tile']}²"
        )
        click.echo(f"  sizes: {taken} (tile {spatial['tile']}, overlap {spatial['overlap']} px)")
    if "network" in summary:
        probe, config = summary["network"]["probe"], summary["network"]["config"]
        field, fixed = probe["receptive_field"], probe["fixed_size"]
        click.echo(
            f"  network: {config.get('factory') or config.get('class') or config.get('file')}; measured: "
            f"{'any size' if probe['fully_convolutional'] else f'only {fixed}²'}, padded to "
            f"multiples of {config.get('pad_multiple', 1)} in the graph, receptive field "
            f"{'global' if field is None else f'{field} px'}, batch independent"
        )
    for name, entry in summary["files"].items():
        click.echo(f"  {name:18} {entry['size'] / 1e6:8.2f} MB  {entry.get('precision', entry['kind'])}")
    for key, value in summary["parity"].items():
        if isinstance(value, dict):
            status = "ok" if value["passed"] else "FAILED"
            click.echo(
                f"  parity {key:28} max abs {value['max_abs']:.2e}  PSNR {value['psnr']:7.2f} dB  {status}"
            )
    if summary.get("consistency"):
        entry = summary["consistency"]
        click.echo(
            f"  consistency check calibrated on {entry['calibration']['n']} inputs: residual threshold "
            f"{entry['threshold']:.4g} ({len(entry['statistics'])} statistics)"
        )
    if summary.get("golden"):
        measured = ", ".join(summary["golden"])
        click.echo(f"  golden outputs for recon verify, tolerances measured for {measured}")
    if summary.get("version") is not None:
        click.echo(f"  version {summary['version']}: run `recon verify {summary['artifact']}` on the site")
    if "int8_cpu_speedup" in summary["parity"]:
        click.echo(f"  INT8 speed-up on the CPU: {summary['parity']['int8_cpu_speedup']:.2f}×")
    if "bf16_heldout_loss_db" in summary["parity"]:
        loss = summary["parity"]["bf16_heldout_loss_db"]
        click.echo(f"  bf16 (OpenVINO) held-out PSNR loss: {loss:.3f} dB")
    if "geometry" in summary:
        g = summary["geometry"]
        click.echo(
            f"  deployed at another geometry than trained ({g['changed']}): held-out ({g['heldout']['n']} "
            f"images) PSNR {g['heldout']['model']['psnr']:.2f} dB vs {g['baseline_name']} "
            f"{g['heldout']['baseline']['psnr']:.2f} dB"
        )
    for note in summary["notes"]:
        click.echo(f"  note: {note}")
    for folder in summary.get("triton_models", []):
        click.echo(f"  triton model {folder}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes print one `error: …` line and exit non-zero (recon's one CLI error style,
    `recon.runtime.cli.base`); an interrupted export leaves nothing behind."""
    cli.main(args=argv, prog_name="recon-export")


if __name__ == "__main__":
    main()
