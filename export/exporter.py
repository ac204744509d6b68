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
from recon.export.lineage import export_lineage
from recon.export.parity import DEFAULT_TOLERANCES, Tolerance
from recon.runtime.limits import MAX_IMAGE_SIDE

if TYPE_CHECKING:
    import torch

    from recon.runtime.artifact.manifest import Manifest
    from recon.runtime.artifact.spatial import Spatial
    from recon.runtime.artifact.task_config import TaskConfig

INPUT_NAME, OUTPUT_NAME = "measurement", "image"
ENGINE_CHOICES = ("auto", "trt", "none")
# The artifact's files, by role: one table, so no step spells a name of its own.
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
PLAN_FILE, PARITY_FILE = "model.plan", "parity.json"
DEFAULT_SPATIAL = (64, 512, 2048)  # sides taken whole: the TensorRT profile 64², 512², 2048²


@dataclass
class ExportOptions:
    model: str = "resunet"
    task: str = "deblur"
    out: Path | None = None  # default: ./artifacts/<model>-<task>
    weights: Path | None = None  # a user's .safetensors/.json (with its card) or a folder
    random_init: bool = False  # export an untrained network (no weights needed)
    preset: str | None = None  # model preset, with --random-init
    task_overrides: dict[str, Any] = field(default_factory=dict)  # image_size, n_views, ... (None: unset)
    allow_geometry_change: bool = False  # deploy at another geometry than the weights were trained on
    fp16: bool = False
    int8: bool = False
    bf16: bool = False  # measure the FP32 graph's held-out PSNR loss in bf16 (OpenVINO) into the report
    engine: str = "auto"
    batch: tuple[int, int, int] = (1, 8, 32)
    spatial: tuple[int, int, int] | None = None  # image side min:opt:max; None: DEFAULT_SPATIAL, see below
    opset: int = 18
    workspace_mb: int = 4096
    opt_level: int = 3
    timing_cache: Path | None = None  # None: <cache>/tensorrt-timing.cache (runtime/cache.py)
    lean: bool = False
    triton_repo: Path | None = None
    triton: dict[str, Any] = field(default_factory=dict)  # write_triton_repository's flavour, instances...
    force: bool = False
    add: bool = False  # add the asked variants to the artifact at the target, keeping what it holds
    allow_mismatch: bool = False
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    threads: int | None = None  # onnxruntime intra-op threads for parity and timing
    calibration_images: int = 32
    consistency_images: int = 500  # in-distribution inputs that calibrate consistency.onnx; 0: no check
    seed: int = 0
    geometry_heldout: int = 8  # held-out images for the quality report at a changed geometry
    golden_images: int = 4  # held-out inputs stored with their outputs for `recon verify` (export/golden.py)
    version_of: Path | None = None  # a model folder (runtime/versions.py): write its next numbered version

    # A user's own network instead of a registered family (export/network_source.py, docs/your-own-network.md)
    network: str | None = None  # PACKAGE.MODULE:FACTORY
    network_args: dict[str, Any] = field(default_factory=dict)  # FACTORY(**network_args)
    network_module: Any = None  # a torch.nn.Module object (export_network)
    network_label: str | None = None  # the artifact's model name for a module object
    onnx: Path | None = None  # an already exported image-to-image graph (export/onnx_source.py)
    keep_fp32: tuple[str, ...] = ()  # node names the FP16 file keeps in FP32 (what fp16_blame names)
    show_progress: bool = False  # tqdm bars on stderr (a terminal) for the long loops

    def foreign(self) -> bool:
        """Whether the network comes from the user (a factory or a module), not recon's registry."""
        return self.network is not None or self.network_module is not None

    def name(self) -> str:
        """The model's name in the artifact: the registered family, or the user's network's."""
        if self.onnx is not None:
            return self.network_label or Path(self.onnx).stem.lower()
        if self.network is not None:
            from recon.export.network_source import network_name

            return network_name(self.network)
        if self.network_module is not None:
            return self.network_label or type(self.network_module).__name__.lower()
        return self.model

    def target(self) -> Path:
        if self.version_of is not None:  # models/NAME/<next>: the other versions are not touched
            from recon.runtime.versions import ModelFolder

            return Path(self.version_of) / str(ModelFolder(self.version_of).next_version())
        return Path(self.out) if self.out is not None else Path("artifacts") / f"{self.name()}-{self.task}"


Progress = Callable[[str], None]


