"""The one place where pose conventions are converted.

Conventions used in this project
--------------------------------
* **NeRF side — OpenGL camera-to-world** (``c2w_opengl``): camera axes x right, y up,
  z backward (the camera looks along -z). instant-ngp / nerfstudio ``transforms.json``
  store this. Maps camera-frame coordinates to world coordinates.
* **PnP side — OpenCV world-to-camera** (``w2c_opencv``): camera axes x right, y down,
  z forward. COLMAP, poselib and ``cv2.solvePnP`` use this. Maps world to camera.
* **ROS side** — REP-103: the camera *optical* frame has the OpenCV axes; a camera
  body/link frame and ``base_link`` have x forward, y left, z up. REP-105: ``map`` (our
  world, possibly through a fixed ``map_from_world``), ``odom`` (continuous, drifting)
  and ``base_link``. ROS transforms are ``parent_from_child`` (what TF calls the
  transform *of* child *in* parent).

Every function name says what goes in and what comes out. Nothing else in the code base
flips axes.
"""

from __future__ import annotations

import numpy as np

from .se3 import invert_pose, rotvec_from_rotation, skew

#: Rotation taking OpenCV camera-frame coordinates to OpenGL camera-frame coordinates
#: (flip y and z). It is its own inverse.
OPENGL_FROM_OPENCV_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])

