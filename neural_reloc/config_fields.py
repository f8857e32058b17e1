"""Config fields that describe themselves: one place for a setting's default, meaning,
range and choices.

A setting users tune at run time (a method's localization settings, the tracking
session, PnP, the node's own parameters) is declared with :func:`setting`; its
description, range and choices live in the field's metadata, from which the ROS
parameter descriptors, the generated YAML comments and :func:`check_settings` (range
validation for the CLI, YAML and ROS alike) are all derived — never parsed from
comments.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any


def setting(default: Any, description: str, *, range: tuple | None = None, choices=None,
            read_only: bool = False, **kw) -> Any:
    """A dataclass field with its description (a sentence, it becomes the ROS
    parameter's), its inclusive ``range`` (lo, hi) for numbers or per element of a list,
    its allowed ``choices``, and ``read_only`` (a ROS parameter that can only be set at
    startup). Lists and nested dataclass defaults get a default factory."""
    meta = {"description": description, "read_only": read_only}
    if range is not None:
        meta["range"] = tuple(range)
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=tuple(default): list(d), metadata=meta, **kw)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def with_default(cls: type, name: str, default: Any, note: str = "") -> Any:
    """``cls``'s setting ``name`` (description, range, choices) with another default: how
    a method's config changes a default of the base config it extends; ``note`` is
    appended to the description (how this method applies it)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = dict(f.metadata)
    return setting(default, meta.pop("description", "") + note, **{k: v for k, v in meta.items()})


def setting_problems(cfg: Any, prefix: str = "") -> list[str]:
    """Every field of ``cfg`` (nested dataclasses included) whose value is outside its
    declared range or choices, as ``"path=value must be ..."`` lines."""
    problems: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            problems += setting_problems(value, name + ".")
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            problems.append(f"{name}={value!r} must be one of {', '.join(map(str, choices))}")
        lo_hi = f.metadata.get("range")
        if lo_hi is None or isinstance(value, (str, bool)):
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if math.isnan(v) or not lo_hi[0] <= v <= lo_hi[1]:
                problems.append(f"{name}={value!r} must be in [{lo_hi[0]}, {lo_hi[1]}]")
                break
    return problems


def check_settings(cfg: Any, what: str = "config") -> Any:
    """Raise ValueError naming every out-of-range or unknown-choice field; return cfg."""
    problems = setting_problems(cfg)
    if problems:
        raise ValueError(f"invalid {what}: " + "; ".join(problems))
    return cfg


__all__ = ["check_settings", "setting", "setting_problems", "with_default"]
