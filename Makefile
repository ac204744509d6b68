# recon — the commands. `make test` and `make demo` work on a fresh machine: they build their own venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (a local wheel on the development machines). Override for CUDA builds:
#   make venv TORCH_SPEC="torch"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,cpu,openvino,dicom,tiff,plot,triton-clients,dev
# The test-networks extra's pins (pyproject.toml), installed without their dependencies so that pip never
# swaps torch or adds a CUDA torchvision beside the CPU torch; the check after it proves torch stayed.
TEST_NETWORKS ?= monai==1.6.1 dynamic-network-architectures==0.4.4
TORCH_PIN := $(patsubst torch==%,%,$(filter torch==%,$(TORCH_SPEC)))
CHECK_TORCH = $(PY) -c "import torch, sys; v = torch.__version__; sys.exit(None if v.split('+')[0] == '$(TORCH_PIN)' else 'torch changed to ' + v)"

# The C++ host library (host/): OpenVINO from the venv's openvino wheel, nlohmann-json and OpenSSL from Debian
# (installed here when missing and running as root, as CI does). Builds into build/host (docs/embedding.md).
HOST_BUILD ?= build/host
HOST_APT := cmake g++ nlohmann-json3-dev libssl-dev

.PHONY: venv host host-build test test-slow test-all test-lowest demo bench lint soak clean triton-env \
	test-triton triton-serve bench-triton gpu-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps $(TEST_NETWORKS)
	$(if $(TORCH_PIN),$(CHECK_TORCH))
	touch $@

venv: $(VENV)/.installed

host: venv
	$(MAKE) host-build

# `make host` once the venv exists (tests/host calls this one: it never rebuilds the venv)
host-build:
	@missing=$$(for p in $(HOST_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "make host needs these Debian packages: sudo apt-get install $$missing" >&2; exit 1; fi; \
	fi
	@# configured once; `cmake --build` re-runs the configuration itself when CMakeLists.txt changes
	test -f $(HOST_BUILD)/CMakeCache.txt || cmake -S host -B $(HOST_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DOpenVINO_DIR=$$($(PY) -c "import openvino, os; print(os.path.dirname(openvino.__file__) + '/cmake')")
	cmake --build $(HOST_BUILD) -j$$(nproc)

# The Triton server's own environment, apart from the project's: the nvidia-pytriton wheel bundles a real
# tritonserver 2.51 binary and its python backend; that backend's stub needs numpy < 2 (with numpy 2 it
# returns empty outputs) and runs recon.runtime (+ onnxruntime) from this venv. See docs/triton.md.
TRITON_VENV ?= .triton-venv
TRITON_PY := $(TRITON_VENV)/bin/python
TRITON_REQS := "numpy<2" "nvidia-pytriton==0.7.0" "tritonclient[grpc,http]~=2.50" "onnxruntime>=1.18"

# (rebuilt when pyproject.toml changes; after editing TRITON_REQS, `rm -rf .triton-venv`)
$(TRITON_VENV)/.installed: pyproject.toml
	rm -rf $(TRITON_VENV)
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_PY) -m pip install -q --upgrade pip
	$(TRITON_PY) -m pip install -q $(TRITON_REQS) -e ".[cpu]"
	$(TRITON_PY) -c "import numpy, sys; sys.exit(numpy.__version__ >= '2')"
	touch $@

triton-env: $(TRITON_VENV)/.installed

# The real-server test: export runs in the project venv, tritonserver in $(TRITON_VENV).
test-triton: venv triton-env
	RECON_TRITON_VENV=$(TRITON_VENV) $(PY) -m pytest -q -m triton tests/triton_server

# A local server on REPO (127.0.0.1, HTTP 8000, gRPC 8001, metrics 8002); Ctrl-C stops it.
# TRITON_ARGS="--http-port 9000 --grpc-port 9001 --metrics-port 9002" moves it.
REPO ?= models
TRITON_ARGS ?=
triton-serve: triton-env
	$(TRITON_PY) -m recon.export.triton_server $(REPO) $(TRITON_ARGS)

bench-triton: venv triton-env
	RECON_TRITON_VENV=$(TRITON_VENV) $(PY) bench/triton_server.py

# the real-Triton-server tests have their own target (they need the server's venv): test-triton
test: venv
	$(PY) -m pytest -q -m "not slow and not triton"

# The lowest versions pyproject allows, installed by uv (from PyPI) with --resolution lowest-direct into a venv
# of their own, then the runtime's tests: once as resolved (numpy 1.24) and once with the lowest numpy 2, the
# pairing the bounds must also hold for (onnxruntime < 1.19 failed on import there). torch stays out: a
# lowest resolution of [train] would fetch torch 2.6 from PyPI (a multi-GB CUDA build) instead of the local
# CPU wheel, so the subset is the runtime's, which never imports torch; onnx comes in at [train]'s bound
# because the runtime tests build their small graphs with it.
LOWEST_VENV ?= .venv-lowest
LOWEST_EXTRAS := cpu,dicom,plot,triton,dev
ONNX_SPEC := $(shell grep -o '"onnx>=[0-9.]*"' pyproject.toml)
LOWEST_TESTS := tests/runtime/test_reconstructor.py tests/runtime/test_manifest_entries.py \
	tests/runtime/test_imageio.py tests/runtime/test_dicom.py tests/runtime/test_profiling.py \
	tests/hardening/test_artifact_trust.py tests/export/test_triton.py \
	tests/runtime/test_runtime_cli.py::test_recon_bench_prints_a_table_and_the_overhead_ratio
LOWEST_UV = $(LOWEST_VENV)/bin/uv pip install -q --python $(LOWEST_VENV)/bin/python --resolution lowest-direct
LOWEST_PYTEST = $(LOWEST_VENV)/bin/python -m pytest -q -m "not slow and not triton" -k "not recon_export" \
	-p no:cacheprovider $(LOWEST_TESTS)

test-lowest:
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q "uv>=0.5"
	$(LOWEST_UV) -e ".[$(LOWEST_EXTRAS)]" $(ONNX_SPEC)
	$(LOWEST_VENV)/bin/python -c "import numpy, onnxruntime; print('lowest:', 'numpy', numpy.__version__, \
		'onnxruntime', onnxruntime.__version__)"
	$(LOWEST_PYTEST)
	$(LOWEST_UV) -e ".[$(LOWEST_EXTRAS)]" $(ONNX_SPEC) "numpy>=2"
	$(LOWEST_VENV)/bin/python -c "import numpy; print('lowest with numpy 2:', numpy.__version__)"
	$(LOWEST_PYTEST)

test-slow: venv
	$(PY) -m pytest -q -m slow

test-all: venv
	$(PY) -m pytest -q

demo: venv
	BIN=$(VENV)/bin bash scripts/demo.sh

soak: venv
	$(PY) scripts/soak.py

# The short GPU check (bench/gpu_check.py): installs nothing; GPU parts skip with the reason without CUDA.
# Writes gpu-check.json / gpu-check.md into $(OUT) (default: .). docs/gpu.md says what it checks.
OUT ?= .
gpu-check: venv
	OUT=$(OUT) $(PY) bench/gpu_check.py --quick --footprints bench/data/shipped_footprints.json

bench: venv
	$(PY) bench/fbp.py
	$(PY) bench/runtime.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(LOWEST_VENV) build *.egg-info .pytest_cache
