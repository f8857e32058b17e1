"""ROS messages <-> the core's types: images, cameras, poses, transforms, covariances.

Images: a ``sensor_msgs/Image`` becomes an RGB uint8 (H, W, 3) array. Where cv_bridge is
installed it converts every encoding it knows (it is tried first); otherwise (and for
the same encodings) a numpy/OpenCV conversion handles rgb8, bgr8, rgba8, bgra8, mono8,
their 16-bit versions (scaled to 8 bits; ``is_bigendian`` gives the byte order), raw
bayer_{rggb,bggr,gbrg,grbg}{8,16} (OpenCV demosaicing) and yuv422 (UYVY) /
yuv422_yuy2 (YUYV). Rows may be padded (``step`` > width * bytes per pixel). Every other
encoding (depth images: 16UC1, 32FC1) is rejected with a ValueError naming it.

Cameras: ``sensor_msgs/CameraInfo`` becomes a :class:`~neural_reloc.geometry.camera.Camera`
(pinhole; ``plumb_bob`` with 5 coefficients, or no distortion). ROS puts pixel centres
at integer coordinates, the core at +0.5: :meth:`Camera.from_ros_k` converts.

Poses: ``geometry_msgs`` Pose/Transform <-> 4x4 ``parent_from_child`` matrices (what TF
calls the transform of the child frame in the parent frame), via
:mod:`neural_reloc.geometry.se3`. Frame conventions themselves are converted only in
:mod:`neural_reloc.geometry.frames`.
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry.camera import Camera
from ..geometry.se3 import check_pose, pose_from_xyz_quat_xyzw, xyz_quat_xyzw_from_pose

def _opencv(code_name: str):
    def convert(a: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(a), getattr(cv2, code_name))

    return convert


def _yuv422(code_name: str):
    convert = _opencv(code_name)
    return lambda a: convert(a.reshape(a.shape[0], -1, 2))  # (H, W/2, 4) bytes -> (H, W, 2)


#: Encoding -> (values per pixel, bytes per value, conversion to RGB of the (H, W, C)
#: array of values: uint8, or uint16 scaled down to uint8 first).
_ENCODINGS = {
    "rgb8": (3, 1, lambda a: a),
    "bgr8": (3, 1, lambda a: a[..., ::-1]),
    "rgba8": (4, 1, lambda a: a[..., :3]),
    "bgra8": (4, 1, lambda a: a[..., 2::-1]),
    "mono8": (1, 1, lambda a: np.repeat(a, 3, axis=2)),
    # ROS bayer names give the first 2x2 cell's pattern, as OpenCV's explicit codes
    **{f"bayer_{p}{bits}": (1, bits // 8, _opencv(f"COLOR_Bayer{p.upper()}2RGB"))
       for p in ("rggb", "bggr", "gbrg", "grbg") for bits in (8, 16)},
    "yuv422": (2, 1, _yuv422("COLOR_YUV2RGB_UYVY")),  # U Y V Y
    "uyvy": (2, 1, _yuv422("COLOR_YUV2RGB_UYVY")),
    "yuv422_yuy2": (2, 1, _yuv422("COLOR_YUV2RGB_YUY2")),  # Y U Y V
    "yuyv": (2, 1, _yuv422("COLOR_YUV2RGB_YUY2")),
}
_ENCODINGS.update({
    enc[:-1] + "16": (channels, 2, convert) for enc, (channels, _, convert) in list(_ENCODINGS.items())
    if enc in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
})
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
#: CameraInfo distortion models accepted (with the number of coefficients each needs).
SUPPORTED_DISTORTION_MODELS = ("plumb_bob (5 coefficients)", "none / empty (no coefficients)")

try:  # pragma: no cover - cv_bridge is not installable from PyPI
    from cv_bridge import CvBridge as _CvBridge

    _BRIDGE = _CvBridge()
except Exception:  # noqa: BLE001 - any failure: use the numpy path
    _BRIDGE = None


def image_backend() -> str:
    return "cv_bridge" if _BRIDGE is not None else "numpy"


def _where(topic: str) -> str:
    return f" on {topic}" if topic else ""


def image_to_rgb(msg, topic: str = "") -> np.ndarray:
    """RGB uint8 (H, W, 3) array of a sensor_msgs/Image (a copy; the message is not kept).

    Raises ValueError naming the topic and the offending field for an unsupported
    encoding, an empty image, a ``step`` shorter than a row or too little data.
    """
    encoding = msg.encoding
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image{_where(topic)}: width={w}, height={h}")
    if msg.is_bigendian not in (0, 1):
        raise ValueError(f"image{_where(topic)}: is_bigendian={msg.is_bigendian} must be 0 or 1")
    if _BRIDGE is not None:  # it knows more encodings than we do: try it first
        try:
            out = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except Exception as e:  # noqa: BLE001 - cv_bridge raises its own types
            if encoding not in _ENCODINGS:
                raise ValueError(f"cannot convert image encoding {encoding!r}{_where(topic)} to rgb8: {e}") from None
        else:
            return np.ascontiguousarray(out, dtype=np.uint8)
    if encoding not in _ENCODINGS:
        raise ValueError(
            f"unsupported image encoding {encoding!r}{_where(topic)}: supported are "
            f"{', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, size, to_rgb = _ENCODINGS[encoding]
    row_bytes = w * channels * size
    if step < row_bytes:
        raise ValueError(
            f"image{_where(topic)}: step={step} is shorter than a row of {w} {encoding} pixels ({row_bytes} bytes)"
        )
    if encoding.startswith(("yuv422", "uyvy", "yuyv")) and w % 2:
        raise ValueError(f"image{_where(topic)}: {encoding} needs an even width, got {w}")
    data = memoryview(msg.data).cast("B")
    if len(data) < step * h:
        raise ValueError(
            f"image{_where(topic)}: data has {len(data)} bytes, expected step*height = {step}*{h} = {step * h}"
        )
    rows = np.frombuffer(data, dtype=np.uint8, count=step * h).reshape(h, step)[:, :row_bytes]
    if size == 2:  # 16 bit: the byte order of is_bigendian, scaled to 8 bits
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        values = np.ascontiguousarray(rows).view(dtype).astype(np.uint16)
        pixels = (values >> 8).astype(np.uint8).reshape(h, w, channels)
    else:
        pixels = rows.reshape(h, w, channels)
    return np.ascontiguousarray(to_rgb(pixels))


def compressed_image_to_rgb(msg, topic: str = "") -> np.ndarray:
    """RGB uint8 (H, W, 3) array of a sensor_msgs/CompressedImage as
    compressed_image_transport publishes it (``format`` "jpeg", "png", or
    "rgb8; jpeg compressed bgr8" ...: the picture is stored in OpenCV's BGR order,
    grey or 16-bit PNGs too). compressedDepth and undecodable data raise ValueError."""
    import cv2

    fmt = (msg.format or "").strip().lower()
    if "compresseddepth" in fmt:
        raise ValueError(f"compressed image{_where(topic)}: format {msg.format!r} is a depth image, not a camera image")
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"compressed image{_where(topic)}: cannot decode {data.size} bytes of format {msg.format!r}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2))
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return np.ascontiguousarray(cv2.cvtColor(image, code))


def compressed_image_msg_from_rgb(image_rgb: np.ndarray, fmt: str = "jpeg", msg=None):
    """A sensor_msgs/CompressedImage of an RGB uint8 image (for publishers and tests), as
    compressed_image_transport writes it: format "rgb8; jpeg compressed bgr8"."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(np.asarray(image_rgb)[..., ::-1]))
    if not ok:
        raise ValueError(f"cannot encode the image as {fmt}")
    msg = CompressedImage() if msg is None else msg
    msg.format = f"rgb8; {fmt} compressed bgr8"
    msg.data = buf.tobytes()
    return msg


