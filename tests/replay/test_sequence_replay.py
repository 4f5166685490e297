"""SequenceReplay: contiguity, env separation, wrap-around, persistence, recency."""

from __future__ import annotations

import os

import pytest
import torch
from tensordict import TensorDict

from replay import NotEnoughDataError, ReplayError, SequenceReplay


def make_step(t: int, num_envs: int, first_every: int = 0) -> TensorDict:
    """Step t of every env; `t` and `env` identify where each stored row came from."""
    first = torch.full((num_envs,), first_every > 0 and t % first_every == 0)
    return TensorDict(
        {
            "t": torch.full((num_envs,), t, dtype=torch.int64),
            "env": torch.arange(num_envs),
            "vector": torch.arange(3.0) + 10.0 * t + 0.5 * torch.arange(num_envs)[:, None],
            "image": torch.full((num_envs, 4, 4, 3), t % 256, dtype=torch.uint8),
            "action": torch.zeros(num_envs, 2),
            "reward": torch.zeros(num_envs),
            "is_first": first,
            "is_last": torch.zeros(num_envs, dtype=torch.bool),
            "is_terminal": torch.zeros(num_envs, dtype=torch.bool),
        },
        batch_size=[num_envs],
    )


def fill(replay: SequenceReplay, steps: int, start: int = 0, **kw) -> None:
    for t in range(start, start + steps):
        replay.add(make_step(t, replay.num_envs, **kw))


def assert_contiguous(sample: TensorDict) -> None:
    t, env = sample["t"], sample["env"]
    assert (t[:, 1:] - t[:, :-1] == 1).all(), t
    assert (env == env[:, :1]).all(), env


def test_sample_shape_keys_and_contiguity():
    replay = SequenceReplay(capacity=400, num_envs=4, seed=0)
    fill(replay, 50, first_every=7)
    assert len(replay) == 200
    batch = replay.sample(16, 10)
    assert batch.batch_size == torch.Size([16, 10])
    assert set(batch.keys()) == set(make_step(0, 4).keys())
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (16, 10, 4, 4, 3)
    assert_contiguous(batch)
    # Slices cross episode starts inside a stream; is_first is kept where it was stored.
    assert torch.equal(batch["is_first"], batch["t"] % 7 == 0)
    assert set(batch["env"][:, 0].tolist()) == {0, 1, 2, 3}


def test_not_enough_data_and_bad_input():
    replay = SequenceReplay(capacity=100, num_envs=2)
    assert not replay.can_sample(1)
    with pytest.raises(NotEnoughDataError, match="only 0 steps"):
        replay.sample(2, 5)
    fill(replay, 4)
    assert replay.can_sample(4) and not replay.can_sample(5)
    with pytest.raises(NotEnoughDataError):
        replay.sample(2, 5)
    assert replay.sample(3, 4)["t"][:, 0].eq(0).all()
    with pytest.raises(ReplayError, match="batch size"):
        replay.add(make_step(0, 3))
    with pytest.raises(ReplayError, match="exceeds"):
        replay.sample(1, 51)
    with pytest.raises(ReplayError, match="capacity"):
        SequenceReplay(capacity=1, num_envs=2)
    step = make_step(5, 2)
    del step["vector"]
    with pytest.raises(ReplayError, match="keys"):
        replay.add(step)


def test_capacity_eviction_and_wrap():
    replay = SequenceReplay(capacity=30, num_envs=3, seed=1)  # 10 rows per env
    fill(replay, 27)
    assert len(replay) == 30
    stored = replay._buffer.storage[:]["t"]
    assert sorted(stored[:, 0].tolist()) == list(range(17, 27))  # oldest data evicted
    seen = set()
    for _ in range(50):
        batch = replay.sample(8, 6)
        assert_contiguous(batch)  # never across the write cursor
        assert batch["t"].min() >= 17
        seen.update(batch["t"][:, 0].tolist())
    assert seen == set(range(17, 22))  # every valid start reachable, and only those
    full = replay.sample(4, 10)
    assert (full["t"][:, 0] == 17).all()


def test_state_dict_round_trip_samples_identically():
    replay = SequenceReplay(capacity=60, num_envs=2, seed=3)
    fill(replay, 47)  # wrapped: cursor mid-storage
    other = SequenceReplay(capacity=60, num_envs=2, seed=99)
    other.load_state_dict(replay.state_dict())
    assert len(other) == len(replay)
    for _ in range(5):
        a, b = replay.sample(8, 12), other.sample(8, 12)
        assert (a == b).all()
        assert_contiguous(b)
    fill(replay, 5, start=47)
    fill(other, 5, start=47)
    assert (replay.sample(8, 12) == other.sample(8, 12)).all()
    with pytest.raises(ReplayError, match="capacity"):
        SequenceReplay(capacity=80, num_envs=2).load_state_dict(replay.state_dict())


