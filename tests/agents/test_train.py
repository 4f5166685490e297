"""The training loop: update-ratio arithmetic (with a counting agent), schedules, and
reruns that must never damage a trained run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from agents.run.cli import run_main
from agents.run.config import ConfigError
from agents.run.inference import load_agent
from agents.run.logger import RunLogger
from agents.run.rundir import RunDir
from agents.run.schedules import Every, Ratio
from agents.run.train import Parts, Trainer, build_parts, train
from replay import SequenceReplay


def test_every_fires_once_per_interval():
    every = Every(10, last=0)
    assert [every(t) for t in (5, 10, 15, 19, 20, 35)] == [False, True, False, False, True, True]
    assert all(Every(0)(t) for t in range(3))


def test_ratio_counts_whole_updates_from_its_start():
    ratio = Ratio(0.125)
    assert ratio(100) == 0  # not started
    ratio.start(96)
    # floor((step - 96) / 8) in all: 0 at 100, 1 at 104, 13 at 200.
    assert ratio(100) == 0 and ratio(104) == 1 and ratio(200) == 12
    assert ratio.done == 13
    resumed = Ratio(0.125)
    resumed.start(96, done=ratio.done)
    assert resumed(200) == 0 and resumed(208) == 1


class CountingAgent:
    """Random actions; `train` only counts the batches it is given and their steps."""

    def __init__(self, act_space):
        self.act_space, self.updates, self.replayed = act_space, 0, 0

    def policy(self, obs, carry=None, mode="train"):
        n = len(obs["is_first"])
        return np.eye(self.act_space.n, dtype=np.float32)[np.random.randint(2, size=n)], carry

    def train(self, batch):
        self.updates += 1
        self.replayed += int(np.prod(batch["reward"].shape))
        return {"loss/fake": 1.0}

    def report(self, batch):
        return {}

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state["updates"]


@pytest.mark.parametrize("train_ratio", [16, 64, 256])
def test_replayed_steps_track_train_ratio(tmp_path, tiny_config, train_ratio):
    steps, num_envs, B, T = 1200, 4, 4, 8
    cfg = tiny_config("gym:CartPole-v1", tmp_path, steps, {
        "env.num_envs": num_envs, "replay.batch_size": B, "replay.batch_length": T,
        "run.prefill": 200, "run.train_ratio": train_ratio, "run.eval_episodes": 0,
        "run.video": False})
    env = envs.make_vector(cfg.env.spec, num_envs, seed=0)
    agent = CountingAgent(env.single_action_space)
    run = RunDir(tmp_path)
    parts = Parts(env, agent, SequenceReplay(10_000, num_envs, seed=0), RunLogger(tmp_path))
    trainer = Trainer(cfg, run, parts)
    trainer.run()
    trainer.close()
    c = trainer.counters
    trained_steps = c["step"] - c["train_start"] + num_envs  # agent steps since training began
    assert c["step"] == steps and c["updates"] == agent.updates
    assert agent.replayed == agent.updates * B * T
    # Whole updates only: the replayed steps lag the ratio by less than one update.
    assert 0 <= trained_steps * train_ratio - agent.replayed < B * T
    assert c["train_start"] >= 200


SMALL = {"run.steps": 160, "run.report_every": 1_000_000, "run.video": False}


def _finished_run(tmp_path, tiny_config):
    cfg = tiny_config("gym:CartPole-v1", tmp_path / "run", 160, SMALL)
    logdir = train(cfg)
    return cfg, logdir, (logdir / "config.yaml").read_text()


def test_rerun_with_changed_training_key_is_refused_and_leaves_run_intact(tmp_path, tiny_config,
                                                                          capsys):
    cfg, logdir, before = _finished_run(tmp_path, tiny_config)
    for key, value in (("opt.lr", 1e-3), ("model.rssm.deter", 256)):
        changed = tiny_config("gym:CartPole-v1", logdir, 160, {**SMALL, key: value})
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            train(changed)
        assert (logdir / "config.yaml").read_text() == before
    load_agent(logdir)  # the run still loads with its own config
    argv = ["--env", "gym:CartPole-v1", "--logdir", str(logdir), "--size", "1m",
            "--set", "model.rssm.deter=256"]
    capsys.readouterr()
    assert run_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.rssm.deter" in err


def test_a_run_whose_newest_checkpoint_is_gone_loads_its_previous_one(tmp_path, tiny_config):
    # After a crash the only good checkpoint may be `checkpoint.prev`: dreamer-eval and
    # dreamer-export find it from the run directory, or from the folder named directly.
    cfg, logdir, _ = _finished_run(tmp_path, tiny_config)
    (logdir / "checkpoint").rename(logdir / "checkpoint.prev")
    assert RunDir.find(logdir)[1] == logdir / "checkpoint.prev" / "agent.pt"
    assert RunDir.find(logdir / "checkpoint.prev")[0].path == logdir
    load_agent(logdir)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        RunDir.find(tmp_path)


def test_a_relative_encoder_path_is_kept_absolute(tmp_path, monkeypatch):
    from agents.run.config import absolute_encoder

    monkeypatch.chdir(tmp_path)
    assert absolute_encoder("jepa:enc/encoder.pt") == f"jepa:{tmp_path}/enc/encoder.pt"
    assert absolute_encoder("hf:facebook/vjepa2-vitl-fpc64-256") == (
        "hf:facebook/vjepa2-vitl-fpc64-256")  # a hub id, no folder of that name here
    assert absolute_encoder("cnn") == "cnn"
    # A run saved with the relative path (before paths were kept absolute) resumes from the
    # folder it was started in: the same file, not a changed encoder.
    from agents.run.config import load_config, save_config
    from agents.run.train import resume_changes

    sets = ["env.options.obs=pixels", "logdir=run"]
    old = load_config("dmc:cartpole-balance", sets=[*sets, "model.encoder.kind=jepa:enc.pt"])
    (tmp_path / "run").mkdir()
    save_config(old, tmp_path / "run" / "config.yaml")
    new = load_config("dmc:cartpole-balance",
                      sets=[*sets, f"model.encoder.kind={absolute_encoder('jepa:enc.pt')}"])
    assert resume_changes(new, RunDir(tmp_path / "run")) == {}


def test_rerun_of_finished_run_says_so(tmp_path, tiny_config, capsys):
    cfg, logdir, before = _finished_run(tmp_path, tiny_config)
    status = json.loads((logdir / "status.json").read_text())
    capsys.readouterr()
    train(cfg)
    assert "already finished (160 of 160 steps); nothing to do" in capsys.readouterr().out
    assert json.loads((logdir / "status.json").read_text()) == status
    assert (logdir / "config.yaml").read_text() == before


def test_rerun_with_longer_budget_resumes_and_applies_it(tmp_path, tiny_config, capsys):
    cfg, logdir, _ = _finished_run(tmp_path, tiny_config)
    cpu_before = json.loads((logdir / "status.json").read_text())["cpu_s"]
    longer = tiny_config("gym:CartPole-v1", logdir, 240, SMALL)
    capsys.readouterr()
    train(longer)
    out = capsys.readouterr().out
    assert "applied on resume: run.steps 160 -> 240" in out
    assert "resuming from step 160 of 240" in out
    status = json.loads((logdir / "status.json").read_text())
    assert status["step"] == 240
    # The run's CPU-seconds carry over the restart and grow; metrics log them too.
    assert 0 < cpu_before < status["cpu_s"]
    logged = [row["perf/cpu_s"] for line in (logdir / "metrics.jsonl").read_text().splitlines()
              if "perf/cpu_s" in (row := json.loads(line))]
    assert logged == sorted(logged) and logged[-1] == pytest.approx(status["cpu_s"], rel=0.5)
    assert "steps: 240" in (logdir / "config.yaml").read_text()


def test_a_resumed_run_restarts_its_envs_from_seeds_of_its_own(tmp_path, tiny_config,
                                                                monkeypatch):
    # With the run's first seeds every resume would replay the opening episodes.
    from agents.run.collector import Collector
    from agents.run.seeding import env_seed

    seeds: list = []
    reset = Collector._reset
    monkeypatch.setattr(Collector, "_reset",
                        lambda self, seed=None: seeds.append(seed) or reset(self, seed))
    cfg, logdir, _ = _finished_run(tmp_path, tiny_config)
    assert seeds[0] is None  # the first start: the env's construction seed
    first_start = len(seeds)
    train(tiny_config("gym:CartPole-v1", logdir, 240, SMALL))
    assert seeds[first_start] == env_seed(cfg.seed, 160)
    assert len({env_seed(0, 160), env_seed(0, 240), env_seed(1, 160)}) == 3
    assert env_seed(0, 160) == env_seed(0, 160) >= 0


def test_runs_share_no_env_stream_and_each_evaluation_plays_a_new_episode(tmp_path,
                                                                          tiny_config,
                                                                          monkeypatch):
    # Gymnasium seeds sub-env i with seed + i: with the run's seed as that seed, runs 0 and 1
    # of a study would share three of their four envs' streams (start states, distractor
    # games), and every evaluation would replay one fixed episode.
    import envs
    from agents.run import train as train_module
    from agents.run.seeding import EVAL_ENVS, env_seed

    firsts: list = []
    make_vector = envs.make_vector
    monkeypatch.setattr(envs, "make_vector", lambda spec, n, seed=None, **kw: (
        firsts.append((n, seed)) or make_vector(spec, n, seed=seed, **kw)))
    cfg = tiny_config("gym:CartPole-v1", tmp_path, 240, {**SMALL, "run.eval_every": 80,
                                                         "run.eval_episodes": 1})
    train_module.train(cfg)
    n = cfg.env.num_envs
    assert firsts[0] == (n, env_seed(cfg.seed))
    evals = [seed for _, seed in firsts[1:]]
    assert len(evals) >= 2 and len(set(evals)) == len(evals)  # a new episode each time
    assert evals[0] in {env_seed(cfg.seed, step, EVAL_ENVS) for step in range(0, 241, n)}
    streams = [set(range(env_seed(seed), env_seed(seed) + 4)) for seed in range(3)]
    assert not (streams[0] & streams[1] or streams[0] & streams[2] or streams[1] & streams[2])


@pytest.mark.parametrize("argv", [
    ["--env", "dmc:walker-walk2"],
    ["--env", "nosuch:task"],
    ["--env", "gym:CartPole-v1", "--agent", "nosuch"],
])
def test_failed_start_leaves_no_run_directory(tmp_path, argv, capsys):
    logdir = tmp_path / "run"
    assert run_main([*argv, "--logdir", str(logdir)]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
    assert not logdir.exists()


def test_print_config_builds_nothing(tmp_path, capsys):
    logdir = tmp_path / "run"
    assert run_main(["--env", "dmc:walker-walk", "--logdir", str(logdir), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "train_ratio:" in out and f"# run directory: {logdir}" in out
    assert not logdir.exists()


@pytest.mark.parametrize("setting,key", [
    ("run.train_ratio=-1", "run.train_ratio"), ("run.train_ratio=0", "run.train_ratio"),
    ("replay.batch_length=0", "replay.batch_length"), ("opt.lr=fast", "opt.lr"),
    ("env.num_envs=0", "env.num_envs"), ("run.steps=-5", "run.steps"),
])
def test_out_of_range_values_are_one_line_errors(tmp_path, setting, key, capsys):
    logdir = tmp_path / "run"
    assert run_main(["--env", "gym:CartPole-v1", "--logdir", str(logdir), "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and key in err
    assert not logdir.exists()


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_config, capsys,
                                                                   smoke_argv):
    cfg, logdir, _ = _finished_run(tmp_path, tiny_config)
    longer = tiny_config("gym:CartPole-v1", logdir, 240, SMALL)
    train(longer)  # the 160-step checkpoint is kept as checkpoint.prev
    assert [p.name for p in RunDir(logdir).checkpoints()] == ["checkpoint", "checkpoint.prev"]
    agent_file = logdir / "checkpoint" / "agent.pt"
    agent_file.write_bytes(agent_file.read_bytes()[:1000])  # a write cut short
    good = (logdir / "checkpoint.prev" / "agent.pt").read_bytes()
    capsys.readouterr()
    train(longer)
    out = capsys.readouterr().out
    assert "warning: checkpoint" in out and "does not load" in out
    assert "resuming from step 160 of 240" in out
    assert json.loads((logdir / "status.json").read_text())["step"] == 240
    # The broken one stepped aside, so the save after the fallback kept the good one as
    # checkpoint.prev (it used to delete it and keep the broken one there).
    assert "checkpoint.bad" in out and (logdir / "checkpoint.bad").is_dir()
    assert [p.name for p in RunDir(logdir).checkpoints()] == ["checkpoint", "checkpoint.prev"]
    assert (logdir / "checkpoint.prev" / "agent.pt").read_bytes() == good
    # Both broken: a one-line error, and nothing is overwritten.
    for name in ("checkpoint", "checkpoint.prev"):
        (logdir / name / "agent.pt").write_bytes(b"not a checkpoint")
    argv = ["--env", "gym:CartPole-v1", "--logdir", str(logdir), "--steps", "240", *smoke_argv]
    argv += [a for k, v in SMALL.items() if k != "run.steps" for a in ("--set", f"{k}={v}")]
    assert run_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no checkpoint" in err and "loads" in err


def test_a_swap_cut_between_its_renames_is_finished_and_a_cut_write_is_not_used(tmp_path):
    # write_checkpoint renames checkpoint -> checkpoint.prev, then checkpoint.tmp ->
    # checkpoint; a crash between the two left the newest whole one in checkpoint.tmp.
    run = RunDir(tmp_path)
    run.write_checkpoint(lambda folder: (folder / "agent.pt").write_text("1"))
    run.write_checkpoint(lambda folder: (folder / "agent.pt").write_text("2"))
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.tmp")  # the second rename missed
    assert [p.name for p in run.checkpoints()] == ["checkpoint", "checkpoint.prev"]
    assert (tmp_path / "checkpoint" / "agent.pt").read_text() == "2"
    # A write cut inside `fill` (no completion marker) is never taken for a checkpoint.
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.prev2")
    (tmp_path / "checkpoint.tmp").mkdir()
    (tmp_path / "checkpoint.tmp" / "agent.pt").write_text("cut")
    assert [p.name for p in run.checkpoints()] == ["checkpoint.prev"]


def _error_line(stderr: str) -> str:
    """The error of a run that stopped mid-training: one `error:` line, the last one (the
    lines before it are the plain progress lines a non-terminal stderr gets)."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], stderr[-2000:]
    return errors[0]


