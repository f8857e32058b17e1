"""Registry of map-building methods: one entry per method folder.

A method says which config dataclass it uses, which trainer builds its map (or, for
a method without a neural map, which function builds its bundle's content), which
modules go into the map bundle and (when it relocalizes) how to make its
:class:`~neural_reloc.methods.base.Relocalizer` from a loaded map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class BuiltMap:
    """What a :attr:`MethodSpec.build` function returns; ``build_map`` writes it."""

    #: Prefix -> module or state dict, as :func:`~neural_reloc.map_bundle.write_map` takes.
    modules: dict[str, Any]
    #: The manifest's ``scene`` (e.g. ``{"mode": "none"}`` for a map without a field).
    scene: dict
    #: The mapping views (a :class:`~neural_reloc.map_bundle.ReferenceViews`).
    references: Any
    #: Extra ``training`` entries of the manifest (counts, per-stage seconds...).
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    config_factory: Callable[[], Any]
    #: (data, config, device, work_dir, progress, log) -> trainer with .fit(),
    #: .modules_to_save(), .scene, .model (a method with a neural map).
    trainer_factory: Callable[..., Any] | None = None
    #: (MapBundle, device, config overrides dict) -> Relocalizer; None if the method
    #: only builds a neural map.
    relocalizer_factory: Callable[..., Any] | None = None
    #: The NeuralMapConfig inside the method config.
    map_config: Callable[[Any], Any] = lambda cfg: cfg
    #: (NeuralMap, method config dict) -> None: adds the method's field heads before
    #: its weights are loaded from a map.
    attach_heads: Callable[[Any, dict], None] | None = None
    #: Instead of ``trainer_factory``, for a method without a neural map (e.g.
    #: "classical"): (train_data, config, device, work_dir, progress, log) ->
    #: :class:`BuiltMap`. ``mapping.build_map`` keeps its up-to-date check and writes
    #: the bundle with the build time and image counts, as for trained maps.
    build: Callable[..., BuiltMap] | None = None

    def __post_init__(self) -> None:
        if (self.trainer_factory is None) == (self.build is None):
            raise ValueError(f"method {self.name!r}: give exactly one of trainer_factory and build")


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
    from . import classical  # noqa: F401


def map_method_config(manifest: dict, overrides: dict | None = None):
    """A map's method config: its method's config class filled from the manifest
    (fields the map predates keep this version's defaults), then ``overrides``."""
    from ..config_io import from_dict, merge

    spec = get_method(manifest["method"])
    cfg = from_dict(type(spec.config_factory()), manifest["config"])
    return merge(cfg, overrides) if overrides else cfg


def load_relocalizer(map_path, device=None, overrides: dict | list[str] | None = None):
    """The :class:`~neural_reloc.methods.base.Relocalizer` of a map bundle.

    ``overrides``: localization settings as a nested dict or ``key=value`` strings
    relative to the method config (e.g. ``["localization.max_iterations=2"]``).
    Raises :class:`~neural_reloc.map_bundle.MapError` for unreadable maps and
    ``ValueError`` for maps whose method cannot relocalize.
    """
    from ..config_io import parse_dotted
    from ..device import resolve_device
    from ..map_bundle import read_map

    bundle = read_map(map_path)
    spec = get_method(bundle.manifest["method"])
    if spec.relocalizer_factory is None:
        raise ValueError(
            f"{map_path}: the map's method {spec.name!r} has no relocalizer; "
            f"build the map with --method {' or '.join(m for m in available_methods() if get_method(m).relocalizer_factory) or 'crossfire'}"
        )
    if isinstance(overrides, list):
        overrides = parse_dotted(overrides)
    return spec.relocalizer_factory(bundle, resolve_device(device), overrides or {})
