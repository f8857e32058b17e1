"""Localization metrics over per-frame records: errors, recall, success, latency.

A *frame record* is a plain dict (JSON-ready) describing one localization attempt:

=================  ====================================================================
``name``           frame name (image file, or the bag frame's index)
``stamp_ns``       image stamp (int ns; None for datasets without time)
``success``        the relocalizer returned a pose
``has_gt``         ground truth exists for the frame (frames without are not scored)
``t_err_m``        distance between estimated and true camera centres (None: no pose/GT)
``r_err_deg``      angle of the rotation between estimated and true camera orientation
``latency_ms``     {stage: ms} as reported by the relocalizer
``num_inliers``    PnP inliers (and ``num_matches``, ``iterations``)
``prior_source``   where the starting pose came from ("odometry", "retrieval", ...; None)
``reason``         why it failed ("" on success)
``nees``           squared Mahalanobis distance of the pose from the truth under the
                   reported 6x6 covariance (6 dof; None: no pose, GT or usable covariance)
=================  ====================================================================

Optional keys written by :func:`frame_record`: ``accepted`` (the pose passed the
confidence thresholds and became the fix), ``est_xyz`` / ``gt_xyz`` (camera centres in
the map frame, for plots), ``est_quat_xyzw`` (orientation of the estimated camera
optical frame in the map, x y z w), ``prior_t_err_m`` / ``prior_r_err_deg`` (prior vs truth).

:func:`summarize` turns a list of records into one JSON-ready dict. Conventions:
medians are over frames *with a pose and ground truth*; recall at ``(t, r)`` is the
fraction of frames with ground truth that have a pose within ``t`` metres and ``r``
degrees (failures count as misses); success rate is over all frames. The covariance's
calibration (``covariance``) is over localized frames with ground truth: a calibrated
6-dof covariance gives a median NEES of 5.35 and 1% of frames beyond 16.8.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ..geometry.frames import camera_center_from_opencv_w2c, opencv_c2w_from_opencv_w2c, pose_mahalanobis
from ..geometry.se3 import pose_error, quat_xyzw_from_rotation

#: (translation metres, rotation degrees) recall thresholds: fine indoor ones (7-Scenes
#: style 2cm/2deg, 5cm/5deg, 10cm/10deg) and the coarse outdoor/robot ones (Aachen
#: style 25cm/2deg, 50cm/5deg, 1m/10deg, as used for Cambridge Landmarks).
DEFAULT_RECALL_THRESHOLDS: tuple[tuple[float, float], ...] = (
    (0.02, 2.0),
    (0.05, 5.0),
    (0.10, 10.0),
    (0.25, 2.0),
    (0.50, 5.0),
    (1.00, 10.0),
)
LATENCY_PERCENTILES = (50, 95)
#: Chi-square quantiles for 6 degrees of freedom: the median and the 99% point of the
#: NEES of a calibrated pose covariance.
CHI2_6DOF_MEDIAN = 5.348
CHI2_6DOF_Q99 = 16.812
TOTAL_STAGE = "total"


def threshold_label(t_m: float, r_deg: float) -> str:
    """``5cm/5deg``, ``1m/10deg``."""
    t = f"{t_m * 100:g}cm" if t_m < 1.0 else f"{t_m:g}m"
    return f"{t}/{r_deg:g}deg"


def _num(x) -> float | None:
    """JSON-safe float (None for None/NaN/inf)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def frame_record(
    name: str,
    result,
    gt_w2c_opencv: np.ndarray | None,
    *,
    stamp_ns: int | None = None,
    accepted: bool | None = None,
) -> dict:
    """The record of one :class:`~neural_reloc.methods.base.LocalizationResult` against
    the true OpenCV world-to-camera pose (None: no ground truth for this frame)."""
    has_gt = gt_w2c_opencv is not None
    est = result.w2c_opencv if result.success else None
    t_err = r_err = None
    if has_gt and est is not None:
        t_err, r_err = pose_error(opencv_c2w_from_opencv_w2c(est), opencv_c2w_from_opencv_w2c(gt_w2c_opencv))
    prior = getattr(result, "prior", None)
    prior_t = prior_r = None
    if has_gt and prior is not None:
        prior_t, prior_r = pose_error(
            opencv_c2w_from_opencv_w2c(prior.w2c_opencv), opencv_c2w_from_opencv_w2c(gt_w2c_opencv)
        )
    nees = None
    covariance = getattr(result, "covariance", None)
    if has_gt and est is not None and covariance is not None:
        d = pose_mahalanobis(est, gt_w2c_opencv, covariance)
        nees = None if d is None else d * d
    rec = {
        "name": str(name),
        "stamp_ns": None if stamp_ns is None else int(stamp_ns),
        "success": bool(result.success),
        "has_gt": has_gt,
        "t_err_m": _num(t_err),
        "r_err_deg": _num(r_err),
        "latency_ms": {k: float(v) for k, v in result.latency_ms.items()},
        "num_inliers": int(result.num_inliers),
        "num_matches": int(result.num_matches),
        "iterations": int(result.iterations),
        "prior_source": None if prior is None else prior.source,
        "reason": str(result.reason or ""),
        "prior_t_err_m": _num(prior_t),
        "prior_r_err_deg": _num(prior_r),
        "est_xyz": None if est is None else [float(v) for v in camera_center_from_opencv_w2c(est)],
        "est_quat_xyzw": None if est is None else [float(v) for v in quat_xyzw_from_rotation(opencv_c2w_from_opencv_w2c(est)[:3, :3])],
        "gt_xyz": None if not has_gt else [float(v) for v in camera_center_from_opencv_w2c(gt_w2c_opencv)],
        "nees": _num(nees),
    }
    if accepted is not None:
        rec["accepted"] = bool(accepted)
    return rec


