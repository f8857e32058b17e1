"""Live bag evaluation over loopback DDS (requires ROS; see test/conftest.py).

1. The replay/record plumbing against a stand-in node (this file run as a child,
   ``python test_eval_live.py echo-node``): every image arrives in lockstep, after its
   TF and camera info, with /clock at its bag time (use_sim_time), and what the stand-in
   publishes on ~/status comes back, recorded, as frame records.
2. With the lead's ``crossfire_map`` fixture: ``eval-bag --live`` runs the real
   relocalization_node on a bag of the map's held-out frames and its statuses agree
   frame by frame with the offline evaluation.

Every process of a test, the player included, runs with the ``ros_env`` environment
(loopback DDS, a domain of its own).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.requires_ros

REPO_ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()
ECHO_NODE = "relocalization_node"  # the stand-in takes the real node's name and topics
CHILD_TIMEOUT_S = 120


# ----------------------------------------------------------------- child roles
def _echo_node() -> int:
    """Stand-in for relocalization_node: for each image, a status with the image stamp,
    the sim time when it arrived, and how many /tf, /tf_static and camera infos it had."""
    import rclpy
    from neural_reloc.msg import RelocalizationStatus
    from rclpy.parameter import Parameter
    from rclpy.qos import (
        DurabilityPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    rclpy.init()
    node = rclpy.create_node(ECHO_NODE, parameter_overrides=[Parameter("use_sim_time", value=True)])
    seen = {"tf": 0, "static": 0, "info": 0, "images": 0}
    pub = node.create_publisher(RelocalizationStatus, "~/status", 10)

    def on_image(msg: Image) -> None:
        k = seen["images"]  # images before this one
        st = RelocalizationStatus()
        st.header = msg.header
        st.header.frame_id = "map"
        st.success = True
        st.method = "echo"
        st.child_frame_id = msg.header.frame_id
        st.pose.pose.position.x = float(k)
        st.pose.pose.orientation.w = 1.0
        st.num_matches, st.num_inliers = 100, 50 + k
        st.stage_names, st.stage_latency_ms = ["echo"], [1.0]
        st.prior_source = "odometry"
        now = node.get_clock().now().nanoseconds
        st.reason = json.dumps({"clock_ns": now, **seen})
        seen["images"] += 1
        pub.publish(st)

    node.create_subscription(Image, "/camera/image_raw", on_image, qos_profile_sensor_data)
    node.create_subscription(CameraInfo, "/camera/camera_info", lambda m: seen.__setitem__("info", seen["info"] + 1), qos_profile_sensor_data)
    node.create_subscription(TFMessage, "/tf", lambda m: seen.__setitem__("tf", seen["tf"] + 1), 100)
    static_qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(TFMessage, "/tf_static", lambda m: seen.__setitem__("static", seen["static"] + 1), static_qos)
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    return 0


def _replay(bag: str, recorded: str) -> int:
    from neural_reloc.ros.bag_replay import ReplayConfig, replay_bag

    print(json.dumps(replay_bag(bag, recorded, ReplayConfig(ready_timeout_s=60, frame_timeout_s=30))), flush=True)
    return 0


# ----------------------------------------------------------------- tests
def _spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SELF), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def small_bag(tmp_path):
    from neural_reloc.bags import BagFromDatasetConfig, write_bag_from_dataset
    from neural_reloc.data import load_dataset
    from neural_reloc.data.procedural import (
        ProceduralSceneConfig,
        generate_procedural_scene,
    )

    data = load_dataset(generate_procedural_scene(tmp_path / "scene", ProceduralSceneConfig(width=64, height=48, num_frames=10)))
    write_bag_from_dataset(data, tmp_path / "bag", BagFromDatasetConfig())
    return tmp_path / "bag", data


def test_replay_into_a_node_and_record_its_statuses(small_bag, tmp_path, ros_env):
    from neural_reloc.bags import BagReader, GroundTruthConfig
    from neural_reloc.bags.reader import BagFrames
    from neural_reloc.eval.live import live_records, read_statuses
    from neural_reloc.ros.bag_replay import stop_node

    bag, data = small_bag
    node = _spawn(["echo-node"], ros_env)
    try:
        assert node.stdout.readline().strip() == "READY"
        player = subprocess.run(
            [sys.executable, str(SELF), "replay", str(bag), str(tmp_path / "rec")],
            env=ros_env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
        )
    finally:
        # The stand-in's exit is not under test: SIGINT as for a real node, then SIGKILL
        # (a SIGTERM'd rclpy process once stayed in DDS teardown past 30 s on CI).
        stop_node(node)
        node.stdout.close()
    assert player.returncode == 0, player.stdout + player.stderr
    summary = json.loads(player.stdout.strip().splitlines()[-1])
    assert summary["images"] == len(data) and summary["images_without_status"] == 0

    statuses = read_statuses(tmp_path / "rec")
    stamps = sorted(statuses)
    assert len(stamps) == len(data) and all(len(v) == 1 for v in statuses.values())
    for k, stamp in enumerate(stamps):
        seen = json.loads(statuses[stamp][0].reason)
        assert seen["images"] == k  # lockstep: one image at a time, none dropped
        assert seen["static"] == 1 and seen["tf"] >= k + 1 and seen["info"] >= k + 1  # its TF and camera info first
        assert stamp - 100_000_000 < seen["clock_ns"] <= stamp  # /clock drives the node's sim time
    with BagReader(bag) as reader:
        records, warnings = live_records(tmp_path / "rec", BagFrames(reader, ground_truth=GroundTruthConfig()))
    assert warnings == []
    assert [r["name"] for r in records] == data.names
    assert [r["est_xyz"][0] for r in records] == [float(k) for k in range(len(data))]
    assert [r["num_inliers"] for r in records] == [50 + k for k in range(len(data))]
    assert all(r["success"] and r["prior_source"] == "odometry" and r["t_err_m"] is not None for r in records)


def test_live_node_gets_the_method_and_only_the_users_settings(tmp_path):
    """eval-bag --live names the map's method on the node and passes only the settings
    the user gave, under the method's name: the node, like the offline run, keeps the
    map's stored settings for everything else (a node default never overrides them)."""
    from neural_reloc.eval.eval_bag import EvalBagConfig
    from neural_reloc.map_bundle import MANIFEST_NAME
    from neural_reloc.ros.bag_replay import node_params_for

    (tmp_path / MANIFEST_NAME).write_text(json.dumps({
        "format_version": 1, "method": "crossfire", "scene": {"mode": "none"},
        "reference_views": {"names": [], "cameras": [], "c2w_opengl": []},
        "files": {"weights.safetensors": {"bytes": 0, "sha256": "0"}},
        "config": {"localization": {"render_samples": 24, "pnp": {"reprojection_threshold_px": 2.0}}},
    }))
    params = node_params_for(EvalBagConfig(), "cpu", ["localization.max_iterations=2", "localization.pnp.seed=3"], tmp_path)
    assert params["method"] == "crossfire"
    assert params["crossfire.max_iterations"] == 2 and params["crossfire.pnp.seed"] == 3
    assert not [k for k in params if k.startswith(("crossfire.render_samples", "localization."))]
    assert not [k for k in node_params_for(EvalBagConfig(), "cpu", None, tmp_path) if k.startswith("crossfire.")]
    with pytest.raises(ValueError, match="only localization"):
        node_params_for(EvalBagConfig(), "cpu", ["train.cnn_steps=3"], tmp_path)


