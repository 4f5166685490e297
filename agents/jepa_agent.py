"""JEPA agent: the DreamerV3 agent with a decoder-free, latent-predicting world model."""

from __future__ import annotations

from typing import Any

import torch

from agents.base import register
from agents.dreamerv3 import DreamerV3Agent
from world_models.jepa_wm import JEPAWorldModel, prediction_error


@register("jepa")
class JEPAAgent(DreamerV3Agent):
    """DreamerV3's policy, actor-critic and optimizer over a JEPA world model (`jepa.*`)."""

    def make_world_model(self, config, enc_cfg: dict, custom) -> JEPAWorldModel:
        mcfg = config["model"]
        return JEPAWorldModel(
            self.shapes, self.act_dim, mcfg["rssm"], enc_cfg, mcfg["decoder"],
            mcfg["reward_head"], mcfg["cont_head"], mcfg["loss_scales"], config["jepa"],
            self.discrete, custom_encoder=custom, diag_every=mcfg["diag_every"])

    def train(self, batch) -> dict[str, float]:
        metrics = super().train(batch)
        self.wm.update_target()  # after the optimizer step, as in BYOL / I-JEPA
        return metrics

    @torch.no_grad()
    def report(self, batch, context: int | None = None, videos: int = 4) -> dict[str, Any]:
        """Open-loop latent prediction error (`openl/jepa_observed|imagined`) and, with the
        probe decoder, DreamerV3's open-loop metrics and `openl` video."""
        out = super().report(batch, context, videos) if self.wm.decoder is not None else {}
        data = self._to_torch(dict(batch.items()) if hasattr(batch, "items") else batch)
        data = {k: v[:videos] for k, v in data.items()}
        T = data["reward"].shape[1]
        context = context or T // 2
        with self._amp():
            target = self.wm.target_encoder(data).float()
            embed = self.wm.encode({k: v[:, :context] for k, v in data.items()})
            post, _ = self.wm.observe(embed, data["action"][:, :context],
                                      data["is_first"][:, :context])
            state = {k: v[:, -1] for k, v in post.items() if k in ("deter", "stoch")}
            feats = [self.wm.rssm.feat(post)]
            for t in range(context, T):
                state = self.wm.rssm.img_step(state, data["action"][:, t])
                feats.append(self.wm.rssm.feat(state)[:, None])
            pred = self.wm.predict(torch.cat(feats, 1))
        err = prediction_error(pred, target)
        out["openl/jepa_observed"] = float(err[:, :context].mean())
        out["openl/jepa_imagined"] = float(err[:, context:].mean())
        return out
