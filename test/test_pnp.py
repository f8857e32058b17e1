"""Robust PnP: poselib camera mapping, residuals, Jacobian, covariance convention and
calibration, outlier rejection, determinism and degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.pnp import (
    COVARIANCE_SIGMA_FLOOR_PX,
    PnPConfig,
    PnPResult,
    pnp_ransac,
    pose_covariance,
    poselib_camera,
    projection_jacobian_camera_perturbation,
    ransac_iterations,
    reprojection_errors,
)
from neural_reloc.geometry.se3 import (
    invert_pose,
    make_pose,
    rotation_angle_deg,
    rotation_from_rotvec,
    rotvec_from_rotation,
)

CAMERA_KINDS = ("pinhole", "opencv", "full_opencv")


def random_camera(rng: np.random.Generator, kind: str) -> Camera:
    w, h = 640, 480
    fx = rng.uniform(400.0, 700.0)
    d = {"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "k3": 0.0}
    if kind in ("opencv", "full_opencv"):
        d.update(
            k1=rng.uniform(-0.2, 0.1),
            k2=rng.uniform(-0.05, 0.05),
            p1=rng.uniform(-2e-3, 2e-3),
            p2=rng.uniform(-2e-3, 2e-3),
        )
    if kind == "full_opencv":
        d["k3"] = rng.uniform(-0.02, 0.02)
    return Camera(
        w, h, fx, fx * rng.uniform(0.97, 1.03), w / 2 + rng.uniform(-10, 10), h / 2 + rng.uniform(-10, 10), **d
    )


def random_scene(rng: np.random.Generator, camera: Camera, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w2c_opencv, points3d_world, exact pixels): points seen inside the image at 2-8 m."""
    c2w = make_pose(rotation_from_rotvec(rng.normal(size=3)), rng.normal(size=3) * 3.0)
    uv = np.c_[rng.uniform(0, camera.width, n), rng.uniform(0, camera.height, n)]
    rays = camera.pixel_rays_opencv(uv)
    pc = rays / rays[:, 2:] * rng.uniform(2.0, 8.0, n)[:, None]
    pw = pc @ c2w[:3, :3].T + c2w[:3, 3]
    w2c = invert_pose(c2w)
    uv_exact, in_front = camera.project(pw @ w2c[:3, :3].T + w2c[:3, 3])
    assert in_front.all()
    return w2c, pw, uv_exact


