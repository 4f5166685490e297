"""What every Ray launcher here shares (the suite runners and the sweep): the Ray
command-line arguments, starting or joining Ray, and the GPUs a run asks for."""

from __future__ import annotations

import argparse
import os


def add_ray_args(parser: argparse.ArgumentParser, unit: str = "run") -> None:
    """`--address`, `--num-cpus`, `--cpus-per-UNIT` and `--gpus-per-UNIT`."""
    parser.add_argument("--address", default=None, help="Ray cluster address ('auto', host:port)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of embedded local Ray")
    parser.add_argument(f"--cpus-per-{unit}", type=float, default=1.0)
    parser.add_argument(f"--gpus-per-{unit}", type=float, default=None,
                        help=f"GPUs per {unit} (default: 1 if the cluster has GPUs, else 0)")


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (`--address`) or start embedded local Ray without a dashboard."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        return
    # Workers render MuJoCo headless; pass the GL backend on to every worker.
    env_vars = {k: os.environ.get(k, "egl") for k in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    runtime_env = {"env_vars": env_vars}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=False)


def gpus_per_task(asked: float | None) -> float:
    """`asked`, or 1 when the Ray cluster has GPUs and 0 when it has none."""
    if asked is not None:
        return asked
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
