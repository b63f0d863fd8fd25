# Two commands for a fresh machine: `make demo` and `make test` (each sets up what is missing).
#
# Set-up: a virtual environment in .venv with the project installed in editable mode, with the test
# tools and Ray (the render-farm tests start a real local Ray cluster).
# torch: on a machine without an NVIDIA driver we install torch==2.13.0 (the CPU build; an unpinned
# `torch` would pull several GB of CUDA packages). With an NVIDIA driver we install the default
# (CUDA) build and the `gpu` extra (nerfacc: the fast ray marcher; the fused hash grid's Triton comes
# with the CUDA torch). Already have torch in .venv? It is left alone.
# Blender tests run real Blender as a module (bpy==5.0.1) in a second venv, .venv-blender, because
# bpy pins numpy 1.26 while the engine uses numpy 2.
# The tests check every GLB with the Khronos glTF-Validator (npm package, pinned in
# tests/gltf/package-lock.json, installed into tests/gltf/node_modules): `make test` needs node + npm.

PYTHON ?= python3
# bpy 5.0.1 ships for Python 3.11 only.
BLENDER_PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BLENDER_VENV ?= .venv-blender
BLENDER_PY := $(BLENDER_VENV)/bin/python
BLENDER_STAMP := $(BLENDER_VENV)/.installed
CPU_TORCH ?= torch==2.13.0
DEMO_PROMPT ?= a red cube
DEMO_FLAGS ?= --preset cpu-demo
PYTEST_ARGS ?=
GLTF_VALIDATOR := tests/gltf/node_modules/gltf-validator/package.json

.PHONY: setup demo test test-fast blender-venv gltf-validator clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the CUDA build of torch"; $(PY) -m pip install -q torch; \
	else \
		echo "no NVIDIA GPU: installing the CPU build $(CPU_TORCH)"; $(PY) -m pip install -q "$(CPU_TORCH)"; \
	fi
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the gpu extra (nerfacc; the fast path)"; \
		$(PY) -m pip install -q -e ".[test,ray,gpu]"; \
	else \
		$(PY) -m pip install -q -e ".[test,ray]"; \
	fi
	@touch $(STAMP)

blender-venv: $(BLENDER_STAMP)

$(BLENDER_STAMP):
	@test -x $(BLENDER_PY) || $(BLENDER_PYTHON) -m venv $(BLENDER_VENV)
	$(BLENDER_PY) -m pip install -q --upgrade pip
	$(BLENDER_PY) -m pip install -q bpy==5.0.1
	@touch $(BLENDER_STAMP)

gltf-validator: $(GLTF_VALIDATOR)

$(GLTF_VALIDATOR): tests/gltf/package.json tests/gltf/package-lock.json
	npm ci --prefix tests/gltf --no-audit --no-fund
	@touch $@

demo: setup
	$(PY) -m backend generate "$(DEMO_PROMPT)" -o out/demo.glb $(DEMO_FLAGS)

# --durations=25: CI logs name the slowest tests (the suite's budget is 15 minutes on a 2-core machine).
# -n 2 (pytest-xdist): two test processes; many tests wait on a server, Blender or a subprocess's imports,
# so two halve the suite's time where one core would sit idle. --dist loadfile: a file's tests share
# module fixtures (one Blender scenario, one server) and output folders, so they stay in one process.
test: setup blender-venv gltf-validator
	$(PY) -m pytest -q --durations=25 -n 2 --dist loadfile $(PYTEST_ARGS)

# Everything but the slow end-to-end tests (CI runs those too).
test-fast: setup gltf-validator
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(BLENDER_VENV) out dist test-output tests/gltf/node_modules
