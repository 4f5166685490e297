"""The official agent's runner and converter, and publishing runs under scores/."""

from __future__ import annotations

import gzip
import json
import sys
import textwrap

import pytest

from agents.run.config import load_config, save_config
from benchmarks import official, publish
from benchmarks.plot import report
from benchmarks.scores import ScoreFileError, read_scores

# A stand-in for danijar/dreamerv3's main.py: it records its flags and writes the two log
# files the official logger writes (`step` in env frames, training episodes in scores.jsonl).
FAKE_MAIN = textwrap.dedent('''
    import json, os, sys
    argv = sys.argv[1:]
    logdir = argv[argv.index("--logdir") + 1]
    os.makedirs(logdir, exist_ok=True)
    json.dump({"argv": argv, "xla": os.environ.get("XLA_FLAGS", "")},
              open(os.path.join(logdir, "argv.json"), "w"))
    with open(os.path.join(logdir, "scores.jsonl"), "a") as f:
        for frames, score in [(1000, 10.0), (2000, 30.0), (3000, 50.0)]:
            f.write(json.dumps({"step": frames, "episode/score": score,
                                "episode/length": 500}) + "\\n")
        f.write('{"step": 4000, "episode/sc')  # a line cut short by a stop
    with open(os.path.join(logdir, "metrics.jsonl"), "a") as f:
        for fps in (512.0, 1024.0, 2048.0):
            f.write(json.dumps({"step": 1, "fps/train": fps}) + "\\n")
''')


@pytest.fixture
def checkout(tmp_path):
    folder = tmp_path / "dreamerv3-checkout"
    (folder / "dreamerv3").mkdir(parents=True)
    (folder / "dreamerv3" / "main.py").write_text(FAKE_MAIN)
    return folder


def _flags(argv: list[str]) -> dict[str, str]:
    """`--key value [value ...]` pairs of an argv, values joined by spaces."""
    flags, key = {}, None
    for item in argv:
        if item.startswith("--"):
            key = item[2:]
            flags[key] = ""
        elif key is not None:
            flags[key] = f"{flags[key]} {item}".strip()
    return flags


def test_command_carries_our_settings(checkout, tmp_path):
    config = load_config("dmc:walker-walk", sets=["run.train_ratio=128", "opt.lr=3e-4",
                                                  "run.steps=25000", "seed=3"])
    argv = official.official_command(config, checkout, tmp_path / "log", python="PY")
    assert argv[:2] == ["PY", str(checkout / "dreamerv3" / "main.py")]
    flags = _flags(argv[2:])
    assert flags["configs"] == "dmc_proprio size1m"  # the size after the domain: it wins
    assert flags["task"] == "dmc_walker_walk"
    assert flags["env.dmc.repeat"] == "2"
    assert flags["run.train_ratio"] == "128" and flags["agent.opt.lr"] == "0.0003"
    assert flags["run.steps"] == "25000" and flags["seed"] == "3"
    assert flags["run.envs"] == "4"
    assert flags["batch_size"] == "16" and flags["batch_length"] == "64"
    assert flags["replay_context"] == "1"
    assert flags["jax.compute_dtype"] == "float32"
    bf16 = _flags(official.official_command(config, checkout, "log", precision="bf16"))
    assert bf16["jax.compute_dtype"] == "bfloat16"
    pixels = _flags(official.official_command(load_config("dmc:cartpole-balance-pixels"),
                                              checkout, "log"))
    assert pixels["configs"] == "dmc_vision size12m"
    assert pixels["task"] == "dmc_cartpole_balance"


def test_command_rejects_what_the_official_code_lacks(checkout, tmp_path):
    with pytest.raises(official.OfficialError, match="domain 'gym'.*allowed: dmc_proprio"):
        official.official_command(load_config("gym:CartPole-v1"), checkout, tmp_path)
    with pytest.raises(official.OfficialError, match="no dreamerv3/main.py"):
        official.official_command(load_config("dmc:walker-walk"), tmp_path, tmp_path)
    with pytest.raises(official.OfficialError, match="precision 'fp16'"):
        official.official_command(load_config("dmc:walker-walk"), checkout, tmp_path,
                                  precision="fp16")


def test_threads_become_xla_flags():
    one = official.official_env(1, base={})
    assert "intra_op_parallelism_threads=1" in one["XLA_FLAGS"]
    assert "--xla_cpu_multi_thread_eigen=false" in one["XLA_FLAGS"]
    assert "XLA_FLAGS" not in official.official_env(0, base={})
    assert one["MUJOCO_GL"] == "egl"