# -- step 1: the torch graph --------------------------------------------------------------------------------
def load_network(options: ExportOptions) -> tuple[torch.nn.Module, TaskConfig, dict[str, Any]]:
    """(network in eval mode, deployed task config, provenance) from --weights, shipped weights or
    --random-init. Provenance holds the task the weights were trained on ("trained_task_config")."""
    from recon.training.models import create_model, list_models
    from recon.training.tasks import TASKS
    from recon.training.weights import WeightsError, load_trained, resolve

    if options.onnx is not None:
        from recon.export.onnx_source import load_onnx_source

        if options.foreign() or options.random_init or options.weights is not None:
            raise ExportError(
                "--onnx carries its own weights: no --network, --weights or --random-init with it"
            )
        return load_onnx_source(options)
    if options.foreign():
        from recon.export.network_source import load_foreign

        if options.task not in TASKS:
            raise ExportError(f"unknown task {options.task!r}; available: {', '.join(TASKS)}")
        if options.preset is not None:
            raise ExportError("--preset names a registered family's preset; it does not apply to --network")
        return load_foreign(options)
    if options.model not in list_models():
        raise ExportError(f"unknown model {options.model!r}; available: {', '.join(list_models())}")
    if options.task not in TASKS:
        raise ExportError(f"unknown task {options.task!r}; available: {', '.join(TASKS)}")
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
            "weights_path": str(resolve(options.model, options.task, options.weights)[0]),
            "weights_sha256": card.get("sha256"),
            "card_metrics": card.get("metrics"),
            "card_data": card.get("data"),  # the training data recipe, for the lineage
            "card_training": card.get("training"),
        }
    trained, deployed = deployed_task_config(options, card)
    source["trained_task_config"] = trained.to_json() if trained is not None else None
    return network.eval(), deployed, source


def deployed_task_config(
    options: ExportOptions, card: dict[str, Any]
) -> tuple[TaskConfig | None, TaskConfig]:
    """(the task the weights were trained on or None, the task to deploy: that one with the user's overrides).

    A geometry other than the trained one (CT views, detectors, spacing, image size; the blur kernel) is
    refused unless `allow_geometry_change`: the network is then reused as it is, and the export measures its
    quality at the new geometry.
    """
    from recon.training.tasks import task_config, task_config_from_json

    try:
        trained = task_config_from_json(card["task"]) if card.get("task") else None
        if trained is not None and trained.task != options.task:
            raise ValueError(f"the weights were trained for task {trained.task!r}, not {options.task!r}")
        base = trained if trained is not None else task_config(options.task)
        deployed = base.with_overrides(**options.task_overrides)
    except ValueError as error:
        raise ExportError(str(error)) from None
    if (
        trained is not None
        and deployed.geometry() != trained.geometry()
        and not options.allow_geometry_change
    ):
        changed = ", ".join(
            f"{key} {value} → {deployed.geometry()[key]}"
            for key, value in trained.geometry().items()
            if deployed.geometry()[key] != value
        )
        raise ExportError(
            f"{options.name()}-{options.task} was trained at another geometry ({changed}); pass "
            "--allow-geometry-change to deploy it there (quality at the new geometry goes into the report)"
        )
    return trained, deployed


def build_pipeline(network: torch.nn.Module, task_cfg: TaskConfig) -> tuple[torch.nn.Module, list[str]]:
    """measurement → image as one module, and the module paths that must stay FP32: the operator's part
    (`pipeline.physics`: the FBP for CT, nothing for a deblur network that takes the blurred image)."""
    from recon.training.physics import FBP, LinearOperator
    from recon.training.tasks import ReconstructionPipeline

    pipeline = ReconstructionPipeline(network, task_cfg).eval()
    islands = [
        name
        for name, module in pipeline.named_modules()
        if name and isinstance(module, (FBP, LinearOperator))
    ]
    return pipeline, [name for name in islands if not any(name.startswith(other + ".") for other in islands)]


