"""What a CPU can check of the GPU paths on real exported artifacts (a small cnn CT and deblur export):

- the FP16 graph keeps the FBP in FP32 and runs the network convolutions in FP16;
- the nodes onnxruntime's CUDA provider would pin to the CPU, by its own rule (GetCpuPreferredNodes, see
  `cuda_cpu_pinned` below), are small shape arithmetic, never compute: the CT graph's Shape → Concat only;
- the GPU backends' session options: no `disable_cpu_ep_fallback` (it would make that pin fatal), the
  assignment record on, TF32 off for CUDA, the TensorRT provider's caches keyed on the ONNX sha256;
- the placement record read from a real (CPU) session, and the verdict refusing compute on the CPU.

What stays unchecked here: that the CUDA provider has a kernel for every op and type of these graphs (read
against onnxruntime's OperatorKernels.md, not tested; docs/gpu.md lists it).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from recon.runtime.artifact.manifest import load_manifest
from recon.runtime.backends.onnxruntime import (
    HEAVY_OPS,
    OnnxRuntimeBackend,
    cpu_placed_compute,
    load_tensorrt_libraries,
    node_placement,
    preload_wanted,
    tf32_state,
    trt_cache_paths,
)

# onnxruntime core/framework/fallback_cpu_capability.cc, GetCpuPreferredNodes: a node consuming a CPU tensor
# moves to the CPU when each of its inputs is a CPU tensor, a graph input or an initializer of <= 100
# elements, no input is float16/bfloat16, and the CUDA kernel does not take that input on the CPU anyway.
# CPU tensors start at the outputs of Shape and Size (their CUDA kernels write to host memory).
CPU_OUTPUT_OPS = {"Shape", "Size"}
SMALL_INITIALIZER = 100
# Inputs the CUDA kernels declare InputMemoryType(OrtMemTypeCPUInput) (shape-like), by op: cuda/tensor/*.cc
CUDA_CPU_INPUTS = {
    "Reshape": {1}, "Expand": {1}, "Slice": {1, 2, 3, 4}, "Unsqueeze": {1}, "Squeeze": {1},
    "ConstantOfShape": {0}, "Tile": {1}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Range": {0, 1, 2},
    "TopK": {1}, "Split": {1}, "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1}, "Upsample": {1},
}  # fmt: skip


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def cuda_cpu_pinned(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes onnxruntime's CUDA provider would hand to the CPU (GetCpuPreferredNodes, without
    ORT_AGGRESSIVE_CPU_FALLBACK), assuming a CUDA kernel exists for every node."""
    graph = model.graph
    dtypes = _dtypes(model)
    small = {t.name for t in graph.initializer if int(np.prod(t.dims, dtype=np.int64)) <= SMALL_INITIALIZER}
    small |= {n.output[0] for n in graph.node if n.op_type == "Constant"}  # ORT folds these to initializers
    graph_inputs = {i.name for i in graph.input}
    nodes = list(graph.node)  # indices: protobuf hands out a new wrapper object on each access
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    cpu_tensors = {out for n in nodes if n.op_type in CPU_OUTPUT_OPS for out in n.output}
    candidates = sorted({c for t in cpu_tensors for c in consumers.get(t, [])})  # topological order
    pinned, seen = [], set()
    while candidates:
        current = candidates.pop(0)
        if current in seen:
            continue
        seen.add(current)
        node, place = nodes[current], True
        for index, name in enumerate(node.input):
            if not name:
                continue
            if dtypes.get(name) in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
                place = False
                break
            if name in small or name in graph_inputs:
                continue
            if name not in cpu_tensors or index in CUDA_CPU_INPUTS.get(node.op_type, set()):
                place = False
                break
        if place:
            pinned.append(node)
            cpu_tensors.update(node.output)
            candidates = sorted(set(candidates) | {c for out in node.output for c in consumers.get(out, [])})
    return pinned


@pytest.fixture(scope="module")
def ct(exported):
    directory, _ = exported("cnn", "ct", weights=False, fp16=True)
    return directory


@pytest.fixture(scope="module")
def deblur(exported):
    directory, _ = exported("cnn", "deblur", weights=False, fp16=True)
    return directory


def _compute_dtypes(model: onnx.ModelProto, ops: set[str]) -> dict[str, int]:
    dtypes = _dtypes(model)
    return {node.name: dtypes[node.input[0]] for node in model.graph.node if node.op_type in ops}


def test_the_fp16_ct_graph_keeps_the_fbp_fp32_and_runs_the_network_convs_fp16(ct):
    model = onnx.load(str(ct / "model.fp16.onnx"))
    fbp = _compute_dtypes(model, {"MatMul", "GatherElements", "ReduceSum", "Pad", "Floor"})
    convs = _compute_dtypes(model, {"Conv"})
    assert fbp and set(fbp.values()) == {TensorProto.FLOAT}, fbp
    assert len(convs) == 3 and set(convs.values()) == {TensorProto.FLOAT16}, convs
    graph = model.graph
    assert [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)] == [TensorProto.FLOAT] * 2


