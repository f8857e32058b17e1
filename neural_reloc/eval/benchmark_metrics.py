"""The benchmark's metrics over per-frame records (:func:`neural_reloc.eval.metrics.frame_record`
plus ``total_latency_ms``), for :mod:`neural_reloc.eval.benchmark`.

Over ALL query frames (a failure counts as a miss; a median over the successful frames
alone would hide failures), except the median errors, which are over the localized
frames, next to the success rate:

* success rate; median translation / rotation error of the localized frames;
* recall at absolute thresholds (``recall_thresholds``, metres and degrees);
* recall at *relative* thresholds (``relative_recall_thresholds``: a fraction of the
  scene scale and degrees), for scenes in arbitrary units. The scene scale
  (:func:`scene_scale`) is the median ground-truth depth of the query frames (the
  median of each frame's valid depth, then the median over frames) when the dataset
  has depth, else the median distance from the query cameras to the mapping cameras'
  focus point (:func:`neural_reloc.nerf.scene.focus_point`). Every frame's error is
  also given as a fraction of it (``t_err_rel``);
* latency p50/p95, total and per stage; the prior's median error;
* failures by cause (:func:`classify_failure`) among the frames that miss recall at
  (``failure_t_m``, ``failure_r_deg``): ``wrong_place`` (the prior the method started
  from was beyond the basin ``basin_t_m`` / ``basin_r_deg``), ``did_not_converge`` (no
  estimate from a prior within the basin, or an unknown prior) and
  ``converged_but_off`` (an estimate beyond the thresholds).

``cfg`` is a :class:`~neural_reloc.eval.benchmark.BenchmarkConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..data.posed_images import PosedImages
from .metrics import _num, summarize

if TYPE_CHECKING:
    from .benchmark import BenchmarkConfig

#: Failure causes, in the order reports list them.
WRONG_PLACE = "wrong_place"
DID_NOT_CONVERGE = "did_not_converge"
CONVERGED_BUT_OFF = "converged_but_off"
FAILURE_CAUSES = (WRONG_PLACE, DID_NOT_CONVERGE, CONVERGED_BUT_OFF)
#: The split the maps are built from (build_map uses all frames when there is none).
MAP_SPLIT = "train"


def scene_scale(data: PosedImages, query: Sequence[int], max_frames: int = 0) -> tuple[float | None, str]:
    """(scale, how it was measured): the median ground-truth depth of the query frames
    if the dataset has depth, else the median distance from the query cameras to the
    focus point of the mapping cameras. None when neither gives a positive value."""
    from ..nerf.scene import focus_point

    idx = list(query)
    if max_frames and len(idx) > max_frames:
        idx = [idx[int(k * len(idx) / max_frames)] for k in range(max_frames)]
    if data.depth_paths is not None and idx:
        medians = []
        for i in idx:
            d = data.depth(i)
            valid = d[np.isfinite(d) & (d > 0)]
            if valid.size:
                medians.append(float(np.median(valid)))
        if medians and np.median(medians) > 0:
            return float(np.median(medians)), f"median ground-truth depth of {len(medians)} query frames"
    mapping = data.indices(MAP_SPLIT) if MAP_SPLIT in data.split else list(range(len(data)))
    centers = data.camera_centers()
    axes = -data.c2w_opengl[mapping, :3, 2]  # OpenGL cameras look along -z
    focus = focus_point(centers[mapping], axes)
    dist = float(np.median(np.linalg.norm(centers[idx] - focus, axis=1))) if idx else 0.0
    if dist > 0 and np.isfinite(dist):
        return dist, f"median distance of {len(idx)} query cameras to the mapping cameras' focus point"
    return None, "unknown (no depth, query cameras at the focus point)"


def _localized(rec: dict) -> bool:
    return bool(rec.get("success")) and rec.get("t_err_m") is not None and rec.get("r_err_deg") is not None


def _within(rec: dict, t: float, r: float) -> bool:
    return _localized(rec) and rec["t_err_m"] <= t and rec["r_err_deg"] <= r


def classify_failure(rec: dict, cfg: BenchmarkConfig) -> str | None:
    """None for a frame within (failure_t_m, failure_r_deg) of the truth (or without
    ground truth), else its cause: ``wrong_place`` when the prior was outside the basin,
    ``did_not_converge`` when there is no estimate, ``converged_but_off`` otherwise."""
    if not rec.get("has_gt", True) or _within(rec, cfg.failure_t_m, cfg.failure_r_deg):
        return None
    pt, pr = rec.get("prior_t_err_m"), rec.get("prior_r_err_deg")
    if (pt is not None and pt > cfg.basin_t_m) or (pr is not None and pr > cfg.basin_r_deg):
        return WRONG_PLACE
    return CONVERGED_BUT_OFF if _localized(rec) else DID_NOT_CONVERGE


def failures_by_cause(records: Sequence[dict], cfg: BenchmarkConfig) -> dict:
    """Counts and frame names per cause; ``prior_unknown``: failed frames whose prior
    error is not known (never counted as wrong place)."""
    frames: dict[str, list[str]] = {c: [] for c in FAILURE_CAUSES}
    unknown = 0
    for rec in records:
        cause = classify_failure(rec, cfg)
        if cause is None:
            continue
        frames[cause].append(rec["name"])
        unknown += rec.get("prior_t_err_m") is None
    return {
        "threshold": [cfg.failure_t_m, cfg.failure_r_deg],
        "basin": [cfg.basin_t_m, cfg.basin_r_deg],
        "counts": {c: len(v) for c, v in frames.items()},
        "total": sum(len(v) for v in frames.values()),
        "prior_unknown": unknown,
        "frames": frames,
    }


def relative_label(fraction: float, r_deg: float) -> str:
    """``0.5%/1deg``."""
    return f"{fraction * 100:g}%/{r_deg:g}deg"


def relative_recall(records: Sequence[dict], scale: float | None, fraction: float, r_deg: float) -> float | None:
    """Fraction of the frames with ground truth within ``fraction * scale`` and ``r_deg``."""
    scored = [r for r in records if r.get("has_gt", True)]
    if not scored or not scale:
        return None
    return sum(_within(r, fraction * scale, r_deg) for r in scored) / len(scored)


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def frame_rows(records: Sequence[dict], scale: float | None, cfg: BenchmarkConfig) -> list[dict]:
    """Per-frame errors (also as a fraction of the scene scale), prior errors and cause."""
    rows = []
    for r in records:
        t = r.get("t_err_m")
        rows.append({
            "name": r["name"],
            "success": bool(r.get("success")),
            "t_err_m": t,
            "r_err_deg": r.get("r_err_deg"),
            "t_err_rel": _num(t / scale) if t is not None and scale else None,
            "prior_t_err_m": r.get("prior_t_err_m"),
            "prior_r_err_deg": r.get("prior_r_err_deg"),
            "cause": classify_failure(r, cfg),
            "reason": r.get("reason", ""),
            "latency_ms": r.get("total_latency_ms", sum((r.get("latency_ms") or {}).values())),
        })
    return rows


def method_metrics(records: Sequence[dict], scale: float | None, cfg: BenchmarkConfig) -> dict:
    """The benchmark's metrics of one method and prior (see the module docstring)."""
    s = summarize(records, cfg.recall_thresholds)
    located = [r for r in records if r.get("has_gt", True) and _localized(r)]
    prior = [r for r in records if r.get("prior_t_err_m") is not None]
    return {
        "frames": s["frames"],
        "frames_with_gt": s["frames_with_gt"],
        "successes": s["successes"],
        "success_rate": s["success_rate"],
        "median_t_err_m": s["median_t_err_m"],
        "median_r_err_deg": s["median_r_err_deg"],
        "median_t_err_rel": _num(s["median_t_err_m"] / scale) if s["median_t_err_m"] is not None and scale else None,
        "recall": s["recall"],
        "recall_relative": {relative_label(f, r): relative_recall(records, scale, f, r)
                            for f, r in cfg.relative_recall_thresholds},
        "latency_ms": s["latency_ms"],
        "prior_median_t_err_m": _median([r["prior_t_err_m"] for r in prior]),
        "prior_median_r_err_deg": _median([r["prior_r_err_deg"] for r in prior if r.get("prior_r_err_deg") is not None]),
        "prior_sources": s["prior_sources"],
        "failure_reasons": s["failure_reasons"],
        "failures": failures_by_cause(records, cfg),
        "localized_frames": len(located),
    }
