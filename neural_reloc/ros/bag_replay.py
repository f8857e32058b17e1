"""Live bag evaluation: replay a bag into the relocalization node over DDS, record what
the node says, and score that like the offline evaluator (``eval-bag --live``).

A ``ros2 bag play`` / ``ros2 bag record`` substitute that needs no rosbag2_py: the bag's
raw CDR messages (images, camera infos, /tf, /tf_static) are published as they are
through rclpy, in bag time order, with ``/clock`` set to each message's bag time before
it (the node runs with ``use_sim_time``). The node's ``~/status`` (and
``~/pose_with_covariance``) are subscribed raw and written to a new bag with rosbags.

Lockstep: after each image the player waits for the node's status of that image
(its header stamp is the image stamp) before going on, so the node, which always takes
the newest image, sees every image, as the offline evaluator does. Each image is
published ``before_image_s`` after the messages before it, so that the TF and camera
info of its time have arrived (DDS keeps no order across topics).

DDS: a live evaluation is a conversation between two processes on this host, so
:func:`evaluate_bag_live` keeps DDS on loopback unless the environment already says
otherwise (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and the loopback Fast-DDS profile
of config/dds, as scripts/bootstrap.sh and test/conftest.py set them), for the player
and the node it starts alike.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..bags import messages as m
from ..bags.config import BagTopics
from ..bags.errors import BagError
from ..bags.storage import BagReader

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ReplayConfig:
    #: the bag topics published to the node (image, camera_info, tf, tf_static)
    topics: BagTopics = field(default_factory=BagTopics)
    #: name of the node whose ~/status and ~/pose_with_covariance are recorded
    node_name: str = "relocalization_node"
    #: publish /clock (the node must run with use_sim_time:=true)
    publish_clock: bool = True
    #: wait for the node's status of each image before publishing the next one
    lockstep: bool = True
    #: how long to wait for the node to subscribe to the image topic (map loading)
    ready_timeout_s: float = 300.0
    #: how long to wait for the status of one image
    frame_timeout_s: float = 300.0
    #: pause before each image (the messages before it arrive first)
    before_image_s: float = 0.05
    #: after the last image, wait this long for outputs still in flight
    drain_s: float = 0.5
    #: replay only the bag up to (not including) this image (0: all images)
    max_images: int = 0

    @property
    def status_topic(self) -> str:
        return f"/{self.node_name}/status"

    @property
    def pose_topic(self) -> str:
        return f"/{self.node_name}/pose_with_covariance"


def _rclpy_class(msgtype: str):
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as e:
        raise BagError(f"cannot publish {msgtype}: its Python message class is not installed ({e})") from None


def _qos(transient_local: bool = False, depth: int = 10):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, depth),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


def _image_stamp_ns(raw: bytes, msgtype: str) -> int:
    return m.stamp_to_ns(m.deserialize(raw, msgtype).header.stamp)


def replay_bag(bag_path: str | Path, recorded_bag: str | Path, config: ReplayConfig | None = None, progress: bool = False) -> dict:
    """Play ``bag_path`` into the running node and record its outputs to
    ``recorded_bag`` (a new mcap bag). Returns counts and the images without a status."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    cfg = config or ReplayConfig()
    tp = cfg.topics
    recorded_bag = Path(recorded_bag)
    if recorded_bag.exists():
        raise BagError(f"{recorded_bag} exists already")
    reader = BagReader(bag_path)
    replayed = [t for t in (tp.image, tp.camera_info, tp.tf, tp.tf_static) if t in reader.topics]
    reader.require_topic(tp.image, m.IMAGE_TYPES, "image")
    n_images = reader.topics[tp.image].count
    if cfg.max_images:
        n_images = min(n_images, cfg.max_images)

    loopback_dds_defaults(os.environ)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("neural_reloc_bag_player", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    writer = Writer(recorded_bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    store = m.typestore()
    clock_ns = [0]
    status_stamps: set[int] = set()
    counts: dict[str, int] = {}
    try:
        pubs = {}
        for t in replayed:
            info = reader.topics[t]
            static = t == tp.tf_static
            pubs[t] = node.create_publisher(_rclpy_class(info.msgtype), t, _qos(static, info.count if static else 10))
        clock_pub = None
        if cfg.publish_clock:
            from rosgraph_msgs.msg import Clock

            clock_pub = node.create_publisher(Clock, "/clock", _qos(depth=10))

        conns = {
            cfg.status_topic: writer.add_connection(cfg.status_topic, m.RELOCALIZATION_STATUS, typestore=store),
            cfg.pose_topic: writer.add_connection(cfg.pose_topic, m.POSE_WITH_COVARIANCE_STAMPED, typestore=store),
        }

        def recorder(topic: str):
            def cb(raw: bytes) -> None:
                writer.write(conns[topic], clock_ns[0], raw)
                counts[topic] = counts.get(topic, 0) + 1
                if topic == cfg.status_topic:
                    status_stamps.add(m.stamp_to_ns(m.deserialize(raw, m.RELOCALIZATION_STATUS).header.stamp))

            return cb

        status_sub = node.create_subscription(
            _rclpy_class(m.RELOCALIZATION_STATUS), cfg.status_topic, recorder(cfg.status_topic), _qos(depth=100), raw=True
        )
        node.create_subscription(
            _rclpy_class(m.POSE_WITH_COVARIANCE_STAMPED), cfg.pose_topic, recorder(cfg.pose_topic), _qos(depth=100), raw=True
        )

        # -- wait for the node: it subscribes to images once active (map loaded)
        deadline = time.monotonic() + cfg.ready_timeout_s
        needed = [pubs[t] for t in (tp.image, tp.camera_info) if t in pubs]
        while not (all(p.get_subscription_count() > 0 for p in needed) and status_sub.get_publisher_count() > 0):
            if time.monotonic() > deadline:
                raise BagError(
                    f"the node {cfg.node_name!r} did not subscribe to {tp.image!r} / publish {cfg.status_topic!r} within "
                    f"{cfg.ready_timeout_s:.0f} s (is it running and active, with the same ROS_DOMAIN_ID?)"
                )
            executor.spin_once(timeout_sec=0.1)
        for _ in range(5):  # let discovery of the other topics settle
            executor.spin_once(timeout_sec=0.1)

        if clock_pub is not None:
            from builtin_interfaces.msg import Time
            from rosgraph_msgs.msg import Clock
        missing: list[int] = []
        bar = tqdm(total=n_images, desc="live replay", unit="frame", disable=not progress, dynamic_ncols=True)
        images_sent = 0
        # Lockstep: the last image, waiting for its status. The wait starts only after
        # the messages of the image's own bag time (its odom TF, in whatever order the
        # bag stores equal times), or the node would look that TF up in vain.
        pending: tuple[int, int] | None = None  # (image stamp, bag time)

        def settle() -> None:
            nonlocal pending
            if pending is None:
                return
            stamp = pending[0]
            pending = None
            deadline = time.monotonic() + cfg.frame_timeout_s
            while stamp not in status_stamps and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            if stamp not in status_stamps:
                missing.append(stamp)

        for msg in reader.messages(replayed):
            if pending is not None and (msg.topic == tp.image or msg.log_time_ns > pending[1]):
                settle()
            if msg.topic == tp.image and images_sent == n_images:
                break
            clock_ns[0] = msg.log_time_ns
            if clock_pub is not None:
                sec, nsec = divmod(msg.log_time_ns, m.NS_PER_S)
                clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=nsec)))
            if msg.topic == tp.image:
                end = time.monotonic() + cfg.before_image_s
                while time.monotonic() < end:
                    executor.spin_once(timeout_sec=0.01)
            pubs[msg.topic].publish(msg.raw)
            if msg.topic == tp.image:
                if cfg.lockstep:
                    pending = (_image_stamp_ns(msg.raw, msg.msgtype), msg.log_time_ns)
                images_sent += 1
                bar.update(1)
            else:
                executor.spin_once(timeout_sec=0)
        settle()
        bar.close()
        end = time.monotonic() + cfg.drain_s
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        writer.close()
        reader.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return {
        "bag": str(bag_path),
        "recorded_bag": str(recorded_bag),
        "images": n_images,
        "recorded": counts,
        "images_without_status": len(missing),
    }