def test_run_then_plot_beside_ours(checkout, tmp_path, capsys):
    logdir = tmp_path / "official" / "walker"
    code = official.main(["run", "--checkout", str(checkout), "--logdir", str(logdir),
                          "--python", sys.executable, "--env", "dmc:walker-walk",
                          "--steps", "2000", "--set", "run.train_ratio=128"])
    assert code == 0
    seen = json.loads((logdir / "argv.json").read_text())
    assert _flags(seen["argv"])["run.train_ratio"] == "128"
    assert "intra_op_parallelism_threads=1" in seen["xla"]
    ours = logdir / "ours"
    info = json.loads((ours / "run.json").read_text())
    assert info["method"] == "official:dreamerv3" and info["exit_code"] == 0
    # 1024 replayed steps per update at the median rate of 1024 steps/s: 1 s per update.
    assert info["loop_s_per_update"] == pytest.approx(1.0)
    (run,) = read_scores(ours)
    assert run.task == "dmc_walker_walk" and run.method == "official:dreamerv3"
    assert run.xs.tolist() == [1000, 2000, 3000] and run.ys.tolist() == [10.0, 30.0, 50.0]
    # Laid beside one of ours in one table.
    mine = _our_run(tmp_path / "mine", [(1000, 20.0), (3000, 40.0)])
    text, _ = report([*read_scores(mine), run], [], tmp_path / "plots", budget=3000,
                     plots=False)
    assert "official:dreamerv3" in text and "ours:dreamerv3" in text


def test_convert_needs_scores(tmp_path):
    with pytest.raises(official.OfficialError, match="no scores.jsonl"):
        official.convert(tmp_path, load_config("dmc:walker-walk"))
    with pytest.raises(SystemExit):
        official.main(["convert", str(tmp_path), "--env", "dmc:walker-walk"])


def _our_run(path, episodes, sets=("run.train_ratio=128", "opt.lr=3e-4")):
    """A run directory as dreamer-run leaves it (config, scores, metrics, a checkpoint)."""
    config = load_config("dmc:walker-walk", sets=list(sets))
    path.mkdir(parents=True)
    save_config(config, path / "config.yaml")
    with (path / "scores.jsonl").open("w") as f:
        for i, (frames, ret) in enumerate(episodes):
            f.write(json.dumps({"step": frames // 2, "frames": frames, "return": ret,
                                "time": 10.0 * (i + 1)}) + "\n")
    (path / "metrics.jsonl").write_text(json.dumps({"perf/updates": 42}) + "\n")
    (path / "machines.jsonl").write_text(json.dumps({"cpu": "test"}) + "\n")
    (path / "checkpoint").mkdir()
    (path / "checkpoint" / "agent.pt").write_bytes(b"big")
    return path


def test_publish_keeps_small_files_and_score_files(tmp_path):
    scores = tmp_path / "scores"
    preset = publish.publish(_our_run(tmp_path / "a", [(1000, 20.0), (3000, 40.0)]), scores)
    protocol = publish.publish(
        _our_run(tmp_path / "b", [(1000, 5.0)], sets=("run.train_ratio=512", "opt.lr=4e-5")),
        scores)
    assert preset == scores / "dmc_proprio" / "dmc_walker_walk" / (
        "dreamjepa-dreamerv3-1m-r128-lr3e-4-seed0")
    assert sorted(p.name for p in preset.iterdir()) == [
        "config.yaml", "machines.jsonl", "run.json", "scores.jsonl"]
    info = json.loads((preset / "run.json").read_text())
    assert info["method"] == "dreamjepa:dreamerv3 1m r128 lr3e-4"
    assert info["frames"] == 3000 and info["updates"] == 42 and info["wall_s"] == 20.0
    (tmp_path / "a" / "status.json").write_text('{"frames": 3100, "updates": 44, '
                                                '"finished": true}')
    info = json.loads((publish.publish(tmp_path / "a", scores) / "run.json").read_text())
    assert info["frames"] == 3100 and info["updates"] == 44 and info["finished"] is True
    assert json.loads((protocol / "run.json").read_text())["method"] == (
        "dreamjepa:dreamerv3 1m r512 lr4e-5")
    with gzip.open(scores / "dreamjepa-dmc_proprio.json.gz", "rt") as f:
        entries = json.load(f)
    assert sorted(e["method"] for e in entries) == [
        "dreamjepa:dreamerv3 1m r128 lr3e-4", "dreamjepa:dreamerv3 1m r512 lr4e-5"]
    # Collected by the planner: its own method, not the actor run's.
    planned = publish.publish(_our_run(tmp_path / "c", [(1000, 9.0)], sets=(
        "run.train_ratio=128", "opt.lr=3e-4", "run.behavior=mppi")), scores)
    assert planned.name == "dreamjepa-dreamerv3-1m-r128-lr3e-4-mppi-seed0"
    # With a pretrained encoder: its kind and mode (not the machine's path) in the method.
    for mode in ("frozen", "finetune"):
        encoded = publish.publish(_our_run(tmp_path / mode, [(1000, 7.0)], sets=(
            "run.train_ratio=128", "opt.lr=3e-4", "model.encoder.kind=jepa:/x/encoder.pt",
            f"model.encoder.mode={mode}")), scores)
        assert encoded.name == f"dreamjepa-dreamerv3-1m-r128-lr3e-4-jepa-encoder-{mode}-seed0"
    # The folder and the score file read back as the same runs.
    from_dirs = {(r.method, tuple(r.xs)) for r in read_scores(scores / "dmc_proprio")}
    from_file = {(r.method, tuple(r.xs)) for r in read_scores(
        scores / "dreamjepa-dmc_proprio.json.gz")}
    assert from_dirs == from_file


def test_publish_keeps_runs_at_other_settings_apart(tmp_path):
    # A distractor, another action repeat or an lr a sweep tells apart: each its own folder
    # (one would otherwise replace another's published scores).
    scores, pixels = tmp_path / "scores", ("run.train_ratio=128", "env.options.obs=pixels")
    names = []
    for name, sets in [("clean", ("opt.lr=3e-4",)),
                       ("shapes", ("opt.lr=3e-4", "env.options.distractor=shapes")),
                       ("repeat", ("opt.lr=3e-4", "env.options.repeat=1")),
                       ("lr", ("opt.lr=2.5e-4",))]:
        run = _our_run(tmp_path / name, [(1000, 5.0)], sets=(*pixels, *sets))
        names.append(publish.publish(run, scores).name)
    assert names == ["dreamjepa-dreamerv3-12m-r128-lr3e-4-seed0",
                     "dreamjepa-dreamerv3-12m-r128-lr3e-4-shapes-seed0",
                     "dreamjepa-dreamerv3-12m-r128-lr3e-4-repeat1-seed0",
                     "dreamjepa-dreamerv3-12m-r128-lr2.5e-4-seed0"]
    # Republished, a run's folder holds its own files, not ones left from before.
    clean = scores / "dmc_vision" / "dmc_walker_walk" / names[0]
    (clean / "eval_scores.jsonl").write_text('{"frames": 1, "return": 1.0}\n')
    publish.publish(tmp_path / "clean", scores)
    assert not (clean / "eval_scores.jsonl").exists()


def test_publish_official_run_gets_its_own_file(checkout, tmp_path):
    logdir = tmp_path / "log"
    official.main(["run", "--checkout", str(checkout), "--logdir", str(logdir), "--env",
                   "dmc:walker-walk", "--set", "run.train_ratio=128", "--set", "opt.lr=3e-4"])
    dest = publish.publish(logdir / "ours", tmp_path / "scores")
    assert json.loads((dest / "run.json").read_text())["method"] == (
        "official:dreamerv3 1m r128 lr3e-4")
    assert (tmp_path / "scores" / "official-dmc_proprio.json.gz").is_file()


def test_publish_bad_input(tmp_path):
    with pytest.raises(ScoreFileError, match="config.yaml"):
        publish.publish(tmp_path, tmp_path / "scores")
    with pytest.raises(SystemExit):
        publish.main([str(tmp_path / "missing")])


def test_metrics_side_by_side(tmp_path, capsys):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    with (ours / "metrics.jsonl").open("w") as f:
        for updates, dyn in [(10, 5.0), (100, 3.0), (1000, 2.0)]:
            f.write(json.dumps({"perf/updates": updates, "loss/dyn": dyn,
                                "loss/rec_vector": 4.0}) + "\n")
        f.write(json.dumps({"perf/updates": 1000, "frames": 5}) + "\n")  # no losses: skipped
    with (theirs / "metrics.jsonl").open("w") as f:
        for updates, dyn in [(12.5, 6.0), (990.0, 1.5)]:
            f.write(json.dumps({"train/opt/updates": updates, "train/loss/dyn": dyn,
                                "train/loss/height": 1.0, "train/loss/velocity": 2.5}) + "\n")
    assert official.main(["metrics", str(ours), str(theirs), "--updates", "10,1000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| metric") and "ours @10 | official @12" in lines[0]
    assert "ours @1000 | official @990" in lines[0]
    assert "| loss/dyn / train/loss/dyn | 5 | 6 | 2 | 1.5 |" in lines
    # The official per-key decoder losses sum to one reconstruction term, as ours do.
    assert "| loss/rec / train/loss/rec | 4 | 3.5 | 4 | 3.5 |" in lines
    with pytest.raises(SystemExit):
        official.main(["metrics", str(ours), str(tmp_path), "--updates", "10"])
    with pytest.raises(SystemExit):
        official.main(["metrics", str(ours), str(theirs), "--updates", "ten"])