# -- the manifest -------------------------------------------------------------------------------------------
def make_manifest(
    options: ExportOptions,
    network: torch.nn.Module,
    task_cfg: TaskConfig,
    source: dict[str, Any],
    input_shape: list[Any],
    output_shape: list[Any],
    spatial: Spatial | None = None,
) -> Manifest:
    from recon.export.input_range import input_value_range
    from recon.runtime.artifact.manifest import BatchProfile, IOSpec, Manifest

    lo, opt, hi = options.batch
    ct = task_cfg.task == "ct"
    low, high = input_value_range(task_cfg)  # export/input_range.py
    model = {
        "name": options.name(),
        "config": dict(source.get("config") or getattr(network, "config", {"name": options.model})),
        "weights_sha256": source.get("weights_sha256"),
        "weights_source": source["kind"],
        "trained_task_config": source.get("trained_task_config"),
    }
    if "probe" in source:  # a user's network: what export/probe.py measured
        model["probe"] = source["probe"]
    return Manifest(
        name=f"{options.name()}-{options.task}",
        task=task_cfg.task,
        model=model,
        input=IOSpec(
            name=INPUT_NAME,
            shape=("batch", *input_shape[1:]),
            layout="N1AD" if ct else "NCHW",
            value_range=(low, high),
        ),
        output=IOSpec(
            name=OUTPUT_NAME, shape=("batch", *output_shape[1:]), value_range=(0.0, 1.0), clip=True
        ),
        task_config=task_cfg,
        batch=BatchProfile(min=lo, opt=opt, max=hi),
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


def default_spatial(size: int, multiple: int) -> tuple[int, int, int]:
    """DEFAULT_SPATIAL, its minimum lowered to a smaller training size (not below the pad multiple)."""
    lo, opt, hi = DEFAULT_SPATIAL
    lo = max(min(lo, size), multiple)
    return lo, max(lo, opt), max(hi, size)


def network_facts(network: torch.nn.Module, source: dict[str, Any], size: int) -> dict[str, Any]:
    """What the spatial entry needs to know about the network, from one source among others: a registered
    family declares it (its class), a user's network was probed (export/probe.py)."""
    probe = source.get("probe")
    if probe is not None:
        return {
            "fully_convolutional": probe["fully_convolutional"],
            "receptive_field": probe["receptive_field"],
            "pad_multiple": probe["multiple_of"],
            "tile": probe["fixed_size"] or size,
        }
    field = receptive_field_of(network)
    return {
        "fully_convolutional": field is not None,
        "receptive_field": field,
        "pad_multiple": pad_multiple(network),
        "tile": size,
    }


def spatial_entry(
    options: ExportOptions,
    network: torch.nn.Module,
    task_cfg: TaskConfig,
    source: dict[str, Any] | None = None,
) -> Spatial | None:
    """The manifest's "spatial" entry (recon.runtime.artifact.spatial); None for CT (the input is a sinogram).

    Fully convolutional networks (a finite receptive field) export with symbolic H, W and are taken whole
    within min..max, tiled above; anything else (the ViT's fixed patch grid and learned positions) exports
    at the training size and is tiled-only.
    """
    from recon.runtime.artifact.spatial import Spatial, default_overlap

    if task_cfg.task != "deblur":
        return None
    size = int(task_cfg.image_size)
    facts = network_facts(network, source or {}, size)
    field = facts["receptive_field"]
    if not facts["fully_convolutional"]:
        tile = facts["tile"]
        return Spatial(
            whole_image=False, min=tile, opt=tile, max=tile, multiple_of=1, tile=tile,
            overlap=default_overlap(tile, field), blend="gaussian", receptive_field=field,
        )  # fmt: skip
    lo, opt, hi = options.spatial or default_spatial(size, facts["pad_multiple"])
    return Spatial(
        whole_image=True, min=lo, opt=opt, max=hi, multiple_of=1,
        tile=hi, overlap=default_overlap(hi, field), blend="gaussian", receptive_field=field,
    )  # fmt: skip


def spatial_parity_sizes(spatial: Spatial) -> list[tuple[int, int]]:
    """Sizes beyond the training size, non-square and not multiples of 16, to check the symbolic graph at."""
    lo = spatial.min
    return [(lo, lo + 13), (min(lo + 35, spatial.max), min(2 * lo + 3, spatial.max))]


def check_spatial_parity(
    options: ExportOptions, onnx_path: Path, pipeline: Any, task_cfg: TaskConfig, spatial: Spatial
) -> tuple[Any, list[tuple[int, int]]]:
    """torch vs onnxruntime (FP32) at non-training sizes: a dynamic-H/W graph that is wrong somewhere
    (an assert dropped on the way to ONNX, see onnx_export) shows here."""
    import numpy as np

    from recon.export import parity as par
    from recon.runtime.backends.onnxruntime import new_session, session_options

    sizes = spatial_parity_sizes(spatial)
    inputs = {}
    for index, (h, w) in enumerate(sizes):
        measurement, _ = par.simulated_inputs(task_cfg, [1], max(h, w), seed=options.seed + 5 + index)
        inputs[index] = np.ascontiguousarray(measurement[1][..., :h, :w])
    session = new_session(onnx_path, session_options(options.threads))
    name = session.get_inputs()[0].name
    runners = {
        "torch": par.torch_runner(pipeline),
        "onnxruntime-fp32": lambda batch: session.run(None, {name: batch})[0],
    }
    outputs = par.run_all(runners, inputs)
    result = par.compare(outputs, "torch", "onnxruntime-fp32", options.tolerances["onnxruntime-fp32"])
    result.candidate = "onnxruntime-fp32-other-sizes"
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
    if options.version_of is not None and (options.out is not None or options.force):
        raise ExportError("--version-of adds a new version: it takes neither --out nor --force")
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

    described = {"torch": "torch (FP32, CPU)"}
    outputs = par.run_all({"torch": par.torch_runner(pipeline)}, inputs)
    _drop_cached_plans(pipeline)
    # one session at a time: a CT graph's folded backprojection plan costs onnxruntime GBs per session
    # (4 GB at 512², 180 views), three held together were most of a 16 GB peak
    for precision in precisions:
        name = f"onnxruntime-{precision}"
        runner, described[name], close = par.artifact_runner(tmp, precision, threads=options.threads)
        try:
            outputs.update(par.run_all({name: runner}, inputs))
        finally:
            close()
    comparisons = [
        par.compare(outputs, "torch", name, options.tolerances[name]) for name in outputs if name != "torch"
    ]
    return outputs, comparisons, described


def _drop_cached_plans(module: Any) -> None:
    """Free the eager FBP's cached sampling plan (N²·A indices and weights: 566 MB at 512², 180 views)
    before onnxruntime sessions fold their own copy; a later eager run rebuilds it."""
    for sub in module.modules():
        plans = getattr(sub, "_plans", None)
        if isinstance(plans, dict):
            plans.clear()


def _engine(
    options: ExportOptions,
    tmp: Path,
    manifest: Manifest,
    input_chw: tuple[int, ...],
    fp32_model: Any,
    island: set[str],
    spatial: Spatial | None = None,
    multiple: int = 1,
) -> dict[str, Any]:
    """Build model.plan from the FP16 (or FP32) ONNX, list it in the manifest; return the engine report."""
    import onnx

    from recon.export.tensorrt_build import DEFAULT_TIMING_CACHE, EngineOptions, build_engine, onnx_node_edges
    from recon.export.tensorrt_profile import measure_footprint

    source_onnx = ONNX_FILES["fp16" if options.fp16 else "fp32"]
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
        tmp / PLAN_FILE,
        input_name=INPUT_NAME,
        input_chw=input_chw,
        options=engine_options,
        fp32_island_nodes=island,
        conv_nodes=conv_nodes,
        node_edges=onnx_node_edges(onnx.load(str(tmp / source_onnx))),  # ForeignNode ranges
        # the profiles' maximum comes from the graph TensorRT gets (tensor volume, activation memory)
        footprint=measure_footprint(tmp / source_onnx, INPUT_NAME, list(manifest.input.shape), multiple),
        # H, W profile min/opt/max for a symbolic-size graph (the batch profile is options.batch)
        spatial=(spatial.min, spatial.opt, spatial.max) if spatial and spatial.whole_image else None,
    )
    precision = "fp16" if options.fp16 else "fp32"
    manifest.add_file(tmp, PLAN_FILE, "tensorrt", precision, tensorrt=info["tensorrt"])
    manifest.save(tmp)
    return {**info["tensorrt"], "layers": info["layers"], "built_from": source_onnx}


