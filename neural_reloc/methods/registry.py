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
    #: (MapBundle, device, config overrides dict, method=name) -> Relocalizer; None if
    #: the method only builds a neural map.
    relocalizer_factory: Callable[..., Any] | None = None
    #: The dataclass of the method config's ``localization`` section (its fields carry
    #: descriptions and ranges: the CLI, config/*.yaml, the ROS parameters and eval-bag
    #: derive from it); None for a method without a relocalizer.
    localization_config: type | None = None
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
    #: Version of the component's stored format (in the map's manifest).
    version: int = 1
    #: For ``neural-reloc add-method``: (bundle, train_data, config, device, work_dir,
    #: progress, log) -> (modules dict, info dict) training the component on the map's
    #: frozen field; None: the method cannot be added to an existing map.
    add_to_map: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if (self.trainer_factory is None) == (self.build is None):
            raise ValueError(f"method {self.name!r}: give exactly one of trainer_factory and build")
        if (self.relocalizer_factory is None) != (self.localization_config is None):
            raise ValueError(f"method {self.name!r}: a relocalizer_factory needs its localization_config and back")


_METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method (its package's ``__init__`` calls this: the one registration line)."""
    _METHODS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a method (tests that register a throwaway one clean up with this)."""
    _METHODS.pop(name, None)


def get_method(name: str) -> MethodSpec:
    _load_builtin()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def available_methods() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)


def relocalizing_methods() -> list[str]:
    """The registered methods that relocalize (have a relocalizer), sorted."""
    return [m for m in available_methods() if _METHODS[m].relocalizer_factory is not None]


#: Environment variable naming extra method modules (comma-separated, importable), each
#: registering its method when imported: how a method outside this package (or a test's
#: throwaway one) reaches the CLI, the nodes and eval-bag without editing this package.
METHODS_ENV = "NEURAL_RELOC_METHODS"
#: Entry-point group of installed method packages (``[project.entry-points."neural_reloc.methods"]``).
ENTRY_POINT_GROUP = "neural_reloc.methods"
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import importlib
    import os
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
    for name in filter(None, (m.strip() for m in os.environ.get(METHODS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"{METHODS_ENV}={os.environ[METHODS_ENV]!r}: cannot import method module {name!r}: {e}") from e


def _load_builtin() -> None:
    # Importing a method module registers it.
    from . import nerf_only  # noqa: F401

    try:
        from . import crossfire  # noqa: F401
    except ImportError as e:  # pragma: no cover - only while a method is being written
        if "crossfire" not in str(e):
            raise
    from . import classical  # noqa: F401

    _load_plugins()
