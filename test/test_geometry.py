"""Property tests of the camera model and the frame conventions (random round trips)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_reloc.geometry import frames
from neural_reloc.geometry.camera import Camera, undistort_image
from neural_reloc.geometry.se3 import (
    check_pose,
    interpolate_pose,
    invert_pose,
    make_pose,
    perturb_pose,
    pose_error,
    quat_xyzw_from_rotation,
    rotation_from_quat_xyzw,
    rotation_from_rotvec,
    rotvec_from_rotation,
    yaw_from_rotation,
)

seeds = st.integers(min_value=0, max_value=2**31 - 1)


def random_pose(rng: np.random.Generator, scale: float = 5.0) -> np.ndarray:
    q = rng.normal(size=4)
    return make_pose(rotation_from_quat_xyzw(q), rng.uniform(-scale, scale, size=3))


def random_camera(rng: np.random.Generator, distorted: bool = True) -> Camera:
    w = int(rng.integers(64, 1920))
    h = max(16, int(w * rng.uniform(0.5, 2.0)))
    k = (
        dict(
            k1=rng.uniform(-0.2, 0.2),
            k2=rng.uniform(-0.05, 0.05),
            p1=rng.uniform(-2e-3, 2e-3),
            p2=rng.uniform(-2e-3, 2e-3),
            k3=rng.uniform(-0.01, 0.01),
        )
        if distorted
        else {}
    )
    f = rng.uniform(0.6, 1.5) * max(w, h)
    return Camera(w, h, f, f * rng.uniform(0.98, 1.02), w / 2 + rng.uniform(-5, 5), h / 2 + rng.uniform(-5, 5), **k)


@settings(max_examples=200, deadline=None)
@given(seeds)
def test_quaternion_and_rotvec_round_trip(seed):
    rng = np.random.default_rng(seed)
    R = random_pose(rng)[:3, :3]
    assert np.allclose(rotation_from_quat_xyzw(quat_xyzw_from_rotation(R)), R, atol=1e-9)
    assert np.allclose(rotation_from_rotvec(rotvec_from_rotation(R)), R, atol=1e-9)
    q = quat_xyzw_from_rotation(R)
    assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12


def test_quaternion_order_is_ros_xyzw():
    # 90 degrees about +z: x -> y.
    R = rotation_from_quat_xyzw([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    assert np.allclose(R @ [1, 0, 0], [0, 1, 0])
    assert yaw_from_rotation(R) == pytest.approx(np.pi / 2)


@settings(max_examples=200, deadline=None)
@given(seeds)
def test_opengl_opencv_round_trips(seed):
    rng = np.random.default_rng(seed)
    c2w_gl = random_pose(rng)
    w2c_cv = frames.opencv_w2c_from_opengl_c2w(c2w_gl)
    assert np.allclose(frames.opengl_c2w_from_opencv_w2c(w2c_cv), c2w_gl, atol=1e-9)
    c2w_cv = frames.opencv_c2w_from_opengl_c2w(c2w_gl)
    assert np.allclose(frames.opengl_c2w_from_opencv_c2w(c2w_cv), c2w_gl, atol=1e-9)
    # Same camera centre in both conventions.
    assert np.allclose(frames.camera_center_from_opencv_w2c(w2c_cv), c2w_gl[:3, 3], atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_opengl_camera_looks_along_minus_z_and_opencv_along_plus_z(seed):
    """A point straight ahead of the camera: OpenGL -z, OpenCV +z, projecting to the
    principal point; 'up' in OpenGL (+y) is image-up (smaller v) in OpenCV."""
    rng = np.random.default_rng(seed)
    c2w_gl = random_pose(rng)
    cam = random_camera(rng, distorted=False)
    ahead = c2w_gl[:3, 3] + 3.0 * (-c2w_gl[:3, 2])
    up = ahead + 0.5 * c2w_gl[:3, 1]
    w2c = frames.opencv_w2c_from_opengl_c2w(c2w_gl)
    pc = (w2c @ np.append(ahead, 1))[:3]
    assert pc[2] == pytest.approx(3.0)
    uv, front = cam.project(pc[None])
    assert front[0] and np.allclose(uv[0], [cam.cx, cam.cy], atol=1e-6)
    uv_up, _ = cam.project((w2c @ np.append(up, 1))[:3][None])
    assert uv_up[0, 1] < cam.cy


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_distortion_round_trip_and_rays(seed):
    """pixel -> ray -> pixel over the image and the lens model's invertible domain
    (radii where r * (1 + k1 r^2 + ...) still increases; beyond it a model has no
    inverse and no calibrated camera images there)."""
    rng = np.random.default_rng(seed)
    cam = random_camera(rng)
    r = np.linspace(0, 3, 3001)
    slope = 1 + 3 * cam.k1 * r**2 + 5 * cam.k2 * r**4 + 7 * cam.k3 * r**6
    r_valid = 0.8 * r[np.argmax(slope < 0.3)] if np.any(slope < 0.3) else 3.0
    # ... no further out than the image corners, and within the ~100 degree field of
    # view the radial-tangential model is used for (wider lenses use fisheye models).
    r_valid = min(r_valid, np.hypot(cam.width / cam.fx, cam.height / cam.fy), 1.2)
    ang = rng.uniform(0, 2 * np.pi, 300)
    rad = r_valid * np.sqrt(rng.uniform(0, 1, 300))
    xy = np.stack([rad * np.cos(ang), rad * np.sin(ang)], -1)
    depth = rng.uniform(0.5, 20, size=(300, 1))
    p = np.concatenate([xy, np.ones((300, 1))], -1) * depth
    uv, front = cam.project(p)
    assert front.all()
    rays = cam.pixel_rays_opencv(uv)
    assert np.abs(rays - p / np.linalg.norm(p, axis=1, keepdims=True)).max() < 1e-9
    uv2, _ = cam.project(rays * depth)
    assert np.abs(uv2 - uv).max() < 1e-6


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_resizing_keeps_pixel_geometry(seed):
    """A 3D point lands on the same *relative* image position at any resolution."""
    rng = np.random.default_rng(seed)
    cam = random_camera(rng)
    p = np.array([[rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(1, 5)]])
    uv, _ = cam.project(p)
    small = cam.scaled(0.25)
    uv_s, _ = small.project(p)
    assert np.allclose(uv_s / [small.width, small.height], uv / [cam.width, cam.height], atol=1e-9)


def test_ros_camera_info_pixel_convention():
    cam = Camera(640, 480, 500.0, 500.0, 320.0, 240.0)
    K_ros = cam.ros_k()
    assert K_ros[0, 2] == 319.5 and K_ros[1, 2] == 239.5
    back = Camera.from_ros_k(640, 480, K_ros.ravel(), [0.1, 0.01, 0.0, 0.0, 0.0])
    assert back.cx == 320.0 and back.k1 == 0.1
    with pytest.raises(ValueError, match="plumb_bob"):
        Camera.from_ros_k(640, 480, K_ros.ravel(), [0.0] * 8)


def test_fit_within_is_orientation_agnostic():
    assert (Camera(1080, 1920, 1000, 1000, 540, 960).fit_within(160, 120).width,) == (90,)
    c = Camera(640, 480, 500, 500, 320, 240).fit_within(160, 120)
    assert (c.width, c.height) == (160, 120) and c.fx == 125.0


def test_invalid_camera_is_rejected_with_reason():
    with pytest.raises(ValueError, match="fx"):
        Camera(640, 480, -1.0, 500.0, 320, 240, source="x.json")
    with pytest.raises(ValueError, match="image size"):
        Camera(0, 480, 1.0, 500.0, 320, 240)


def test_undistort_image_moves_straight_lines_to_straight_lines():
    cam = Camera(320, 240, 250.0, 250.0, 160.0, 120.0, k1=-0.25, k2=0.05)
    # Draw the distorted image of a straight vertical line x = 0.3 (normalized).
    img = np.zeros((240, 320), np.uint8)
    ys = np.linspace(-0.45, 0.45, 2000)
    pts = cam.distort_normalized(np.stack([np.full_like(ys, 0.3), ys], -1))
    u = (cam.fx * pts[:, 0] + cam.cx).astype(int)
    v = (cam.fy * pts[:, 1] + cam.cy).astype(int)
    img[v, u] = 255
    und, target = undistort_image(img, cam)
    cols = np.nonzero(und > 100)[1]
    assert not target.is_distorted
    expected = target.fx * 0.3 + target.cx - 0.5
    assert np.abs(cols - expected).max() <= 1.5


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_ros_map_odom_composition(seed):
    """map_from_odom computed from a fix composes with odometry back to the fix."""
    rng = np.random.default_rng(seed)
    w2c = frames.opencv_w2c_from_opengl_c2w(random_pose(rng))
    map_from_world = random_pose(rng)
    odom_from_base = random_pose(rng)
    base_from_optical = frames.body_from_optical_extrinsic(random_pose(rng, 0.5))
    map_from_optical = frames.map_from_optical_from_opencv_w2c(w2c, map_from_world)
    map_from_odom = frames.map_from_odom_from_fix(map_from_optical, odom_from_base, base_from_optical)
    assert np.allclose(map_from_odom @ odom_from_base @ base_from_optical, map_from_optical, atol=1e-9)
    back = frames.opencv_w2c_from_map_from_optical(map_from_optical, map_from_world)
    assert np.allclose(back, w2c, atol=1e-9)
    base = frames.map_from_base_from_map_from_optical(map_from_optical, base_from_optical)
    assert np.allclose(base @ base_from_optical, map_from_optical, atol=1e-9)


def test_rep103_optical_axes():
    # Optical z (forward) is body x; optical x (right) is body -y; optical y (down) is body -z.
    B = frames.BODY_FROM_OPTICAL[:3, :3]
    assert np.allclose(B @ [0, 0, 1], [1, 0, 0])
    assert np.allclose(B @ [1, 0, 0], [0, -1, 0])
    assert np.allclose(B @ [0, 1, 0], [0, 0, -1])
    assert np.isclose(np.linalg.det(B), 1.0)


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_pose_error_and_perturbation(seed):
    rng = np.random.default_rng(seed)
    T = random_pose(rng)
    t_m, r_deg = rng.uniform(0.01, 2.0), rng.uniform(0.1, 170.0)
    P = perturb_pose(T, t_m, r_deg, rng)
    dt, dr = pose_error(P, T)
    assert dt == pytest.approx(t_m, rel=1e-9) and dr == pytest.approx(r_deg, rel=1e-6)
    assert pose_error(T, T) == pytest.approx((0.0, 0.0), abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_slerp_interpolation(seed):
    rng = np.random.default_rng(seed)
    A, B = random_pose(rng), random_pose(rng)
    assert np.allclose(interpolate_pose(A, B, 0.0), A, atol=1e-9)
    assert np.allclose(interpolate_pose(A, B, 1.0), B, atol=1e-9)
    M = interpolate_pose(A, B, 0.5)
    check_pose(M)
    _, total = pose_error(A, B)
    _, half_a = pose_error(A, M)
    _, half_b = pose_error(M, B)
    # Geodesic: the midpoint splits the rotation angle in two equal halves.
    assert half_a == pytest.approx(total / 2, abs=1e-6) and half_b == pytest.approx(total / 2, abs=1e-6)
    assert np.allclose(M[:3, 3], (A[:3, 3] + B[:3, 3]) / 2)


def test_check_pose_rejects_non_rotations():
    T = np.eye(4)
    T[:3, :3] *= 2.0
    with pytest.raises(ValueError, match="frame 7.*not a rotation"):
        check_pose(T, "frame 7")
    T = np.eye(4)
    T[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_pose(T)
    assert np.allclose(invert_pose(invert_pose(random_pose(np.random.default_rng(0)))), random_pose(np.random.default_rng(0)))


@settings(max_examples=50, deadline=None)
@given(seeds)
def test_covariance_of_child_offset_matches_monte_carlo(seed):
    rng = np.random.default_rng(seed)
    parent_from_a = random_pose(rng)
    a_from_b = random_pose(rng, 1.0)
    L = rng.normal(size=(6, 6)) * 1e-3
    cov = L @ L.T
    predicted = frames.covariance_of_child_offset(cov, parent_from_a, a_from_b)
    samples = []
    base_b = parent_from_a @ a_from_b
    for d in rng.multivariate_normal(np.zeros(6), cov, size=4000):
        P = parent_from_a.copy()
        P[:3, :3] = rotation_from_rotvec(d[3:]) @ P[:3, :3]
        P[:3, 3] += d[:3]
        B = P @ a_from_b
        samples.append(np.concatenate([B[:3, 3] - base_b[:3, 3], rotvec_from_rotation(B[:3, :3] @ base_b[:3, :3].T)]))
    emp = np.cov(np.array(samples).T)
    assert np.allclose(emp, predicted, atol=0.15 * np.abs(predicted).max())


@settings(max_examples=50, deadline=None)
@given(seeds)
def test_pose_mahalanobis_of_a_perturbation_drawn_from_the_covariance(seed):
    """A pose perturbed in the ROS parameterization (centre in the world, rotation about
    world axes) by d is sqrt(d' C^-1 d) from the prior; a singular covariance gives None."""
    rng = np.random.default_rng(seed)
    prior_c2w_opencv = random_pose(rng)
    L = rng.normal(size=(6, 6)) * 0.05
    cov = L @ L.T + np.eye(6) * 1e-4
    d = rng.multivariate_normal(np.zeros(6), cov)
    est_c2w_opencv = prior_c2w_opencv.copy()
    est_c2w_opencv[:3, :3] = rotation_from_rotvec(d[3:]) @ est_c2w_opencv[:3, :3]
    est_c2w_opencv[:3, 3] += d[:3]
    got = frames.pose_mahalanobis(invert_pose(est_c2w_opencv), invert_pose(prior_c2w_opencv), cov)
    assert got == pytest.approx(np.sqrt(d @ np.linalg.solve(cov, d)), rel=1e-6)
    assert np.allclose(frames.pose_difference_ros(invert_pose(est_c2w_opencv), invert_pose(prior_c2w_opencv)), d)
    rviz = np.diag([0.25, 0.25, 0.0, 0.0, 0.0, 0.068])  # RViz's /initialpose: z, roll, pitch unknown
    assert frames.pose_mahalanobis(invert_pose(est_c2w_opencv), invert_pose(prior_c2w_opencv), rviz) is None
    assert frames.pose_mahalanobis(invert_pose(est_c2w_opencv), invert_pose(prior_c2w_opencv), cov * np.nan) is None


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_initial_robot_pose_to_camera_prior_and_back(seed):
    """/initialpose (base_link in map) -> camera optical prior -> robot pose again, and
    the prior agrees with odometry carried forward through map_from_odom."""
    rng = np.random.default_rng(seed)
    map_from_base = random_pose(rng)
    base_from_optical = frames.body_from_optical_extrinsic(random_pose(rng, 0.5))
    map_from_optical = frames.map_from_optical_from_map_from_base(map_from_base, base_from_optical)
    assert np.allclose(
        frames.map_from_base_from_map_from_optical(map_from_optical, base_from_optical), map_from_base, atol=1e-9
    )
    # The camera optical axis (z) is the camera body's x axis expressed in map.
    body_x_in_map = (map_from_optical @ np.linalg.inv(frames.BODY_FROM_OPTICAL))[:3, 0]
    assert np.allclose(map_from_optical[:3, 2], body_x_in_map, atol=1e-9)
    odom_from_base = random_pose(rng)
    map_from_odom = frames.map_from_odom_from_fix(map_from_optical, odom_from_base, base_from_optical)
    assert np.allclose(map_from_odom @ odom_from_base, map_from_base, atol=1e-9)