def _parity_summary(comparisons: list[Any], sizes: list[int]) -> dict[str, Any]:
    summary: dict[str, Any] = {"passed": all(c.passed for c in comparisons), "batch_sizes": sizes}
    for c in comparisons:
        key = c.candidate if c.reference == "torch" else f"{c.candidate}_vs_{c.reference}"
        summary[key] = {**c.to_json()["worst"], "passed": c.passed}
    return summary


@dataclass
class _Run:
    """What the export steps share: the options, the temp folder, what has been built so far."""

    options: ExportOptions
    say: Progress
    network: Any
    task_cfg: TaskConfig
    source: dict[str, Any]
    pipeline: Any
    island_scopes: list[str]
    measurements: dict[int, Any]  # parity inputs per batch size
    clean: dict[int, Any]  # their ground truth
    example: Any  # the tracing input
    clock: _Clock
    notes: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # parity.json, less the comparisons
    tmp: Path = Path()
    manifest: Any = None
    fp32_model: Any = None
    island: set[str] = field(default_factory=set)
    input_shape: list[Any] = field(default_factory=list)
    spatial: Spatial | None = None  # the manifest's "spatial" entry
    outputs: dict[str, Any] = field(default_factory=dict)
    comparisons: list[Any] = field(default_factory=list)
    runners: dict[str, str] = field(default_factory=dict)
    fp16_advice: str = ""  # where FP16 breaks, when its parity failed

    @property
    def sizes(self) -> list[int]:
        return sorted(self.measurements)