@pytest.mark.parametrize("file", ["model.onnx", "model.fp16.onnx"])
def test_the_cuda_provider_pins_only_the_ct_graphs_shape_concat_to_the_cpu(ct, file):
    model = onnx.load(str(ct / file))
    pinned = cuda_cpu_pinned(model)
    # Shape(measurement) → Concat(batch, 1, 1) → Expand's shape input: int64[3] on the host, by design
    assert [n.op_type for n in pinned] == ["Concat"], [(n.op_type, n.name) for n in pinned]
    assert not {n.op_type for n in pinned} & HEAVY_OPS
    dtypes = _dtypes(model)
    assert all(dtypes[out] == TensorProto.INT64 for n in pinned for out in n.output)


def test_the_deblur_graph_has_nothing_the_cuda_provider_pins(deblur):
    for file in ("model.onnx", "model.fp16.onnx"):
        assert cuda_cpu_pinned(onnx.load(str(deblur / file))) == []


def test_gpu_sessions_record_placement_keep_cpu_fallback_and_turn_tf32_off(ct):
    manifest = load_manifest(ct)
    backend = OnnxRuntimeBackend(ct, manifest, name="onnxruntime-cuda", trt_cache_dir="/nonexistent")
    options = backend.session_options()
    assert options.get_session_config_entry("session.record_ep_graph_assignment_info") == "1"
    with pytest.raises(Exception, match="does not have configuration"):  # never set: GPU sessions need it
        options.get_session_config_entry("session.disable_cpu_ep_fallback")
    ((provider, cuda),) = backend.providers()
    assert provider == "CUDAExecutionProvider" and cuda["use_tf32"] == "0"
    assert backend.file == "model.fp16.onnx"  # auto on a GPU: the FP16 graph


def test_the_tensorrt_providers_engine_cache_is_keyed_on_the_onnx_sha256_fp16_and_tf32(ct, tmp_path):
    manifest = load_manifest(ct)
    backend = OnnxRuntimeBackend(ct, manifest, name="onnxruntime-tensorrt", trt_cache_dir=tmp_path)
    (trt_name, trt), (cuda_name, _) = backend.providers()
    assert (trt_name, cuda_name) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    sha = hashlib.sha256((ct / backend.file).read_bytes()).hexdigest()
    assert trt["trt_engine_cache_path"] == str(tmp_path / f"{manifest.name}-{sha[:16]}-fp16-tf32off")
    assert trt["trt_timing_cache_path"] == str(tmp_path / "timing")  # not the working directory
    assert trt["trt_engine_cache_enable"] == "True"
    key = {
        trt_cache_paths(tmp_path, "a", sha, fp16, tf32)[0] for fp16 in (True, False) for tf32 in ("off", "on")
    }
    assert len(key) == 4  # an engine built with TF32 on, or in FP32, is never reused for another setting
    retrained, _ = trt_cache_paths(tmp_path, manifest.name, "f" * 64, True, "off")
    assert str(retrained) != trt["trt_engine_cache_path"]  # new weights, new engine


def test_the_tensorrt_provider_builds_fp16_from_the_fp32_graph_with_its_fp16_flag(ct, tmp_path):
    manifest = load_manifest(ct)
    fp16 = OnnxRuntimeBackend(ct, manifest, name="onnxruntime-tensorrt", trt_cache_dir=tmp_path)
    # weakly typed: an FP16 graph's casts would be hints; the FP32 graph with trt_fp16_enable instead
    assert fp16.precision == "fp16" and fp16.file == "model.onnx"
    assert fp16.providers()[0][1]["trt_fp16_enable"] == "True"
    fp32 = OnnxRuntimeBackend(
        ct, manifest, name="onnxruntime-tensorrt", precision="fp32", trt_cache_dir=tmp_path
    )
    assert fp32.file == "model.onnx" and fp32.providers()[0][1]["trt_fp16_enable"] == "False"
    cuda = OnnxRuntimeBackend(ct, manifest, name="onnxruntime-cuda")
    assert cuda.file == "model.fp16.onnx"  # the CUDA provider runs the FP16 graph as typed


def test_the_tensorrt_providers_profile_is_the_one_derived_at_export(deblur, tmp_path):
    manifest = load_manifest(deblur)
    entry = manifest.files["model.onnx"].tensorrt
    profile = entry["provider_profile"]
    trt = OnnxRuntimeBackend(
        deblur, manifest, name="onnxruntime-tensorrt", trt_cache_dir=tmp_path
    ).providers()
    name, spatial = manifest.input.name, manifest.spatial
    assert (
        trt[0][1]["trt_profile_max_shapes"] == f"{name}:{profile['batch'][2]}x1x{spatial.max}x{spatial.max}"
    )
    assert (
        trt[0][1]["trt_profile_min_shapes"] == f"{name}:{profile['batch'][0]}x1x{spatial.min}x{spatial.min}"
    )
    assert entry["footprint"]["widest_elements"] > 0