@pytest.mark.parametrize("on_disk", [False, True])
def test_save_load_directory(tmp_path, on_disk):
    kwargs = {"directory": str(tmp_path / "scratch")} if on_disk else {}
    replay = SequenceReplay(capacity=40, num_envs=4, seed=4, **kwargs)
    fill(replay, 13)
    replay.save(tmp_path / "ckpt")
    kwargs2 = {"directory": str(tmp_path / "scratch2")} if on_disk else {}
    restored = SequenceReplay(capacity=40, num_envs=4, seed=0, **kwargs2)
    restored.load(tmp_path / "ckpt")
    assert len(restored) == 40
    assert restored.stats() == replay.stats()
    assert restored.stats()["replay/inserted"] == 4 * 13
    assert (replay._buffer.storage[:] == restored._buffer.storage[:]).all()
    a, b = replay.sample(5, 10), restored.sample(5, 10)
    assert (a == b).all()
    assert_contiguous(b)
    with pytest.raises(ReplayError, match="no saved replay"):
        restored.load(tmp_path / "nothing")


@pytest.mark.parametrize("on_disk", [False, True])
def test_keys_added_to_a_restored_replay_start_at_zero(tmp_path, on_disk):
    # A run resumed after its agent began storing more per step (a frozen encoder's
    # embeddings): the saved steps get the new keys zero-filled, new steps store them.
    kwargs = {"directory": str(tmp_path / "scratch")} if on_disk else {}
    replay = SequenceReplay(capacity=40, num_envs=2, seed=0, **kwargs)
    fill(replay, 6)
    replay.save(tmp_path / "ckpt")
    kwargs2 = {"directory": str(tmp_path / "scratch2")} if on_disk else {}
    restored = SequenceReplay(capacity=40, num_envs=2, seed=0, **kwargs2)
    assert restored.add_keys({"embed": ((3,), torch.float32)}) == []  # empty: nothing to fill
    restored.load(tmp_path / "ckpt")
    spec = {"embed": ((3,), torch.float32), "embed_ok": ((), torch.bool), "vector": ((3,),
                                                                                  torch.float32)}
    assert restored.add_keys(spec) == ["embed", "embed_ok"]
    assert restored.add_keys(spec) == []
    step = make_step(6, 2)
    step["embed"], step["embed_ok"] = torch.ones(2, 3), torch.ones(2, dtype=torch.bool)
    restored.add(step)
    batch = restored.sample(4, 7)
    new = batch["t"] == 6
    assert new.any() and (batch["embed"][new] == 1).all() and batch["embed_ok"][new].all()
    assert (batch["embed"][~new] == 0).all() and not batch["embed_ok"][~new].any()
    restored.save(tmp_path / "ckpt2")  # and the added keys are saved with the rest
    kwargs3 = {"directory": str(tmp_path / "scratch3")} if on_disk else {}
    again = SequenceReplay(capacity=40, num_envs=2, seed=0, **kwargs3)
    again.load(tmp_path / "ckpt2")
    assert again.add_keys(spec) == []
    assert (again._buffer.storage[:] == restored._buffer.storage[:]).all()


def test_a_second_resume_adds_keys_again_on_disk(tmp_path):
    # The first resume added keys and was killed before it checkpointed: the next one finds
    # its `.added.memmap` files in the same scratch directory and must start them anew.
    replay = SequenceReplay(capacity=40, num_envs=2, seed=0)
    fill(replay, 6)
    replay.save(tmp_path / "ckpt")
    spec = {"embed": ((3,), torch.float32)}
    for _ in range(2):
        resumed = SequenceReplay(capacity=40, num_envs=2, seed=0,
                                 directory=str(tmp_path / "scratch"))
        resumed.load(tmp_path / "ckpt")
        assert resumed.add_keys(spec) == ["embed"]
        assert (resumed.sample(2, 4)["embed"] == 0).all()


@pytest.mark.parametrize("on_disk", [False, True])
def test_keys_added_after_steps_are_stored_by_later_adds(tmp_path, on_disk):
    # A locked (memmap) storage caches its keys at the first write and filters later writes
    # by them; keys added afterwards must still be written.
    kwargs = {"directory": str(tmp_path / "scratch")} if on_disk else {}
    replay = SequenceReplay(capacity=40, num_envs=2, seed=0, **kwargs)
    fill(replay, 3)
    assert replay.add_keys({"e": ((), torch.float32)}) == ["e"]
    step = make_step(3, 2)
    step["e"] = torch.ones(2)
    replay.add(step)
    batch = replay.sample(8, 4)
    new = batch["t"] == 3
    assert new.any() and (batch["e"][new] == 1).all() and (batch["e"][~new] == 0).all()