def observe_with_outliers(
    rng: np.random.Generator, uv: np.ndarray, camera: Camera, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """(observed pixels, outlier mask): ``uv`` with 0.5 px Gaussian noise, and about
    ``fraction`` of them replaced by uniform pixels anywhere in the image."""
    obs = uv + rng.normal(0, 0.5, uv.shape)
    outlier = rng.random(len(uv)) < fraction
    obs[outlier] = np.c_[rng.uniform(0, camera.width, outlier.sum()), rng.uniform(0, camera.height, outlier.sum())]
    return obs, outlier


def ros_error(w2c_est: np.ndarray, w2c_gt: np.ndarray) -> np.ndarray:
    """(camera centre error, world-frame rotation vector of R_c2w_est R_c2w_gt^T)."""
    a, b = invert_pose(w2c_est), invert_pose(w2c_gt)
    return np.r_[a[:3, 3] - b[:3, 3], rotvec_from_rotation(a[:3, :3] @ b[:3, :3].T)]


# --------------------------------------------------------------- camera model
@pytest.mark.parametrize("kind", CAMERA_KINDS)
def test_poselib_camera_agrees_with_camera_project(kind):
    rng = np.random.default_rng(1)
    cam = random_camera(rng, kind)
    if kind != "pinhole":  # stronger than random_camera's, to exercise every term
        cam = Camera(640, 480, 500.0, 510.0, 321.3, 239.1, -0.3, 0.1, 1e-3, -2e-3, -0.02 if kind == "full_opencv" else 0.0)
    pl = poselib_camera(cam)
    assert pl.model_name() == kind.upper()
    assert len(pl.params) == {"pinhole": 4, "opencv": 8, "full_opencv": 12}[kind]
    pc = np.c_[rng.uniform(-0.7, 0.7, (500, 2)), np.ones(500)] * rng.uniform(1, 5, (500, 1))
    uv, _ = cam.project(pc)
    assert np.abs(pl.project(pc[:, :2] / pc[:, 2:]) - uv).max() < 1e-6


# ----------------------------------------------------------------- residuals
def test_reprojection_errors_inf_behind_nan_nonfinite_and_argument_checks():
    rng = np.random.default_rng(2)
    cam = random_camera(rng, "opencv")
    w2c, pw, uv = random_scene(rng, cam, 10)
    assert np.abs(reprojection_errors(uv, pw, w2c, cam)).max() < 1e-9
    c = invert_pose(w2c)[:3, 3]
    behind = 2 * c - pw  # reflected through the camera centre
    assert np.isinf(reprojection_errors(uv, behind, w2c, cam)).all()
    uv_nan = uv.copy()
    uv_nan[3] = np.nan
    err = reprojection_errors(uv_nan, pw, w2c, cam)
    assert np.isnan(err[3]) and np.isfinite(np.delete(err, 3)).all()
    with pytest.raises(ValueError, match="points2d"):
        reprojection_errors(uv[:, :1], pw, w2c, cam)
    with pytest.raises(ValueError, match="points3d_world"):
        reprojection_errors(uv, pw[:5], w2c, cam)
    with pytest.raises(ValueError, match="w2c_opencv"):
        reprojection_errors(uv, pw, np.eye(3), cam)


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    cam = random_camera(rng, "full_opencv")
    w2c, pw, _ = random_scene(rng, cam, 20)
    J = projection_jacobian_camera_perturbation(pw, w2c, cam)

    def project(T):
        return cam.project(pw @ T[:3, :3].T + T[:3, 3])[0]

    h = 1e-6
    for k in range(6):
        xi = np.zeros(6)
        xi[k] = h
        d = []
        for sgn in (1.0, -1.0):
            P = make_pose(rotation_from_rotvec(sgn * xi[3:]), sgn * xi[:3])
            d.append(project(P @ w2c))
        fd = (d[0] - d[1]) / (2 * h)
        assert np.abs(fd - J[:, :, k]).max() < 1e-4 * max(1.0, np.abs(fd).max())


def test_covariance_is_in_ros_convention_by_finite_differences():
    """Sigma from pose_covariance == s^2 (J^T J)^-1 with J differentiated numerically
    w.r.t. (dc, dtheta): c' = c + dc, R_c2w' = exp([dtheta]x) R_c2w."""
    rng = np.random.default_rng(4)
    cam = random_camera(rng, "opencv")
    w2c, pw, uv = random_scene(rng, cam, 40)
    obs = uv + rng.normal(0, 0.7, uv.shape)
    cov, s2, reason = pose_covariance(obs, pw, w2c, cam)
    assert reason == "" and cov is not None
    c2w = invert_pose(w2c)

    def residuals(delta):
        T = np.eye(4)
        T[:3, :3] = rotation_from_rotvec(delta[3:]) @ c2w[:3, :3]
        T[:3, 3] = c2w[:3, 3] + delta[:3]
        Tw = invert_pose(T)
        return (cam.project(pw @ Tw[:3, :3].T + Tw[:3, 3])[0] - obs).ravel()

    r0 = residuals(np.zeros(6))
    assert s2 == pytest.approx(max(r0 @ r0 / (r0.size - 6), COVARIANCE_SIGMA_FLOOR_PX**2))
    h = 1e-6
    J = np.stack([(residuals(h * e) - residuals(-h * e)) / (2 * h) for e in np.eye(6)], axis=1)
    expected = s2 * np.linalg.inv(J.T @ J)
    np.testing.assert_allclose(cov, expected, rtol=1e-4, atol=1e-12 * np.abs(expected).max())


def test_covariance_floor_for_a_perfect_fit():
    rng = np.random.default_rng(5)
    cam = random_camera(rng, "pinhole")
    w2c, pw, uv = random_scene(rng, cam, 30)
    cov, s2, _ = pose_covariance(uv, pw, w2c, cam)
    assert s2 == COVARIANCE_SIGMA_FLOOR_PX**2
    assert np.all(np.linalg.eigvalsh(cov) > 0)


# ------------------------------------------------------------------ solving
@pytest.mark.parametrize("kind", CAMERA_KINDS)
def test_synthetic_with_outliers(kind):
    rng = np.random.default_rng(10 + CAMERA_KINDS.index(kind))
    cam = random_camera(rng, kind)
    n = 300
    w2c, pw, uv = random_scene(rng, cam, n)
    obs, outlier = observe_with_outliers(rng, uv, cam, 0.3)

    res = pnp_ransac(obs, pw, cam)
    assert isinstance(res, PnPResult)
    assert res.success, res.reason
    assert res.reason == ""
    c_gt = invert_pose(w2c)[:3, 3]
    depth = np.linalg.norm(pw - c_gt, axis=1).mean()
    dc = np.linalg.norm(invert_pose(res.w2c_opencv)[:3, 3] - c_gt)
    assert dc / depth < 1e-2
    assert rotation_angle_deg(res.w2c_opencv[:3, :3] @ w2c[:3, :3].T) < 0.2
    true_inlier = ~outlier
    tp = np.sum(res.inlier_mask & true_inlier)
    assert tp / res.inlier_mask.sum() > 0.95  # precision
    assert tp / true_inlier.sum() > 0.95  # recall
    assert res.num_inliers == int(res.inlier_mask.sum())
    assert res.inlier_mask.dtype == bool and res.inlier_mask.shape == (n,)
    # 0.5 px per coordinate -> about 0.7 px per point.
    assert 0.5 < res.reprojection_rmse_px < 0.9
    assert res.iterations > 0 and res.solve_ms > 0
    cov = res.covariance
    assert cov.shape == (6, 6) and np.allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    # The reported mask is exactly the pixel-space threshold test of the final pose.
    err = reprojection_errors(obs, pw, res.w2c_opencv, cam)
    np.testing.assert_array_equal(res.inlier_mask, err <= PnPConfig().reprojection_threshold_px)


def test_deterministic_with_the_same_seed():
    rng = np.random.default_rng(20)
    cam = random_camera(rng, "opencv")
    n = 200
    _, pw, uv = random_scene(rng, cam, n)
    obs = uv + rng.normal(0, 0.5, uv.shape)
    out = rng.random(n) < 0.4
    obs[out] = rng.uniform(0, 480, (out.sum(), 2))
    a = pnp_ransac(obs, pw, cam, PnPConfig(seed=7))
    b = pnp_ransac(obs.copy(), pw.copy(), cam, PnPConfig(seed=7))
    assert a.success and b.success
    assert np.array_equal(a.w2c_opencv, b.w2c_opencv)
    assert np.array_equal(a.inlier_mask, b.inlier_mask)
    assert np.array_equal(a.covariance, b.covariance)
    assert a.iterations == b.iterations and a.reprojection_rmse_px == b.reprojection_rmse_px


@pytest.mark.parametrize(
    "cfg, sigma, max_nees",
    [
        # Least-squares refinement: the Gauss-Newton covariance is the estimator's own.
        (PnPConfig(refine_loss="TRIVIAL"), 1.0, 7.2),
        # The default robust (Cauchy, 1 px) refinement at noise below its scale. The
        # Cauchy estimate is a little less efficient than least squares, so the LS
        # covariance is slightly optimistic (over 30 seeds: NEES 6.1-7.1).
        (PnPConfig(), 0.5, 7.5),
    ],
    ids=["trivial_loss", "default"],
)
def test_covariance_calibration_monte_carlo(cfg, sigma, max_nees):
    rng = np.random.default_rng(30)
    cam = random_camera(rng, "opencv")
    w2c, pw, uv = random_scene(rng, cam, 60)
    errors, nees, covs = [], [], []
    for _ in range(200):
        res = pnp_ransac(uv + rng.normal(0, sigma, uv.shape), pw, cam, cfg)
        assert res.success, res.reason
        e = ros_error(res.w2c_opencv, w2c)
        errors.append(e)
        covs.append(res.covariance)
        nees.append(e @ np.linalg.solve(res.covariance, e))
    E = np.array(errors)
    empirical = E.T @ E / len(E)
    ratio = np.diag(empirical) / np.diag(np.mean(covs, axis=0))
    assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), ratio
    # E[e^T Sigma^-1 e] = 6; the mean of 200 chi2(6) draws has std 0.245. This is
    # what catches a wrong frame or sign convention (those give NEES 15-50).
    assert 5.0 < np.mean(nees) < max_nees, np.mean(nees)