def test_tf32_is_switched_off_through_the_environment_and_a_setting_that_leaves_it_on_is_named():
    assert tf32_state({}) == ("off", {"NVIDIA_TF32_OVERRIDE": "0"})  # unset: recon sets it
    assert tf32_state({"NVIDIA_TF32_OVERRIDE": "0"}) == ("off", {})
    assert tf32_state({"NVIDIA_TF32_OVERRIDE": "1"}) == ("on", {})


def test_cuda_libraries_are_preloaded_unless_torch_brought_the_same_cuda_major():
    assert preload_wanted(None, "13.0")  # no torch, or a CPU torch
    assert preload_wanted("12.8", "13.0")  # torch's CUDA 12 does not serve onnxruntime's 13
    assert not preload_wanted("13.0", "13.0") and not preload_wanted("13.2", "13.0")
    assert not preload_wanted(None, None) and not preload_wanted("13.0", "")  # a CPU onnxruntime


def test_without_tensorrt_the_provider_says_which_library_it_lacks(ct):
    note = load_tensorrt_libraries()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "libnvinfer.so.10 cannot be loaded" in note and "tensorrt package is not installed" in note
    backend = OnnxRuntimeBackend(ct, load_manifest(ct), name="onnxruntime-tensorrt")
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers the TensorRT provider")
    with pytest.raises(Exception, match=r"TensorRT: .*libnvinfer\.so\.10"):
        backend.activate()


def test_placement_is_read_from_a_real_session_and_compute_on_the_cpu_is_refused_for_gpus(ct):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    session = ort.InferenceSession(str(ct / "model.onnx"), options, providers=["CPUExecutionProvider"])
    placement = node_placement(session)
    if not placement:
        pytest.skip(f"onnxruntime {ort.__version__} keeps no assignment record")
    names = {n.name for n in onnx.load(str(ct / "model.onnx")).graph.node}
    assert {name for _, _, name in placement} <= names and {ep for ep, _, _ in placement} == {
        "CPUExecutionProvider"
    }
    assert cpu_placed_compute(placement, "CPUExecutionProvider") == []
    refused = cpu_placed_compute(placement, "CUDAExecutionProvider")
    assert {r.split(":")[0] for r in refused} >= {"Conv", "MatMul", "GatherElements"}
    shape_only = [(ep, op, n) for ep, op, n in placement if op in ("Shape", "Concat")]
    assert cpu_placed_compute(shape_only, "CUDAExecutionProvider") == []


@pytest.mark.gpu
def test_on_a_gpu_the_cuda_provider_leaves_only_the_predicted_nodes_on_the_cpu(ct):
    import onnxruntime as ort

    from recon.runtime import Reconstructor

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider")
    predicted = {n.name for n in cuda_cpu_pinned(onnx.load(str(ct / "model.fp16.onnx")))}
    with Reconstructor.from_artifact(ct, backend="cuda") as rec:
        on_cpu = {entry.split(":", 1)[1] for entry in rec.backend.describe().get("nodes_on_cpu", [])}
    assert on_cpu <= predicted | {n for n in on_cpu if n.startswith("node_Shape")}, on_cpu


def test_two_onnxruntime_builds_in_one_environment_are_named():
    from recon.runtime.backends.onnxruntime import onnxruntime_conflict

    assert onnxruntime_conflict(["numpy", "onnxruntime-gpu", "tensorrt-cu13"]) is None
    message = onnxruntime_conflict(["onnxruntime", "onnxruntime_gpu"])
    assert "onnxruntime and onnxruntime-gpu are both installed" in message and "uninstall" in message


def test_the_tensorrt_provider_refuses_a_graph_the_export_found_too_large_and_reads_older_artifacts(
    ct, tmp_path
):
    from recon.runtime.artifact.manifest import ArtifactError

    manifest = load_manifest(ct)
    entry = manifest.files["model.onnx"]  # frozen: the test swaps in edited copies
    error = {"error": "one image needs a tensor of 3,000,000,000 elements"}
    manifest.files["model.onnx"] = dataclasses.replace(entry, tensorrt=error)
    backend = OnnxRuntimeBackend(ct, manifest, name="onnxruntime-tensorrt", trt_cache_dir=tmp_path)
    with pytest.raises(ArtifactError, match="cannot run .*3,000,000,000 elements"):
        backend.providers()
    # exported before profiles were derived: its batch range
    manifest.files["model.onnx"] = dataclasses.replace(entry, tensorrt=None)
    (_, trt), _ = backend.providers()
    assert trt["trt_profile_max_shapes"].startswith(f"{manifest.input.name}:{manifest.batch.max}x")
