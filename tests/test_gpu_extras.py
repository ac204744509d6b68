"""The GPU extras resolve to one consistent set per CUDA major (finding 1 of issue 16).

Resolved for real with `pip install --dry-run --report` in a fresh venv (slow: PyPI, ~600 MB of downloads):
- onnxruntime-gpu[cuda,cudnn] and cuda-python resolve fully; their CUDA majors agree with the extra's;
- the TensorRT builder (`tensorrt-cuXX`) resolves with --no-deps only: its `tensorrt_cuXX_libs` are stubs
  that download from NVIDIA's own index, which no machine here reaches. Its metadata must pin those libs to
  its own version, and its major must be < 11;
- the resolved onnxruntime-gpu wheel is downloaded and its TensorRT provider's DT_NEEDED read: the
  libnvinfer major must be the TensorRT major the extra resolves, libcudart the extra's CUDA major;
- the lean runtime extras resolve fully (their libs are real wheels).
The static part (no onnxruntime in [train], the aliases) runs in the default suite.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
SETS = {13: ("gpu-cu13", "lean-cu13"), 12: ("gpu-cu12", "lean-cu12")}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_onnxruntime_is_only_in_cpu_and_the_gpu_sets_and_the_aliases_point_at_cuda_13():
    for extra, requirements in EXTRAS.items():
        names = {_name(r) for r in requirements}
        if extra != "cpu":
            assert "onnxruntime" not in names, f"[{extra}] would put onnxruntime beside onnxruntime-gpu"
    assert EXTRAS["gpu"] == ["recon[gpu-cu13]"] and EXTRAS["lean"] == ["recon[lean-cu13]"]
    for cuda, (gpu, lean) in SETS.items():
        names = {_name(r) for r in EXTRAS[gpu]}
        assert names == {"onnxruntime-gpu", f"tensorrt-cu{cuda}", "cuda-python"}, names
        assert any("[cuda,cudnn]" in r for r in EXTRAS[gpu])
        assert {_name(r) for r in EXTRAS[lean]} == {f"tensorrt-lean-cu{cuda}", "cuda-python"}
        for requirement in EXTRAS[gpu] + EXTRAS[lean]:
            if _name(requirement).startswith("tensorrt"):
                assert "<11" in requirement, f"{requirement}: onnxruntime-gpu's TensorRT provider needs 10.x"


def dt_needed(elf: bytes) -> list[str]:
    """The DT_NEEDED entries of a 64-bit little-endian ELF shared object (what `readelf -d` lists)."""
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1, "not a 64-bit little-endian ELF"
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    needed = []
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        for pos in range(offset, offset + size, entsize or 16):
            tag, value = struct.unpack_from("<qQ", elf, pos)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = elf.index(b"\0", strtab + value)
                needed.append(elf[strtab + value : end].decode())
    return needed


@pytest.fixture(scope="module")
def pip(tmp_path_factory) -> list[str]:
    home = tmp_path_factory.mktemp("resolve-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    return [str(home / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]


def resolve(pip: list[str], requirements: list[str], report: Path, *extra: str) -> dict[str, dict]:
    """{name: metadata} of what pip would install for `requirements` (nothing is installed)."""
    command = [*pip, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
    result = subprocess.run([*command, *extra, *requirements], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    items = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"] for i in items}


def major(version: str) -> int:
    return int(version.split(".")[0])


@pytest.mark.slow
@pytest.mark.parametrize("cuda", sorted(SETS))
def test_each_gpu_extra_resolves_to_one_cuda_major_and_the_tensorrt_its_provider_links(pip, tmp_path, cuda):
    gpu, lean = SETS[cuda]
    builder = [r for r in EXTRAS[gpu] if _name(r).startswith("tensorrt")]
    others = [r for r in EXTRAS[gpu] if r not in builder]
    resolved = resolve(pip, others, tmp_path / "ort.json", "--only-binary=:all:")
    ort_version = resolved["onnxruntime-gpu"]["version"]
    runtimes = [v for k, v in resolved.items() if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", k)]
    assert [major(r["version"]) for r in runtimes] == [cuda], runtimes
    assert major(resolved["cuda-python"]["version"]) == cuda

    trt = resolve(pip, builder, tmp_path / "trt.json", "--no-deps")  # its libs: NVIDIA's index only
    (dist,) = trt.values()
    trt_version = dist["version"]
    assert dist["name"].lower().replace("_", "-") == f"tensorrt-cu{cuda}" and major(trt_version) == 10
    pins = [r for r in dist.get("requires_dist", []) if f"cu{cuda}_libs" in r.replace("-", "_")]
    assert pins and all(trt_version in pin for pin in pins), dist.get("requires_dist")

    wheels = tmp_path / "wheels"
    command = [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
    result = subprocess.run([*command, f"onnxruntime-gpu=={ort_version}"], capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheels.glob("onnxruntime_gpu-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        provider = archive.read("onnxruntime/capi/libonnxruntime_providers_tensorrt.so")
        info = archive.read("onnxruntime/capi/build_and_package_info.py").decode()
    needed = dt_needed(provider)
    nvinfer = [int(n.rsplit(".", 1)[1]) for n in needed if n.startswith("libnvinfer.so.")]
    cudart = [int(n.rsplit(".", 1)[1]) for n in needed if n.startswith("libcudart.so.")]
    assert nvinfer == [major(trt_version)], needed  # the provider loads the TensorRT the extra installs
    assert cudart == [cuda], needed
    assert re.search(rf"cuda_version = '{cuda}\.", info), info

    lean_set = resolve(pip, EXTRAS[lean], tmp_path / "lean.json")  # its top package is an sdist
    assert major(lean_set[f"tensorrt-lean-cu{cuda}"]["version"]) == 10
    assert major(lean_set["cuda-python"]["version"]) == cuda


@pytest.mark.skipif(sys.platform != "linux", reason="ELF shared objects are Linux's")
def test_the_elf_reader_agrees_with_readelf_on_this_pythons_own_libraries():
    import _ctypes
    import shutil

    needed = dt_needed(Path(_ctypes.__file__).read_bytes())
    assert "libc.so.6" in needed
    if shutil.which("readelf"):
        out = subprocess.run(["readelf", "-d", _ctypes.__file__], capture_output=True, text=True).stdout
        assert needed == re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
