"""``neural-reloc benchmark``: methods side by side on the same query frames.

A pipeline of steps (hloc style): each takes typed inputs, returns where it wrote its
output, and skips work a previous run finished. What runs: a
:class:`~neural_reloc.eval.benchmark_config.BenchmarkConfig` (entries ``NAME`` or
``NAME=METHOD``, priors, overrides per entry name, checks).

1. The maps (:mod:`neural_reloc.eval.benchmark_maps`), per dataset: by default each
   entry's own map of the train split in ``OUT/<dataset>/maps/<name>``, with the
   build's wall time in ``maps/<name>.build.json``. With ``shared_field``: one neural
   field ``maps/field``, and ``maps/shared`` holding it + the component of each method
   that can be added to a map (a variant with other component settings: ``maps/<name>``;
   a method that cannot be added, e.g. classical: its own map as by default).
2. :func:`localize_queries`, per entry and prior: the query split localized into
   ``OUT/<dataset>/<name>/<prior>.json`` (records, summary and the identity that makes
   it reusable: the map's checksums and creation time, or in a shared bundle those of
   the field and the components used; the relocalizer overrides, the prior config and
   the query frames). Skipped when the identity matches, so changing a relocalizer
   override (``--reloc-set``) reruns this step, never the map build. A ``global:METHOD``
   prior localizes without a prior given, METHOD's component of the same bundle giving
   the first pose (``load_relocalizer(..., global_prior=METHOD)``).
3. :func:`summarize_dataset` and :func:`write_benchmark`: ``OUT/benchmark.json``, a
   markdown table (:func:`~neural_reloc.eval.benchmark_report.format_markdown`) and
   ``OUT/report.html``.

Metrics, the scene scale for relative recall and the failure causes:
:mod:`neural_reloc.eval.benchmark_metrics`; the HTML report and the markdown table:
:mod:`neural_reloc.eval.benchmark_report`. The output folder (``<dataset>@everyN``
for maps from every N-th mapping frame, ``map_every``)::

    OUT/benchmark.json, OUT/report.html
    OUT/<dataset>/maps/<name>/               an entry's own map
    OUT/<dataset>/maps/<name>.build.json     its build wall time
    OUT/<dataset>/maps/field, maps/shared    the shared field and its bundle (+ .build.json)
    OUT/<dataset>/<name>/<prior>.json        records, summary, identity (global:kscr -> global-kscr.json)
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config_io import parse_dotted, to_dict
from ..data.posed_images import PosedImages
from ..device import machine_info
from ..localization import LocalizeDatasetConfig, localize_dataset, summarize_records
from ..map_bundle import FIELD_FILE, read_manifest
from .benchmark_config import (  # noqa: F401 - re-exported: the benchmark's configuration API
    BenchmarkConfig,
    add_method_overrides,
    global_prior_method,
    method_config,
    method_entries,
    parse_method_overrides,
    prior_file_stem,
    validate_config,
)
from .benchmark_maps import (  # noqa: F401 - re-exported: step 1
    BUILD_RECORD_SUFFIX,
    MAPS_DIR,
    build_method_map,
    build_record_path,
    build_shared_maps,
    component_build_info,
    map_build_info,
    mapping_data,
    mapping_frame_count,
)
from .benchmark_metrics import MAP_SPLIT, frame_rows, method_metrics, scene_scale
from .io import write_json_atomic

SUMMARY_NAME = "benchmark.json"
REPORT_NAME = "report.html"
#: Label suffix of a dataset whose maps use every N-th mapping frame (``room@every10``).
MAP_EVERY_SUFFIX = "@every"
#: Relocalizer settings live under this section of a method config.
LOCALIZATION_SECTION = "localization."


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


# ---------------------------------------------------------------- step 2: localization
def localize_config(cfg: BenchmarkConfig, prior: str) -> LocalizeDatasetConfig:
    """``global:METHOD`` localizes as ``retrieval`` (no prior given)."""
    mode = "retrieval" if global_prior_method(prior) else prior
    return LocalizeDatasetConfig(split=cfg.split, prior=mode, perturb_m=cfg.perturb_m, perturb_deg=cfg.perturb_deg,
                                 seed=cfg.seed, constant_reference=cfg.constant_reference, limit=cfg.limit)


def entry_reloc_overrides(cfg: BenchmarkConfig, name: str, in_bundle: bool = False) -> list[str]:
    """An entry's relocalizer overrides. In a shared bundle its component may be another
    entry's (same build settings): its own ``localization.*`` map overrides come first."""
    own = [o for o in cfg.map_overrides.get(name, []) if o.startswith(LOCALIZATION_SECTION)] if in_bundle else []
    return [*own, *cfg.reloc_overrides.get(name, [])]