def _tensorrt_wanted(options: ExportOptions, notes: list[str], engine: dict[str, Any]) -> bool:
    """Whether to build an engine; --engine trt fails here, before any work, when none can be built."""
    from recon.export.tensorrt_build import tensorrt_builder_status

    if options.engine == "none":
        engine["built"], engine["reason"] = False, "--engine none"
        return False
    trt, _, why_not = tensorrt_builder_status()
    # the runtime's reason ends with its own advice (--backend cpu, an option of recon-run, not of this)
    why_not = why_not.replace("use --backend cpu on this machine", "--engine none skips the engine")
    if trt is None and options.engine == "trt":
        raise ExportError(f"--engine trt: cannot build a TensorRT engine here: {why_not}")
    engine["built"], engine["reason"] = trt is not None, why_not or None
    if trt is None and _gpu_visible():
        # a GPU without a usable builder is news; a CPU machine without an engine is the normal case, and a
        # note on every CPU export taught people to skip notes
        notes.append(f"no TensorRT engine: {why_not}")
    return trt is not None


def _gpu_visible() -> bool:
    import shutil

    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()


def _prepare(options: ExportOptions, say: Progress, clock: _Clock) -> _Run:
    """Weights → torch pipeline, and the simulated inputs for tracing and parity."""
    import torch

    from recon.export import parity as par

    say("loading weights")
    network, task_cfg, source = load_network(options)
    if source.get("weights_path"):
        say(f"loaded {source['kind']} weights {source['weights_path']} (sha256 {source['weights_sha256']})")
    pipeline, island_scopes = build_pipeline(network, task_cfg)
    sizes = parity_batch_sizes(options.batch)
    size = task_cfg.image_size
    measurements, clean = par.simulated_inputs(task_cfg, sizes, size, seed=options.seed + 1)
    example = torch.from_numpy(par.simulated_inputs(task_cfg, [2], size, seed=options.seed + 2)[0][2])
    clock.lap("load")
    run = _Run(
        options, say, network, task_cfg, source, pipeline, island_scopes, measurements, clean, example, clock
    )
    run.spatial = spatial_entry(options, network, task_cfg, source)
    if _dynamic(run):
        multiple = network_facts(network, source, size)["pad_multiple"]
        lo, opt, hi = run.spatial.min, run.spatial.opt, run.spatial.max
        if lo < multiple or not lo <= size <= hi:
            raise ExportError(
                f"--spatial {lo}:{opt}:{hi}: MIN must be at least {multiple} (the network pads to multiples "
                f"of {multiple} by reflection) and MIN..MAX must hold the image size {size}"
            )
    return run


def _dynamic(run: _Run) -> bool:
    """Whether the graph gets symbolic H, W (fully convolutional deblur networks)."""
    return run.spatial is not None and run.spatial.whole_image


def _write_onnx(run: _Run) -> None:
    """The FP32 graph (dynamic batch), its FP32 islands, and the manifest that lists it."""
    import onnx

    from recon.export.onnx_export import export_onnx
    from recon.export.precision import island_node_names

    run.say("exporting ONNX")
    options, tmp = run.options, run.tmp

    def export() -> Any:
        return export_onnx(
            run.pipeline,
            run.example,
            tmp / ONNX_FILES["fp32"],
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            batch_max=options.batch[2],
            opset=options.opset,
            spatial=(run.spatial.min, run.spatial.max) if _dynamic(run) else None,
        )

    if options.onnx is not None:
        from recon.export.onnx_source import composed_graph

        info = composed_graph(run, tmp / ONNX_FILES["fp32"])
    else:
        info = export()
    if options.foreign() and _dynamic(run):
        from recon.export.network_source import fit_pad_multiple

        info = fit_pad_multiple(run, export, info)
    run.fp32_model = onnx.load(str(tmp / ONNX_FILES["fp32"]))
    run.island = island_node_names(run.fp32_model, run.island_scopes)
    if not run.pipeline.physics.measurement_is_image and not run.island:  # CT: the FBP must stay FP32
        raise ExportError(
            f"internal: no node of {ONNX_FILES['fp32']} comes from the operator's pseudo-inverse "
            f"(module paths {run.island_scopes}), so FP16/INT8 would not keep it FP32; please report it"
        )
    run.input_shape = list(info.input_shape)
    run.manifest = make_manifest(
        options, run.network, run.task_cfg, run.source, info.input_shape, info.output_shape, run.spatial
    )
    from recon.export.tensorrt_profile import provider_profile_entry

    # onnxruntime's TensorRT provider builds from this graph: its profile, derived from the graph's size
    trt_entry = provider_profile_entry(
        tmp / ONNX_FILES["fp32"], INPUT_NAME, info.input_shape, options.batch,
        (run.spatial.min, run.spatial.opt, run.spatial.max) if _dynamic(run) else None,
        pad_multiple(run.network),
    )  # fmt: skip
    run.manifest.add_file(tmp, ONNX_FILES["fp32"], "onnx", "fp32", tensorrt=trt_entry)
    run.report["onnx"] = {
        **info.to_json(),
        "fp32_island_scopes": run.island_scopes,
        "fp32_island_nodes": len(run.island),
    }
    run.clock.lap("onnx")
    checkpoint("onnx")


