"""The fast training step: `torch.compile` (inductor) of the functions an update repeats, and
where bf16 autocast pays.

An update is a 64-step posterior loop at batch 16, a 15-step imagination at batch 1,024 and
two loss tails. Compiling each of those step functions, rather than the whole update, keeps
the graphs small (seconds to compile, not minutes for 64 + 15 unrolled steps) and the
loops in Python; the fused kernels remove most of eager's ~90k small aten calls.

`compile`: `auto` compiles where inductor has a backend (a C++ compiler on CPU, triton on
CUDA), `on` insists, `off` runs eager. `precision` (see `agents.runtime.select_device`):
bf16 autocast runs the whole update on CUDA; on CPU only the imagination and the
actor-critic losses (batch 1,024 x 16), because in the world-model loss (a batch-16
posterior loop) the casts cost more than the bf16 matmuls save.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

COMPILE_CHOICES = ("auto", "on", "off")


def compiler_missing(device: torch.device) -> str | None:
    """Why inductor cannot compile for `device` here, or None when it can."""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (pip install triton)"
        return None
    from torch._inductor import config as inductor_config

    cxx = inductor_config.cpp.cxx[0] or "g++"
    if shutil.which(cxx) is None and shutil.which("g++") is None:
        return f"no C++ compiler ({cxx}) on PATH (apt install g++)"
    return None


def resolve_compile(setting: str | bool, device: torch.device) -> bool:
    """`auto` -> whether inductor works for `device`; `on` without a compiler is an error."""
    if isinstance(setting, bool):  # YAML reads a bare on/off as a boolean
        setting = "on" if setting else "off"
    if setting not in COMPILE_CHOICES:
        raise ValueError(f"compile '{setting}' unknown; use {', '.join(COMPILE_CHOICES)}")
    if setting == "off":
        return False
    missing = compiler_missing(device)
    if missing and setting == "on":
        raise ValueError(f"compile 'on' asked for, but {missing}; use compile=off or auto")
    return missing is None


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (a count that grows on every recompile)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompileClock:
    """Wall seconds of the calls during which dynamo compiled a graph: the warm-up a run
    pays once (`perf/compile_s`). Calls that compile nothing add nothing."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.graphs = 0

    def timed(self, fn: Callable, *args, **kwargs):
        before, start = graphs_compiled(), time.perf_counter()
        out = fn(*args, **kwargs)
        new = graphs_compiled() - before
        if new:
            self.seconds += time.perf_counter() - start
            self.graphs += new
        return out


def compile_step(fn: Callable, device: torch.device, graphs: bool = False) -> Callable:
    """`fn` compiled for fixed shapes: a run uses a handful (training batch, env counts), and
    static-shape kernels are faster. `graphs`: on CUDA, also capture CUDA graphs, for
    functions run without gradients; outputs are cloned, as the next replay reuses them."""
    if not (graphs and device.type == "cuda"):
        return torch.compile(fn, dynamic=False)
    compiled = torch.compile(fn, dynamic=False, mode="reduce-overhead")

    def replay(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        return torch.utils._pytree.tree_map(
            lambda x: x.clone() if isinstance(x, torch.Tensor) else x, out)

    return replay


def configure_dynamo(per_function: int = 64) -> None:
    """Dynamo compiles each function for at most 8 guard sets (instances and shapes) and
    then silently runs it eager. One run needs ~4 per function, but a process holding
    several agents (a benchmark, a test session) needs more.

    A function that fails to compile runs eager, with dynamo's warning, instead of stopping
    the run: a process killed while inductor writes a kernel can leave a truncated file in
    its cache (our crash trials found one), and every later load of that kernel fails.
    Empty kernel libraries are removed here first, so inductor rebuilds them (the failure
    then costs a compile, not an eager run).

    Inductor's caches (compiled kernels, FX graphs, AOT autograd graphs) go to
    `$XDG_CACHE_HOME/dreamjepa/inductor` (default `~/.cache/...`) unless
    TORCHINDUCTOR_CACHE_DIR names another folder: torch's default lives under /tmp, which a
    reboot empties, and with a cold cache every process compiles its kernels afresh.
    Importing inductor writes its default into TORCHINDUCTOR_CACHE_DIR, so that value
    counts as unset; inductor reads the variable again at every cache access."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())
    drop_truncated_kernels()
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, per_function)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit,
                                             16 * per_function)
    config.suppress_errors = True


def inductor_cache_dir() -> Path:
    """The folder our processes keep inductor's caches in (see `configure_dynamo`)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dreamjepa" / "inductor"


def drop_truncated_kernels(min_age_s: float = 600.0) -> int:
    """Delete the empty `.so` files in inductor's cache (left by a process killed while it
    wrote them) older than `min_age_s`, so that one another process is writing right now
    stays; returns how many."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    dropped, now = 0, time.time()
    for path in Path(cache_dir()).glob("*/*.so"):
        try:
            info = path.stat()
            if info.st_size == 0 and now - info.st_mtime > min_age_s:
                path.unlink()
                dropped += 1
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    return dropped


def compile_update(wm, ac, device: torch.device) -> None:
    """Replace, on these instances, the step functions an update repeats by compiled ones.

    The eager methods stay on the class; the compiled ones shadow them as instance
    attributes, so `torch.compile` never sees the Python loops that call them."""
    configure_dynamo()
    rssm = wm.rssm
    rssm.obs_step = compile_step(rssm.obs_step, device)
    rssm.imagine_step = compile_step(rssm.imagine_step, device, graphs=True)
    wm.encode = compile_step(wm.encode, device)
    wm.terms = compile_step(wm.terms, device)
    ac.imagined_losses = compile_step(ac.imagined_losses, device)
    ac.repval_terms = compile_step(ac.repval_terms, device)


def compile_rollout(fn: Callable, device: torch.device) -> Callable:
    """A planner's batched rollout-and-score function, compiled (no gradients; one graph
    per batch shape), for planners that run their loop outside the acting step."""
    configure_dynamo()
    return compile_step(fn, device, graphs=True)


def compile_policy(act: Callable, device: torch.device) -> Callable:
    """The agent's acting step (posterior update + action), compiled; one graph per env
    count and mode (train samples, eval takes the mode)."""
    configure_dynamo()
    return compile_step(act, device, graphs=True)