LOOPBACK_PROFILE = REPO_ROOT / "config" / "dds" / "fastdds_loopback.xml"


def loopback_dds_defaults(env: dict) -> dict:
    """``env`` with DDS confined to this host where it does not say otherwise."""
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if LOOPBACK_PROFILE.is_file():
        env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(LOOPBACK_PROFILE))
    return env


# ---------------------------------------------------------------------- the node
def node_executable() -> list[str]:
    """How to start relocalization_node: the source tree's script, else the installed one."""
    src = REPO_ROOT / "nodes" / "relocalization_node"
    if src.is_file():
        return [sys.executable, str(src)]
    try:
        from ament_index_python.packages import get_package_prefix

        exe = Path(get_package_prefix("neural_reloc")) / "lib" / "neural_reloc" / "relocalization_node"
        if exe.is_file():
            return [sys.executable, str(exe)]
    except Exception:  # noqa: BLE001 - no ament index
        pass
    found = shutil.which("relocalization_node")
    if found:
        return [found]
    raise BagError("relocalization_node not found (neither nodes/ of the source tree nor an installed neural_reloc)")


def ros_param_args(params: dict) -> list[str]:
    """``--ros-args -p name:=value ...`` (values in YAML syntax, as ros2 run takes them)."""
    import yaml

    out = ["--ros-args"]
    for k, v in params.items():
        if isinstance(v, (list, tuple)):
            v = list(v)
        text = yaml.safe_dump(v, default_flow_style=True).strip()
        text = text.removesuffix("\n...")
        text = text.removesuffix("...").strip()
        out += ["-p", f"{k}:={text}"]
    return out


