"""`dreamer-export`: a trained agent's acting step as one graph for deployment (ONNX or
TorchScript), with the recurrent carry as explicit inputs and outputs.

The graph is encoder -> one posterior RSSM step -> actor, the agent's own `policy` step:

    inputs   [image uint8 N,H,W,C] [vector float32 N,D] is_first bool N
             deter N,deter  stoch N,stoch,classes  prev_action N,A
             latent_noise N,stoch (uniform in [0, 1): the posterior latent's sample)
             [action_noise (policy "sample"): N uniform (discrete) | N,A standard normal]
    outputs  action N,A (one-hot for discrete; in [-1, 1]-ish for continuous, clip it)
             next_deter, next_stoch (the carry for the next step; start from zeros)

Noise is an input so that the graph is a pure function: the same inputs give the same
actions in every runtime (and `agent.policy` gives them too under the same torch seed). A
JSON file beside the graph lists the inputs, outputs and the env's spaces.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
POLICIES = ("mode", "sample")
OUTPUTS = ("action", "next_deter", "next_stoch")  # ONNX names are unique: not "deter"


class ExportError(ValueError):
    """Bad export arguments, or a run that cannot be exported."""


class ActingStep(nn.Module):
    """One acting step of a DreamerV3-family agent on tensors, the carry explicit."""

    def __init__(self, agent, sample: bool):
        super().__init__()
        # The modules the graph needs, not the whole world model (its decoder and heads
        # would ride along in a TorchScript file); shapes come from its latent interface.
        self.encoder, self.rssm, self.actor = agent.wm.encoder, agent.wm.rssm, agent.ac.policy
        self.obs_keys = list(agent.shapes)
        self.sample = sample

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.obs_keys)
        obs = dict(zip(self.obs_keys, inputs[:n]))
        is_first, deter, stoch, prev_action, latent_noise = inputs[n:n + 5]
        embed = self.encoder(obs)
        post, _ = self.rssm.obs_step({"deter": deter, "stoch": stoch}, prev_action, embed,
                                     is_first, latent_noise)
        dist = self.actor(self.rssm.feat(post))
        if self.sample:
            action = dist.sample(inputs[n + 5])
        else:
            action = dist.mode()
        return action.float(), post["deter"].float(), post["stoch"].float()


def input_specs(agent, sample: bool) -> list[dict[str, Any]]:
    """Name, shape (N = batch) and dtype of every graph input, in order."""
    carry = agent.wm.state_shapes
    specs = [{"name": k, "shape": ["N", *shape], "dtype": "uint8" if k == "image" else "float32"}
             for k, shape in agent.shapes.items()]
    specs += [
        {"name": "is_first", "shape": ["N"], "dtype": "bool"},
        {"name": "deter", "shape": ["N", *carry["deter"]], "dtype": "float32"},
        {"name": "stoch", "shape": ["N", *carry["stoch"]], "dtype": "float32"},
        {"name": "prev_action", "shape": ["N", agent.act_dim], "dtype": "float32"},
        {"name": "latent_noise", "shape": ["N", carry["stoch"][0]], "dtype": "float32"},
    ]
    if sample:
        shape = ["N"] if agent.discrete else ["N", agent.act_dim]
        specs.append({"name": "action_noise", "shape": shape, "dtype": "float32"})
    return specs


def output_specs(agent) -> list[dict[str, Any]]:
    carry = agent.wm.state_shapes
    shapes = {"action": [agent.act_dim], "next_deter": list(carry["deter"]),
              "next_stoch": list(carry["stoch"])}
    return [{"name": k, "shape": ["N", *shapes[k]], "dtype": "float32"} for k in OUTPUTS]


def example_inputs(specs: list[dict[str, Any]], batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Valid inputs of the given specs: random observations, a zero carry, fresh noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for spec in specs:
        shape = [batch if d == "N" else d for d in spec["shape"]]
        name = spec["name"]
        if name == "image":
            out.append(torch.randint(0, 256, shape, dtype=torch.uint8, generator=g))
        elif name == "is_first":
            out.append(torch.ones(shape, dtype=torch.bool))
        elif name in ("deter", "stoch", "prev_action"):
            out.append(torch.zeros(shape))
        elif name == "action_noise" and len(shape) == 2:
            out.append(torch.randn(shape, generator=g))
        elif name in ("latent_noise", "action_noise"):
            out.append(torch.rand(shape, generator=g))
        else:
            out.append(torch.randn(shape, generator=g))
    return out


def _finite(x: Any) -> Any:
    """Numbers (nested in lists) with every non-finite one as None."""
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x if np.isfinite(x) else None


def space_spec(space) -> dict[str, Any]:
    """A JSON description of a Gymnasium space (Box, Discrete, Dict)."""
    kind = type(space).__name__
    if kind == "Dict":
        return {"type": "Dict", "spaces": {k: space_spec(v) for k, v in space.spaces.items()}}
    if kind == "Discrete":
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if kind == "Box":
        # Bounds as one number when uniform (images, [-1, 1] actions), else per element;
        # null where unbounded (strict JSON has no Infinity).
        bound = lambda b: (_finite(float(b.flat[0])) if np.all(b == b.flat[0])
                           else _finite(b.tolist()))
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": bound(np.asarray(space.low, np.float64)),
                "high": bound(np.asarray(space.high, np.float64))}
    return {"type": kind}


def export_policy(agent, out: str | Path, fmt: str = "onnx", policy: str = "mode",
                  batch: int = 1, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the acting step of `agent` to `out` (onnx or torchscript) and its spec to
    `out` + `.json`; returns the spec. The batch size stays free (N) in both formats."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} unknown; allowed: {', '.join(FORMATS)}")
    if policy not in POLICIES:
        raise ExportError(f"policy {policy!r} unknown; allowed: {', '.join(POLICIES)}")
    if not hasattr(agent, "wm") or not hasattr(agent, "ac"):
        raise ExportError(f"{type(agent).__name__} is not a DreamerV3-family agent "
                          "(needs a world model `wm` and an actor-critic `ac`)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sample = policy == "sample"
    step = ActingStep(agent, sample)
    with _exported(step):
        spec = _export(agent, step, out, fmt, policy, batch, sample, meta)
    return spec


@contextlib.contextmanager
def _exported(step: ActingStep):
    """The acting step's modules (the agent's own) in eval mode, fp32, on the CPU while it is
    exported, and as they were afterwards: the caller's agent goes on acting and training
    (on its device) after an export."""
    modules = [step.encoder, step.rssm, step.actor]
    before = [(m, m.training, next(m.parameters()).device) for m in modules]
    step.eval().float().cpu()
    try:
        yield
    finally:
        for module, training, device in before:
            module.to(device).train(training)


def _export(agent, step: ActingStep, out: Path, fmt: str, policy: str, batch: int,
            sample: bool, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    specs = input_specs(agent, sample)
    inputs = example_inputs(specs, max(batch, 2))
    names = [s["name"] for s in specs]
    with torch.no_grad():
        if fmt == "torchscript":
            with warnings.catch_warnings():
                # The RSSM picks one of two equivalent matmul layouts by batch size; the trace
                # keeps the small-batch one, which is right at every batch.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(step, tuple(inputs), check_trace=False)
            traced.save(str(out))
        else:
            export_onnx(step, inputs, names, out)
    spec = {"format": fmt, "policy": policy, "inputs": specs, "outputs": output_specs(agent),
            "carry": "start from zeros for deter, stoch and prev_action; feed the outputs "
                     "next_deter, next_stoch and action back as the next step's inputs",
            "action": ("one-hot: the env action is its argmax" if agent.discrete else
                       "clip to [-1, 1]; the env's Box is scaled to [-1, 1]"),
            "observation_space": space_spec(agent.obs_space),
            "action_space": space_spec(agent.act_space), **dict(meta or {})}
    Path(str(out) + ".json").write_text(json.dumps(spec, indent=2, allow_nan=False))
    return spec


def export_onnx(step: nn.Module, inputs: list[torch.Tensor], names: list[str], out: Path) -> None:
    """torch.onnx's dynamo exporter with the batch dimension left free."""
    for module in ("onnx", "onnxscript"):  # the `export` extra
        try:
            importlib.import_module(module)
        except ImportError:
            raise ExportError(f"--format onnx needs {module}: pip install -e '.[export]', "
                              "or use --format torchscript") from None
    batch = torch.export.Dim("N", min=1, max=65536)
    shapes = (tuple({0: batch} for _ in inputs),)  # one entry: forward takes *inputs
    program = torch.onnx.export(step, tuple(inputs), dynamo=True, input_names=names,
                                output_names=list(OUTPUTS), dynamic_shapes=shapes,
                                verbose=False, optimize=True)
    program.save(str(out))


