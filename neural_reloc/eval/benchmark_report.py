"""The benchmark's self-contained HTML report (``OUT/report.html``) and its markdown
table (printed by ``neural-reloc benchmark``), both from benchmark.json.

No external assets: tables, and cumulative error plots as inline SVG (one curve per
method and prior; failures never reach the curve, so its height at the right edge is
the fraction of frames localized at all). Per dataset: the maps, the methods x metrics
table, latency per stage, failures by cause with their frames, and every frame.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from .benchmark_metrics import FAILURE_CAUSES, relative_label
from .metrics import threshold_label
from .report import _fmt, _table

#: Curve colours (matplotlib's tab10), cycled over method/prior pairs.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
#: Plot area and margins of the SVG plots, pixels.
PLOT_W, PLOT_H = 440, 220
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 48, 12, 12, 40
LEGEND_ROW_PX = 15
Y_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
CAUSE_LABELS = {
    "wrong_place": "wrong place (prior outside the basin)",
    "did_not_converge": "did not converge (no estimate)",
    "converged_but_off": "converged but off (estimate beyond the thresholds)",
}
CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0 1.2em}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}"
    "td:first-child{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:1.5em}"
    "svg text{font-size:11px;font-family:sans-serif}details{margin:.3em 0}.fail{color:#b00}"
)


def _pct(v) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def _log_axis(values: list[float]) -> tuple[float, float]:
    """Decade bounds of positive ``values``."""
    lo = math.floor(math.log10(min(values)))
    hi = math.ceil(math.log10(max(values)))
    return lo, hi if hi > lo else lo + 1


def cdf_svg(curves: list[tuple[str, list[float | None]]], x_label: str, markers: tuple[float, ...] = ()) -> str:
    """Inline SVG: per curve, the fraction of ALL its frames with an error <= x (log x).

    ``curves``: (label, one error per frame, None for a frame without estimate);
    ``markers``: x values drawn as dashed vertical lines (e.g. recall thresholds)."""
    finite = [v for _, vals in curves for v in vals if v is not None and v > 0 and math.isfinite(v)]
    finite += [m for m in markers if m > 0]
    if not finite:
        return "<p>no localized frames to plot</p>"
    lo, hi = _log_axis(finite)
    x0, y0 = MARGIN_L, MARGIN_T
    width = MARGIN_L + PLOT_W + MARGIN_R
    height = MARGIN_T + PLOT_H + MARGIN_B + LEGEND_ROW_PX * len(curves)

    def px(v: float) -> float:
        v = min(max(v, 10.0**lo), 10.0**hi)
        return x0 + (math.log10(v) - lo) / (hi - lo) * PLOT_W

    def py(frac: float) -> float:
        return y0 + (1.0 - frac) * PLOT_H

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>",
           f"<rect x='{x0}' y='{y0}' width='{PLOT_W}' height='{PLOT_H}' fill='none' stroke='#999'/>"]
    for d in range(lo, hi + 1):
        x = px(10.0**d)
        out.append(f"<line x1='{x:.1f}' y1='{y0}' x2='{x:.1f}' y2='{y0 + PLOT_H}' stroke='#eee'/>")
        out.append(f"<text x='{x:.1f}' y='{y0 + PLOT_H + 14}' text-anchor='middle'>{10.0**d:g}</text>")
    for f in Y_TICKS:
        out.append(f"<line x1='{x0}' y1='{py(f):.1f}' x2='{x0 + PLOT_W}' y2='{py(f):.1f}' stroke='#eee'/>")
        out.append(f"<text x='{x0 - 4}' y='{py(f) + 4:.1f}' text-anchor='end'>{f:g}</text>")
    for m in markers:
        out.append(f"<line x1='{px(m):.1f}' y1='{y0}' x2='{px(m):.1f}' y2='{y0 + PLOT_H}' stroke='#888' stroke-dasharray='4 3'/>")
    for k, (label, vals) in enumerate(curves):
        color = PALETTE[k % len(PALETTE)]
        n = max(len(vals), 1)
        errs = sorted(v for v in vals if v is not None and math.isfinite(v))
        pts = [(px(10.0**lo), py(0.0))]
        for i, v in enumerate(errs):
            pts += [(px(v), py(i / n)), (px(v), py((i + 1) / n))]
        pts.append((x0 + PLOT_W, pts[-1][1]))
        poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        out.append(f"<polyline points='{poly}' fill='none' stroke='{color}' stroke-width='1.6'/>")
        ly = y0 + PLOT_H + MARGIN_B + LEGEND_ROW_PX * k
        out.append(f"<line x1='{x0}' y1='{ly - 4}' x2='{x0 + 18}' y2='{ly - 4}' stroke='{color}' stroke-width='2'/>")
        out.append(f"<text x='{x0 + 24}' y='{ly}'>{html.escape(label)}</text>")
    out.append(f"<text x='{x0 + PLOT_W / 2}' y='{y0 + PLOT_H + 30}' text-anchor='middle'>{html.escape(x_label)}</text>")
    out.append("</svg>")
    return "".join(out)


def _entry_label(name: str, info: dict) -> str:
    """``kscr_real (kscr)`` for a variant, the method's name otherwise; ``+ field`` for a
    component of a shared field."""
    method = info.get("method", name)
    label = name if method == name else f"{name} ({method})"
    return label + (" on the shared field" if info.get("component") else "")


def _maps_table(ds: dict, machine: dict | None = None) -> str:
    """The maps; one the benchmark built on another machine than ``machine`` names its own."""
    rows = []
    maps = ([("shared field", ds["field"])] if ds.get("field") else []) + [
        (_entry_label(name, m), m) for name, m in ds["maps"].items()]
    for label, m in maps:
        q = m.get("map_quality") or {}
        rows.append([html.escape(label), _fmt(m.get("size_mb"), 2), _fmt(m.get("build_s"), 1), _fmt(m.get("build_s_source")),
                     _fmt(m.get("train_steps")), _fmt(q.get("psnr_mean"), 2), _fmt(q.get("depth_median_rel_err"), 4),
                     _fmt(m.get("path")),
                     html.escape("" if not m.get("build_machine") or m["build_machine"] == machine
                                 else machine_label(m["build_machine"]))])
    note = ""
    if ds.get("field"):
        note = ("<p>Methods on the shared field: size = field + component, build = the component's training "
                "(add-method); the field's build is its own row.</p>")
    return note + _table(rows, ["map", "size [MB]", "build [s]", "build time from", "steps", "held-out PSNR [dB]",
                                "depth rel. error", "path", "built on (if not the machine above)"])


def _mapping_frames(ds: dict) -> str:
    every = ds.get("map_every", 1)
    return "–" if "mapping_frames" not in ds else f"{ds['mapping_frames']}" + (f" (1 in {every} of the map split)" if every > 1 else "")


def _skipped(ds: dict) -> str:
    if not ds.get("skipped"):
        return ""
    items = "".join(f"<li>{html.escape(s['name'])} / {html.escape(s['prior'])}: {html.escape(s['reason'])}</li>"
                    for s in ds["skipped"])
    return f"<p>Not run:</p><ul>{items}</ul>"


def _results_table(ds: dict, cfg: dict) -> str:
    abs_l = [threshold_label(t, r) for t, r in cfg["recall_thresholds"]]
    rel_l = [relative_label(f, r) for f, r in cfg["relative_recall_thresholds"]]
    rows = []
    for method, by_prior in ds["results"].items():
        for prior, m in by_prior.items():
            lat = m["latency_ms"].get("total", {})
            rows.append([html.escape(method), html.escape(prior), _fmt(m["frames"]), _pct(m["success_rate"]),
                         _fmt(m["median_t_err_m"], 4), _fmt(m["median_r_err_deg"], 2), _pct(m["median_t_err_rel"]),
                         *(_pct(m["recall"].get(k)) for k in abs_l), *(_pct(m["recall_relative"].get(k)) for k in rel_l),
                         _fmt(lat.get("p50"), 1), _fmt(lat.get("p95"), 1),
                         _fmt(m["prior_median_t_err_m"], 3), _fmt(m["prior_median_r_err_deg"], 1)])
    header = ["method", "prior", "frames", "success", "median t [m]", "median r [deg]", "median t [% scale]",
              *abs_l, *rel_l, "latency p50 [ms]", "p95 [ms]", "prior median t [m]", "prior median r [deg]"]
    return _table(rows, header)


def machine_label(machine: dict | None) -> str:
    """A machine of :func:`~neural_reloc.device.machine_info` in one line ("unknown" for
    results written before it was recorded)."""
    if not machine:
        return "unknown"
    flags = ", ".join(machine.get("cpu_flags") or []) or "none of AMX-BF16 / AVX512 / AVX2"
    text = f"{machine.get('cpu', '?')} ({flags}), {machine.get('torch_threads', '?')} torch threads"
    return text + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")


def _latency_table(ds: dict, machine: dict | None = None) -> str:
    """Latency per stage; a result measured on another machine than ``machine`` (reused
    from an earlier run) names its own."""
    stages = sorted({s for bp in ds["results"].values() for m in bp.values() for s in m["latency_ms"]})
    rows = []
    for method, by_prior in ds["results"].items():
        for prior, m in by_prior.items():
            lat = m["latency_ms"]
            where = "" if m.get("machine") == machine else machine_label(m.get("machine"))
            rows.append([html.escape(f"{method} / {prior}"),
                         *(f"{_fmt(lat.get(s, {}).get('p50'), 1)} / {_fmt(lat.get(s, {}).get('p95'), 1)}" for s in stages),
                         html.escape(where)])
    return _table(rows, ["method / prior", *(f"{s} p50 / p95" for s in stages), "measured on (if not the machine above)"])


def _failures(ds: dict) -> str:
    parts = []
    for method, by_prior in ds["results"].items():
        for prior, m in by_prior.items():
            f = m["failures"]
            t, r = f["threshold"]
            rows = [[html.escape(CAUSE_LABELS[c]), _fmt(n), html.escape(", ".join(f["frames"][c])) or "–"]
                    for c, n in f["counts"].items()]
            unknown = f" ({f['prior_unknown']} with an unknown prior)" if f["prior_unknown"] else ""
            parts.append(f"<details{' open' if f['total'] else ''}><summary>{html.escape(method)} / {html.escape(prior)}: "
                         f"{f['total']} of {m['frames']} frames miss {html.escape(threshold_label(t, r))}{unknown}</summary>")
            parts.append(_table(rows, ["cause", "frames", "which"]))
            if m.get("failure_reasons"):
                parts.append(_table([[html.escape(k), _fmt(v)] for k, v in m["failure_reasons"].items()],
                                    ["reason given by the method (no estimate)", "frames"]))
            parts.append("</details>")
    return "\n".join(parts)


def _frames(ds: dict) -> str:
    parts = []
    for method, by_prior in ds["results"].items():
        for prior, m in by_prior.items():
            rows = [[_fmt(r["name"]), _fmt(r["success"]), _fmt(r["t_err_m"], 4), _fmt(r["r_err_deg"], 3),
                     _pct(r["t_err_rel"]), _fmt(r["prior_t_err_m"], 3), _fmt(r["prior_r_err_deg"], 1),
                     f"<span class='fail'>{html.escape(r['cause'])}</span>" if r["cause"] else "–",
                     _fmt(r["latency_ms"], 1), _fmt(r["reason"])] for r in m["per_frame"]]
            parts.append(f"<details><summary>{html.escape(method)} / {html.escape(prior)}: all {len(rows)} frames "
                         f"({html.escape(m['file'])})</summary>")
            parts.append(_table(rows, ["frame", "success", "t err [m]", "r err [deg]", "t err [% scale]", "prior t [m]",
                                       "prior r [deg]", "failure cause", "latency [ms]", "reason"]))
            parts.append("</details>")
    return "\n".join(parts)


def _plots(ds: dict, cfg: dict) -> str:
    runs = [(f"{method} / {prior}", m) for method, bp in ds["results"].items() for prior, m in bp.items()]
    t_curves = [(label, [r["t_err_m"] for r in m["per_frame"]]) for label, m in runs]
    r_curves = [(label, [r["r_err_deg"] for r in m["per_frame"]]) for label, m in runs]
    t_marks = tuple(sorted({t for t, _ in cfg["recall_thresholds"]}))
    r_marks = tuple(sorted({r for _, r in cfg["recall_thresholds"]}))
    return ("<div class='plots'>" + cdf_svg(t_curves, "translation error [m] (dashed: recall thresholds)", t_marks)
            + cdf_svg(r_curves, "rotation error [deg] (dashed: recall thresholds)", r_marks) + "</div>")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def _num_str(v: float | None, k: float = 1.0, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v * k:.{digits}f}"


def format_markdown(summary: dict) -> str:
    """One markdown table per dataset: methods x priors, the benchmark's metrics."""
    cfg = summary["config"]
    abs_labels = [threshold_label(t, r) for t, r in cfg["recall_thresholds"]]
    rel_labels = [relative_label(f, r) for f, r in cfg["relative_recall_thresholds"]]
    fail = f"fails @{threshold_label(cfg['failure_t_m'], cfg['failure_r_deg'])}: wrong place / not converged / off"
    header = (["method", "prior", "frames", "success", "median t [cm]", "median r [deg]", *abs_labels, *rel_labels,
               "latency p50/p95 [ms]", "map [MB]", "build [s]", "prior median [cm / deg]", fail])
    parts = []
    for ds in summary["datasets"]:
        scale = "n/a" if ds["scale"] is None else f"{ds['scale']:.3g}"
        parts.append(f"### {ds['label']} ({ds['query_frames']} query frames, scene scale {scale}: {ds['scale_source']})")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "---|" * len(header))
        for method, by_prior in ds["results"].items():
            info = ds["maps"].get(method, {})
            for prior, m in by_prior.items():
                lat = m["latency_ms"].get("total", {})
                c = m["failures"]["counts"]
                row = [method, prior, str(m["frames"]), _pct(m["success_rate"]),
                       _num_str(m["median_t_err_m"], 100), _num_str(m["median_r_err_deg"]),
                       *(_pct(m["recall"].get(k)) for k in abs_labels),
                       *(_pct(m["recall_relative"].get(k)) for k in rel_labels),
                       f"{_num_str(lat.get('p50'), digits=0)}/{_num_str(lat.get('p95'), digits=0)}",
                       _num_str(info.get("size_mb"), digits=1), _num_str(info.get("build_s"), digits=0),
                       f"{_num_str(m['prior_median_t_err_m'], 100, 1)} / {_num_str(m['prior_median_r_err_deg'], digits=1)}",
                       " / ".join(str(c[k]) for k in FAILURE_CAUSES)]
                parts.append("| " + " | ".join(row) + " |")
        if ds.get("field"):
            f = ds["field"]
            parts.append(f"Shared field {f['path']}: {_num_str(f.get('size_mb'), digits=1)} MB, built in "
                         f"{_num_str(f.get('build_s'), digits=0)} s; map [MB] and build [s] of the methods on it: "
                         "field + component, the component's training.")
        for sk in ds.get("skipped", []):
            parts.append(f"Not run: {sk['name']} / {sk['prior']} ({sk['reason']}).")
        parts.append("")
    if "machine" in summary:
        parts.append(f"Latency and build times measured on: {machine_label(summary['machine'])}.")
    return "\n".join(parts)