def start_node(map_path: str | Path, params: dict | None = None, log_path: str | Path | None = None, env: dict | None = None):
    """Start relocalization_node on ``map_path`` with ``autostart`` and
    ``use_sim_time`` (and ``params``); returns the Popen. Its output goes to ``log_path``."""
    all_params = {"map_path": str(map_path), "autostart": True, "use_sim_time": True, **(params or {})}
    cmd = node_executable() + ros_param_args(all_params)
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(env or os.environ))
    finally:
        if log_path:
            log.close()


def stop_node(proc, timeout_s: float = 20.0) -> int | None:
    """SIGINT (rclpy shuts down cleanly), then SIGKILL if it does not exit."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return proc.returncode


# ---------------------------------------------------------------------- live evaluation
def node_params_for(
    cfg, device: str | None = None, reloc_overrides: dict | list[str] | None = None, map_path: str | Path | None = None,
    method: str | None = None, global_prior: str = "",
) -> dict:
    """Node parameters that make the node decide as ``eval-bag`` with ``cfg``
    (an :class:`~neural_reloc.eval.eval_bag.EvalBagConfig`) does.

    The method (``method``, default: ``map_path``'s default) and only the localization
    settings given in ``reloc_overrides`` (relative to the method config, e.g.
    ``localization.max_iterations=2``) are passed, under the method's name: everything
    else keeps the map's stored settings on the node, as in the offline run.
    """
    from ..config_io import parse_dotted, to_dict

    fr, tp = cfg.bag.frames, cfg.bag.topics
    params = {
        "image_topic": tp.image,
        "camera_info_topic": tp.camera_info,
        "map_frame": fr.map,
        "odom_frame": fr.odom,
        "base_frame": fr.base,
        "pose_of": "camera",
        "extrinsic_source": "tf",
        # eval-bag scores in the map's world (the bag's ground truth is in it), offline and live
        "apply_map_alignment": False,
    }
    if device:
        params["device"] = device
    tracking = to_dict(cfg.tracking)
    if not cfg.bag.use_odometry:
        tracking["use_odometry"] = False
    params.update({f"tracking.{k}": v for k, v in tracking.items()})
    if isinstance(reloc_overrides, list):
        reloc_overrides = parse_dotted(reloc_overrides)
    reloc_overrides = dict(reloc_overrides or {})
    if method is None and map_path is not None:
        from ..map_bundle import read_manifest
        from ..map_loading import map_default_method

        method = map_default_method(read_manifest(map_path))
    if method:
        params["method"] = method
    if global_prior:
        params["global_prior"] = global_prior
    other = sorted(set(reloc_overrides) - {"localization"})
    if other:
        raise ValueError(f"relocalizer overrides {other}: the node takes only localization.* settings")
    if reloc_overrides and not method:
        raise ValueError("relocalizer overrides need the method (give the map or method)")

    def flatten(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                flatten(f"{prefix}{k}.", v)
            else:
                params[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v

    flatten(f"{method}.", reloc_overrides.get("localization", {}))
    return params


def evaluate_bag_live(
    bag_path: str | Path,
    out_dir: str | Path,
    cfg=None,
    *,
    map_path: str | Path | None = None,
    device: str | None = None,
    reloc_overrides: dict | list[str] | None = None,
    node_running: bool = False,
    replay: ReplayConfig | None = None,
    progress: bool = False,
    env: dict | None = None,
    method: str | None = None,
    global_prior: str = "",
) -> dict:
    """The live half of ``eval-bag --live``: start the node (unless ``node_running``),
    replay the bag into it, record its statuses to ``out_dir/recorded``, and write
    ``out_dir/results.json`` and ``report.html`` from them (same format as offline)."""
    from ..bags import BagFrames
    from ..config_io import to_dict
    from ..eval.eval_bag import (
        REPORT_NAME,
        RESULTS_FORMAT,
        RESULTS_NAME,
        EvalBagConfig,
        _now,
    )
    from ..eval.io import write_json_atomic
    from ..eval.live import live_records
    from ..eval.metrics import summarize

    cfg = cfg or EvalBagConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    replay = replay or ReplayConfig(topics=cfg.bag.topics, max_images=cfg.max_frames)
    recorded = out_dir / "recorded"
    if recorded.exists():
        shutil.rmtree(recorded)
    results = {
        "format": RESULTS_FORMAT,
        "mode": "live",
        "status": "running",
        "error": None,
        "started": _now(),
        "finished": None,
        "bag": str(bag_path),
        "map": None if map_path is None else str(map_path),
        "method": None,
        "config": to_dict(cfg),
        "input": None,
        "replay": None,
        "summary": None,
        "frames": [],
    }
    loopback_dds_defaults(os.environ)  # this process (the player), before rclpy starts
    env = loopback_dds_defaults(dict(env if env is not None else os.environ))
    proc = None
    try:
        if not node_running:
            if map_path is None:
                raise ValueError("live evaluation needs the map to start the node with")
            proc = start_node(map_path, node_params_for(cfg, device, reloc_overrides, map_path, method, global_prior), out_dir / "node.log",
                              env)
        results["replay"] = replay_bag(bag_path, recorded, replay, progress=progress)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the node exited with status {proc.returncode} during the replay (see {out_dir / 'node.log'})")
        with BagReader(bag_path) as reader:
            frames = BagFrames(reader, cfg.bag, cfg.ground_truth)
            results["input"] = frames.describe()
            records, warnings = live_records(recorded, frames, replay.status_topic, max_frames=cfg.max_frames)
        results["frames"] = records
        results["input"]["warnings"] += warnings
        methods = {r.get("method") for r in records} - {None, ""}
        results["method"] = next(iter(methods)) if len(methods) == 1 else None
        results["status"] = "ok"
    except BaseException as e:
        results["status"] = "interrupted" if isinstance(e, KeyboardInterrupt) else "error"
        results["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, BagError) else str(e)
        raise
    finally:
        if proc is not None:
            stop_node(proc)
        results["finished"] = _now()
        results["summary"] = summarize(results["frames"], cfg.recall_thresholds)
        write_json_atomic(out_dir / RESULTS_NAME, results)
        if cfg.report:
            from ..eval.report import write_report

            write_report(results, out_dir / REPORT_NAME)
    return results
