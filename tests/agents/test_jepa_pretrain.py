import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from agents.pretrain import jepa_pretrain
from agents.pretrain.frame_sources import clip_starts, load_folder_frames
from agents.pretrain.jepa_pretrain import main
from agents.pretrain.pretrainer import Pretrainer
from agents.run.checkpoint import load_checkpoint
from world_models.vit_jepa import load_encoder

ARGS = ["--frames", "40", "--steps", "4", "--batch", "4", "--diag-every", "2",
        "--ckpt-every", "2", "--holdout", "8", "--threads", "1"]


@pytest.fixture
def frame_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "frames"
    for ep in range(2):
        (root / f"ep{ep}").mkdir(parents=True)
        for i in range(12):
            iio.imwrite(root / f"ep{ep}" / f"{i:03d}.png",
                        rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    iio.imwrite(root / "clip.gif", rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8))
    return root


def test_folder_source_resizes_and_splits_episodes(frame_folder):
    data = load_folder_frames(frame_folder)
    assert data["frames"].shape == (34, 64, 64, 3) and data["frames"].dtype == np.uint8
    assert len(np.unique(data["episodes"])) == 3
    assert clip_starts(np.array([0, 0, 0, 1, 1]), 2).tolist() == [0, 1, 3]


def test_cli_dmc_pixels_writes_outputs(tmp_path):
    out = tmp_path / "run"
    main(["--env", "dmc:walker-walk", "--fast-render", "--out", str(out), *ARGS])
    for name in ("encoder.pt", "checkpoint.pt", "frames.npy", "metrics.jsonl", "collapse.png"):
        assert (out / name).is_file(), name
    assert np.load(out / "frames.npy").shape == (40, 64, 64, 3)
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("collapse/rankme" in ln for ln in lines)
    enc = load_encoder(f"jepa:{out / 'encoder.pt'}", (64, 64, 3))
    assert enc({"image": torch.zeros(2, 64, 64, 3, dtype=torch.uint8)}).shape == (2, 128)


