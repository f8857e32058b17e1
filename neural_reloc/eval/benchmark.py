"""``neural-reloc benchmark``: methods side by side on the same query frames.

A pipeline of steps (hloc style): each takes typed inputs, returns where it wrote its
output, and skips work a previous run finished.

1. :func:`build_method_map`, per dataset and method: the map of the train split in
   ``OUT/<dataset>/maps/<method>`` (:func:`neural_reloc.mapping.build_map`, which skips
   a map of the same method, config and data), and the build's wall time beside it in
   ``OUT/<dataset>/maps/<method>.build.json``.
2. :func:`localize_queries`, per method and prior: the query split localized into
   ``OUT/<dataset>/<method>/<prior>.json`` (records, summary and the identity that makes
   it reusable: the map's checksums and creation time, the relocalizer overrides, the
   prior config and the query frames). Skipped when the identity matches, so changing
   a relocalizer override (``--reloc-set``) reruns this step, never the map build.
3. :func:`summarize_dataset` and :func:`write_benchmark`: ``OUT/benchmark.json``, a
   markdown table (:func:`~neural_reloc.eval.benchmark_report.format_markdown`) and
   ``OUT/report.html``.

Metrics, the scene scale for relative recall and the failure causes:
:mod:`neural_reloc.eval.benchmark_metrics`; the HTML report and the markdown table:
:mod:`neural_reloc.eval.benchmark_report`. The output folder::

    OUT/benchmark.json, OUT/report.html
    OUT/<dataset>/maps/<method>/             the map bundle
    OUT/<dataset>/maps/<method>.build.json   its build wall time
    OUT/<dataset>/<method>/<prior>.json      records, summary, identity
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_io import ConfigError, merge, parse_dotted, to_dict
from ..data.posed_images import PosedImages
from ..localization import PRIOR_MODES, LocalizeDatasetConfig, localize_dataset, summarize_records
from ..map_bundle import MapError, map_size_bytes, read_manifest
from .benchmark_metrics import MAP_SPLIT, frame_rows, method_metrics, scene_scale
from .io import write_json_atomic

SUMMARY_NAME = "benchmark.json"
REPORT_NAME = "report.html"
MAPS_DIR = "maps"
BUILD_RECORD_SUFFIX = ".build.json"
BYTES_PER_MB = 1e6


@dataclass
class BenchmarkConfig:
    """What ``neural-reloc benchmark`` runs and how it scores it (defaults in one place)."""

    # Registered methods that relocalize (neural_reloc.methods.registry).
    methods: tuple[str, ...] = ("crossfire",)
    # Priors each method starts from: localization.PRIOR_MODES (retrieval, perturbed, constant).
    priors: tuple[str, ...] = ("retrieval",)
    # Query frames; maps are built from the "train" split.
    split: str = "test"
    # Localize at most this many query frames per dataset (0: all).
    limit: int = 0
    # "perturbed" prior: the ground truth moved by exactly this much (dataset units) ...
    perturb_m: float = 0.3
    # ... and rotated by exactly this many degrees about a random axis (seeded).
    perturb_deg: float = 15.0
    # Seed of those perturbations.
    seed: int = 0
    # "constant" prior: the map's reference view used for every frame (-1: the central one).
    constant_reference: int = -1
    # Untimed localizations of the first query frame before each timed run, so that
    # first-call costs (allocations, kernel selection) stay out of the latency figures.
    warmup_frames: int = 1
    # Render the held-out views after a build (map PSNR / depth error in the report) ...
    evaluate_maps: bool = True
    # ... at most this many of them (0: all).
    max_eval_views: int = 8
    # Absolute recall thresholds: (translation in dataset units, normally metres, degrees).
    recall_thresholds: tuple[tuple[float, float], ...] = ((0.01, 1.0), (0.02, 2.0), (0.05, 5.0))
    # Relative recall thresholds: (fraction of the scene scale, degrees), for scenes in
    # arbitrary units (e.g. 0.005 = 0.5% of the median query depth).
    relative_recall_thresholds: tuple[tuple[float, float], ...] = ((0.005, 1.0), (0.01, 2.0), (0.025, 5.0))
    # The scene scale is computed over at most this many query frames, evenly spaced (0: all).
    scale_max_frames: int = 100
    # Failures by cause are counted over the frames that miss recall at these.
    failure_t_m: float = 0.05
    failure_r_deg: float = 5.0
    # A prior further from the truth than either is "wrong place" (outside the basin).
    basin_t_m: float = 1.0
    basin_r_deg: float = 45.0
    # Per method: map config overrides ("key.path=value", relative to the method config;
    # part of the map's identity: a change rebuilds the map).
    map_overrides: dict[str, list[str]] = field(default_factory=dict)
    # Per method: relocalizer overrides ("localization.max_iterations=2"); they never
    # rebuild a map, only relocalize again.
    reloc_overrides: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------- configuration
def parse_method_overrides(items: Sequence[str], option: str = "--set") -> dict[str, list[str]]:
    """``["crossfire:map.train.steps=600", ...]`` -> ``{"crossfire": ["map.train.steps=600"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        method, sep, assignment = item.partition(":")
        key = assignment.split("=", 1)[0].strip()
        if not sep or not method.strip() or "=" in method or "=" not in assignment or not key:
            raise ConfigError(
                f"{option} {item!r}: expected METHOD:key.path=value (the method name before the colon), "
                "e.g. crossfire:map.train.steps=600"
            )
        out.setdefault(method.strip(), []).append(assignment.strip())
    return out


def add_method_overrides(cfg: BenchmarkConfig, map_items: Sequence[str] = (), reloc_items: Sequence[str] = ()) -> BenchmarkConfig:
    """``cfg`` with ``--set`` / ``--reloc-set`` items (METHOD:key=value) appended to the
    overrides it already has (e.g. from a config file), which they therefore follow."""
    for name, items, option in (("map_overrides", map_items, "--set"), ("reloc_overrides", reloc_items, "--reloc-set")):
        table = getattr(cfg, name)
        if not isinstance(table, dict):
            raise ConfigError(f"benchmark config {name}: expected a mapping method -> list of overrides, got {table!r}")
        for method, assignments in parse_method_overrides(items, option).items():
            table[method] = [*table.get(method, []), *assignments]
    return cfg


def method_config(method: str, overrides: Sequence[str] = (), what: str = "map override") -> Any:
    """The method's default config with ``key.path=value`` overrides; errors name the method."""
    from ..methods.registry import get_method

    cfg = get_method(method).config_factory()
    if not overrides:
        return cfg
    try:
        return merge(cfg, parse_dotted(list(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{what} of method {method!r} ({', '.join(overrides)}): {e}") from None


def validate_config(cfg: BenchmarkConfig) -> None:
    """Fail before any work on unknown or map-only methods, unknown priors, overrides
    for methods that are not benchmarked, invalid override keys and bad thresholds."""
    from ..methods.registry import available_methods, get_method

    if not cfg.methods:
        raise ConfigError("no methods to benchmark (--methods)")
    known = available_methods()
    relocalizing = [m for m in known if get_method(m).relocalizer_factory is not None]
    for m in cfg.methods:
        if m not in known:
            raise ConfigError(f"method {m!r} is not registered; available: {', '.join(known)}")
        if m not in relocalizing:
            raise ConfigError(
                f"method {m!r} builds maps but cannot relocalize; methods that relocalize: {', '.join(relocalizing)}"
            )
    if len(set(cfg.methods)) != len(cfg.methods):
        raise ConfigError(f"methods listed twice: {', '.join(cfg.methods)}")
    if not cfg.priors:
        raise ConfigError("no priors to benchmark (--priors)")
    for p in cfg.priors:
        if p not in PRIOR_MODES:
            raise ConfigError(f"prior {p!r} is not one of {', '.join(PRIOR_MODES)}")
    for what, table in (("map override", cfg.map_overrides), ("relocalizer override", cfg.reloc_overrides)):
        for m, overrides in table.items():
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise ConfigError(f"{what}s of method {m!r}: expected a list of 'key.path=value' strings, got {overrides!r}")
            if m not in cfg.methods:
                raise ConfigError(f"{what} {m}:{overrides[0]} names method {m!r}, which is not benchmarked "
                                  f"(methods: {', '.join(cfg.methods)})")
            method_config(m, overrides, what)
    for name in ("recall_thresholds", "relative_recall_thresholds"):
        for i, pair in enumerate(getattr(cfg, name)):
            if len(pair) != 2:
                raise ConfigError(f"benchmark config {name}[{i}]: expected [translation, degrees], got {list(pair)}")
    positive = {"failure_t_m": cfg.failure_t_m, "failure_r_deg": cfg.failure_r_deg,
                "basin_t_m": cfg.basin_t_m, "basin_r_deg": cfg.basin_r_deg}
    positive |= {f"recall_thresholds[{i}]": min(t) for i, t in enumerate(cfg.recall_thresholds)}
    positive |= {f"relative_recall_thresholds[{i}]": min(t) for i, t in enumerate(cfg.relative_recall_thresholds)}
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f"benchmark config {name}: must be > 0, got {value}")
    for name in ("limit", "warmup_frames", "max_eval_views", "scale_max_frames"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"benchmark config {name}: must be >= 0, got {getattr(cfg, name)}")


def dataset_labels(paths: Sequence[str | Path]) -> list[str]:
    """A folder name per dataset (``transforms.json`` -> its folder), file-system safe,
    with as many parent folders joined in (``seed0_dense``) as it takes to tell the
    datasets apart; a suffix ``-2``, ``-3`` for the same folder given twice."""
    parts = []
    for p in map(Path, paths):
        base = p.parent if p.is_file() else p
        parts.append([re.sub(r"[^A-Za-z0-9._-]+", "_", c) for c in base.resolve().parts[1:]] or ["dataset"])
    depth = [1] * len(parts)
    while True:
        labels = ["_".join(c[-d:]) for c, d in zip(parts, depth)]
        clash = [
            i for i, lab in enumerate(labels)
            if depth[i] < len(parts[i]) and any(lab == other and parts[i] != parts[j] for j, other in enumerate(labels))
        ]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    out: list[str] = []
    for label in labels:
        unique, k = label, 2
        while unique in out:
            unique, k = f"{label}-{k}", k + 1
        out.append(unique)
    return out


def query_indices(data: PosedImages, cfg: BenchmarkConfig) -> list[int]:
    """The query frames, as localize_dataset picks them (split, then limit)."""
    idx = data.indices(None if cfg.split in ("", "all") else cfg.split)
    return idx[: cfg.limit] if cfg.limit else idx


# ---------------------------------------------------------------- step 1: maps
def build_record_path(map_dir: Path) -> Path:
    return map_dir.parent / f"{map_dir.name}{BUILD_RECORD_SUFFIX}"


def _created(map_dir: Path) -> float | None:
    try:
        return read_manifest(map_dir).get("created_unix")
    except MapError:
        return None


def build_method_map(
    data: PosedImages,
    maps_dir: Path,
    method: str,
    cfg: BenchmarkConfig,
    device: Any = "cpu",
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Build (or find) ``method``'s map of ``data`` in ``maps_dir/<method>``; return it.

    The method config is its defaults with ``cfg.map_overrides[method]``. A map built
    now gets ``<method>.build.json`` beside it (the build's wall time, evaluation
    included), which :func:`map_build_info` reads back on later runs."""
    from ..mapping import build_map

    config = method_config(method, cfg.map_overrides.get(method, []))
    out = Path(maps_dir) / method
    before = _created(out)
    t0 = time.perf_counter()
    build_map(data, out, method=method, config=config, device=device, progress=progress, log=log,
              evaluate=cfg.evaluate_maps, max_eval_views=cfg.max_eval_views, overwrite=True)
    wall_s = time.perf_counter() - t0
    created = _created(out)
    if created != before:
        write_json_atomic(build_record_path(out), {"created_unix": created, "build_wall_s": round(wall_s, 3)})
    return out


def map_build_info(map_dir: Path) -> dict:
    """Size, build time and held-out quality of a map. ``build_s`` is the wall time the
    benchmark measured when it built this very map, else the manifest's training time."""
    man = read_manifest(map_dir)
    training = man.get("training", {})
    build_s, source = training.get("train_s"), "manifest training.train_s"
    rec_path = build_record_path(Path(map_dir))
    if rec_path.is_file():
        rec = json.loads(rec_path.read_text())
        if rec.get("created_unix") == man.get("created_unix"):
            build_s, source = rec.get("build_wall_s"), "benchmark wall time"
    metrics = man.get("metrics", {})
    return {
        "path": str(map_dir),
        "method": man["method"],
        "created_unix": man.get("created_unix"),
        "size_mb": round(map_size_bytes(map_dir) / BYTES_PER_MB, 3),
        "build_s": build_s,
        "build_s_source": source,
        "train_s": training.get("train_s"),
        "train_steps": training.get("steps"),
        "map_quality": {k: v for k, v in metrics.items() if k != "per_view"},
    }


# ---------------------------------------------------------------- step 2: localization
def localize_config(cfg: BenchmarkConfig, prior: str) -> LocalizeDatasetConfig:
    return LocalizeDatasetConfig(split=cfg.split, prior=prior, perturb_m=cfg.perturb_m, perturb_deg=cfg.perturb_deg,
                                 seed=cfg.seed, constant_reference=cfg.constant_reference, limit=cfg.limit)


def localization_identity(map_dir: Path, data: PosedImages, loc: LocalizeDatasetConfig, reloc_overrides: Sequence[str]) -> dict:
    """What a localization result depends on (JSON-normalized for comparison)."""
    man = read_manifest(map_dir)
    ident = {
        "map": {
            "method": man["method"],
            "created_unix": man.get("created_unix"),
            "sha256": {name: meta.get("sha256") for name, meta in man["files"].items()},
        },
        "reloc_overrides": parse_dotted(list(reloc_overrides)),
        "localize": to_dict(loc),
        "queries": data.fingerprint(None if loc.split in ("", "all") else loc.split),
    }
    return json.loads(json.dumps(ident))


def _stored_identity(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()).get("identity")
    except (OSError, ValueError, AttributeError):
        return None


def localize_queries(
    map_dir: Path,
    data: PosedImages,
    prior: str,
    out_json: Path,
    cfg: BenchmarkConfig,
    load_relocalizer: Callable[[], Any],
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Localize the query frames from ``prior`` into ``out_json`` (atomically); return it.

    ``load_relocalizer()`` gives the map's relocalizer (with the method's relocalizer
    overrides); it is only called when the result is not already there."""
    method = read_manifest(map_dir)["method"]
    loc = localize_config(cfg, prior)
    overrides = cfg.reloc_overrides.get(method, [])
    ident = localization_identity(map_dir, data, loc, overrides)
    if Path(out_json).is_file() and _stored_identity(Path(out_json)) == ident:
        log(f"{out_json} is up to date (same map, overrides, prior and queries): skipping the localization")
        return Path(out_json)
    reloc = load_relocalizer()
    first = query_indices(data, cfg)[0]
    for _ in range(cfg.warmup_frames):
        reloc.localize(data.image(first), data.camera(first), None if prior == "retrieval" else _warmup_prior(data, first))
    t0 = time.perf_counter()
    records = localize_dataset(reloc, data, loc, progress=progress)
    wall_s = time.perf_counter() - t0
    write_json_atomic(Path(out_json), {
        "identity": ident,
        "method": method,
        "prior": prior,
        "map": str(map_dir),
        "data": data.source,
        "wall_s": round(wall_s, 3),
        "summary": summarize_records(records),
        "frames": records,
    })
    log(f"wrote {out_json}: {len(records)} frames in {wall_s:.1f} s")
    return Path(out_json)


def _warmup_prior(data: PosedImages, i: int):
    from ..methods.base import PosePrior

    return PosePrior(data.w2c_opencv(i), source="given")

# ---------------------------------------------------------------- step 3: summary
def summarize_dataset(
    label: str,
    data: PosedImages,
    maps: dict[str, Path],
    runs: dict[tuple[str, str], Path],
    cfg: BenchmarkConfig,
) -> dict:
    """One dataset's part of benchmark.json from the maps and localization files."""
    scale, scale_source = scene_scale(data, query_indices(data, cfg), cfg.scale_max_frames)
    results: dict[str, dict] = {}
    for (method, prior), path in runs.items():
        run = json.loads(Path(path).read_text())
        entry = method_metrics(run["frames"], scale, cfg)
        entry.update(file=str(path), wall_s=run.get("wall_s"), per_frame=frame_rows(run["frames"], scale, cfg))
        results.setdefault(method, {})[prior] = entry
    return {
        "label": label,
        "data": data.source,
        "query_split": cfg.split,
        "query_frames": len(query_indices(data, cfg)),
        "scale": scale,
        "scale_source": scale_source,
        "maps": {m: map_build_info(p) for m, p in maps.items()},
        "results": results,
    }


def write_benchmark(out: Path, datasets: list[dict], cfg: BenchmarkConfig) -> Path:
    """``OUT/benchmark.json`` and ``OUT/report.html``, atomically; returns the JSON path."""
    from .benchmark_report import write_benchmark_report

    summary = {"config": to_dict(cfg), "created_unix": time.time(), "datasets": datasets}
    path = Path(out) / SUMMARY_NAME
    write_json_atomic(path, summary)
    write_benchmark_report(summary, Path(out) / REPORT_NAME)
    return path


# ---------------------------------------------------------------- the whole run
def load_datasets(data_paths: Sequence[str | Path], cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> list[tuple[str, PosedImages]]:
    """(folder label, dataset) of each path; a missing or empty query split fails here,
    before any build. Warns when query frames are also mapping frames."""
    from ..data import load_dataset

    loaded = []
    for label, path in zip(dataset_labels(data_paths), data_paths):
        data = load_dataset(path)
        query = set(query_indices(data, cfg))
        shared = query & set(data.indices(MAP_SPLIT) if MAP_SPLIT in data.split else range(len(data)))
        if shared:
            log(f"warning: {data.source}: {len(shared)} query frames are also mapping frames (the maps are built "
                f"from the {MAP_SPLIT!r} split, or from all frames when there is none)")
        loaded.append((label, data))
    return loaded


def run_benchmark(
    data_paths: Sequence[str | Path],
    out: str | Path,
    cfg: BenchmarkConfig,
    device: Any = "cpu",
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """All steps for every dataset; returns the summary written to ``OUT/benchmark.json``."""
    from ..map_loading import load_relocalizer

    validate_config(cfg)
    out = Path(out)
    datasets = []
    for label, data in load_datasets(data_paths, cfg, log):
        root = out / label
        maps = {}
        for method in cfg.methods:
            log(f"[{label}] map of {method}")
            maps[method] = build_method_map(data, root / MAPS_DIR, method, cfg, device, progress, log)
        runs: dict[tuple[str, str], Path] = {}
        for method, map_dir in maps.items():
            # loaded once per method, and only if some prior's result is not there yet
            load = functools.cache(functools.partial(load_relocalizer, map_dir, device, cfg.reloc_overrides.get(method) or None))
            for prior in cfg.priors:
                log(f"[{label}] {method}, {prior} prior")
                runs[(method, prior)] = localize_queries(map_dir, data, prior, root / method / f"{prior}.json", cfg, load, progress, log)
        datasets.append(summarize_dataset(label, data, maps, runs, cfg))
    path = write_benchmark(out, datasets, cfg)
    log(f"wrote {path} and {out / REPORT_NAME}")
    return json.loads(path.read_text())