class ExportedPolicy:
    """Run an exported acting step with numpy observations, keeping the carry: the same
    interface as `Agent.policy` (mode is fixed at export), for onnxruntime or TorchScript."""

    def __init__(self, path: str | Path, seed: int | None = None):
        path = Path(path)
        self.spec = json.loads(Path(str(path) + ".json").read_text())
        self.names = [s["name"] for s in self.spec["inputs"]]
        # Each input as the graph takes it (a float64 vector, as `agent.policy` accepts,
        # would be refused by onnxruntime).
        self.dtypes = {s["name"]: np.dtype(s["dtype"]) for s in self.spec["inputs"]}
        self.rng = np.random.default_rng(seed)
        if self.spec["format"] == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(str(path), options,
                                                        providers=["CPUExecutionProvider"])
            self.module = None
        else:
            self.session = None
            self.module = torch.jit.load(str(path)).eval()

    def initial(self, n: int) -> dict[str, np.ndarray]:
        shapes = {s["name"]: [n if d == "N" else d for d in s["shape"]]
                  for s in self.spec["inputs"]}
        return {k: np.zeros(shapes[k], np.float32) for k in ("deter", "stoch", "prev_action")}

    def noise(self, n: int) -> dict[str, np.ndarray]:
        """Fresh noise inputs for a batch of `n` (the caller may pass its own instead)."""
        out = {}
        for s in self.spec["inputs"]:
            if s["name"].endswith("_noise"):
                shape = [n if d == "N" else d for d in s["shape"]]
                gaussian = s["name"] == "action_noise" and len(shape) == 2
                out[s["name"]] = (self.rng.standard_normal(shape) if gaussian
                                  else self.rng.random(shape)).astype(np.float32)
        return out

    def __call__(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs {action, next_deter, next_stoch} for a full feed of named inputs."""
        missing = [k for k in self.names if k not in feed]
        if missing:
            raise ExportError(f"exported policy needs inputs {missing}; it takes {self.names}")
        inputs = {k: np.asarray(feed[k], self.dtypes[k]) for k in self.names}
        if self.session is not None:
            outs = self.session.run(list(OUTPUTS), inputs)
        else:
            with torch.no_grad():
                outs = [o.numpy() for o in self.module(*[torch.as_tensor(inputs[k])
                                                          for k in self.names])]
        return dict(zip(OUTPUTS, outs))

    def policy(self, obs: Mapping[str, np.ndarray], carry: Any = None,
               noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, Any]:
        n = len(obs["is_first"])
        carry = self.initial(n) if carry is None else carry
        feed = {**{k: obs[k] for k in self.names if k in obs}, **carry,
                **(noise if noise is not None else self.noise(n))}
        feed["is_first"] = np.asarray(obs["is_first"], bool)
        out = self(feed)
        return out["action"], {"deter": out["next_deter"], "stoch": out["next_stoch"],
                               "prev_action": out["action"]}


def main(argv: list[str] | None = None) -> int:
    from agents.run.cli_args import ArgParser

    parser = ArgParser(
        prog="dreamer-export", description="Export a trained run's acting step (encoder, one "
        "posterior RSSM step, actor) as one ONNX or TorchScript graph, the recurrent carry as "
        "explicit inputs and outputs, with a JSON spec beside it.")
    parser.add_argument("run", help="run directory (or one of its checkpoints)")
    parser.add_argument("--format", default="onnx", choices=list(FORMATS))
    parser.add_argument("--out", default=None,
                        help="output file (default: RUN/export/policy.onnx or policy.pt)")
    parser.add_argument("--policy", default="mode", choices=list(POLICIES),
                        help="mode: the most likely action; sample: takes action_noise")
    args = parser.parse_args(argv)
    from agents.run.checkpoint import CheckpointError
    from agents.run.config import ConfigError
    from agents.run.inference import find_run, load_agent
    from envs.core import EnvSpecError
    from world_models.vit_jepa.encoder import EncoderSpecError

    try:
        agent, cfg = load_agent(args.run, device="cpu")
        logdir, file = find_run(args.run)
        out = Path(args.out) if args.out else logdir / "export" / f"policy{FORMATS[args.format]}"
        meta = {"run": str(logdir), "checkpoint": str(file), "env": cfg.env.spec,
                "env_options": cfg.env.options.to_dict(), "agent": cfg.agent, "size": cfg.size}
        export_policy(agent, out, args.format, args.policy, meta=meta)
        if cfg.run.behavior != "actor":
            # A planner is a loop of hundreds of world-model rollouts with its own noise, not
            # one acting step: the graph holds the actor, and the run's evaluation plans.
            print(f"note: the run acts with run.behavior={cfg.run.behavior}; the export holds "
                  "its actor (planning is not exported)", file=sys.stderr)
    except (CheckpointError, ConfigError, ExportError, EnvSpecError, EncoderSpecError,
            FileNotFoundError) as err:
        line = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"dreamer-export: error: {line}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
