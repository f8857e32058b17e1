"""Dataclass configs <-> plain dicts / YAML, with strict key checking.

Configs are nested dataclasses with their defaults in the dataclass definitions; YAML
files in ``config/`` mirror them 1:1. Unknown keys and wrong types are errors that name
the offending key path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def to_dict(cfg: Any) -> dict:
    """Nested dict of a dataclass config (tuples become lists, for JSON/YAML)."""

    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} does not match {tp}")
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads exponents without a dot, e.g. 1e-3, as strings.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, path: str = "") -> T:
    """Build ``cls`` from a (possibly partial) dict; missing keys keep defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping of settings, got {data!r}")
    unknown = sorted(set(map(str, data)) - names)
    if unknown:
        where = path or cls.__name__
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            if (
                dataclasses.is_dataclass(hints[f.name])
                and isinstance(value, dict)
                and f.default_factory is not dataclasses.MISSING
            ):
                # A partial nested section keeps *this* field's defaults for its missing
                # keys (e.g. localization.pnp's 1-cell threshold), not those of the
                # nested class alone (PnPConfig's 4 px).
                value = _deep_merge(to_dict(f.default_factory()), value)
            kwargs[f.name] = _coerce(value, hints[f.name], f"{path + '.' if path else ''}{f.name}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a config's own validation (e.g. PnPConfig): say where it sits
        if isinstance(e, ConfigError) or not path:
            raise
        raise ConfigError(f"{path}: {e}") from None


def _deep_merge(a: dict, b: dict) -> dict:
    """``a`` with ``b``'s entries, nested mappings merged key by key."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def merge(cfg: T, overrides: dict) -> T:
    """A copy of ``cfg`` with nested ``overrides`` applied."""
    return from_dict(type(cfg), _deep_merge(to_dict(cfg), overrides))


def parse_dotted(assignments: list[str]) -> dict:
    """``["train.steps=100", "sampler.num_fine=32"]`` -> nested dict (YAML-typed values)."""
    import yaml

    out: dict = {}
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"override {a!r} is not of the form key.path=value")
        key, raw = a.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {a!r}: empty key in {key!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            problem = str(e).splitlines()[0]
            raise ConfigError(f"override {a!r}: the value is not valid YAML ({problem})") from None
        node = out
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {a!r}: {'.'.join(parts[: i + 1])} is set to a value by another "
                                  "override, so it has no keys")
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise ConfigError(f"override {a!r}: {key.strip()} is a section (other overrides set keys in it)")
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text (YAML) file") from None
    except PermissionError:
        raise ConfigError(f"{p}: permission denied") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    _check_keys(data, str(p))
    return data


def _check_keys(data: dict, where: str, path: str = "") -> None:
    """Every key of a config mapping (nested too) must be a string."""
    for k, v in data.items():
        if not isinstance(k, str):
            raise ConfigError(f"{where}: key {k!r}{' under ' + path if path else ''} is not a name (keys are strings)")
        if isinstance(v, dict):
            _check_keys(v, where, f"{path}.{k}" if path else k)


def config_files() -> dict[str, type]:
    """The method config files in config/, from the registry: file name (the method's
    ``config_file``) -> its config dataclass, for this package's own methods."""
    from .methods.registry import available_methods, get_method

    out = {}
    for name in available_methods():
        spec = get_method(name)
        cls = type(spec.config_factory())
        if cls.__module__.startswith(__package__ + "."):
            out[spec.config_file or f"{name}.yaml"] = cls
    return out


def dump_config_yaml(cls: type, file_name: str) -> str:
    """The YAML text of ``cls``'s defaults, as kept in ``config/<file_name>``."""
    import yaml

    header = (
        f"# Defaults of {cls.__module__}.{cls.__name__} (the single source of truth).\n"
        f"# Regenerate: python -m neural_reloc.config_io (test/test_config_yaml.py checks\n"
        f"# that this file equals the dataclass defaults). Use as a starting point for\n"
        f"# neural-reloc build-map --config {file_name}; any subset of keys may be given.\n"
    )
    return header + yaml.safe_dump(to_dict(cls()), sort_keys=False, default_flow_style=False)


def _yaml_config_data(config_file: str | Path) -> dict:
    """A YAML config file's mapping; a ROS parameter file (``node: ros__parameters:
    {...}``) gives its parameters."""
    data = load_yaml(config_file)
    if len(data) == 1 and isinstance(next(iter(data.values())), dict) and "ros__parameters" in next(iter(data.values())):
        data = next(iter(data.values()))["ros__parameters"]
    return data


def load_dataclass_config(cls: type[T], config_file: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """``cls()`` updated from a YAML file (plain, or a ROS parameter file) and
    ``key.path=value`` overrides."""
    cfg = from_dict(cls, _yaml_config_data(config_file)) if config_file else cls()
    return merge(cfg, parse_dotted(overrides)) if overrides else cfg


def load_method_config(method: str, config_file: str | Path | None = None, overrides: list[str] | None = None):
    """A registered method's config: its defaults, a YAML file, ``key.path=value``
    overrides (what ``build-map``, ``add-method`` and the map_builder node take)."""
    from .methods.registry import get_method

    return load_dataclass_config(type(get_method(method).config_factory()), config_file, overrides)


if __name__ == "__main__":  # python -m neural_reloc.config_io: regenerate config/*.yaml
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "config"
    for fname, cls in config_files().items():
        (root / fname).write_text(dump_config_yaml(cls, fname))
        print(f"wrote {root / fname}")
