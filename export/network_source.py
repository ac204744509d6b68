"""A user's own network as a source for the export: `--network PACKAGE.MODULE:FACTORY`, or a module object.

The factory contract (docs/your-own-network.md): `FACTORY(**network_args)` returns a `torch.nn.Module` whose
`forward(x)` maps a (B, 1, H, W) float32 image to a (B, 1, H, W) float32 image. Everything else (which sizes
it takes, its receptive field, whether it is batch independent, its value range) is measured by
`recon.export.probe`, recorded in the manifest, and used exactly where recon's own families use what their
classes declare: the in-graph padding, the tile overlap, the profile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recon.export.errors import ExportError

if TYPE_CHECKING:
    import torch

    from recon.export.probe import NetworkProbe
    from recon.runtime.artifact.task_config import TaskConfig


PROBE_IMAGES = 4


def network_name(spec: str) -> str:
    from recon.training.models.factory import FactoryError, network_name

    try:
        return network_name(spec)
    except FactoryError as error:
        raise ExportError(str(error)) from None


def _library_of(module_path: str) -> dict[str, Any]:
    from recon.training.models.factory import library_of

    return library_of(module_path)


def build_from_factory(spec: str, args: dict[str, Any]) -> torch.nn.Module:
    """recon.training.models.factory.build_from_factory, its refusals as ExportError."""
    from recon.training.models.factory import FactoryError, build_from_factory

    try:
        return build_from_factory(spec, args)
    except FactoryError as error:
        raise ExportError(str(error)) from None


def factory_config(spec: str, args: dict[str, Any]) -> dict[str, Any]:
    from recon.training.models.factory import FactoryError, factory_config

    try:
        return factory_config(spec, args)
    except FactoryError as error:
        raise ExportError(str(error)) from None


def declared_channels(network: torch.nn.Module) -> int | None:
    """The input channels of the first convolution (None without one); a 3-D network is refused here."""
    from torch import nn

    for module in network.modules():
        if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
            raise ExportError(
                f"{type(network).__name__} is a 3-D network ({type(module).__name__}); recon's tasks are 2-D "
                "images (a MONAI network: spatial_dims=2)"
            )
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


def padded_network(network: torch.nn.Module, multiple: int) -> torch.nn.Module:
    """`network` padded to `multiple` inside the graph (export/padded_network.py; itself for multiple 1)."""
    from recon.export.padded_network import PaddedNetwork

    network = unwrap(network)
    return PaddedNetwork(network, multiple) if multiple > 1 else network


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The user's network inside a PaddedNetwork (or itself)."""
    from recon.export.padded_network import PaddedNetwork

    return network.network if isinstance(network, PaddedNetwork) else network


def downsampling_multiple(network: torch.nn.Module) -> int:
    """2^(strided convolutions and pools): the multiple at which a UNet's levels line up without the network's
    own size fix-ups (a guess, checked by the exporter's parity at odd sizes), at most 64."""
    from torch import nn

    count = 0
    for module in unwrap(network).modules():
        stride = getattr(module, "stride", 1)
        if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            stride = stride if isinstance(stride, int) else max(stride or (1,))
            count += int(stride is not None and stride > 1)
    return min(2**count, 64)


