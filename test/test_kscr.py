"""D2S (the kscr method's regressor): losses, batching, and learning a scene.

The scene test is a synthetic one with exact answers: 3D points, each with a
descriptor of its own (a random unit vector, plus per-view noise), seen by cameras on a
walk; D2S trained on some views must predict the points of a held-out view's
descriptors well enough that PnP recovers that view's pose.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.pnp import PnPConfig, pnp_ransac
from neural_reloc.geometry.se3 import invert_pose, pose_error
from neural_reloc.methods.kscr.config import KscrTrainConfig
from neural_reloc.methods.kscr.losses import coordinate_loss, reliability_loss, reprojection_loss
from neural_reloc.methods.kscr.model import D2S
from neural_reloc.methods.kscr.training import make_batch, train_d2s
from neural_reloc.synthesis.views import KeypointView

CAM = Camera(fx=60.0, fy=60.0, cx=40.0, cy=30.0, width=80, height=60)


def look_at_w2c(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])  # OpenCV camera: x right, y down, z forward; world z up
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ centre
    return T


def scene_views(n_views: int, rng: np.random.Generator, n_points: int = 300, dim: int = 16, noise: float = 0.05):
    pts = rng.uniform([-2, 3, -1], [2, 5, 1], size=(n_points, 3))
    # descriptors: a smooth, invertible function of the point (random Fourier features)
    freq = rng.normal(scale=0.7, size=(3, dim // 2))
    desc = np.concatenate([np.sin(pts @ freq), np.cos(pts @ freq)], axis=1)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    views = []
    for k in range(n_views):
        c = np.array([-1.0 + 2.0 * k / max(n_views - 1, 1), 0.0, 0.0])
        w2c = look_at_w2c(c, np.array([0.0, 4.0, 0.0]))
        cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
        uv = cam[:, :2] / cam[:, 2:] * [CAM.fx, CAM.fy] + [CAM.cx, CAM.cy]
        vis = (cam[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < CAM.width) & (uv[:, 1] >= 0) & (uv[:, 1] < CAM.height)
        d = desc[vis] + noise * rng.normal(size=(int(vis.sum()), dim))
        views.append(KeypointView(
            name=f"v{k}", synthetic=False, keypoints_px=uv[vis].astype(np.float32),
            descriptors=(d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32),
            xyz_world=pts[vis].astype(np.float32), reliable=np.ones(int(vis.sum()), bool), w2c_opencv=w2c,
            K=CAM.K, width=CAM.width, height=CAM.height))
    return views


def test_losses_are_zero_for_the_truth_and_positive_otherwise():
    rng = np.random.default_rng(0)
    views = scene_views(3, rng)
    batch = make_batch(views, [0, 1], 64, rng)
    scale = torch.tensor(1.0)
    assert float(coordinate_loss(batch.xyz_world, batch, scale)) == pytest.approx(0.0, abs=1e-6)
    assert float(reprojection_loss(batch.xyz_world, batch, scale, 0.1)) == pytest.approx(0.0, abs=1e-4)
    moved = batch.xyz_world + torch.tensor([0.1, 0.0, 0.0])
    assert float(coordinate_loss(moved, batch, scale)) == pytest.approx(0.1, rel=1e-4)
    assert float(reprojection_loss(moved, batch, scale, 0.1)) > 0.005
    # points behind the camera get the cap, not a mirrored projection
    behind = batch.xyz_world.clone()
    behind[..., 1] = -10.0
    assert float(reprojection_loss(behind, batch, scale, 0.1)) == pytest.approx(0.1, rel=1e-6)
    logits = torch.where(batch.reliable, 20.0, -20.0).float()
    assert float(reliability_loss(logits, batch)) < 1e-6


def test_make_batch_pads_and_masks():
    rng = np.random.default_rng(1)
    views = scene_views(3, rng)
    views[1] = KeypointView(**{**views[1].__dict__, "keypoints_px": views[1].keypoints_px[:5],
                               "descriptors": views[1].descriptors[:5], "xyz_world": views[1].xyz_world[:5],
                               "reliable": views[1].reliable[:5]})
    batch = make_batch(views, [0, 1], 40, rng)
    assert batch.descriptors.shape == (2, 40, 16)
    assert int((~batch.pad[1]).sum()) == 5 and bool(batch.pad[1, 5:].all())
    assert int((~batch.pad[0]).sum()) == 40


def test_d2s_rejects_descriptors_of_another_size():
    with pytest.raises(ValueError, match="16-d descriptors, got 8-d"):
        D2S(16, dim=8, gnn_layers=1, heads=2, mlp=(16,))(torch.zeros(1, 3, 8))


def test_d2s_learns_a_scene_and_pnp_recovers_a_held_out_view():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    views = scene_views(9, rng)
    train, held_out = views[::2], views[3]
    model = D2S(16, dim=32, gnn_layers=1, heads=2, mlp=(128, 128))
    with torch.no_grad():
        untrained = model(torch.from_numpy(held_out.descriptors)[None])[0][0].numpy()
    cfg = KscrTrainConfig(steps=300, lr=3e-3, batch_images=4, max_keypoints=128, use_synthetic=False,
                          reprojection_after_fraction=0.5, decay_at_fractions=(0.7,))
    summary = train_d2s(model, train, cfg, torch.device("cpu"))
    assert summary["steps"] == 300 and summary["real_views"] == len(train)
    with torch.no_grad():
        xyz, logit = model(torch.from_numpy(held_out.descriptors)[None])
    err = np.abs(xyz[0].numpy() - held_out.xyz_world).max(axis=1)
    assert np.median(err) < 0.25  # the scene is 4 m wide
    assert np.median(np.abs(untrained - held_out.xyz_world).max(axis=1)) > 1.0
    pnp = pnp_ransac(held_out.keypoints_px.astype(np.float64), xyz[0].double().numpy(), CAM,
                     PnPConfig(reprojection_threshold_px=3.0))
    assert pnp.success
    dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(held_out.w2c_opencv))
    assert dt < 0.3 and dr < 4.0


def test_training_without_reliable_points_is_a_clear_error():
    rng = np.random.default_rng(3)
    views = scene_views(2, rng)
    for v in views:
        v.reliable[:] = False
    with pytest.raises(ValueError, match="no training keypoint is reliable"):
        train_d2s(D2S(16, dim=8, gnn_layers=1, heads=2, mlp=(8,)), views, KscrTrainConfig(steps=1), torch.device("cpu"))


def test_d2s_sees_unit_descriptors_whatever_their_norm():
    torch.manual_seed(0)
    model = D2S(16, dim=32, gnn_layers=1, heads=2, mlp=(64,)).eval()
    d = torch.randn(1, 10, 16)
    with torch.no_grad():
        a, b = model(d), model(3.0 * d)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)


def test_descriptor_noise_is_seeded_and_changes_what_is_learned():
    views = scene_views(4, np.random.default_rng(5))

    def train(noise: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = D2S(16, dim=16, gnn_layers=0, heads=2, mlp=(32,))
        cfg = KscrTrainConfig(steps=20, batch_images=2, max_keypoints=64, use_synthetic=False, descriptor_noise=noise)
        train_d2s(model, views, cfg, torch.device("cpu"))
        return model.head[-1].weight.detach().clone()

    assert torch.equal(train(0.3), train(0.3))
    assert not torch.equal(train(0.3), train(0.0))
