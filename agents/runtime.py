"""Process set-up shared by every entry point: device and precision, threads, seeds, the
C allocator."""

from __future__ import annotations

import ctypes
import functools
import os
import random
import sys

import numpy as np
import torch


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and its flags, from /proc/cpuinfo ("unknown", none elsewhere)."""
    model, flags = "unknown", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def cpu_flags() -> frozenset[str]:
    return cpu_info()[1]


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX): bf16 matmuls then run
    2-6x faster than fp32 ones; elsewhere bf16 is emulated and slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def describe_machine() -> dict[str, object]:
    """What a timing or a learning curve ran on: CPU model and flags that decide the fast
    path, cores this process may use, GPU, torch version."""
    model, flags = cpu_info()
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "bf16": cpu_has_bf16(),
        "avx512": "avx512f" in flags,
        "amx": "amx_bf16" in flags,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


CONV_PRECISIONS = ("fp32", "bf16", "auto")


def conv_stacks_bf16(setting: str, precision: str, device: torch.device) -> bool:
    """Whether the image encoder's and decoder's conv stacks run in bf16 on training
    batches (config `conv_precision`): `bf16` where the update's precision is bf16 on a CPU
    (there the world-model loss is otherwise fp32), `auto` the same on CPUs with native
    bf16 only, `fp32` never. CUDA autocasts the whole update already."""
    if setting not in CONV_PRECISIONS:
        raise ValueError(f"conv_precision {setting!r} unknown; use {', '.join(CONV_PRECISIONS)}")
    if precision != "bf16" or device.type != "cpu":
        return False
    return setting == "bf16" or (setting == "auto" and cpu_has_bf16())


def select_device(device: str = "auto", precision: str = "auto") -> tuple[torch.device, str]:
    """CUDA when present, else CPU. Precision `auto`: bf16 autocast on CUDA and on CPUs with
    native bf16 (see `cpu_has_bf16`), else fp32. Asking for CUDA on a machine without it is
    a one-line error naming what is available."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device '{device}' asked for, but this machine has no CUDA device "
                             f"(torch {torch.__version__}); available: cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device '{device}' asked for, but only cuda:0..cuda:{count - 1} "
                             "exist")
    elif dev.type != "cpu":
        raise ValueError(f"device '{device}' is not supported; use auto, cpu, cuda or cuda:N")
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" or cpu_has_bf16() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision '{precision}' unknown; use auto, fp32 or bf16")
    return dev, precision


def set_threads(threads: int = 0) -> int:
    """Torch CPU threads: `threads`, or one per core this process may use when 0."""
    n = int(threads) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


MALLOC_SETTINGS = ("keep", "system")
# glibc's mallopt parameters (malloc.h) and the values `keep` sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 256 << 20))


def set_malloc(setting: str = "keep") -> bool:
    """Config `malloc`. `keep`: glibc's malloc keeps freed memory for the next update instead
    of handing it back to the kernel. With its defaults, every update's tensors above the
    (adaptive) mmap threshold are fresh mmaps and the heap top is trimmed after them, so each
    update faults its working set in again: 36-41k page faults and ~0.07 s of kernel time per
    update in a 1m-state run at ratio 512 on one thread (0.566 s per update; 0.48-0.54 s with
    `keep`, the same run restarted on the same core; README "The fast path").
    `keep` serves blocks up to 32 MiB (glibc's largest mmap threshold) from the heap and
    trims it only above 1 GiB free; the process keeps its peak memory. `system`: glibc's
    defaults. Returns whether the settings were applied (glibc only; elsewhere a no-op)."""
    if setting not in MALLOC_SETTINGS:
        raise ValueError(f"malloc {setting!r} unknown; use {', '.join(MALLOC_SETTINGS)}")
    if setting == "system" or not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _KEEP)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