def image_msg_from_rgb(image_rgb: np.ndarray, encoding: str = "rgb8", row_padding: int = 0, msg=None):
    """A sensor_msgs/Image of an RGB uint8 image in ``encoding`` (for publishers and
    tests); ``row_padding`` extra bytes at the end of every row."""
    from sensor_msgs.msg import Image

    rgb = np.asarray(image_rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[..., ::-1]
    elif encoding == "rgba8":
        pixels = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding == "bgra8":
        pixels = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding == "mono8":
        pixels = np.round(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)[
            ..., None
        ]
    else:
        raise ValueError(f"cannot write encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    h, w, c = pixels.shape
    rows = pixels.reshape(h, w * c)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((h, row_padding), np.uint8)], axis=1)
    msg = Image() if msg is None else msg
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = 0
    msg.step = w * c + row_padding
    msg.data = np.ascontiguousarray(rows).tobytes()
    return msg


# ------------------------------------------------------------------ cameras
def camera_from_camera_info(msg, topic: str = "", rectified: bool = False) -> Camera:
    """The Camera of a sensor_msgs/CameraInfo; ValueError naming the field otherwise.

    ``rectified``: the images are rectified (image_proc's ``image_rect``), so the camera
    is the projection matrix P's intrinsics with no distortion (K and D describe the raw
    images and would be applied a second time). P's Tx/Ty (a stereo pair's baseline)
    are not used: the pose is that of the image's own optical frame."""
    where = f"CameraInfo{_where(topic)}"
    if rectified:
        p = np.asarray(msg.p, dtype=np.float64)
        if p.size != 12 or not np.all(np.isfinite(p)):
            raise ValueError(f"{where}: p must be 12 finite numbers, got {p.tolist()}")
        if p[0] <= 0 or p[5] <= 0:
            raise ValueError(
                f"{where}: rectified is set but p has no focal length ({p.tolist()}); "
                "publish the rectified camera's P, or set rectified to false for raw images"
            )
        k, d = p.reshape(3, 4)[:, :3], []
    else:
        k, d = np.asarray(msg.k, dtype=np.float64), _distortion(msg, where)
    if k.size != 9 or not np.all(np.isfinite(k)):
        raise ValueError(f"{where}: k must be 9 finite numbers, got {k.reshape(-1).tolist()}")
    if not np.any(k):
        raise ValueError(f"{where}: k is all zeros (an uncalibrated camera)")
    if int(getattr(msg, "binning_x", 0)) > 1 or int(getattr(msg, "binning_y", 0)) > 1:
        raise ValueError(f"{where}: binning {msg.binning_x}x{msg.binning_y} is not supported")
    roi = getattr(msg, "roi", None)
    if roi is not None and roi.width and (roi.width, roi.height) != (msg.width, msg.height):
        raise ValueError(f"{where}: a region of interest ({roi.width}x{roi.height}) is not supported")
    try:
        return Camera.from_ros_k(int(msg.width), int(msg.height), k, d, source=where)
    except ValueError as e:
        raise ValueError(str(e)) from None


