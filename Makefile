# recon — the commands. `make test` and `make demo` work on a fresh machine: they build their own venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (a local wheel on the development machines). Override for CUDA builds:
#   make venv TORCH_SPEC="torch"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,cpu,openvino,dicom,plot,triton,dev
# The test-networks extra's pins (pyproject.toml), installed without their dependencies so that pip never
# swaps torch or adds a CUDA torchvision beside the CPU torch; the check after it proves torch stayed.
TEST_NETWORKS ?= monai==1.6.1 dynamic-network-architectures==0.4.4
TORCH_PIN := $(patsubst torch==%,%,$(filter torch==%,$(TORCH_SPEC)))
CHECK_TORCH = $(PY) -c "import torch, sys; v = torch.__version__; sys.exit(None if v.split('+')[0] == '$(TORCH_PIN)' else 'torch changed to ' + v)"

.PHONY: venv test test-slow test-all demo bench lint soak clean triton-env test-triton triton-serve bench-triton

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps $(TEST_NETWORKS)
	$(if $(TORCH_PIN),$(CHECK_TORCH))
	touch $@

venv: $(VENV)/.installed

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

test-slow: venv
	$(PY) -m pytest -q -m slow

test-all: venv
	$(PY) -m pytest -q

demo: venv
	BIN=$(VENV)/bin bash scripts/demo.sh

soak: venv
	$(PY) scripts/soak.py

bench: venv
	$(PY) bench/fbp.py
	$(PY) bench/runtime.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