# ---------------------------------------------------------------- degenerate
def _simple_scene(n=40, seed=40):
    rng = np.random.default_rng(seed)
    cam = Camera(640, 480, 500.0, 500.0, 320.0, 240.0)
    w2c = make_pose(rotation_from_rotvec([0.1, 0.2, 0.05]), [0.1, -0.2, 5.0])
    return rng, cam, w2c


def _project(cam, w2c, pw):
    return cam.project(pw @ w2c[:3, :3].T + w2c[:3, 3])[0]


def test_too_few_points_fails_with_reason():
    rng, cam, w2c = _simple_scene()
    pw = rng.uniform(-1, 1, (3, 3))
    res = pnp_ransac(_project(cam, w2c, pw), pw, cam)
    assert not res.success and "too few correspondences" in res.reason
    assert res.w2c_opencv is None and res.inlier_mask.shape == (3,) and not res.inlier_mask.any()
    res = pnp_ransac(np.zeros((0, 2)), np.zeros((0, 3)), cam)
    assert not res.success and "too few" in res.reason


def test_non_finite_points_are_dropped_or_fail():
    rng, cam, w2c = _simple_scene()
    pw = rng.uniform(-1, 1, (40, 3))
    uv = _project(cam, w2c, pw) + rng.normal(0, 0.3, (40, 2))
    res = pnp_ransac(np.full_like(uv, np.nan), pw, cam)
    assert not res.success and "finite" in res.reason
    pw_bad = pw.copy()
    pw_bad[[1, 5]] = np.inf
    uv_bad = uv.copy()
    uv_bad[7] = np.nan
    res = pnp_ransac(uv_bad, pw_bad, cam)
    assert res.success, res.reason
    assert not res.inlier_mask[[1, 5, 7]].any() and res.num_inliers == 37


