"""Reference numbers the benchmarks compare against (copied from ../shared/reference/*.json).

Atari random/human ("gamer") scores are DreamerV3's `baselines.yaml` values, identical to
the IRIS repo's RANDOM.json/HUMAN.json. DreamerV3 finals are computed from its 2024 score
files (REFERENCE.md sections 1.3 and 2.2-2.3); they are facts to print beside our numbers,
never inputs to our own aggregation.
"""

from __future__ import annotations

# The 26 Atari-100k games, as ale-py ROM ids (= DreamerV3 task suffixes).
ATARI_RANDOM_HUMAN: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7), "amidar": (5.8, 1719.5), "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3), "bank_heist": (14.2, 753.1), "battle_zone": (2360.0, 37187.5),
    "boxing": (0.1, 12.1), "breakout": (1.7, 30.5), "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4), "demon_attack": (152.1, 1971.0), "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7), "gopher": (257.6, 2412.5), "hero": (1027.0, 30826.4),
    "jamesbond": (29.0, 302.8), "kangaroo": (52.0, 3035.0), "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3), "ms_pacman": (307.3, 6951.6), "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3), "qbert": (163.9, 13455.0), "road_runner": (11.5, 7845.0),
    "seaquest": (68.4, 42054.7), "up_n_down": (533.4, 11693.2),
}
ATARI100K_GAMES: list[str] = list(ATARI_RANDOM_HUMAN)

# DreamerV3 2024 curves, per game, mean over seeds of training episodes ending in
# [390k, 400k] frames (the rule that reproduces the paper's 125% / 49%).
DREAMERV3_ATARI100K_W390: dict[str, float] = {
    "alien": 1117.67, "amidar": 97.45, "assault": 683.47, "asterix": 1062.0,
    "bank_heist": 397.83, "battle_zone": 20300.0, "boxing": 82.06, "breakout": 9.66,
    "chopper_command": 2222.0, "crazy_climber": 86225.0, "demon_attack": 577.25, "freeway": 0.0,
    "frostbite": 3377.0, "gopher": 2160.0, "hero": 13354.17, "jamesbond": 540.0,
    "kangaroo": 2643.33, "krull": 8171.0, "kung_fu_master": 25900.0, "ms_pacman": 1520.67,
    "pong": -4.0, "private_eye": 3237.8, "qbert": 2921.42, "road_runner": 19230.0,
    "seaquest": 962.0, "up_n_down": 46910.0,
}
# Same file, per seed the last training episode ending at <= 400k frames.
DREAMERV3_ATARI100K_LAST: dict[str, float] = {
    "alien": 1278.0, "amidar": 120.2, "assault": 740.6, "asterix": 1020.0,
    "bank_heist": 422.0, "battle_zone": 20800.0, "boxing": 86.6, "breakout": 11.2,
    "chopper_command": 2440.0, "crazy_climber": 80060.0, "demon_attack": 454.0, "freeway": 0.0,
    "frostbite": 3914.0, "gopher": 2252.0, "hero": 13324.0, "jamesbond": 490.0,
    "kangaroo": 2840.0, "krull": 8604.0, "kung_fu_master": 25560.0, "ms_pacman": 1400.0,
    "pong": -5.0, "private_eye": 3237.8, "qbert": 3700.0, "road_runner": 18440.0,
    "seaquest": 964.0, "up_n_down": 49456.0,
}

# DMC tasks as (domain, task) of the dm_control suite; the v2 protocol (action repeat 2).
DMC_PROPRIO_TASKS: list[tuple[str, str]] = [
    ("acrobot", "swingup"), ("ball_in_cup", "catch"), ("cartpole", "balance"),
    ("cartpole", "balance_sparse"), ("cartpole", "swingup"), ("cartpole", "swingup_sparse"),
    ("cheetah", "run"), ("finger", "spin"), ("finger", "turn_easy"), ("finger", "turn_hard"),
    ("hopper", "hop"), ("hopper", "stand"), ("pendulum", "swingup"), ("reacher", "easy"),
    ("reacher", "hard"), ("walker", "run"), ("walker", "stand"), ("walker", "walk"),
]
DMC_VISION_TASKS: list[tuple[str, str]] = sorted(
    DMC_PROPRIO_TASKS + [("quadruped", "run"), ("quadruped", "walk")]
)

# DreamerV3 2024 curves: mean of points in [450k, 500k] frames (proprio, 5 seeds) and of
# episodes in [950k, 1M] frames (vision, up to 10 seeds).
DREAMERV3_DMC_PROPRIO_500K: dict[str, float] = {
    "acrobot_swingup": 158.4, "ball_in_cup_catch": 964.4, "cartpole_balance": 991.4,
    "cartpole_balance_sparse": 994.0, "cartpole_swingup": 850.8, "cartpole_swingup_sparse": 462.0,
    "cheetah_run": 599.9, "finger_spin": 936.4, "finger_turn_easy": 709.1,
    "finger_turn_hard": 834.5, "hopper_hop": 110.0, "hopper_stand": 544.0,
    "pendulum_swingup": 779.3, "reacher_easy": 943.7, "reacher_hard": 936.6,
    "walker_run": 637.4, "walker_stand": 953.3, "walker_walk": 940.8,
}
DREAMERV3_DMC_VISION_1M: dict[str, float] = {
    "acrobot_swingup": 229.5, "ball_in_cup_catch": 971.8, "cartpole_balance": 993.9,
    "cartpole_balance_sparse": 969.7, "cartpole_swingup": 860.5, "cartpole_swingup_sparse": 758.0,
    "cheetah_run": 836.3, "finger_spin": 588.8, "finger_turn_easy": 883.0,
    "finger_turn_hard": 905.0, "hopper_hop": 227.3, "hopper_stand": 902.3,
    "pendulum_swingup": 738.3, "quadruped_run": 611.5, "quadruped_walk": 809.0,
    "reacher_easy": 952.6, "reacher_hard": 854.8, "walker_run": 684.9,
    "walker_stand": 975.3, "walker_walk": 960.4,
}

# Aggregates as REFERENCE.md reports them (mean, median), for the summary tables.
PUBLISHED_AGGREGATES: dict[str, dict[str, tuple[float, float]]] = {
    "atari100k_hns": {
        "dreamerv3 (2024 curves, [390k,400k])": (1.247, 0.494),
        "dreamerv3 (2024 curves, last episode)": (1.282, 0.487),
        "dreamerv3 (v2/Nature paper)": (1.25, 0.49),
    },
    "dmc_proprio_500k": {"dreamerv3 (2024 curves)": (741.4, 842.6)},
    "dmc_vision_1m": {"dreamerv3 (2024 curves)": (785.6, 857.6)},
}
