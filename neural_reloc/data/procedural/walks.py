"""Camera walks through a room: the mapping walk and query walks beside it.

A walk is a closed loop around a centre (an ellipse with a slow radius wobble) at
about eye height, the camera heading at a fixed offset from the loop's outward normal
(0: at the nearest wall, 180: across the room) with a slow pan and tilt, as a person
or robot mapping a room does. Query walks follow the
same loop shifted sideways by 10-50 cm (inside or outside it), at other heights and
with other look directions, so queries see the room from where the map never was.

Every function returns OpenCV camera-to-world poses (x right, y down, z forward);
the dataset writer converts them to OpenGL in :mod:`neural_reloc.geometry.frames`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...geometry.se3 import make_pose

#: World up (the rooms are z-up).
WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class WalkShape:
    """One walk around ``center_xy`` (lengths in metres, angles in degrees). Periodic
    terms are ``amplitude * sin(cycles * theta + phase)`` over the loop angle theta."""

    center_xy: tuple[float, float]
    radius_x: float
    radius_y: float
    #: relative radius modulation and its cycles per loop
    radius_wobble: float = 0.05
    radius_cycles: int = 3
    #: sideways offset from the loop (positive: outwards), metres: a constant part and
    #: a periodic one (query walks; 0 for the mapping walk)
    offset_m: float = 0.0
    offset_amplitude_m: float = 0.0
    offset_cycles: int = 2
    height_m: float = 1.45
    height_amplitude_m: float = 0.1
    height_cycles: int = 2
    #: heading = outward direction + yaw_offset + periodic pan
    yaw_offset_deg: float = 30.0
    yaw_amplitude_deg: float = 50.0
    yaw_cycles: int = 2
    pitch_deg: float = -8.0
    pitch_amplitude_deg: float = 8.0
    pitch_cycles: int = 3
    roll_amplitude_deg: float = 2.0
    roll_cycles: int = 4
    #: where on the loop the walk starts
    start_angle_deg: float = 0.0


def walk_c2w_opencv(shape: WalkShape, n: int, phases: np.ndarray, fraction: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """(n, 4, 4) OpenCV camera-to-world poses evenly spaced over ``fraction`` of the
    loop (start and end as fractions of a turn; the end is excluded). ``phases``: six
    random phases (radius, offset, height, yaw, pitch, roll)."""
    a, b = fraction
    theta = 2 * math.pi * (a + (b - a) * np.arange(n) / n) + math.radians(shape.start_angle_deg)
    scale = 1.0 + shape.radius_wobble * np.sin(shape.radius_cycles * theta + phases[0])
    cx, cy = shape.center_xy
    ex, ey = shape.radius_x * scale * np.cos(theta), shape.radius_y * scale * np.sin(theta)
    # outward normal of the ellipse, for the sideways offset
    nx, ny = ex / max(shape.radius_x, 1e-9) ** 2, ey / max(shape.radius_y, 1e-9) ** 2
    norm = np.hypot(nx, ny)
    off = shape.offset_m + shape.offset_amplitude_m * np.sin(shape.offset_cycles * theta + phases[1])
    x = cx + ex + off * nx / norm
    y = cy + ey + off * ny / norm
    z = shape.height_m + shape.height_amplitude_m * np.sin(shape.height_cycles * theta + phases[2])
    yaw = (
        np.arctan2(ny, nx)
        + math.radians(shape.yaw_offset_deg)
        + math.radians(shape.yaw_amplitude_deg) * np.sin(shape.yaw_cycles * theta + phases[3])
    )
    pitch = math.radians(shape.pitch_deg) + math.radians(shape.pitch_amplitude_deg) * np.sin(
        shape.pitch_cycles * theta + phases[4]
    )
    roll = math.radians(shape.roll_amplitude_deg) * np.sin(shape.roll_cycles * theta + phases[5])
    return np.stack([look_pose_c2w_opencv((x[i], y[i], z[i]), yaw[i], pitch[i], roll[i]) for i in range(n)])


def look_pose_c2w_opencv(position, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """OpenCV camera-to-world pose at ``position`` looking along heading ``yaw`` (about
    world z, from +x) tilted up by ``pitch`` and rolled by ``roll`` about the optical
    axis (radians)."""
    fwd = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.cross(fwd, WORLD_UP)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=1)  # columns: OpenCV camera axes in world
    c, s = math.cos(roll), math.sin(roll)
    R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return make_pose(R, np.asarray(position, dtype=np.float64))
