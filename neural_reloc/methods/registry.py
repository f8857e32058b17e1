"""Registry of map-building methods: one entry per method folder.

A method says which config dataclass it uses, which trainer builds its map, which
modules go into the map bundle and (when it relocalizes) how to make its
:class:`~neural_reloc.methods.base.Relocalizer` from a loaded map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    config_factory: Callable[[], Any]
    #: (data, config, device, work_dir, progress, log) -> trainer with .fit(),
    #: .modules_to_save(), .scene, .model
    trainer_factory: Callable[..., Any]
    #: (MapBundle, device, config overrides dict) -> Relocalizer; None if the method
    #: only builds a neural map.
    relocalizer_factory: Callable[..., Any] | None = None
    #: The NeuralMapConfig inside the method config.
    map_config: Callable[[Any], Any] = lambda cfg: cfg
    #: (NeuralMap, method config dict) -> None: adds the method's field heads before
    #: its weights are loaded from a map.
    attach_heads: Callable[[Any, dict], None] | None = None


_METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    _METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    _load_builtin()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def available_methods() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)


def _load_builtin() -> None:
    # Importing a method module registers it.
    from . import nerf_only  # noqa: F401

    try:
        from . import crossfire  # noqa: F401
    except ImportError as e:  # pragma: no cover - only while a method is being written
        if "crossfire" not in str(e):
            raise
