"""ROS 2 messages without ROS: the ``rosbags`` type store and conversions between
message objects and numpy / :class:`~neural_reloc.geometry.camera.Camera`.

Message objects here are ``rosbags`` dataclasses (what ``Typestore.deserialize_cdr``
returns); their CDR bytes are wire-identical to rclpy's, so the same bytes can be
written to a bag or published raw through rclpy.

Pose conventions: geometry_msgs poses and transforms are ``parent_from_child``
(``header.frame_id`` from ``child_frame_id``); quaternions are (x, y, z, w).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..geometry.camera import Camera
from ..geometry.se3 import make_pose, quat_xyzw_from_rotation, rotation_from_quat_xyzw

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_WITH_COVARIANCE_STAMPED = "geometry_msgs/msg/PoseWithCovarianceStamped"
TRANSFORM_STAMPED = "geometry_msgs/msg/TransformStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
CLOCK = "rosgraph_msgs/msg/Clock"
RELOCALIZATION_STATUS = "neural_reloc/msg/RelocalizationStatus"

IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
#: Message types that carry a stamped pose usable as ground truth.
POSE_TYPES = (POSE_STAMPED, POSE_WITH_COVARIANCE_STAMPED, TRANSFORM_STAMPED, ODOMETRY)

#: Raw image encodings we convert to RGB (others are refused with their name).
SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3")
#: CameraInfo distortion models whose coefficients are OpenCV's (k1 k2 p1 p2 k3 ...).
PLUMB_BOB_MODELS = ("plumb_bob", "rational_polynomial", "")

NS_PER_S = 1_000_000_000
_MSG_DIR = Path(__file__).resolve().parents[2] / "msg"


def _own_msg_dirs() -> list[Path]:
    """Where msg/RelocalizationStatus.msg lives: the source tree, else the ROS share dir."""
    dirs = [_MSG_DIR]
    try:  # an installed package (colcon / a ROS install)
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("neural_reloc")) / "msg")
    except Exception:  # noqa: BLE001 - no ament index: the source tree only
        pass
    return dirs


@functools.lru_cache(maxsize=1)
def typestore():
    """ROS 2 Jazzy message types, plus this package's own messages when found."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    for d in _own_msg_dirs():
        f = d / "RelocalizationStatus.msg"
        if f.is_file():
            store.register(get_types_from_msg(f.read_text(), RELOCALIZATION_STATUS))
            break
    return store


def msg_class(msgtype: str):
    return typestore().types[msgtype]


def serialize(msg, msgtype: str) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msgtype))


def deserialize(raw: bytes, msgtype: str):
    return typestore().deserialize_cdr(raw, msgtype)


# ------------------------------------------------------------------ time / headers
def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def time_msg(stamp_ns: int):
    sec, nsec = divmod(int(stamp_ns), NS_PER_S)
    return msg_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nsec)


def header(stamp_ns: int, frame_id: str):
    return msg_class("std_msgs/msg/Header")(stamp=time_msg(stamp_ns), frame_id=frame_id)


# ------------------------------------------------------------------ poses
def parent_from_child_from_pose_msg(pose) -> np.ndarray:
    """4x4 from geometry_msgs/Pose (position + orientation)."""
    p, q = pose.position, pose.orientation
    return make_pose(rotation_from_quat_xyzw([q.x, q.y, q.z, q.w]), [p.x, p.y, p.z])


