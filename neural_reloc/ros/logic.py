"""ROS-free decisions of the relocalization node: the camera extrinsic from parameters,
what goes on /tf, the pose reported for Nav2 and when AMCL needs it, rate limiting, and
the statistics behind /diagnostics.

Kept apart from the rclpy node so that they are unit-tested without ROS; frame
conventions are converted in :mod:`neural_reloc.geometry.frames` only.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..geometry.frames import body_from_optical_extrinsic, covariance_of_child_offset
from ..geometry.se3 import invert_pose, pose_from_xyz_quat_xyzw, yaw_from_rotation
from .config import NodeConfig

NS_PER_S = 1_000_000_000


def base_from_optical_from_config(cfg: NodeConfig) -> np.ndarray:
    """The extrinsic ``base_from_optical`` given by the base_from_camera_* parameters."""
    base_from_camera = pose_from_xyz_quat_xyzw(cfg.base_from_camera_xyz, cfg.base_from_camera_quat_xyzw)
    return base_from_camera if cfg.base_from_camera_is_optical else body_from_optical_extrinsic(base_from_camera)


def base_pose_with_covariance(
    map_from_optical: np.ndarray, cov_optical: np.ndarray, base_from_optical: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``map_from_base`` and its 6x6 covariance from a camera fix and the extrinsic."""
    optical_from_base = invert_pose(base_from_optical)
    map_from_base = np.asarray(map_from_optical) @ optical_from_base
    return map_from_base, covariance_of_child_offset(cov_optical, map_from_optical, optical_from_base)


def nav2_covariance(cov6: np.ndarray, min_position_std_m: float, min_yaw_std_deg: float) -> np.ndarray:
    """The covariance sent to Nav2: ``cov6`` with the x, y and yaw variances (entries 0,
    7 and 35 of the row-major 36, the ones AMCL reads) raised to at least the given
    standard deviations and the other diagonal entries kept positive."""
    cov = np.array(cov6, dtype=np.float64)
    if cov.shape != (6, 6) or not np.all(np.isfinite(cov)):
        raise ValueError(f"pose covariance must be a finite 6x6 matrix, got shape {cov.shape}")
    floors = {0: min_position_std_m**2, 1: min_position_std_m**2, 5: math.radians(min_yaw_std_deg) ** 2}
    for i, floor in floors.items():
        cov[i, i] = max(cov[i, i], floor, 1e-12)
    for i in (2, 3, 4):
        cov[i, i] = max(cov[i, i], 1e-12)
    return cov


#: What the node publishes on /tf (:func:`tf_output`).
TF_MAP_TO_ODOM, TF_MAP_TO_BASE, TF_NONE = "map_to_odom", "map_to_base", ""


def tf_output(cfg: NodeConfig) -> str:
    """What the node publishes on /tf: REP-105 ``map -> odom`` (republished, stamped
    ahead), ``map -> base_frame`` at each fix when there is no odometry frame (never
    ``map -> camera``: the camera frame has its parent in the robot's URDF), or nothing:
    ``publish_tf`` off, or Nav2 mode (AMCL owns ``map -> odom``; two publishers of one
    transform make TF jump between them)."""
    if not cfg.publish_tf or cfg.nav2_mode:
        return TF_NONE
    return TF_MAP_TO_ODOM if cfg.odom_frame else TF_MAP_TO_BASE


def planar_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """x/y distance (m) and absolute yaw difference (deg) of two poses in one frame."""
    d_xy = float(np.linalg.norm(np.asarray(a)[:2, 3] - np.asarray(b)[:2, 3]))
    d_yaw = yaw_from_rotation(np.asarray(a)[:3, :3]) - yaw_from_rotation(np.asarray(b)[:3, :3])
    d_yaw = math.degrees(abs(math.atan2(math.sin(d_yaw), math.cos(d_yaw))))
    return d_xy, d_yaw


def planar_std(cov6: np.ndarray) -> tuple[float, float]:
    """Largest x/y standard deviation (m) and yaw standard deviation (deg) of a ROS 6x6
    pose covariance (infinite when it is not finite)."""
    cov = np.asarray(cov6, dtype=np.float64).reshape(6, 6)
    if not np.all(np.isfinite(cov)):
        return math.inf, math.inf
    xy = math.sqrt(max(float(np.max(np.linalg.eigvalsh(cov[:2, :2]))), 0.0))
    return xy, math.degrees(math.sqrt(max(float(cov[5, 5]), 0.0)))


