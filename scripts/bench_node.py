#!/usr/bin/env python3
"""Soak benchmark of the relocalization node: a 30 Hz camera stream for N minutes.

Starts ``nodes/relocalization_node`` (config/relocalize.yaml, ``autostart``) as its own
process against a map, then publishes the procedural scene's trajectory in order as a
live camera would: rgb8 images with CameraInfo at ``--rate`` Hz (stamped now), TF
``odom -> base_link`` at every image stamp (true motion, from a fixed ``map -> odom``)
and the static camera extrinsic. It reports

* frames published, frames localized per second, accepted fraction,
* per-frame latency: the node's localization time (status.total_latency_ms) and
  end-to-end (status received - image stamp), p50/p95/max,
* position/rotation error of accepted fixes against the ground truth,
* the node's RSS over time: samples, the peak of each of 6 equal windows and the slope
  of those peaks after the first (warm-up) window (flat memory: no queue grows when the
  node cannot keep up, it drops to the newest frame),

and writes them as JSON (``--out``). DDS is confined to loopback (as in the tests).

    nice -n 19 python scripts/bench_node.py --map MAP --data DATASET --seconds 30 --out outputs/bench_node.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
S = 1_000_000_000
CAMERA_FRAME = "camera_optical_frame"


def loopback_env() -> dict[str, str]:
    """This process's DDS settings (and the node's): loopback only, a domain of our own."""
    env = {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": os.environ.get("NEURAL_RELOC_BENCH_DOMAIN_ID", str((os.getpid() + 37) % 100 + 1)),
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(REPO_ROOT / "config" / "dds" / "fastdds_loopback.xml"),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    for var in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER"):
        os.environ.pop(var, None)
    child = dict(os.environ)
    child["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, child.get("PYTHONPATH", "").split(os.pathsep))])
    return child


def percentiles(values, ps=(50, 95)) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {f"p{p}": None for p in ps} | {"max": None, "n": 0}
    return {f"p{p}": round(float(np.percentile(a, p)), 2) for p in ps} | {"max": round(float(a.max()), 2), "n": int(a.size)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True, help="map bundle directory")
    ap.add_argument("--data", required=True, help="the map's dataset (procedural transforms.json folder): images + ground truth")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, help="duration in seconds (overrides --minutes)")
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    ap.add_argument("--rss-period", type=float, default=2.0, help="seconds between RSS samples")
    ap.add_argument("--out", default="outputs/bench_node.json")
    ap.add_argument("-p", "--param", action="append", default=[], help="extra node parameter name:=value")
    args = ap.parse_args(argv)
    duration_s = args.seconds if args.seconds is not None else 60.0 * args.minutes

    env = loopback_env()
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from neural_reloc.msg import RelocalizationStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import (
        DurabilityPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from neural_reloc.data import load_dataset
    from neural_reloc.geometry.frames import (
        body_from_optical_extrinsic,
        opencv_c2w_from_opengl_c2w,
    )
    from neural_reloc.geometry.se3 import (
        invert_pose,
        make_pose,
        pose_error,
        rotation_from_rotvec,
    )
    from neural_reloc.ros.conversions import (
        image_msg_from_rgb,
        matrix_from_pose_msg,
        ns_to_stamp,
        stamp_to_ns,
        transform_stamped,
    )

    data = load_dataset(args.data)
    n_views = len(data)
    print(f"loading {n_views} frames of {args.data} ...", flush=True)
    images = [image_msg_from_rgb(data.image(i)) for i in range(n_views)]
    camera = data.camera(0)
    map_from_optical_gt = [opencv_c2w_from_opengl_c2w(T) for T in data.c2w_opengl]
    base_from_optical = body_from_optical_extrinsic(make_pose(np.eye(3), [0.1, 0.0, 0.3]))
    map_from_odom = make_pose(rotation_from_rotvec([0, 0, math.radians(20.0)]), [0.5, -0.3, 0.0])
    odom_from_base = [invert_pose(map_from_odom) @ T @ invert_pose(base_from_optical) for T in map_from_optical_gt]
    info = CameraInfo(width=camera.width, height=camera.height, distortion_model="plumb_bob")
    info.header.frame_id = CAMERA_FRAME
    info.k = camera.ros_k().reshape(9).tolist()
    info.d = camera.distortion.tolist()

    log = tempfile.NamedTemporaryFile(mode="w+", prefix="bench_node_", suffix=".log", delete=False)  # noqa: SIM115 - kept
    cmd = [sys.executable, str(REPO_ROOT / "nodes" / "relocalization_node"), "--ros-args",
           "--params-file", str(REPO_ROOT / "config" / "relocalize.yaml"),
           "-p", f"map_path:={args.map}", "-p", "autostart:=true"]
    for p in args.param:
        cmd += ["-p", p]
    node_proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    ps_node = psutil.Process(node_proc.pid)

    rclpy.init()
    node = rclpy.create_node("bench_node_driver")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
    tf_pub = node.create_publisher(TFMessage, "/tf", reliable)
    tf_static_pub = node.create_publisher(
        TFMessage, "/tf_static",
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    tf_static_pub.publish(TFMessage(transforms=[transform_stamped(base_from_optical, "base_link", CAMERA_FRAME, 0)]))

    published: dict[int, int] = {}  # stamp -> view index
    statuses: list[tuple[float, object]] = []
    diagnostics: list[dict] = []
    node.create_subscription(RelocalizationStatus, "/relocalization_node/status",
                             lambda m: statuses.append((time.time(), m)), reliable)

    def on_diag(arr):
        for st in arr.status:
            if st.name.startswith("relocalization_node"):
                diagnostics.append({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)

    def spin_for(seconds: float, until=None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.02)
            if until is not None and until():
                return True
            if node_proc.poll() is not None:
                raise RuntimeError(f"the node exited ({node_proc.returncode}); log: {log.name}")
        return False

    code = 0
    try:
        t_load = time.monotonic()
        if not spin_for(600.0, lambda: diagnostics and diagnostics[-1].get("lifecycle_state") == "active"):
            raise RuntimeError(f"the node did not become active; log: {log.name}")
        startup_s = time.monotonic() - t_load
        spin_for(30.0, lambda: image_pub.get_subscription_count() > 0 and tf_pub.get_subscription_count() > 0)
        print(f"node active after {startup_s:.1f} s; streaming {args.rate:g} Hz for {duration_s:g} s", flush=True)

        rss: list[tuple[float, float]] = []
        period = 1.0 / args.rate
        t0 = time.monotonic()
        next_frame, next_rss, k = t0, t0, 0
        while (now := time.monotonic()) < t0 + duration_s:
            if now >= next_frame:
                i = k % n_views
                stamp = time.time_ns()
                tf_pub.publish(TFMessage(transforms=[transform_stamped(odom_from_base[i], "odom", "base_link", stamp)]))
                info.header.stamp = ns_to_stamp(stamp)
                info_pub.publish(info)
                img = images[i]
                img.header.stamp, img.header.frame_id = ns_to_stamp(stamp), CAMERA_FRAME
                image_pub.publish(img)
                published[stamp] = i
                k += 1
                next_frame += period
                if next_frame < now - 1.0:  # fell far behind (a stall): do not burst
                    next_frame = now
            if now >= next_rss:
                rss.append((round(now - t0, 2), ps_node.memory_info().rss / 2**20))
                next_rss += args.rss_period
            executor.spin_once(timeout_sec=max(0.0, min(next_frame, next_rss) - time.monotonic()))
        spin_for(5.0)  # the last results
        elapsed = time.monotonic() - t0

        processed = [(t, m) for t, m in statuses if stamp_to_ns(m.header.stamp) in published]
        accepted = [(t, m) for t, m in processed if m.success]
        errors = []
        for _, m in accepted:
            gt = map_from_optical_gt[published[stamp_to_ns(m.header.stamp)]]
            errors.append(pose_error(matrix_from_pose_msg(m.pose.pose), gt))
        errors = np.array(errors) if errors else np.zeros((0, 2))
        rss_t = np.array([t for t, _ in rss])
        rss_mb = np.array([v for _, v in rss])
        # RSS swings by the per-frame working set (render/match buffers), so compare the
        # peaks of equal time windows: flat memory = flat window peaks after warm-up.
        windows = np.array_split(np.arange(rss_mb.size), min(6, rss_mb.size)) if rss_mb.size else []
        window_peaks = [(float(rss_t[w].mean()), float(rss_mb[w].max())) for w in windows if w.size]
        late = window_peaks[1:]  # the first window is warm-up (first frame, allocator growth)
        slope = float(np.polyfit([t / 60.0 for t, _ in late], [v for _, v in late], 1)[0]) if len(late) >= 3 else None
        last_diag = diagnostics[-1] if diagnostics else {}
        reasons: dict[str, int] = {}
        for _, m in processed:
            if not m.success:
                key = m.reason.split(":")[0][:80]
                reasons[key] = reasons.get(key, 0) + 1
        report = {
            "map": str(args.map),
            "dataset": str(args.data),
            "node_params": args.param,
            "duration_s": round(elapsed, 1),
            "startup_s": round(startup_s, 1),
            "input_rate_hz": args.rate,
            "frames_published": len(published),
            "frames_localized": len(processed),
            "frames_accepted": len(accepted),
            "localized_per_s": round(len(processed) / elapsed, 3),
            "accepted_fraction": round(len(accepted) / len(processed), 3) if processed else None,
            "failure_reasons": reasons,
            "prior_sources": {s: sum(1 for _, m in processed if m.prior_source == s) for s in {m.prior_source for _, m in processed}},
            "localization_latency_ms": percentiles([m.total_latency_ms for _, m in processed]),
            "end_to_end_latency_ms": percentiles([(t - stamp_to_ns(m.header.stamp) / S) * 1e3 for t, m in processed]),
            "position_error_cm": percentiles(errors[:, 0] * 100) if len(errors) else None,
            "rotation_error_deg": percentiles(errors[:, 1]) if len(errors) else None,
            "rss_mb": {
                "start": round(float(rss_mb[0]), 1) if rss_mb.size else None,
                "end": round(float(rss_mb[-1]), 1) if rss_mb.size else None,
                "max": round(float(rss_mb.max()), 1) if rss_mb.size else None,
                "window_peaks": [[round(t, 1), round(v, 1)] for t, v in window_peaks],
                "peak_slope_after_warmup_mb_per_min": round(slope, 2) if slope is not None else None,
                "samples": [[t, round(v, 1)] for t, v in rss],
            },
            "node_diagnostics": {k: last_diag.get(k) for k in (
                "frames_received", "frames_dropped", "frames_processed", "input_rate_hz", "processing_rate_hz",
                "latency_ms_p50", "latency_ms_p95", "device", "tf_backend", "image_backend")},
            "node_log": log.name,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        summary = {k: v for k, v in report.items() if k not in ("rss_mb", "node_log")}
        summary["rss_mb"] = {k: v for k, v in report["rss_mb"].items() if k != "samples"}
        print(json.dumps(summary, indent=1))
        print(f"wrote {out}")
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
        if node_proc.poll() is None:
            node_proc.send_signal(signal.SIGINT)
            try:
                node_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node_proc.kill()
                node_proc.wait()
    return code


if __name__ == "__main__":
    sys.exit(main())
