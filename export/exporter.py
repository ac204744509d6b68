"""The export, step by step: weights → torch pipeline → ONNX → FP16 / INT8 → parity → engine → artifact.

Each step is a small function of the previous one's output (Polygraphy's composable loaders, MONAI's
export-and-verify in one call). Everything is written into a temp folder beside the target and renamed into
place only when every check passed (`ArtifactWriter`); a failure or a crash at any step leaves no artifact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recon.export.artifact import ArtifactWriter, checkpoint
from recon.export.errors import ExportError
from recon.export.parity import DEFAULT_TOLERANCES, Tolerance
from recon.runtime.limits import MAX_IMAGE_SIDE

if TYPE_CHECKING:
    import torch

    from recon.runtime.manifest import Manifest

INPUT_NAME, OUTPUT_NAME = "measurement", "image"
ENGINE_CHOICES = ("auto", "trt", "none")
DEFAULT_SPATIAL = (64, 512, 2048)  # sides taken whole: the TensorRT profile 64², 512², 2048²


@dataclass
class ExportOptions:
    model: str = "resunet"
    task: str = "deblur"
    out: Path | None = None  # default: ./artifacts/<model>-<task>
    weights: Path | None = None  # a user's .safetensors/.json (with its card) or a folder
    random_init: bool = False  # export an untrained network (no weights needed)
    preset: str | None = None  # model preset, with --random-init
    task_overrides: dict[str, Any] = field(default_factory=dict)  # image_size, n_angles, ...
    fp16: bool = False
    int8: bool = False
    engine: str = "auto"
    batch: tuple[int, int, int] = (1, 8, 32)
    spatial: tuple[int, int, int] | None = None  # image side min:opt:max; None: DEFAULT_SPATIAL, see below
    opset: int = 18
    workspace_mb: int = 4096
    opt_level: int = 3
    timing_cache: Path | None = None  # None: ~/.cache/recon/tensorrt-timing.cache
    lean: bool = False
    triton_repo: Path | None = None
    force: bool = False
    allow_mismatch: bool = False
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    threads: int | None = None  # onnxruntime intra-op threads for parity and timing
    calibration_images: int = 32
    seed: int = 0

    def target(self) -> Path:
        return Path(self.out) if self.out is not None else Path("artifacts") / f"{self.model}-{self.task}"


Progress = Callable[[str], None]


# -- step 1: the torch graph --------------------------------------------------------------------------------
def load_network(options: ExportOptions) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """(network in eval mode, task config, provenance) from --weights, shipped weights or --random-init."""
    from recon.training.models import create_model, list_models
    from recon.training.tasks import TASK_DEFAULTS, task_config
    from recon.training.weights import WeightsError, load_trained

    if options.model not in list_models():
        raise ExportError(f"unknown model {options.model!r}; available: {', '.join(list_models())}")
    if options.task not in TASK_DEFAULTS:
        raise ExportError(f"unknown task {options.task!r}; available: {', '.join(sorted(TASK_DEFAULTS))}")
    overrides = {k: v for k, v in options.task_overrides.items() if v is not None}
    card: dict[str, Any] = {}
    if options.random_init:
        if options.weights is not None:
            raise ExportError("--random-init and --weights exclude each other")
        try:
            network = create_model(options.model, preset=options.preset)
        except ValueError as error:
            raise ExportError(str(error)) from None
        source = {"kind": "random-init", "weights_sha256": None}
    else:
        if options.preset is not None:
            raise ExportError(
                "--preset applies only with --random-init (trained weights fix the architecture)"
            )
        try:
            network, card = load_trained(options.model, options.task, options.weights)
        except WeightsError as error:
            if options.weights is None:
                raise ExportError(
                    f"no shipped weights for {options.model}-{options.task}; pass --weights PATH "
                    f"(a recon-train output) or --random-init to export an untrained network"
                ) from None
            raise ExportError(str(error)) from None
        except (
            Exception
        ) as error:  # unreadable or foreign file, a state dict that does not fit: the user's file
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ExportError(f"cannot load weights for {options.model}-{options.task}: {first}") from None
        source = {
            "kind": "user" if options.weights is not None else "shipped",
            "weights_sha256": card.get("sha256"),
            "card_metrics": card.get("metrics"),
        }
    # The physics the weights were trained for, then the user's overrides (a fully convolutional network runs
    # at any size; the manifest records the geometry actually exported).
    trained = dict(card.get("task") or {})
    base = {k: v for k, v in trained.items() if k in TASK_DEFAULTS[options.task] and k != "task"}
    if "image_size" in overrides and "n_detectors" not in overrides:
        base.pop("n_detectors", None)  # re-derive the detector count from the new image size
    try:
        task_cfg = task_config(options.task, **{**base, **overrides})
    except ValueError as error:
        raise ExportError(str(error)) from None
    return network.eval(), task_cfg, source


def build_pipeline(network: torch.nn.Module, task_cfg: dict[str, Any]) -> tuple[torch.nn.Module, list[str]]:
    """measurement → image as one module, and the module paths that must stay FP32 (the FBP / physics)."""
    from recon.training.physics import FBP, LinearOperator
    from recon.training.tasks import ReconstructionPipeline

    pipeline = ReconstructionPipeline(network, task_cfg).eval()
    islands = [
        name
        for name, module in pipeline.named_modules()
        if name and isinstance(module, (FBP, LinearOperator))
    ]
    top = [name for name in islands if not any(name.startswith(other + ".") for other in islands)]
    if task_cfg["task"] == "ct" and not top:
        raise ExportError("internal: the CT pipeline holds no FBP module to keep in FP32")
    return pipeline, top


# -- the manifest -------------------------------------------------------------------------------------------
def make_manifest(
    options: ExportOptions,
    network: torch.nn.Module,
    task_cfg: dict[str, Any],
    source: dict[str, Any],
    input_shape: list[Any],
    output_shape: list[Any],
    spatial: dict[str, Any] | None = None,
) -> Manifest:
    from recon.runtime.manifest import Manifest
    from recon.training.tasks import build_physics

    lo, opt, hi = options.batch
    physics = build_physics(task_cfg).to_config()
    ct = task_cfg["task"] == "ct"
    return Manifest(
        name=f"{options.model}-{options.task}",
        task=task_cfg["task"],
        model={
            "name": options.model,
            "config": dict(getattr(network, "config", {"name": options.model})),
            "weights_sha256": source.get("weights_sha256"),
            "weights_source": source["kind"],
        },
        input={
            "name": INPUT_NAME,
            "shape": ["batch", *input_shape[1:]],
            "dtype": "float32",
            "layout": "N1AD" if ct else "NCHW",
            "value_range": None if ct else [0.0, 1.0],
        },
        output={
            "name": OUTPUT_NAME,
            "shape": ["batch", *output_shape[1:]],
            "dtype": "float32",
            "value_range": [0.0, 1.0],
            "clip": True,
        },
        physics={**physics, "task_config": task_cfg},
        batch={"min": lo, "opt": opt, "max": hi},
        spatial=spatial,
    )


# -- image sizes --------------------------------------------------------------------------------------------
def pad_multiple(network: torch.nn.Module) -> int:
    """The multiple a UNet-like network pads its input to inside the graph (2^depth), else 1."""
    from recon.training.models.resunet import ResUNet
    from recon.training.models.unet import UNet

    return 2 ** int(network.depth) if isinstance(network, (ResUNet, UNet)) else 1


def receptive_field_of(network: torch.nn.Module) -> int | None:
    """Receptive field in pixels (None: global, i.e. attention, or unknown)."""
    from recon.training.models.receptive_field import receptive_field

    layers = getattr(network, "receptive_field_layers", None)
    return None if layers is None else receptive_field(layers())


def spatial_entry(
    options: ExportOptions, network: torch.nn.Module, task_cfg: dict[str, Any]
) -> dict[str, Any] | None:
    """The manifest's "spatial" entry (recon.runtime.spatial); None for CT (the input is a sinogram).

    Fully convolutional networks (a finite receptive field) export with symbolic H, W and are taken whole
    within min..max, tiled above; anything else (the ViT's fixed patch grid and learned positions) exports
    at the training size and is tiled-only.
    """
    from recon.runtime.spatial import default_overlap

    if task_cfg["task"] != "deblur":
        return None
    field = receptive_field_of(network)
    size = int(task_cfg["image_size"])
    if field is None:
        return {
            "whole_image": False, "min": size, "opt": size, "max": size, "multiple_of": 1, "tile": size,
            "overlap": default_overlap(size, None), "blend": "gaussian", "receptive_field": None,
        }  # fmt: skip
    lo, opt, hi = options.spatial or default_spatial(size, pad_multiple(network))
    return {
        "whole_image": True, "min": lo, "opt": opt, "max": hi, "multiple_of": 1,
        "tile": hi, "overlap": default_overlap(hi, field), "blend": "gaussian", "receptive_field": field,
    }  # fmt: skip


def default_spatial(size: int, multiple: int) -> tuple[int, int, int]:
    """DEFAULT_SPATIAL, its minimum lowered to a smaller training size (not below the pad multiple)."""
    lo, opt, hi = DEFAULT_SPATIAL
    lo = max(min(lo, size), multiple)
    return lo, max(lo, opt), max(hi, size)


def spatial_parity_sizes(spatial: dict[str, Any]) -> list[tuple[int, int]]:
    """Sizes beyond the training size, non-square and not multiples of 16, to check the symbolic graph at."""
    lo = spatial["min"]
    return [(lo, lo + 13), (min(lo + 35, spatial["max"]), min(2 * lo + 3, spatial["max"]))]


def check_spatial_parity(
    options: ExportOptions, onnx_path: Path, pipeline: Any, task_cfg: dict[str, Any], spatial: dict[str, Any]
) -> Any:
    """torch vs onnxruntime (FP32) at non-training sizes: a dynamic-H/W graph that is wrong somewhere
    (an assert dropped on the way to ONNX, see onnx_export) shows here."""
    import numpy as np

    from recon.export import parity as par

    sizes = spatial_parity_sizes(spatial)
    inputs = {}
    for index, (h, w) in enumerate(sizes):
        measurement, _ = par.simulated_inputs(task_cfg, [1], max(h, w), seed=options.seed + 5 + index)
        inputs[index] = np.ascontiguousarray(measurement[1][..., :h, :w])
    runners = {"torch": par.torch_runner(pipeline), "onnxruntime-fp32": par.onnxruntime_runner(onnx_path)}
    outputs = par.run_all(runners, inputs)
    result = par.compare(outputs, "torch", "onnxruntime-fp32", options.tolerances["onnxruntime-fp32"])
    return result, sizes


# -- the whole export ---------------------------------------------------------------------------------------
def parity_batch_sizes(batch: tuple[int, int, int]) -> list[int]:
    lo, opt, hi = batch
    return sorted({min(max(size, lo), hi) for size in (1, 3, opt)})


def _check_options(options: ExportOptions) -> None:
    lo, opt, hi = options.batch
    if not 1 <= lo <= opt <= hi:
        raise ExportError(f"--batch must satisfy 1 ≤ MIN ≤ OPT ≤ MAX, got {lo}:{opt}:{hi}")
    if hi < 2:
        raise ExportError("--batch MAX must be at least 2 (the exported batch axis is dynamic)")
    if options.engine not in ENGINE_CHOICES:
        raise ExportError(f"--engine must be one of {', '.join(ENGINE_CHOICES)}, got {options.engine!r}")
    s_lo, s_opt, s_hi = options.spatial or DEFAULT_SPATIAL
    if not 1 <= s_lo <= s_opt <= s_hi <= MAX_IMAGE_SIDE:
        raise ExportError(
            f"--spatial must satisfy 1 ≤ MIN ≤ OPT ≤ MAX ≤ {MAX_IMAGE_SIDE}, got {s_lo}:{s_opt}:{s_hi}"
        )
    if options.opset < 17:
        raise ExportError(f"--opset {options.opset} is too old; use 17–19 (TensorRT reads them fully)")
    if options.lean and options.engine == "none":
        raise ExportError("--lean builds a version-compatible engine; it needs --engine auto or trt")


class _Clock:
    """Seconds per step, for the summary."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = round(now - self._last, 3)
        self._last = now


def _parity(options: ExportOptions, tmp: Path, pipeline: Any, inputs: dict[int, Any], precisions: list[str]):
    """Run torch and every ONNX file of the temp artifact (through the runtime), then compare."""
    from recon.export import parity as par

    runners: dict[str, par.Runner] = {"torch": par.torch_runner(pipeline)}
    described = {"torch": "torch (FP32, CPU)"}
    closers = []
    try:
        for precision in precisions:
            name = f"onnxruntime-{precision}"
            runners[name], described[name], close = par.artifact_runner(
                tmp, precision, threads=options.threads
            )
            closers.append(close)
        outputs = par.run_all(runners, inputs)
    finally:
        for close in closers:
            close()
    comparisons = [
        par.compare(outputs, "torch", name, options.tolerances[name]) for name in runners if name != "torch"
    ]
    return outputs, comparisons, described


def _engine(
    options: ExportOptions,
    tmp: Path,
    manifest: Manifest,
    input_chw: tuple[int, ...],
    fp32_model: Any,
    island: set[str],
    spatial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build model.plan from the FP16 (or FP32) ONNX, list it in the manifest; return the engine report."""
    from recon.export.tensorrt_build import DEFAULT_TIMING_CACHE, EngineOptions, build_engine

    source_onnx = "model.fp16.onnx" if options.fp16 else "model.onnx"
    conv_nodes = {n.name for n in fp32_model.graph.node if n.op_type in ("Conv", "ConvTranspose")} - island
    engine_options = EngineOptions(
        batch=options.batch,
        workspace_mb=options.workspace_mb,
        opt_level=options.opt_level,
        timing_cache=options.timing_cache or DEFAULT_TIMING_CACHE,
        version_compatible=options.lean,
        expect_fp16=options.fp16,
    )
    info = build_engine(
        tmp / source_onnx,
        tmp / "model.plan",
        input_name=INPUT_NAME,
        input_chw=input_chw,
        options=engine_options,
        fp32_island_nodes=island,
        conv_nodes=conv_nodes,
        # H, W profile min/opt/max for a symbolic-size graph (the batch profile is options.batch)
        spatial=(spatial["min"], spatial["opt"], spatial["max"])
        if spatial and spatial["whole_image"]
        else None,
    )
    precision = "fp16" if options.fp16 else "fp32"
    manifest.add_file(tmp, "model.plan", "tensorrt", precision, tensorrt=info["tensorrt"])
    manifest.save(tmp)
    return {**info["tensorrt"], "layers": info["layers"], "built_from": source_onnx}


def _parity_summary(comparisons: list[Any], sizes: list[int]) -> dict[str, Any]:
    summary: dict[str, Any] = {"passed": all(c.passed for c in comparisons), "batch_sizes": sizes}
    for c in comparisons:
        key = c.candidate if c.reference == "torch" else f"{c.candidate}_vs_{c.reference}"
        summary[key] = {**c.to_json()["worst"], "passed": c.passed}
    return summary


def export_artifact(options: ExportOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run the export; return a JSON summary. Raises ExportError (one line) on any user-facing failure."""
    import numpy as np
    import onnx
    import torch

    from recon.export import int8 as int8_mod
    from recon.export import parity as par
    from recon.export.onnx_export import export_onnx
    from recon.export.precision import check_fp16, convert_to_fp16, island_node_names
    from recon.export.tensorrt_build import tensorrt_builder_status

    say = progress or (lambda message: None)
    _check_options(options)
    writer = ArtifactWriter(options.target(), force=options.force)
    writer.check_target()  # fail before minutes of work
    notes: list[str] = []
    clock = _Clock()

    build_trt = False
    if options.engine != "none":  # decided first: --engine trt fails before any work when it cannot build
        trt, _, why_not = tensorrt_builder_status()
        build_trt = trt is not None
        if not build_trt and options.engine == "trt":
            raise ExportError(f"--engine trt: cannot build a TensorRT engine here: {why_not}")
        if not build_trt:
            notes.append(f"no TensorRT engine: {why_not}")

    say("loading weights")
    network, task_cfg, source = load_network(options)
    pipeline, island_scopes = build_pipeline(network, task_cfg)
    sizes = parity_batch_sizes(options.batch)
    size = task_cfg["image_size"]
    measurements, clean = par.simulated_inputs(task_cfg, sizes, size, seed=options.seed + 1)
    example = torch.from_numpy(par.simulated_inputs(task_cfg, [2], size, seed=options.seed + 2)[0][2])
    clock.lap("load")

    spatial = spatial_entry(options, network, task_cfg)
    dynamic = spatial is not None and spatial["whole_image"]
    if dynamic:
        multiple = pad_multiple(network)
        if spatial["min"] < multiple or not spatial["min"] <= size <= spatial["max"]:
            raise ExportError(
                f"--spatial {spatial['min']}:{spatial['opt']}:{spatial['max']}: MIN must be at least "
                f"{multiple} (the network pads to multiples of {multiple} by reflection) and MIN..MAX "
                f"must hold the image size {size}"
            )

    with writer as tmp:
        say("exporting ONNX")
        info = export_onnx(
            pipeline,
            example,
            tmp / "model.onnx",
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            batch_max=options.batch[2],
            opset=options.opset,
            spatial=(spatial["min"], spatial["max"]) if dynamic else None,
        )
        fp32_model = onnx.load(str(tmp / "model.onnx"))
        island = island_node_names(fp32_model, island_scopes)
        manifest = make_manifest(
            options, network, task_cfg, source, info.input_shape, info.output_shape, spatial
        )
        manifest.add_file(tmp, "model.onnx", "onnx", "fp32")
        report: dict[str, Any] = {
            "onnx": {**info.to_json(), "fp32_island_scopes": island_scopes, "fp32_island_nodes": len(island)}
        }
        clock.lap("onnx")
        checkpoint("onnx")

        if options.fp16:
            say("converting to FP16")
            fp16_model, fp16_report = convert_to_fp16(fp32_model, island_scopes=island_scopes)
            precision_info = check_fp16(fp16_model, island)
            onnx.save(fp16_model, str(tmp / "model.fp16.onnx"))
            manifest.add_file(tmp, "model.fp16.onnx", "onnx", "fp16")
            report["fp16"] = {**fp16_report.to_json(), **precision_info}
            clock.lap("fp16")
            checkpoint("fp16")

        if options.int8:
            say("quantizing to INT8")
            n_cal = max(1, options.calibration_images)
            cal = int8_mod.calibration_inputs(task_cfg, n_cal, size, seed=options.seed + 3)
            batches = [np.ascontiguousarray(chunk) for chunk in np.array_split(cal, max(1, n_cal // 4))]
            report["int8"] = int8_mod.quantize_int8(
                tmp / "model.onnx",
                tmp / "model.int8.onnx",
                batches,
                input_name=INPUT_NAME,
                exclude_nodes=island,
            )
            manifest.add_file(tmp, "model.int8.onnx", "onnx", "int8")
            clock.lap("int8")
            checkpoint("int8")
        manifest.save(tmp)

        say("checking parity")
        precisions = ["fp32"] + ["fp16"] * options.fp16 + ["int8"] * options.int8
        outputs, comparisons, runners = _parity(options, tmp, pipeline, measurements, precisions)
        if dynamic:
            spatial_result, spatial_sizes = check_spatial_parity(
                options, tmp / "model.onnx", pipeline, task_cfg, spatial
            )
            report["spatial"] = {**spatial, "parity_sizes": spatial_sizes, "parity": spatial_result.to_json()}
            spatial_result.candidate = "onnxruntime-fp32-other-sizes"
            comparisons.append(spatial_result)
        if options.int8:
            report["int8"]["speed"] = int8_mod.cpu_speedup(
                tmp / "model.onnx",
                tmp / "model.int8.onnx",
                measurements[min(sizes)],
                input_name=INPUT_NAME,
                threads=options.threads or 1,
            )
        clock.lap("parity")
        checkpoint("parity")

        if build_trt:
            say("building the TensorRT engine")
            chw = tuple(int(d) if isinstance(d, int) else size for d in info.input_shape[1:])
            report["tensorrt"] = _engine(options, tmp, manifest, chw, fp32_model, island, spatial)
            run, runners["tensorrt"], close = par.artifact_runner(
                tmp, "fp16" if options.fp16 else "fp32", backend="tensorrt"
            )
            try:
                outputs["tensorrt"] = {n: run(batch) for n, batch in measurements.items()}
            finally:
                close()
            tolerance = options.tolerances["tensorrt"]
            comparisons.append(par.compare(outputs, "onnxruntime-fp32", "tensorrt", tolerance))
            comparisons.append(par.compare(outputs, "torch", "tensorrt", tolerance))
            clock.lap("tensorrt")
            checkpoint("tensorrt")

        # What the model is worth on these phantoms, for context (not a parity criterion).
        quality = {
            name: round(float(np.mean([par.psnr(clean[n], out[n]) for n in sizes])), 3)
            for name, out in outputs.items()
        }
        parity_summary = _parity_summary(comparisons, sizes)
        parity_report = {
            "passed": parity_summary["passed"],
            "inputs": {
                "source": "recon.training.tasks.simulate of recon.training.data.phantom",
                "seed": options.seed + 1,
                "batch_sizes": sizes,
                "shape": ["batch", *info.input_shape[1:]],
            },
            "runners": runners,
            "comparisons": [c.to_json() for c in comparisons],
            "psnr_vs_ground_truth": quality,
            **report,
        }
        (tmp / "parity.json").write_text(json.dumps(parity_report, indent=2) + "\n")
        manifest.add_file(tmp, "parity.json", "report")
        manifest.parity = parity_summary
        if options.int8:
            manifest.parity["int8_cpu_speedup"] = report["int8"]["speed"]["speedup"]
        manifest.save(tmp)
        clock.lap("report")
        checkpoint("manifest")

        failures = [f"{c.candidate} vs {c.reference}: {c.reason}" for c in comparisons if not c.passed]
        if failures and not options.allow_mismatch:
            raise ExportError(
                f"parity failed ({'; '.join(failures)}); nothing was written (--allow-mismatch writes it)"
            )
        if failures:
            notes.append(f"parity failed but --allow-mismatch was given: {'; '.join(failures)}")
        say("writing the artifact")
        final = writer.commit()

    summary: dict[str, Any] = {
        "artifact": str(final),
        "name": manifest.name,
        "task": manifest.task,
        "model": options.model,
        "weights": source["kind"],
        "input_shape": manifest.input["shape"],
        "output_shape": manifest.output["shape"],
        "batch": manifest.batch,
        "spatial": manifest.spatial,
        "files": {name: entry.to_json() for name, entry in manifest.files.items()},
        "parity": manifest.parity,
        "notes": notes,
        "timings_s": clock.timings,
    }
    if options.triton_repo is not None:
        from recon.export.triton import write_triton_repository

        say("writing the Triton repository")
        folders = write_triton_repository(
            options.triton_repo,
            final,
            manifest.to_json(),
            onnx_precision="fp16" if options.fp16 else "fp32",
            force=options.force,
        )
        summary["triton_models"] = [str(folder) for folder in folders]
    return summary
