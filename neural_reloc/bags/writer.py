"""``bag-from-dataset``: a rosbag2 (mcap or sqlite3) from a posed dataset, without ROS.

What the bag holds (topic names and frame ids from :class:`BagTopics` /
:class:`BagFrameIds`), every message stamped at the image's time:

* ``/camera/image_raw`` (sensor_msgs/Image, rgb8) and ``/camera/camera_info``
  (sensor_msgs/CameraInfo, plumb_bob), frame ``camera_optical_frame``;
* ``/tf_static``: ``base_link -> camera_optical_frame``, the camera mounted at
  ``camera_body_xyz_in_base`` looking along base_link's x axis (REP-103);
* ``/tf``: ``odom -> base_link`` from simulated odometry (the true motion between
  frames with a systematic drift and random-walk noise, :class:`OdometryConfig`; odom
  starts at the first base pose), and the ground truth ``map ->
  gt_camera_optical_frame``;
* ``/ground_truth/camera_pose`` (geometry_msgs/PoseStamped): the true pose of the
  camera optical frame in ``map``.

The dataset's world frame is ``map``. Frames are written in dataset order (the chosen
split's frames sorted by index), at ``rate_hz`` unless the dataset has capture times.
The bag's ``metadata.yaml`` ``custom_data`` keeps the frame names
(``neural_reloc.frame_names``, JSON) so that evaluation results can name frames.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config_io import to_dict
from ..data.posed_images import PosedImages
from ..geometry.frames import (
    body_from_optical_extrinsic,
    map_from_optical_from_opengl_c2w,
)
from ..geometry.se3 import (
    invert_pose,
    make_pose,
    rotation_angle_deg,
    rotation_from_rotvec,
)
from . import messages as m
from .config import BagFrameIds, BagTopics
from .errors import BagError

STORAGES = ("mcap", "sqlite3")
FRAME_NAMES_KEY = "neural_reloc.frame_names"
SOURCE_KEY = "neural_reloc.source"


@dataclass
class OdometryConfig:
    """Simulated odometry, per step between consecutive frames (base_link motion).

    Systematic drift (deterministic, grows linearly with distance travelled):
      the step's translation is scaled by ``1 + drift_translation_per_m`` and the step
      gets an extra yaw (about base_link z) of ``drift_yaw_deg_per_m`` per metre.
    Random-walk noise (zero mean, variance grows linearly): per axis, the translation
      error has std ``noise_translation_m_per_sqrt_m * sqrt(step metres)`` and the
      rotation error (a small rotation in base_link) has variance
      ``(noise_rotation_deg_per_sqrt_m)^2 * step metres +
      (noise_rotation_deg_per_sqrt_rad)^2 * step radians``, so the values are the
      errors' std after 1 m travelled (or 1 rad turned) whatever the frame rate.
    """

    drift_translation_per_m: float = 0.02
    drift_yaw_deg_per_m: float = 1.0
    noise_translation_m_per_sqrt_m: float = 0.01
    noise_rotation_deg_per_sqrt_m: float = 0.3
    noise_rotation_deg_per_sqrt_rad: float = 0.3
    seed: int = 0


@dataclass
class BagFromDatasetConfig:
    topics: BagTopics = field(default_factory=BagTopics)
    frames: BagFrameIds = field(default_factory=BagFrameIds)
    #: "mcap" (one .mcap file) or "sqlite3" (one .db3 file)
    storage: str = "mcap"
    #: frames to write: "all", "train" or "test" (in dataset order)
    split: str = "all"
    #: write at most this many frames (0: all of the split)
    max_frames: int = 0
    #: image rate (Hz) used when the dataset has no capture times (or they are ignored)
    rate_hz: float = 10.0
    #: stamp of the first frame, seconds since the epoch
    start_time_s: float = 1_700_000_000.0
    #: use the dataset's capture times when it has them
    use_dataset_timestamps: bool = True
    #: downscale images so their long side is at most this many pixels (0: native)
    max_image_size: int = 0
    #: camera body origin in base_link (metres); the optical frame follows REP-103
    camera_body_xyz_in_base: tuple[float, float, float] = (0.1, 0.0, 0.2)
    write_ground_truth_topic: bool = True
    write_ground_truth_tf: bool = True
    write_odometry: bool = True
    odometry: OdometryConfig = field(default_factory=OdometryConfig)

    def validate(self) -> None:
        if self.storage not in STORAGES:
            raise BagError(f"storage must be one of {STORAGES}, got {self.storage!r}")
        if not (self.rate_hz > 0 and math.isfinite(self.rate_hz)):
            raise BagError(f"rate_hz must be a positive number, got {self.rate_hz}")
        if self.start_time_s < 0:
            raise BagError(f"start_time_s must be >= 0, got {self.start_time_s}")
        o = self.odometry
        for name in (
            "noise_translation_m_per_sqrt_m",
            "noise_rotation_deg_per_sqrt_m",
            "noise_rotation_deg_per_sqrt_rad",
        ):
            if getattr(o, name) < 0:
                raise BagError(f"odometry.{name} must be >= 0, got {getattr(o, name)}")

    def base_from_optical(self) -> np.ndarray:
        return body_from_optical_extrinsic(make_pose(np.eye(3), self.camera_body_xyz_in_base))


# ------------------------------------------------------------------ odometry
def simulate_odometry(map_from_base: np.ndarray, config: OdometryConfig) -> np.ndarray:
    """``odom_from_base`` (N, 4, 4) for true base poses ``map_from_base`` (N, 4, 4).

    ``odom_from_base[0]`` is the identity (odom starts where the robot starts); each
    later pose integrates the true step ``base_{k-1}_from_base_k`` with drift and noise
    (:class:`OdometryConfig`), so the error grows along the trajectory.
    """
    poses = np.asarray(map_from_base, dtype=np.float64).reshape(-1, 4, 4)
    rng = np.random.default_rng(config.seed)
    out = np.empty_like(poses)
    if len(poses) == 0:
        return out
    out[0] = np.eye(4)
    for k in range(1, len(poses)):
        out[k] = out[k - 1] @ noisy_odometry_step(invert_pose(poses[k - 1]) @ poses[k], config, rng)
    return out


def noisy_odometry_step(true_step: np.ndarray, config: OdometryConfig, rng: np.random.Generator) -> np.ndarray:
    """One measured step ``base_{k-1}_from_base_k`` from the true one (see OdometryConfig)."""
    R, t = true_step[:3, :3], true_step[:3, 3]
    dist = float(np.linalg.norm(t))
    angle = math.radians(rotation_angle_deg(R))
    t_meas = t * (1.0 + config.drift_translation_per_m)
    R_meas = rotation_from_rotvec([0.0, 0.0, math.radians(config.drift_yaw_deg_per_m) * dist]) @ R
    t_meas = t_meas + rng.normal(size=3) * config.noise_translation_m_per_sqrt_m * math.sqrt(dist)
    rot_var = (
        math.radians(config.noise_rotation_deg_per_sqrt_m) ** 2 * dist
        + math.radians(config.noise_rotation_deg_per_sqrt_rad) ** 2 * angle
    )
    R_meas = R_meas @ rotation_from_rotvec(rng.normal(size=3) * math.sqrt(rot_var))
    return make_pose(R_meas, t_meas)


# ------------------------------------------------------------------ writing
def _reliable_qos(transient_local: bool = False):
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=1 if transient_local else 10,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=QosTime(0, 0),
        lifespan=QosTime(0, 0),
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=QosTime(0, 0),
        avoid_ros_namespace_conventions=False,
    )


def frame_stamps_ns(data: PosedImages, indices: list[int], config: BagFromDatasetConfig) -> np.ndarray:
    """Image stamps: the dataset's capture times, else ``start_time_s + k / rate_hz``."""
    if config.use_dataset_timestamps and data.timestamps_ns is not None:
        stamps = np.asarray(data.timestamps_ns, dtype=np.int64)[indices]
        if np.any(np.diff(stamps) <= 0):
            raise BagError(f"{data.source}: capture times of the chosen frames are not increasing")
        return stamps
    start = int(round(config.start_time_s * m.NS_PER_S))
    step = m.NS_PER_S / config.rate_hz
    return np.array([start + int(round(k * step)) for k in range(len(indices))], dtype=np.int64)


