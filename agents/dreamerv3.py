"""DreamerV3 agent: world model + imagination actor-critic, one optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.actor_critic import ActorCritic
from agents.base import Agent, register
from agents.optim import LaProp
from world_models.dists import symlog
from world_models.dreamer import DreamerWorldModel
from world_models.encoders import IMAGE_KEY, VECTOR_KEY, MultiEncoder

OBS_KEYS = (IMAGE_KEY, VECTOR_KEY)


def action_dim(space: gym.Space) -> tuple[int, bool]:
    """Model action size and whether the space is discrete."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), True
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0]), False
    raise ValueError(f"unsupported action space {space}; need Discrete or 1-D Box")


def obs_shapes(space: gym.spaces.Dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(space[k].shape) for k in OBS_KEYS if k in space.spaces}


class PretrainedImageEncoder(nn.Module):
    """A pretrained image encoder (JEPA, V-JEPA 2) plus the MLP for `vector` if present."""

    def __init__(self, image_encoder: nn.Module, shapes: Mapping, mlp_kwargs: Mapping):
        super().__init__()
        self.image = image_encoder
        self.vector = None
        self.out_dim = image_encoder.out_dim
        if VECTOR_KEY in shapes:
            self.vector = MultiEncoder({VECTOR_KEY: shapes[VECTOR_KEY]}, **mlp_kwargs)
            self.out_dim += self.vector.out_dim

    def forward(self, obs):
        out = [self.image({IMAGE_KEY: obs[IMAGE_KEY]}).float()]
        if self.vector is not None:
            out.append(self.vector(obs))
        return torch.cat(out, -1)


def build_encoder(encoder_cfg: Mapping, shapes: Mapping, mlp_kwargs: Mapping) -> nn.Module | None:
    """None for the default CNN/MLP; else the pretrained encoder named by `encoder.name`."""
    name = encoder_cfg["name"]
    if name == "default":
        return None
    if IMAGE_KEY not in shapes:
        raise ValueError(f"encoder '{name}' needs image observations; this env has "
                         f"{sorted(shapes)} (use --obs pixels)")
    from world_models.vit_jepa import load_encoder

    mode = encoder_cfg["mode"]
    if mode not in ("frozen", "finetune"):
        raise ValueError(f"encoder.mode '{mode}' unknown; use frozen or finetune")
    image = load_encoder(name, shapes[IMAGE_KEY], frozen=mode == "frozen")
    return PretrainedImageEncoder(image, shapes, mlp_kwargs)


