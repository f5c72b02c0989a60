"""Loading typed configs from YAML files and command-line overrides, and saving them.

Loading is strict: an unknown key, a wrong type or an impossible value is refused with a one-line
:class:`ConfigError` naming the file, the key and, for a typo, the closest valid key. The config
classes themselves live in ``bertpre/core/configs.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from bertpre.core.errors import ConfigError
from bertpre.core.io import write_text_atomically
from bertpre.core.resolve import config_file, packaged_configs


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with a help text, shown by ``--help`` and in the options tables of docs/commands/ (``make docs``)."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return field(default_factory=lambda: copy.deepcopy(value), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def group(cls: type, help: str = "") -> Any:
    """A nested config that only groups options: its keys may also be written flat (``learning_rate``
    for ``optimization.learning_rate``), on the command line and in YAML."""
    return field(default_factory=cls, metadata={"help": help, "group": True})


def is_group(config_field: dataclasses.Field) -> bool:
    """Whether a dataclass field is an option group made with :func:`group`."""
    return bool(config_field.metadata.get("group"))


def grouped_key(cls: type, key: str) -> str:
    """The full dotted key of ``key`` in ``cls``: a flat spelling of a grouped option gains its group."""
    key = key.replace("-", "_")
    head = key.split(".")[0]
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if head in names:
        return key
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if is_group(f) and head in {g.name for g in dataclasses.fields(hints[f.name])}:
            return f"{f.name}.{key}"
    return key


C = TypeVar("C")


def load_config(cls: type[C], path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> C:
    """Build a ``cls`` from a YAML file (optional) and ``overrides`` (dotted keys for nested configs).

    Override values may be strings as typed on a command line; each is read as its field needs
    (:func:`_parse_typed`).
    Raises :class:`ConfigError` with one line naming the file and the key on any problem.
    """
    source = str(path) if path else "command line"
    path = config_file(path) if path else None  # configs/… also resolves to bertpre's packaged copy
    data: dict[str, Any] = read_yaml(path) if path else {}
    try:
        if path:
            _resolve_nested_paths(cls, data, Path(path).parent)
            data = _nest_flat_keys(cls, data)
        for key, value in (overrides or {}).items():
            dotted = grouped_key(cls, key)
            _set_dotted(data, dotted, _parse_typed(value, _field_type(cls, dotted)) if isinstance(value, str) else value)
        return config_from_dict(cls, data)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def _resolve_nested_paths(cls: type, data: dict[str, Any], base: Path) -> None:
    """A nested config given as a relative YAML path is found beside the file that names it."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if isinstance(value, str) and dataclasses.is_dataclass(hints.get(key)) and (base / value).is_file():
            data[key] = str(base / value)


def _read_nested_yaml(value: str, key: str) -> dict[str, Any]:
    """A nested config given as a string: a YAML file, or the name of a packaged one (``model: mini``
    reads bertpre's ``configs/model/mini.yaml``)."""
    kind = key.rsplit(".", 1)[-1]
    path = config_file(value, kind)
    if not path.is_file() and re.fullmatch(r"[A-Za-z0-9_-]+", value) and packaged_configs(kind):
        raise ConfigError(f"{key}: {value!r} is neither a YAML file nor one of bertpre's {kind} configs "
                          f"({', '.join(packaged_configs(kind))})")
    return read_yaml(path)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad syntax is a one-line :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 - a safe loader
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 (byte {error.start}); save the config as UTF-8") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(error, 'problem', error)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader (plain data, never Python objects) that refuses a key given twice in one mapping:
    PyYAML would keep the last value silently, and YAML itself says keys are unique."""


def _construct_mapping_once(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` then a key of one's own: an override
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, typing.Hashable) and key in lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' given twice, on lines {lines[key]} and {line}; keep one", key_node.start_mark)
        if isinstance(key, typing.Hashable):
            lines[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_once)


def config_from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Validate ``data`` against the dataclass ``cls`` and build it (recursing into nested configs)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    data = _nest_flat_keys(cls, data, prefix)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(prefix + str(key), option_names(cls), prefix))
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError as error:
        if prefix:
            raise ConfigError(f"{prefix}{error}") from None
        raise


def option_names(cls: type) -> list[str]:
    """Every key a user may write for ``cls``: its fields, and the members of its option groups."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        names += [g.name for g in dataclasses.fields(hints[f.name])] if is_group(f) else [f.name]
    return names


def _nest_flat_keys(cls: type, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Move flat spellings of grouped options (``learning_rate``) into their group (``optimization``)."""
    nested: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        full = grouped_key(cls, key)
        if "." in full and "." not in key:
            group_name, leaf = full.split(".", 1)
            _merge_into_group(nested, group_name, {leaf: value}, prefix)
        elif isinstance(value, dict) and isinstance(nested.get(key), dict):
            _merge_into_group(nested, key, value, prefix)
        else:
            nested[key] = value
    return nested


def _merge_into_group(nested: dict[str, Any], group_name: str, members: dict[str, Any], prefix: str) -> None:
    existing = nested.setdefault(group_name, {})
    if not isinstance(existing, dict):
        raise ConfigError(f"{prefix}{group_name}: expected a mapping of options")
    for leaf, value in members.items():
        if leaf in existing:
            raise ConfigError(f"{prefix}{group_name}.{leaf}: given twice (flat and inside {group_name})")
        existing[leaf] = value


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config, suitable for YAML or JSON."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write a config as YAML, so a run records exactly what it ran with."""
    write_text_atomically(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _unknown_key_message(key: str, valid: list[str], prefix: str) -> str:
    leaf = key[len(prefix):]
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid keys: {', '.join(valid)})"
    return f"unknown key '{key}'{hint}"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.replace("-", "_").split(".")
    node = data
    for part in parents:
        if isinstance(node.get(part), str):  # a nested config given as a YAML path, then refined
            node[part] = _read_nested_yaml(node[part], part)
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: '{part}' is not a nested config")
    node[leaf] = value


def _field_type(cls: type, dotted: str) -> Any:
    """The annotation of the field a dotted key names (None when it names no field: refused later)."""
    tp: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def _parse_typed(text: str, tp: Any) -> Any:
    """A value typed on the command line, read as its field needs: text stays text (``--text-column no`` is
    "no", not false) and an integer is read in base 10 (``--step 00000100``, as status prints it, is 100,
    where YAML 1.1 would read octal 64); anything else as a YAML scalar."""
    optional = typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)
    inner = next((a for a in typing.get_args(tp) if a is not type(None)), None) if optional else tp
    if optional and text in ("null", "~"):
        return None
    if inner is str:
        return text
    if inner is int and re.fullmatch(r"[+-]?\d+", text.strip()):
        return int(text.strip(), 10)
    if inner is float:
        try:
            return float(text)  # --max-minutes 010 is ten, not YAML 1.1's octal eight
        except ValueError:
            pass
    return _parse_scalar(text)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


_YAML_BOOLEANS = {False: ("no", "off", "false", "n"), True: ("yes", "on", "true", "y")}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only where lossless (int → float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if isinstance(value, bool) and value not in args:  # YAML 1.1 reads `no`, `off`, `yes`, `on` as booleans
            value = next((a for a in args if isinstance(a, str) and a.lower() in _YAML_BOOLEANS[value]), value)
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str):  # the path of a YAML file holding this nested config, or a packaged name
            value = _read_nested_yaml(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} keys or the path of a YAML file")
        return config_from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():  # a list item typed on a command line
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")
