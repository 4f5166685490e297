"""Config keys and values as text gives them: YAML reading (with `1e-4` a float),
`key=value` overrides, dotted keys (`run.train_ratio`) in nested mappings, and the error
all of them raise. `agents.run.config` layers and checks whole configs with these."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config key, value, preset name or file."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 demands a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader


# ---------------------------------------------------------------- dotted keys
# The one set of helpers for dotted config keys ("run.train_ratio"), used by the CLI,
# the sweep and the benchmark runners.


def parse_value(text: str) -> Any:
    """A value from text as a YAML file would read it (`1e-4` a float, `true` a bool);
    text YAML cannot parse stays a string, for the type check to judge."""
    if not text.strip():
        return ""
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` -> (dotted key, parsed value); ConfigError when there is no `=`."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got '{item}'")
    return key.strip(), parse_value(raw)


def get_dotted(data: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The value at a dotted key of nested mappings, or `default`."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in nested dicts, creating the sections on the way."""
    *parents, leaf = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value
