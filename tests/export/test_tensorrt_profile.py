"""TensorRT optimization profiles derived from the graph (export/tensorrt_profile.py).

The rule is tested with numbers of its own (the issue's: 16 full-resolution channels at 2048², batch 32, is
exactly 2³¹ elements), the measurement against torch's own tensors on a real export, and, slow, the whole
chain on every shipped model and every registered architecture with the export's default ranges.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recon.export.errors import ExportError
from recon.export.tensorrt_build import EngineOptions, builder_settings
from recon.export.tensorrt_profile import (
    TENSOR_ELEMENT_LIMIT,
    GraphFootprint,
    derive_profiles,
    largest_batch,
    measure_footprint,
)
from recon.runtime.artifact.gpu_profiles import Profile, choose_profile

MiB = 1 << 20
DEFAULT_SPATIAL = (64, 512, 2048)  # the export's default sides (export/exporter.py)
# a ResUNet-like graph: 16 channels at full resolution, ~200 B of live FP16 activations per pixel
RESUNET_LIKE = GraphFootprint(
    widest_elements=16 * 64 * 64, live_bytes=200 * 64 * 64, probe_side=64, multiple=16
)


def _fits(footprint: GraphFootprint, profile: Profile, budget: int) -> bool:
    side = profile.side[2] if profile.side else None
    batch = profile.batch[2]
    return (
        batch * footprint.elements(side) <= TENSOR_ELEMENT_LIMIT
        and batch * footprint.activation_bytes(side) <= budget
    )


def test_the_issues_default_profile_is_cut_below_two_to_the_31_elements():
    # a huge budget: only the element limit binds. 32 x 16 x 2048² = 2^31 is one element too many
    budget = 1 << 50
    profiles = derive_profiles(RESUNET_LIKE, (1, 8, 32), DEFAULT_SPATIAL, budget)
    assert len(profiles) == 2
    assert all(_fits(RESUNET_LIKE, p, budget) for p in profiles)
    full_batch, full_side = profiles
    assert full_batch.batch == (1, 8, 32) and full_batch.side[2] < 2048  # batch 32 up to some side below
    assert full_side.side[0] == 64 and full_side.side[2] == 2048 and full_side.batch[2] == 31
    # the largest side that takes batch 32: 32 x 16 x S² <= 2^31 - 1, S a multiple of the padding (16)
    assert 32 * 16 * RESUNET_LIKE.padded(full_batch.side[2]) ** 2 <= TENSOR_ELEMENT_LIMIT
    assert 32 * 16 * RESUNET_LIKE.padded(full_batch.side[2] + 1) ** 2 > TENSOR_ELEMENT_LIMIT


def test_the_activation_budget_caps_the_batch_at_each_side():
    budget = 4096 * MiB
    profiles = derive_profiles(RESUNET_LIKE, (1, 8, 32), DEFAULT_SPATIAL, budget)
    assert all(_fits(RESUNET_LIKE, p, budget) for p in profiles)
    # 200 B/px x 2048² = 800 MiB an image: five fit in 4 GiB
    assert profiles[-1].batch == (1, 5, 5) and profiles[-1].side[2] == 2048
    assert largest_batch(RESUNET_LIKE, 2048, budget) == 5 and largest_batch(RESUNET_LIKE, 512, budget) == 81


def test_one_profile_when_the_whole_range_fits_and_the_request_is_kept():
    small = GraphFootprint(widest_elements=4 * 64 * 64, live_bytes=20 * 64 * 64, probe_side=64)
    assert derive_profiles(small, (1, 8, 32), DEFAULT_SPATIAL, 4096 * MiB) == [
        Profile((1, 8, 32), (64, 512, 2048))
    ]


def test_a_fixed_size_graph_gives_way_on_the_batch_only():
    fixed = GraphFootprint(
        widest_elements=200_000_000, live_bytes=1 << 30, probe_side=4096, scales_with_side=False
    )
    (profile,) = derive_profiles(fixed, (1, 8, 32), None, 1 << 40)
    assert profile == Profile((1, 8, 10)) and _fits(fixed, profile, 1 << 40)


def test_one_image_that_cannot_fit_is_refused_with_what_to_do():
    with pytest.raises(ExportError, match="lower --spatial MAX"):
        derive_profiles(RESUNET_LIKE, (1, 8, 32), (64, 512, 16384), 256 * MiB)
    with pytest.raises(ExportError, match="min <= opt <= max"):
        derive_profiles(RESUNET_LIKE, (4, 2, 8), DEFAULT_SPATIAL)


def test_a_request_goes_to_the_first_profile_that_holds_it_else_its_batch_is_split():
    profiles = [Profile((1, 8, 32), (64, 512, 1024)), Profile((1, 4, 5), (64, 2048, 2048))]
    assert choose_profile(profiles, 32, 512, 700) == (0, 32)
    assert choose_profile(profiles, 4, 2048, 1500) == (1, 5)
    assert choose_profile(profiles, 32, 2048, 2048) == (1, 5)  # the caller runs 5 at a time
    assert choose_profile([Profile((1, 8, 10))], 32, 256, 256) == (0, 10)  # fixed size
    with pytest.raises(ValueError, match="no TensorRT profile takes images of 4096"):
        choose_profile(profiles, 1, 4096, 64)


def test_builder_settings_take_their_profiles_from_the_graph_footprint():
    settings = builder_settings(
        EngineOptions(activation_budget_mb=1 << 30), "10.13.3.9", "x", (1, 256, 256), spatial=DEFAULT_SPATIAL,
        footprint=RESUNET_LIKE,
    )  # fmt: skip
    for shapes in settings.profiles:
        lo, opt, hi = shapes["x"]
        assert hi[0] * 16 * hi[2] * hi[3] <= TENSOR_ELEMENT_LIMIT  # today's (32, 1, 2048, 2048): 2^31
    assert [p["batch"][2] for p in settings.manifest["profiles"]] == [32, 31]
    assert settings.manifest["footprint"]["widest_elements"] == RESUNET_LIKE.widest_elements


def _torch_widest(network, shape: tuple[int, ...]) -> int:
    """The largest floating tensor any aten op of `network` makes for an input of `shape`, by torch itself."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Widest(TorchDispatchMode):
        widest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
            out = func(*args, **(kwargs or {}))
            sizes = [
                t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()
            ]
            Widest.widest = max([Widest.widest, *sizes])
            return out

    with torch.no_grad(), Widest():
        network(torch.zeros(shape))
    return Widest.widest


