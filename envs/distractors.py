"""Moving backgrounds for DMC pixels: `distractor="noise" | "shapes" | "video:DIR"`.

Which pixels are background: MuJoCo's segmentation rendering of the same camera labels every
pixel with the geom it shows; pixels of no geom (id -1: the skybox) and of plane geoms (the
floor, and the walls some domains have) are background, the rest (the robot, its targets)
stay as rendered. The background is a pure function of (episode draw, frame index), so it is
deterministic under the env seed and `render()` shows the same picture as the observation.

- noise: uniform RGB noise, new every frame.
- shapes: a few coloured discs and squares bouncing about with constant velocities.
- video:DIR: frames of the videos/images in DIR (read with imageio, resized), played from a
  random start, looping; images are shown as a still sequence in a random order.
- atari, atari:train, atari:eval, atari:GAME+GAME: natural, complex motion with no download:
  Atari games (ROMs ship with ale-py) played live by a random policy, one game per episode,
  a new emulator frame every simulator frame. `atari` is `atari:train`; training and
  evaluation draw from disjoint game sets (`TRAIN_GAMES`, `EVAL_GAMES`), and the trainer's
  evaluation env swaps `atari:train` for `atari:eval` (agents/run/train.py).
"""

from __future__ import annotations

import abc
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from envs.core import EnvSpecError, resize_image

KINDS = ("noise", "shapes", "video:DIR", "atari", "atari:train", "atari:eval", "atari:GAME+GAME")
# Busy, colourful games with motion across the screen; the two sets share no game.
TRAIN_GAMES = ("alien", "boxing", "freeway", "ms_pacman", "riverraid", "seaquest")
EVAL_GAMES = ("asterix", "enduro", "frostbite", "kung_fu_master", "road_runner", "up_n_down")
_ATARI_WARMUP = 400  # up to this many random frames before an episode's first frame
_ATARI_HOLD = 4  # the random policy holds each action this many frames (the usual frameskip)
_VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif"}
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp"}
_MAX_FRAMES_PER_FILE = 500
_PLANE = 0  # mjtGeom.mjGEOM_PLANE
_GEOM = 5  # mjtObj.mjOBJ_GEOM


def background_mask(segmentation: np.ndarray, geom_type: np.ndarray) -> np.ndarray:
    """Boolean [H, W] background mask from a [H, W, 2] (object id, object type) segmentation."""
    objid, objtype = segmentation[..., 0], segmentation[..., 1]
    plane = np.zeros_like(objid, dtype=bool)
    is_geom = (objtype == _GEOM) & (objid >= 0)
    plane[is_geom] = geom_type[objid[is_geom]] == _PLANE
    return (objid < 0) | plane


class Distractor(abc.ABC):
    """Background source; `reset(rng)` draws an episode, `frame(t)` gives [H, W, 3] uint8."""

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self.seed = 0

    def reset(self, rng: np.random.Generator) -> None:
        self.seed = int(rng.integers(2**63))

    @abc.abstractmethod
    def frame(self, t: int) -> np.ndarray:
        """The background for frame `t` of the current episode."""


class NoiseDistractor(Distractor):
    """Uniform RGB noise, redrawn every frame."""

    def frame(self, t: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, t])
        return rng.integers(0, 256, (*self.size, 3), dtype=np.uint8)


class ShapesDistractor(Distractor):
    """Coloured discs and squares bouncing off the image borders."""

    def __init__(self, size: tuple[int, int], count: int = 6):
        super().__init__(size)
        self.count = count

    def reset(self, rng: np.random.Generator) -> None:
        h, w = self.size
        n = self.count
        self.pos = rng.uniform(0, 1, (n, 2)) * (h, w)
        speed = rng.uniform(0.5, 2.5, n) * max(h, w) / 64  # pixels per frame at 64x64
        angle = rng.uniform(0, 2 * np.pi, n)
        self.vel = np.stack([np.sin(angle), np.cos(angle)], -1) * speed[:, None]
        self.radius = rng.uniform(0.06, 0.16, n) * min(h, w)
        self.colors = rng.integers(0, 256, (n, 3)).astype(np.uint8)
        self.square = rng.random(n) < 0.5
        self.base = rng.integers(0, 96, 3).astype(np.uint8)  # a dark backdrop colour

    def frame(self, t: int) -> np.ndarray:
        h, w = self.size
        img = np.empty((h, w, 3), np.uint8)
        img[:] = self.base
        ys, xs = np.mgrid[:h, :w]
        span = np.array([h, w], float)
        # Reflecting walls in closed form: a triangle wave of the unbounded position.
        raw = np.mod(self.pos + self.vel * t, 2 * span)
        centre = np.where(raw > span, 2 * span - raw, raw)
        for (cy, cx), r, color, square in zip(centre, self.radius, self.colors, self.square):
            if square:
                inside = (np.abs(ys - cy) <= r) & (np.abs(xs - cx) <= r)
            else:
                inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r
            img[inside] = color
        return img


def _read_frames(path: Path, size: tuple[int, int]) -> list[np.ndarray]:
    if path.suffix.lower() in _IMAGE_EXT:
        frames = [iio.imread(path)]
    else:
        frames = []
        for i, f in enumerate(iio.imiter(path)):
            if i >= _MAX_FRAMES_PER_FILE:
                break
            frames.append(f)
    out = []
    for f in frames:
        f = np.asarray(f)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, -1)
        out.append(np.ascontiguousarray(resize_image(f[..., :3].astype(np.uint8), size)))
    return out


