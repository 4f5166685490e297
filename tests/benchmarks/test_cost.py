"""dreamer-cost: the memory arithmetic on the issue's worked figures, the saved-tensor
activation measurement, the budget and GPU projection, and the command line."""

from __future__ import annotations

import pytest
import torch

from benchmarks.cost import (
    GB,
    activation_bytes_per_layer,
    gpu_projection,
    load_gpus,
    main,
    measure_vit_blocks,
    saved_tensor_bytes,
    training_bytes,
    updates_for,
    vit_memory,
    vit_params,
    vit_tokens,
)


def test_vjepa2_vit_large_worked_figures():
    # ViT-L, 16 frames at 224x224 in 2x16x16 tubelets: 1,568 tokens, ~300M parameters.
    tokens = vit_tokens(16, 224, 16, 2)
    assert tokens == 1568
    assert vit_params(24, 1024) == pytest.approx(300e6, rel=0.01)
    m = vit_memory(24, 1024, 16, tokens, batch=8)
    assert m["states_bytes"] / GB == pytest.approx(4.8, abs=0.05)  # 16N
    assert m["activation_bytes_per_sample"] / GB == pytest.approx(1.31, abs=0.005)
    assert m["total_bytes"] / GB == pytest.approx(17, abs=0.25)  # batch 8, 10% overhead


def test_two_billion_parameter_worked_figures():
    m = vit_memory(28, 2048, 16, 4096, batch=4, params=2e9, overhead=0.0)
    assert m["states_bytes"] / GB == pytest.approx(32, rel=1e-6)
    assert m["activation_bytes"] / GB == pytest.approx(32, rel=0.01)


def test_attention_term_and_training_bytes():
    flash = activation_bytes_per_layer(100, 2, 64, 4, flash=True)
    full = activation_bytes_per_layer(100, 2, 64, 4, flash=False)
    assert flash == 100 * 2 * 64 * 34
    assert full - flash == 100 * 2 * 64 * 5 * 4 * 100 / 64  # 5 a s^2 b
    assert training_bytes(10, frozen_params=3) == 16 * 10 + 4 * 3
    with pytest.raises(ValueError, match="divide"):
        vit_tokens(15, 224, 16, 2)


def test_budget_and_gpu_projection():
    # The published protocol: 1M frames at repeat 2, ratio 512, batch 16 x 64.
    assert updates_for(1e6, 2, 512, 16, 64) == 250_000
    gpus = {"X": {"memory_gb": 10, "bf16_tflops": 100, "usd_per_hour": [1.0, 2.0]}}
    (row,) = gpu_projection(gpus, gflop_per_update=360.0, updates=1000, memory_bytes=11e9,
                            mfu=0.1)
    assert row["hours"] == pytest.approx(1000 * 360e9 / 10e12 / 3600)
    assert row["usd"] == pytest.approx((row["hours"], 2 * row["hours"]))
    assert row["fits"] is False
    assert {"RTX 4090", "H100 80GB", "B200"} <= set(load_gpus())


def test_saved_tensor_bytes_counts_activations_once_and_not_parameters():
    lin = torch.nn.Linear(8, 16)
    x = torch.randn(4, 8)
    nbytes, out = saved_tensor_bytes(lambda: torch.relu(lin(x)).sum(), list(lin.parameters()))
    # addmm saves its input x (4 x 8); relu saves its output (4 x 16); the weight is skipped.
    assert nbytes == 4 * (4 * 8 + 4 * 16)
    out.backward()


def test_vit_estimate_is_within_a_small_factor_of_our_vit():
    est = 2 * activation_bytes_per_layer(64, 4, 64, 4, flash=False)
    measured = measure_vit_blocks(64, 2, 4, 64, 4)
    assert 0.5 < measured / est < 2.0


def test_cli_prints_the_plan_and_rejects_bad_values(capsys, one_thread):
    code = main(["--env", "gym:CartPole-v1", "--size", "1m", "--set", "compile=off",
                 "--set", "threads=1", "--updates", "1", "--frames", "20000",
                 "--set", "replay.batch_length=16", "--set", "replay.batch_size=4"])
    out = capsys.readouterr().out
    assert code == 0
    for text in ("trained parameters", "activations", "(measured", "GFLOP", "updates",
                 "RTX 4090", "fits"):
        assert text in out, text
    assert main(["--vit", "--mfu", "0"]) == 2
    assert "--mfu 0.0 out of range" in capsys.readouterr().err
    assert main([]) == 2
    assert "--env is required" in capsys.readouterr().err


def test_a_frozen_encoder_is_planned_with_its_stored_embeddings(tmp_path, one_thread):
    # A frozen encoder runs once per stored frame, not per update: the planned update reads
    # the embeddings replay keeps, so it costs fewer FLOPs than with the cache turned off.
    import gymnasium as gym
    import numpy as np

    from agents.base import make_agent
    from agents.run.config import load_config
    from benchmarks.cost import batch_for, measure_update
    from world_models.vit_jepa import ViT, make_config, save_encoder

    path = tmp_path / "encoder.pt"
    save_encoder(path, ViT(make_config("tiny", (64, 64, 3), width=32, depth=1, heads=2)))
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)})
    gflop = {}
    for cache in (True, False):
        cfg = load_config("dmc:cartpole-balance", size="1m", sets=[
            f"model.encoder.kind=jepa:{path}", f"model.encoder.cache={cache}",
            "env.options.obs=pixels", "compile=off", "precision=fp32"])
        agent = make_agent("dreamerv3", space, gym.spaces.Box(-1, 1, (1,)), cfg,
                           device="cpu", precision="fp32", compile=False)
        batch = batch_for(agent, 2, 8)
        assert ("image_embed" in batch) == cache
        gflop[cache] = measure_update(agent, batch, 1)["gflop"]
    assert gflop[True] < gflop[False]
