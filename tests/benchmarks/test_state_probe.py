"""The world-model state probe: recovers a state that the features hold linearly, not one
they lack; runs end to end on a pixel run, clean and with its own (held-out) background."""

import numpy as np
import pytest

import benchmarks.state_probe as state_probe
from agents.run.cli import run_main
from benchmarks.state_probe import main, probe

SPEC = "dmc:cartpole-balance"


def _episodes(n=12, length=40, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n * length)
    episode = t // length
    angle = rng.uniform(-np.pi, np.pi, len(t))
    qpos = np.stack([rng.normal(size=len(t)), angle], 1)  # slider, hinge_1
    qvel = rng.normal(size=(len(t), 2))
    return {"qpos": qpos, "qvel": qvel, "episode": episode, "returns": np.zeros(n)}


def test_probe_recovers_what_the_features_hold_and_not_what_they_lack():
    data = _episodes()
    rng = np.random.default_rng(1)
    # Features hold the cart position, the pole's sine/cosine and both velocities (mixed).
    state = np.concatenate([data["qpos"][:, :1], np.sin(data["qpos"][:, 1:]),
                            np.cos(data["qpos"][:, 1:]), data["qvel"]], 1)
    mix = rng.normal(size=(5, 32))
    full = probe({**data, "feat": state @ mix + 0.01 * rng.normal(size=(len(state), 32))}, SPEC)
    assert full["pos_r2"] > 0.99 and full["vel_r2"] > 0.99
    assert set(full["dims"]) == {"slider", "sin_hinge_1", "cos_hinge_1", "v_slider", "v_hinge_1"}
    # Features without the velocities: positions stay, velocities are not there to find.
    noise = 0.01 * rng.normal(size=(len(state), 32))
    part = probe({**data, "feat": state[:, :3] @ mix[:3] + noise}, SPEC)
    assert part["pos_r2"] > 0.99 and part["vel_r2"] < 0.1
    pixels = probe({**data, "feat": state @ mix}, SPEC + "-pixels")  # the vision spec form
    assert set(pixels["dims"]) == set(full["dims"])


def test_probe_holds_out_whole_episodes():
    # The state is constant within each episode and the features say only which episode a
    # frame is from: an unseen episode's state cannot be read from them. A split inside
    # episodes (each held-out chunk beside training frames of its own episode, the same
    # distractor game and start) would score it near 1.
    rng = np.random.default_rng(2)
    data = _episodes(n=4, length=60)
    episode = data["episode"]
    data["qpos"] = rng.normal(size=(4, 2))[episode]
    data["qvel"] = rng.normal(size=(4, 2))[episode]
    feat = rng.normal(size=(4, 32))[episode] + 0.01 * rng.normal(size=(len(episode), 32))
    out = probe({**data, "feat": feat}, SPEC)
    assert out["pos_r2"] < 0.5 and out["vel_r2"] < 0.5
    with pytest.raises(ValueError, match="at least 3"):
        probe({**_episodes(n=2), "feat": feat[:80]}, SPEC)


def test_state_probe_table_for_a_distracted_pixel_run(tmp_path, capsys, monkeypatch):
    logdir = tmp_path / "run"
    args = ["--env", SPEC, "--logdir", str(logdir), "--size", "1m", "--envs", "1",
            "--steps", "40", "--set", "threads=1", "--set", "compile=false",
            "--set", "replay.size=5000", "--set", "replay.batch_size=2",
            "--set", "replay.batch_length=8", "--set", "run.train_ratio=4",
            "--set", "run.log_every=0", "--set", "run.eval_every=1000000",
            "--set", "run.report_every=1000000", "--set", "run.video=false",
            "--set", "env.options.obs=pixels", "--set", "env.options.distractor=atari",
            "--set", "env.options.time_limit=40"]  # frames: 20 steps
    assert run_main(args) == 0
    capsys.readouterr()
    modes, load_agent = [], state_probe.load_agent

    def recording_load_agent(*args, **kwargs):
        agent, cfg = load_agent(*args, **kwargs)
        policy = agent.policy
        agent.policy = lambda obs, carry, mode: modes.append(mode) or policy(obs, carry, mode)
        return agent, cfg

    monkeypatch.setattr(state_probe, "load_agent", recording_load_agent)
    out = tmp_path / "probe.md"
    rows = main([str(logdir), "--steps", "80", "--out", str(out)])
    assert set(modes) == {"train"}  # the run's eval policy (`sample`, the default) acts
    assert [r["distractor"] for r in rows] == [None, "atari:eval"]  # held-out games
    for r in rows:
        assert r["episodes"] == 4 and r["steps"] == 80  # whole episodes of 20 steps
        assert np.isfinite(r["pos_r2"]) and np.isfinite(r["vel_r2"])
    assert "| run | dreamerv3 | atari:eval |" in out.read_text()


def test_state_probe_refuses_what_it_cannot_measure(tmp_path, capsys):
    logdir = tmp_path / "gym"
    assert run_main(["--env", "gym:CartPole-v1", "--logdir", str(logdir), "--size", "1m",
                     "--envs", "1", "--steps", "40", "--set", "compile=false",
                     "--set", "replay.batch_size=2", "--set", "replay.batch_length=8",
                     "--set", "run.train_ratio=4", "--set", "run.log_every=0",
                     "--set", "run.eval_every=1000000", "--set", "run.video=false",
                     "--set", "run.report_every=1000000"]) == 0
    with pytest.raises(SystemExit):
        main([str(logdir)])
    assert "needs a dmc: run" in capsys.readouterr().err
