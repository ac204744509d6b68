# recon — the commands. `make test` and `make demo` work on a fresh machine: they build their own venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (a local wheel on the development machines). Override for CUDA builds:
#   make venv TORCH_SPEC="torch"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,cpu,openvino,dicom,plot,triton,dev

.PHONY: venv test test-slow test-all demo bench lint soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -m "not slow"

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