def _updates_logged(metrics) -> bool:
    try:
        lines = metrics.read_text().splitlines()
        return any(json.loads(line).get("perf/updates", 0) > 0 for line in lines[:-1])
    except (OSError, ValueError):
        return False


def test_sighup_checkpoints_and_exits(tmp_path, smoke_argv):
    """A closed terminal (SIGHUP) finishes the step, saves and exits 0."""
    logdir = tmp_path / "run"
    argv = [sys.executable, "-c", "import sys; from agents.run.cli import run_main; "
            "sys.exit(run_main())", "--env", "gym:CartPole-v1", "--steps", "100000",
            "--logdir", str(logdir), *smoke_argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _updates_logged(
            logdir / "metrics.jsonl"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGHUP received" in err
    status = json.loads((logdir / "status.json").read_text())
    assert not status["finished"] and 0 < status["step"] < 100_000
    assert RunDir(logdir).latest_checkpoint() is not None


def test_exact_resume_in_a_fresh_process(tmp_path):
    """N updates, checkpoint, restore in a new process, M more == N + M in one go, bit for
    bit (CPU, eager fp32): the checkpoint holds agent, optimizer, slow critic, return
    normalisation, replay with its sampler state and written-back latents, counters and the
    RNG streams."""
    worker = [sys.executable, str(Path(__file__).with_name("resume_worker.py"))]
    run = tmp_path / "run"
    for mode, out in (("straight", "a.pt"), ("first", "b.pt"), ("second", "c.pt")):
        subprocess.run([*worker, mode, str(run), str(tmp_path / out), "3", "4"], check=True,
                       timeout=300)
    import torch

    straight, resumed = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "c.pt")
    first = torch.load(tmp_path / "b.pt")
    assert straight.keys() == resumed.keys() and len(straight) > 20
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not all(torch.equal(straight[k], first[k]) for k in straight)  # M updates moved it
    # The updates went through train_step: the replay holds written-back latents, equal too.
    assert straight["replay.latent_deter"].abs().sum() > 0


def test_nan_updates_are_skipped_then_the_run_stops(tmp_path, smoke_argv, capsys):
    """Injected NaN: updates are skipped (parameters and optimizer untouched), counted, and
    after `run.max_bad_updates` in a row the run stops with a checkpoint of good weights."""
    import gymnasium as gym
    import torch
    from learning_envs import NaNRewardEnv

    if "NaNReward-v0" not in gym.registry:
        gym.register(id="NaNReward-v0", entry_point=NaNRewardEnv)
    logdir = tmp_path / "run"
    argv = ["--env", "gym:NaNReward-v0", "--logdir", str(logdir), "--steps", "2000",
            *smoke_argv, "--set", "run.max_bad_updates=3", "--set", "run.video=false"]
    assert run_main(argv) == 2
    err = _error_line(capsys.readouterr().err)
    assert "3 updates in a row had non-finite gradients" in err
    agent, cfg = load_agent(logdir)
    assert all(torch.isfinite(p).all() for p in agent.wm.parameters())
    assert not agent.opt.state  # no update was ever applied
    # Nothing moved: the slow critic still equals the critic it was copied from.
    for slow, fast in zip(agent.ac.slow_value.parameters(), agent.ac.value.parameters()):
        assert torch.equal(slow, fast)
    metrics = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("train/skipped_updates", 0) >= 3 for m in metrics)