def torch_run(network: torch.nn.Module) -> Any:
    """numpy (B, 1, H, W) → numpy, FP32, no grad: how the probe runs a torch network."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return run


def network_inputs(task_cfg: TaskConfig, n: int, seed: int) -> np.ndarray:
    """What the network sees in deployment, in distribution: blurred images, or FBP images for CT."""
    import torch

    from recon.export.parity import simulated_inputs
    from recon.training.tasks import build_physics, network_input

    measurements, _ = simulated_inputs(task_cfg, [n], task_cfg.image_size, seed=seed)
    with torch.no_grad():
        seen = network_input(torch.from_numpy(measurements[n]), task_cfg, build_physics(task_cfg))
    return np.ascontiguousarray(seen.float().numpy())


def positive_twin(network: torch.nn.Module) -> Any | None:
    """A float64 copy of `network` whose every path from input to output is positive: weights |w| normalised
    per output (an average, so nothing overflows), other parameters 1 ("weight": norm scales) or 0 (biases),
    normalisation statistics 0 / 1. Run on a zero image with one impulse, exactly the outputs the impulse
    can reach become non-zero (probe.impulse_field). None when the copy does not run in float64."""
    import copy

    import torch

    twin = copy.deepcopy(network).eval()
    with torch.no_grad():
        for name, parameter in twin.named_parameters():
            if parameter.ndim >= 2:
                magnitude = parameter.abs() + 1e-3
                parameter.copy_(magnitude / magnitude.sum(dim=tuple(range(1, parameter.ndim)), keepdim=True))
            else:
                parameter.fill_(1.0 if name.endswith("weight") else 0.0)
        for module in twin.modules():
            if isinstance(getattr(module, "running_mean", None), torch.Tensor):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    twin = twin.double()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return twin(torch.from_numpy(batch.astype(np.float64))).numpy()

    try:
        run(np.zeros((1, 1, 32, 32)))
    except Exception:  # a network that fixes float32 inside its forward: the random-image probe instead
        return None
    return run


def probe_torch(network: torch.nn.Module, task_cfg: TaskConfig, seed: int) -> tuple[Any, NetworkProbe]:
    """(the network to export: padded if it needs it, in eval mode; what the probe measured)."""
    from recon.export.probe import probe_network

    network = network.eval()
    channels = declared_channels(network)
    probe = probe_network(
        torch_run(network),
        image_size=task_cfg.image_size,
        network_inputs=network_inputs(task_cfg, PROBE_IMAGES, seed + 11),
        declared_channels=channels,
        padded=lambda multiple: torch_run(padded_network(network, multiple).eval()),
        positive_twin=lambda multiple: positive_twin(padded_network(network, multiple)),
        seed=seed,
    )
    return padded_network(network, probe.multiple_of).eval(), probe


def read_card(weights: Path | None) -> dict[str, Any]:
    """The recon-train card beside a .safetensors file (its task, the factory and its args), or {}."""
    if weights is None:
        return {}
    card_path = Path(weights).with_suffix(".json")
    if Path(weights).suffix != ".safetensors" or not card_path.is_file():
        return {}
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) and card.get("model", {}).get("source") == "factory" else {}


def rebuild(config: dict[str, Any]) -> torch.nn.Module:
    """The network a factory config describes (fresh weights), padded as the probe found: for
    `recon-bench --compare-torch` and anything else that needs the torch network back."""
    if config.get("source") != "factory":
        raise ExportError(
            f"the artifact's network came from {config.get('source', 'an unknown source')!r}, not a factory: "
            "there is no torch network to rebuild (export with --network PACKAGE.MODULE:FACTORY for that)"
        )
    network = build_from_factory(config["factory"], config.get("args", {}))
    return padded_network(network, int(config.get("pad_multiple", 1))).eval()


def load_foreign(options: Any) -> tuple[Any, TaskConfig, dict[str, Any]]:
    """(network to export, deployed task config, provenance with the probe) for `--network` or a module.

    Same contract as `exporter.load_network`; the provenance's "config" is the manifest's model config and
    "probe" what was measured.
    """
    import copy

    import torch

    from recon.export.exporter import deployed_task_config
    from recon.runtime.io.files import sha256_of

    card = read_card(options.weights)
    if options.network_module is not None:
        if options.network is not None:
            raise ExportError("give either a network module or --network FACTORY, not both")
        if not isinstance(options.network_module, torch.nn.Module):
            raise ExportError(
                f"export_network() needs a torch.nn.Module, got {type(options.network_module).__name__}"
            )
        # a copy: the caller's module keeps its device, dtype and train/eval mode
        network = copy.deepcopy(options.network_module)
        cls = type(network)
        config: dict[str, Any] = {
            "name": options.name(),
            "source": "module",
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "library": _library_of(cls.__module__),
        }
    else:
        if card and card["model"].get("factory") != options.network:
            raise ExportError(
                f"{options.weights} was trained with --network {card['model'].get('factory')}, "
                f"not {options.network}"
            )
        args = {**card.get("model", {}).get("args", {}), **options.network_args}
        config = factory_config(options.network, args)
        network = build_from_factory(options.network, args)
    network = network.float().cpu()
    weights: dict[str, Any] = {"kind": "random-init", "weights_sha256": None}
    if options.weights is not None:
        from recon.export.checkpoint import load_into

        loaded = load_into(network, Path(options.weights))
        weights = {"kind": "user", "weights_sha256": sha256_of(Path(options.weights)), "checkpoint": loaded}
    elif not options.random_init and options.network_module is None:
        raise ExportError(
            f"--network {options.network}: pass --weights FILE (a state dict, a Lightning checkpoint or "
            ".safetensors), or --random-init to export it untrained"
        )
    trained, deployed = deployed_task_config(options, card)
    exported, probe = probe_torch(network, deployed, options.seed)
    config["pad_multiple"] = probe.multiple_of
    source = {
        **weights,
        "config": config,
        "probe": probe.to_json(),
        "trained_task_config": trained.to_json() if trained is not None else None,
        "card_metrics": card.get("metrics"),
    }
    return exported, deployed, source


def fit_pad_multiple(run: Any, export: Callable[[], Any], info: Any) -> Any:
    """Re-export with a larger in-graph pad multiple until the dynamic-H/W graph agrees with torch at sizes
    that are not multiples of it; returns the last export's info.

    Why: a network may take every size in eager torch through its own Python fix-ups (MONAI's BasicUNet pads
    a decoder feature when its size differs from the skip's), and the export keeps only the branch the
    tracing example took. Padded to a multiple of its downsampling, the graph never needs the fix-up. The
    probe's multiple is tried first, then the downsampling guess, then doubling up to 64; each try is checked
    by the same parity as the final report (exporter.check_spatial_parity).
    """
    from recon.export.exporter import build_pipeline

    multiple = int(run.source["probe"]["multiple_of"])
    guess = downsampling_multiple(run.network)
    tried: list[str] = []
    while True:
        ok, why = _graph_matches(run)
        if ok:
            break
        tried.append(f"pad multiple {multiple}: {why}")
        multiple = max(multiple * 2, guess)
        if multiple > 64 or multiple > run.spatial.min:
            raise ExportError(
                "the exported graph does not match the network at sizes other than the example's "
                f"({'; '.join(tried)}); the network decides something from its input size in Python. Export "
                "it at one size (--spatial N:N:N) or fix its size handling"
            )
        run.network = padded_network(run.network, multiple).eval()
        run.pipeline, run.island_scopes = build_pipeline(run.network, run.task_cfg)
        info = export()
    run.source["config"]["pad_multiple"] = multiple
    if tried:
        run.source["probe"]["graph_pad_multiple"] = multiple
        run.source["probe"]["warnings"].append(
            f"padded to multiples of {multiple} in the graph: the network's own size handling does not "
            f"survive the export ({tried[0]})"
        )
    return info


def _graph_matches(run: Any) -> tuple[bool, str]:
    """(whether the FP32 graph matches torch at other sizes, why not): exporter.check_spatial_parity, with
    onnxruntime's error log hushed (a graph refusing a size is an expected answer here)."""
    import onnxruntime

    from recon.export.exporter import ONNX_FILES, check_spatial_parity

    onnxruntime.set_default_logger_severity(4)
    try:
        result, _ = check_spatial_parity(
            run.options, run.tmp / ONNX_FILES["fp32"], run.pipeline, run.task_cfg, run.spatial
        )
        return result.passed, result.reason
    except Exception as error:  # onnxruntime refuses a shape the graph was specialised away from
        return False, str(error).strip().splitlines()[0][:160]
    finally:
        onnxruntime.set_default_logger_severity(2)


def export_network(
    module: torch.nn.Module | None = None,
    *,
    task: str | TaskConfig = "deblur",
    out: str | Path | None = None,
    factory: str | None = None,
    network_args: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Export a user's image-to-image network to a recon artifact, with the command line's options.

    Give the network as a module object (its current weights are exported; `weights=` loads a checkpoint
    into it first) or as `factory="package.module:function"` with `network_args` (what `recon-export
    --network` does; only then can `recon-bench --compare-torch` rebuild it). `task` is "deblur", "ct" or a
    task config (`CTTask(image_size=256, n_views=60)`). `options` are `ExportOptions` fields: fp16, int8,
    batch, spatial, engine, consistency_images, triton_repo, force, ... Returns the export's JSON summary;
    raises ExportError (one line) when the network is refused or a check fails.

    >>> from monai.networks.nets import BasicUNet
    >>> from recon.export import CTTask, export_network
    >>> net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1)
    >>> export_network(net, task=CTTask(image_size=256, n_views=60), out="art/mine-ct", fp16=True, int8=True)
    """
    from recon.export.exporter import ExportOptions, export_artifact

    if (module is None) == (factory is None):
        raise ExportError(
            "export_network() needs a module or factory='package.module:function' (one of them)"
        )
    overrides = dict(options.pop("task_overrides", {}) or {})
    if not isinstance(task, str):
        overrides = {**{k: v for k, v in task.to_json().items() if k != "task"}, **overrides}
        task = task.task
    opts = ExportOptions(
        task=task,
        out=Path(out) if out is not None else None,
        weights=Path(weights) if weights is not None else None,
        network=factory,
        network_args=dict(network_args or {}),
        network_module=module,
        network_label=name,
        random_init=module is None and weights is None,
        task_overrides=overrides,
        **options,
    )
    return export_artifact(opts, progress=progress)
