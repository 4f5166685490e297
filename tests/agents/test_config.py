"""Layering, validation, immutability and round trip of agents.run.config."""

import pickle

import pytest
import yaml

from agents.run.config import Config, ConfigError, domain_for, load_config, save_config


def test_domain_for():
    assert domain_for("dmc:walker-walk", {}) == "dmc_proprio"
    assert domain_for("dmc:walker-walk", {"obs": "pixels"}) == "dmc_vision"
    assert domain_for("dmc:walker-walk", {"obs": "both"}) == "dmc_vision"
    assert domain_for("dmc:walker-walk-pixels", {}) == "dmc_vision"
    assert domain_for("dmc:walker-walk-both", {}) == "dmc_vision"
    assert domain_for("atari:pong", {}) == "atari"
    assert domain_for("atari100k:pong", {}) == "atari100k"
    assert domain_for("minigrid:MiniGrid-DoorKey-5x5-v0", {}) == "minigrid"
    assert domain_for("gym:CartPole-v1", {}) == "gym"
    assert domain_for("gym:my_pkg.module:MyEnv", {}) == "gym"


def test_layering_domain_and_size_presets():
    cfg = load_config("dmc:walker-walk")
    assert cfg.domain == "dmc_proprio" and cfg.size == "1m"
    assert cfg.env.spec == "dmc:walker-walk"
    assert cfg.env.options == {"obs": "state", "repeat": 2}
    assert cfg.run.train_ratio == 128 and cfg.run.steps == 500000
    # The preset's lr merges into the defaults' opt section, which keeps its other keys.
    assert cfg.opt.lr == pytest.approx(3e-4) and cfg.opt.agc == 0.3
    # 1m preset reaches every network width.
    assert cfg.model.rssm.deter == 512 and cfg.model.rssm.hidden == 64
    assert cfg.model.rssm.classes == 4
    assert cfg.model.encoder.depth == cfg.model.decoder.depth == 4
    for key in ("model.encoder.units", "model.decoder.units", "model.reward_head.units",
                "model.cont_head.units", "actor_critic.policy.units", "actor_critic.value.units"):
        assert cfg.get(key) == 64, key
    vision = load_config("dmc:walker-walk", flags={"env.options.obs": "pixels"})
    assert vision.domain == "dmc_vision" and vision.model.rssm.deter == 2048
    assert vision.run.train_ratio == 512  # the published curves' ratio at repeat 2


def test_user_layers_order_and_explicit_values_beat_size(tmp_path):
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump({"size": "25m", "run": {"steps": 7, "prefill": 3},
                                    "model": {"rssm": {"deter": 1024}}}))
    cfg = load_config(
        "atari100k:pong", size="50m", agent="jepa", files=[str(path)],
        flags={"run.steps": 5000, "env.num_envs": 2, "seed": 1, "logdir": None},
        sets=["opt.lr=1e-4", "model.encoder.mults=[1,2]", "replay.on_disk=true",
              "run.prefill=4e3", "env.options.frame_skip=4"],
    )
    assert cfg.size == "50m"  # size arg (a flag) beats the file
    assert cfg.agent == "jepa"
    assert cfg.run.steps == 5000 and cfg.env.num_envs == 2 and cfg.seed == 1
    assert cfg.run.prefill == 4000 and isinstance(cfg.run.prefill, int)
    assert cfg.opt.lr == pytest.approx(1e-4) and isinstance(cfg.opt.lr, float)
    assert cfg.model.rssm.deter == 1024  # explicit file value wins over the size preset
    assert cfg.model.rssm.hidden == 512  # the rest follows 50m
    assert cfg.model.encoder.mults == (1, 2)
    assert cfg.replay.on_disk is True
    assert cfg.env.options["frame_skip"] == 4
    assert cfg.logdir == ""  # None flags are skipped
    assert load_config("gym:CartPole-v1", sets=["size=12m"]).model.rssm.deter == 2048


def test_explicit_domain_and_extra_defaults():
    cfg = load_config("gym:CartPole-v1", sets=["domain=atari100k"])
    assert cfg.domain == "atari100k" and cfg.env.num_envs == 1 and cfg.run.train_ratio == 256
    cfg = load_config("gym:CartPole-v1", extra_defaults={"extra": {"ema": 0.996}},
                      sets=["extra.ema=0.99"])
    assert cfg.extra.ema == 0.99
    with pytest.raises(ConfigError, match="unknown config key 'extra.ema'"):
        load_config("gym:CartPole-v1", sets=["extra.ema=0.99"])


@pytest.mark.parametrize(
    "sets, message",
    [
        (["run.trian_ratio=3"],
         "unknown config key 'run.trian_ratio'; did you mean 'run.train_ratio'?"),
        (["modl.rssm.deter=3"], "did you mean 'model.rssm.deter'"),
        (["run.steps=abc"], "config key 'run.steps' expects int, got 'abc'"),
        (["run.steps=2.5"], "'run.steps' expects int"),
        (["opt.lr=[1]"], "'opt.lr' expects float"),
        (["replay.on_disk=1"], "'replay.on_disk' expects bool"),
        (["model.rssm=3"], "'model.rssm' is a section"),
        (["size=3m"], "unknown size '3m'; valid sizes: 1m, 12m"),
        (["domain=mars"], "unknown domain 'mars'"),
        (["novalue"], "--set expects key=value"),
    ],
)
def test_errors_are_one_line(sets, message):
    with pytest.raises(ConfigError) as err:
        load_config("dmc:walker-walk", sets=sets)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {steps: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("gym:CartPole-v1", files=[str(bad)])
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("gym:CartPole-v1", files=[str(tmp_path / "missing.yaml")])


def test_config_is_immutable_mapping():
    cfg = load_config("gym:CartPole-v1")
    assert cfg["run"]["steps"] == cfg.run.steps == cfg.get("run.steps")
    assert cfg.get("run.nope", 3) == 3
    assert dict(**cfg.model.rssm)["deter"] == cfg.model.rssm.deter
    with pytest.raises(TypeError):
        cfg.seed = 3
    with pytest.raises(TypeError):
        cfg["seed"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError, match="did you mean 'steps'"):
        _ = cfg.run.stepz
    plain = cfg.to_dict()
    assert isinstance(plain["model"]["encoder"]["mults"], list)
    plain["seed"] = 99
    assert cfg.seed == 0
    assert cfg.flat()["run.steps"] == cfg.run.steps
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_save_and_read_back(tmp_path):
    cfg = load_config("dmc:walker-walk", sets=["opt.lr=3e-5"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    back = Config.from_yaml(tmp_path / "run" / "config.yaml")
    assert back == cfg
    assert back.opt.lr == pytest.approx(3e-5)


def test_reading_a_run_written_before_a_key_existed(tmp_path):
    # A run's config.yaml from before `model.diag_every` was added still loads, with the
    # default for the new key and the run's own values elsewhere.
    cfg = load_config("dmc:walker-walk", sets=["opt.lr=3e-5"])
    old = cfg.to_dict()
    del old["model"]["diag_every"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    back = Config.from_yaml(path)
    assert back.model.diag_every == 100 and back.opt.lr == pytest.approx(3e-5)
    assert back.run.train_ratio == 128 and back == cfg