def test_readme_paths_are_the_default_run_directory():
    """The README's `dreamer-eval` and `load_agent` examples name the directory that
    `make run` (dreamer-run --env dmc:walker-walk) writes."""
    from agents.run.config import load_config
    from agents.run.train import default_logdir

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    path = str(default_logdir(load_config("dmc:walker-walk")))
    assert path == "runs/dmc-walker-walk-state/dreamerv3-1m-seed0"
    assert f"dreamer-eval {path} " in readme and f'load_agent("{path}")' in readme


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, tiny_config,
                                                               monkeypatch, smoke_argv, capsys):
    import errno

    import agents.run.train as train_module

    cfg, logdir, _ = _finished_run(tmp_path, tiny_config)
    before = (logdir / "checkpoint" / "agent.pt").read_bytes()

    def full_disk(path, state):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_module, "save_checkpoint", full_disk)
    argv = ["--env", "gym:CartPole-v1", "--logdir", str(logdir), "--steps", "240", *smoke_argv]
    argv += [a for k, v in SMALL.items() if k != "run.steps" for a in ("--set", f"{k}={v}")]
    capsys.readouterr()
    assert run_main(argv) == 2
    err = _error_line(capsys.readouterr().err)
    assert "No space left on device" in err and "intact" in err
    assert (logdir / "checkpoint" / "agent.pt").read_bytes() == before
    assert not (logdir / "checkpoint.tmp").exists()
    monkeypatch.undo()
    assert run_main(argv) == 0  # space again: the same command resumes and finishes
    assert json.loads((logdir / "status.json").read_text())["step"] == 240