def test_resume_after_crash_matches_uninterrupted(frame_folder, tmp_path, monkeypatch):
    src = ["--source", f"folder:{frame_folder}", *ARGS, "--frames-per-clip", "2"]
    main(["--out", str(tmp_path / "full"), *src])

    real_step = Pretrainer.step

    def crashing_step(self, step, *args):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(self, step, *args)

    monkeypatch.setattr(Pretrainer, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        main(["--out", str(tmp_path / "crash"), *src])
    monkeypatch.setattr(Pretrainer, "step", real_step)
    assert load_checkpoint(tmp_path / "crash" / "checkpoint.pt")["step"] == 2
    main(["--out", str(tmp_path / "crash"), *src])

    a = torch.load(tmp_path / "full" / "encoder.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "crash" / "encoder.pt", weights_only=True)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "crash" / "metrics.jsonl").open()]
    assert steps == sorted(steps)


def test_mae_encoder_loads_as_an_agent_encoder(frame_folder, tmp_path):
    """The README points users who need the robot's pose to `--objective mae`: its encoder
    file is the same format and drops into `--encoder jepa:PATH`."""
    out = tmp_path / "mae"
    main(["--source", f"folder:{frame_folder}", "--objective", "mae", "--out", str(out), *ARGS])
    enc = load_encoder(f"jepa:{out / 'encoder.pt'}", (64, 64, 3))
    assert enc({"image": torch.zeros(2, 64, 64, 3, dtype=torch.uint8)}).shape == (2, 128)


def test_zero_steps_write_the_untrained_encoder_as_a_random_control(frame_folder, tmp_path):
    # `--steps 0`: the encoder as initialised from --seed (what the probe calls `random`),
    # in the same file format, so an agent run can take a random ViT as its control.
    from world_models.vit_jepa import ViT, make_config

    out = tmp_path / "random"
    main(["--source", f"folder:{frame_folder}", "--out", str(out), *ARGS, "--steps", "0",
          "--seed", "3"])
    blob = torch.load(out / "encoder.pt", weights_only=True)
    assert blob["train"]["steps"] == 0 and "collapse/rankme" in blob["train"]
    torch.manual_seed(3)  # as the pretrainer seeds before building its model
    fresh = ViT(make_config("tiny"))
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(blob["state_dict"][k], v)
    main(["--source", f"folder:{frame_folder}", "--out", str(out), *ARGS, "--steps", "0",
          "--seed", "3"])  # a rerun finds its checkpoint at step 0 and rewrites the same
    with pytest.raises(SystemExit, match="--steps must be >= 0"):
        main(["--source", f"folder:{frame_folder}", "--out", str(tmp_path / "x"), *ARGS,
              "--steps", "-1"])


def test_bad_source_is_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="allowed: random, run:LOGDIR, folder:DIR"):
        main(["--source", "s3:bucket", "--out", str(tmp_path), *ARGS])


def test_run_source_reads_saved_replay(tmp_path):
    from agents.pretrain.frame_sources import load_run_frames
    from replay.sequence import SequenceReplay

    rb = SequenceReplay(capacity=16, num_envs=2)
    for t in range(11):  # wraps the 8-row ring: rows 8..10 overwrite 0..2
        rb.add({"image": torch.full((2, 64, 64, 3), t, dtype=torch.uint8),
                "is_first": torch.tensor([t % 4 == 0] * 2)})
    rb.save(tmp_path / "replay")
    data = load_run_frames(tmp_path)
    assert data["frames"].shape == (16, 64, 64, 3)
    assert data["frames"][:8, 0, 0, 0].tolist() == list(range(3, 11))  # oldest first
    assert len(np.unique(data["episodes"])) >= 4
    newest = load_run_frames(tmp_path, limit=6)  # the newest 3 of each env's stream
    assert newest["frames"][:, 0, 0, 0].tolist() == [8, 9, 10, 8, 9, 10]
    assert newest["episodes"][2] != newest["episodes"][3]  # the two envs' streams stay apart


def test_run_source_gives_the_action_taken_at_each_frame(tmp_path):
    from agents.pretrain.frame_sources import load_run_frames
    from replay.sequence import SequenceReplay

    rb = SequenceReplay(capacity=10, num_envs=2)
    for t in range(5):  # the replay keeps the action that led to each frame; env 1 has a
        # new episode at t = 3, stored with a zero action
        first = torch.tensor([t == 0, t in (0, 3)])
        act = torch.stack([torch.full((2,), float(t)), torch.full((2,), 10.0 + t)])
        rb.add({"image": torch.full((2, 64, 64, 3), t, dtype=torch.uint8),
                "action": act * ~first[:, None], "is_first": first})
    rb.save(tmp_path / "replay")
    data = load_run_frames(tmp_path)
    assert data["actions"][:, 0].tolist() == [1, 2, 3, 4, 0, 11, 12, 0, 14, 0]
    assert data["episodes"].tolist()[5:] == [data["episodes"][5]] * 3 + [data["episodes"][8]] * 2
    assert data["episodes"][7] != data["episodes"][8]  # the zero after 12 ends an episode


def test_cli_temporal_action_conditioned_jepa(tmp_path):
    out = tmp_path / "run"
    flags = ["--env", "dmc:walker-walk", "--fast-render", "--out", str(out), *ARGS,
             "--horizon", "2", "--action-cond", "--token-weight", "change", "--patch", "16"]
    main(flags)
    assert np.load(out / "actions.npy").shape == (40, 6)
    info = torch.load(out / "encoder.pt", weights_only=True)["train"]
    assert (info["horizon"], info["action_cond"], info["patch"]) == (2, True, 16)
    enc = load_encoder(f"jepa:{out / 'encoder.pt'}", (64, 64, 3))
    assert enc.vit.cfg.patch == 16 and enc.vit.cfg.grid == (1, 4, 4)
    main(flags)  # finished: a rerun resumes at the end and changes nothing
    with pytest.raises(SystemExit, match="use the same options or a new --out"):
        main([*flags, "--horizon", "1"])


def test_old_checkpoints_record_no_later_options():
    args = jepa_pretrain.build_parser().parse_args(["--out", "x"])
    assert set(jepa_pretrain._arch_args(args)) == {
        "objective", "preset", "frames_per_clip", "reg", "reg_weight", "on_collapse", "steps",
        "lr", "batch"}


@pytest.mark.parametrize("flags,message", [
    (["--action-cond", "--horizon", "1"], "--action-cond needs actions"),
    (["--patch", "5"], "not divisible by patch 5"),
    (["--objective", "mae", "--horizon", "1", "--action-cond"],
     "--horizon, --action-cond apply to --objective jepa only, not mae"),
    (["--action-cond"], "need a horizon > 0"),
    (["--horizon", "1", "--context", "half"], "context 'half'; allowed: masked, full"),
    (["--target-layers", "9"], "target layers 9; the encoder has 4 blocks"),
])
def test_bad_temporal_flags_are_one_line_errors(frame_folder, tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        main(["--source", f"folder:{frame_folder}", "--out", str(tmp_path), *ARGS, *flags])
    assert not (tmp_path / "frames.npy").exists()


def test_collapse_stop_keeps_the_best_encoder_and_a_rerun_stays_stopped(frame_folder, tmp_path,
                                                                         monkeypatch):
    """Diagnostics at steps 0 and 2 are healthy, at 4 collapsed: `--on-collapse stop` rolls
    back to the step-2 state, writes it as encoder.pt and stops; rerunning changes nothing."""
    from world_models.diagnostics import collapse_metrics
    from world_models.vit_jepa import encoder as encoder_module

    calls = []

    def scripted(z, prefix="collapse/"):
        m = collapse_metrics(z, prefix)
        calls.append(len(calls))
        if len(calls) >= 3:
            m.update({f"{prefix}rankme": 1.5, f"{prefix}eig_top1_frac": 0.99})
        return m

    saved = []
    real_save = encoder_module.save_encoder

    def recording_save(path, vit, info=None):
        saved.append({k: v.clone() for k, v in vit.state_dict().items()})
        real_save(path, vit, info)

    monkeypatch.setattr(jepa_pretrain, "collapse_metrics", scripted)
    monkeypatch.setattr(jepa_pretrain, "save_encoder", recording_save)
    src = ["--source", f"folder:{frame_folder}", *ARGS[:2], "--steps", "6", *ARGS[4:]]
    main(["--out", str(tmp_path / "warn"), *src, "--on-collapse", "warn"])
    step2 = saved[0]  # the first save is the checkpoint at step 2
    calls.clear()
    out = tmp_path / "stop"
    main(["--out", str(out), *src, "--on-collapse", "stop"])
    blob = torch.load(out / "encoder.pt", weights_only=True)
    for k, v in step2.items():
        torch.testing.assert_close(blob["state_dict"][k], v)
    assert blob["train"]["stopped"] is True and blob["train"]["steps"] == 4
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["stopped"] and ck["step"] == 4 and ck["guard"]["best"]["step"] == 2
    lines = (out / "metrics.jsonl").read_text()
    main(["--out", str(out), *src, "--on-collapse", "stop"])
    assert (out / "metrics.jsonl").read_text() == lines


def test_input_norm_flag_fits_the_training_frames_and_is_kept_in_the_encoder(frame_folder,
                                                                              tmp_path):
    from world_models.vit_jepa import read_encoder_file

    out = tmp_path / "pixel"
    main(["--source", f"folder:{frame_folder}", "--out", str(out), *ARGS,
          "--input-norm", "pixel"])
    vit, meta = read_encoder_file(out / "encoder.pt")
    assert meta["vit"]["input_norm"] == "pixel" and vit.in_mean.shape == (64, 64, 3)
    frames = np.load(out / "frames.npy")
    frames = frames[: len(frames) - min(8, len(frames) // 5)]  # held-out frames: not fitted
    torch.testing.assert_close(vit.in_mean.double(), torch.from_numpy(frames / 255).mean(0),
                               rtol=0, atol=1e-6)
    enc = load_encoder(f"jepa:{out / 'encoder.pt'}", (64, 64, 3))
    assert enc({"image": torch.zeros(2, 64, 64, 3, dtype=torch.uint8)}).shape == (2, 128)
    with pytest.raises(SystemExit, match="was written with"):  # a resume must keep it
        main(["--source", f"folder:{frame_folder}", "--out", str(out), *ARGS])