def test_live_node_agrees_with_offline_frame_by_frame(crossfire_map, tmp_path, ros_env):
    from neural_reloc.bags import BagFromDatasetConfig, write_bag_from_dataset
    from neural_reloc.data import load_dataset

    map_path, data_dir = crossfire_map
    data = load_dataset(data_dir)
    write_bag_from_dataset(data, tmp_path / "bag", BagFromDatasetConfig(split="test"))
    out = tmp_path / "ev"
    run = subprocess.run(
        [sys.executable, "-m", "neural_reloc.cli", "eval-bag", "--bag", str(tmp_path / "bag"), "--map", str(map_path),
         "--out", str(out), "--device", "cpu", "--live"],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO_ROOT,
    )
    node_log = (out / "live" / "node.log").read_text() if (out / "live" / "node.log").is_file() else ""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + node_log[-3000:]
    agreement = json.loads((out / "agreement.json").read_text())
    assert agreement["agree"] and agreement["frames_compared"] == len(data.indices("test")), agreement
    offline = json.loads((out / "results.json").read_text())
    live = json.loads((out / "live" / "results.json").read_text())
    assert live["status"] == "ok" and live["summary"]["frames"] == offline["summary"]["frames"]
    assert offline["summary"]["accepted"] > 0  # poses were compared, not only failures
    assert live["summary"]["accepted"] == offline["summary"]["accepted"]


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "echo-node":
        sys.exit(_echo_node())
    if role == "replay":
        sys.exit(_replay(sys.argv[2], sys.argv[3]))
    raise SystemExit(f"unknown role {role}")
