"""Loading maps: the neural field, a method's config and relocalizer, the summary.

One module for everything that turns a map bundle (:mod:`neural_reloc.map_bundle`) into
objects: the CLI, the nodes, the benchmark and the methods' relocalizers call these.
A map holds one neural field and components of methods trained on it; ``method``
chooses a component (default: the one the map was built with).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .map_bundle import MapBundle, MapError, manifest_alignment, map_size_bytes, read_manifest, read_map
from .methods.registry import available_methods, get_method


def map_default_method(manifest: dict) -> str:
    """The method a map localizes with when none is named: the one it was built with,
    else its first component."""
    comps = manifest.get("components", {})
    if manifest["method"] in comps or not comps:
        return manifest["method"]
    return next(iter(comps))


def map_methods(manifest: dict) -> list[str]:
    """The methods a map can localize with (its components)."""
    return list(manifest.get("components", {}))


def component_entry(manifest: dict, method: str | None = None) -> dict:
    """The manifest entry of ``method``'s component (default: the map's default);
    MapError naming the map's components when it has none for ``method``."""
    method = method or map_default_method(manifest)
    comps = manifest.get("components", {})
    if method not in comps:
        have = ", ".join(comps) or "none"
        raise MapError(
            f"the map has no {method!r} component (it has: {have}); add one with "
            f"`neural-reloc add-method {method} --map MAP --data DATA`"
        )
    return comps[method]


def map_method_config(manifest: dict, overrides: dict | None = None, method: str | None = None):
    """A component's method config: its method's config class filled from the manifest
    (fields the map predates keep this version's defaults), then ``overrides``."""
    from . import __version__
    from .config_fields import check_settings
    from .config_io import ConfigError, from_dict, merge

    entry = component_entry(manifest, method)
    spec = get_method(entry["method"])
    try:
        cfg = from_dict(type(spec.config_factory()), entry["config"])
    except ConfigError as e:  # most often a map written by a newer neural_reloc: it stores settings this one lacks
        raise ConfigError(
            f"the map's {entry['method']} component: {e}; it was written by neural_reloc "
            f"{manifest.get('neural_reloc_version', '(unknown)')}, this is {__version__}: a map from a newer version "
            "stores settings this one does not know (update neural_reloc, or rebuild the map with this one)"
        ) from None
    cfg = merge(cfg, overrides) if overrides else cfg
    return check_settings(cfg, f"{entry['method']} settings")


def load_neural_map(bundle: MapBundle | str | Path, device: torch.device | str = "cpu"):
    """The :class:`~neural_reloc.nerf.neural_map.NeuralMap` of a map bundle with the
    heads of all its components, on ``device``, in eval mode."""
    from .config_io import from_dict
    from .nerf.config import NeuralMapConfig
    from .nerf.neural_map import NeuralMap
    from .nerf.scene import SceneNormalization

    if not isinstance(bundle, MapBundle):
        bundle = read_map(bundle)
    man = bundle.manifest
    if not bundle.has_field:
        raise MapError(f"{bundle.path}: this map has no neural field (nothing to render)")
    cfg = from_dict(NeuralMapConfig, man["field"]["config"])
    scene = SceneNormalization.from_dict(man["scene"])
    model = NeuralMap(cfg, scene, num_images=len(bundle.references.names))
    for entry in man["components"].values():
        spec = get_method(entry["method"])
        if spec.attach_heads is not None:
            spec.attach_heads(model, entry["config"])
    state = bundle.module_state("map")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise MapError(f"{bundle.path}: weights do not match the map's config: {e}") from e
    return model.to(device).eval()


def load_relocalizer(map_path, device=None, overrides: dict | list[str] | None = None, method: str | None = None,
                     global_prior: str = ""):
    """The :class:`~neural_reloc.methods.base.Relocalizer` of a map's ``method``
    component (default: the map's default method).

    ``overrides``: localization settings as a nested dict or ``key=value`` strings
    relative to the method config (e.g. ``["localization.max_iterations=2"]``).
    ``global_prior``: another component of the map that needs no prior (e.g. ``kscr``)
    gives the frames without a prior their first pose, instead of the method's own
    retrieval (:class:`~neural_reloc.methods.common.global_prior.GlobalPriorRelocalizer`).
    Raises :class:`~neural_reloc.map_bundle.MapError` for unreadable maps or a missing
    component and ``ValueError`` for maps that cannot relocalize.
    """
    from .config_io import parse_dotted
    from .device import resolve_device

    bundle = read_map(map_path)
    man = bundle.manifest
    if not man["components"]:
        able = [m for m in available_methods() if get_method(m).relocalizer_factory]
        raise ValueError(
            f"{map_path}: the map has no relocalization method (only {'a neural field' if man['field'] else 'nothing'}); add one with "
            f"`neural-reloc add-method {able[0] if able else 'crossfire'} --map {map_path} --data DATA`"
        )
    entry = component_entry(man, method)
    spec = get_method(entry["method"])
    if spec.relocalizer_factory is None:
        raise ValueError(f"{map_path}: method {spec.name!r} has no relocalizer")
    if isinstance(overrides, list):
        overrides = parse_dotted(overrides)
    reloc = spec.relocalizer_factory(bundle, resolve_device(device), overrides or {}, method=entry["method"])
    if not global_prior:
        return reloc
    from .methods.common.global_prior import GlobalPriorRelocalizer

    prior_entry = component_entry(man, global_prior)
    if prior_entry["method"] == entry["method"]:
        raise ValueError(f"global prior {global_prior!r} is the method itself; pick another component of {map_path} "
                         f"(it has {', '.join(sorted(man['components']))})")
    prior_spec = get_method(prior_entry["method"])
    if prior_spec.relocalizer_factory is None:
        raise ValueError(f"{map_path}: global prior method {global_prior!r} has no relocalizer")
    prior_reloc = prior_spec.relocalizer_factory(bundle, resolve_device(device), {}, method=prior_entry["method"])
    return GlobalPriorRelocalizer(reloc, prior_reloc)


def describe_map(path: str | Path) -> dict:
    """Summary of a map for ``neural-reloc info``: the field and each component."""
    man = read_manifest(path)
    tr = man.get("training", {})
    field = man.get("field")
    return {
        "path": str(path),
        "method": man["method"],
        "format_version": man["format_version"],
        "neural_reloc_version": man.get("neural_reloc_version"),
        "created_unix": man.get("created_unix"),
        "size_mb": round(map_size_bytes(path) / 1e6, 2),
        "scene": man["scene"],
        "reference_views": len(man["reference_views"]["names"]),
        "field": None if field is None else {
            "file": field["file"],
            "metrics": {k: v for k, v in field.get("metrics", {}).items() if k != "per_view"},
        },
        "components": {
            name: {"method": c["method"], "version": c.get("version"), "file": c["file"],
                   "created_unix": c.get("created_unix"),
                   "training": {k: v for k, v in c.get("training", {}).items() if k != "history"}}
            for name, c in man["components"].items()
        },
        "default_method": map_default_method(man) if man["components"] else None,
        "training": {k: v for k, v in tr.items() if k != "history"},
        "metrics": {k: v for k, v in man.get("metrics", {}).items() if k != "per_view"},
        "training_data_fingerprint": man.get("training_data_fingerprint"),
        "alignment": None if man.get("alignment") is None else {
            "map_from_world": manifest_alignment(man).to_dict(),
            **{k: v for k, v in man["alignment"].items() if k != "map_from_world"},
        },
    }


__all__ = [
    "component_entry",
    "describe_map",
    "load_neural_map",
    "load_relocalizer",
    "map_default_method",
    "map_method_config",
    "map_methods",
]