class VideoDistractor(Distractor):
    """Frames of the user's videos (or images) in a folder, looped from a random start."""

    def __init__(self, size: tuple[int, int], directory: str):
        super().__init__(size)
        root = Path(directory).expanduser()
        if not root.is_dir():
            raise EnvSpecError(f"option distractor='video:{directory}': no such folder")
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in _VIDEO_EXT | _IMAGE_EXT)
        if not files:
            raise EnvSpecError(
                f"option distractor='video:{directory}': no videos or images in the folder "
                f"(extensions: {sorted(_VIDEO_EXT | _IMAGE_EXT)})")
        self.clips: list[list[np.ndarray]] = []
        stills: list[np.ndarray] = []
        for f in files:
            frames = _read_frames(f, size)
            if f.suffix.lower() in _IMAGE_EXT:
                stills.extend(frames)
            elif frames:
                self.clips.append(frames)
        if stills:
            self.clips.append(stills)
        if not self.clips:
            raise EnvSpecError(f"option distractor='video:{directory}': no readable frames")

    def reset(self, rng: np.random.Generator) -> None:
        self.clip = self.clips[int(rng.integers(len(self.clips)))]
        self.start = int(rng.integers(len(self.clip)))

    def frame(self, t: int) -> np.ndarray:
        return self.clip[(self.start + t) % len(self.clip)]


def atari_games(kind: str) -> tuple[str, ...]:
    """The games an `atari...` distractor option names; a one-line error for bad names."""
    choice = kind[len("atari:"):] if kind.startswith("atari:") else "train"
    if choice == "train":
        return TRAIN_GAMES
    if choice == "eval":
        return EVAL_GAMES
    import ale_py.roms

    known = set(ale_py.roms.get_all_rom_ids())
    games = tuple(g for g in choice.split("+") if g)
    bad = [g for g in games if g not in known]
    if not games or bad:
        raise EnvSpecError(f"option distractor={kind!r}: unknown Atari game(s) {bad or [choice]}; "
                           f"allowed: atari:train, atari:eval or atari:G1+G2 with G from "
                           f"ale_py.roms.get_all_rom_ids() (e.g. {', '.join(TRAIN_GAMES[:3])})")
    return games


class AtariDistractor(Distractor):
    """Atari games played by a uniform-random policy, one game per episode, live.

    Each episode draws a game, a warm-up length (so the picture starts mid-game rather than
    on a title screen) and an action sequence from its seed; frame t is the emulator's
    screen t frames later. The emulator runs forward as t grows; asking for an earlier t
    replays the episode from its start, so a frame stays a pure function of (seed, t).
    Without sticky actions ALE is deterministic given the actions.
    """

    def __init__(self, size: tuple[int, int], games: tuple[str, ...]):
        super().__init__(size)
        self.games = games
        self._ale: dict = {}  # one emulator per game, loaded on first use (~0.2 s each)
        self.game = games[0]
        self.t = -1

    def _emulator(self, game: str):
        if game not in self._ale:
            from ale_py import ALEInterface, LoggerMode, roms

            ALEInterface.setLoggerMode(LoggerMode.Error)
            ale = ALEInterface()
            ale.setFloat("repeat_action_probability", 0.0)
            ale.loadROM(roms.get_rom_path(game))
            self._ale[game] = (ale, ale.getMinimalActionSet())
        return self._ale[game]

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self.game = self.games[int(rng.integers(len(self.games)))]
        self._restart()

    def _restart(self) -> None:
        ale, actions = self._emulator(self.game)
        ale.reset_game()
        self._rng = np.random.default_rng([self.seed, 1])
        self._actions = actions
        self._held = 0
        for _ in range(int(self._rng.integers(_ATARI_WARMUP + 1))):
            self._advance(ale)
        self.t = -1
        self._image = None

    def _advance(self, ale) -> None:
        if ale.game_over():
            ale.reset_game()
        if self._held <= 0:
            self._action = self._actions[int(self._rng.integers(len(self._actions)))]
            self._held = _ATARI_HOLD
        ale.act(self._action)
        self._held -= 1

    def frame(self, t: int) -> np.ndarray:
        if t < self.t:
            self._restart()
        ale, _ = self._emulator(self.game)
        if t != self.t or self._image is None:
            while self.t < t:
                self._advance(ale)
                self.t += 1
            self._image = resize_image(ale.getScreenRGB(), self.size)
        return self._image


def make_distractor(kind: str | None, size: tuple[int, int]) -> Distractor | None:
    """The distractor named by the `distractor` option (None for none)."""
    if kind is None or kind == "none":
        return None
    if kind == "noise":
        return NoiseDistractor(size)
    if kind == "shapes":
        return ShapesDistractor(size)
    if isinstance(kind, str) and kind.startswith("video:") and kind[len("video:"):]:
        return VideoDistractor(size, kind[len("video:"):])
    if isinstance(kind, str) and (kind == "atari" or kind.startswith("atari:")):
        return AtariDistractor(size, atari_games(kind))
    raise EnvSpecError(f"option distractor={kind!r} is invalid; allowed: None, {list(KINDS)}")