def recall(records: Sequence[dict], t_m: float, r_deg: float) -> float | None:
    """Fraction of frames with ground truth localized within both thresholds."""
    scored = [r for r in records if r.get("has_gt", True)]
    if not scored:
        return None
    hits = sum(
        1
        for r in scored
        if r.get("success")
        and r.get("t_err_m") is not None
        and r.get("r_err_deg") is not None
        and r["t_err_m"] <= t_m
        and r["r_err_deg"] <= r_deg
    )
    return hits / len(scored)


def latency_stats(values: Iterable[float]) -> dict:
    v = np.asarray([float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    if v.size == 0:
        return {"count": 0, "p50": None, "p95": None, "max": None, "mean": None}
    p50, p95 = np.percentile(v, LATENCY_PERCENTILES)
    return {"count": int(v.size), "p50": float(p50), "p95": float(p95), "max": float(v.max()), "mean": float(v.mean())}


def summarize(records: Sequence[dict], thresholds: Sequence[Sequence[float]] = DEFAULT_RECALL_THRESHOLDS) -> dict:
    """Summary of frame records (see the module docstring for the conventions)."""
    n = len(records)
    scored = [r for r in records if r.get("has_gt", True)]
    located = [r for r in scored if r.get("success") and r.get("t_err_m") is not None and r.get("r_err_deg") is not None]
    t_err = [r["t_err_m"] for r in located]
    r_err = [r["r_err_deg"] for r in located]
    successes = sum(1 for r in records if r.get("success"))

    stages: dict[str, list[float]] = {}
    totals = []
    for r in records:
        lat = r.get("latency_ms") or {}
        for stage, ms in lat.items():
            if stage != TOTAL_STAGE:
                stages.setdefault(stage, []).append(ms)
        if lat:
            totals.append(lat.get(TOTAL_STAGE, sum(v for k, v in lat.items() if k != TOTAL_STAGE)))
    latency = {stage: latency_stats(v) for stage, v in sorted(stages.items())}
    latency[TOTAL_STAGE] = latency_stats(totals)

    out = {
        "frames": n,
        "frames_with_gt": len(scored),
        "successes": successes,
        "success_rate": successes / n if n else None,
        "median_t_err_m": float(np.median(t_err)) if t_err else None,
        "median_r_err_deg": float(np.median(r_err)) if r_err else None,
        "mean_t_err_m": float(np.mean(t_err)) if t_err else None,
        "mean_r_err_deg": float(np.mean(r_err)) if r_err else None,
        "recall": {threshold_label(t, rd): recall(records, t, rd) for t, rd in thresholds},
        "recall_thresholds": [[float(t), float(rd)] for t, rd in thresholds],
        "latency_ms": latency,
        "prior_sources": dict(Counter(r.get("prior_source") or "none" for r in records)),
        "failure_reasons": dict(Counter(r.get("reason") or "(no reason given)" for r in records if not r.get("success")).most_common(10)),
    }
    nees = [r["nees"] for r in located if r.get("nees") is not None]
    out["covariance"] = {
        "frames": len(nees),
        "nees_median": float(np.median(nees)) if nees else None,
        "beyond_chi2_99": float(np.mean(np.asarray(nees) > CHI2_6DOF_Q99)) if nees else None,
    }
    if any("accepted" in r for r in records):
        accepted = sum(1 for r in records if r.get("accepted"))
        out["accepted"] = accepted
        out["accepted_rate"] = accepted / n if n else None
    return out
