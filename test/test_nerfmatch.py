"""NeRFMatch-Mini parts: dual-softmax matching, the coarse loss, ground-truth
associations by projection, the encoder's shapes; the end-to-end run is in the
benchmark (NOTES.md), too slow for the suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neural_reloc.geometry.camera import Camera
from neural_reloc.methods.nerfmatch.config import EncoderConfig, NerfMatchConfig
from neural_reloc.methods.nerfmatch.encoder import STRIDE, ImageEncoder, NerfFeatureProjection
from neural_reloc.methods.nerfmatch.matcher import coarse_loss, dual_softmax, mutual_matches
from neural_reloc.methods.nerfmatch.nerf_features import RenderedPoints, encoder_camera
from neural_reloc.methods.nerfmatch.training import CachedView, ground_truth


def test_dual_softmax_mutual_matches_find_a_permutation():
    torch.manual_seed(0)
    b = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    perm = torch.randperm(50)
    a = b[perm] + 0.01 * torch.randn(50, 16)
    a = torch.nn.functional.normalize(a, dim=1)
    s = dual_softmax(a, b, 0.1)
    assert s.shape == (50, 50) and torch.all(s <= 1.0) and torch.all(s >= 0)
    cells, pts, score = mutual_matches(s, 0.2)
    assert len(cells) == 50 and torch.equal(pts, perm[cells])
    # a threshold above every score leaves nothing
    assert len(mutual_matches(s, 1.01)[0]) == 0
    # the loss is small at the truth and large elsewhere
    assert coarse_loss(s, torch.arange(50), perm) < 0.1 < coarse_loss(s, torch.arange(50), torch.roll(perm, 1))


def test_mutual_matches_drop_a_shared_best():
    s = torch.tensor([[0.9, 0.1], [0.8, 0.05]])  # both cells prefer point 0; point 0 prefers cell 0
    cells, pts, _ = mutual_matches(s, 0.0)
    assert cells.tolist() == [0] and pts.tolist() == [0]


def test_ground_truth_associates_visible_points_with_their_cells():
    cam = Camera(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)
    w2c = np.eye(4)
    uv = cam.pixel_centers(stride=STRIDE).reshape(-1, 2)
    depth = 2.0
    rays = np.concatenate([(uv - [32.0, 24.0]) / 50.0, np.ones((len(uv), 1))], 1)
    pts = rays * depth  # the query's own surface at z = 2
    n = len(uv)
    own = RenderedPoints(torch.zeros(n, 4), torch.from_numpy(pts).float(), torch.ones(n))
    q = CachedView(torch.zeros(3, 48, 64), cam, w2c, pts[:, 2], np.ones(n, bool), [own])
    cells, j = ground_truth(q, own, 0.5, 0.05)
    assert np.array_equal(cells, np.arange(n)) and np.array_equal(j, np.arange(n))
    # a point hidden behind the surface (4 m deep) and one off the image are not matches
    other = pts.copy()
    other[0] *= 2.0
    other[1] = [100.0, 0.0, 2.0]
    ref = RenderedPoints(torch.zeros(n, 4), torch.from_numpy(other).float(), torch.ones(n))
    cells, j = ground_truth(q, ref, 0.5, 0.05)
    assert 0 not in j and 1 not in j and len(j) == n - 2


def test_encoder_gives_a_unit_coarse_map_at_stride_8_and_cameras_fit_it():
    enc = ImageEncoder(EncoderConfig(channels=(8, 8, 16), dim=12, nerf_hidden=16))
    out = enc(torch.rand(1, 3, 48, 64))
    assert out.shape == (1, 12, 6, 8)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 6, 8), atol=1e-5)
    proj = NerfFeatureProjection(7, EncoderConfig(dim=12, nerf_hidden=16))
    assert proj(torch.randn(5, 7)).shape == (5, 12)
    cam = encoder_camera(Camera(width=640, height=480, fx=500, fy=500, cx=320, cy=240), 300)
    assert cam.width % STRIDE == 0 and cam.height % STRIDE == 0 and abs(cam.width - 300) <= STRIDE


def test_unknown_feature_layer_is_refused():
    from neural_reloc.config_io import merge

    with pytest.raises(ValueError, match="features.layer"):
        merge(NerfMatchConfig(), {"features": {"layer": "nope"}})
