"""The model zoo: every registered model gets the same shape, export and config tests (timm style)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from recon.training.models import (
    RFLayer,
    count_flops,
    count_parameters,
    create_model,
    list_models,
    list_presets,
    model_receptive_field,
    receptive_field,
)

# Every family with its default preset, plus the variants that take another code path.
CASES = [(name, {}) for name in list_models()] + [("resunet", {"attention": True})]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in overrides.items()) for name, overrides in CASES]


def build(name: str, overrides: dict) -> nn.Module:
    model = create_model(name, **overrides).eval()
    # Random BatchNorm statistics, so that folding BN into the convolutions at export is actually exercised.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def test_registry_lists_the_course_families():
    assert {"cnn", "rescnn", "resunet", "vit"} <= set(list_models())
    assert list_presets("resunet")[0] == "small"  # the default comes first
    assert "paper" in list_presets("resunet")


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [(256, 256), (250, 190)], ids=["256x256", "250x190"])
def test_forward_keeps_the_shape_and_treats_samples_independently(name, size):
    model = build(name, {})
    x = torch.randn(3, 1, *size)
    with torch.no_grad():
        batched = model(x)
        single = model(x[:1])
    assert batched.shape == (3, 1, *size)
    assert single.shape == (1, 1, *size)
    assert torch.isfinite(batched).all()
    torch.testing.assert_close(single, batched[:1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=CASE_IDS)
def test_tiny_inputs_keep_their_shape(name, overrides):
    # Smaller than the padding multiple: reflection is impossible there, the models fall back to replicate.
    with torch.no_grad():
        assert build(name, overrides)(torch.randn(2, 1, 5, 7)).shape == (2, 1, 5, 7)


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # raised inside torch.export
@pytest.mark.parametrize(("name", "overrides"), CASES, ids=CASE_IDS)
def test_exports_to_onnx_with_a_dynamic_batch_and_matches_onnxruntime(name, overrides, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = build(name, overrides)
    # 60 × 44 is a multiple of neither 16 nor 8: the exported graph must pad and crop too.
    size = (60, 44)
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 1, *size),),
        str(path),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # one self-contained file
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert "BatchNormalization" not in {node.op_type for node in proto.graph.node}  # folded into Conv
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for batch in (1, 3):
        x = torch.randn(batch, 1, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        (actual,) = session.run(None, {input_name: x.numpy()})
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() < 1e-4


@pytest.mark.parametrize("name", list_models())
def test_config_round_trips_through_json(name):
    model = create_model(name)
    config = json.loads(json.dumps(model.config))
    assert config["name"] == name
    rebuilt = create_model(**config)
    assert rebuilt.config == model.config
    assert type(rebuilt) is type(model)
    rebuilt.load_state_dict(model.state_dict())  # same architecture: every key and shape matches
    x = torch.randn(1, 1, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_overrides_change_the_config_and_none_overrides_are_dropped():
    assert create_model("resunet", c0=8).config["c0"] == 8
    assert create_model("resunet", c0=None).config["c0"] == 16
    assert create_model("resunet", preset="paper", depth=None).config == {
        **create_model("resunet", preset="paper").config
    }


def test_simple_cnn_with_64_filters_has_38145_parameters():
    assert count_parameters(create_model("cnn", n_filters=64)) == 38145
    assert count_parameters(create_model("rescnn", n_filters=64)) == 38145


def test_preset_sizes_match_the_course_and_the_shipping_limit():
    with torch.device("meta"):  # shapes only: the 56 M-parameter preset costs nothing
        paper = count_parameters(create_model("resunet", preset="paper"))
        small = count_parameters(create_model("resunet", preset="small"))
        vit = count_parameters(create_model("vit"))
    assert 55e6 < paper < 57e6  # the course text: ≈ 56 M
    assert 4 * small <= 16e6  # the shipped float32 safetensors must stay ≤ 16 MB
    assert vit == 1_249_089  # the course's ViT (p 8, d 128, depth 4, heads 4, MLP 256) at 256²


def test_receptive_field_follows_the_course_formula():
    assert receptive_field([RFLayer("conv", 3)] * 3) == 7
    # r = 1 + 2 (k3) + 1·1 (k2 s2) + 2·2 (k3 after a stride 2)
    assert receptive_field([RFLayer("a", 3), RFLayer("pool", 2, 2), RFLayer("b", 3)]) == 8
    assert receptive_field(None) is None


def test_simple_cnn_receptive_field_is_7_and_matches_its_gradient_support():
    model = create_model("cnn")
    assert model_receptive_field(model) == 7
    # Empirically: the centre output pixel depends on exactly a 7 × 7 input window.
    x = torch.randn(1, 1, 21, 21, requires_grad=True)
    model(x)[0, 0, 10, 10].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (7, 7)


def test_unet_receptive_fields_cover_the_path_through_the_bottleneck():
    # stem 3, then per level l three 3×3 convs adding 2·2^l each, downsamplings adding 2·2^l, and the same
    # convs again on the way up (ConvTranspose k = s = 2 adds nothing).
    assert model_receptive_field(create_model("resunet")) == 309
    assert model_receptive_field(create_model("vit")) is None  # attention: global


def test_simple_cnn_is_translation_equivariant_away_from_the_borders():
    model = create_model("cnn").eval()
    x = torch.randn(1, 1, 40, 40)
    shift = (5, -3)
    with torch.no_grad():
        shifted_then_model = model(torch.roll(x, shift, dims=(-2, -1)))
        model_then_shifted = torch.roll(model(x), shift, dims=(-2, -1))
    # Stay a receptive-field radius (3) plus the shift away from the borders and from the wrap-around.
    inner = (slice(None), slice(None), slice(3 + 5, 40 - 3 - 5), slice(3 + 3, 40 - 3 - 3))
    torch.testing.assert_close(shifted_then_model[inner], model_then_shifted[inner])
    # …and not exactly at the border, where the zero padding breaks the symmetry.
    assert not torch.allclose(shifted_then_model, model_then_shifted)


@pytest.mark.parametrize(
    ("name", "final_activation", "low", "high"),
    [("cnn", "relu", 0.0, None), ("rescnn", "sigmoid", 0.0, 1.0), ("resunet", "tanh", -1.0, 1.0)],
)
def test_final_activation_bounds_the_output(name, final_activation, low, high):
    model = create_model(name, final_activation=final_activation).eval()
    with torch.no_grad():
        y = model(3 * torch.randn(2, 1, 32, 32))
    assert y.min() >= low
    assert high is None or y.max() <= high


def test_flops_count_conv_multiply_accumulates_twice():
    # SimpleCNN at 256²: 2 · H·W · 9 · (1·64 + 64·64 + 64·1)
    assert count_flops(create_model("cnn"), (256, 256)) == 2 * 256 * 256 * 9 * (64 + 64 * 64 + 64)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("cnn", {"n_filters": 0}, "n_filters"),
        ("cnn", {"kernel_size": 4}, "odd"),
        ("cnn", {"n_layers": 1}, "n_layers"),
        ("cnn", {"act": "swishy"}, "activation"),
        ("rescnn", {"final_activation": "gelu"}, "final_activation"),
        ("resunet", {"depth": 0}, "depth"),
        ("resunet", {"c0": 2.5}, "c0"),
        ("resunet", {"attention": "yes"}, "attention"),
        ("unet", {"convs_per_level": -1}, "convs_per_level"),
        ("vit", {"heads": 3}, "heads"),
        ("vit", {"image_size": 250}, "image_size"),
        ("vit", {"decoder_channels": 1}, "decoder_channels"),
        ("resunet", {"n_filters": 3}, "no hyperparameter"),
        ("resunet", {"preset": "huge"}, "unknown preset"),
        ("nonet", {}, "unknown model"),
    ],
)
def test_bad_hyperparameters_raise_value_error(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model(name, **overrides)
