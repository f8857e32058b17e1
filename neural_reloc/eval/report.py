"""A self-contained HTML report of an evaluation (results.json as input).

Four matplotlib figures (Agg backend), embedded as base64 PNGs so the file can be
mailed or archived alone: the trajectory seen from above (map x-y: ground truth vs
estimates), errors over time, the cumulative distribution of errors, and inliers over
time. Tables: summary, recall, per-stage latency, prior sources, failure reasons, and
every frame.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

import numpy as np

FIGURE_DPI = 110
FIGURES = ("trajectory", "error_over_time", "error_cdf", "inliers_over_time")


def _times(frames: list[dict]) -> tuple[np.ndarray, str]:
    stamps = [f.get("stamp_ns") for f in frames]
    if frames and all(s is not None for s in stamps):
        t0 = min(stamps)
        return np.array([(s - t0) / 1e9 for s in stamps]), "time since the first frame [s]"
    return np.arange(len(frames), dtype=float), "frame"


def _val(x) -> float:
    return math.nan if x is None else float(x)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _subplots(nrows: int = 1, ncols: int = 1, **kw):
    """pyplot-free figures (Agg canvas, no global state): safe in threads and servers."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kw.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kw)


def _figures(results: dict) -> dict[str, str]:
    frames = results.get("frames") or []
    t, t_label = _times(frames)
    ok = np.array([bool(f.get("success")) for f in frames], dtype=bool)
    acc = np.array([bool(f.get("accepted", f.get("success"))) for f in frames], dtype=bool)
    out = {}

    # 1. trajectory, top view (map x-y)
    fig, ax = _subplots(figsize=(6.4, 5.6))
    gt = np.array([f["gt_xyz"] if f.get("gt_xyz") else [np.nan] * 3 for f in frames], dtype=float).reshape(-1, 3)
    est = np.array([f["est_xyz"] if f.get("est_xyz") else [np.nan] * 3 for f in frames], dtype=float).reshape(-1, 3)
    if len(frames):
        ax.plot(gt[:, 0], gt[:, 1], "-", color="0.55", lw=1.2, label="ground truth")
        ax.plot(gt[:, 0], gt[:, 1], ".", color="0.35", ms=4)
        for i in np.flatnonzero(ok & np.isfinite(gt[:, 0]) & np.isfinite(est[:, 0])):
            ax.plot([gt[i, 0], est[i, 0]], [gt[i, 1], est[i, 1]], "-", color="tab:red", lw=0.6, alpha=0.6)
        m = ok & acc
        ax.plot(est[m, 0], est[m, 1], "o", color="tab:blue", ms=4, label="estimate (accepted)")
        m = ok & ~acc
        if m.any():
            ax.plot(est[m, 0], est[m, 1], "o", mfc="none", color="tab:orange", ms=5, label="estimate (not accepted)")
        m = ~ok & np.isfinite(gt[:, 0])
        if m.any():
            ax.plot(gt[m, 0], gt[m, 1], "x", color="tab:red", ms=6, label="failed (at ground truth)")
    ax.set_xlabel("map x [m]")
    ax.set_ylabel("map y [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    if len(frames):
        ax.legend(loc="best", fontsize=8)
    ax.set_title("Trajectory, top view (camera centres)")
    out["trajectory"] = _png(fig)

    # 2. errors over time
    fig, (a1, a2) = _subplots(2, 1, figsize=(7.5, 5.2), sharex=True)
    te = np.array([_val(f.get("t_err_m")) for f in frames])
    re = np.array([_val(f.get("r_err_deg")) for f in frames])
    pte = np.array([_val(f.get("prior_t_err_m")) for f in frames])
    pre = np.array([_val(f.get("prior_r_err_deg")) for f in frames])
    for ax, e, p, label in ((a1, te, pte, "translation error [m]"), (a2, re, pre, "rotation error [deg]")):
        if len(frames):
            ax.plot(t, p, ".", color="0.6", ms=4, label="prior")
            ax.plot(t, e, "o-", color="tab:blue", ms=3, lw=0.8, label="estimate")
            fails = t[~ok]
            if fails.size:
                ax.plot(fails, np.zeros_like(fails), "x", color="tab:red", ms=6, label="failed")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if np.any(np.isfinite(np.r_[e, p]) & (np.r_[e, p] > 0)):
            ax.set_yscale("symlog", linthresh=0.01 if "m]" in label else 0.5)
    if len(frames):
        a1.legend(loc="best", fontsize=8)
    a2.set_xlabel(t_label)
    a1.set_title("Error over time")
    out["error_over_time"] = _png(fig)

    # 3. error CDF (over frames with ground truth; failures never reach the curve)
    fig, (a1, a2) = _subplots(1, 2, figsize=(8.5, 3.6))
    scored = [f for f in frames if f.get("has_gt", True)]
    n = max(len(scored), 1)
    for ax, key, label in ((a1, "t_err_m", "translation error [m]"), (a2, "r_err_deg", "rotation error [deg]")):
        v = np.sort([f[key] for f in scored if f.get("success") and f.get(key) is not None])
        if v.size:
            ax.step(np.r_[0.0, v], np.r_[0.0, np.arange(1, v.size + 1) / n], where="post", color="tab:blue")
            ax.set_xscale("symlog", linthresh=0.01 if key == "t_err_m" else 0.5)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of frames")
        ax.grid(alpha=0.3)
    a1.set_title("Error CDF (failures count as misses)", loc="left")
    out["error_cdf"] = _png(fig)

    # 4. inliers over time
    fig, ax = _subplots(figsize=(7.5, 3.4))
    if len(frames):
        inl = np.array([f.get("num_inliers", 0) for f in frames], dtype=float)
        mat = np.array([f.get("num_matches", 0) for f in frames], dtype=float)
        ax.plot(t, mat, "-", color="0.6", lw=0.8, label="matches")
        ax.plot(t[acc], inl[acc], "o", color="tab:blue", ms=3, label="inliers (accepted)")
        ax.plot(t[~acc], inl[~acc], "x", color="tab:red", ms=5, label="inliers (not accepted)")
    ax.set_xlabel(t_label)
    ax.set_ylabel("count")
    ax.grid(alpha=0.3)
    if len(frames):
        ax.legend(loc="best", fontsize=8)
    ax.set_title("PnP inliers over time")
    out["inliers_over_time"] = _png(fig)
    return out


# ---------------------------------------------------------------------- HTML
def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "–"
    return html.escape(str(v))


def _table(rows: list[list], header: list[str] | None = None) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{'<tr>' + h + '</tr>' if h else ''}{body}</table>"


def render_html(results: dict) -> str:
    s = results.get("summary") or {}
    figs = _figures(results)
    title = f"neural_reloc evaluation: {Path(str(results.get('bag') or results.get('data') or '')).name}"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0 1.2em}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}"
        ".err{background:#fdd;border:1px solid #c00;padding:.6em}img{max-width:100%;display:block;margin:.5em 0 1.5em}"
        "code{background:#f6f6f6}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    status = results.get("status", "?")
    if status != "ok":
        parts.append(
            f"<p class='err'><b>Run status: {html.escape(str(status))}</b> — {html.escape(str(results.get('error') or ''))}"
            "<br>The numbers below cover the frames processed before the run stopped.</p>"
        )
    parts.append(
        _table(
            [
                ["bag / data", _fmt(results.get("bag") or results.get("data"))],
                ["map", _fmt(results.get("map"))],
                ["method", _fmt(results.get("method"))],
                ["started / finished", f"{_fmt(results.get('started'))} / {_fmt(results.get('finished'))}"],
            ]
        )
    )
    parts.append("<h2>Summary</h2>")
    parts.append(
        _table(
            [
                ["frames", _fmt(s.get("frames"))],
                ["frames with ground truth", _fmt(s.get("frames_with_gt"))],
                ["success rate", _fmt(s.get("success_rate"))],
                ["accepted rate", _fmt(s.get("accepted_rate"))],
                ["median translation error [m]", _fmt(s.get("median_t_err_m"), 4)],
                ["median rotation error [deg]", _fmt(s.get("median_r_err_deg"), 3)],
                ["mean translation error [m]", _fmt(s.get("mean_t_err_m"), 4)],
                ["mean rotation error [deg]", _fmt(s.get("mean_r_err_deg"), 3)],
            ]
        )
    )
    parts.append("<p>Medians are over frames with a pose and ground truth; recall is over frames with ground truth (failures are misses).</p>")
    parts.append("<h3>Recall</h3>")
    parts.append(_table([[html.escape(k), _fmt(v)] for k, v in (s.get("recall") or {}).items()], ["threshold", "recall"]))
    parts.append("<h3>Latency [ms]</h3>")
    lat = dict(s.get("latency_ms") or {})
    if s.get("wall_ms"):
        lat["wall (session.process)"] = s["wall_ms"]
    parts.append(
        _table(
            [[html.escape(k), _fmt(v.get("count")), _fmt(v.get("p50"), 1), _fmt(v.get("p95"), 1), _fmt(v.get("max"), 1)] for k, v in lat.items()],
            ["stage", "n", "p50", "p95", "max"],
        )
    )
    parts.append("<h3>Prior sources</h3>")
    parts.append(_table([[html.escape(k), _fmt(v)] for k, v in (s.get("prior_sources") or {}).items()], ["source", "frames"]))
    if s.get("failure_reasons"):
        parts.append("<h3>Failure reasons</h3>")
        parts.append(_table([[html.escape(k), _fmt(v)] for k, v in s["failure_reasons"].items()], ["reason", "frames"]))
    parts.append("<h2>Figures</h2>")
    for key in FIGURES:
        parts.append(f"<img alt='{key}' src='data:image/png;base64,{figs[key]}'>")
    inp = results.get("input")
    if inp:
        parts.append("<h2>Input</h2>")
        parts.append(_table([[html.escape(str(k)), _fmt(v if not isinstance(v, (dict, list)) else str(v))] for k, v in inp.items() if k != "topics"]))
    frames = results.get("frames") or []
    parts.append(f"<details><summary>All {len(frames)} frames</summary>")
    parts.append(
        _table(
            [
                [
                    _fmt(f.get("name")),
                    _fmt(f.get("success")),
                    _fmt(f.get("accepted")),
                    _fmt(f.get("t_err_m"), 4),
                    _fmt(f.get("r_err_deg"), 3),
                    _fmt(f.get("num_inliers")),
                    _fmt(f.get("prior_source")),
                    _fmt(sum(v for k, v in (f.get("latency_ms") or {}).items() if k != "total"), 1),
                    _fmt(f.get("reason")),
                ]
                for f in frames
            ],
            ["frame", "success", "accepted", "t err [m]", "r err [deg]", "inliers", "prior", "latency [ms]", "reason"],
        )
    )
    parts.append("</details></body></html>")
    return "\n".join(parts)


def write_report(results: dict, path: str | Path) -> Path:
    """Write the HTML report of a results dict atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(results)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