def parent_from_child_from_transform_msg(transform) -> np.ndarray:
    """4x4 from geometry_msgs/Transform (translation + rotation)."""
    t, q = transform.translation, transform.rotation
    return make_pose(rotation_from_quat_xyzw([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])


def pose_msg(parent_from_child: np.ndarray):
    T = np.asarray(parent_from_child, dtype=np.float64)
    q = quat_xyzw_from_rotation(T[:3, :3])
    Point = msg_class("geometry_msgs/msg/Point")
    Quaternion = msg_class("geometry_msgs/msg/Quaternion")
    return msg_class("geometry_msgs/msg/Pose")(
        position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def transform_stamped_msg(parent_from_child: np.ndarray, stamp_ns: int, parent: str, child: str):
    T = np.asarray(parent_from_child, dtype=np.float64)
    q = quat_xyzw_from_rotation(T[:3, :3])
    Vector3 = msg_class("geometry_msgs/msg/Vector3")
    Quaternion = msg_class("geometry_msgs/msg/Quaternion")
    transform = msg_class("geometry_msgs/msg/Transform")(
        translation=Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )
    return msg_class(TRANSFORM_STAMPED)(header=header(stamp_ns, parent), child_frame_id=child, transform=transform)


def tf_message(transforms: list):
    return msg_class(TF_MESSAGE)(transforms=list(transforms))


def pose_stamped_msg(parent_from_child: np.ndarray, stamp_ns: int, parent: str):
    return msg_class(POSE_STAMPED)(header=header(stamp_ns, parent), pose=pose_msg(parent_from_child))


def stamped_pose_from_msg(msg, msgtype: str) -> tuple[int, str, str, np.ndarray]:
    """(stamp_ns, parent frame, child frame or "", parent_from_child) of a pose message
    of one of :data:`POSE_TYPES`."""
    if msgtype == POSE_STAMPED:
        return stamp_to_ns(msg.header.stamp), msg.header.frame_id, "", parent_from_child_from_pose_msg(msg.pose)
    if msgtype == POSE_WITH_COVARIANCE_STAMPED:
        return (
            stamp_to_ns(msg.header.stamp),
            msg.header.frame_id,
            "",
            parent_from_child_from_pose_msg(msg.pose.pose),
        )
    if msgtype == TRANSFORM_STAMPED:
        return (
            stamp_to_ns(msg.header.stamp),
            msg.header.frame_id,
            msg.child_frame_id,
            parent_from_child_from_transform_msg(msg.transform),
        )
    if msgtype == ODOMETRY:
        return (
            stamp_to_ns(msg.header.stamp),
            msg.header.frame_id,
            msg.child_frame_id,
            parent_from_child_from_pose_msg(msg.pose.pose),
        )
    raise ValueError(f"{msgtype} is not one of the pose types {POSE_TYPES}")


# ------------------------------------------------------------------ images
def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str):
    """sensor_msgs/Image, encoding rgb8, from an RGB uint8 (H, W, 3) array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB (H, W, 3) image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    return msg_class(IMAGE)(
        header=header(stamp_ns, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=rgb.reshape(-1),
    )


def rgb_from_image_msg(msg, msgtype: str = IMAGE) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image or CompressedImage.

    Raises ValueError naming the encoding/format when it cannot be converted.
    """
    import cv2

    if msgtype == COMPRESSED_IMAGE:
        buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if bgr is None:
            raise ValueError(f"cannot decode compressed image (format {msg.format!r}, {buf.size} bytes)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    enc = msg.encoding
    if enc not in SUPPORTED_ENCODINGS:
        raise ValueError(f"image encoding {enc!r} is not supported (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1}[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if h <= 0 or w <= 0 or step < w * channels or data.size < h * step:
        raise ValueError(
            f"image message is inconsistent: {w}x{h} {enc}, step {step}, {data.size} bytes of data"
        )
    img = data[: h * step].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if enc in ("rgb8",):
        return np.ascontiguousarray(img)
    if enc in ("bgr8", "8UC3"):
        return np.ascontiguousarray(img[:, :, ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(img[:, :, :3])
    if enc == "bgra8":
        return np.ascontiguousarray(img[:, :, 2::-1])
    return np.ascontiguousarray(np.repeat(img, 3, axis=2))


# ------------------------------------------------------------------ camera info
def camera_info_msg(camera: Camera, stamp_ns: int, frame_id: str):
    """sensor_msgs/CameraInfo (plumb_bob) of a camera; K in the ROS pixel convention."""
    K = camera.ros_k()
    P = np.zeros((3, 4))
    P[:3, :3] = K
    return msg_class(CAMERA_INFO)(
        header=header(stamp_ns, frame_id),
        height=camera.height,
        width=camera.width,
        distortion_model="plumb_bob",
        d=camera.distortion.astype(np.float64),
        k=K.reshape(-1).astype(np.float64),
        r=np.eye(3).reshape(-1),
        p=P.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=msg_class("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def camera_from_camera_info(msg, source: str = "") -> Camera:
    """Camera of a sensor_msgs/CameraInfo. Raises ValueError for unsupported models."""
    model = msg.distortion_model
    d = np.asarray(msg.d, dtype=np.float64).ravel()
    if model not in PLUMB_BOB_MODELS:
        raise ValueError(f"distortion model {model!r} is not supported (use plumb_bob){f' ({source})' if source else ''}")
    if d.size > 5:
        if np.any(d[5:] != 0):
            raise ValueError(
                f"rational_polynomial distortion with non-zero k4..k6 is not supported{f' ({source})' if source else ''}"
            )
        d = d[:5]
    return Camera.from_ros_k(int(msg.width), int(msg.height), np.asarray(msg.k, dtype=np.float64), d, source=source)
