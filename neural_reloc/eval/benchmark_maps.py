"""Step 1 of ``neural-reloc benchmark`` (:mod:`neural_reloc.eval.benchmark`): the maps.

Each step skips what a previous run finished (``build_map`` keeps a map of the same
method, config and data; ``add_method`` a component with the same build settings) and
records the wall time of what it did beside the map (``<map>.build.json``), which
:func:`map_build_info` / :func:`component_build_info` read back on later runs.

* Own maps (default, and methods that cannot be added to a map, e.g. ``classical``):
  :func:`build_method_map`, ``maps/<name>`` built from scratch.
* Shared field (``shared_field``): :func:`build_shared_maps`. One field ``maps/field``
  (method ``nerf``, overrides ``field:...``); ``maps/shared`` = that field + the
  component of each method that can be added (``add_method``, one after the other; the
  first copies the field); a variant whose component settings differ from the one in
  ``maps/shared`` gets ``maps/<name>`` = the field + its component (+ byte copies of the
  ``global:`` prior components of ``maps/shared``, so its global prior is the same).
* ``map_every`` > 1: maps from every N-th frame of the map split (:func:`mapping_data`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.posed_images import PosedImages
from ..device import machine_info
from ..map_bundle import FIELD_FILE, MapError, component_file, map_size_bytes, read_manifest
from .benchmark_config import (
    BenchmarkConfig,
    can_share_field,
    component_key,
    field_config,
    global_prior_method,
    method_config,
)
from .benchmark_metrics import MAP_SPLIT
from .io import write_json_atomic

MAPS_DIR = "maps"
FIELD_MAP = "field"
SHARED_MAP = "shared"
BUILD_RECORD_SUFFIX = ".build.json"
BYTES_PER_MB = 1e6


def build_record_path(map_dir: Path) -> Path:
    return map_dir.parent / f"{map_dir.name}{BUILD_RECORD_SUFFIX}"


def _created(map_dir: Path) -> float | None:
    try:
        return read_manifest(map_dir).get("created_unix")
    except MapError:
        return None


def _field_sha(map_dir: Path) -> str | None:
    try:
        return read_manifest(map_dir)["files"][FIELD_FILE]["sha256"]
    except (MapError, KeyError, TypeError):
        return None


def _read_record(map_dir: Path) -> dict:
    path = build_record_path(Path(map_dir))
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def mapping_data(data: PosedImages, cfg: BenchmarkConfig) -> PosedImages:
    """The frames maps are built from: the map split (all frames when there is none),
    thinned to every ``cfg.map_every``-th; the other splits stay (held-out evaluation)."""
    if cfg.map_every <= 1:
        return data
    has_split = MAP_SPLIT in data.split
    mapping = data.indices(MAP_SPLIT) if has_split else list(range(len(data)))
    keep = set(mapping[:: cfg.map_every])
    return data.subset([i for i in range(len(data)) if i in keep or (has_split and i not in mapping)])


def mapping_frame_count(data: PosedImages) -> int:
    return len(data.indices(MAP_SPLIT)) if MAP_SPLIT in data.split else len(data)


# ---------------------------------------------------------------- own maps
def _build_recorded(data, out: Path, method: str, config: Any, cfg: BenchmarkConfig, device, progress, log) -> Path:
    from ..mapping import build_map

    before = _created(out)
    t0 = time.perf_counter()
    build_map(data, out, method=method, config=config, device=device, progress=progress, log=log,
              evaluate=cfg.evaluate_maps, max_eval_views=cfg.max_eval_views, overwrite=True)
    wall_s = time.perf_counter() - t0
    created = _created(out)
    if created != before:
        write_json_atomic(build_record_path(out), {"created_unix": created, "build_wall_s": round(wall_s, 3),
                                                   "machine": machine_info(device)})
    return out


def build_method_map(
    data: PosedImages,
    maps_dir: Path,
    method: str,
    cfg: BenchmarkConfig,
    device: Any = "cpu",
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
    name: str = "",
) -> Path:
    """Build (or find) ``method``'s own map of ``data`` in ``maps_dir/<name>`` (default
    name: the method); return it. The config is the method's defaults with
    ``cfg.map_overrides[name]``; a map built now gets ``<name>.build.json`` beside it
    (the build's wall time, evaluation included)."""
    name = name or method
    config = method_config(method, cfg.map_overrides.get(name, []), name=name)
    return _build_recorded(data, Path(maps_dir) / name, method, config, cfg, device, progress, log)


# ---------------------------------------------------------------- shared field
def shared_plan(entries: dict[str, str], cfg: BenchmarkConfig) -> dict[str, str]:
    """Entry name -> the bundle it localizes with in shared-field mode: ``"shared"``, its
    own name (a variant with other component settings) or ``""`` (a method that
    cannot be added to a map: its own map). Per method, ``maps/shared`` holds the
    component of the plain entry (name == method), else of the first one listed."""
    owner: dict[str, str] = {}
    for name, method in entries.items():
        if can_share_field(method) and (method not in owner or name == method):
            owner[method] = name
    plan = {}
    for name, method in entries.items():
        if not can_share_field(method):
            plan[name] = ""
            continue
        first = owner[method]
        same = name == first or component_key(method, cfg.map_overrides.get(name, [])) == component_key(
            method, cfg.map_overrides.get(first, []))
        plan[name] = SHARED_MAP if same else name
    return plan


def add_component(source: Path, method: str, config: Any, out: Path, data: PosedImages, device, progress, log) -> Path:
    """``add_method`` of ``method`` from ``source`` into ``out``; a component trained now
    has its wall time recorded in ``<out>.build.json`` (``components.<method>``)."""
    from ..mapping import add_method

    def created() -> float | None:
        try:
            return read_manifest(out)["components"].get(method, {}).get("created_unix")
        except MapError:
            return None

    before = created()
    t0 = time.perf_counter()
    add_method(source, method, data, config=config, device=device, progress=progress, log=log, out_dir=out)
    wall_s = time.perf_counter() - t0
    now = created()
    if now != before:
        rec = _read_record(out)
        rec.setdefault("components", {})[method] = {"created_unix": now, "add_wall_s": round(wall_s, 3),
                                                    "machine": machine_info(device)}
        write_json_atomic(build_record_path(out), rec)
    return out


def copy_component(source: Path, method: str, out: Path, log: Callable[[str], None] = print) -> Path:
    """Put ``source``'s ``method`` component, byte for byte, into the map ``out`` (which
    must have the same field); nothing to do when ``out`` already has that very one."""
    from ..map_bundle import write_bundle

    src, dst = read_manifest(source), read_manifest(out)
    if _field_sha(source) != _field_sha(out):
        raise MapError(f"{out}: its field is not the one of {source}; cannot copy the {method} component into it")
    entry = src["components"][method]
    name = component_file(method)
    if dst["components"].get(method) == entry and dst["files"].get(name) == src["files"].get(name):
        return out
    files: dict[str, Path] = {FIELD_FILE: Path(out) / FIELD_FILE}
    for m, e in dst["components"].items():
        if m != method:
            files[e["file"]] = Path(out) / e["file"]
    files[name] = Path(source) / entry["file"]
    manifest = {k: v for k, v in dst.items() if k not in ("files", "format_version")}
    manifest["components"] = {**{m: e for m, e in dst["components"].items() if m != method}, method: {**entry, "file": name}}
    write_bundle(out, manifest, files)
    log(f"copied the {method} component of {source} into {out}")
    return out


def build_shared_maps(
    data: PosedImages,
    maps_dir: Path,
    entries: dict[str, str],
    cfg: BenchmarkConfig,
    device: Any = "cpu",
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path | None, dict[str, Path]]:
    """The field and the bundles of the entries that can be added to a map: returns
    (``maps/field`` or None when no entry can, entry name -> its bundle)."""
    plan = shared_plan(entries, cfg)
    if not any(plan.values()):
        return None, {}
    maps_dir = Path(maps_dir)
    log(f"shared field {maps_dir / FIELD_MAP}")
    field = _build_recorded(data, maps_dir / FIELD_MAP, "nerf", field_config(cfg), cfg, device, progress, log)
    field_sha = _field_sha(field)

    def start(out: Path) -> Path:  # a bundle on another field (rebuilt since) starts again from the field
        return out if _field_sha(out) == field_sha else field

    shared = maps_dir / SHARED_MAP
    bundles: dict[str, Path] = {}
    for name, method in entries.items():
        if plan[name] != SHARED_MAP:
            continue
        if method not in {entries[n] for n in bundles}:  # the entries sharing it have the same component settings
            log(f"{method} component in {shared}")
            add_component(start(shared), method, method_config(method, cfg.map_overrides.get(name, []), name=name),
                          shared, data, device, progress, log)
        bundles[name] = shared
    priors = [g for g in map(global_prior_method, cfg.priors) if g]
    for name, method in entries.items():
        if plan[name] not in ("", SHARED_MAP):
            out = maps_dir / name
            log(f"{name} ({method} with other component settings) in {out}")
            add_component(start(out), method, method_config(method, cfg.map_overrides.get(name, []), name=name),
                          out, data, device, progress, log)
            for g in priors:
                if g != method:
                    copy_component(shared, g, out, log)
            bundles[name] = out
    return field, bundles


# ---------------------------------------------------------------- build info
def map_build_info(map_dir: Path) -> dict:
    """Size, build time and held-out quality of a map. ``build_s`` is the wall time the
    benchmark measured when it built this very map, else the manifest's training time."""
    man = read_manifest(map_dir)
    training = man.get("training", {})
    build_s, source, machine = training.get("train_s"), "manifest training.train_s", None
    rec = _read_record(Path(map_dir))
    if rec.get("created_unix") is not None and rec.get("created_unix") == man.get("created_unix"):
        build_s, source, machine = rec.get("build_wall_s"), "benchmark wall time", rec.get("machine")
    metrics = man.get("metrics", {})
    return {
        "path": str(map_dir),
        "method": man["method"],
        "created_unix": man.get("created_unix"),
        "size_mb": round(map_size_bytes(map_dir) / BYTES_PER_MB, 3),
        "build_s": build_s,
        "build_s_source": source,
        "build_machine": machine,
        "train_s": training.get("train_s"),
        "train_steps": training.get("steps"),
        "map_quality": {k: v for k, v in metrics.items() if k != "per_view"},
    }


def component_build_info(bundle_dir: Path, method: str, field_info: dict) -> dict:
    """:func:`map_build_info` of one component of a shared-field bundle: its size is the
    field's plus its own file, its build time the component's training (``add_method``
    wall time when the benchmark measured it); the field's build time is beside it."""
    man = read_manifest(bundle_dir)
    comp = man["components"][method]
    training = comp.get("training", {})
    build_s, source, machine = training.get("train_s"), "manifest component training.train_s", None
    rec = _read_record(Path(bundle_dir)).get("components", {}).get(method, {})
    if rec.get("created_unix") is not None and rec.get("created_unix") == comp.get("created_unix"):
        build_s, source, machine = rec.get("add_wall_s"), "benchmark wall time (add-method)", rec.get("machine")
    size = man["files"][FIELD_FILE]["bytes"] + man["files"][comp["file"]]["bytes"]
    return {
        "path": str(bundle_dir),
        "method": method,
        "component": method,
        "created_unix": comp.get("created_unix"),
        "size_mb": round(size / BYTES_PER_MB, 3),
        "build_s": build_s,
        "build_s_source": source,
        "build_machine": machine,
        "train_s": training.get("train_s"),
        "train_steps": training.get("steps"),
        "field_build_s": field_info.get("build_s"),
        "map_quality": field_info.get("map_quality", {}),
    }
