"""Layered, validated, immutable run configuration.

Layers, later wins: ``defaults.yaml`` -> domain preset (``domains.yaml``, picked
from the env spec) -> size preset (``sizes.yaml``) -> user YAML files -> CLI
flags -> ``--set key=value`` strings. Every user key is checked against the
defaults schema (children of ``env.options`` are free-form) and cast to the
type of its default.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from agents.run.compat import upgrade_run_config
from agents.run.config_keys import (  # noqa: F401 - part of this module's interface
    ConfigError,
    get_dotted,
    parse_override,
    parse_value,
    set_dotted,
    yaml_load,
)
from agents.run.config_ranges import range_error
from agents.run.rundir import atomic_write

CONFIG_DIR = Path(__file__).parent / "configs"

# Values an agent name implies, layered over the domain and size presets (user layers win).
AGENT_PRESETS: dict[str, dict[str, Any]] = {
    "jepa": {"model": {"objective": "latent"}},  # DreamerV3 whose world model predicts latents
}

# Keys whose children are forwarded untouched (to the env factory, the replay sampler).
FREE_FORM = ("env.options", "replay.sampler_options")

# Size-preset field -> dotted config keys it sets.
SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "deter": ("model.rssm.deter",),
    "hidden": ("model.rssm.hidden",),
    "classes": ("model.rssm.classes",),
    "depth": ("model.encoder.depth", "model.decoder.depth"),
    "units": (
        "model.encoder.units",
        "model.decoder.units",
        "model.reward_head.units",
        "model.cont_head.units",
        "actor_critic.policy.units",
        "actor_critic.value.units",
    ),
}

_MISSING = object()


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys -> nested dicts, recursively: {"opt.lr": 1} -> {"opt": {"lr": 1}}.
    A key below a plain value (`opt` = 1 and `opt.lr`) is a ConfigError."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        value = nest(value) if isinstance(value, Mapping) else value
        *parents, leaf = str(key).split(".")
        node = out
        for i, part in enumerate(parents):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                where = ".".join(parents[: i + 1])
                raise ConfigError(f"config key '{key}' clashes with a value at '{where}'")
            node = nxt
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = _merge(node[leaf], value)
        elif leaf in node and isinstance(node[leaf], dict):
            raise ConfigError(f"config key '{key}' clashes with the section at '{key}'")
        else:
            node[leaf] = value
    return out


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, Config):
        return Config(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


class Config(Mapping):
    """Immutable nested mapping with attribute access (``cfg.run.steps``)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        frozen = {str(k): _freeze(v) for k, v in (data or {}).items()}
        object.__setattr__(self, "_data", frozen)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            hint = difflib.get_close_matches(name, list(self._data), n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            raise AttributeError(f"config has no key '{name}'{extra}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("Config is immutable; build a new one with load_config")

    def __delattr__(self, name: str) -> None:
        raise TypeError("Config is immutable; build a new one with load_config")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Config, (self.to_dict(),))

    def __repr__(self) -> str:
        return f"Config({self.to_dict()!r})"

    def get(self, key: str, default: Any = None) -> Any:
        """Value at a dotted path (``cfg.get("run.steps")``), or ``default``."""
        return get_dotted(self, key, default)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (safe to dump, pickle or mutate)."""
        return _thaw(self)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of every leaf, e.g. ``{"run.steps": 100000, ...}``."""
        return _flatten(self.to_dict(), free_form=())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Config:
        """Read a config written by :func:`save_config`. Keys added to `defaults.yaml` since
        the run was written take their default, so older runs still load; nothing else is
        layered or checked."""
        data, implied = upgrade_run_config(_read_yaml(Path(path)), AGENT_PRESETS)
        defaults = _merge(_read_yaml(CONFIG_DIR / "defaults.yaml"), implied)
        return cls(_merge(defaults, data))


def override_config(cfg: Config, sets: Sequence[str]) -> Config:
    """`cfg` with `key=value` strings applied (a loaded run evaluated with other settings),
    each checked against the keys and types `cfg` already has."""
    if not sets:
        return cfg
    layer = _check(nest(dict(parse_override(s) for s in sets)), cfg.to_dict(), prefix="")
    merged = _merge(cfg.to_dict(), layer)
    error = range_error(merged)
    if error:
        raise ConfigError(error)
    return Config(merged)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write(path, cfg.to_yaml())


def domain_for(spec: str, options: Mapping[str, Any]) -> str:
    """Name of the domain preset for an env spec such as ``dmc:walker-walk``: what its
    suite declares (`envs.domain_preset`)."""
    from envs import EnvSpecError, domain_preset

    try:
        return domain_preset(spec, options)
    except EnvSpecError as exc:
        raise ConfigError(str(exc)) from None


def load_config(
    env_spec: str,
    *,
    size: str | None = None,
    agent: str | None = None,
    files: Sequence[str | os.PathLike] | None = (),
    flags: Mapping[str, Any] | None = None,
    sets: Sequence[str] | None = (),
    overrides: Mapping[str, Any] | None = None,
    extra_defaults: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve the layered config for ``env_spec``; raises ConfigError on bad input.

    ``size``/``agent`` act like CLI flags (they beat files, lose to ``sets``);
    ``flags`` maps dotted keys to values (``None`` values are skipped); ``sets`` are
    ``key=value`` strings; ``overrides`` maps dotted keys to values and comes last (the
    Python way to say ``--set``); ``extra_defaults`` adds sections or keys to the schema.
    """
    from envs import parse_spec  # here: reading a config needs no env library

    env_spec = ":".join(parse_spec(env_spec))  # `dmc_walker_walk` -> `dmc:walker_walk`
    defaults = _read_yaml(CONFIG_DIR / "defaults.yaml")
    defaults = _merge(_objective_sections(defaults), defaults)
    if extra_defaults:
        defaults = _merge(defaults, nest(dict(extra_defaults)))
    sizes = _read_yaml(CONFIG_DIR / "sizes.yaml")
    domains = _read_yaml(CONFIG_DIR / "domains.yaml")

    # User layers, lowest first. Each is validated and cast against the schema.
    layers: list[tuple[str, dict[str, Any]]] = []
    for file in files or ():
        data = _read_yaml(Path(file))
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {file} must hold a mapping, got {type(data).__name__}")
        layers.append((str(file), nest(data)))
    cli = {k: v for k, v in (flags or {}).items() if v is not None}
    if size is not None:
        cli = {"size": size, **cli}
    if agent is not None:
        cli = {"agent": agent, **cli}
    layers.append(("flags", nest(cli)))
    layers.append(("--set", nest(dict(parse_override(s) for s in sets or ()))))
    layers.append(("overrides", nest(dict(overrides or {}))))

    user: dict[str, Any] = {}
    explicit: set[str] = set()
    for _source, layer in layers:
        checked = _check(layer, defaults, prefix="")
        user = _merge(user, checked)
        explicit |= set(_flatten(checked, free_form=FREE_FORM))

    options = {**defaults["env"]["options"], **user.get("env", {}).get("options", {})}
    domain = user.get("domain") or defaults.get("domain") or domain_for(env_spec, options)
    domains = _with_shipped_presets(domains)
    if domain not in domains:
        raise ConfigError(f"unknown domain '{domain}'; valid domains: {', '.join(domains)}")
    preset = _check(nest(domains[domain]), defaults, prefix="")

    cfg = _merge(defaults, preset)
    size_name = str(user.get("size", cfg["size"]))
    if size_name not in sizes:
        raise ConfigError(f"unknown size '{size_name}'; valid sizes: {', '.join(sizes)}")
    for field, keys in SIZE_KEYS.items():
        for key in keys:
            if key not in explicit and _has(defaults, key):
                value = _check_value(key, sizes[size_name][field], get_dotted(defaults, key))
                set_dotted(cfg, key, value)

    agent_name = str(user.get("agent", cfg["agent"]))
    cfg = _merge(cfg, AGENT_PRESETS.get(agent_name, {}))
    cfg = _merge(cfg, user)
    cfg["domain"] = domain
    cfg["size"] = size_name
    cfg["env"]["spec"] = env_spec
    error = range_error(cfg)
    if error:
        raise ConfigError(error)
    return Config(cfg)


# ---------------------------------------------------------------- helpers


def _objective_sections(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Config sections of objectives registered in this process beyond the built-in ones
    (`SECTION` and `DEFAULTS` of the class), so a new objective needs no edit here. Read
    only when the registry was imported: a plain config load pulls in no torch."""
    registry = sys.modules.get("world_models.objectives")
    if registry is None:
        return {}
    return {cls.SECTION: dict(cls.DEFAULTS) for cls in registry.OBJECTIVES.values()
            if cls.SECTION and cls.SECTION not in defaults and cls.DEFAULTS is not None}


def _with_shipped_presets(domains: Mapping[str, Any]) -> dict[str, Any]:
    """domains.yaml's presets plus those that registered suites ship (`envs.SHIPPED_PRESETS`);
    a shipped preset may not replace a built-in one."""
    from envs import SHIPPED_PRESETS

    clash = sorted(set(SHIPPED_PRESETS) & set(domains))
    if clash:
        raise ConfigError(f"suite presets {clash} reuse built-in preset names; rename them")
    return {**domains, **SHIPPED_PRESETS}


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML: {first}") from None
    return {} if data is None else data


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: (_merge(v, {}) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        elif isinstance(value, Mapping):
            out[key] = _merge(value, {})
        else:
            out[key] = value
    return out


def _flatten(data: Mapping[str, Any], free_form: Sequence[str], prefix: str = "") -> dict:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and path not in free_form:
            out.update(_flatten(value, free_form, path + "."))
        else:
            out[path] = value
    return out


def _has(data: Mapping[str, Any], key: str) -> bool:
    return get_dotted(data, key, _MISSING) is not _MISSING


def _all_keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in schema.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, Mapping) and path not in FREE_FORM:
            keys.extend(_all_keys(value, path + "."))
    return keys


def _unknown(key: str, schema_root: Mapping[str, Any]) -> ConfigError:
    valid = _all_keys(schema_root)
    ratio = lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()
    # Candidates: keys at the same depth ('model.rssm.foo' should not suggest 'model.rssm'),
    # and keys anywhere whose leaf name is close ('model.dter' -> 'model.rssm.deter').
    leaf, top = key.rpartition(".")[2], key.partition(".")[0]
    scored = [(ratio(key, k), k) for k in valid if k.count(".") == key.count(".")]
    scored += [(ratio(leaf, k.rpartition(".")[2]) - 0.01 * (not k.startswith(top + ".")), k)
               for k in valid if "." in key]
    best = max(scored, default=(0.0, ""))
    if best[0] >= 0.6:
        return ConfigError(f"unknown config key '{key}'; did you mean '{best[1]}'?")
    parent = key.rpartition(".")[0]
    siblings = [k for k in valid if k.rpartition(".")[0] == parent]
    return ConfigError(f"unknown config key '{key}'; valid keys here: {', '.join(siblings)}")


def _check(
    layer: Mapping[str, Any],
    schema: Mapping[str, Any],
    prefix: str,
    root: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate ``layer`` against ``schema`` and return it with values cast."""
    root = schema if root is None else root
    out: dict[str, Any] = {}
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if key not in schema:
            # Name a full leaf path so the hint can be a full key ('modl.rssm.deter').
            leaf = next(iter(_flatten(value, ()))) if isinstance(value, Mapping) and value else ""
            raise _unknown(f"{path}.{leaf}" if leaf else path, root)
        default = schema[key]
        if path in FREE_FORM:
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key '{path}' expects a mapping, got {value!r} ({type(value).__name__})"
                )
            out[key] = _merge(value, {})
        elif isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key '{path}' is a section (keys: {', '.join(default)}); "
                    f"got {value!r}"
                )
            out[key] = _check(value, default, path + ".", root)
        else:
            out[key] = _check_value(path, value, default)
    return out


def _type_error(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(
        f"config key '{key}' expects {expected}, got {value!r} ({type(value).__name__})"
    )


def _check_value(key: str, value: Any, default: Any) -> Any:
    """Cast ``value`` to the type of ``default`` or raise ConfigError."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _type_error(key, "bool", value)
    if isinstance(default, int | float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _type_error(key, type(default).__name__, value) from None
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _type_error(key, type(default).__name__, value)
        if isinstance(default, float):
            return float(number)
        if isinstance(number, float):
            if not number.is_integer():
                raise _type_error(key, "int", value)
            return int(number)
        return number
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. `--set device=0` parsed as a number by YAML
        if isinstance(value, bool):
            return "on" if value else "off"  # YAML reads a bare on/off (or yes/no) as a bool
        raise _type_error(key, "str", value)
    if isinstance(default, list | tuple):
        if not isinstance(value, list | tuple):
            raise _type_error(key, "list", value)
        kinds = {type(v) for v in default}
        if len(kinds) == 1 and kinds <= {int, float, str}:
            proto = default[0]
            return [_check_value(f"{key}[{i}]", v, proto) for i, v in enumerate(value)]
        return list(value)
    return value


def absolute_encoder(kind: str | None) -> str | None:
    """`jepa:PATH` (and `hf:DIR` naming a local folder) with the path made absolute: the run's
    config names the file its encoder was built from, and `dreamer-eval`, `dreamer-export`
    and a resume read it from wherever they are started."""
    if not kind or ":" not in kind:
        return kind
    prefix, _, target = kind.partition(":")
    if prefix == "jepa" or (prefix == "hf" and Path(target).exists()):
        return f"{prefix}:{Path(target).expanduser().resolve()}"
    return kind
