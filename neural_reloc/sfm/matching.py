"""Descriptor matching (mutual nearest neighbours + Lowe's ratio test) and geometric
verification of matches with the KNOWN relative pose (Sampson distance, pixels)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..geometry.camera import Camera
from ..geometry.se3 import skew


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` (0: unchanged) within the block."""
    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def mutual_nn_ratio(desc_a: np.ndarray | torch.Tensor, desc_b: np.ndarray | torch.Tensor, ratio: float) -> np.ndarray:
    """(M, 2) index pairs (i in a, j in b) of unit descriptors that are mutual nearest
    neighbours and pass the ratio test ``|a_i - b_j| <= ratio * |a_i - b_j2|`` (b_j2:
    a_i's second nearest in b; as in hloc, on squared distances 2 - 2 cos with ratio^2).
    With a single descriptor in b there is no second neighbour and the test passes."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio threshold {ratio} must be in (0, 1]")
    a = torch.as_tensor(desc_a, dtype=torch.float32)
    b = torch.as_tensor(desc_b, dtype=torch.float32)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    sim = a @ b.T
    k = min(2, b.shape[0])
    top_sim, top_idx = sim.topk(k, dim=1)
    nn_ab = top_idx[:, 0]
    nn_ba = sim.argmax(dim=0)
    ia = torch.arange(a.shape[0])
    keep = nn_ba[nn_ab] == ia
    if k == 2:
        d2 = (2.0 - 2.0 * top_sim).clamp_min(0.0)
        keep &= d2[:, 0] <= (ratio * ratio) * d2[:, 1]
    return torch.stack([ia[keep], nn_ab[keep]], dim=1).numpy().astype(np.int64)


def fundamental_from_poses(
    cam_a: Camera, w2c_opencv_a: np.ndarray, cam_b: Camera, w2c_opencv_b: np.ndarray
) -> np.ndarray:
    """F with x_b^T F x_a = 0 for *undistorted* homogeneous pixels (Camera convention)
    of the same world point in views a and b."""
    Ta, Tb = np.asarray(w2c_opencv_a, dtype=np.float64), np.asarray(w2c_opencv_b, dtype=np.float64)
    R = Tb[:3, :3] @ Ta[:3, :3].T  # b_from_a
    t = Tb[:3, 3] - R @ Ta[:3, 3]
    E = skew(t) @ R
    return np.linalg.inv(cam_b.K).T @ E @ np.linalg.inv(cam_a.K)


def undistorted_pixels(camera: Camera, uv: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) of ``camera`` moved to the same camera without distortion."""
    if not camera.is_distorted:
        return np.asarray(uv, dtype=np.float64)
    xy = camera.pixel_to_normalized(uv)
    return xy * np.array([camera.fx, camera.fy]) + np.array([camera.cx, camera.cy])


def sampson_distance_px(F: np.ndarray, uv_a: np.ndarray, uv_b: np.ndarray) -> np.ndarray:
    """First-order geometric distance (pixels) of undistorted correspondences (N, 2) to
    the epipolar geometry F: sqrt of the Sampson error."""
    xa = np.concatenate([uv_a, np.ones((len(uv_a), 1))], axis=1)
    xb = np.concatenate([uv_b, np.ones((len(uv_b), 1))], axis=1)
    Fxa = xa @ F.T
    Ftxb = xb @ F
    num = np.sum(xb * Fxa, axis=1) ** 2
    den = Fxa[:, 0] ** 2 + Fxa[:, 1] ** 2 + Ftxb[:, 0] ** 2 + Ftxb[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, np.finfo(np.float64).tiny))


def epipolar_inliers(
    kp_a: np.ndarray, kp_b: np.ndarray, matches: np.ndarray,
    cam_a: Camera, w2c_opencv_a: np.ndarray, cam_b: Camera, w2c_opencv_b: np.ndarray,
    max_error_px: float,
) -> np.ndarray:
    """(M,) bool: matches whose Sampson distance to the known poses' epipolar geometry
    is at most ``max_error_px``."""
    if len(matches) == 0:
        return np.zeros(0, dtype=bool)
    F = fundamental_from_poses(cam_a, w2c_opencv_a, cam_b, w2c_opencv_b)
    ua = undistorted_pixels(cam_a, kp_a[matches[:, 0]])
    ub = undistorted_pixels(cam_b, kp_b[matches[:, 1]])
    return sampson_distance_px(F, ua, ub) <= max_error_px
