# Two commands do all the set-up: `make run` (set up, then train) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ENV_SPEC ?= dmc:walker-walk
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export RAY_AUTH_MODE ?= disabled

.PHONY: setup system venv run test lint clean FORCE

# Debian packages: headless MuJoCo rendering (EGL, with OSMesa as fallback), venv support,
# and a C++ compiler for torch.compile's CPU kernels (without one the fast path runs eager).
# Each is asked for only where it is missing (a venv and g++ may come from elsewhere).
system:
	@need=""; \
	dpkg -s libosmesa6 libegl1 libgl1-mesa-dri >/dev/null 2>&1 \
	  || need="libegl1 libgl1-mesa-dri libosmesa6"; \
	python3 -c 'import ensurepip, venv' 2>/dev/null || need="$$need python3-venv"; \
	command -v g++ >/dev/null || need="$$need g++"; \
	if command -v apt-get >/dev/null && [ -n "$$need" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends \
	    $$need >/dev/null; fi

# torch goes in first, the build chosen on purpose (a bare `torch` requirement in an empty
# environment pulls a multi-GB CUDA build). TORCH_INDEX=URL picks the wheel index yourself
# (make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128). Otherwise: with an NVIDIA
# GPU (nvidia-smi works), PyPI's default Linux wheel, the CUDA build, or, where that turns
# out a CPU build, the one from TORCH_CUDA_INDEX; without a GPU, the CPU build from
# TORCH_CPU_INDEX, or, where that index cannot be reached, whatever `pip install
# torch==VERSION` finds (a local CPU wheel on our machines).
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
TORCH_CUDA_INDEX ?= https://download.pytorch.org/whl/cu128
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_WANT := $(or $(TORCH_INDEX),$(if $(HAS_GPU),cuda,cpu))
TORCH_BUILD = $(PY) -c 'import torch; print("cuda" if torch.version.cuda else "cpu")' 2>/dev/null
PIP_TORCH = $(PY) -m pip install -q torch==$(TORCH_VERSION)

# The build wanted, in a file rewritten only when the choice changes: a GPU that appeared or
# a TORCH_INDEX on the command line redoes the install below.
$(VENV)/.torch-choice: FORCE
	@mkdir -p $(VENV)
	@echo 'torch==$(TORCH_VERSION) $(TORCH_WANT)' | cmp -s - $@ \
	  || echo 'torch==$(TORCH_VERSION) $(TORCH_WANT)' > $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch-choice
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# A changed choice replaces an installed torch of the other build (pip keeps any 2.13.0).
	@have=$$($(TORCH_BUILD)); case " $? " in *" $(VENV)/.torch-choice "*) \
	  if [ -n "$$have" ] && [ "$$have" != "$(TORCH_WANT)" ]; then \
	    echo "replacing the installed $$have build of torch ($(TORCH_WANT) wanted)"; \
	    $(PY) -m pip uninstall -q -y torch; fi;; esac
	@case "$(TORCH_WANT)" in \
	  cpu) $(PIP_TORCH) --retries 0 --timeout 10 --index-url $(TORCH_CPU_INDEX) 2>/dev/null \
	         || $(PIP_TORCH);; \
	  cuda) $(PIP_TORCH); [ "$$($(TORCH_BUILD))" = cuda ] || { $(PY) -m pip uninstall -q -y torch \
	         && $(PIP_TORCH) --index-url $(TORCH_CUDA_INDEX); };; \
	  *) $(PIP_TORCH) --index-url $(TORCH_INDEX);; \
	esac
	@$(PY) -c 'import torch; print("installed torch", torch.__version__, "-", \
	  f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build")'
	$(PY) -m pip install -q -e ".[dev,ray,jepa,export]" torch==$(TORCH_VERSION)
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

FORCE:
