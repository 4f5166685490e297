"""RunLogger files, resume truncation, videos, status and the progress bar."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from agents.run.logger import Progress, RunLogger, open_loop_video


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scalars_episodes_and_tensorboard(tmp_path):
    with RunLogger(tmp_path) as log:
        log.scalars({"loss/dyn": torch.tensor(1.5), "perf/fps": np.float32(30.0)}, step=10)
        log.scalars({"replay/size": 100}, step=20)
        log.episode({"step": 12, "frames": 24, "return": 3.5, "length": 12, "time": 1.0})
        log.episode({"step": 15, "frames": 30, "return": 7.0, "length": 5, "time": 2.0},
                    eval=True)
    assert read_jsonl(tmp_path / "metrics.jsonl") == [
        {"step": 10, "loss/dyn": 1.5, "perf/fps": 30.0},
        {"step": 20, "replay/size": 100},
    ]
    assert read_jsonl(tmp_path / "scores.jsonl")[0]["return"] == 3.5
    assert read_jsonl(tmp_path / "eval_scores.jsonl")[0]["return"] == 7.0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/dyn")] == [(10, 1.5)]
    assert [e.value for e in acc.Scalars("episode/return")] == [3.5]


def test_resume_appends_and_truncates(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        for step in (10, 20, 30):
            log.scalars({"x": step}, step)
            log.episode({"step": step, "return": 1.0})
            log.episode({"step": step, "return": 2.0}, eval=True)
    # A crash cut the last line short.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "x"')
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.truncate_after(20)
        log.scalars({"x": 25}, 25)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [10, 20, 25]
    assert [r["step"] for r in read_jsonl(tmp_path / "scores.jsonl")] == [10, 20]
    assert [r["step"] for r in read_jsonl(tmp_path / "eval_scores.jsonl")] == [10, 20]
    # Reopening repairs a half-written line even without truncate_after.
    with open(tmp_path / "scores.jsonl", "a") as f:
        f.write('{"step": 2')
    RunLogger(tmp_path, tensorboard=False).episode({"step": 21, "return": 0.0})
    assert [r["step"] for r in read_jsonl(tmp_path / "scores.jsonl")] == [10, 20, 21]


@pytest.mark.parametrize("shape", [(5, 64, 64, 3), (4, 64, 192, 3), (3, 33, 47, 1)])
def test_video_writes_readable_mp4(tmp_path, shape):
    frames = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    path = RunLogger(tmp_path, tensorboard=False).video("eval/policy", frames, step=7, fps=10)
    assert path == tmp_path / "videos" / "eval_policy_7.mp4"
    back = iio.imread(path)
    h, w = shape[1] + shape[1] % 2, shape[2] + shape[2] % 2
    assert back.shape == (shape[0], h, w, 3)


def test_video_accepts_float_channels_first(tmp_path):
    frames = torch.rand(4, 3, 16, 16)
    path = RunLogger(tmp_path, tensorboard=False).video("open_loop", frames, step=1)
    assert iio.imread(path).shape == (4, 16, 16, 3)


def test_video_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\[T, H, W, 1\|3\]"):
        RunLogger(tmp_path, tensorboard=False).video("x", np.zeros((4, 8, 8)), step=0)


def test_status_is_merged_and_atomic(tmp_path, monkeypatch):
    log = RunLogger(tmp_path, tensorboard=False)
    log.status(phase="prefill", step=0)
    log.status(step=np.int64(100), fps=torch.tensor(12.5))
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "prefill" and status["step"] == 100 and status["fps"] == 12.5
    assert "updated" in status
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    # A write that fails after the new text is in the temp file leaves the old status whole.
    before = (tmp_path / "status.json").read_text()

    def fail(fd):
        raise OSError("disk gone")

    monkeypatch.setattr("agents.run.rundir.os.fsync", fail)
    with pytest.raises(OSError, match="disk gone"):
        log.status(step=200)
    assert (tmp_path / "status.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_open_loop_video_layout():
    truth = np.zeros((3, 8, 6, 3), np.float32)
    pred = np.full((3, 8, 6, 3), 0.25, np.float32)
    out = open_loop_video(truth, torch.from_numpy(pred))
    assert out.shape == (3, 8, 18, 3) and out.dtype == np.uint8
    assert (out[:, :, :6] == 0).all()
    assert (out[:, :, 6:12] == 64).all()
    assert (out[:, :, 12:] == 128).all()  # |error| 0.25, doubled
    batched = open_loop_video(np.zeros((2, 3, 3, 8, 6), np.uint8), np.zeros((2, 3, 3, 8, 6)))
    assert batched.shape == (3, 16, 18, 3)  # channels-first, batch stacked vertically
    with pytest.raises(ValueError, match="differ"):
        open_loop_video(truth, pred[:2])


def test_progress_counts_and_postfix():
    with Progress(100, initial=10, action_repeat=2, disable=False) as p:
        p.update(5, last_return=3.25)
        p.update(5)
        assert p.bar.n == 20 and p.steps == 20 and p.last_return == 3.25
        assert "frames=40" in str(p.bar) and "return=3.2" in str(p.bar)
    with Progress(100, disable=True) as quiet:
        quiet.update(7, last_return=1.0)
        assert quiet.steps == 7


def test_progress_prints_plain_lines_when_not_a_terminal():
    import io

    from agents.run.logger import Progress

    stream, now = io.StringIO(), [0.0]
    progress = Progress(1000, 0, action_repeat=2, every=30, stream=stream, clock=lambda: now[0])
    assert progress.plain  # StringIO is no terminal: tqdm is off, plain lines on
    progress.update(100, last_return=5.0)
    assert stream.getvalue() == ""  # less than 30 s since the start
    now[0] = 31.0
    progress.update(100)
    line = stream.getvalue().strip()
    assert "\n" not in line and line.startswith("train 200/1000 steps (400 frames)")
    assert "return 5.0" in line and "ETA 2m04s" in line  # 800 steps left at 200 / 31 s
    now[0] = 40.0
    progress.update(800)  # the last step always prints
    assert stream.getvalue().strip().splitlines()[-1].startswith("train 1000/1000 steps")
    progress.close()


def test_videos_also_go_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agents.run.logger import RunLogger

    with RunLogger(tmp_path) as logger:
        logger.video("eval", np.zeros((5, 8, 8, 3), np.uint8), 7)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert "videos/eval" in events.Tags()["images"]
    (image,) = events.Images("videos/eval")
    assert image.step == 7 and image.width == 5 * 8 and image.height == 8


def test_checkpoint_puts_the_logs_on_disk_first(tmp_path, tiny_config, monkeypatch):
    # A checkpoint at step S is marked whole only after the score and metric rows up to S
    # are on disk (a power loss must not keep a checkpoint and lose the rows it counts).
    import os

    from agents.run import rundir
    from agents.run.train import train

    order: list[str] = []
    fsync = os.fsync

    def recording_fsync(fd):
        order.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    touch = rundir.Path.touch

    def recording_touch(self, *args, **kwargs):
        order.append(f"touch {self.name}")
        return touch(self, *args, **kwargs)

    monkeypatch.setattr(rundir.Path, "touch", recording_touch)
    logdir = train(tiny_config("gym:CartPole-v1", tmp_path / "run", 96,
                               {"run.eval_episodes": 0, "run.video": False}))
    marked = order.index(f"touch {rundir.COMPLETE}")
    synced = {os.path.basename(p) for p in order[:marked] if isinstance(p, str)}
    assert {"metrics.jsonl", "scores.jsonl"} <= synced, order[:marked]
    assert (logdir / "checkpoint" / rundir.COMPLETE).is_file()
