"""DreamerV3 agent: world model + imagination actor-critic, one optimizer; `JEPAAgent` is
the same agent with the latent (JEPA) objective."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.actor_critic import ActorCritic
from agents.base import Agent, ReplayWrite
from agents.behaviors import make_behavior
from agents.compiled import CompileClock, compile_policy, compile_update
from agents.optim import LaProp
from agents.runtime import conv_stacks_bf16
from world_models.encoders import (
    CONV_BF16_MIN_FRAMES,
    EMBED_KEY,
    EMBED_OK_KEY,
    IMAGE_KEY,
    VECTOR_KEY,
    MultiDecoder,
    MultiEncoder,
    PretrainedImageEncoder,
)
from world_models.objectives import objective_class
from world_models.world_model import WorldModel

OBS_KEYS = (IMAGE_KEY, VECTOR_KEY)
# Replay keys of the stored latent state (replay context): deter in fp16 (a GRU state in
# [-1, 1]) and the index of each categorical latent's sample.
LATENT_DETER, LATENT_STOCH = "latent_deter", "latent_stoch"


def action_dim(space: gym.Space) -> tuple[int, bool]:
    """Model action size and whether the space is discrete."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), True
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0]), False
    raise ValueError(f"unsupported action space {space}; need Discrete or 1-D Box")


def obs_shapes(space: gym.spaces.Dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(space[k].shape) for k in OBS_KEYS if k in space.spaces}