def test_the_measured_widest_tensor_is_the_one_torch_makes(exported, saved_weights, torch_pipeline):
    directory, _ = exported("cnn", "deblur")  # the slow test below does every shipped model
    manifest = json.loads((directory / "manifest.json").read_text())
    footprint = measure_footprint(directory / "model.onnx", "measurement", manifest["input"]["shape"], 1)
    pipeline = torch_pipeline(saved_weights("cnn", "deblur"), "cnn", "deblur")
    assert footprint.scales_with_side and footprint.probe_side == 128
    assert footprint.widest_elements == _torch_widest(pipeline, (1, 1, 128, 128))
    entry = manifest["files"]["model.onnx"]["tensorrt"]  # what onnxruntime's TensorRT provider gets
    assert entry["footprint"]["widest_elements"] == footprint.widest_elements
    assert Profile.from_json(entry["provider_profile"]).side[2] == manifest["spatial"]["max"]


def _shipped_cards() -> list[Path]:
    from recon.training.weights import shipped_cards

    return shipped_cards()


@pytest.mark.slow
@pytest.mark.parametrize("source", [*(c.stem for c in _shipped_cards()), "registry"])
def test_every_shipped_model_gets_profiles_within_the_limits_at_the_default_ranges(source, tmp_path):
    """The export's default ranges (batch 1:8:32, sides 64:512:2048) on the real graphs: every shipped card,
    and every registered architecture's default preset (random init) for the deblur task."""
    from recon.export.exporter import DEFAULT_SPATIAL as EXPORT_SPATIAL
    from recon.export.exporter import (
        ExportOptions,
        build_pipeline,
        load_network,
        pad_multiple,
        receptive_field_of,
    )
    from recon.export.onnx_export import export_onnx
    from recon.export.parity import simulated_inputs
    from recon.training.models import list_models

    assert EXPORT_SPATIAL == DEFAULT_SPATIAL
    pairs = [tuple(source.split("-", 1))] if source != "registry" else [(m, "deblur") for m in list_models()]
    for model, task in pairs:
        options = ExportOptions(model=model, task=task, random_init=source == "registry")
        network, task_cfg, _ = load_network(options)
        pipeline, _ = build_pipeline(network, task_cfg)
        size = task_cfg.image_size
        example = __import__("torch").from_numpy(simulated_inputs(task_cfg, [2], size, seed=1)[0][2])
        whole = task == "deblur" and receptive_field_of(network) is not None  # as the exporter decides
        info = export_onnx(
            pipeline, example, tmp_path / f"{model}-{task}.onnx", spatial=(64, 2048) if whole else None
        )
        footprint = measure_footprint(
            tmp_path / f"{model}-{task}.onnx", "measurement", info.input_shape, pad_multiple(network)
        )
        if task == "deblur":  # torch's own widest tensor at the probe (CT's FBP decomposes otherwise in ONNX)
            side = footprint.probe_side
            assert footprint.widest_elements == _torch_widest(pipeline.eval(), (1, 1, side, side)), model
        budget = EngineOptions().activation_budget_mb * MiB
        profiles = derive_profiles(footprint, (1, 8, 32), DEFAULT_SPATIAL if whole else None, budget)
        assert all(_fits(footprint, p, budget) for p in profiles), (model, task, profiles)
        assert profiles[0].batch[0] == 1 and profiles[-1].batch[2] >= 1
        if whole:  # every side up to 2048 is taken by some profile
            assert profiles[-1].side[2] == 2048