def _distortion(msg, where: str) -> list[float]:
    model = (msg.distortion_model or "").strip()
    d = [float(v) for v in msg.d]
    if model == "plumb_bob":
        if len(d) != 5:
            raise ValueError(f"{where}: distortion_model plumb_bob needs 5 coefficients in d, got {len(d)}")
    elif model in ("", "none"):
        if any(v != 0.0 for v in d):
            raise ValueError(
                f"{where}: distortion_model {model or 'empty'!r} but d has non-zero coefficients {d}; "
                "set distortion_model to plumb_bob"
            )
        d = []
    else:
        raise ValueError(
            f"{where}: unsupported distortion_model {model!r}; supported: {', '.join(SUPPORTED_DISTORTION_MODELS)} "
            "(rectify the images, e.g. with image_proc, use image_rect and set rectified)"
        )
    if not all(math.isfinite(v) for v in d):
        raise ValueError(f"{where}: d contains non-finite values {d}")
    return d


def check_image_matches_camera(image_rgb: np.ndarray, camera: Camera, image_topic: str = "", info_topic: str = "") -> None:
    h, w = image_rgb.shape[:2]
    if (w, h) != (camera.width, camera.height):
        raise ValueError(
            f"image{_where(image_topic)} is {w}x{h} but CameraInfo{_where(info_topic)} says "
            f"{camera.width}x{camera.height}"
        )


