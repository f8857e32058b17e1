"""The full NeRFMatch (matcher.variant=full): shapes and unit norms, the window sampling's
and the heatmap expectation's coordinates, L_f, a tiny model learning a synthetic task,
the config's YAML roundtrip, and that a component loads only as the variant it was
trained as (a tiny map, trained for two steps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neural_reloc.methods.nerfmatch.attention import (
    image_positional_encoding,
    linear_attention,
    point_encoding_dim,
    point_positional_encoding,
)
from neural_reloc.methods.nerfmatch.coarse_matcher import CoarseMatcher
from neural_reloc.methods.nerfmatch.config import EncoderConfig, MatcherConfig, NerfMatchConfig, NerfMatchTrainConfig
from neural_reloc.methods.nerfmatch.encoder import FINE_STRIDE, STRIDE, ImageEncoder, NerfFeatureProjection
from neural_reloc.methods.nerfmatch.fine_matcher import (
    FineMatcher,
    cell_centres,
    expectation,
    fine_loss,
    gather_windows,
    window_offsets,
)
from neural_reloc.methods.nerfmatch.matcher import dual_softmax, mutual_matches
from neural_reloc.methods.nerfmatch.training import full_pair_loss

FULL = MatcherConfig(variant="full", layers=1, heads=2, fine_heads=2, point_frequencies=4)


def test_full_model_shapes_and_unit_norms():
    torch.manual_seed(0)
    enc_cfg = EncoderConfig(channels=(8, 8, 16), dim=12, nerf_hidden=16, fine_dim=6)
    enc = ImageEncoder(enc_cfg, fine=True)
    coarse_map, fine_map = enc.pyramid(torch.rand(1, 3, 48, 64))
    assert coarse_map.shape == (1, 12, 6, 8) and fine_map.shape == (1, 6, 24, 32)
    assert torch.allclose(coarse_map.norm(dim=1), torch.ones(1, 6, 8), atol=1e-5)
    assert torch.allclose(enc(torch.rand(1, 3, 48, 64)).norm(dim=1), torch.ones(1, 6, 8), atol=1e-5)
    with pytest.raises(ValueError, match="no fine map"):
        ImageEncoder(enc_cfg).pyramid(torch.rand(1, 3, 48, 64))
    # a mini encoder's weights are the full one's without the fine layers
    assert set(ImageEncoder(enc_cfg).state_dict()) < set(enc.state_dict())

    assert image_positional_encoding(12, 6, 8).shape == (12, 6, 8)
    pts = torch.rand(30, 3)
    assert point_positional_encoding(pts, 4).shape == (30, point_encoding_dim(4))
    nerf = NerfFeatureProjection(5, enc_cfg)(torch.randn(30, 5))
    img_t, nerf_t = CoarseMatcher(12, FULL)(coarse_map[0], nerf, pts)
    assert img_t.shape == (48, 12) and nerf_t.shape == (30, 12)
    assert torch.allclose(img_t.norm(dim=-1), torch.ones(48), atol=1e-5)
    assert torch.allclose(nerf_t.norm(dim=-1), torch.ones(30), atol=1e-5)

    cells = torch.tensor([0, 7, 40, 47])  # corners of the 8 x 6 grid
    out = FineMatcher(12, 6, FULL)(fine_map[0], cell_centres(cells, 8), nerf_t[:4])
    assert out.uv.shape == (4, 2) and out.variance.shape == (4,) and out.heatmap.shape == (4, 5, 5)
    assert torch.allclose(out.heatmap.sum(dim=(1, 2)), torch.ones(4), atol=1e-5)
    # the fine position stays inside its cell's window (the cell's own 8 x 8 pixels)
    assert ((out.uv - cell_centres(cells, 8)).abs() <= FINE_STRIDE * 2 + 1e-5).all()


def test_linear_attention_is_the_kernel_weighted_average():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 5, 2, 3), torch.randn(1, 7, 2, 3), torch.randn(1, 7, 2, 3)
    out = linear_attention(q, k, v)
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    w = torch.einsum("blhd,bshd->bhls", fq, fk)
    expected = torch.einsum("bhls,bshd->blhd", w / w.sum(-1, keepdim=True), v)
    assert torch.allclose(out, expected, atol=1e-5)


def test_cell_centres_and_windows_sample_the_fine_map_where_they_say():
    # a fine map whose channels are the image position (u, v) of each fine pixel's centre
    hf, wf = 16, 16
    v, u = torch.meshgrid(torch.arange(hf) * FINE_STRIDE + 1.0, torch.arange(wf) * FINE_STRIDE + 1.0, indexing="ij")
    fine_map = torch.stack([u, v])
    centres = cell_centres(torch.tensor([5, 9]), grid_width=4)  # cells (row 1, col 1) and (row 2, col 1)
    assert centres.tolist() == [[12.0, 12.0], [12.0, 20.0]]
    feats, inside = gather_windows(fine_map, centres, 5)
    expected = centres[:, None] + FINE_STRIDE * window_offsets(5)[None]
    assert inside.all() and torch.allclose(feats, expected, atol=1e-5)
    # a corner cell's window reaches the image's edge: the edge pixel's features there
    feats, inside = gather_windows(fine_map, cell_centres(torch.tensor([0]), 4), 5)
    assert inside.all() and feats[0, 0].tolist() == [1.0, 1.0] and feats[0, 6].tolist() == [2.0, 2.0]
    # samples beyond the image's edge are marked
    _, inside = gather_windows(fine_map, torch.tensor([[4.0, 4.0]]), 7)
    assert inside.view(7, 7)[0].sum() == 0 and inside.view(7, 7)[:, 0].sum() == 0 and inside.view(7, 7)[1:, 1:].all()


def test_expectation_of_a_peaked_heatmap_is_its_offset():
    heat = torch.zeros(3, 5, 5)
    heat[0, 1, 3] = 1.0  # row 1 (dv = -1), column 3 (du = +1)
    heat[1, 2, 2], heat[1, 2, 3] = 0.25, 0.75  # between du = 0 and du = 1
    heat[2, 3, 1] = 0.6  # a peak at du = -1, dv = +1 spread evenly over its four neighbours
    heat[2, 2, 1] = heat[2, 4, 1] = heat[2, 3, 0] = heat[2, 3, 2] = 0.1
    mean, var = expectation(heat)
    assert torch.allclose(mean[0], torch.tensor([1.0, -1.0])) and var[0] < 1e-6
    assert torch.allclose(mean[1], torch.tensor([0.75, 0.0])) and math.isclose(float(var[1]), 0.1875, rel_tol=1e-5)
    assert torch.allclose(mean[2], torch.tensor([-1.0, 1.0])) and math.isclose(float(var[2]), 0.4, rel_tol=1e-5)


def test_fine_loss_is_zero_at_the_truth_and_grows_away_from_it():
    gt = torch.tensor([[0.5, -1.0], [1.5, 0.25]])
    var = torch.tensor([0.5, 2.0])
    assert float(fine_loss(gt.clone(), var, gt, 5)) == 0.0
    losses = [float(fine_loss(gt + d, var, gt, 5)) for d in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(losses, losses[1:])) and losses[0] > 0
    # the confident heatmap's miss costs more (inverse-variance weights)
    miss_confident = float(fine_loss(gt + torch.tensor([[1.0, 0.0], [0.0, 0.0]]), var, gt, 5))
    miss_unsure = float(fine_loss(gt + torch.tensor([[0.0, 0.0], [1.0, 0.0]]), var, gt, 5))
    assert miss_confident > miss_unsure
    # the weights are not learned: no gradient reaches the variance
    v = var.clone().requires_grad_(True)
    off = (gt + 0.3).requires_grad_(True)
    fine_loss(off, v, gt, 5).backward()
    assert v.grad is None and off.grad.abs().sum() > 0


# ------------------------------------------------------------ a synthetic task
# The query sees a plane; the reference's points are the plane points at the reference's
# patch centres, shifted by a random sub-image offset, so each projects to a random
# position inside a query cell. The image's coarse map (unit), fine map, and the NeRF
# features are each a different random linear map of the same smooth random function of
# the plane position, plus noise: the projection, the coarse and the fine matchers must
# learn to align them (the image encoder is not part of this task).
W, H, DC, DF, DN, K = 96, 64, 32, 16, 16, 24


class Plane:
    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.freq = torch.randn(K, 2, generator=g) * (2 * math.pi / 16)  # wavelengths of ~16 px
        self.phase = torch.rand(K, generator=g) * 2 * math.pi
        self.maps = {k: torch.randn(d, K, generator=g) / math.sqrt(K) for k, d in (("c", DC), ("f", DF), ("n", DN))}

    def features(self, kind, uv, gen, noise=0.2):
        f = torch.sin(uv @ self.freq.T + self.phase) @ self.maps[kind].T
        return f + noise * torch.randn(f.shape, generator=gen)

    def pair(self, gen):
        gh, gw = H // STRIDE, W // STRIDE
        v, u = torch.meshgrid(torch.arange(gh) * STRIDE + STRIDE / 2, torch.arange(gw) * STRIDE + STRIDE / 2,
                              indexing="ij")
        centres = torch.stack([u, v], -1).reshape(-1, 2).float()
        coarse = F.normalize(self.features("c", centres, gen), dim=-1).T.reshape(DC, gh, gw)
        fv, fu = torch.meshgrid(torch.arange(H // 2) * 2 + 1.0, torch.arange(W // 2) * 2 + 1.0, indexing="ij")
        fine = self.features("f", torch.stack([fu, fv], -1), gen).permute(2, 0, 1)
        uv = centres + (torch.rand(2, generator=gen) * 2 - 1) * 12.0  # the reference's points in the query
        nerf = self.features("n", uv, gen)
        unit_points = torch.cat([uv / torch.tensor([W, H]), torch.full((len(uv), 1), 0.5)], -1) * 0.5 + 0.25
        seen = ((uv >= 0) & (uv < torch.tensor([W, H]))).all(-1).nonzero().squeeze(-1)
        cells = (uv[seen, 1] // STRIDE).long() * gw + (uv[seen, 0] // STRIDE).long()
        return coarse, fine, nerf, unit_points, cells, seen, uv[seen]


def test_tiny_full_model_learns_coarse_and_fine_matching_on_a_synthetic_task():
    torch.manual_seed(0)
    cfg = NerfMatchConfig(encoder=EncoderConfig(dim=DC, fine_dim=DF, nerf_hidden=32), matcher=FULL,
                          train=NerfMatchTrainConfig(fine_matches=64))
    plane = Plane(0)
    proj = NerfFeatureProjection(DN, cfg.encoder)
    coarse, fine = CoarseMatcher(DC, cfg.matcher), FineMatcher(DC, DF, cfg.matcher)
    opt = torch.optim.Adam([p for m in (proj, coarse, fine) for p in m.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(600):
        c, f, n, u, gt_cells, gt_points, gt_uv = plane.pair(gen)
        out = full_pair_loss(c, f, proj(n), u, gt_cells, gt_points, gt_uv, coarse, fine, cfg, gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert np.isfinite(out.coarse) and np.isfinite(out.fine)

    gen = torch.Generator().manual_seed(123)  # held-out pairs
    precision, fine_err, centre_err = [], [], []
    with torch.no_grad():
        for _ in range(20):
            c, f, n, u, gt_cells, gt_points, gt_uv = plane.pair(gen)
            img_t, nerf_t = coarse(c, proj(n), u)
            cells, points, _ = mutual_matches(dual_softmax(img_t, nerf_t, cfg.matcher.temperature), 0.0)
            truth = {p: (cell, uv) for p, cell, uv in zip(gt_points.tolist(), gt_cells.tolist(), gt_uv)}
            right = [k for k, (cell, p) in enumerate(zip(cells.tolist(), points.tolist()))
                     if truth.get(p, (-1,))[0] == cell]
            precision.append(len(right) / max(1, len(cells)))
            right = torch.tensor(right, dtype=torch.long)
            centres = cell_centres(cells[right], W // STRIDE)
            uv = fine(f, centres, nerf_t[points[right]]).uv
            gt = torch.stack([truth[p][1] for p in points[right].tolist()])
            fine_err.append((uv - gt).norm(dim=-1))
            centre_err.append((centres - gt).norm(dim=-1))
    fine_err, centre_err = torch.cat(fine_err).mean(), torch.cat(centre_err).mean()
    chance = 1.0 / ((W // STRIDE) * (H // STRIDE))
    assert np.mean(precision) > 0.5 > 10 * chance, np.mean(precision)
    # measured: precision ~0.83, fine ~1.7 px against ~3.2 px at the cell centres
    assert fine_err < 0.7 * centre_err and fine_err < FINE_STRIDE * cfg.matcher.window, (fine_err, centre_err)


# ------------------------------------------------------------ config and maps
def test_full_variant_config_roundtrips_through_yaml(tmp_path):
    import yaml

    from neural_reloc.config_io import load_method_config, to_dict

    cfg = load_method_config("nerfmatch", None, ["matcher.variant=full", "matcher.window=7", "encoder.fine_dim=32",
                                                 "train.fine_weight=0.5"])
    path = tmp_path / "nerfmatch.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    again = load_method_config("nerfmatch", path)
    assert again == cfg and again.matcher.variant == "full" and again.matcher.window == 7
    assert NerfMatchConfig().matcher.variant == "mini"  # the default stays the minimal variant
    with pytest.raises(ValueError, match="matcher.variant"):
        load_method_config("nerfmatch", None, ["matcher.variant=huge"])
    with pytest.raises(ValueError, match="matcher.window"):
        load_method_config("nerfmatch", None, ["matcher.variant=full", "matcher.window=4"])


TINY_FIELD = [
    "train.steps=6", "train.rays_per_batch=256", "train.checkpoint_every=3", "train.max_image_size=64",
    "sampler.grid_resolution=16", "sampler.num_coarse=16", "sampler.num_fine=8", "sampler.grid_warmup_steps=2",
    "sampler.grid_update_every=2", "field.encoding.dense_resolutions=[8,16]", "train.virtual_patches=2",
]
TINY_NERFMATCH = ["train.steps=2", "train.jitter_renders=0", "train.image_long_side=64", "encoder.channels=[8,8,8]",
                  "encoder.dim=8", "encoder.nerf_hidden=8", "encoder.fine_dim=8", "matcher.heads=2",
                  "matcher.layers=1", "localization.retrieval_extra_yaw_deg=[]"]


def test_a_component_loads_only_as_the_variant_it_was_trained_as(tmp_path):
    from neural_reloc.config_io import load_method_config, merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene
    from neural_reloc.map_bundle import MapError, read_map
    from neural_reloc.map_loading import load_relocalizer
    from neural_reloc.mapping import add_method, build_map
    from neural_reloc.methods.nerfmatch.trainer import COARSE, FINE
    from neural_reloc.nerf.config import NeuralMapConfig

    generate_procedural_scene(tmp_path / "scene", ProceduralSceneConfig(width=64, height=48, num_frames=10))
    data = load_dataset(tmp_path / "scene")
    m = build_map(data, tmp_path / "map", method="nerf", config=merge(NeuralMapConfig(), parse_dotted(TINY_FIELD)),
                  log=lambda s: None, evaluate=False)
    mini = load_method_config("nerfmatch", None, TINY_NERFMATCH)
    add_method(m, "nerfmatch", data, mini, log=lambda s: None)
    full = load_method_config("nerfmatch", None, TINY_NERFMATCH + ["matcher.variant=full"])
    logs: list[str] = []
    m_full = add_method(m, "nerfmatch", data, full, log=logs.append, out_dir=tmp_path / "map_full")
    assert any("fine_error_px" in s for s in logs), logs  # the summary reports the fine stage

    assert not read_map(m).module_state(COARSE) and read_map(m_full).module_state(FINE)
    with pytest.raises(MapError, match="trained as matcher.variant='mini'.*not as 'full'"):
        load_relocalizer(m, "cpu", overrides=["matcher.variant=full"], method="nerfmatch")
    with pytest.raises(MapError, match="trained as matcher.variant='full'.*not as 'mini'"):
        load_relocalizer(m_full, "cpu", overrides=["matcher.variant=mini"], method="nerfmatch")
    i = data.indices("test")[0]
    for path in (m, m_full):
        reloc = load_relocalizer(path, "cpu", method="nerfmatch")
        res = reloc.localize(data.image(i), data.camera(i), None)  # runs; a 2-step model need not localize
        assert res.method == "nerfmatch" and (res.success or res.reason)
    assert load_relocalizer(m_full, "cpu", method="nerfmatch").full
