"""TensorRT: the builder's decisions and the inspector's verdicts as plain data (anywhere), and real engine
builds (where TensorRT and a GPU exist). No builder installs here: `apply_settings` is checked on a recorder
of the calls it makes, with the real enums of the lean bindings (tensorrt-lean-cu13) where installed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from recon.export.errors import ExportError
from recon.export.tensorrt_build import (
    DEFAULT_TIMING_CACHE,
    EngineOptions,
    apply_settings,
    builder_settings,
    check_engine_precision,
    cuda_device_info,
    format_precision,
    layer_nodes,
    layer_precision,
    network_creation_flags,
    nodes_between,
    precision_problems,
    profile_shapes,
    summarize_layers,
    tactic_precision,
    tensorrt_builder_status,
    timing_cache_path,
)
from recon.export.tensorrt_profile import GraphFootprint

INSPECTOR = json.loads((Path(__file__).parent / "data" / "inspector_ct_fp16.json").read_text())
# recon's cnn CT graph (opset 18, as exported): the FBP nodes are the FP32 island, three convs the network
ISLAND = {"node_Shape_0", "node_matmul", "node_Reshape_161", "node_pad", "node_slice_1", "node_slice_2",
          "node_sub_11", "node_Reshape_164", "node_Reshape_167", "node_Concat_103", "node_expand",
          "node_gather", "node_gather_1", "n3", "n4", "node_Reshape_174", "node_sum_1", "node_Reshape_177",
          "node_mul_63"}  # fmt: skip
CONVS = {"node_conv2d", "node_conv2d_1", "node_conv2d_2"}
# a small graph's size: no limit binds, the profile is the one asked for
SMALL = GraphFootprint(
    widest_elements=64 * 60 * 363, live_bytes=1 << 20, probe_side=363, scales_with_side=False
)


@pytest.mark.parametrize(
    ("text", "precision"),
    [
        ("Row major linear FP32 format", "fp32"),
        ("Float", "fp32"),
        ("Half", "fp16"),
        ("Channel major FP16 format where channel % 8 == 0", "fp16"),
        ("BFloat16", "bf16"),  # once read as fp32 ("float" in "bfloat16")
        ("Row major linear BFloat16 format", "bf16"),
        ("Int8", "int8"),
        ("Row major linear Int64 format", "int64"),
        ("", "unknown"),
    ],
)
def test_inspector_formats_name_their_data_type(text, precision):
    assert format_precision(text) == precision


@pytest.mark.parametrize(
    ("tactic", "precision"),
    [
        ("sm80_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize64x64x64", "fp16"),
        ("sm90_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x32", "tf32"),
        ("sm90_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize64x64x8", "fp32"),
        ("sm80_xmma_gemm_bf16bf16_bf16f32_f32_tn_n", "bf16"),
        ("sm80_xmma_gemm_i8i8_i8i32_f32_tn_n", "int8"),
        ("__myl_MulSum_0xfa6c1858aea1b13b03f90165d7149ec6", None),  # Myelin names the fusion, not the type
    ],
)
def test_tactic_names_state_their_math_precision(tactic, precision):
    assert tactic_precision(tactic) == precision


def test_a_fused_input_cast_does_not_make_an_fp16_conv_read_as_fp32():
    (conv,) = [layer for layer in INSPECTOR["Layers"] if layer["Name"] == "node_conv2d_myl0_3"]
    assert format_precision(conv["Inputs"][0]["Format/Datatype"]) == "fp32"  # what the first version read
    assert layer_precision(conv) == "fp16"
    no_tactic = {**conv, "TacticName": "__myl_CastConvRelu_0x1"}
    assert layer_precision(no_tactic) == "fp16"  # then the output format decides


def test_layers_map_to_onnx_nodes_through_metadata_myelin_names_and_foreign_node_ranges():
    assert layer_nodes({"Name": "node_conv2d_2_myl0_5"}) == {"node_conv2d_2"}
    assert layer_nodes({"Name": "__myl_Move_myl0_0", "Metadata": "[ONNX Layer: a/b][ONNX Layer: c]"}) >= {
        "a/b",
        "c",
    }
    assert {"node_conv2d_1", "node_relu_1"} <= layer_nodes({"Name": "node_conv2d_1 + node_relu_1"})
    chain = {"n0": ["n1"], "n1": ["n2"], "n2": ["n3"], "n3": ["n4"], "n4": []}
    assert {"n1", "n2", "n3"} <= layer_nodes({"Name": "{ForeignNode[n1...n3]}"}, chain)
    assert "n4" not in layer_nodes({"Name": "{ForeignNode[n1...n3]}"}, chain)


def test_a_foreign_node_range_holds_the_paths_between_its_ends_not_a_parallel_branch():
    # x → a → b → c, and x → conv_side → out: a topological order can sort conv_side between a and c
    edges = {"x": ["a", "conv_side"], "a": ["b"], "b": ["c"], "conv_side": ["out"], "c": ["out"], "out": []}
    topological = ["x", "a", "conv_side", "b", "c", "out"]
    assert topological.index("a") < topological.index("conv_side") < topological.index("c")
    assert nodes_between("a", "c", edges) == {"a", "b", "c"}
    held = layer_nodes({"Name": "{ForeignNode[a...c]}"}, edges)
    assert "conv_side" not in held and {"a", "b", "c"} <= held
    # diamond: both arms are on a path
    diamond = {"s": ["l", "r"], "l": ["t"], "r": ["t"], "t": []}
    assert nodes_between("s", "t", diamond) == {"s", "l", "r", "t"}


def test_the_ct_engine_summary_counts_fp16_convs_and_fp32_island_layers():
    summary = summarize_layers(INSPECTOR["Layers"], ISLAND, CONVS)
    assert summary["conv_fp16"] == 3 and summary["conv_fp32"] == 0 and summary["conv_other"] == 0
    assert summary["island_layers"] == 2 and summary["island_reduced_names"] == []
    check_engine_precision(summary, expect_fp16=True)


def test_an_island_layer_on_tf32_or_fp16_is_refused_even_without_fp16():
    layers = copy.deepcopy(INSPECTOR["Layers"])
    layers[0]["TacticName"] = "sm90_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x32"  # TF32 left on
    summary = summarize_layers(layers, ISLAND, CONVS)
    assert summary["island_reduced_names"] == ["node_matmul_myl0_0 (tf32)"]
    with pytest.raises(ExportError, match="FP32-island layers .* reduced precision"):
        check_engine_precision(summary, expect_fp16=False)


def test_an_fp32_network_conv_in_an_fp16_engine_is_refused():
    layers = copy.deepcopy(INSPECTOR["Layers"])
    layers[5]["TacticName"] = "sm80_xmma_fprop_implicit_gemm_f32f32_f32f32_f32_nchwkcrs_nchw"
    layers[5]["Outputs"][0]["Format/Datatype"] = "Row major linear FP32 format"
    summary = summarize_layers(layers, ISLAND, CONVS)
    assert summary["conv_fp32"] == 1 and summary["conv_fp32_names"] == ["node_conv2d_1 + node_relu_1"]
    with pytest.raises(ExportError, match="in FP32 though --fp16"):
        check_engine_precision(summary)
    check_engine_precision(summary, expect_fp16=False)  # an FP32 export may run FP32 convs
    with pytest.raises(ExportError, match="no FP16 layer"):
        check_engine_precision(summarize_layers(INSPECTOR["Layers"][:2], ISLAND, CONVS))


def test_builder_settings_clear_tf32_and_set_strong_typing_only_below_11():
    options = EngineOptions(batch=(1, 4, 8), workspace_mb=512, opt_level=4)
    old = builder_settings(
        options, "10.13.3.9.post1", "measurement", (1, 60, 363), "9.0", cuda_major=13, footprint=SMALL
    )
    new = builder_settings(
        options, "11.4.0.106", "measurement", (1, 60, 363), "9.0", cuda_major=13, footprint=SMALL
    )
    assert old.network_flags == ("STRONGLY_TYPED",) and new.network_flags == ()
    assert old.clear_flags == new.clear_flags == ("TF32",) and new.set_flags == ()
    assert new.workspace_bytes == 512 << 20 and new.optimization_level == 4
    assert new.profiles == ({"measurement": ((1, 1, 60, 363), (4, 1, 60, 363), (8, 1, 60, 363))},)
    assert old.manifest["version"] == "10.13.3.9" and new.manifest["tf32"] is False
    assert new.manifest["profile"] == {"min": 1, "opt": 4, "max": 8} and new.manifest["cuda_major"] == 13


def test_lean_engines_exclude_the_lean_runtime_and_say_so_in_the_manifest():
    settings = builder_settings(
        EngineOptions(version_compatible=True), "11.4.0.106", "x", (1, 8, 8), footprint=SMALL
    )
    assert settings.set_flags == ("VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME")
    assert settings.manifest["version_compatible"] and settings.manifest["lean_runtime_excluded"]
    assert settings.manifest["version"] == "11.4.0.106"  # the lean runtime must match it exactly


def test_a_profile_out_of_order_is_refused():
    assert profile_shapes((2, 2, 2), (1, 8, 8)) == ((2, 1, 8, 8),) * 3
    for batch in ((0, 1, 2), (4, 2, 8), (1, 8, 4)):
        with pytest.raises(ExportError, match="min <= opt <= max"):
            profile_shapes(batch, (1, 8, 8))


def test_a_symbolic_size_graph_gets_a_spatial_profile_and_the_manifest_records_it():
    assert profile_shapes((1, 8, 32), (1, 256, 256), (64, 512, 2048)) == (
        (1, 1, 64, 64),
        (8, 1, 512, 512),
        (32, 1, 2048, 2048),
    )
    tiny = GraphFootprint(widest_elements=64 * 64, live_bytes=64 * 64, probe_side=64)  # 1 channel, 1 B/px
    settings = builder_settings(
        EngineOptions(), "11.4.0.106", "x", (1, 256, 256), spatial=(64, 512, 2048), footprint=tiny
    )
    assert settings.profiles[0]["x"][2] == (32, 1, 2048, 2048)
    assert settings.manifest["spatial_profile"] == {"min": 64, "opt": 512, "max": 2048}
    plain = builder_settings(EngineOptions(), "11.4.0.106", "x", (1, 8, 8), footprint=SMALL)
    assert "spatial_profile" not in plain.manifest


def _trt_enums():
    """TensorRT's enums: the real ones of the lean bindings where installed (`BuilderFlag` etc. are there;
    `NetworkDefinitionCreationFlag` is builder-only), else their NvInfer.h values."""
    from types import SimpleNamespace

    network_flag = SimpleNamespace(
        STRONGLY_TYPED=1
    )  # NvInfer.h 10.x: kEXPLICIT_BATCH = 0, kSTRONGLY_TYPED = 1
    try:
        import tensorrt_lean as trt
    except ImportError:
        names = ("TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME")
        return SimpleNamespace(
            BuilderFlag=SimpleNamespace(**{n: n for n in names}),
            MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
            ProfilingVerbosity=SimpleNamespace(DETAILED="DETAILED"),
            NetworkDefinitionCreationFlag=network_flag,
        )
    return SimpleNamespace(
        BuilderFlag=trt.BuilderFlag,
        MemoryPoolType=trt.MemoryPoolType,
        ProfilingVerbosity=trt.ProfilingVerbosity,
        NetworkDefinitionCreationFlag=network_flag,
    )


class _Recorder:
    """Stands in for TensorRT's builder, config and profile objects (no builder installs here): records
    what recon does to them, so that the settings' effect is checked, not restated."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.flags: set = set()

    def create_builder_config(self):
        return self

    def create_optimization_profile(self):
        profile = _Recorder()
        self.calls.append(("profile", profile))
        return profile

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)
        self.calls.append(("clear", flag))

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))

    def __setattr__(self, name, value):
        if name in ("calls", "flags"):
            return object.__setattr__(self, name, value)
        self.calls.append(("=", name, value))


