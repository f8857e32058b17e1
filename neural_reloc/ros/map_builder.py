"""The map builder node: ``neural-reloc build-map`` as a ROS executable.

Builds one map from a posed dataset directory (``data``) or a rosbag2 (``bag``: images,
CameraInfo and the camera pose from a pose topic or a TF frame pair), reports progress
(log lines and ``~/progress``, a std_msgs/String with one JSON object per report) and
exits: 0 when the map is written, 2 with one ``error: ...`` line when an input is wrong.

The same code path as the CLI: :func:`neural_reloc.config_io.load_method_config` for the method
config (file + overrides), :func:`neural_reloc.data.load_dataset` and
:func:`neural_reloc.mapping.build_map`. ``data`` may be a bag too (the dataset loader's
rosbag2 format, its topics at their defaults); ``bag`` reads one with the node's bag
parameters through the same loader (:mod:`neural_reloc.bags.dataset`, ROS-free),
unpacking its images next to the output map.

Everything above :class:`MapBuilderNode` is ROS-free.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import MapBuilderConfig

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130


# ------------------------------------------------------------------ progress
class _ProgressIter:
    def __init__(self, reporter: ProgressReporter, it, desc: str, initial: int, total: int | None):
        self.reporter, self.it, self.desc = reporter, it, desc
        self.n = int(initial)
        if total is None:
            try:
                total = initial + len(it)
            except TypeError:
                total = None
        self.total = total
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, refresh: bool = True, **kw) -> None:
        self.postfix.update(kw)

    def __iter__(self):
        self.reporter.report(self, force=True)
        for item in self.it:
            yield item
            self.n += 1
            self.reporter.report(self)
        self.reporter.report(self, force=True, done=True)


class ProgressReporter:
    """A tqdm-like ``progress(it, desc=..., initial=..., total=...)`` callable (what
    build_map and the trainers take) that calls ``emit(record)`` at most every
    ``period_s`` seconds per stage, and at the start and end of each stage."""

    def __init__(self, emit: Callable[[dict], None], period_s: float = 2.0, clock=time.monotonic):
        self.emit, self.period_s, self.clock = emit, period_s, clock
        self._last: dict[int, float] = {}
        self._t0: dict[int, float] = {}

    def __call__(self, it=None, desc: str = "", initial: int = 0, total: int | None = None, **kw):
        return _ProgressIter(self, it if it is not None else range(total or 0), desc, initial, total)

    def report(self, bar: _ProgressIter, force: bool = False, done: bool = False) -> None:
        now = self.clock()
        key = id(bar)
        self._t0.setdefault(key, now)
        if not force and now - self._last.get(key, -1e18) < self.period_s:
            return
        self._last[key] = now
        record = {
            "stage": bar.desc or "working",
            "done": bar.n,
            "total": bar.total,
            "fraction": (bar.n / bar.total) if bar.total else None,
            "elapsed_s": round(now - self._t0[key], 2),
            "finished": done,
        }
        record.update({k: str(v) for k, v in bar.postfix.items()})
        self.emit(record)


def format_progress(record: dict) -> str:
    total = record.get("total")
    frac = record.get("fraction")
    where = f"{record['done']}/{total}" if total else f"{record['done']}"
    pct = f" ({100 * frac:.0f}%)" if frac is not None else ""
    extra = "".join(f", {k}={v}" for k, v in record.items() if k not in {"stage", "done", "total", "fraction", "elapsed_s", "finished"})
    state = "done" if record.get("finished") else "at"
    return f"{record['stage']}: {state} {where}{pct} after {record['elapsed_s']:.0f} s{extra}"


# ------------------------------------------------------------------ inputs
def posed_images_from_bag(cfg: MapBuilderConfig, work_dir: Path, log: Callable[[str], None] = print):
    """The bag's posed images through the rosbag2 dataset loader (what ``data:=`` does
    with a bag, here with the node's bag parameters), unpacked into ``work_dir``."""
    from ..bags.dataset import BagDatasetConfig, posed_images_from_bag as load

    bag_cfg = BagDatasetConfig(
        image_topic=cfg.image_topic,
        camera_info_topic=cfg.camera_info_topic,
        pose_topic=cfg.pose_topic,
        tf_parent=cfg.tf_parent,
        tf_child=cfg.tf_child,
        pose_body_frame=cfg.pose_body_frame,
        every_nth=cfg.every_nth,
        test_every=cfg.test_every,
    )
    data = load(cfg.bag, bag_cfg, work_dir / "images")
    info = data.extras["bag"]
    log(
        f"{cfg.bag}: {info['used']} posed images ({info['held_out']} held out), "
        f"{info['skipped_without_pose']} skipped without a pose"
    )
    return data