def render_benchmark_html(summary: dict) -> str:
    cfg = summary["config"]
    title = "neural_reloc benchmark: " + ", ".join(cfg["methods"])
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Success rate and recall are over <b>all</b> query frames (a failure is a miss); median errors are over "
        "the localized frames. Relative recall: translation within a fraction of the scene scale (median "
        "ground-truth depth of the query frames, else the median distance of the query cameras to the mapping "
        "cameras' focus point). Failures by cause, among the frames that miss "
        f"{html.escape(threshold_label(cfg['failure_t_m'], cfg['failure_r_deg']))}: <i>wrong place</i> when the prior "
        f"was more than {cfg['basin_t_m']:g} m or {cfg['basin_r_deg']:g} deg from the truth, else <i>did not "
        "converge</i> (no estimate) or <i>converged but off</i>. Latency excludes warm-up frames.</p>",
        f"<p>Machine: {html.escape(machine_label(summary.get('machine')))}. Latencies and build times depend on it "
        "several-fold (a CPU with bfloat16 in hardware runs the query CNN in bfloat16).</p>",
        "<details><summary>Benchmark settings</summary>",
        _table([[html.escape(k), _fmt(v if isinstance(v, str) else json.dumps(v))] for k, v in cfg.items()], ["setting", "value"]),
        "</details>",
    ]
    for ds in summary["datasets"]:
        scale = "–" if ds["scale"] is None else f"{ds['scale']:.4g}"
        parts += [
            f"<h2>{html.escape(ds['label'])}</h2>",
            _table([["data", _fmt(ds["data"])], ["query frames", f"{ds['query_frames']} ({html.escape(ds['query_split'])} split)"],
                    ["mapping frames", _mapping_frames(ds)],
                    ["scene scale", f"{scale} ({html.escape(ds['scale_source'])})"]]),
            "<h3>Maps</h3>", _maps_table(ds, summary.get("machine")),
            "<h3>Methods</h3>", _results_table(ds, cfg), _skipped(ds),
            "<h3>Cumulative error (fraction of all query frames)</h3>", _plots(ds, cfg),
            "<h3>Latency per stage [ms]</h3>", _latency_table(ds, summary.get("machine")),
            "<h3>Failures by cause</h3>", _failures(ds),
            "<h3>Frames</h3>", _frames(ds),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_benchmark_report(summary: dict, path: str | Path) -> Path:
    """Write the report atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(render_benchmark_html(summary), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