def write_bag_from_dataset(
    data: PosedImages,
    out: str | Path,
    config: BagFromDatasetConfig | None = None,
    *,
    overwrite: bool = False,
    progress=None,
) -> dict:
    """Write ``data`` as a rosbag2 at ``out`` (a new directory); returns a summary.

    The bag is written to a temporary directory next to ``out`` and renamed into
    place when complete, so ``out`` never holds a half-written bag.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    cfg = config or BagFromDatasetConfig()
    cfg.validate()
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise BagError(f"{out} exists already; remove it or pass --overwrite")
        if not (out / "metadata.yaml").is_file():
            raise BagError(f"{out} exists and is not a rosbag2 directory; not overwriting it")
    indices = sorted(data.indices(cfg.split))
    if cfg.max_frames > 0:
        indices = indices[: cfg.max_frames]
    if cfg.max_image_size > 0:
        data = data.with_max_size(cfg.max_image_size)
    stamps = frame_stamps_ns(data, indices, cfg)
    fr, tp = cfg.frames, cfg.topics

    base_from_optical = cfg.base_from_optical()
    map_from_optical = np.array([map_from_optical_from_opengl_c2w(data.c2w_opengl[i]) for i in indices])
    map_from_base = map_from_optical @ invert_pose(base_from_optical)
    odom_from_base = simulate_odometry(map_from_base, cfg.odometry)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp_bag = tmp_root / out.name
    names = [data.names[i] for i in indices]
    try:
        plugin = StoragePlugin.MCAP if cfg.storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(tmp_bag, version=9, storage_plugin=plugin) as writer:
            writer.set_custom_data(FRAME_NAMES_KEY, json.dumps(names))
            writer.set_custom_data(SOURCE_KEY, json.dumps({"dataset": str(data.source), "config": to_dict(cfg)}))
            store = m.typestore()

            def conn(topic: str, msgtype: str, transient_local: bool = False):
                return writer.add_connection(
                    topic, msgtype, typestore=store, offered_qos_profiles=[_reliable_qos(transient_local)]
                )

            c_image = conn(tp.image, m.IMAGE)
            c_info = conn(tp.camera_info, m.CAMERA_INFO)
            c_static = conn(tp.tf_static, m.TF_MESSAGE, transient_local=True)
            need_tf = cfg.write_odometry or cfg.write_ground_truth_tf
            c_tf = conn(tp.tf, m.TF_MESSAGE) if need_tf else None
            c_gt = conn(tp.ground_truth, m.POSE_STAMPED) if cfg.write_ground_truth_topic else None

            t0 = int(stamps[0])
            static = m.tf_message([m.transform_stamped_msg(base_from_optical, t0, fr.base, fr.camera_optical)])
            writer.write(c_static, t0, m.serialize(static, m.TF_MESSAGE))

            it = range(len(indices))
            if progress is not None:
                it = progress(it, desc="writing bag", total=len(indices))
            for k in it:
                i, t = indices[k], int(stamps[k])
                transforms = []
                if cfg.write_odometry:
                    transforms.append(m.transform_stamped_msg(odom_from_base[k], t, fr.odom, fr.base))
                if cfg.write_ground_truth_tf:
                    transforms.append(m.transform_stamped_msg(map_from_optical[k], t, fr.map, fr.ground_truth_camera))
                if transforms:
                    writer.write(c_tf, t, m.serialize(m.tf_message(transforms), m.TF_MESSAGE))
                cam = data.camera(i)
                writer.write(c_info, t, m.serialize(m.camera_info_msg(cam, t, fr.camera_optical), m.CAMERA_INFO))
                rgb = data.image(i)
                writer.write(c_image, t, m.serialize(m.image_msg(rgb, t, fr.camera_optical), m.IMAGE))
                if c_gt is not None:
                    gt = m.pose_stamped_msg(map_from_optical[k], t, fr.map)
                    writer.write(c_gt, t, m.serialize(gt, m.POSE_STAMPED))
        if out.exists():  # overwrite: checked above that it is a bag directory
            shutil.rmtree(out)
        os.replace(tmp_bag, out)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    true_odom_from_base_end = invert_pose(map_from_base[0]) @ map_from_base[-1]
    path_length = float(np.sum(np.linalg.norm(np.diff(map_from_base[:, :3, 3], axis=0), axis=1))) if len(indices) > 1 else 0.0
    return {
        "bag": str(out),
        "storage": cfg.storage,
        "frames": len(indices),
        "split": cfg.split,
        "duration_s": float(stamps[-1] - stamps[0]) / m.NS_PER_S,
        "image_size": [data.camera(indices[0]).width, data.camera(indices[0]).height],
        "topics": {
            "image": tp.image,
            "camera_info": tp.camera_info,
            "tf": tp.tf if (cfg.write_odometry or cfg.write_ground_truth_tf) else None,
            "tf_static": tp.tf_static,
            "ground_truth": tp.ground_truth if cfg.write_ground_truth_topic else None,
        },
        "path_length_m": path_length,
        "odometry_end_error_m": (
            float(np.linalg.norm(odom_from_base[-1][:3, 3] - true_odom_from_base_end[:3, 3])) if cfg.write_odometry else None
        ),
    }