@register("dreamerv3")
class DreamerV3Agent(Agent):
    """DreamerV3 (2024-25 recipe) behind the Agent interface."""

    def __init__(self, obs_space: gym.spaces.Dict, act_space: gym.Space, config,
                 device: str | torch.device = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        self.obs_space, self.act_space = obs_space, act_space
        self.act_dim, self.discrete = action_dim(act_space)
        self.shapes = obs_shapes(obs_space)
        self.autocast = precision == "bf16"
        mcfg = config["model"]
        enc_cfg = dict(mcfg["encoder"])
        mlp_kwargs = {k: enc_cfg[k] for k in ("layers", "units", "symlog") if k in enc_cfg}
        custom = build_encoder(config["encoder"], self.shapes, mlp_kwargs)
        self.wm = self.make_world_model(config, enc_cfg, custom).to(self.device)
        self.ac = ActorCritic(self.wm.rssm.feat_dim, self.act_dim, self.discrete,
                              **config["actor_critic"]).to(self.device)
        self.opt = LaProp(self._param_groups(config), **config["opt"])
        self.step = 0

    def make_world_model(self, config, enc_cfg: dict, custom: nn.Module | None) -> nn.Module:
        """The world model; subclasses (the JEPA agent) swap in their own."""
        mcfg = config["model"]
        return DreamerWorldModel(
            self.shapes, self.act_dim, mcfg["rssm"], enc_cfg, mcfg["decoder"],
            mcfg["reward_head"], mcfg["cont_head"], mcfg["loss_scales"], custom_encoder=custom,
            diag_every=mcfg["diag_every"])

    def _param_groups(self, config) -> list[dict]:
        enc = self.wm.encoder
        pretrained = isinstance(enc, PretrainedImageEncoder)
        enc_params = {id(p) for p in enc.image.parameters()} if pretrained else set()
        main = [p for p in list(self.wm.parameters()) + list(self.ac.parameters())
                if p.requires_grad and id(p) not in enc_params]
        groups = [{"params": main}]
        tuned = [p for p in enc.image.parameters() if p.requires_grad] if pretrained else []
        if tuned:
            lr = config["opt"]["lr"] * config["encoder"]["lr_scale"]
            groups.append({"params": tuned, "lr": lr})
        return groups

    def _amp(self):
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_torch(self, data: Mapping) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v,
                                   device=self.device) for k, v in data.items()}

    # -- acting ----------------------------------------------------------------
    @torch.no_grad()
    def policy(self, obs: Mapping[str, np.ndarray], carry: Any = None, mode: str = "train"):
        n = len(obs["is_first"])
        if mode == "random":
            return self.random_actions(n), carry
        data = self._to_torch({k: obs[k] for k in self.shapes})
        is_first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device)
        if carry is None:
            carry = (self.wm.rssm.initial(n, self.device),
                     torch.zeros(n, self.act_dim, device=self.device))
        state, prev_action = carry
        with self._amp():
            embed = self.wm.encode(data)
            state, _ = self.wm.rssm.obs_step(state, prev_action, embed, is_first)
            dist = self.ac.policy(self.wm.rssm.feat(state))
            action = dist.sample() if mode == "train" else dist.mode()
        state = {k: v.float() for k, v in state.items()}
        action = action.float()
        return action.cpu().numpy(), (state, action)

    def random_actions(self, n: int) -> np.ndarray:
        if self.discrete:
            return np.eye(self.act_dim, dtype=np.float32)[np.random.randint(self.act_dim, size=n)]
        return np.random.uniform(-1, 1, (n, self.act_dim)).astype(np.float32)

    # -- learning ----------------------------------------------------------------
    def train(self, batch) -> dict[str, float]:
        data = self._to_torch(dict(batch.items()) if hasattr(batch, "items") else batch)
        self.wm.train()
        with self._amp():
            wm_losses, post, metrics = self.wm.loss(data)
            ac_losses, ac_metrics = self.ac.loss(self.wm, post, data)
        loss = self.wm.total(wm_losses) + self.ac.total(ac_losses)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.ac.update_slow()
        self.step += 1
        metrics.update(ac_metrics)
        metrics.update({f"loss/{k}": v.detach().mean() for k, v in wm_losses.items()})
        metrics.update({f"loss/{k}": v.detach().mean() for k, v in ac_losses.items()})
        metrics["loss/total"] = loss.detach()
        # Updates the optimizer refused for a NaN/inf gradient (the trainer stops on a run).
        metrics["train/skipped_updates"] = self.opt.skipped_total
        metrics["train/skipped_in_a_row"] = self.opt.skipped_in_a_row
        return {k: float(v) for k, v in metrics.items()}

    @torch.no_grad()
    def report(self, batch, context: int | None = None, videos: int = 4) -> dict[str, Any]:
        """Open-loop prediction: observe the first half, imagine the rest with the
        recorded actions; returns `openl/mse_*` metrics and an `openl` video."""
        data = self._to_torch(dict(batch.items()) if hasattr(batch, "items") else batch)
        data = {k: v[:videos] for k, v in data.items()}
        T = data["reward"].shape[1]
        context = context or T // 2
        with self._amp():
            embed = self.wm.encode({k: v[:, :context] for k, v in data.items()})
            post, _ = self.wm.observe(embed, data["action"][:, :context],
                                      data["is_first"][:, :context])
            state = {k: v[:, -1] for k, v in post.items() if k in ("deter", "stoch")}
            states = []
            for t in range(context, T):
                state = self.wm.rssm.img_step(state, data["action"][:, t])
                states.append(state)
            feats = torch.cat([self.wm.rssm.feat(post),
                               torch.stack([self.wm.rssm.feat(s) for s in states], 1)], 1)
            recon = self.wm.decoder(feats)
        out: dict[str, Any] = {}
        targets = {}
        if IMAGE_KEY in recon:
            targets[IMAGE_KEY] = data[IMAGE_KEY].float() / 255.0
        if VECTOR_KEY in recon:
            targets[VECTOR_KEY] = symlog(data[VECTOR_KEY].float())
        for key, target in targets.items():
            err = (recon[key].float() - target).pow(2)
            out[f"openl/mse_{key}_observed"] = float(err[:, :context].mean())
            out[f"openl/mse_{key}_imagined"] = float(err[:, context:].mean())
        if IMAGE_KEY in recon:
            # Videos: [N, T, H, W, C] floats in [0, 1], truth and prediction.
            truth, pred = targets[IMAGE_KEY], recon[IMAGE_KEY].float()
            out["openl"] = (truth.cpu().numpy(), pred.cpu().numpy())
        return out

    # -- persistence ---------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"wm": self.wm.state_dict(), "ac": self.ac.state_dict(),
                "opt": self.opt.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.wm.load_state_dict(state["wm"])
        self.ac.load_state_dict(state["ac"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