def build_map_from_config(cfg: MapBuilderConfig, progress: Callable | None, log: Callable[[str], None]) -> dict:
    """Build the map ``cfg`` describes; returns a summary (path, size, training, metrics)."""
    from ..config_io import load_method_config
    from ..data import load_dataset
    from ..device import resolve_device
    from ..map_loading import describe_map
    from ..mapping import add_method, build_map

    if not cfg.out:
        raise ValueError("out is empty: set it to the map directory to write")
    if bool(cfg.data) == bool(cfg.bag):
        raise ValueError("set exactly one of data (a dataset directory) and bag (a rosbag2)")
    device = resolve_device(cfg.device)
    stages = added_methods(cfg)  # bad add_methods / add_overrides fail before the build
    method_cfg = load_method_config(cfg.method, cfg.config_file or None, cfg.overrides.split())
    map_cfg = method_cfg.map if hasattr(method_cfg, "map") else method_cfg
    if cfg.max_size:
        map_cfg.train.max_image_size = cfg.max_size
    if cfg.steps:
        map_cfg.train.steps = cfg.steps
    out = Path(cfg.out)
    if cfg.data:
        data = load_dataset(cfg.data)
    else:
        data = posed_images_from_bag(cfg, out.parent / f".{out.name}.bag_images", log)
    out = build_map(
        data,
        out,
        method=cfg.method,
        config=method_cfg,
        device=device,
        progress=progress,
        log=log,
        evaluate=cfg.evaluate,
        max_eval_views=cfg.max_eval_views,
    )
    for method, overrides in stages.items():
        log(f"stage: add-method {method}")
        add_method(out, method, data, config=load_method_config(method, None, overrides), device=device,
                   progress=progress, log=log)
    info = describe_map(out)
    return {"map": str(out), "size_mb": info["size_mb"], "training": info["training"], "metrics": info["metrics"],
            "components": sorted(info["components"])}


def added_methods(cfg: MapBuilderConfig) -> dict[str, list[str]]:
    """``add_methods`` in order, each with its ``add_overrides`` (METHOD:key=value)."""
    from ..methods.registry import get_method

    methods = cfg.add_methods.split()
    for m in methods:
        if get_method(m).add_to_map is None:
            raise ValueError(f"add_methods: method {m!r} cannot be added to a map (it builds its own)")
    out: dict[str, list[str]] = {m: [] for m in methods}
    for item in cfg.add_overrides.split():
        method, sep, assignment = item.partition(":")
        if not sep or "=" not in assignment:
            raise ValueError(f"add_overrides: {item!r} is not METHOD:key.path=value")
        if method not in out:
            raise ValueError(f"add_overrides: {item!r} is for {method!r}, which is not in add_methods "
                             f"({cfg.add_methods!r})")
        out[method].append(assignment)
    return out


# ------------------------------------------------------------------ the node
def main(args: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import String

    from ..config_io import ConfigError
    from ..data.posed_images import DatasetError
    from ..map_bundle import MapError
    from .params import (
        MAP_BUILDER_NAME,
        config_from_node,
        declare_parameters,
        parameter_specs,
    )

    rclpy.init(args=args)
    node = Node(MAP_BUILDER_NAME)
    log = node.get_logger()
    try:
        specs = declare_parameters(node, parameter_specs(MapBuilderConfig()))
        cfg = config_from_node(node, specs, cls=MapBuilderConfig)
    except ValueError as e:
        log.fatal(f"error: {e}")
        node.destroy_node()
        rclpy.try_shutdown()
        return EXIT_USAGE
    progress_pub = node.create_publisher(String, "~/progress", 10)

    def emit(record: dict) -> None:
        log.info(format_progress(record))
        progress_pub.publish(String(data=json.dumps(record)))

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = build_map_from_config(cfg, ProgressReporter(emit, cfg.progress_period_s), log.info)
        except (DatasetError, MapError, ConfigError, FileNotFoundError, ValueError, RuntimeError, OSError) as e:
            outcome["error"] = f"{type(e).__name__}: {e}" if isinstance(e, OSError) else str(e)
        except BaseException as e:  # noqa: BLE001 - reported, never swallowed silently
            outcome["error"] = f"internal error: {type(e).__name__}: {e}"
            import traceback

            log.error(traceback.format_exc())

    worker = threading.Thread(target=run, name="map_builder", daemon=True)
    worker.start()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = EXIT_OK
    try:
        while worker.is_alive():
            executor.spin_once(timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        log.warning("interrupted (a map build resumes from its last checkpoint when rerun)")
        code = EXIT_INTERRUPTED
    if code == EXIT_OK:
        if "error" in outcome:
            log.error(f"error: {outcome['error']}")
            progress_pub.publish(String(data=json.dumps({"stage": "failed", "error": outcome["error"], "finished": True})))
            code = EXIT_USAGE
        else:
            summary = outcome["summary"]
            log.info(f"map written: {summary['map']} ({summary['size_mb']} MB)")
            progress_pub.publish(String(data=json.dumps({"stage": "written", "map": summary["map"], "finished": True})))
            print(json.dumps(summary, indent=1, default=str))
        executor.spin_once(timeout_sec=0.2)  # let the last progress message out
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