def test_collinear_points_fail_with_reason():
    rng, cam, w2c = _simple_scene()
    s = rng.uniform(-1, 1, 50)
    line = np.c_[s, 0.5 * s, 0.2 * s]
    for obs in (_project(cam, w2c, line), _project(cam, w2c, line) + rng.normal(0, 0.5, (50, 2))):
        res = pnp_ransac(obs, line, cam)
        assert not res.success and res.reason
        assert np.all(res.covariance == 0)
    res = pnp_ransac(_project(cam, w2c, line), line, cam)
    assert "degenerate geometry" in res.reason


def test_coincident_points_fail():
    rng, cam, w2c = _simple_scene()
    same = np.tile([[0.3, 0.1, 0.2]], (30, 1))
    res = pnp_ransac(_project(cam, w2c, same) + rng.normal(0, 0.5, (30, 2)), same, cam)
    assert not res.success and res.reason


def test_pure_outliers_fail_with_a_reasonable_min_points():
    rng, cam, _ = _simple_scene()
    res = pnp_ransac(rng.uniform(0, 480, (40, 2)), rng.uniform(-1, 1, (40, 3)), cam, PnPConfig(min_points=12))
    assert not res.success and "RANSAC found no pose" in res.reason


def test_points_behind_the_camera_have_no_covariance():
    rng, cam, w2c = _simple_scene()
    pw = rng.uniform(-1, 1, (10, 3))
    c = invert_pose(w2c)[:3, 3]
    cov, _, reason = pose_covariance(_project(cam, w2c, pw), 2 * c - pw, w2c, cam)
    assert cov is None and "in front" in reason


