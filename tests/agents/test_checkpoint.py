"""Atomic checkpoints, clear errors on bad files, and the graceful-exit guard."""

import os
import signal

import numpy as np
import pytest
import torch

from agents.run.checkpoint import CheckpointError, GracefulExit, load_checkpoint, save_checkpoint


def make_state():
    net = torch.nn.Linear(3, 2)
    return {
        "model": net.state_dict(),
        "step": 1234,
        "name": "walker",
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
        "np": np.arange(4.0),
    }


def test_round_trip_and_atomic_replace(tmp_path):
    path = tmp_path / "ckpt" / "latest.pt"
    state = make_state()
    save_checkpoint(path, state)
    save_checkpoint(path, {**state, "step": 2000})  # overwrite in place
    back = load_checkpoint(path)
    assert back["step"] == 2000 and back["name"] == "walker"
    assert torch.equal(back["model"]["weight"], state["model"]["weight"])
    assert np.array_equal(back["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert np.array_equal(back["np"], state["np"])
    assert sorted(os.listdir(path.parent)) == ["latest.pt"]  # no temp files left
    # numpy content still loads under torch's safe (weights-only) loader.
    assert load_checkpoint(path, weights_only=True)["step"] == 2000


class Custom:
    def __init__(self, x):
        self.x = x


def test_rich_objects_fall_back_to_full_unpickling(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"obj": Custom(3)})
    assert load_checkpoint(tmp_path / "c.pt")["obj"].x == 3
    with pytest.raises(CheckpointError, match="weights_only=True refuses"):
        load_checkpoint(tmp_path / "c.pt", weights_only=True)


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(Exception):  # noqa: B017 - any pickling error will do
        save_checkpoint(path, {"step": 2, "bad": lambda: None})
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["latest.pt"]


def test_bad_files_raise_one_line_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, make_state())
    cases = {
        "missing.pt": (None, "does not exist"),
        "empty.pt": (b"", "is empty"),
        "truncated.pt": (good.read_bytes()[:300], "corrupt or truncated"),
        "text.pt": (b"hello world", "corrupt or truncated"),
    }
    for name, (data, message) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / name)
        assert message in str(err.value) and name in str(err.value)
        assert "\n" not in str(err.value)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a dreamjepa-checkpoint file"):
        load_checkpoint(tmp_path / "foreign.pt")
    assert isinstance(CheckpointError("x"), ValueError)


def test_graceful_exit_first_signal_sets_flag_second_raises():
    before = signal.getsignal(signal.SIGINT)
    with GracefulExit(message=False) as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.signal == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_graceful_exit_without_escalation_ignores_a_second_signal():
    import _thread

    with GracefulExit(message=False, escalate=False) as guard:
        os.kill(os.getpid(), signal.SIGINT)
        _thread.interrupt_main()  # how Ray's cancel reaches a task: a simulated SIGINT
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.signal == "SIGINT"


def test_graceful_exit_request():
    with GracefulExit(message=False) as guard:
        guard.request("time budget")
        assert guard.requested and guard.signal == "time budget"