def test_run_stores_acting_latents_and_writes_back_trained_ones(tmp_path, tiny_config):
    # Replay context (official replay_context 1): each stored step carries the policy's
    # latent for it, and every update writes the latents it computed back to its steps.
    cfg = tiny_config("gym:CartPole-v1", tmp_path, 200, {
        "run.prefill": 0, "run.eval_episodes": 0, "run.video": False})
    run = RunDir(tmp_path)
    trainer = Trainer(cfg, run, build_parts(cfg, run))
    writes = []
    write = trainer.replay.write
    trainer.replay.write = lambda index, values: (writes.append((index, values)),
                                                  write(index, values))
    trainer.run()
    trainer.close()
    data = trainer.replay.chronological()
    stored = data["latent_deter"].float().abs().sum(-1) > 0
    # Not checked: the newest step (it waits for the policy's next call) and episode starts
    # (an untrained GRU maps the zero state and action to exactly zero there).
    check = ~data["is_first"]
    check[-1] = False
    assert stored[check].all()
    assert len(writes) == trainer.counters["updates"] > 0
    (rows, envs), values = writes[-1]
    assert rows.shape == (cfg.replay.batch_size, cfg.replay.batch_length)
    # Each step holds what the update computed for it; slices may overlap (then one of their
    # values is kept). Not a slice's last step: that one may be the newest step, whose
    # latent the policy overwrote after the update (the next collect call).
    stored = trainer.replay._buffer.storage._storage["latent_deter"][rows, envs]
    new = values["latent_deter"]
    for i, t in np.ndindex(*rows[:, :-1].shape):
        same = (rows == rows[i, t]) & (envs == envs[i, t])
        assert any(torch.equal(stored[i, t], new[j, u]) for j, u in same.nonzero().tolist())


def test_evaluation_swaps_atari_backgrounds_for_held_out_games():
    from agents.run.config import load_config
    from agents.run.train import eval_options

    def options(distractor):
        cfg = load_config("dmc:cartpole-balance", sets=["env.options.obs=pixels",
                                                         f"env.options.distractor={distractor}"])
        return cfg.env.options.to_dict()["distractor"], eval_options(cfg)["distractor"]

    assert options("atari") == ("atari", "atari:eval")
    assert options("atari:train") == ("atari:train", "atari:eval")
    assert options("atari:pong+boxing") == ("atari:pong+boxing", "atari:pong+boxing")
    assert options("shapes") == ("shapes", "shapes")

