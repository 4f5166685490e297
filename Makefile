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

# The CPU torch wheel goes in first: a bare `torch` requirement would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,ray,jepa]" torch==2.13.0
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