#: REP-103: rotation from the optical frame (x right, y down, z forward) to the camera
#: body/link frame (x forward, y left, z up).
BODY_FROM_OPTICAL = np.array(
    [[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


# ----------------------------------------------------------- NeRF <-> PnP
def opencv_c2w_from_opengl_c2w(c2w_opengl: np.ndarray) -> np.ndarray:
    return np.asarray(c2w_opengl, dtype=np.float64) @ OPENGL_FROM_OPENCV_CAMERA


def opengl_c2w_from_opencv_c2w(c2w_opencv: np.ndarray) -> np.ndarray:
    return np.asarray(c2w_opencv, dtype=np.float64) @ OPENGL_FROM_OPENCV_CAMERA


def opencv_w2c_from_opengl_c2w(c2w_opengl: np.ndarray) -> np.ndarray:
    return invert_pose(opencv_c2w_from_opengl_c2w(c2w_opengl))


def opengl_c2w_from_opencv_w2c(w2c_opencv: np.ndarray) -> np.ndarray:
    return opengl_c2w_from_opencv_c2w(invert_pose(w2c_opencv))


def opencv_c2w_from_opencv_w2c(w2c_opencv: np.ndarray) -> np.ndarray:
    return invert_pose(w2c_opencv)


def opencv_w2c_from_opencv_c2w(c2w_opencv: np.ndarray) -> np.ndarray:
    return invert_pose(c2w_opencv)


def camera_center_from_opencv_w2c(w2c_opencv: np.ndarray) -> np.ndarray:
    w2c = np.asarray(w2c_opencv, dtype=np.float64)
    return -w2c[:3, :3].T @ w2c[:3, 3]


# ------------------------------------------------------------- ROS side
def map_from_optical_from_opencv_w2c(
    w2c_opencv: np.ndarray, map_from_world: np.ndarray | None = None
) -> np.ndarray:
    """Pose of the camera optical frame in ``map`` (what a ROS PoseStamped carries)."""
    c2w = invert_pose(w2c_opencv)  # optical == OpenCV camera axes
    return c2w if map_from_world is None else np.asarray(map_from_world) @ c2w


def map_from_optical_from_opengl_c2w(
    c2w_opengl: np.ndarray, map_from_world: np.ndarray | None = None
) -> np.ndarray:
    """Pose of the camera optical frame in ``map`` from a NeRF-side camera-to-world."""
    c2w = opencv_c2w_from_opengl_c2w(c2w_opengl)
    return c2w if map_from_world is None else np.asarray(map_from_world) @ c2w


def opencv_w2c_from_map_from_optical(
    map_from_optical: np.ndarray, map_from_world: np.ndarray | None = None
) -> np.ndarray:
    world_from_optical = (
        np.asarray(map_from_optical, dtype=np.float64)
        if map_from_world is None
        else invert_pose(map_from_world) @ map_from_optical
    )
    return invert_pose(world_from_optical)


def map_from_base_from_map_from_optical(
    map_from_optical: np.ndarray, base_from_optical: np.ndarray
) -> np.ndarray:
    """Robot pose in map from a camera fix and the camera extrinsic."""
    return np.asarray(map_from_optical) @ invert_pose(base_from_optical)


def map_from_optical_from_map_from_base(
    map_from_base: np.ndarray, base_from_optical: np.ndarray
) -> np.ndarray:
    """Camera optical frame in map from a robot pose (e.g. Nav2's ``/initialpose``,
    which gives ``base_link`` in ``map``) and the camera extrinsic."""
    return np.asarray(map_from_base, dtype=np.float64) @ np.asarray(base_from_optical, dtype=np.float64)


def map_from_odom_from_fix(
    map_from_optical: np.ndarray, odom_from_base: np.ndarray, base_from_optical: np.ndarray
) -> np.ndarray:
    """REP-105 ``map -> odom`` so that map_from_odom @ odom_from_base @ base_from_optical
    equals the relocalized camera pose ``map_from_optical``."""
    return (
        np.asarray(map_from_optical) @ invert_pose(base_from_optical) @ invert_pose(odom_from_base)
    )


def body_from_optical_extrinsic(base_from_camera_body: np.ndarray) -> np.ndarray:
    """``base_from_optical`` from an extrinsic given for the camera *body/link* frame."""
    return np.asarray(base_from_camera_body) @ BODY_FROM_OPTICAL


# --------------------------------------------------------- covariances
def rotate_pose_covariance(cov6: np.ndarray, new_from_old_rotation: np.ndarray) -> np.ndarray:
    """Re-express a ROS-style pose covariance (position in the parent frame, then
    rotation about the parent's fixed axes) in a rotated parent frame."""
    R = np.asarray(new_from_old_rotation, dtype=np.float64)[:3, :3]
    A = np.zeros((6, 6))
    A[:3, :3] = R
    A[3:, 3:] = R
    return A @ np.asarray(cov6) @ A.T


def covariance_of_child_offset(
    cov6: np.ndarray, parent_from_a: np.ndarray, a_from_b: np.ndarray
) -> np.ndarray:
    """Covariance of ``parent_from_b = parent_from_a @ a_from_b`` given that of
    ``parent_from_a`` (ROS parameterization, a_from_b known exactly).

    A small rotation d_theta (about parent axes) of frame a moves b's origin by
    -[R_a t_ab]x d_theta; b's orientation rotates by the same d_theta.
    """
    lever = np.asarray(parent_from_a)[:3, :3] @ np.asarray(a_from_b)[:3, 3]
    J = np.eye(6)
    J[:3, 3:] = -skew(lever)
    return J @ np.asarray(cov6) @ J.T


def pose_difference_ros(w2c_opencv_a: np.ndarray, w2c_opencv_b: np.ndarray) -> np.ndarray:
    """Pose a relative to pose b in the ROS covariance parameterization: (x, y, z) the
    camera-centre difference a - b in the world, then the small rotation (rotation
    vector, about the fixed world axes) taking b's orientation to a's."""
    c2w_opencv_a, c2w_opencv_b = opencv_c2w_from_opencv_w2c(w2c_opencv_a), opencv_c2w_from_opencv_w2c(w2c_opencv_b)
    return np.concatenate([c2w_opencv_a[:3, 3] - c2w_opencv_b[:3, 3],
                           rotvec_from_rotation(c2w_opencv_a[:3, :3] @ c2w_opencv_b[:3, :3].T)])


def pose_mahalanobis(w2c_opencv: np.ndarray, prior_w2c_opencv: np.ndarray, prior_cov6: np.ndarray) -> float | None:
    """Mahalanobis distance of a pose from a prior with a ROS-style 6x6 covariance; None
    when that covariance is not finite and positive definite (e.g. a covariance that
    leaves z, roll and pitch at zero variance, as RViz's initial pose message does)."""
    cov = np.asarray(prior_cov6, dtype=np.float64)
    if cov.shape != (6, 6) or not np.all(np.isfinite(cov)):
        return None
    try:
        chol = np.linalg.cholesky(0.5 * (cov + cov.T))
    except np.linalg.LinAlgError:
        return None
    z = np.linalg.solve(chol, pose_difference_ros(w2c_opencv, prior_w2c_opencv))
    return float(np.sqrt(z @ z))


# ------------------------------------------------------------------ LLFF
#: Rotation taking OpenGL camera-frame coordinates (x right, y up, z backward) to LLFF
#: camera-frame coordinates. LLFF's ``poses_bounds.npy`` stores camera-to-world
#: rotations whose columns are the camera axes [down, right, backwards] ("DRB").
#: A point (x_r, y_u, z_b) in OpenGL axes is (down=-y_u, right=x_r, back=z_b) in LLFF
#: axes.
LLFF_FROM_OPENGL_CAMERA = np.array(
    [[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def opengl_c2w_from_llff_c2w(c2w_llff: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world from an LLFF camera-to-world (camera axes [down, right,
    backwards], as stored in the 3x5 blocks of ``poses_bounds.npy``).

    Accepts a 4x4 matrix or the 3x4 / 3x5 block (a 5th ``hwf`` column is ignored).
    Equivalent to the column shuffle in NeRF's ``load_llff.py``:
    ``[R[:, 1], -R[:, 0], R[:, 2]]`` (right, up, backwards); the translation (the
    camera centre in world) is unchanged.
    """
    m = np.asarray(c2w_llff, dtype=np.float64)
    T = np.eye(4)
    if m.shape == (4, 4):
        T = m.copy()
    elif m.shape in ((3, 4), (3, 5)):
        T[:3, :4] = m[:3, :4]
    else:
        raise ValueError(f"LLFF pose must be 4x4, 3x4 or 3x5, got shape {m.shape}")
    return T @ LLFF_FROM_OPENGL_CAMERA


def llff_c2w_from_opengl_c2w(c2w_opengl: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opengl_c2w_from_llff_c2w` (4x4 in, 4x4 out)."""
    return np.asarray(c2w_opengl, dtype=np.float64) @ LLFF_FROM_OPENGL_CAMERA.T