@dataclass
class AmclPose:
    """AMCL's latest pose (``amcl_pose``) as the node received it."""

    map_from_base: np.ndarray
    covariance: np.ndarray  # 6x6
    received_ns: int  # node clock
    #: odom -> base_link at the pose's stamp (to carry it to a fix's stamp); None: unknown.
    odom_from_base: np.ndarray | None = None


class Nav2Gate:
    """When a confident fix goes to AMCL (``/initialpose``): only when needed.

    Needed: on request (~/relocalize, at once); while AMCL has published no pose; when
    AMCL has not answered the last pose sent (resent after ``nav2_min_interval_s``, so a
    lost message is not the end); when AMCL is unsure (its x/y or yaw standard deviation
    above ``nav2_amcl_max_*``); or when AMCL's pose, carried by odometry to the fix's
    stamp, disagrees with the fix (``nav2_max_disagreement_*``). Apart from requests,
    never twice within ``nav2_min_interval_s``. Times are the node clock's nanoseconds.
    """

    def __init__(self) -> None:
        self.amcl: AmclPose | None = None
        self.sent_ns: int | None = None

    def amcl_pose(self, pose: AmclPose) -> None:
        self.amcl = pose

    def sent(self, now_ns: int) -> None:
        self.sent_ns = now_ns

    def reason(self, cfg: NodeConfig, now_ns: int, map_from_base: np.ndarray,
               odom_from_base: np.ndarray | None = None, requested: bool = False) -> str:
        """Why the fix ``map_from_base`` (with odometry ``odom_from_base`` at its stamp)
        goes to AMCL now ('' when it does not)."""
        if requested:
            return "requested"
        if self.sent_ns is not None and 0 <= now_ns - self.sent_ns < cfg.nav2_min_interval_s * NS_PER_S:
            return ""
        amcl = self.amcl
        if amcl is None:
            return "AMCL has published no pose yet" if self.sent_ns is None else "AMCL has not answered"
        if self.sent_ns is not None and amcl.received_ns < self.sent_ns:
            return "AMCL has not answered"
        pos_std, yaw_std = planar_std(amcl.covariance)
        if pos_std > cfg.nav2_amcl_max_position_std_m:
            return f"AMCL is unsure: x/y std {pos_std:.2f} m > nav2_amcl_max_position_std_m"
        if yaw_std > cfg.nav2_amcl_max_yaw_std_deg:
            return f"AMCL is unsure: yaw std {yaw_std:.1f} deg > nav2_amcl_max_yaw_std_deg"
        amcl_at_fix = amcl.map_from_base
        if amcl.odom_from_base is not None and odom_from_base is not None:
            amcl_at_fix = amcl.map_from_base @ invert_pose(amcl.odom_from_base) @ odom_from_base
        d_xy, d_yaw = planar_difference(amcl_at_fix, map_from_base)
        if d_xy > cfg.nav2_max_disagreement_m or d_yaw > cfg.nav2_max_disagreement_deg:
            return f"AMCL disagrees by {d_xy:.2f} m / {d_yaw:.1f} deg"
        return ""


@dataclass
class CameraEntry:
    """One CameraInfo as received: its camera (or why it is unusable)."""

    stamp_ns: int
    frame_id: str
    camera: object | None  # a neural_reloc Camera
    error: str = ""


class CameraInfoMatcher:
    """Pairs an image with its CameraInfo as image_pipeline does (same stamp), without
    waiting: the CameraInfo with the image's stamp when one came, else the newest.
    Thread-safe (filled by the executor, read by the worker)."""

    def __init__(self, size: int = 30) -> None:
        self._entries: collections.deque = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, entry: CameraEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def for_image(self, stamp_ns: int, frame_id: str) -> tuple[CameraEntry | None, str]:
        """The entry for an image (None: no CameraInfo yet) and a note when it is not a
        match: another stamp (the newest), or another frame_id."""
        with self._lock:
            entries = list(self._entries)
        if not entries:
            return None, ""
        exact = [e for e in entries if e.stamp_ns == stamp_ns]
        entry = exact[-1] if exact else entries[-1]
        note = "" if exact else "no CameraInfo with the image's stamp: using the newest"
        if entry.frame_id and frame_id and entry.frame_id.lstrip("/") != frame_id.lstrip("/"):
            note = f"CameraInfo frame_id {entry.frame_id!r} is not the image's {frame_id!r}"
        return entry, note


def looks_like_optical_frame(frame_id: str) -> bool:
    """REP-103 optical frames (x right, y down, z forward) are named ``*_optical_frame``
    (or ``*_optical``) by convention; a camera body frame (``camera_link``: x forward, z
    up) given as an image's frame_id rotates every pose by 90 degrees twice."""
    name = frame_id.lstrip("/").lower()
    return name.endswith(("optical_frame", "_optical")) or name == "optical"