def test_argument_errors_raise_naming_the_argument():
    rng, cam, w2c = _simple_scene()
    pw = rng.uniform(-1, 1, (10, 3))
    uv = _project(cam, w2c, pw)
    with pytest.raises(ValueError, match="points2d"):
        pnp_ransac(uv.ravel(), pw, cam)
    with pytest.raises(ValueError, match="points3d_world"):
        pnp_ransac(uv, pw[:, :2], cam)
    with pytest.raises(ValueError, match="points2d has 10 points but points3d_world has 9"):
        pnp_ransac(uv, pw[:9], cam)
    with pytest.raises(TypeError, match="camera"):
        pnp_ransac(uv, pw, cam.K)
    with pytest.raises(TypeError, match="cfg"):
        pnp_ransac(uv, pw, cam, {"seed": 1})
    with pytest.raises(ValueError, match="refine_loss"):
        PnPConfig(refine_loss="cauchyy")
    with pytest.raises(ValueError, match="min_points"):
        PnPConfig(min_points=3)
    with pytest.raises(ValueError, match="reprojection_threshold_px"):
        PnPConfig(reprojection_threshold_px=0.0)


def test_refine_off_still_solves():
    rng, cam, w2c = _simple_scene()
    pw = rng.uniform(-1, 1, (60, 3))
    uv = _project(cam, w2c, pw) + rng.normal(0, 0.5, (60, 2))
    res = pnp_ransac(uv, pw, cam, PnPConfig(refine=False))
    assert res.success, res.reason
    assert rotation_angle_deg(res.w2c_opencv[:3, :3] @ w2c[:3, :3].T) < 0.5


def test_ransac_on_a_subset_then_all_correspondences(monkeypatch):
    """max_ransac_points: RANSAC on a seeded subset, the inliers and the refinement on
    all points; as accurate as RANSAC on all of them, and deterministic."""
    rng = np.random.default_rng(40)
    cam = random_camera(rng, "opencv")
    n = 2000
    w2c, pw, uv = random_scene(rng, cam, n)
    obs, outlier = observe_with_outliers(rng, uv, cam, 0.4)
    full = pnp_ransac(obs, pw, cam, PnPConfig())
    import poselib

    scored = []
    real = poselib.estimate_absolute_pose
    monkeypatch.setattr(poselib, "estimate_absolute_pose", lambda p2, *a: scored.append(len(p2)) or real(p2, *a))
    sub = pnp_ransac(obs, pw, cam, PnPConfig(max_ransac_points=150))
    assert scored == [150]  # RANSAC saw the subset only
    assert full.success and sub.success, (full.reason, sub.reason)
    assert sub.inlier_mask.shape == (n,) and sub.num_inliers > 0.9 * (~outlier).sum()
    # The mask is the threshold test over *all* points, not just the subset.
    err = reprojection_errors(obs, pw, sub.w2c_opencv, cam)
    np.testing.assert_array_equal(sub.inlier_mask, err <= PnPConfig().reprojection_threshold_px)
    for res in (full, sub):
        dc, dr = np.linalg.norm(ros_error(res.w2c_opencv, w2c)[:3]), rotation_angle_deg(
            res.w2c_opencv[:3, :3] @ w2c[:3, :3].T
        )
        assert dc < 0.01 and dr < 0.05, (dc, dr)
    again = pnp_ransac(obs, pw, cam, PnPConfig(max_ransac_points=150))
    assert np.array_equal(again.w2c_opencv, sub.w2c_opencv)
    with pytest.raises(ValueError, match="max_ransac_points"):
        PnPConfig(max_ransac_points=3)


@pytest.mark.parametrize("outlier_fraction", [0.3, 0.7, 0.85])
def test_ransac_iterations_is_poselibs_own_stopping_rule(outlier_fraction):
    # poselib stops once a pose with that many inliers makes a better one unlikely: the
    # iterations it ran match ransac_iterations of what it found (P3P samples of 3).
    rng = np.random.default_rng(3)
    cam = random_camera(rng, "pinhole")
    n = 300
    _, pw, uv = random_scene(rng, cam, n)
    obs, _ = observe_with_outliers(rng, uv, cam, outlier_fraction)
    cfg = PnPConfig(min_iterations=0)
    res = pnp_ransac(obs, pw, cam, cfg)
    assert res.success, res.reason
    assert abs(res.iterations - ransac_iterations(res.num_inliers, n, cfg)) <= 1
    # Clamped to the configured range; no inliers to find: the cap.
    assert ransac_iterations(n, n, PnPConfig(min_iterations=50)) == 50
    assert ransac_iterations(3, n, PnPConfig(max_iterations=500)) == 500
    assert ransac_iterations(0, n, cfg) == cfg.max_iterations
