"""Settings of the relocalization node, ROS-free (mirrored 1:1 by config/relocalize.yaml).

:class:`NodeConfig` holds what only the node needs (topics, frames, QoS, TF, Nav2,
diagnostics) and nests the core's ``tracking`` config (the
:class:`~neural_reloc.tracking.TrackingConfig` of the session the node and the bag
evaluator share). The localization settings are not here: each registered method's
``LocalizationConfig`` becomes the parameters under its name (``crossfire.min_inliers``),
declared unset, so that only what a user sets overrides the map's stored settings (see
:mod:`neural_reloc.ros.params`). Every field carries its ROS parameter description,
range or choices, and whether it is read-only (unsafe to change on a running node) in
its metadata (:func:`neural_reloc.config_fields.setting`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config_fields import setting, setting_problems
from ..eval.debug_image import DebugImageConfig
from ..tracking import TrackingConfig

#: Image QoS presets (``image_qos``): best-effort "sensor data" (matches best-effort and
#: reliable publishers) or reliable (only reliable publishers).
IMAGE_QOS_CHOICES = ("sensor_data", "reliable")
IMAGE_TRANSPORT_CHOICES = ("raw", "compressed")
POSE_OF_CHOICES = ("camera", "base")
EXTRINSIC_SOURCE_CHOICES = ("tf", "parameter")
DEVICE_HELP = "auto (CUDA if present), cpu or cuda[:N]"


@dataclass
class NodeConfig:
    """Parameters of ``relocalization_node``; nested configs become dotted names."""

    # -- map -------------------------------------------------------------------------
    map_path: str = setting(
        "",
        "Map bundle directory (written by neural-reloc build-map or the map_builder node). "
        "Required. Setting it on a running node loads the new map (the old one stays if "
        "that fails) and restarts tracking.",
    )
    method: str = setting(
        "",
        "Relocalization method: one of the map's methods (neural-reloc info lists them), e.g. "
        "crossfire; empty: the map's default. Its settings are the parameters under its name "
        "(e.g. crossfire.min_inliers); those left unset keep the map's stored values. A method "
        "the map does not have fails configure.",
        read_only=True,
    )
    global_prior: str = setting(
        "",
        "Another of the map's methods that needs no prior (e.g. kscr) gives the frames without a prior "
        "(lost tracking, no initial pose) their first pose, instead of the method's own retrieval; "
        "empty: retrieval.",
        read_only=True,
    )
    device: str = setting("auto", f"Device the map is loaded onto: {DEVICE_HELP}.", read_only=True)
    autostart: bool = setting(
        True,
        "Configure and activate by itself at startup; with a bad map_path it retries when "
        "map_path is set again. Set false when a lifecycle manager (e.g. Nav2's, with "
        "bond_timeout 0.0) drives the node.",
        read_only=True,
    )
    continuous: bool = setting(
        True,
        "Localize incoming frames continuously (always the newest one); false: only on "
        "~/relocalize calls and on /initialpose.",
    )
    apply_map_alignment: bool = setting(
        True,
        "Publish and receive poses in map_frame through the map's map_from_world (neural-reloc align); "
        "false: in the map's own world, ignoring it (eval-bag --live does, to score in world as eval-bag does).",
        read_only=True,
    )
    # -- topics and QoS --------------------------------------------------------------
    image_topic: str = setting(
        "camera/image_raw",
        "sensor_msgs/Image input (relative names resolve in the node's namespace).",
        read_only=True,
    )
    camera_info_topic: str = setting(
        "camera/camera_info",
        "sensor_msgs/CameraInfo input; each image uses the CameraInfo with its stamp when one came, else the newest.",
        read_only=True,
    )
    image_transport: str = setting(
        "raw",
        "raw: sensor_msgs/Image on image_topic; compressed: sensor_msgs/CompressedImage on "
        "image_topic/compressed (image_transport's naming: JPEG or PNG, as "
        "compressed_image_transport publishes).",
        choices=IMAGE_TRANSPORT_CHOICES,
        read_only=True,
    )
    rectified: bool = setting(
        False,
        "The images are rectified (image_rect): the camera is CameraInfo's projection matrix P "
        "without distortion. False: raw images, K and the distortion D.",
        read_only=True,
    )
    initialpose_topic: str = setting(
        "initialpose",
        "geometry_msgs/PoseWithCovarianceStamped of base_frame in map_frame: a prior for "
        "the next frame (e.g. from RViz); in Nav2 mode fixes are sent to AMCL here when needed.",
        read_only=True,
    )
    image_qos: str = setting(
        "sensor_data",
        "QoS of the image and camera_info subscriptions: sensor_data (best effort, matches "
        "every publisher) or reliable.",
        choices=IMAGE_QOS_CHOICES,
        read_only=True,
    )
    image_qos_depth: int = setting(
        1,
        "History depth of the image subscription. The node always localizes the newest "
        "frame and drops older ones while busy, so 1 is enough.",
        range=(1, 100),
        read_only=True,
    )
    # -- frames (REP-105) ------------------------------------------------------------
    map_frame: str = setting("map", "Fixed frame of the map (the frame of every published pose).", read_only=True)
    odom_frame: str = setting(
        "odom",
        "Odometry frame: odom->base_link from TF carries the fix between frames, and the "
        "node publishes map->odom. Empty: no odometry, the node publishes map->base_frame "
        "(set base_frame to the camera's optical frame for a camera without a robot).",
        read_only=True,
    )
    base_frame: str = setting("base_link", "Robot body frame (REP-105 base_link).", read_only=True)
    camera_frame: str = setting(
        "",
        "Camera optical frame (REP-103: x right, y down, z forward) of the images; empty: "
        "the images' header.frame_id.",
        read_only=True,
    )
    pose_of: str = setting(
        "camera",
        "Frame whose pose ~/pose and ~/pose_with_covariance carry: camera (the optical "
        "frame) or base (base_frame, through the camera extrinsic).",
        choices=POSE_OF_CHOICES,
    )
    # -- camera extrinsic --------------------------------------------------------------
    extrinsic_source: str = setting(
        "tf",
        "Where base_frame -> camera comes from: tf (looked up, normally a static "
        "transform) or parameter (base_from_camera_xyz / _quat_xyzw).",
        choices=EXTRINSIC_SOURCE_CHOICES,
    )
    # (setting gives lists a default_factory, so the default is not shared)
    base_from_camera_xyz: list[float] = setting(  # noqa: RUF009
        [0.0, 0.0, 0.0], "Camera position in base_frame, metres (extrinsic_source: parameter)."
    )
    base_from_camera_quat_xyzw: list[float] = setting(  # noqa: RUF009
        [0.0, 0.0, 0.0, 1.0], "Camera orientation in base_frame, quaternion x y z w (extrinsic_source: parameter)."
    )
    base_from_camera_is_optical: bool = setting(
        True,
        "The extrinsic parameters give the optical frame (x right, y down, z forward); "
        "false: the camera body frame (x forward, y left, z up).",
    )
    # -- TF ----------------------------------------------------------------------------
    publish_tf: bool = setting(
        True,
        "Publish map->odom (REP-105), or map->base_frame without odom_frame, on /tf. Never in "
        "nav2_mode: there AMCL owns map->odom.",
    )
    tf_lookup_timeout_s: float = setting(
        0.1, "How long to wait for odom->base_link at an image stamp before using the frame without odometry.",
        range=(0.0, 10.0),
    )
    tf_cache_s: float = setting(10.0, "Seconds of TF history kept for lookups.", range=(1.0, 3600.0), read_only=True)
    transform_tolerance_s: float = setting(
        1.0,
        "map->odom is republished stamped now + this (as AMCL, whose default is 1.0 s), so "
        "that lookups at the newest odometry succeed; keep it several tf_republish_period_s.",
        range=(0.0, 10.0),
    )
    tf_republish_period_s: float = setting(
        0.1, "Period of the map->odom republication, seconds.", range=(0.01, 10.0), read_only=True
    )
    # -- Nav2 --------------------------------------------------------------------------
    nav2_mode: bool = setting(
        False,
        "Run beside Nav2's AMCL: no TF from this node (AMCL publishes map->odom); a confident "
        "fix (tracking.accept_* thresholds) is sent to AMCL on initialpose_topic, as a base_frame "
        "pose with the x, y and yaw variances AMCL reads, only when needed: AMCL has no pose yet, "
        "is unsure (nav2_amcl_max_*), disagrees with the fix (nav2_max_disagreement_*), or on "
        "~/relocalize.",
        read_only=True,
    )
    amcl_pose_topic: str = setting(
        "amcl_pose", "AMCL's pose (PoseWithCovarianceStamped, transient local), in Nav2 mode.", read_only=True
    )
    nav2_min_interval_s: float = setting(
        5.0,
        "At least this long between two poses sent to AMCL; one AMCL has not answered on "
        "amcl_pose_topic is sent again after it.",
        range=(0.0, 3600.0),
    )
    nav2_amcl_max_position_std_m: float = setting(
        0.3, "AMCL is unsure (and gets the fix) when its x/y standard deviation exceeds this.", range=(0.0, 100.0)
    )
    nav2_amcl_max_yaw_std_deg: float = setting(
        10.0, "AMCL is unsure (and gets the fix) when its yaw standard deviation exceeds this.", range=(0.0, 180.0)
    )
    nav2_max_disagreement_m: float = setting(
        0.3,
        "AMCL gets the fix when its pose (carried to the image stamp by odometry) is further than "
        "this from the fix, in x/y.",
        range=(0.0, 100.0),
    )
    nav2_max_disagreement_deg: float = setting(
        10.0, "AMCL gets the fix when its yaw differs from the fix's by more than this.", range=(0.0, 180.0)
    )
    nav2_min_position_std_m: float = setting(
        0.05, "Lower bound on the x/y standard deviation sent to Nav2 (AMCL needs spread).", range=(0.0, 10.0)
    )
    nav2_min_yaw_std_deg: float = setting(
        2.0, "Lower bound on the yaw standard deviation sent to Nav2.", range=(0.0, 180.0)
    )
    # -- diagnostics --------------------------------------------------------------------
    diagnostics_period_s: float = setting(
        1.0, "Period of /diagnostics, seconds (also the window of the reported rates).", range=(0.1, 60.0),
        read_only=True,
    )
    # -- ~/debug_image (drawn only while it has a subscriber) -------------------------------
    debug_image: DebugImageConfig = field(default_factory=DebugImageConfig)
    # -- the core's configs --------------------------------------------------------------
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def validate_node_config(cfg: NodeConfig) -> NodeConfig:
    """Raise ValueError naming every parameter whose value is not allowed."""
    problems = setting_problems(cfg)
    if len(cfg.base_from_camera_xyz) != 3 or not all(math.isfinite(v) for v in cfg.base_from_camera_xyz):
        problems.append(f"base_from_camera_xyz={list(cfg.base_from_camera_xyz)} must be 3 finite numbers")
    q = list(cfg.base_from_camera_quat_xyzw)
    if len(q) != 4 or not all(math.isfinite(v) for v in q) or abs(math.sqrt(sum(v * v for v in q)) - 1.0) > 1e-3:
        problems.append(f"base_from_camera_quat_xyzw={q} must be a unit quaternion (x, y, z, w)")
    for name in ("map_frame", "base_frame"):
        if not getattr(cfg, name):
            problems.append(f"{name} must not be empty")
    frames = [cfg.map_frame, cfg.base_frame] + ([cfg.odom_frame] if cfg.odom_frame else [])
    if len(set(frames)) != len(frames):
        problems.append(f"map_frame, odom_frame and base_frame must differ, got {frames}")
    for name in ("image_topic", "camera_info_topic", "initialpose_topic", "amcl_pose_topic"):
        if not getattr(cfg, name):
            problems.append(f"{name} must not be empty")
    if problems:
        raise ValueError("invalid node parameters: " + "; ".join(problems))
    return cfg


@dataclass
class MapBuilderConfig:
    """Parameters of the ``map_builder`` node (mirrored by config/build_map.yaml).

    The node builds one map and exits, so every parameter is read-only."""

    ALL_READ_ONLY = True

    data: str = setting(
        "",
        "Posed dataset to build from (any format neural-reloc build-map reads: "
        "transforms.json, COLMAP, 7-Scenes, Cambridge, LLFF, or a rosbag2 with its topics at "
        "their defaults). Set this or bag.",
    )
    bag: str = setting(
        "",
        "Bag (rosbag2, sqlite3 or mcap) to build from: images, CameraInfo and the camera pose "
        "from pose_topic or the TF pair tf_parent -> tf_child. Set this or data.",
    )
    out: str = setting("", "Map bundle directory to write (a finished identical map is reused).")
    method: str = setting("crossfire", "Map-building method (neural-reloc build-map --method).")
    config_file: str = setting(
        "", "YAML method config, or a ROS parameter file (build-map --config); empty: the method's defaults."
    )
    overrides: str = setting(
        "", "Whitespace-separated config overrides key.path=value (build-map --set), e.g. 'map.train.steps=500'."
    )
    add_methods: str = setting(
        "", "Whitespace-separated methods trained on the built map's field afterwards, each a stage of this "
        "node (neural-reloc add-method), e.g. 'kscr' (descriptor synthesis + D2S) or 'nerfmatch'.",
    )
    add_overrides: str = setting(
        "", "Whitespace-separated METHOD:key.path=value overrides of those methods' configs, e.g. "
        "'kscr:image_long_side=160 kscr:synthesis.poses.poses_per_segment=10'.",
    )
    steps: int = setting(0, "Training steps (build-map --steps); 0: the config's.", range=(0, 100_000_000))
    max_size: int = setting(
        0, "Longest image side used for training, px (build-map --max-size); 0: the config's.", range=(0, 100_000)
    )
    device: str = setting("auto", f"Training device: {DEVICE_HELP}.")
    evaluate: bool = setting(True, "Evaluate the map on the held-out test views after building.")
    max_eval_views: int = setting(0, "Evaluate at most this many held-out views (0: all).", range=(0, 1_000_000))
    # -- bag input --------------------------------------------------------------------
    image_topic: str = setting("/camera/image_raw", "Bag input: sensor_msgs/Image (or CompressedImage) topic.")
    camera_info_topic: str = setting("/camera/camera_info", "Bag input: sensor_msgs/CameraInfo topic.")
    pose_topic: str = setting(
        "",
        "Bag input: camera optical frame pose in map (PoseStamped, PoseWithCovarianceStamped, "
        "TransformStamped or Odometry); empty: the bag default /ground_truth/camera_pose unless "
        "tf_parent and tf_child are set.",
    )
    tf_parent: str = setting("", "Bag input: camera poses as the TF transform tf_parent -> tf_child (map frame).")
    tf_child: str = setting("", "Bag input: the child frame of that TF transform (the camera pose).")
    pose_body_frame: str = setting(
        "",
        "Bag input: the frame the poses are of when not the images' optical frame (e.g. "
        "base_link); the bag's static TF to the camera is applied.",
    )
    every_nth: int = setting(1, "Bag input: use every n-th image.", range=(1, 100_000))
    test_every: int = setting(
        0, "Bag input: hold out every k-th used image as a test view for evaluation (0: none).", range=(0, 100_000)
    )
    progress_period_s: float = setting(2.0, "Progress (log and ~/progress) at most this often, seconds.",
                                      range=(0.1, 3600.0))
