"""CROSSFIRE building blocks: feature extractor, descriptor head, losses (paper Sec. 3).

Expected loss values are worked out by hand in the comments, not produced by the code.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from neural_reloc.geometry.camera import Camera
from neural_reloc.methods.crossfire import descriptor_head as dh
from neural_reloc.methods.crossfire import feature_extractor as fe
from neural_reloc.methods.crossfire import losses as L
from neural_reloc.nerf.config import EncodingConfig, FieldConfig
from neural_reloc.nerf.field import NeuralField

SQRT1_2 = math.sqrt(0.5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny tests run on one torch thread. Set per module, not at import: a
    module-level call ran the whole session (the shared map build too) on one core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ===================================================================== L_pos, eq. (1)
def test_l_pos_hand_values():
    # cos((1,0),(2,0)) = 1 -> 0;  cos((0,1),(1,0)) = 0 -> 1;  cos((1,1),(-1,-1)) = -1 -> 2
    # mean (0 + 1 + 2) / 3 = 1
    fi = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    fr = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    assert L.l_pos(fi, fr).item() == pytest.approx(1.0, abs=1e-6)
    # 60 degrees apart: 1 - cos 60 = 0.5
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.5, math.sqrt(3) / 2]])
    assert L.l_pos(a, b).item() == pytest.approx(0.5, abs=1e-6)


def test_l_pos_identical_zero_opposite_two():
    f = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    assert L.l_pos(f, 3.0 * f).item() == pytest.approx(0.0, abs=1e-6)
    assert L.l_pos(f, -f).item() == pytest.approx(2.0, abs=1e-6)


# ===================================================================== L_neg, eq. (2)
# Three pixels, D = 2, lambda = 0.5:
#   xyz: p0 = (0,0,0), p1 = (1,0,0), p2 = (0,3,0)
#   |p0-p1| = 1  -> t = 1 - 0.5 = 0.5
#   |p0-p2| = 3  -> t = max(0, 1 - 1.5) = 0      (clamped)
#   |p1-p2| = sqrt(10) -> t = 0                   (clamped)
#   F_I = (2,0), (3,0), (0,1);  F_R = (1,0), (1,1), (1,0)
XYZ = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
FI = torch.tensor([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
FR = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])


def test_t_lambda_hand_values_and_clamp():
    t = L.t_lambda(XYZ[[0, 0, 1, 2]], XYZ[[1, 2, 2, 2]], 0.5)
    assert t.tolist() == pytest.approx([0.5, 0.0, 0.0, 1.0], abs=1e-6)
    # far apart: never negative
    far = L.t_lambda(torch.zeros(1, 3), torch.tensor([[100.0, 0.0, 0.0]]), 0.5)
    assert far.item() == 0.0


def test_l_neg_hand_values():
    # p = [1, 2, 0]:
    #   i=0: cos(F_I[1]=(3,0), F_R[0]=(1,0)) = 1,      t(1,0) = 0.5 -> 0.5
    #   i=1: cos(F_I[2]=(0,1), F_R[1]=(1,1)) = 1/sqrt2, t(2,1) = 0   -> 0.70711
    #   i=2: cos(F_I[0]=(2,0), F_R[2]=(1,0)) = 1,      t(0,2) = 0   -> 1
    #   mean = (0.5 + 0.70711 + 1) / 3 = 0.735702
    p = torch.tensor([[1, 2, 0]])
    assert L.l_neg(FI, FR, XYZ, 0.5, p).item() == pytest.approx((1.5 + SQRT1_2) / 3, abs=1e-6)
    # adding the identity permutation: every term cos - 1 <= 0 -> 0; mean over m n = 6
    p2 = torch.tensor([[1, 2, 0], [0, 1, 2]])
    assert L.l_neg(FI, FR, XYZ, 0.5, p2).item() == pytest.approx((1.5 + SQRT1_2) / 6, abs=1e-6)
    # p = [1, 0, 2]:
    #   i=0: cos(F_I[1], F_R[0]) = 1 - t(1,0)=0.5          -> 0.5
    #   i=1: cos(F_I[0]=(2,0), F_R[1]=(1,1)) = 0.70711 - 0.5 -> 0.20711
    #   i=2: cos(F_I[2]=(0,1), F_R[2]=(1,0)) = 0 - 1          -> clamped to 0
    #   mean = 0.70711 / 3
    p3 = torch.tensor([[1, 0, 2]])
    assert L.l_neg(FI, FR, XYZ, 0.5, p3).item() == pytest.approx(SQRT1_2 / 3, abs=1e-6)


def test_l_neg_no_gradient_into_xyz_but_into_both_descriptor_maps():
    fi = FI.clone().requires_grad_(True)
    fr = FR.clone().requires_grad_(True)
    # xyz from a depth map that requires grad, as in training (points = o + d * depth)
    depth = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    dirs = XYZ + torch.tensor([0.0, 0.0, 1.0])
    xyz = dirs * depth[:, None]
    assert xyz.requires_grad
    loss = L.l_neg(fi, fr, xyz, 0.1, torch.tensor([[1, 2, 0], [2, 0, 1]]))
    assert loss.item() > 0
    loss.backward()
    assert depth.grad is None
    assert fi.grad is not None and fi.grad.abs().sum() > 0
    assert fr.grad is not None and fr.grad.abs().sum() > 0
    # and xyz truly does not take part in the graph
    with pytest.raises(RuntimeError):
        torch.autograd.grad(L.l_neg(fi, fr, xyz, 0.1, torch.tensor([[1, 2, 0]])), xyz)


def test_l_pos_gradients_reach_both_maps():
    fi = FI.clone().requires_grad_(True)
    fr = FR.clone().requires_grad_(True)
    gi, gr = torch.autograd.grad(L.l_pos(fi, fr), [fi, fr])
    assert gi.abs().sum() > 0 and gr.abs().sum() > 0


def test_random_permutations_are_permutations():
    g = torch.Generator().manual_seed(3)
    p = L.random_permutations(50, 4, g)
    assert p.shape == (4, 50) and p.dtype == torch.long
    for row in p:
        assert sorted(row.tolist()) == list(range(50))


# ===================================================================== DSSIM
def test_dssim_identical_is_zero():
    img = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    assert L.dssim(img, img.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_dssim_constant_images():
    # Constant a = 0.5, b = 0: variances and covariance 0 everywhere, so for any window
    # SSIM = (2*0.5*0 + C1) / (0.25 + 0 + C1) * (C2 / C2) = 1e-4 / 0.2501 = 3.99840e-4
    # DSSIM = (1 - 3.99840e-4) / 2 = 0.49980008
    a = torch.full((1, 3, 8, 8), 0.5)
    b = torch.zeros(1, 3, 8, 8)
    assert L.dssim(a, b).item() == pytest.approx(0.49980008, abs=1e-6)


def test_dssim_image_vs_its_constant_mean():
    # 3x3 image, columns 0, 0.5, 1 (every channel), vs the constant 0.5, window 3.
    # Symmetric window -> mu_a = mu_b = 0.5: luminance term 1; b constant: cov = 0, so
    # SSIM = C2 / (var_a + C2), var_a = 0.25 * (weight of the two outer columns).
    # Gaussian sigma 1.5, 1D taps exp(-1/4.5) = 0.800737, 1, 0.800737; sum 2.601474;
    #   outer tap 0.307801 -> outer columns 0.615602 -> var_a = 0.1539005
    #   SSIM = 0.0009 / 0.1548005 = 0.00581394 -> DSSIM = 0.49709303
    # Uniform window: var_a = 0.25 * 2/3 = 1/6
    #   SSIM = 0.0009 / 0.1675667 = 0.00537096 -> DSSIM = 0.49731452
    a = torch.tensor([0.0, 0.5, 1.0]).expand(1, 3, 3, 3).contiguous()
    b = torch.full((1, 3, 3, 3), 0.5)
    assert L.dssim(a, b, window=3).item() == pytest.approx(0.49709303, abs=1e-6)
    assert L.dssim(a, b, window=3, sigma=None).item() == pytest.approx(0.49731452, abs=1e-6)


def test_dssim_too_small_image_rejected():
    with pytest.raises(ValueError, match="window"):
        L.dssim(torch.zeros(1, 3, 5, 5), torch.zeros(1, 3, 5, 5), window=7)


# ===================================================================== depth TV
def test_depth_tv_hand_values():
    origin = torch.tensor([[0, 0]])
    # ramp d[r, c] = c: each of the 4 positions: (c - (c+1))^2 + 0 = 1 -> mean 1
    ramp = torch.tensor([[0.0, 1.0, 2.0]] * 3)
    assert L.depth_tv(ramp, 3, origins=origin)[0].item() == pytest.approx(1.0)
    # bump 5 in the centre of zeros, positions (r, c) in {0,1}^2, (right diff)^2 + (down diff)^2:
    #   (0,0): 0 + 0 = 0;  (0,1): 0 + 25 = 25;  (1,0): 25 + 0 = 25;  (1,1): 25 + 25 = 50
    #   mean 100 / 4 = 25
    bump = torch.zeros(3, 3)
    bump[1, 1] = 5.0
    assert L.depth_tv(bump, 3, origins=origin)[0].item() == pytest.approx(25.0)
    # constant depth: 0
    assert L.depth_tv(torch.full((6, 6), 2.0), 5, 4, torch.Generator().manual_seed(0))[0].item() == 0.0


def test_depth_tv_origins_are_row_col():
    # d[r, c] = r^2 + 2c on 5x5, 2x2 patches (one position each):
    #   origin (row 1, col 0): right diff (1) - (1 + 2) = -2 -> 4, down diff 1 - 4 = -3 -> 9: 13
    #   origin (row 3, col 3): right diff -2 -> 4, down diff 9 - 16 = -7 -> 49: 53
    #   mean (13 + 53) / 2 = 33
    r = torch.arange(5.0)[:, None]
    c = torch.arange(5.0)[None, :]
    d = r**2 + 2 * c
    tv, o = L.depth_tv(d, 2, origins=torch.tensor([[1, 0], [3, 3]]))
    assert tv.item() == pytest.approx(33.0)
    assert o.tolist() == [[1, 0], [3, 3]]


def test_depth_tv_random_patches_inside_seeded_and_differentiable():
    depth = torch.rand(7, 9, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    tv1, o1 = L.depth_tv(depth, 5, 16, torch.Generator().manual_seed(42))
    tv2, o2 = L.depth_tv(depth, 5, 16, torch.Generator().manual_seed(42))
    assert torch.equal(o1, o2) and tv1.item() == tv2.item()
    assert o1.shape == (16, 2)
    assert (o1[:, 0] >= 0).all() and (o1[:, 0] <= 7 - 5).all()
    assert (o1[:, 1] >= 0).all() and (o1[:, 1] <= 9 - 5).all()
    (g,) = torch.autograd.grad(tv1, depth)
    assert g.abs().sum() > 0
    with pytest.raises(ValueError):
        L.depth_tv(depth, 5, origins=torch.tensor([[3, 0]]))  # row 3 + 5 > 7


# ===================================================================== eq. (3)
def _loss_cfg(**kw):
    from neural_reloc.methods.crossfire.config import CrossfireLossConfig

    return CrossfireLossConfig(**kw)


def test_crossfire_loss_weighted_terms():
    cfg = _loss_cfg(ssim_window=3, tv_patch_size=3, tv_patches=1, lambda_dssim=0.1, lambda_tv=1e-3,
                    weight_pos=2.0, weight_neg=1.0, neg_permutations=1)
    h = w = 3
    rgb = torch.rand(9, 3, generator=torch.Generator().manual_seed(0))
    depth = torch.zeros(3, 3)
    depth[1, 1] = 5.0  # TV 25 (see test_depth_tv_hand_values) -> weighted 0.025
    f = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
    xyz = torch.randn(9, 3)
    # rendered rgb = image + 0.1: MSE 0.01; rendered descriptors opposite: L_pos 2, weighted 4;
    # identity permutation: L_neg = 0
    out = L.crossfire_loss(cfg, rgb + 0.1, rgb, depth.reshape(-1), (h, w), f_image=f, f_render=-f, xyz=xyz,
                           lam=1.0, permutations=torch.arange(9)[None], tv_origins=torch.tensor([[0, 0]]))
    assert set(out) == {"mse", "dssim", "tv", "pos", "neg", "total"}
    assert out["mse"].item() == pytest.approx(0.01, abs=1e-6)
    assert out["tv"].item() == pytest.approx(0.025, abs=1e-7)
    assert out["pos"].item() == pytest.approx(4.0, abs=1e-5)
    assert out["neg"].item() == 0.0
    assert 0.0 < out["dssim"].item() <= 0.1  # lambda1 * a DSSIM in [0, 1]
    parts = sum(out[k] for k in ("mse", "dssim", "tv", "pos", "neg"))
    assert out["total"].item() == pytest.approx(parts.item())
    # identical images: DSSIM 0; without descriptors the pos/neg terms are absent
    out2 = L.crossfire_loss(cfg, rgb, rgb, depth.reshape(-1), (h, w), tv_origins=torch.tensor([[0, 0]]))
    assert set(out2) == {"mse", "dssim", "tv", "total"}
    assert out2["total"].item() == pytest.approx(0.025, abs=1e-6)


def test_neg_lambda_from_config():
    cfg = _loss_cfg(neg_zero_similarity_distance_rel=0.02)
    lam = L.neg_lambda(cfg, scene_extent=50.0)  # zero similarity at 0.02 * 50 = 1 m
    assert lam == pytest.approx(1.0)


def test_module_defaults_match_config():
    from neural_reloc.methods.crossfire.config import (
        CrossfireLossConfig,
        DescriptorConfig,
    )

    d = DescriptorConfig()
    assert (fe.DEFAULT_DIM, tuple(fe.DEFAULT_CHANNELS)) == (d.dim, tuple(d.cnn_channels))
    assert (dh.DEFAULT_DIM, dh.DEFAULT_HIDDEN_DIM, dh.DEFAULT_LAYERS) == (d.dim, d.head_hidden_dim, d.head_layers)
    assert L.SSIM_WINDOW == CrossfireLossConfig().ssim_window


# ===================================================================== feature extractor
@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return fe.FeatureExtractor(dim=16, channels=(8, 8, 16, 16, 16, 16, 16)).eval()


def test_feature_extractor_shape_and_unit_norm(cnn):
    x = torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        y = cnn(x)
    assert y.shape == (2, 16, 6, 10)
    assert torch.allclose(y.norm(dim=1), torch.ones(2, 6, 10), atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 4"):
        cnn(torch.rand(1, 3, 24, 42))


def test_feature_extractor_bfloat16_backbone_float32_head(cnn):
    """backbone_dtype=bfloat16: the 3x3 convolutions in bfloat16, the head sees (and
    gives) float32, descriptors unit and close to the float32 ones."""
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    seen = []
    hook = cnn.head.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    try:
        with torch.no_grad():
            a = cnn(x)
            b = cnn(x, backbone_dtype=torch.bfloat16)
    finally:
        hook.remove()
    assert seen == [(torch.float32, torch.float32)] * 2
    assert b.dtype == torch.float32 and torch.allclose(b.norm(dim=1), torch.ones(1, 8, 12), atol=1e-5)
    cos = (a * b).sum(1)
    assert float(cos.min()) > 0.995 and not torch.equal(a, b)


def test_feature_extractor_has_8_conv_layers():
    net = fe.FeatureExtractor()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8
    assert [c.kernel_size for c in convs] == [(3, 3)] * 7 + [(1, 1)]
    assert [c.out_channels for c in convs] == list(fe.DEFAULT_CHANNELS) + [fe.DEFAULT_DIM]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 2
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 7
    assert sum(p.numel() for p in net.parameters()) == 438_720


@pytest.mark.parametrize("dilations", [fe.DEFAULT_DILATIONS, (1,) * 7])
def test_feature_extractor_translation_equivariance(dilations):
    # Shift the input by 4 px -> the output moves by one cell, away from the borders.
    # Cell j sees [4j + 2 - rf/2, 4j + 2 + rf/2) (rf = 128 dilated, 40 undilated).
    net = fe.FeatureExtractor(dilations=dilations).eval()
    rf = fe.receptive_field(dilations)
    size = 160
    x = torch.rand(1, 3, size, size + 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = net(x[..., :size])
        b = net(x[..., 4 : size + 4])
    lo = -(-(rf // 2 - 2) // 4)  # first cell free of padding: 4j + 2 - rf/2 >= 0
    hi = (size - 2 - rf // 2) // 4 + 1  # cells j < hi have 4j + 2 + rf/2 <= size
    assert hi - lo >= 3
    # b[j] = a[j + 1] where both are free of padding (b's j in [lo, hi - 1)).
    assert torch.allclose(b[..., lo:hi, lo : hi - 1], a[..., lo:hi, lo + 1 : hi], atol=1e-5)
    assert not torch.allclose(b[..., lo:hi, lo : hi - 1], a[..., lo:hi, lo : hi - 1], atol=1e-3)


def test_receptive_field_arithmetic():
    assert fe.receptive_field((1,) * 7) == 40
    assert fe.receptive_field(fe.DEFAULT_DILATIONS) == fe.RECEPTIVE_FIELD == 128


def test_descriptor_cell_centres(cnn):
    # Receptive-field arithmetic over the actual layers, pixel k's centre at k + 0.5:
    # a k x k stride-s layer with padding p moves the first centre by ((k-1)/2 - p) * jump.
    start, jump = 0.5, 1.0
    for m in list(cnn.backbone) + [cnn.head]:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k = m.kernel_size[0] if isinstance(m.kernel_size, tuple) else m.kernel_size
            s = m.stride[0] if isinstance(m.stride, tuple) else m.stride
            p = m.padding[0] if isinstance(m.padding, tuple) else m.padding
            d = m.dilation[0] if isinstance(m.dilation, tuple) else m.dilation
            start += (d * (k - 1) / 2 - p) * jump
            jump *= s
    assert (start, jump) == (2.0, 4.0)
    grid = fe.descriptor_grid_pixels(3, 5)
    assert grid.shape == (3, 5, 2)
    assert grid[2, 4].tolist() == [18.0, 10.0]  # (u, v) = (4*4 + 2, 4*2 + 2)
    cam = Camera(width=20, height=12, fx=10.0, fy=10.0, cx=10.0, cy=6.0)
    assert np.allclose(grid.numpy(), cam.pixel_centers(stride=4))

    # Empirically: linearize (ReLU -> identity, max -> average pool, same geometry); the
    # input pixels that influence cell (c, c) of a big enough input are
    # [4c + 2 - rf/2, 4c + 2 + rf/2): [14, 54) undilated at c = 8, [2, 130) dilated at c = 16.
    for dil, c, span in (((1,) * 7, 8, (14, 54)), (fe.DEFAULT_DILATIONS, 16, (2, 130))):
        lin = copy.deepcopy(fe.FeatureExtractor(dilations=dil))
        for i, m in enumerate(lin.backbone):
            if isinstance(m, nn.ReLU):
                lin.backbone[i] = nn.Identity()
            elif isinstance(m, nn.MaxPool2d):
                lin.backbone[i] = nn.AvgPool2d(2)
        n = 4 * c + 2 + fe.receptive_field(dil)
        x = torch.rand(1, 3, n, n, requires_grad=True)
        y = lin.head(lin.backbone((x - lin.mean) / lin.std))
        (g,) = torch.autograd.grad(y[0, :, c, c].sum(), x)
        cols = g.abs().sum((0, 1, 2)).nonzero().squeeze(1)
        rows = g.abs().sum((0, 1, 3)).nonzero().squeeze(1)
        assert (cols.min().item(), cols.max().item() + 1) == span
        assert (rows.min().item(), rows.max().item() + 1) == span
        assert sum(span) / 2 == 4 * c + 2  # symmetric about the cell centre


def test_flatten_descriptor_map_order():
    f = torch.arange(2 * 3 * 4.0).view(1, 2, 3, 4)
    rows = fe.flatten_descriptor_map(f)
    assert rows.shape == (12, 2)
    assert rows[1 * 4 + 2].tolist() == f[0, :, 1, 2].tolist()  # row-major (i, j) -> i * w + j


# ===================================================================== descriptor head
def _small_field():
    enc = EncodingConfig(dense_resolutions=(4,), dense_features=2, plane_resolutions=(8,), plane_features=2)
    return NeuralField(FieldConfig(encoding=enc, hidden_dim=16, geo_feat_dim=7, color_hidden_dim=16), num_images=2)


def test_descriptor_head_position_only_and_added():
    field = _small_field()
    head = dh.DescriptorHead.for_field(field)
    assert set(head.inputs) == {"encoding", "geo_feat"}
    assert not {"direction", "appearance"} & set(head.inputs)
    assert head.out_dim == 32
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and linears[0].out_features == 64
    field.add_head("descriptor", head)
    geo = field.geometry(torch.rand(5, 3))
    out = field.head_outputs(geo, ["descriptor"])["descriptor"]
    assert out.shape == (5, 32)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(5))  # not normalized inside
    # A head added to a field that already moved (to a GPU, here the meta device) goes
    # with it.
    moved = _small_field().to("meta")
    moved.add_head("descriptor", dh.DescriptorHead.for_field(moved))
    assert all(p.device.type == "meta" for p in moved.heads["descriptor"].parameters())


@pytest.mark.parametrize("bad", ["direction", "appearance"])
def test_descriptor_head_seeing_view_or_appearance_rejected(bad):
    field = _small_field()
    head = dh.DescriptorHead(in_dim=10, inputs=("encoding", bad))
    with pytest.raises(ValueError, match="position-only"):
        field.add_head("descriptor", head)


def test_descriptor_lr_decays_at_a_fraction_of_steps_or_of_the_time_budget():
    from neural_reloc.methods.crossfire.config import CrossfireTrainConfig
    from neural_reloc.methods.crossfire.descriptor_training import descriptor_lr_factor

    t = CrossfireTrainConfig(lr_decay=0.1, decay_at_fraction=0.5)
    assert descriptor_lr_factor(t, 49, 100) == 1.0
    assert descriptor_lr_factor(t, 50, 100) == 0.1
    # No budget: elapsed time does not matter.
    assert descriptor_lr_factor(t, 10, 100, elapsed_s=1e6) == 1.0
    # A 60 s budget ends the stage first: decay at 30 s whatever the step.
    assert descriptor_lr_factor(t, 10, 100, elapsed_s=29.9, budget_s=60.0) == 1.0
    assert descriptor_lr_factor(t, 10, 100, elapsed_s=30.0, budget_s=60.0) == 0.1
    assert descriptor_lr_factor(t, 60, 100, elapsed_s=1.0, budget_s=60.0) == 0.1


def test_field_lr_decays_over_steps_or_over_the_time_budget():
    from types import SimpleNamespace

    from neural_reloc.nerf.config import NeRFTrainConfig
    from neural_reloc.nerf.train import NeuralMapTrainer

    def factor(step, elapsed, budget):
        cfg = SimpleNamespace(train=NeRFTrainConfig(steps=1000, lr_final_factor=0.01, time_budget_s=budget))
        return NeuralMapTrainer.lr_factor(SimpleNamespace(cfg=cfg, state=SimpleNamespace(elapsed_s=elapsed)), step)

    assert factor(0, 0.0, 0.0) == pytest.approx(1.0)
    assert factor(500, 1e6, 0.0) == pytest.approx(0.1)  # 0.01 ** 0.5; no budget: time is ignored
    assert factor(1000, 0.0, 0.0) == pytest.approx(0.01)
    assert factor(100, 50.0, 100.0) == pytest.approx(0.1)  # half the budget gone at 10% of the steps
    assert factor(100, 500.0, 100.0) == pytest.approx(0.01)  # past the budget: fully decayed
    assert factor(700, 50.0, 100.0) == pytest.approx(0.01**0.7)  # steps ahead of the clock


def _eager_trunk(trunk, x, dtype):
    if dtype == torch.float32:
        return trunk(x)
    with torch.autocast("cpu", dtype=dtype):
        return trunk(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_trunk_is_the_modules_bit_for_bit(dtype):
    """run_trunk without autograd on the CPU (each convolution and its ReLU one oneDNN
    call) gives what the modules give (under autocast for bfloat16): strides, dilations,
    pooling, a convolution with no ReLU after it, both memory layouts. Bit for bit in
    bfloat16; in float32 PyTorch may pick kernels of its own that sum in another order."""
    from neural_reloc.methods.common.cnn_inference import fused_inference_available, run_trunk

    torch.manual_seed(0)
    trunk = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
        nn.Conv2d(16, 8, 3, padding=1),
    ).eval()
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        # bfloat16 fuses only where oneDNN has bfloat16 kernels (not on an AVX2-only CPU,
        # where the fused call would raise): elsewhere the modules run under autocast
        fused = torch.backends.mkldnn.is_available() and (
            dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported())
        assert fused_inference_available(x, dtype) == fused
        want = _eager_trunk(trunk, x, dtype)
        got = run_trunk(trunk, x, dtype)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        trunk = trunk.to(memory_format=torch.channels_last)
        want_cl = _eager_trunk(trunk, x_cl, dtype)
        got_cl = run_trunk(trunk, x_cl, dtype)
    assert got.dtype == got_cl.dtype == want.dtype == dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_cl, want_cl, rtol=1e-5, atol=1e-6)
    if dtype == torch.bfloat16:
        assert torch.equal(got, want) and torch.equal(got_cl, want_cl)


def test_fused_trunk_keeps_autograd_for_training():
    """With autograd on, run_trunk runs the modules themselves: gradients reach the weights."""
    from neural_reloc.methods.common.cnn_inference import fused_inference_available, run_trunk

    trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True))
    x = torch.rand(1, 3, 8, 8)
    assert not fused_inference_available(x)
    run_trunk(trunk, x).sum().backward()
    assert trunk[0].weight.grad is not None and trunk[0].weight.grad.abs().sum() > 0


def test_feature_extractor_inference_matches_its_modules(cnn):
    """The extractor's own forward (fused at inference) equals its modules run one by one,
    in the channels-last layout localization runs it in."""
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(5)).contiguous(memory_format=torch.channels_last)
    net = copy.deepcopy(cnn).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            h = _eager_trunk(net.backbone, (x - net.mean) / net.std, dtype).float()
            want = torch.nn.functional.normalize(net.head(h), dim=1)
            got = net(x, backbone_dtype=dtype)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            assert dtype == torch.float32 or torch.equal(got, want)


# ============================================== the matching grid fitted to small images
def _images(width: int, height: int, n: int = 3):
    from neural_reloc.data.posed_images import PosedImages

    return PosedImages(names=[f"f{i}" for i in range(n)], image_paths=[f"f{i}.png" for i in range(n)],
                       cameras=[Camera(width, height, 0.8 * width, 0.8 * width, width / 2, height / 2)] * n,
                       c2w_opengl=np.stack([np.eye(4)] * n))


def test_small_images_get_a_grid_the_cnn_sees_at_their_own_size():
    from neural_reloc.methods.crossfire.config import CrossfireConfig
    from neural_reloc.methods.crossfire.trainer import descriptor_map_camera, fit_to_mapping_images

    cfg = CrossfireConfig()
    lc = cfg.localization
    fit = fit_to_mapping_images(cfg, _images(320, 240), log=lambda m: None)
    fl = fit.localization
    # 320x240 images: the default 160x120 grid would run the CNN at 640x480 (2x upsampled).
    assert (fl.match_long_side, fl.match_short_side, fit.loss.image_long_side) == (80, 60, 80)
    _, cam_cnn = descriptor_map_camera(Camera(320, 240, 256, 256, 160, 120), fl.match_long_side, fl.match_short_side)
    assert (cam_cnn.width, cam_cnn.height) == (320, 240)
    # Block sizes in cells halve with the cells (the same part of the image), one-cell thresholds stay.
    assert (fl.render_stride, fl.early_render_stride, fl.guided_radius_cells, fl.keyframe_stride) == (
        lc.render_stride // 2, lc.early_render_stride // 2, lc.guided_radius_cells // 2, lc.keyframe_stride // 2)
    assert fl.keyframe_pnp.reprojection_threshold_px == lc.keyframe_pnp.reprojection_threshold_px / 2
    assert fl.keyframe_pnp.max_iterations == lc.keyframe_pnp.max_iterations
    assert (fl.pnp, fl.refine_margin, fl.retrieval_long_side) == (lc.pnp, lc.refine_margin, lc.retrieval_long_side)
    assert fit.map == cfg.map and fit.descriptor == cfg.descriptor and fit.train == cfg.train


def test_images_large_enough_or_fitting_off_keep_the_config():
    from neural_reloc.config_io import merge, parse_dotted
    from neural_reloc.methods.crossfire.config import CrossfireConfig
    from neural_reloc.methods.crossfire.trainer import fit_to_mapping_images

    quiet = lambda m: None  # noqa: E731
    cfg = CrossfireConfig()
    assert fit_to_mapping_images(cfg, _images(640, 480), log=quiet) == cfg
    assert fit_to_mapping_images(cfg, _images(1920, 1080), log=quiet) == cfg
    off = merge(cfg, parse_dotted(["loss.fit_to_small_images=false"]))
    assert fit_to_mapping_images(off, _images(320, 240), log=quiet) == off
    # A config already fitted (or set by hand) to the images is left alone: fitting is idempotent.
    fitted = fit_to_mapping_images(cfg, _images(320, 240), log=quiet)
    assert fit_to_mapping_images(fitted, _images(320, 240), log=quiet) == fitted
    # Portrait images fit the long side too; a switched-off block (0) stays off.
    zero = merge(cfg, parse_dotted(["localization.guided_radius_cells=0", "localization.keyframe_stride=0"]))
    p = fit_to_mapping_images(zero, _images(240, 320), log=quiet).localization
    assert (p.match_long_side, p.match_short_side, p.guided_radius_cells, p.keyframe_stride) == (80, 60, 0, 0)


def test_fitting_odd_sizes_mixed_sizes_and_images_too_small_for_a_grid():
    from neural_reloc.data.posed_images import PosedImages
    from neural_reloc.methods.crossfire.config import CrossfireConfig
    from neural_reloc.methods.crossfire.trainer import fit_to_mapping_images

    quiet = lambda m: None  # noqa: E731
    cfg = CrossfireConfig()
    odd = fit_to_mapping_images(cfg, _images(300, 225), log=quiet)
    assert (odd.localization.match_long_side, odd.localization.match_short_side, odd.loss.image_long_side) == (75, 56, 75)
    # Mixed sizes: one factor for the grid and the training scale, set by the most upsampled image.
    a, b = _images(320, 240, 2), _images(300, 300, 2)
    mixed = PosedImages(names=a.names + ["g0", "g1"], image_paths=a.image_paths + b.image_paths,
                        cameras=a.cameras + b.cameras, c2w_opengl=np.concatenate([a.c2w_opengl, b.c2w_opengl]))
    m = fit_to_mapping_images(cfg, mixed, log=quiet)
    assert (m.localization.match_long_side, m.localization.match_short_side, m.loss.image_long_side) == (80, 60, 80)
    # 64x48: a 16x12 grid has fewer cells than a CNN step needs correspondences: kept as it is.
    logs: list[str] = []
    assert fit_to_mapping_images(cfg, _images(64, 48), log=logs.append) == cfg and "too small" in logs[0]