class DreamerV3Agent(Agent):
    """DreamerV3 (2024-25 recipe) behind the Agent interface; `model.objective` picks the
    world model's representation loss (reconstruction or latent)."""

    def __init__(self, obs_space: gym.spaces.Dict, act_space: gym.Space, config,
                 device: str | torch.device = "cpu", precision: str = "fp32",
                 compile: bool = False):
        self.device = torch.device(device)
        self.obs_space, self.act_space = obs_space, act_space
        self.act_dim, self.discrete = action_dim(act_space)
        self.shapes = obs_shapes(obs_space)
        self.compiled = bool(compile)
        # bf16 autocast: the whole update on CUDA; on CPU only the batched imagination and
        # actor-critic losses (the batch-16 posterior loop runs slower in bf16 there).
        self.autocast = precision == "bf16"
        self.clock = CompileClock()
        mcfg = config["model"]
        encoder = dict(mcfg["encoder"])
        lr_scale = float(encoder.pop("lr_scale"))
        # The objective's settings are its own config section; their `scales` join the loss
        # scales (the world model checks every term has one).
        objective = objective_class(mcfg["objective"])
        settings = dict(config[objective.SECTION]) if objective.SECTION else {}
        scales = {**mcfg["loss_scales"], **settings.pop("scales", {})}
        self.wm = WorldModel(
            self.shapes, self.act_dim, mcfg["rssm"], encoder, mcfg["decoder"],
            mcfg["reward_head"], mcfg["cont_head"], scales, objective=mcfg["objective"],
            settings=settings if objective.SECTION else None, discrete=self.discrete,
            diag_every=mcfg["diag_every"]).to(self.device)
        # The conv stacks (encoder, decoder, the JEPA target encoder's copy and probe
        # decoder) and a fine-tuned pretrained encoder over a training batch's frames, in
        # bf16 where `conv_precision` asks.
        self.conv_bf16 = conv_stacks_bf16(config.get("conv_precision", "auto"), precision,
                                          self.device)
        for module in self.wm.modules():
            if isinstance(module, (MultiEncoder, MultiDecoder, PretrainedImageEncoder)):
                module.conv_bf16 = self.conv_bf16
        self.ac = ActorCritic(self.wm.rssm.feat_dim, self.act_dim, self.discrete,
                              **config["actor_critic"]).to(self.device)
        self.opt = LaProp(self._param_groups(config["opt"]["lr"] * lr_scale), **config["opt"])
        self._config = config  # the behaviours' settings, for `set_behavior`
        self.set_behavior(config["run"]["behavior"])
        self.step = 0
        self.replay_context = int(config["replay"]["context"])
        self._trained: dict[str, torch.Tensor] = {}
        self._embeds: dict[str, torch.Tensor] = {}  # frozen-encoder embeddings to store back
        if self.compiled:
            compile_update(self.wm, self.ac, self.device)
            self._act = compile_policy(self._act, self.device)

    def _param_groups(self, pretrained_lr: float) -> list[dict]:
        # Fine-tuned pretrained weights get their own, smaller learning rate.
        tuned = self.wm.encoder.pretrained_parameters()
        skip = {id(p) for p in tuned}
        main = [p for p in list(self.wm.parameters()) + list(self.ac.parameters())
                if p.requires_grad and id(p) not in skip]
        groups = [{"params": main}]
        if tuned:
            groups.append({"params": tuned, "lr": pretrained_lr})
        return groups

    def _amp(self, batched: bool = True):
        """bf16 autocast where it pays: every part on CUDA, only `batched` parts on CPU."""
        if self.autocast and (batched or self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_torch(self, data: Mapping) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v,
                                   device=self.device) for k, v in data.items()}

    # -- acting ----------------------------------------------------------------
    def set_behavior(self, name: str, **settings: Any) -> None:
        """Act with behaviour `name` from now on (`actor`, `mppi`, any registered one; its
        settings are the config section it names, any replaced by `settings`). Start
        episodes afresh (carry None)."""
        self.behavior = make_behavior(name, self.wm, self.ac, self.act_dim, self.discrete,
                                      self._config, **settings)
        self.behavior_name = name
        if self.compiled and hasattr(self.behavior, "compile"):
            self.behavior.compile(self.device)

    @torch.no_grad()
    def policy(self, obs: Mapping[str, np.ndarray], carry: Any = None, mode: str = "train"):
        """Carry: (latent state, last action, the behaviour's own carry)."""
        n = len(obs["is_first"])
        if mode == "random" and not self.replay_context:
            return self.random_actions(n), carry
        data = self._to_torch({k: obs[k] for k in self.shapes})
        is_first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device)
        if carry is None:
            carry = (self.wm.initial(n, self.device),
                     torch.zeros(n, self.act_dim, device=self.device),
                     self.behavior.initial(n, self.device))
        sample = mode == "train"
        with self._fp32_convs(n):
            state, action, own = self.clock.timed(self._act, data, is_first, *carry, sample)
        if mode == "random":
            # Random actions (prefill), but the posterior still follows the observations: the
            # replay context stores this step's latent, and zeros there would start replayed
            # sequences from a state the world model never saw. (A fused behaviour's action,
            # computed in the same compiled step, is dropped: prefill is short.)
            action = torch.as_tensor(self.random_actions(n), device=self.device)
        elif action is None:  # a planner: its loop runs here, its pieces compiled on their own
            with self._amp():
                action, own = self.clock.timed(self.behavior, state, own, is_first, sample)
            action = action.float()
        return action.cpu().numpy(), (state, action, own)

    @contextlib.contextmanager
    def _fp32_convs(self, n: int):
        """Acting stays fp32, as an exported policy's graph is: the conv stacks' bf16 is for
        training batches, and a step over CONV_BF16_MIN_FRAMES envs or more would take it."""
        convs = [] if n < CONV_BF16_MIN_FRAMES else [
            m for m in self.wm.modules() if getattr(m, "conv_bf16", False)]
        if not convs:
            yield
            return
        for m in convs:
            m.conv_bf16 = False
        try:
            yield
        finally:
            for m in convs:
                m.conv_bf16 = True

    def _act(self, data: dict[str, torch.Tensor], is_first: torch.Tensor, state: dict,
             prev_action: torch.Tensor, own: Any, sample: bool
             ) -> tuple[dict, torch.Tensor | None, Any]:
        """One policy step on tensors (compiled on the fast path): posterior update, then the
        behaviour's action, sampled (`sample`) or its most likely; fp32 on CPU. A behaviour
        that is not `FUSED` (a planner: hundreds of rollouts, minutes to compile as one
        graph) is left to the caller: the action is then None."""
        with self._amp(batched=False):
            embed = self.wm.encode(data)
            state = self.wm.obs_step(state, prev_action, embed, is_first)
            action = None
            if self.behavior.FUSED:
                action, own = self.behavior(state, own, is_first, sample)
                action = action.float()
        return {k: v.float() for k, v in state.items()}, action, own

    def random_actions(self, n: int) -> np.ndarray:
        if self.discrete:
            return np.eye(self.act_dim, dtype=np.float32)[np.random.randint(self.act_dim, size=n)]
        return np.random.uniform(-1, 1, (n, self.act_dim)).astype(np.float32)

    # -- replay context ------------------------------------------------------------
    def latent_spec(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        spec: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        if self.replay_context:
            rssm = self.wm.rssm
            index = torch.uint8 if rssm.classes <= 256 else torch.int16
            spec.update({LATENT_DETER: ((rssm.deter,), torch.float16),
                         LATENT_STOCH: ((rssm.stoch,), index)})
        dim = getattr(self.wm.encoder, "cached_dim", 0)
        if dim:  # a frozen pretrained encoder: each stored frame's embedding, computed once
            spec.update({EMBED_KEY: ((dim,), torch.float32), EMBED_OK_KEY: ((), torch.bool)})
        return spec

    def latent_entries(self, carry: Any) -> dict[str, np.ndarray]:
        # Embeddings are filled when a batch first replays a frame (`_fill_embeds`).
        if carry is None or not self.replay_context:
            return {}
        return {k: v.cpu().numpy() for k, v in self._latents(carry[0]).items()}

    def trained_latents(self) -> dict[str, torch.Tensor]:
        latents, self._trained = self._trained, {}
        return {k: v.cpu() for k, v in latents.items()}

    def replay_writes(self) -> list[ReplayWrite]:
        writes = super().replay_writes()
        embeds, self._embeds = self._embeds, {}
        if embeds:
            writes.append(ReplayWrite(embeds, start=self.replay_context))
        return writes

    @torch.no_grad()
    def _fill_embeds(self, data: dict[str, torch.Tensor], keep: bool) -> dict[str, torch.Tensor]:
        """Complete a batch's stored frozen-encoder embeddings: frames never encoded (their
        `EMBED_OK_KEY` false) go through the image encoder now, as the update would have
        run them; with `keep` they are stored back (`replay_writes`). The batch then
        carries only `EMBED_KEY`, every row valid."""
        if EMBED_OK_KEY not in data:
            return data
        ok = data.pop(EMBED_OK_KEY).bool()
        # Contiguous either way, so the compiled encoder sees one layout (no recompile).
        embed = data[EMBED_KEY].float().contiguous()
        if not bool(ok.all()):
            embed = embed.clone() if embed.data_ptr() == data[EMBED_KEY].data_ptr() else embed
            with self._amp(batched=False):
                embed[~ok] = self.wm.encoder.embed_images(data[IMAGE_KEY][~ok])
            if keep:
                self._embeds = {EMBED_KEY: embed.cpu(), EMBED_OK_KEY: torch.ones_like(ok).cpu()}
        data[EMBED_KEY] = embed
        return data

    def _latents(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        spec = self.latent_spec()
        return {LATENT_DETER: state["deter"].detach().to(spec[LATENT_DETER][1]),
                LATENT_STOCH: state["stoch"].detach().argmax(-1).to(spec[LATENT_STOCH][1])}

    def _context(self, data: dict[str, torch.Tensor]) -> tuple[dict | None, dict]:
        """(start state, data after the context) for a batch that carries stored latents;
        (None, data) for one without: every sequence then starts from zeros, its first step
        marked `is_first` (as the official agent marks it) so that it is treated as the
        start it is (no previous action fed in, no value bootstrapped into it)."""
        K = self.replay_context
        if not K or LATENT_DETER not in data:
            is_first = data["is_first"].clone()
            is_first[:, 0] = True
            return None, {**data, "is_first": is_first}
        rssm = self.wm.rssm
        stoch = torch.nn.functional.one_hot(data[LATENT_STOCH][:, K - 1].long(), rssm.classes)
        start = {"deter": data[LATENT_DETER][:, K - 1].float(), "stoch": stoch.float()}
        start["logits"] = torch.zeros_like(start["stoch"])  # the keys `initial` has
        return start, {k: v[:, K:] for k, v in data.items()}

    # -- learning ----------------------------------------------------------------
    def train(self, batch) -> dict[str, float]:
        """One update on a [B, T] batch; a batch with stored latents (replay context) is
        K = `replay.context` steps longer and trains on its last T - K steps, starting from
        the latent stored at step K - 1. `trained_latents` then holds the new ones."""
        data = self._to_torch(dict(batch.items()) if hasattr(batch, "items") else batch)
        start, data = self._context(data)
        data = self._fill_embeds(data, keep=True)
        self.wm.train()
        metrics = self.clock.timed(self._update, data, start)
        if self.compiled:  # compile warm-up so far (acting and updates), paid once per process
            metrics["perf/compile_s"] = self.clock.seconds
        return metrics

    def loss(self, data: dict[str, torch.Tensor], start: dict | None = None
             ) -> tuple[torch.Tensor, dict, dict]:
        """The update's scalar loss, its named terms and metrics, on a batch of tensors whose
        posterior starts from `start` (zeros when None)."""
        with self._amp(batched=False):
            wm_losses, post, metrics = self.wm.loss(data, start)
        if start is not None:
            self._trained = self._latents(post)
        with self._amp():
            ac_losses, ac_metrics = self.ac.loss(self.wm, post, data)
        metrics.update(ac_metrics)
        terms = {**wm_losses, **ac_losses}
        return self.wm.total(wm_losses) + self.ac.total(ac_losses), terms, metrics

    def _update(self, data: dict[str, torch.Tensor], start: dict | None = None
                ) -> dict[str, float]:
        loss, terms, metrics = self.loss(data, start)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if not self.opt.skipped_in_a_row:  # a skipped update leaves the EMA copies alone too
            self.ac.update_slow()
            self.wm.after_step()
        self.step += 1
        metrics.update({f"loss/{k}": v.detach().mean() for k, v in terms.items()})
        metrics["loss/total"] = loss.detach()
        # Updates the optimizer refused for a NaN/inf gradient (the trainer stops on a run).
        metrics["train/skipped_updates"] = self.opt.skipped_total
        metrics["train/skipped_in_a_row"] = self.opt.skipped_in_a_row
        return {k: float(v) for k, v in metrics.items()}

    @torch.no_grad()
    def report(self, batch, context: int | None = None, videos: int = 4) -> dict[str, Any]:
        """Open-loop prediction: observe the first `context` steps (default half), imagine the
        rest with the recorded actions; the objective's `openl/*` metrics and video."""
        data = self._to_torch(dict(batch.items()) if hasattr(batch, "items") else batch)
        start, data = self._context(data)
        data = self._fill_embeds({k: v[:videos] for k, v in data.items()}, keep=False)
        start = None if start is None else {k: v[:videos] for k, v in start.items()}
        context = context or data["action"].shape[1] // 2
        with self._amp():
            feat = self.wm.open_loop(data, context, start)
            return self.wm.objective.report(data, feat, context)

    @torch.no_grad()
    def features(self, obs: Mapping[str, np.ndarray], carry: Any
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder embeddings [N, D] of `obs` and RSSM features [N, F] of the latent state in
        `carry`, the carry `policy` returned for these observations."""
        data = self._to_torch({k: obs[k] for k in self.shapes})
        with self._amp():
            embed = self.wm.encode(data)
        return embed.float(), self.wm.feat(carry[0]).float()

    # -- persistence ---------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"wm": self.wm.state_dict(), "ac": self.ac.state_dict(),
                "opt": self.opt.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.wm.load_state_dict(state["wm"])
        self.ac.load_state_dict(state["ac"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])


class JEPAAgent(DreamerV3Agent):
    """`--agent jepa`: DreamerV3 whose world model predicts latents. The agent preset
    (agents/run/config.py) sets `model.objective=latent`, settings in the config's `jepa`
    section; the config is the one source of what trains, so `--set model.objective=...`
    beside `--agent jepa` trains what it says and the run's config.yaml says so."""
