"""Rigid transforms as 4x4 float64 matrices, quaternions, interpolation and error metrics.

Naming: ``a_from_b`` maps coordinates expressed in frame b to frame a (so
``a_from_b @ b_from_c == a_from_c``). Camera poses say their convention in the name:
``c2w_opengl``, ``w2c_opencv`` (see :mod:`neural_reloc.geometry.frames`). This module is
convention-free: it only does SE(3) algebra.
"""

from __future__ import annotations

import numpy as np

ROTATION_TOLERANCE = 1e-4


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64).ravel()
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    R, t = T[..., :3, :3], T[..., :3, 3]
    Ti = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    Ti[..., :3, :3] = Rt
    Ti[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    Ti[..., 3, 3] = 1.0
    return Ti


def check_pose(T: np.ndarray, what: str = "pose", tol: float = ROTATION_TOLERANCE) -> np.ndarray:
    """Validate a 4x4 rigid transform; raise ValueError naming ``what`` otherwise."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{what}: expected a 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{what}: contains NaN or infinite values")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=tol):
        raise ValueError(f"{what}: last row is {T[3].tolist()}, expected [0, 0, 0, 1]")
    R = T[:3, :3]
    ortho = np.abs(R @ R.T - np.eye(3)).max()
    det = np.linalg.det(R)
    if ortho > tol * 10 or abs(det - 1.0) > tol * 10:
        raise ValueError(
            f"{what}: rotation part is not a rotation (|R R^T - I|max={ortho:.2e}, det={det:.4f})"
        )
    return T


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """Nearest rotation (SVD projection); used on poses read from files in float32."""
    U, _, Vt = np.linalg.svd(R)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


# ------------------------------------------------------------------ rotations
def skew(v: np.ndarray) -> np.ndarray:
    x, y, z = np.asarray(v, dtype=np.float64)
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])


def rotation_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    rv = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(rv)
    if theta < 1e-12:
        return np.eye(3) + skew(rv)
    k = skew(rv / theta)
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)


def rotvec_from_rotation(R: np.ndarray) -> np.ndarray:
    q = quat_xyzw_from_rotation(R)
    v, w = q[:3], q[3]
    n = np.linalg.norm(v)
    if n < 1e-12:
        return 2.0 * v
    angle = 2.0 * np.arctan2(n, w)
    return v / n * angle


def rotation_angle_deg(R: np.ndarray) -> float:
    """Geodesic angle of a rotation in degrees (numerically safe near 0 and 180)."""
    return float(np.degrees(np.linalg.norm(rotvec_from_rotation(R))))


def quat_xyzw_from_rotation(R: np.ndarray) -> np.ndarray:
    """Unit quaternion in ROS order (x, y, z, w), with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    m = R
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def rotation_from_quat_xyzw(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} is not normalizable")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def pose_from_xyz_quat_xyzw(xyz, quat_xyzw) -> np.ndarray:
    return make_pose(rotation_from_quat_xyzw(quat_xyzw), xyz)


def xyz_quat_xyzw_from_pose(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    T = np.asarray(T, dtype=np.float64)
    return T[:3, 3].copy(), quat_xyzw_from_rotation(T[:3, :3])


def yaw_from_rotation(R: np.ndarray) -> float:
    """Heading about +z (ZYX Euler yaw), radians."""
    return float(np.arctan2(R[1, 0], R[0, 0]))


# -------------------------------------------------------------- interpolation
def slerp_quat_xyzw(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    q0 = np.asarray(q0, dtype=np.float64) / np.linalg.norm(q0)
    q1 = np.asarray(q1, dtype=np.float64) / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # shortest path
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    s = np.sin(theta)
    return (np.sin((1 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / s


def interpolate_pose(a_from_b0: np.ndarray, a_from_b1: np.ndarray, alpha: float) -> np.ndarray:
    """Interpolate two poses of the same direction: slerp rotation, lerp translation.

    For camera poses pass camera-to-world (either axis convention) so the *camera
    centre* moves on a straight line; interpolating world-to-camera would not.
    """
    R = rotation_from_quat_xyzw(
        slerp_quat_xyzw(
            quat_xyzw_from_rotation(a_from_b0[:3, :3]), quat_xyzw_from_rotation(a_from_b1[:3, :3]), alpha
        )
    )
    t = (1 - alpha) * a_from_b0[:3, 3] + alpha * a_from_b1[:3, 3]
    return make_pose(R, t)


# ------------------------------------------------------------------- metrics
def pose_error(a_from_b_est: np.ndarray, a_from_b_gt: np.ndarray) -> tuple[float, float]:
    """(translation error in metres, rotation error in degrees) of two b-to-a poses.

    For cameras pass camera-to-world so translation error is the distance between
    camera centres (the localization literature's metric).
    """
    dt = float(np.linalg.norm(a_from_b_est[:3, 3] - a_from_b_gt[:3, 3]))
    dR = a_from_b_est[:3, :3].T @ a_from_b_gt[:3, :3]
    return dt, rotation_angle_deg(dR)


def perturb_pose(
    a_from_b: np.ndarray, translation_m: float, rotation_deg: float, rng: np.random.Generator
) -> np.ndarray:
    """Move the pose by exactly ``translation_m`` and rotate by exactly ``rotation_deg``
    about a random axis (the rotation is applied in the b frame, i.e. about the
    camera's own centre for a camera-to-world pose)."""
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    dR = rotation_from_rotvec(axis * np.radians(rotation_deg))
    out = np.array(a_from_b, dtype=np.float64)
    out[:3, :3] = out[:3, :3] @ dR
    out[:3, 3] = out[:3, 3] + d * translation_m
    return out
