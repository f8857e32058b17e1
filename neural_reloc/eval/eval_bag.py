"""``eval-bag``: replay a bag through the relocalization session and score it.

The loop is the ROS node's, without ROS: every image of the bag, in bag time order,
goes through one :class:`~neural_reloc.tracking.RelocalizationSession` (the node's
prior logic: odometry propagation between fixes, the last fix without odometry,
retrieval when lost), with ``odom_from_base`` and ``base_from_optical`` from the bag's
TF. Each estimate (OpenCV world-to-camera, the map's world being the bag's ``map``
frame) is compared with the ground-truth camera pose at the image stamp, interpolated
between ground-truth samples (:mod:`neural_reloc.bags.reader`).

Outputs in ``out_dir``: ``results.json`` (config, what was read from the bag, one
record per frame, the summary of :func:`neural_reloc.eval.metrics.summarize`) and
``report.html`` (:mod:`neural_reloc.eval.report`). Both are written atomically, also
when the run stops early (a bad or truncated bag, Ctrl-C): then ``status`` says so,
``error`` says why, and the frames computed so far are kept.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..bags.errors import BagError
from ..bags.reader import BagFrames, BagReadConfig, BagReader, GroundTruthConfig
from ..config_io import to_dict
from ..geometry.frames import opencv_w2c_from_map_from_optical
from ..tracking import RelocalizationSession, TrackingConfig
from .io import check_output_dir, failed_path, holds_good_result, write_json_atomic
from .metrics import DEFAULT_RECALL_THRESHOLDS, frame_record, latency_stats, summarize

RESULTS_FORMAT = "neural_reloc.eval_bag/1"
RESULTS_NAME = "results.json"
REPORT_NAME = "report.html"


@dataclass
class EvalBagConfig:
    bag: BagReadConfig = field(default_factory=BagReadConfig)
    ground_truth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    #: prior selection and fix acceptance: the node's settings (config/ of the node)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    #: (metres, degrees) pairs for recall
    recall_thresholds: tuple[tuple[float, float], ...] = DEFAULT_RECALL_THRESHOLDS
    #: evaluate at most this many images (0: all)
    max_frames: int = 0
    #: rewrite results.json every this many frames while running (0: only at the end)
    checkpoint_every: int = 25
    #: write report.html next to results.json
    report: bool = True




def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def evaluate_bag(
    bag_path: str | Path,
    out_dir: str | Path,
    config: EvalBagConfig | None = None,
    *,
    map_path: str | Path | None = None,
    relocalizer=None,
    device: str | None = None,
    reloc_overrides: dict | list[str] | None = None,
    progress: bool = False,
    method: str | None = None,
    global_prior: str = "",
) -> dict:
    """Evaluate a relocalizer (given, or loaded from ``map_path``) on a bag.

    Returns the results dict (also written to ``out_dir/results.json``). Bag problems
    raise :class:`~neural_reloc.bags.errors.BagError` *after* the partial results and
    report are written. A folder that already holds a good result keeps it until this
    run succeeds: meanwhile (checkpoints) and on failure this run writes
    ``results.failed.json`` / ``report.failed.html`` beside it.
    """
    cfg = config or EvalBagConfig()
    if relocalizer is None and map_path is None:
        raise ValueError("evaluate_bag needs a map_path or a relocalizer")
    out_dir = check_output_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep_earlier = holds_good_result(out_dir / RESULTS_NAME)
    unfinished_json = failed_path(out_dir / RESULTS_NAME) if keep_earlier else out_dir / RESULTS_NAME
    unfinished_report = failed_path(out_dir / REPORT_NAME) if keep_earlier else out_dir / REPORT_NAME
    results: dict = {
        "format": RESULTS_FORMAT,
        "status": "running",
        "error": None,
        "started": _now(),
        "finished": None,
        "bag": str(bag_path),
        "map": None if map_path is None else str(map_path),
        "method": getattr(relocalizer, "method", None),
        "config": to_dict(cfg),
        "reloc_overrides": reloc_overrides,
        "input": None,
        "summary": None,
        "frames": [],
    }
    records: list[dict] = results["frames"]
    wall_ms: list[float] = []

    def finish(status: str, error: str | None) -> None:
        results["status"], results["error"], results["finished"] = status, error, _now()
        results["summary"] = summarize(records, cfg.recall_thresholds)
        results["summary"]["wall_ms"] = latency_stats(wall_ms)
        ok = status == "ok"
        json_path = out_dir / RESULTS_NAME if ok else unfinished_json
        write_json_atomic(json_path, results)
        if cfg.report:
            from .report import write_report

            try:
                write_report(results, out_dir / REPORT_NAME if ok else unfinished_report)
            except Exception as e:  # noqa: BLE001 - never hide the run's own outcome
                results["report_error"] = f"{type(e).__name__}: {e}"
                write_json_atomic(json_path, results)
        if ok and keep_earlier:  # this run's checkpoints, now superseded
            unfinished_json.unlink(missing_ok=True)

    try:
        with BagReader(bag_path) as reader:
            frames = BagFrames(reader, cfg.bag, cfg.ground_truth)
            results["input"] = frames.describe()
            if relocalizer is None:
                from ..map_loading import load_relocalizer

                relocalizer = load_relocalizer(map_path, device, reloc_overrides, method=method,
                                               global_prior=global_prior)
            results["method"] = relocalizer.method
            session = RelocalizationSession(relocalizer, cfg.tracking)
            total = frames.num_frames if not cfg.max_frames else min(cfg.max_frames, frames.num_frames)
            from tqdm import tqdm

            with tqdm(total=total, desc="eval-bag", unit="frame", disable=not progress, dynamic_ncols=True) as bar:
                for bf in frames:
                    if cfg.max_frames and bf.index >= cfg.max_frames:
                        break
                    t0 = time.perf_counter()
                    result = session.process(bf.frame)
                    wall_ms.append((time.perf_counter() - t0) * 1e3)
                    gt_w2c = None if bf.gt_map_from_optical is None else opencv_w2c_from_map_from_optical(bf.gt_map_from_optical)
                    rec = frame_record(bf.name, result, gt_w2c, stamp_ns=bf.stamp_ns, accepted=session.accepts(result))
                    rec["index"] = bf.index
                    rec["wall_ms"] = wall_ms[-1]
                    records.append(rec)
                    ok = sum(1 for r in records if r["success"])
                    t_err = "-" if rec["t_err_m"] is None else f"{rec['t_err_m']:.3f}"
                    bar.set_postfix(ok=f"{ok}/{len(records)}", t_err=t_err, refresh=False)
                    bar.update(1)
                    if cfg.checkpoint_every and len(records) % cfg.checkpoint_every == 0:
                        results["summary"] = summarize(records, cfg.recall_thresholds)
                        write_json_atomic(unfinished_json, results)
    except BagError as e:
        finish("error", str(e))
        raise
    except KeyboardInterrupt:
        finish("interrupted", "interrupted by the user")
        raise
    except Exception as e:
        finish("error", f"{type(e).__name__}: {e}")
        raise
    finish("ok", None)
    return results