def localization_identity(
    map_dir: Path,
    data: PosedImages,
    loc: LocalizeDatasetConfig,
    reloc_overrides: Sequence[str],
    component: str = "",
    global_prior: str = "",
) -> dict:
    """What a localization result depends on (JSON-normalized for comparison). An own
    map counts as a whole; in a shared bundle (``component`` given) only the field and
    the components used count, so adding another method to the bundle reruns nothing."""
    man = read_manifest(map_dir)
    if component:
        used = [component, *([global_prior] if global_prior else [])]
        files = [FIELD_FILE, *(man["components"][m]["file"] for m in used)]
        map_ident = {
            "method": component,
            "global_prior": global_prior,
            "created_unix": {m: man["components"][m].get("created_unix") for m in used},
            "sha256": {f: man["files"][f]["sha256"] for f in files},
        }
    else:
        map_ident = {
            "method": man["method"],
            "created_unix": man.get("created_unix"),
            "sha256": {name: meta.get("sha256") for name, meta in man["files"].items()},
        }
    ident = {
        "map": map_ident,
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
    name: str = "",
    component: str = "",
) -> Path:
    """Localize the query frames from ``prior`` into ``out_json`` (atomically); return it.

    ``name``: the entry (default: the map's method), whose relocalizer overrides apply;
    ``component``: the method of a shared bundle that localizes ("" for an own map).
    ``load_relocalizer()`` gives the relocalizer (with those overrides and the global
    prior); it is only called when the result is not already there."""
    method = component or read_manifest(map_dir)["method"]
    name = name or method
    loc = localize_config(cfg, prior)
    overrides = entry_reloc_overrides(cfg, name, bool(component))
    ident = localization_identity(map_dir, data, loc, overrides, component, global_prior_method(prior))
    if Path(out_json).is_file() and _stored_identity(Path(out_json)) == ident:
        log(f"{out_json} is up to date (same map, overrides, prior and queries): skipping the localization")
        return Path(out_json)
    reloc = load_relocalizer()
    first = query_indices(data, cfg)[0]
    for _ in range(cfg.warmup_frames):
        reloc.localize(data.image(first), data.camera(first), None if loc.prior == "retrieval" else _warmup_prior(data, first))
    t0 = time.perf_counter()
    records = localize_dataset(reloc, data, loc, progress=progress)
    wall_s = time.perf_counter() - t0
    write_json_atomic(Path(out_json), {
        "identity": ident,
        "name": name,
        "method": method,
        "prior": prior,
        "map": str(map_dir),
        "data": data.source,
        "wall_s": round(wall_s, 3),
        "machine": machine_info(getattr(reloc, "device", None)),
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
    maps: dict[str, dict],
    runs: dict[tuple[str, str], Path],
    cfg: BenchmarkConfig,
    extra: dict | None = None,
) -> dict:
    """One dataset's part of benchmark.json from the maps' build info (entry name ->
    :func:`map_build_info` / :func:`component_build_info`) and the localization files."""
    scale, scale_source = scene_scale(data, query_indices(data, cfg), cfg.scale_max_frames)
    results: dict[str, dict] = {}
    for (name, prior), path in runs.items():
        run = json.loads(Path(path).read_text())
        entry = method_metrics(run["frames"], scale, cfg)
        entry.update(file=str(path), wall_s=run.get("wall_s"), machine=run.get("machine"),
                     per_frame=frame_rows(run["frames"], scale, cfg))
        results.setdefault(name, {})[prior] = entry
    return {
        "label": label,
        "data": data.source,
        "query_split": cfg.split,
        "query_frames": len(query_indices(data, cfg)),
        "scale": scale,
        "scale_source": scale_source,
        "maps": maps,
        "results": results,
        **(extra or {}),
    }


def write_benchmark(out: Path, datasets: list[dict], cfg: BenchmarkConfig, device: Any = None) -> Path:
    """``OUT/benchmark.json`` and ``OUT/report.html``, atomically; returns the JSON path.
    The summary's ``machine`` is this process's (:func:`~neural_reloc.device.machine_info`
    on ``device``); each result and map build carries the machine that measured it, which
    differs where a result was reused from an earlier run."""
    from .benchmark_report import write_benchmark_report

    summary = {"config": to_dict(cfg), "created_unix": time.time(), "machine": machine_info(device),
               "datasets": datasets}
    path = Path(out) / SUMMARY_NAME
    write_json_atomic(path, summary)
    write_benchmark_report(summary, Path(out) / REPORT_NAME)
    return path


# ---------------------------------------------------------------- the whole run
def load_datasets(data_paths: Sequence[str | Path], cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> list[tuple[str, PosedImages]]:
    """(folder label, dataset) of each path; a missing or empty query split fails here,
    before any build. Warns when query frames are also mapping frames. With
    ``map_every`` > 1 the labels end in ``@everyN``."""
    from ..data import load_dataset

    suffix = f"{MAP_EVERY_SUFFIX}{cfg.map_every}" if cfg.map_every > 1 else ""
    loaded = []
    for label, path in zip(dataset_labels(data_paths), data_paths):
        data = load_dataset(path)
        query = set(query_indices(data, cfg))
        shared = query & set(data.indices(MAP_SPLIT) if MAP_SPLIT in data.split else range(len(data)))
        if shared:
            log(f"warning: {data.source}: {len(shared)} query frames are also mapping frames (the maps are built "
                f"from the {MAP_SPLIT!r} split, or from all frames when there is none)")
        loaded.append((label + suffix, data))
    return loaded


def _skip_reason(name: str, method: str, prior: str, in_bundle: bool) -> str:
    """Why a ``global:`` run of an entry is not made ("" when it is)."""
    g = global_prior_method(prior)
    if not g:
        return ""
    if g == method:
        return f"{name} is {g} itself (its retrieval run is the same)"
    if not in_bundle:
        return f"{name} ({method}) has its own map, without a {g} component"
    return ""


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
    entries = method_entries(cfg)
    out = Path(out)
    datasets = []
    for label, data in load_datasets(data_paths, cfg, log):
        root = out / label
        map_data = mapping_data(data, cfg)
        field, bundles = None, {}
        if cfg.shared_field:
            field, bundles = build_shared_maps(map_data, root / MAPS_DIR, entries, cfg, device, progress, log)
        maps = dict(bundles)
        for name, method in entries.items():
            if name not in maps:
                log(f"[{label}] map of {name}")
                maps[name] = build_method_map(map_data, root / MAPS_DIR, method, cfg, device, progress, log, name=name)
        field_info = map_build_info(field) if field is not None else None
        infos = {}
        runs: dict[tuple[str, str], Path] = {}
        skipped = []
        for name, method in entries.items():
            map_dir, in_bundle = maps[name], name in bundles
            component = method if in_bundle else ""
            infos[name] = component_build_info(map_dir, method, field_info) if in_bundle else map_build_info(map_dir)
            overrides = entry_reloc_overrides(cfg, name, in_bundle) or None
            loads: dict[str, Callable] = {}  # one relocalizer per global prior, loaded only if a result is missing
            for prior in cfg.priors:
                reason = _skip_reason(name, method, prior, in_bundle)
                if reason:
                    log(f"[{label}] {name}, {prior} prior: skipped ({reason})")
                    skipped.append({"name": name, "prior": prior, "reason": reason})
                    continue
                g = global_prior_method(prior)
                load = loads.setdefault(g, functools.cache(functools.partial(
                    load_relocalizer, map_dir, device, overrides, method=method, global_prior=g)))
                log(f"[{label}] {name}, {prior} prior")
                runs[(name, prior)] = localize_queries(map_dir, data, prior, root / name / f"{prior_file_stem(prior)}.json",
                                                       cfg, load, progress, log, name=name, component=component)
        extra = {"map_every": cfg.map_every, "mapping_frames": mapping_frame_count(map_data),
                 "field": field_info, "skipped": skipped}
        datasets.append(summarize_dataset(label, data, infos, runs, cfg, extra))
    path = write_benchmark(out, datasets, cfg, device)
    log(f"wrote {path} and {out / REPORT_NAME}")
    return json.loads(path.read_text())