# ------------------------------------------------------------------ time
def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int, stamp=None):
    from builtin_interfaces.msg import Time

    stamp = Time() if stamp is None else stamp
    stamp.sec, stamp.nanosec = divmod(int(ns), 1_000_000_000)
    return stamp


# ------------------------------------------------------------------ poses
def _xyz_quat_to_pose(xyz, quat_xyzw, what: str) -> np.ndarray:
    xyz = np.array(xyz, dtype=np.float64)
    q = np.array(quat_xyzw, dtype=np.float64)
    if not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(q))):
        raise ValueError(f"{what}: contains NaN or infinite values (position {xyz.tolist()}, orientation {q.tolist()})")
    n = float(np.linalg.norm(q))
    if n < 1e-6:
        raise ValueError(f"{what}: orientation quaternion {q.tolist()} has zero length")
    if abs(n - 1.0) > 1e-2:
        raise ValueError(f"{what}: orientation quaternion {q.tolist()} is not normalized (|q| = {n:.4f})")
    return check_pose(pose_from_xyz_quat_xyzw(xyz, q / n), what)


def matrix_from_pose_msg(pose, what: str = "pose") -> np.ndarray:
    """4x4 of a geometry_msgs/Pose (the pose of a child frame in its parent)."""
    p, o = pose.position, pose.orientation
    return _xyz_quat_to_pose((p.x, p.y, p.z), (o.x, o.y, o.z, o.w), what)


def pose_msg_from_matrix(parent_from_child: np.ndarray, msg=None):
    from geometry_msgs.msg import Pose

    xyz, q = xyz_quat_xyzw_from_pose(check_pose(parent_from_child, "pose"))
    msg = Pose() if msg is None else msg
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in xyz)
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = (float(v) for v in q)
    return msg


def matrix_from_transform_msg(transform, what: str = "transform") -> np.ndarray:
    """4x4 ``parent_from_child`` of a geometry_msgs/Transform."""
    t, r = transform.translation, transform.rotation
    return _xyz_quat_to_pose((t.x, t.y, t.z), (r.x, r.y, r.z, r.w), what)


def transform_msg_from_matrix(parent_from_child: np.ndarray, msg=None):
    from geometry_msgs.msg import Transform

    xyz, q = xyz_quat_xyzw_from_pose(check_pose(parent_from_child, "transform"))
    msg = Transform() if msg is None else msg
    msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in xyz)
    msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.rotation.w = (float(v) for v in q)
    return msg


def transform_stamped(parent_from_child: np.ndarray, parent: str, child: str, stamp_ns: int):
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header.frame_id = parent
    msg.child_frame_id = child
    ns_to_stamp(stamp_ns, msg.header.stamp)
    transform_msg_from_matrix(parent_from_child, msg.transform)
    return msg


# ------------------------------------------------------------------ covariance
def covariance_to_list(cov6: np.ndarray) -> list[float]:
    """Row-major 36 floats of a 6x6 pose covariance (ROS PoseWithCovariance layout)."""
    cov = np.asarray(cov6, dtype=np.float64)
    if cov.shape != (6, 6):
        raise ValueError(f"pose covariance must be 6x6, got shape {cov.shape}")
    return [float(v) for v in cov.reshape(36)]


def covariance_from_list(values, what: str = "covariance") -> np.ndarray:
    cov = np.asarray(list(values), dtype=np.float64)
    if cov.size != 36:
        raise ValueError(f"{what}: expected 36 values, got {cov.size}")
    return cov.reshape(6, 6)