def _write_fp16(run: _Run) -> None:
    import onnx

    from recon.export.precision import check_fp16, convert_to_fp16

    run.say("converting to FP16")
    keep = set(run.options.keep_fp32)
    unknown = sorted(keep - {node.name for node in run.fp32_model.graph.node})
    if unknown:
        raise ExportError(f"--keep-fp32 {', '.join(unknown)}: no such node in {ONNX_FILES['fp32']}")
    fp16_model, fp16_report = convert_to_fp16(
        run.fp32_model,
        island_scopes=run.island_scopes,
        keep_fp32=(lambda node: node.name in keep) if keep else None,
    )
    precision_info = check_fp16(fp16_model, run.island | keep)  # kept nodes: FP32 by request
    onnx.save(fp16_model, str(run.tmp / ONNX_FILES["fp16"]))
    run.manifest.add_file(run.tmp, ONNX_FILES["fp16"], "onnx", "fp16")
    run.report["fp16"] = {**fp16_report.to_json(), **precision_info}
    run.clock.lap("fp16")
    checkpoint("fp16")


def _write_int8(run: _Run) -> None:
    import numpy as np

    from recon.export import int8 as int8_mod

    run.say("quantizing to INT8")
    options = run.options
    n_cal = max(1, options.calibration_images)
    cal = int8_mod.calibration_inputs(run.task_cfg, n_cal, run.task_cfg.image_size, seed=options.seed + 3)
    batches = [np.ascontiguousarray(chunk) for chunk in np.array_split(cal, max(1, n_cal // 4))]
    run.report["int8"] = int8_mod.quantize_int8(
        run.tmp / ONNX_FILES["fp32"],
        run.tmp / ONNX_FILES["int8"],
        batches,
        input_name=INPUT_NAME,
        exclude_nodes=run.island,
    )
    run.manifest.add_file(run.tmp, ONNX_FILES["int8"], "onnx", "int8")
    run.clock.lap("int8")
    checkpoint("int8")


def _check_parity(run: _Run) -> None:
    """torch against every ONNX file, through the runtime; the INT8 file's CPU speed-up."""
    from recon.export import int8 as int8_mod

    run.say("checking parity")
    options = run.options
    precisions = ["fp32"] + ["fp16"] * options.fp16 + ["int8"] * options.int8
    run.outputs, run.comparisons, run.runners = _parity(
        options, run.tmp, run.pipeline, run.measurements, precisions
    )
    if any(c.candidate == "onnxruntime-fp16" and not c.passed for c in run.comparisons):
        _blame_fp16(run)
    if _dynamic(run):
        result, sizes = check_spatial_parity(
            options, run.tmp / ONNX_FILES["fp32"], run.pipeline, run.task_cfg, run.spatial
        )
        run.report["spatial"] = {**run.spatial.to_json(), "parity_sizes": sizes, "parity": result.to_json()}
        run.comparisons.append(result)
    if options.int8:
        run.report["int8"]["speed"] = int8_mod.cpu_speedup(
            run.tmp / ONNX_FILES["fp32"],
            run.tmp / ONNX_FILES["int8"],
            run.measurements[min(run.sizes)],
            input_name=INPUT_NAME,
            threads=options.threads or 1,
        )
    if options.bf16:
        from recon.export.bf16 import bf16_heldout_loss

        run.say("measuring bf16 on the held-out set")
        run.report["bf16"] = bf16_heldout_loss(run.tmp, run.task_cfg, threads=options.threads)
        if not run.report["bf16"]["measured"]:
            run.notes.append(f"bf16 not measured: {run.report['bf16']['reason']}")
    run.clock.lap("parity")
    checkpoint("parity")


def _build_tensorrt(run: _Run) -> None:
    """model.plan, and its parity against onnxruntime and torch."""
    from recon.export import parity as par

    run.say("building the TensorRT engine")
    options = run.options
    size = run.task_cfg.image_size
    chw = tuple(int(d) if isinstance(d, int) else size for d in run.input_shape[1:])
    run.report["tensorrt"] = _engine(
        options,
        run.tmp,
        run.manifest,
        chw,
        run.fp32_model,
        run.island,
        run.spatial,
        pad_multiple(run.network),
    )
    # the layer verdict warns until a real engine's inspector output is a test fixture (tensorrt_build)
    run.notes += [
        f"TensorRT layer check: {p}" for p in run.report["tensorrt"]["layers"]["precision_problems"]
    ]
    runner, run.runners["tensorrt"], close = par.artifact_runner(
        run.tmp, "fp16" if options.fp16 else "fp32", backend="tensorrt"
    )
    try:
        run.outputs["tensorrt"] = {n: runner(batch) for n, batch in run.measurements.items()}
    finally:
        close()
    tolerance = options.tolerances["tensorrt"]
    run.comparisons.append(par.compare(run.outputs, "onnxruntime-fp32", "tensorrt", tolerance))
    run.comparisons.append(par.compare(run.outputs, "torch", "tensorrt", tolerance))
    run.clock.lap("tensorrt")
    checkpoint("tensorrt")


def _write_consistency(run: _Run) -> None:
    """consistency.onnx, calibrated on in-distribution inputs run through this artifact (the trust signal)."""
    from recon.export.consistency import write_consistency

    run.say("calibrating the consistency check")
    options = run.options
    run.report["consistency"] = write_consistency(
        run.tmp,
        run.manifest,
        run.task_cfg,
        n_images=options.consistency_images,
        seed=options.seed,
        threads=options.threads,
        opset=options.opset,
        show_progress=options.show_progress,
    )
    run.clock.lap("consistency")
    checkpoint("consistency")


def _geometry_report(run: _Run) -> dict[str, Any] | None:
    """Deployed at another geometry than trained: the network's quality there, on the held-out set simulated
    at the deployed geometry (fewer images than the card's 32: at 512² the simulation takes minutes)."""
    from recon.training.data import heldout_set
    from recon.training.fit import evaluate
    from recon.training.tasks import task_config_from_json

    stored = run.source.get("trained_task_config")
    trained = task_config_from_json(stored) if stored else None
    if trained is None or trained.geometry() == run.task_cfg.geometry():
        return None
    run.say(f"measuring quality at the new geometry ({run.options.geometry_heldout} held-out images)")
    deployed = run.task_cfg
    heldout = evaluate(run.network, heldout_set(deployed, run.options.geometry_heldout, deployed.image_size))
    changed = {
        k: [v, deployed.geometry()[k]] for k, v in trained.geometry().items() if deployed.geometry()[k] != v
    }
    run.clock.lap("geometry")
    return {
        "trained": trained.to_json(),
        "deployed": deployed.to_json(),
        "changed": ", ".join(f"{k} {a} → {b}" for k, (a, b) in changed.items()),
        "baseline_name": run.pipeline.physics.network_input_name,
        "heldout": heldout,
        "card_heldout_at_trained_geometry": (run.source.get("card_metrics") or {}).get("heldout"),
    }


def _write_golden(run: _Run) -> None:
    """golden/: held-out inputs, their FP32 outputs and scores, tolerances per backend and precision."""
    from recon.export.golden import golden_inputs, write_golden

    run.say("measuring the golden outputs")
    inputs, source = golden_inputs(run.task_cfg, run.options.golden_images)
    run.notes += write_golden(run.tmp, run.manifest, inputs, source=source, threads=run.options.threads)
    run.clock.lap("golden")
    checkpoint("golden")


def _write_report(run: _Run) -> None:
    """parity.json (every comparison, quality on the phantoms, each step's report); the manifest summary."""
    import numpy as np

    from recon.export import parity as par

    geometry = _geometry_report(run)
    # What the model is worth on these phantoms, for context (not a parity criterion).
    quality = {
        name: round(float(np.mean([par.psnr(run.clean[n], out[n]) for n in run.sizes])), 3)
        for name, out in run.outputs.items()
    }
    summary = _parity_summary(run.comparisons, run.sizes)
    report = {
        "passed": summary["passed"],
        "inputs": {
            "source": "recon.training.tasks.simulate of recon.training.data.phantom",
            "seed": run.options.seed + 1,
            "batch_sizes": run.sizes,
            "shape": ["batch", *run.input_shape[1:]],
        },
        "runners": run.runners,
        "comparisons": [c.to_json() for c in run.comparisons],
        "psnr_vs_ground_truth": quality,
        **run.report,
        **({"geometry_change": geometry} if geometry else {}),
    }
    (run.tmp / PARITY_FILE).write_text(json.dumps(report, indent=2) + "\n")
    run.manifest.add_file(run.tmp, PARITY_FILE, "report")
    run.manifest.parity = summary
    if run.options.int8:
        run.manifest.parity["int8_cpu_speedup"] = run.report["int8"]["speed"]["speedup"]
    if run.report.get("bf16", {}).get("measured"):
        run.manifest.parity["bf16_heldout_loss_db"] = run.report["bf16"]["loss_db"]
    run.manifest.save(run.tmp)
    if geometry:
        run.report["geometry_change"] = geometry
    run.clock.lap("report")
    checkpoint("manifest")


def _blame_fp16(run: _Run) -> None:
    """The FP16 file failed its gate: name the node where its error appears (export/fp16_blame.py)."""
    import onnx

    from recon.export.fp16_blame import advice, blame_fp16

    fp16_model = onnx.load(str(run.tmp / ONNX_FILES["fp16"]))
    batch = run.measurements[min(run.sizes)]
    blamed = blame_fp16(run.fp32_model, fp16_model, batch, threads=run.options.threads)
    run.report.setdefault("fp16", {})["blame"] = blamed
    run.fp16_advice = advice(blamed)


def _refuse_failed_parity(run: _Run) -> None:
    failures = [f"{c.candidate} vs {c.reference}: {c.reason}" for c in run.comparisons if not c.passed]
    if run.fp16_advice:
        failures.append(run.fp16_advice)
    if failures and not run.options.allow_mismatch:
        raise ExportError(
            f"parity failed ({'; '.join(failures)}); nothing was written (--allow-mismatch writes it)"
        )
    if failures:
        run.notes.append(f"parity failed but --allow-mismatch was given: {'; '.join(failures)}")


def _summary(run: _Run, final: Path) -> dict[str, Any]:
    manifest = run.manifest
    summary: dict[str, Any] = {
        "artifact": str(final),
        "name": manifest.name,
        "task": manifest.task,
        "model": run.options.name(),
        "weights": run.source["kind"],
        "weights_path": run.source.get("weights_path"),
        "weights_sha256": run.source.get("weights_sha256"),
        "input_shape": list(manifest.input.shape),
        "output_shape": list(manifest.output.shape),
        "batch": manifest.batch.to_json(),
        "spatial": None if manifest.spatial is None else manifest.spatial.to_json(),
        "files": {name: entry.to_json() for name, entry in manifest.files.items()},
        "parity": manifest.parity,
        "consistency": None if manifest.consistency is None else manifest.consistency.to_json(),
        "golden": None if manifest.golden is None else manifest.golden["tolerances"],
        "version": int(final.name) if run.options.version_of is not None else None,
        "notes": run.notes + [f"network: {w}" for w in run.source.get("probe", {}).get("warnings", [])],
        "timings_s": run.clock.timings,
    }
    if "geometry_change" in run.report:
        summary["geometry"] = run.report["geometry_change"]
    if "probe" in run.source:  # a user's network: what was measured (also in the manifest's model.probe)
        summary["network"] = {"config": run.source["config"], "probe": run.source["probe"]}
    return summary


def _write_triton(run: _Run, final: Path) -> list[str]:
    from recon.export.triton import write_triton_repository

    run.say("writing the Triton repository")
    folders, notes = write_triton_repository(
        run.options.triton_repo,
        final,
        run.manifest.to_json(),
        onnx_precision="fp16" if run.options.fp16 else "fp32",
        force=run.options.force,
        version=int(final.name) if run.options.version_of is not None else None,
        **run.options.triton,
    )
    run.notes.extend(notes)  # the summary's "notes" list
    return [str(folder) for folder in folders]


def export_artifact(options: ExportOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run the export; return a JSON summary. Raises ExportError (one line) on any user-facing failure."""
    say = progress or (lambda message: None)
    held: list[str] = []
    if options.add:
        from recon.export.add_variants import merged_options

        options, held = merged_options(options)
        holds = ", ".join(held) or "fp32 only"
        say(f"adding to {options.target()} (it holds: {holds}; every file is re-made and re-verified)")
    _check_options(options)
    writer = ArtifactWriter(options.target(), force=options.force)
    writer.check_target()  # fail before minutes of work
    notes: list[str] = []
    engine: dict[str, Any] = {}  # the summary's "engine": built or not, and why not
    build_trt = _tensorrt_wanted(options, notes, engine)
    run = _prepare(options, say, _Clock())
    if options.add:
        from recon.export.add_variants import check_same_weights

        check_same_weights(options.target(), run.source)
    run.notes = notes
    with writer as tmp:
        run.tmp = tmp
        _write_onnx(run)
        if options.fp16:
            _write_fp16(run)
        if options.int8:
            _write_int8(run)
        run.manifest.save(tmp)
        _check_parity(run)
        if options.consistency_images > 0:
            _write_consistency(run)
        if build_trt:
            _build_tensorrt(run)
        if options.golden_images > 0:
            _write_golden(run)
        run.manifest.lineage = export_lineage(options, run.source)
        _write_report(run)
        _refuse_failed_parity(run)
        say("writing the artifact")
        final = writer.commit()
    summary = _summary(run, final)
    summary["engine"] = engine
    if options.triton_repo is not None:
        summary["triton_models"] = _write_triton(run, final)
    return summary
