# Two commands do all the set-up: `make run` (set up, then train) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ENV_SPEC ?= dmc:walker-walk
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export RAY_AUTH_MODE ?= disabled

.PHONY: setup system venv run test lint clean

# Debian packages for headless MuJoCo rendering (EGL, with OSMesa as fallback).
system:
	@if command -v apt-get >/dev/null && ! dpkg -s libosmesa6 libegl1 libgl1-mesa-dri >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends \
	    libegl1 libgl1-mesa-dri libosmesa6 >/dev/null; fi

# torch goes in first, the build chosen on purpose (a bare `torch` requirement in an empty
# environment pulls a multi-GB CUDA build): with an NVIDIA GPU (nvidia-smi works), PyPI's
# default Linux wheel, which is the CUDA build; without one, the CPU build from PyTorch's
# CPU index, or, where that index cannot be reached, whatever `pip install torch==VERSION`
# finds (a local CPU wheel on our machines). TORCH_INDEX=URL picks the wheel index yourself,
# e.g. make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ]; then \
	  $(PY) -m pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX); \
	elif [ -n "$(HAS_GPU)" ]; then \
	  $(PY) -m pip install -q torch==$(TORCH_VERSION); \
	else \
	  $(PY) -m pip install -q --retries 0 --timeout 10 torch==$(TORCH_VERSION) \
	    --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
	  || $(PY) -m pip install -q torch==$(TORCH_VERSION); \
	fi
	@$(PY) -c 'import torch; print("installed torch", torch.__version__, "-", \
	  f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build")'
	$(PY) -m pip install -q -e ".[dev,ray,jepa]" torch==$(TORCH_VERSION)
	touch $@

setup: system $(VENV)/.installed

run: setup
	$(VENV)/bin/dreamer-run --env $(ENV_SPEC)

# pytest exits 5 when it collected no test: not a failure.
test: setup
	$(PY) -m pytest -q || [ $$? = 5 ]

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) *.egg-info