def test_the_builder_config_gets_tf32_cleared_and_every_derived_profile():
    trt = _trt_enums()
    wide = GraphFootprint(widest_elements=16 * 64 * 64, live_bytes=200 * 64 * 64, probe_side=64, multiple=16)
    for options in (EngineOptions(), EngineOptions(version_compatible=True)):
        settings = builder_settings(
            options, "10.13.3.9", "x", (1, 256, 256), "9.0", spatial=(64, 512, 2048), footprint=wide
        )
        config = _Recorder()
        config.flags.add(trt.BuilderFlag.TF32)  # on by default (NvInfer.h)
        apply_settings(trt, config, None, settings)
        assert trt.BuilderFlag.TF32 not in config.flags and ("clear", trt.BuilderFlag.TF32) in config.calls
        lean = {trt.BuilderFlag.VERSION_COMPATIBLE, trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME}
        assert (lean <= config.flags) == options.version_compatible
        added = [c[1] for c in config.calls if c[0] == "add_optimization_profile"]
        assert len(added) == len(settings.profiles) == 2
        shapes = [p.calls[0] for p in added]  # ("set_shape", name, min, opt, max)
        assert [s[4][0] for s in shapes] == [32, 5] and all(s[1] == "x" for s in shapes)
        assert ("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 4096 << 20) in config.calls


def test_strong_typing_sets_bit_one_of_the_network_flags():
    # create_network(flags): 1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED); its value is 1
    assert network_creation_flags(("STRONGLY_TYPED",), _trt_enums().NetworkDefinitionCreationFlag) == 2
    assert network_creation_flags(("STRONGLY_TYPED",), {"STRONGLY_TYPED": 1}) == 0b10
    assert network_creation_flags((), {"STRONGLY_TYPED": 1}) == 0
    assert network_creation_flags(("A", "B"), {"A": 0, "B": 3}) == 0b1001


def test_the_builder_flag_names_recon_uses_exist_in_the_real_bindings():
    trt = pytest.importorskip("tensorrt_lean", reason="tensorrt-lean-cu13 is not installed here")
    for flag in ("TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"):
        assert hasattr(trt.BuilderFlag, flag), flag
    assert int(trt.BuilderFlag.TF32) == 6  # NvInfer.h kTF32
    assert hasattr(trt.MemoryPoolType, "WORKSPACE") and hasattr(trt.ProfilingVerbosity, "DETAILED")
    assert hasattr(trt.LayerInformationFormat, "JSON")
    context = trt.IExecutionContext
    for name in (
        "set_optimization_profile_async",
        "set_input_shape",
        "set_tensor_address",
        "execute_async_v3",
    ):
        assert hasattr(context, name), name
    assert hasattr(trt.ICudaEngine, "num_optimization_profiles")


def test_the_layer_verdict_is_a_list_of_problems_and_raises_only_when_asked():
    layers = copy.deepcopy(INSPECTOR["Layers"])
    layers[5]["TacticName"] = "sm80_xmma_fprop_implicit_gemm_f32f32_f32f32_f32_nchwkcrs_nchw"
    layers[5]["Outputs"][0]["Format/Datatype"] = "Row major linear FP32 format"
    problems = precision_problems(summarize_layers(layers, ISLAND, CONVS))
    assert len(problems) == 1 and "in FP32 though --fp16" in problems[0]
    assert precision_problems(summarize_layers(INSPECTOR["Layers"], ISLAND, CONVS)) == []
    assert EngineOptions().layer_check == "warn"  # until a real engine's inspector JSON is the fixture


def test_the_default_timing_cache_is_keyed_on_tensorrt_and_gpu_and_a_chosen_one_is_kept(tmp_path):
    a = timing_cache_path(DEFAULT_TIMING_CACHE, "10.13.3.9.post1", "9.0")
    b = timing_cache_path(DEFAULT_TIMING_CACHE, "11.4.0.106", "9.0")
    c = timing_cache_path(DEFAULT_TIMING_CACHE, "11.4.0.106", "8.6")
    assert a.name == "tensorrt-10.13.3.9-sm90.timing-cache" and len({a, b, c}) == 3
    assert timing_cache_path(tmp_path / "mine.cache", "11.4.0.106", "9.0") == tmp_path / "mine.cache"
    assert timing_cache_path(None, "11.4.0.106", "9.0") is None


def test_the_gpu_probe_answers_without_touching_tensorrt():
    device, reason = cuda_device_info()
    assert (device is None) == bool(reason)
    trt, device2, why = tensorrt_builder_status()
    if device is None:
        assert trt is None and why == reason


needs_builder = pytest.mark.skipif(
    tensorrt_builder_status()[0] is None,
    reason=f"no TensorRT engine build here: {tensorrt_builder_status()[2]}",
)


@pytest.mark.gpu
@needs_builder
@pytest.mark.parametrize("lean", [False, True])
def test_an_fp16_ct_engine_builds_with_fp16_convs_and_passes_parity(exported, tmp_path, lean):
    # recon[gpu] does not bring tritonclient (recon[triton] does): skip with that reason, not an ImportError
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (recon[triton])")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from recon.export.triton import write_triton_repository
    from recon.runtime.artifact.manifest import load_manifest

    directory, summary = exported("resunet", "ct", engine="trt", lean=lean, timing_cache=tmp_path / "cache")
    manifest = load_manifest(directory)
    plan = manifest.files["model.plan"]
    assert plan.precision == "fp16" and plan.tensorrt["version_compatible"] is lean
    assert plan.tensorrt["compute_capability"].count(".") == 1 and plan.tensorrt["version"]
    assert plan.tensorrt["profile"] == {"min": 1, "opt": 2, "max": 4} and plan.tensorrt["tf32"] is False
    assert plan.tensorrt["profiles"] == [{"batch": [1, 2, 4]}]  # the small CT graph: one, as asked
    assert (tmp_path / "cache").stat().st_size > 0  # the timing cache persisted
    report = json.loads((directory / "parity.json").read_text())
    layers = report["tensorrt"]["layers"]
    assert layers["conv_fp16"] > 0 and layers["conv_fp32"] == 0 and not layers["island_reduced_names"]
    assert layers["inspector"]  # the raw inspector JSON: copy it over data/inspector_ct_fp16.json
    assert manifest.parity["tensorrt_vs_onnxruntime-fp32"]["passed"] and manifest.parity["passed"]

    folders, _ = write_triton_repository(
        tmp_path / "repo", directory, manifest.to_json(), onnx_precision="fp16"
    )
    config = text_format.Parse((folders[1] / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
