"""The latent (JEPA) objective: loss terms, gradient paths, EMA target, safeguards, collapse
detection."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from world_models.diagnostics import CollapseWarning, distinct_rows
from world_models.latent_objective import open_loop_weights, prediction_error
from world_models.world_model import WorldModel

torch.set_num_threads(1)

RSSM = dict(deter=64, hidden=32, stoch=4, classes=4, blocks=2)
ENC = dict(depth=4, layers=1, units=32)
HEAD = dict(layers=1, units=32)
SCALES = dict(rec=1.0, rew=1.0, con=1.0, dyn=1.0, rep=0.1)


def jepa_cfg(**over):
    cfg = dict(ema=0.995, stop_grad=True, horizon=3, decay=0.5,
               predictor=dict(layers=1, units=32), vicreg=True, inverse=True,
               probe_decoder=False, probe_stride=2,
               scales=dict(jepa_post=1.0, jepa_open=1.0, vicreg=0.04, sigreg=0.05, inverse=1.0,
                           probe_rec=1.0))
    cfg.update(over)
    return cfg


def make_wm(shapes=None, scales=SCALES, **over):
    shapes = shapes or {"vector": (8,)}
    latent = jepa_cfg(**over)
    scales = {**scales, **latent.pop("scales")}
    return WorldModel(shapes, 2, RSSM, ENC, dict(depth=4, layers=1, units=32), HEAD, HEAD,
                      scales, objective="latent", settings=latent, discrete=True)


def make_batch(B=4, T=12, image=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "action": F.one_hot(torch.randint(0, 2, (B, T), generator=g), 2).float(),
        "reward": torch.randn(B, T, generator=g),
        "is_first": torch.zeros(B, T, dtype=torch.bool),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool),
    }
    batch["is_first"][:, 0] = True
    if image:
        batch["image"] = torch.randint(0, 256, (B, T, 16, 16, 3), generator=g, dtype=torch.uint8)
    else:
        batch["vector"] = torch.randn(B, T, 8, generator=g)
    return batch


def test_loss_terms_present_and_finite():
    torch.manual_seed(0)
    wm = make_wm({"image": (16, 16, 3)}, probe_decoder=True)
    losses, post, metrics = wm.loss(make_batch(image=True))
    assert {"dyn", "rep", "rew", "con", "jepa_post", "jepa_open", "vicreg", "inverse",
            "probe_rec_image"} == set(losses)
    for name, value in losses.items():
        assert torch.isfinite(value).all(), name
    assert losses["jepa_post"].shape == (4, 12)
    assert losses["jepa_open"].shape == (4, 12 - 3)
    assert torch.isfinite(wm.total(losses))
    assert "jepa/pred_1step" in metrics and "jepa/copy_last" in metrics
    assert "rec_image" not in losses  # no pixel reconstruction in the model's objective


def test_no_decoder_gradient_reaches_encoder_or_rssm():
    torch.manual_seed(0)
    wm = make_wm({"image": (16, 16, 3)}, probe_decoder=True)
    losses, _, _ = wm.loss(make_batch(image=True))
    losses["probe_rec_image"].mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in wm.decoder.parameters())
    for module in (wm.encoder, wm.rssm, wm.objective.predictor):
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.parameters())


def test_no_decoder_without_probe_and_targets_without_gradient():
    torch.manual_seed(0)
    wm = make_wm()
    assert wm.decoder is None
    assert all(not p.requires_grad for p in wm.objective.target_encoder.parameters())
    losses, _, _ = wm.loss(make_batch())
    wm.total(losses).backward()
    assert all(p.grad is None for p in wm.objective.target_encoder.parameters())
    # Reward and JEPA gradients do reach the online encoder.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in wm.encoder.parameters())


def test_ema_update_math():
    torch.manual_seed(0)
    wm = make_wm(ema=0.9)
    before = [p.detach().clone() for p in wm.objective.target_encoder.parameters()]
    with torch.no_grad():
        for p in wm.encoder.parameters():
            p.add_(1.0)
    online = [p.detach().clone() for p in wm.encoder.parameters()]
    wm.objective.update_target()
    for t, b, o in zip(wm.objective.target_encoder.parameters(), before, online):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert abs(sum(open_loop_weights(3, 0.5)) - 1) < 1e-9
    assert open_loop_weights(3, 0.5) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_open_loop_weights_cover_the_steps_a_short_batch_has():
    # horizon 3 on T = 3 leaves k = 1, 2: their weights must sum to one (as horizon 2's do),
    # not to the 6/7 that horizon 3's first two weights sum to.
    torch.manual_seed(0)
    long = make_wm(horizon=3)
    short = make_wm(horizon=2)
    short.load_state_dict(long.state_dict())
    batch = make_batch(T=3)
    with torch.no_grad():
        torch.manual_seed(1)  # the same posterior samples for both
        got = long.loss(batch)[0]["jepa_open"]
        torch.manual_seed(1)
        want = short.loss(batch)[0]["jepa_open"]
    torch.testing.assert_close(got, want)
    assert sum(open_loop_weights(2, 0.5)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"jepa.decay=0.0 is invalid; expected > 0"):
        make_wm(decay=0.0)


def test_prediction_error_is_scale_free():
    x = torch.randn(5, 16)
    assert torch.allclose(prediction_error(3.0 * x + 1.0, x), torch.zeros(5), atol=1e-5)
    assert torch.allclose(prediction_error(-x, x), torch.full((5,), 4.0), atol=1e-3)


@pytest.mark.parametrize("switch", ["vicreg", "inverse"])
def test_safeguard_switches_change_the_loss(switch):
    batch = make_batch()
    torch.manual_seed(0)
    on = make_wm()
    torch.manual_seed(0)
    off = make_wm(**{switch: False})
    torch.manual_seed(1)
    l_on, _, _ = on.loss(batch)
    torch.manual_seed(1)
    l_off, _, _ = off.loss(batch)
    assert switch in l_on and switch not in l_off
    assert not torch.isclose(on.total(l_on), off.total(l_off))


def test_stop_grad_switch_changes_the_encoder_gradient():
    batch = make_batch()
    grads = {}
    for stop in (True, False):
        torch.manual_seed(0)
        wm = make_wm(stop_grad=stop, vicreg=False, inverse=False)
        torch.manual_seed(1)
        losses, _, _ = wm.loss(batch)
        losses["jepa_post"].mean().backward()
        grads[stop] = torch.cat([p.grad.flatten() for p in wm.encoder.parameters()])
    assert not torch.allclose(grads[True], grads[False])


def _train(wm, batch, steps):
    opt = torch.optim.Adam(wm.parameters(), lr=1e-2)
    for _ in range(steps):
        losses, post, _ = wm.loss(batch)
        opt.zero_grad()
        wm.total(losses).backward()
        opt.step()
        wm.after_step()
    with torch.no_grad():
        return wm.encode(batch), wm.rssm.feat(post)


def test_collapse_detector_fires_on_collapsible_config_only():
    # Pure latent prediction (reward and KL off) on a tiny batch. Without stop-gradient and
    # safeguards the embeddings fold onto a few directions; the default config keeps its rank.
    batch = make_batch(B=8, T=16)
    only_jepa = dict(SCALES, rew=0.0, con=0.0, dyn=0.0, rep=0.0)
    found = {}
    for name, over in (("default", {}),
                       ("collapsible", dict(stop_grad=False, vicreg=False, inverse=False))):
        torch.manual_seed(0)
        wm = make_wm(scales=only_jepa, **over)
        embed, feat = _train(wm, batch, 100)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = wm.diagnostics(embed, feat, min_rank_frac=0.25, max_top1_frac=0.6)
        found[name] = (m["collapse/embed_issues"], m["collapse/embed_rankme"],
                       [w for w in caught if issubclass(w.category, CollapseWarning)])
    assert found["default"][0] == 0 and not found["default"][2]
    assert found["collapsible"][0] >= 1 and found["collapsible"][2]
    assert found["collapsible"][1] < 0.5 * found["default"][1]


def test_constant_encoder_trips_default_thresholds():
    torch.manual_seed(0)
    wm = make_wm()
    with torch.no_grad():
        for p in wm.encoder.parameters():
            p.zero_()  # every observation maps to the same embedding
    batch = make_batch()
    losses, post, _ = wm.loss(batch)
    with pytest.warns(CollapseWarning):
        m = wm.diagnostics(wm.encode(batch), wm.rssm.feat(post))
    assert m["collapse/embed_issues"] >= 1


def test_batches_of_few_distinct_observations_are_not_judged():
    # An env with 3 observations has embeddings of rank <= 2 however healthy the encoder.
    torch.manual_seed(0)
    wm = make_wm()
    batch = make_batch()
    batch["vector"] = torch.eye(8)[torch.randint(0, 3, (4, 12))]
    assert distinct_rows(batch) == 3
    losses, post, _ = wm.loss(batch)
    embed, feat = wm.encode(batch), wm.rssm.feat(post)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        m = wm.diagnostics(embed, feat, distinct=distinct_rows(batch))
    assert m["collapse/embed_issues"] == 0 and m["collapse/embed_rankme"] < 3


def test_ablation_switches_predict_off_and_sigreg_on():
    batch = make_batch()
    torch.manual_seed(0)
    wm = make_wm(predict=False, vicreg=False, inverse=False)
    losses, _, metrics = wm.loss(batch)
    assert set(losses) == {"dyn", "rep", "rew", "con"}  # decoder-free, no latent prediction
    assert "jepa/pred_k1" not in metrics and "jepa/copy_last" in metrics
    wm.total(losses).backward()  # the encoder still learns, from reward and KL
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in wm.encoder.parameters())

    torch.manual_seed(0)
    wm = make_wm(sigreg=True, vicreg=False)
    losses, _, _ = wm.loss(batch)
    assert losses["sigreg"].shape == (4, 12) and torch.isfinite(losses["sigreg"]).all()
    assert wm.scales["sigreg"] == 0.05
    losses["sigreg"].mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in wm.encoder.parameters())


def test_predict_off_alone_keeps_the_other_terms_and_reports_no_predictor():
    # `jepa.predict=false` is one switch: inverse and VICReg stay as set (the study's
    # no-decoder baseline turns them off too), and the untrained predictor is not reported.
    batch = make_batch()
    torch.manual_seed(0)
    wm = make_wm(predict=False)
    losses, _, _ = wm.loss(batch)
    assert set(losses) == {"dyn", "rep", "rew", "con", "vicreg", "inverse"}
    feat = wm.open_loop(batch, 5)
    assert wm.objective.report(batch, feat, 5) == {}


def test_report_leaves_out_imagined_steps_after_an_episode_start():
    torch.manual_seed(0)
    wm = make_wm()
    batch = make_batch(T=12)
    feat = wm.open_loop(batch, 5)
    whole = wm.objective.report(batch, feat, 5)["openl/jepa_imagined"]
    with torch.no_grad():
        target = wm.objective.target_encoder(batch).float()
        err = prediction_error(wm.objective.predictor(feat), target)
    assert whole == pytest.approx(float(err[:, 5:].mean()), rel=1e-5)
    batch["is_first"][:, 8] = True  # a new episode at step 8: the prior never reset there
    cut = wm.objective.report(batch, feat, 5)["openl/jepa_imagined"]
    assert cut == pytest.approx(float(err[:, 5:8].mean()), rel=1e-5)


def test_copy_last_is_the_k1_baseline_on_the_same_steps():
    torch.manual_seed(0)
    _, _, metrics = make_wm().loss(make_batch())
    assert metrics["jepa/copy_last"] == metrics["jepa/copy_k1"]
    assert metrics["jepa/pred_1step"] == metrics["jepa/pred_k1"]


def _ring_batch(B=16, T=16, n=8, seed=0):
    """A walker on a ring of n cells: the action (left/right) moves it, the observation is
    its cell, one-hot. Every frame differs from the last, so copying the last latent fails;
    the actions make the next one predictable."""
    g = torch.Generator().manual_seed(seed)
    act = torch.randint(0, 2, (B, T), generator=g)
    pos = (torch.randint(0, n, (B, 1), generator=g) + (2 * act - 1).cumsum(1)) % n
    batch = make_batch(B, T, seed=seed)
    batch["action"] = F.one_hot(act, 2).float()
    batch["vector"] = F.one_hot(pos, n).float()
    return batch


def test_k_step_predictions_beat_copying_the_last_latent_at_every_k():
    """A learning test of the predictor: after training, the prior's k-step predictions
    beat the copy-last baseline at k = 1, 2, 3 (the metrics the runs log)."""
    torch.manual_seed(0)
    wm = make_wm({"vector": (8,)}, ema=0.9)
    batch = _ring_batch()
    _train(wm, batch, 100)
    with torch.no_grad():
        _, _, metrics = wm.loss(_ring_batch(seed=1))
    for k in (1, 2, 3):
        pred, copy = float(metrics[f"jepa/pred_k{k}"]), float(metrics[f"jepa/copy_k{k}"])
        assert pred < 0.5 * copy, (k, pred, copy)
    assert metrics["jepa/pred_1step"] == metrics["jepa/pred_k1"]
