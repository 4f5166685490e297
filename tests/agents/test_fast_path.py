"""The fast path (compiled step functions, bf16 autocast) computes what eager fp32 computes,
and compiles once: no recompiles after warm-up for the shapes a run uses."""

from __future__ import annotations

import copy
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch._inductor import config as inductor_config

from agents.compiled import compiler_missing, graphs_compiled, resolve_compile
from agents.dreamerv3 import DreamerV3Agent
from agents.run.config import load_config
from agents.runtime import conv_stacks_bf16, cpu_has_bf16
from world_models.encoders import CONV_BF16_MIN_FRAMES, MultiDecoder, MultiEncoder

CPU = torch.device("cpu")
needs_compiler = pytest.mark.skipif(compiler_missing(CPU) is not None,
                                    reason="inductor has no C++ compiler here")
# A small model: compile time depends on the graphs, not on the widths.
SMALL = ["model.rssm.deter=64", "model.rssm.hidden=16", "model.rssm.stoch=4",
         "model.rssm.classes=4", "model.rssm.blocks=4", "model.encoder.units=16",
         "model.decoder.units=16", "model.reward_head.units=16", "model.cont_head.units=16",
         "actor_critic.policy.units=16", "actor_critic.value.units=16",
         "actor_critic.imag_length=4"]
B, T = 4, 8


def spaces(discrete: bool = False):
    obs = gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)})
    act = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,), np.float32)
    return obs, act


def pixel_spaces(size: int = 16):
    obs = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (size, size, 3), np.uint8)})
    return obs, gym.spaces.Box(-1, 1, (2,), np.float32)


def make(precision: str = "fp32", compile: bool = False, discrete: bool = False,
         like: DreamerV3Agent | None = None, sets: tuple[str, ...] = (),
         pixels: bool = False) -> DreamerV3Agent:
    torch.manual_seed(0)
    cfg = load_config("dmc:walker-walk", size="1m", sets=[*SMALL, *sets])
    space = pixel_spaces() if pixels else spaces(discrete)
    agent = DreamerV3Agent(*space, cfg, precision=precision, compile=compile)
    if like is not None:
        agent.load_state_dict(copy.deepcopy(like.state_dict()))
    return agent


def batch(discrete: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if discrete:
        action = torch.nn.functional.one_hot(torch.randint(0, 3, (B, T), generator=g), 3)
    else:
        action = torch.rand(B, T, 2, generator=g) * 2 - 1
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    return {"vector": torch.randn(B, T, 5, generator=g), "action": action.float(),
            "reward": torch.randn(B, T, generator=g), "is_first": is_first,
            "is_last": torch.zeros(B, T, dtype=torch.bool),
            "is_terminal": torch.rand(B, T, generator=g) < 0.1}


def loss_and_grads(agent: DreamerV3Agent, data: dict, seed: int = 1):
    torch.manual_seed(seed)
    loss, terms, _ = agent.loss(data)
    params = {**{f"wm.{k}": p for k, p in agent.wm.named_parameters()},
              **{f"ac.{k}": p for k, p in agent.ac.named_parameters()}}
    agent.opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in params.items() if p.grad is not None}
    return float(loss), {k: float(v.mean()) for k, v in terms.items()}, grads


