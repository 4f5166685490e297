"""DMC distracting backgrounds: moving background, unchanged robot, seeding, user videos."""

import imageio.v3 as iio
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.core import EnvSpecError
from envs.distractors import EVAL_GAMES, TRAIN_GAMES, AtariDistractor, background_mask

pytestmark = pytest.mark.filterwarnings("ignore:.*different from the unwrapped:UserWarning")
SPEC = "dmc:cartpole-balance"
OPTS = {"obs": "pixels", "fast_render": True}


@pytest.fixture
def closing():
    made = []
    yield lambda env: made.append(env) or env
    for env in made:
        env.close()


def _mask(env):
    inner = env.unwrapped
    seg = inner._camera.render(segmentation=True)
    return background_mask(seg, inner._env.physics.model.geom_type)


@pytest.mark.parametrize("kind", ["noise", "shapes", "atari"])
def test_background_moves_and_robot_is_unchanged(kind, closing):
    clean = closing(envs.make(SPEC, seed=3, **OPTS))
    noisy = closing(envs.make(SPEC, seed=3, distractor=kind, **OPTS))
    check_env(noisy, skip_render_check=True)
    a, b = clean.reset(seed=3)[0]["image"], noisy.reset(seed=3)[0]["image"]
    prev_bg = None
    for step in range(4):
        mask = _mask(noisy)
        assert 0.2 < mask.mean() < 0.99  # mostly background, but the robot is there
        np.testing.assert_array_equal(a[~mask], b[~mask])  # robot pixels as rendered
        assert not np.array_equal(a[mask], b[mask])  # the background was replaced
        if prev_bg is not None:
            assert not np.array_equal(prev_bg, b[mask])  # and it moves every frame
        prev_bg = b[mask]
        act = np.full(1, 0.3 * (-1) ** step, np.float32)
        a, b = clean.step(act)[0]["image"], noisy.step(act)[0]["image"]


def test_deterministic_under_seed(closing):
    def trace(seed):
        env = closing(envs.make(SPEC, seed=seed, distractor="shapes", **OPTS))
        frames = [env.reset()[0]["image"]]
        frames += [env.step(np.zeros(1, np.float32))[0]["image"] for _ in range(3)]
        return np.stack(frames)

    np.testing.assert_array_equal(trace(5), trace(5))
    assert not np.array_equal(trace(5), trace(6))


def test_video_folder_background(tmp_path, closing):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "clip.gif", clip)
    iio.imwrite(tmp_path / "still.png", np.full((20, 20, 3), 200, np.uint8))
    env = closing(envs.make(SPEC, seed=0, distractor=f"video:{tmp_path}", **OPTS))
    check_env(env, skip_render_check=True)
    frames = [env.reset()[0]["image"]]
    masks = [_mask(env)]
    for _ in range(5):
        frames.append(env.step(np.zeros(1, np.float32))[0]["image"])
        masks.append(_mask(env))
    source = env.unwrapped._distractor
    for t, (f, m) in enumerate(zip(frames, masks)):
        np.testing.assert_array_equal(f[m], source.frame(2 * t)[m])  # repeat 2: frame index


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(EnvSpecError, match="distractor='fog' is invalid"):
        envs.make(SPEC, distractor="fog", **OPTS)
    with pytest.raises(EnvSpecError, match="needs pixels"):
        envs.make(SPEC, distractor="noise")
    with pytest.raises(EnvSpecError, match="no such folder"):
        envs.make(SPEC, distractor=f"video:{tmp_path / 'nope'}", **OPTS)
    with pytest.raises(EnvSpecError, match="no videos or images"):
        envs.make(SPEC, distractor=f"video:{tmp_path}", **OPTS)


def test_atari_backgrounds_are_natural_motion_from_disjoint_game_sets():
    assert not set(TRAIN_GAMES) & set(EVAL_GAMES)
    source = AtariDistractor((32, 32), ("ms_pacman",))
    source.reset(np.random.default_rng(0))
    frames = np.stack([source.frame(t) for t in range(0, 40, 2)])
    assert frames.shape == (20, 32, 32, 3) and frames.dtype == np.uint8
    assert frames.std() > 20  # a game screen, not a blank one
    assert (np.abs(np.diff(frames.astype(int), axis=0)).sum((1, 2, 3)) > 0).mean() > 0.5  # moves
    # A pure function of (episode draw, frame index): asking again, or earlier, gives the same.
    np.testing.assert_array_equal(source.frame(4), frames[2])
    again = AtariDistractor((32, 32), ("ms_pacman",))
    again.reset(np.random.default_rng(0))
    np.testing.assert_array_equal(again.frame(10), frames[5])
    other = AtariDistractor((32, 32), ("ms_pacman",))
    other.reset(np.random.default_rng(1))
    assert not np.array_equal(other.frame(10), frames[5])


def test_atari_game_lists_and_bad_names(closing):
    env = closing(envs.make(SPEC, seed=0, distractor="atari:boxing+pong", **OPTS))
    env.reset(seed=0)
    assert env.unwrapped._distractor.games == ("boxing", "pong")
    assert env.unwrapped._distractor.game in ("boxing", "pong")
    assert closing(envs.make(SPEC, distractor="atari:eval", **OPTS)).unwrapped._distractor.games \
        == EVAL_GAMES
    with pytest.raises(EnvSpecError, match=r"unknown Atari game\(s\) \['quake'\]"):
        envs.make(SPEC, distractor="atari:pong+quake", **OPTS)