def test_memmap_storage_lives_on_disk(tmp_path):
    directory = tmp_path / "replay"
    replay = SequenceReplay(capacity=64, num_envs=2, directory=str(directory), seed=0)
    fill(replay, 20)
    files = os.listdir(directory)
    assert any(name.startswith("image") for name in files), files
    assert_contiguous(replay.sample(4, 8))
    # Re-opening the same directory (resume) is allowed.
    again = SequenceReplay(capacity=64, num_envs=2, directory=str(directory), seed=0)
    fill(again, 3)
    assert len(again) == 6


def test_recency_skews_to_recent_data():
    uniform = SequenceReplay(capacity=4000, num_envs=2, seed=5)
    recent = SequenceReplay(capacity=4000, num_envs=2, seed=5, recency=1.0)
    mixed = SequenceReplay(capacity=4000, num_envs=2, seed=5, recency=0.5)
    for replay in (uniform, recent, mixed):
        fill(replay, 1000)
    starts = {
        name: torch.cat([r.sample(64, 8)["t"][:, 0] for _ in range(20)]).double()
        for name, r in (("uniform", uniform), ("recent", recent), ("mixed", mixed))
    }
    newest_start = 1000 - 8
    assert abs(starts["uniform"].mean().item() - newest_start / 2) < 40
    assert starts["recent"].median().item() > 900
    assert starts["recent"].max().item() <= newest_start
    assert starts["uniform"].mean() < starts["mixed"].mean() < starts["recent"].mean()
    assert_contiguous(recent.sample(32, 8))
    with pytest.raises(ValueError, match="recency"):
        SequenceReplay(capacity=10, num_envs=1, recency=1.5)


@pytest.mark.parametrize("steps", [5, 10, 13, 20])
def test_stream_bounds_match_torchrl(steps):
    from torchrl.data import find_start_stop_traj

    replay = SequenceReplay(capacity=30, num_envs=3)
    fill(replay, steps)
    storage = replay._buffer.storage
    ours = replay._sampler._get_stop_and_length(storage)
    end = torch.zeros(tuple(storage.shape), dtype=torch.bool)
    theirs = find_start_stop_traj(
        end=end, at_capacity=storage._is_full, cursor=storage._last_cursor_index
    )
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_state_dict_through_torch_save_into_memmap(tmp_path):
    replay = SequenceReplay(capacity=40, num_envs=4, directory=str(tmp_path / "a"), seed=1)
    fill(replay, 13)
    torch.save(replay.state_dict(), tmp_path / "replay.pt")
    state = torch.load(tmp_path / "replay.pt", weights_only=False)
    restored = SequenceReplay(capacity=40, num_envs=4, directory=str(tmp_path / "b"), seed=2)
    restored.load_state_dict(state)
    assert (restored._buffer.storage[:] == replay._buffer.storage[:]).all()
    assert (restored.sample(3, 5) == replay.sample(3, 5)).all()
    fill(replay, 3, start=13)
    fill(restored, 3, start=13)
    assert (restored.sample(3, 5) == replay.sample(3, 5)).all()
    assert (tmp_path / "b" / "image.memmap").is_file()