def grad_groups(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The main parameter groups' gradients, each flattened into one vector."""
    prefixes = ("wm.encoder", "wm.rssm", "wm.objective", "wm.reward", "wm.cont",
                "ac.policy", "ac.value")
    return {p: torch.cat([g.flatten() for k, g in grads.items() if k.startswith(p)])
            for p in prefixes}


@pytest.fixture
def same_random():
    """Compiled kernels draw random numbers with eager's generator (inductor's own differs)."""
    with inductor_config.patch(fallback_random=True):
        yield


@needs_compiler
@pytest.mark.parametrize("discrete", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_compiled_fp32_matches_eager(same_random, discrete):
    eager = make(discrete=discrete)
    fast = make(compile=True, discrete=discrete, like=eager)
    data = batch(discrete)
    loss_e, terms_e, grads_e = loss_and_grads(eager, data)
    loss_f, terms_f, grads_f = loss_and_grads(fast, data)
    # Tight: the same fp32 arithmetic, fused in a different order.
    assert loss_f == pytest.approx(loss_e, rel=1e-4, abs=1e-5)
    for name in terms_e:
        assert terms_f[name] == pytest.approx(terms_e[name], rel=1e-3, abs=1e-5), name
    for group, g in grad_groups(grads_e).items():
        gf = grad_groups(grads_f)[group]
        assert torch.allclose(gf, g, rtol=1e-3, atol=1e-5), (group, (gf - g).abs().max())


def pixel_batch(seed: int = 0, size: int = 16) -> dict[str, torch.Tensor]:
    data = batch(seed=seed)
    del data["vector"]
    g = torch.Generator().manual_seed(seed)
    data["image"] = torch.randint(0, 256, (B, T, size, size, 3), dtype=torch.uint8, generator=g)
    return data


@needs_compiler
@pytest.mark.parametrize("strided", [pytest.param(False, marks=pytest.mark.slow), True])
def test_compiled_fp32_pixel_update_matches_eager(same_random, strided):
    # The conv encoder and decoder (both forms) in the compiled graphs: channels-last
    # layouts, the sub-pixel upsampling conv and the zero-insert one.
    sets = ("model.encoder.depth=2", "model.decoder.depth=2", "model.encoder.mults=[2,2]",
            "model.decoder.mults=[2,2]", f"model.encoder.strided={str(strided).lower()}",
            f"model.decoder.strided={str(strided).lower()}")
    eager = make(sets=sets, pixels=True)
    fast = make(compile=True, like=eager, sets=sets, pixels=True)
    data = pixel_batch()
    loss_e, terms_e, grads_e = loss_and_grads(eager, data)
    loss_f, terms_f, grads_f = loss_and_grads(fast, data)
    assert "rec_image" in terms_e
    assert loss_f == pytest.approx(loss_e, rel=1e-4, abs=1e-5)
    for name in terms_e:
        assert terms_f[name] == pytest.approx(terms_e[name], rel=1e-3, abs=1e-5), name
    groups_f = grad_groups(grads_f)
    for group, g in grad_groups(grads_e).items():
        assert torch.allclose(groups_f[group], g, rtol=1e-3, atol=1e-5), (
            group, (groups_f[group] - g).abs().max())


@pytest.mark.parametrize("compiled", [
    False, pytest.param(True, marks=[pytest.mark.slow, needs_compiler])])
def test_bf16_conv_stacks_in_the_pixel_update(same_random, compiled):
    # conv_precision=bf16: the encoder's and decoder's convs over a training batch run in
    # bf16, eager and inside the compiled update (emulated on CPUs without native bf16: slow
    # there, same numbers); the rest of the world-model loss stays fp32. B x T = 64 frames
    # reach the bf16 threshold (CONV_BF16_MIN_FRAMES).
    sets = ("model.encoder.depth=2", "model.decoder.depth=2", "model.encoder.mults=[2,2]",
            "model.decoder.mults=[2,2]", "model.encoder.strided=true",
            "model.decoder.strided=true")
    eager = make(sets=sets, pixels=True)
    fast = make(precision="bf16", compile=compiled, like=eager, pixels=True,
                sets=(*sets, "conv_precision=bf16"))
    assert fast.conv_bf16 and not eager.conv_bf16
    assert fast.wm.encoder.conv_bf16 and fast.wm.objective.decoder.conv_bf16
    first, second = pixel_batch(0), pixel_batch(1)
    data = {k: torch.cat([first[k], second[k]]) for k in first}
    assert data["image"].shape[:2].numel() == CONV_BF16_MIN_FRAMES
    convs_fp32 = make(precision="bf16", compile=compiled, like=eager, pixels=True,
                      sets=(*sets, "conv_precision=fp32"))
    loss_e, terms_e, grads_e = loss_and_grads(eager, data)
    loss_f, terms_f, grads_f = loss_and_grads(fast, data)
    # The setting is what moves the encoder's gradient: with fp32 convs it is fp32's (bf16
    # is only in the imagination there, which starts from detached states), with bf16 convs
    # it moves by far more than fp32 noise.
    _, terms_c, grads_c = loss_and_grads(convs_fp32, data)
    assert terms_c["rec_image"] == pytest.approx(terms_e["rec_image"], rel=1e-5)

    def moved(grads):
        g, ref = grad_groups(grads)["wm.encoder"], grad_groups(grads_e)["wm.encoder"]
        return float((g - ref).norm() / ref.norm())

    assert moved(grads_c) < 1e-4 and moved(grads_f) > 1e-2, (moved(grads_c), moved(grads_f))
    assert terms_f["rec_image"] == pytest.approx(terms_e["rec_image"], rel=2e-2)
    assert loss_f == pytest.approx(loss_e, rel=0.05, abs=1e-2)
    groups_f = grad_groups(grads_f)
    # Gradient directions: the encoder's come back through the bf16 convs (cosine 0.991
    # eager, 0.987 compiled at these 4-channel widths); the other groups agree to 0.998.
    for group, g in grad_groups(grads_e).items():
        cos = torch.nn.functional.cosine_similarity(groups_f[group], g, dim=0)
        assert cos > (0.98 if group == "wm.encoder" else 0.995), (group, float(cos))


def test_conv_precision_setting():
    # auto by default: bf16 only on a CPU with native bf16; any of them is fp32 when the
    # update's precision is.
    cpu = torch.device("cpu")
    assert make(precision="bf16").conv_bf16 == cpu_has_bf16()
    assert not make(precision="bf16", sets=("conv_precision=fp32",)).conv_bf16
    assert not make(precision="fp32", sets=("conv_precision=bf16",)).conv_bf16
    assert conv_stacks_bf16("auto", "bf16", cpu) == cpu_has_bf16()
    assert conv_stacks_bf16("bf16", "bf16", cpu)
    assert not conv_stacks_bf16("bf16", "fp32", cpu)
    assert not conv_stacks_bf16("bf16", "bf16", torch.device("cuda"))  # autocast whole there
    with pytest.raises(ValueError, match="conv_precision 'fp16' unknown; use fp32, bf16, auto"):
        make(precision="bf16", sets=("conv_precision=fp16",))
    # The JEPA agent's target encoder and probe decoder (copies) follow the setting too.
    jepa = make(precision="bf16", pixels=True, sets=(
        "conv_precision=bf16", "model.objective=latent", "jepa.probe_decoder=true"))
    stacks = [m for m in jepa.wm.modules() if isinstance(m, (MultiEncoder, MultiDecoder))]
    assert len(stacks) == 3 and all(m.conv_bf16 for m in stacks)


@needs_compiler
def test_bf16_fast_path_is_close_to_eager_fp32(same_random):
    eager = make()
    fast = make(precision="bf16", compile=True, like=eager)
    data = batch()
    loss_e, terms_e, grads_e = loss_and_grads(eager, data)
    loss_f, terms_f, grads_f = loss_and_grads(fast, data)
    # Looser: bf16 keeps 8 bits of mantissa (~0.4% per rounding) in the imagination and
    # actor-critic losses; sampled imagined actions can differ where probabilities tie.
    assert loss_f == pytest.approx(loss_e, rel=0.05, abs=1e-2)
    for name in ("dyn", "rep", "rew", "con", "rec_vector"):  # world model: fp32 on CPU
        assert terms_f[name] == pytest.approx(terms_e[name], rel=1e-3, abs=1e-5), name
    for name in ("policy", "value", "repval"):
        assert terms_f[name] == pytest.approx(terms_e[name], rel=0.1, abs=2e-2), name
    for group, g in grad_groups(grads_e).items():
        gf = grad_groups(grads_f)[group]
        cos = torch.nn.functional.cosine_similarity(gf, g, dim=0)
        assert cos > 0.95, (group, float(cos))


@needs_compiler
def test_no_recompiles_after_warmup():
    agent = make(precision="bf16", compile=True)
    train_envs, eval_envs = 3, 2

    def obs(n: int, first: bool) -> dict[str, np.ndarray]:
        return {"vector": np.random.randn(n, 5).astype(np.float32),
                "is_first": np.full(n, first)}

    def stored(data: dict) -> dict:
        # As the trainer samples: stored latents (replay context), so updates start from them.
        g = torch.Generator().manual_seed(len(data))
        rssm = agent.wm.rssm
        return {**data, "latent_deter": (torch.rand(B, T, rssm.deter, generator=g) - 0.5).half(),
                "latent_stoch": torch.randint(0, rssm.classes, (B, T, rssm.stoch), generator=g,
                                              dtype=torch.uint8)}

    def one_round(seed: int) -> None:
        agent.train(stored(batch(seed=seed)))
        assert agent.trained_latents()
        carry = None
        for t in range(3):
            _, carry = agent.policy(obs(train_envs, t == 0), carry, mode="train")
        carry = None
        for t in range(3):
            _, carry = agent.policy(obs(eval_envs, t == 0), carry, mode="eval")
        agent.report(stored(batch(seed=seed)))

    one_round(0)  # warm-up: every shape and mode a run uses once
    warm, warm_s = graphs_compiled(), agent.clock.seconds
    assert warm_s > 0 and agent.clock.graphs > 0
    for seed in (1, 2):
        one_round(seed)
    assert graphs_compiled() == warm, "the fast path recompiled after warm-up"
    metrics = agent.train(stored(batch(seed=3)))
    assert metrics["perf/compile_s"] == agent.clock.seconds == warm_s  # logged, not growing


def test_compile_setting_is_checked():
    assert resolve_compile("off", CPU) is False
    assert resolve_compile(False, CPU) is False  # YAML's bare `off`
    with pytest.raises(ValueError, match="auto, on, off"):
        resolve_compile("fast", CPU)


def test_compile_on_without_a_compiler_is_one_line(monkeypatch):
    monkeypatch.setattr("agents.compiled.shutil.which", lambda name: None)
    assert resolve_compile("auto", CPU) is False
    with pytest.raises(ValueError, match="no C.. compiler"):
        resolve_compile("on", CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fast_path_with_cuda_graphs_matches_eager():
    cfg = load_config("dmc:walker-walk", size="1m", sets=SMALL)
    torch.manual_seed(0)
    eager = DreamerV3Agent(*spaces(), cfg, device="cuda", precision="fp32")
    fast = DreamerV3Agent(*spaces(), cfg, device="cuda", precision="bf16", compile=True)
    fast.load_state_dict(copy.deepcopy(eager.state_dict()))
    data = {k: v.cuda() for k, v in batch().items()}
    loss_e = loss_and_grads(eager, data)[0]
    loss_f = loss_and_grads(fast, data)[0]
    assert loss_f == pytest.approx(loss_e, rel=0.05, abs=1e-2)
    for _ in range(3):
        metrics = fast.train(data)
    assert np.isfinite(metrics["loss/total"])


def test_empty_kernel_files_in_the_inductor_cache_are_dropped(tmp_path, monkeypatch):
    # A process killed while inductor wrote a kernel leaves an empty .so that every later
    # load fails on; old empty ones are deleted, fresh ones (being written) and full ones kept.
    import time

    from agents.compiled import drop_truncated_kernels

    monkeypatch.setattr("torch._inductor.runtime.cache_dir_utils.cache_dir",
                        lambda: str(tmp_path))
    (tmp_path / "ab").mkdir()
    old, fresh, full = (tmp_path / "ab" / f"{n}.so" for n in ("old", "fresh", "full"))
    old.write_bytes(b"")
    fresh.write_bytes(b"")
    full.write_bytes(b"\x7fELF")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(full, (an_hour_ago, an_hour_ago))
    assert drop_truncated_kernels() == 1
    assert not old.exists() and fresh.exists() and full.exists()


def test_inductor_caches_default_to_a_folder_that_survives_reboots(tmp_path, monkeypatch):
    from agents.compiled import configure_dynamo

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    configure_dynamo()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "dreamjepa" / "inductor")
    # Importing inductor sets the variable to torch's /tmp default: that counts as unset.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    configure_dynamo()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "dreamjepa" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    configure_dynamo()  # a folder the user names wins
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