class EchoFilter:
    """Recognizes our own messages coming back on a topic we both publish and subscribe
    (Nav2 mode: /initialpose), by stamp and position."""

    def __init__(self, size: int = 16) -> None:
        self._sent: collections.deque = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    @staticmethod
    def _key(stamp_ns: int, xyz) -> tuple:
        return (int(stamp_ns), *(round(float(v), 6) for v in xyz))

    def sent(self, stamp_ns: int, xyz) -> None:
        with self._lock:
            self._sent.append(self._key(stamp_ns, xyz))

    def is_echo(self, stamp_ns: int, xyz) -> bool:
        with self._lock:
            return self._key(stamp_ns, xyz) in self._sent


@dataclass
class _Sample:
    t: float  # monotonic seconds
    value: float


class NodeStats:
    """Counters and windows behind /diagnostics (thread-safe; monotonic clock)."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self.frames_received = 0
        self.frames_dropped = 0  # replaced by a newer frame before being processed
        self.frames_processed = 0
        self.frames_accepted = 0
        self.last_failure = ""
        self.last_failure_t: float | None = None
        self.last_fix_t: float | None = None
        self.last_inlier_ratio = math.nan
        self.map_error = ""  # why the map did not load ('' once one is loaded)
        self._received: collections.deque = collections.deque()
        self._processed: collections.deque = collections.deque()

    def _trim(self, dq: collections.deque, now: float) -> None:
        while dq and now - dq[0].t > self.window_s:
            dq.popleft()

    def received(self, dropped_previous: bool) -> None:
        with self._lock:
            now = self.clock()
            self.frames_received += 1
            self.frames_dropped += int(dropped_previous)
            self._received.append(_Sample(now, 0.0))
            self._trim(self._received, now)

    def processed(self, latency_ms: float, accepted: bool, inlier_ratio: float) -> None:
        with self._lock:
            now = self.clock()
            self.frames_processed += 1
            self._processed.append(_Sample(now, float(latency_ms)))
            self._trim(self._processed, now)
            self.last_inlier_ratio = float(inlier_ratio)
            if accepted:
                self.frames_accepted += 1
                self.last_fix_t = now

    def failure(self, reason: str) -> None:
        with self._lock:
            self.last_failure = reason
            self.last_failure_t = self.clock()

    def _rate(self, dq: collections.deque, now: float) -> float:
        self._trim(dq, now)
        if len(dq) < 2:
            return 0.0
        span = max(now - dq[0].t, dq[-1].t - dq[0].t, 1e-9)
        return (len(dq) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict:
        """Values for /diagnostics (rates over the window, latency percentiles)."""
        with self._lock:
            now = self.clock()
            lat = np.array([s.value for s in self._processed]) if self._processed else np.zeros(0)
            self._trim(self._processed, now)
            return {
                "frames_received": self.frames_received,
                "frames_dropped": self.frames_dropped,
                "frames_processed": self.frames_processed,
                "frames_accepted": self.frames_accepted,
                "input_rate_hz": self._rate(self._received, now),
                "processing_rate_hz": self._rate(self._processed, now),
                "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else math.nan,
                "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else math.nan,
                "inlier_ratio": self.last_inlier_ratio,
                "last_failure": self.last_failure,
                "last_failure_age_s": (now - self.last_failure_t) if self.last_failure_t is not None else math.nan,
                "last_fix_age_s": (now - self.last_fix_t) if self.last_fix_t is not None else math.nan,
                "map_error": self.map_error,
            }


#: diagnostic_msgs/DiagnosticStatus levels (OK, WARN, ERROR).
OK, WARN, ERROR = 0, 1, 2


def diagnostic_level(snapshot: dict, state: str, map_loaded: bool, window_s: float) -> tuple[int, str]:
    """Level and one-line message of the node's DiagnosticStatus."""
    if not map_loaded:
        if snapshot.get("map_error"):
            return ERROR, f"map not loaded ({state}): {snapshot['map_error']}"
        return WARN, f"no map loaded: node {state}"
    if state != "active":
        return OK, f"map loaded, node {state}"
    recent_failure = snapshot["last_failure"] and snapshot["last_failure_age_s"] <= window_s
    fix_age = snapshot["last_fix_age_s"]
    if recent_failure:
        return WARN, f"last failure: {snapshot['last_failure']}"
    if snapshot["frames_received"] == 0:
        return WARN, "no images received yet"
    if math.isnan(fix_age):
        return WARN, "no fix yet"
    return OK, f"localizing at {snapshot['processing_rate_hz']:.1f} Hz, last fix {fix_age:.1f} s ago"