def dir_size(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def image_step(t: int, num_envs: int) -> TensorDict:
    gen = torch.Generator().manual_seed(t)
    return TensorDict(
        {
            "t": torch.full((num_envs,), t, dtype=torch.int64),
            "env": torch.arange(num_envs),
            "image": torch.randint(0, 256, (num_envs, 64, 64, 3), dtype=torch.uint8, generator=gen),
        },
        batch_size=[num_envs],
    )


@pytest.mark.parametrize("on_disk", [False, True])
def test_save_writes_only_filled_rows(tmp_path, on_disk):
    kwargs = {"directory": str(tmp_path / "scratch")} if on_disk else {}
    replay = SequenceReplay(capacity=200_000, num_envs=2, seed=7, **kwargs)
    for t in range(20):
        replay.add(image_step(t, 2))
    replay.sample(4, 5)  # advance the RNG so its restore is checked too
    replay.save(tmp_path / "ckpt")
    size = dir_size(tmp_path / "ckpt")
    assert size < 5 * 2**20, size  # 20 x 2 x 12 KiB of images, not 2.3 GB of capacity
    assert size >= 20 * 2 * 64 * 64 * 3
    state = replay.state_dict()
    assert state["data"]["image"].shape == (20, 2, 64, 64, 3)
    expected = [replay.sample(6, 7) for _ in range(2)]

    for restored in (
        SequenceReplay(capacity=200_000, num_envs=2, seed=1),
        SequenceReplay(capacity=200_000, num_envs=2, seed=1, directory=str(tmp_path / "s2")),
    ):
        for restore in (lambda r: r.load(tmp_path / "ckpt"), lambda r: r.load_state_dict(state)):
            restore(restored)
            assert restored.stats()["replay/steps"] == 40
            assert (restored._buffer.storage[:20] == replay._buffer.storage[:20]).all()
            for batch in expected:
                assert (restored.sample(6, 7) == batch).all()


@pytest.mark.parametrize("on_disk", [False, True])
def test_save_load_after_wrap_into_used_replay(tmp_path, on_disk):
    kwargs = {"directory": str(tmp_path / "scratch")} if on_disk else {}
    replay = SequenceReplay(capacity=24, num_envs=3, seed=2, **kwargs)  # 8 rows per env
    fill(replay, 29, first_every=5)  # wrapped 3 times, cursor mid-storage
    replay.save(tmp_path / "ckpt")
    assert len(list((tmp_path / "ckpt" / "data").glob("image*"))) == 1
    used = SequenceReplay(capacity=24, num_envs=3, seed=9)
    fill(used, 3, start=100)  # different content and cursor, overwritten by load
    used.load(tmp_path / "ckpt")
    assert len(used) == 24 and used.stats() == replay.stats()
    assert (used._buffer.storage[:] == replay._buffer.storage[:]).all()
    for _ in range(3):
        a, b = replay.sample(5, 6), used.sample(5, 6)
        assert (a == b).all()
        assert_contiguous(b)
    fill(replay, 4, start=29)
    fill(used, 4, start=29)
    assert (replay._buffer.storage[:] == used._buffer.storage[:]).all()
    assert (replay.sample(5, 8) == used.sample(5, 8)).all()
    # Saving again into the same directory replaces the previous save.
    empty = SequenceReplay(capacity=24, num_envs=3, seed=0)
    empty.save(tmp_path / "ckpt")
    used.load(tmp_path / "ckpt")
    assert len(used) == 0 and not used.can_sample(1)
    fill(used, 2)
    assert used.sample(2, 2)["t"][:, 0].eq(0).all()


def test_chronological_unrolls_the_ring_oldest_first():
    replay = SequenceReplay(8, 2)  # 4 rows per env stream
    assert replay.chronological() is None
    for t in range(6):  # wraps: rows hold steps 4, 5, 2, 3
        replay.add({"x": torch.full((2,), float(t)), "is_first": torch.zeros(2, dtype=torch.bool)})
    order = replay.chronological()["x"][:, 0].tolist()
    assert order == [2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("on_disk", [False, True])
def test_write_back_at_sampled_index_and_to_the_last_step(tmp_path, on_disk):
    # DreamerV3's replay context: latents stored beside each step, overwritten by training.
    replay = SequenceReplay(capacity=60, num_envs=3, seed=0,
                            directory=tmp_path / "r" if on_disk else None)
    for t in range(25):  # wraps the 20-row ring
        step = make_step(t, 3)
        step["latent"] = torch.zeros(3, 2, dtype=torch.float16)
        replay.add(step)
        replay.write_last({"latent": torch.stack([step["t"], step["env"]], -1).half()})
    batch, (rows, envs) = replay.sample(8, 5, return_index=True)
    assert rows.shape == envs.shape == (8, 5)
    assert torch.equal(batch["latent"][..., 0].long(), batch["t"])
    assert torch.equal(batch["latent"][..., 1].long(), batch["env"])
    assert torch.equal(envs, batch["env"])
    # Write -t to the last three steps of every sampled slice; only those rows change.
    replay.write((rows[:, 2:], envs[:, 2:]), {"latent": -batch["latent"][:, 2:]})
    data = replay.chronological()
    t, latent = data["t"], data["latent"][..., 0].long()
    written = torch.zeros_like(t, dtype=torch.bool)
    for row_t, env in zip(batch["t"][:, 2:].flatten(), batch["env"][:, 2:].flatten()):
        written |= (t == row_t) & (data["env"] == env)
    assert torch.equal(latent[written], -t[written]) and torch.equal(latent[~written], t[~written])
    with pytest.raises(ReplayError, match="stores"):
        replay.write((rows, envs), {"nope": torch.zeros(8, 5)})
    with pytest.raises(ReplayError, match="shape"):
        replay.write((rows, envs), {"latent": torch.zeros(8, 5, 3)})
    with pytest.raises(ReplayError, match="shape"):
        replay.write_last({"latent": torch.zeros(2, 2)})
    with pytest.raises(ReplayError, match="empty|stored step"):
        SequenceReplay(capacity=10, num_envs=1).write_last({"latent": torch.zeros(1, 2)})
