"""CROSSFIRE retrieval: the index of rendered views (mapping poses and panned ones),
old indices without poses, and the top-k hypotheses kept by inlier count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.frames import opencv_w2c_from_opengl_c2w
from neural_reloc.geometry.se3 import invert_pose, pose_error
from neural_reloc.methods.crossfire import feature_extractor as fe
from neural_reloc.methods.crossfire.config import LocalizationConfig
from neural_reloc.methods.common.iterative import StageClock
from neural_reloc.methods.common.retrieval import RetrievalIndex, panned_c2w_opengl
from neural_reloc.methods.crossfire.retrieval import build_retrieval_index
from test_crossfire import _tiny_map


def _poses(n: int) -> np.ndarray:
    out = []
    for k in range(n):
        T = np.eye(4)
        a = 2 * np.pi * k / n
        T[:3, :3] = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        T[:3, 3] = [0.1 * k, 0.0, -0.5]
        out.append(T)
    return np.stack(out)


def test_panned_view_turns_about_the_camera_vertical_axis():
    c2w = _poses(3)[1]
    for yaw in (-35.0, 20.0):
        p = panned_c2w_opengl(c2w, yaw)
        t, r = pose_error(p, c2w)
        assert t == pytest.approx(0.0) and r == pytest.approx(abs(yaw))
        np.testing.assert_allclose(p[:3, 1], c2w[:3, 1], atol=1e-12)  # up axis unchanged


class _Views:
    """The slice of PosedImages that build_retrieval_index reads."""

    def __init__(self, c2w_opengl):
        self.c2w_opengl = c2w_opengl

    def __len__(self):
        return len(self.c2w_opengl)

    def camera(self, i):
        return Camera(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)


def test_index_holds_mapping_and_panned_views_with_their_poses():
    model = _tiny_map()
    cnn = fe.FeatureExtractor(dim=16, channels=(8, 8, 16, 16, 16, 16, 16)).eval()
    c2w = _poses(3)
    cfg = LocalizationConfig(retrieval_long_side=16, render_samples=4, retrieval_extra_yaw_deg=(-30.0, 30.0),
                             retrieval_fill_spacing_rel=0.0)  # the poses between views: test_index_fills_the_gap...
    index = build_retrieval_index(model, cnn, _Views(c2w), cfg)
    assert index.descriptors.shape[0] == 9
    assert index.reference.tolist() == [0, 1, 2] * 3
    for row in range(9):
        ref = int(index.reference[row])
        yaw = (0.0, -30.0, 30.0)[row // 3]
        want = opencv_w2c_from_opengl_c2w(panned_c2w_opengl(c2w[ref], yaw))
        np.testing.assert_allclose(index.w2c_opencv[row].numpy(), want, atol=1e-9)
    norms = index.descriptors.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert not index.has_keyframes  # no descriptor head given
    # round trip through a bundle's state
    again = RetrievalIndex.from_state(index.state_dict(), np.zeros((3, 4, 4)))
    torch.testing.assert_close(again.w2c_opencv, index.w2c_opencv)


def test_index_keyframes_hold_rendered_descriptors_and_points():
    from neural_reloc.methods.crossfire.trainer import DESCRIPTOR_HEAD

    model = _tiny_map()
    cnn = fe.FeatureExtractor(dim=16, channels=(8, 8, 16, 16, 16, 16, 16)).eval()
    c2w = _poses(2)
    cfg = LocalizationConfig(retrieval_long_side=16, render_samples=4, retrieval_extra_yaw_deg=(),
                             retrieval_fill_spacing_rel=0.0, match_long_side=32, match_short_side=24, keyframe_stride=8)
    index = build_retrieval_index(model, cnn, _Views(c2w), cfg, descriptor_head=DESCRIPTOR_HEAD)
    assert index.has_keyframes and index.keyframe_descriptors.shape[:2] == (2, 4 * 3)
    cam = _Views(c2w).camera(0).fit_within(32, 24)
    uv = cam.pixel_centers(stride=8).reshape(-1, 2)
    want = model.render_view(cam, c2w[1], (DESCRIPTOR_HEAD, "points", "accumulation"), pixels_uv=uv,
                             num_fine=4, head_samples=cfg.render_head_samples, num_coarse=cfg.render_coarse_samples)
    opaque = torch.from_numpy(want["accumulation"]) > cfg.min_accumulation
    torch.testing.assert_close(index.keyframe_points[1], torch.from_numpy(want["points"]))
    norms = index.keyframe_descriptors[1].norm(dim=1)
    assert torch.allclose(norms[opaque], torch.ones(int(opaque.sum()))) and torch.all(norms[~opaque] == 0)
    again = RetrievalIndex.from_state(index.state_dict(), np.zeros((2, 4, 4)))
    torch.testing.assert_close(again.keyframe_descriptors, index.keyframe_descriptors)


def test_index_written_before_poses_maps_rows_to_reference_views():
    ref_w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in _poses(4)])
    old = {"descriptors": torch.nn.functional.normalize(torch.randn(4, 8), dim=1)}
    index = RetrievalIndex.from_state(old, ref_w2c)
    assert index.reference.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(index.w2c_opencv.numpy(), ref_w2c)
    with pytest.raises(ValueError, match="reference views"):
        RetrievalIndex.from_state(old, ref_w2c[:3])


@pytest.fixture(scope="module")
def relocalizer(crossfire_map):
    from neural_reloc.map_loading import load_relocalizer

    return load_relocalizer(crossfire_map[0], "cpu")


def test_retrieval_hypotheses_are_distinct_and_the_best_one_goes_on(crossfire_map, relocalizer):
    from neural_reloc.data import load_dataset

    data = load_dataset(crossfire_map[1])
    lc = relocalizer.cfg.localization
    i = data.indices("test")[5]
    # Both rankings, by global descriptor alone and (what localize uses: the query's
    # descriptor map given) by keyframe verification, keep distinct hypotheses only.
    by_global = relocalizer.retrieval_priors(data.image(i))
    query = relocalizer.prepare_query(data.image(i), data.camera(i), StageClock())
    hyps = relocalizer.retrieval_hypotheses(data.image(i), data.camera(i), query)
    for ranked in (by_global, hyps):
        assert 1 <= len(ranked) <= lc.retrieval_top_k
        for a in range(len(ranked)):
            for b in range(a):
                t, r = pose_error(invert_pose(ranked[a].w2c_opencv), invert_pose(ranked[b].w2c_opencv))
                assert t > lc.retrieval_distinct_rel * relocalizer.extent or r > lc.retrieval_distinct_deg
    res = relocalizer.localize(data.image(i), data.camera(i), None)
    listed = res.prior.detail.get("hypotheses", [])
    # the hypotheses localize tried are the ones its own retrieval gives, in that order
    if len(hyps) > 1:
        assert [h["reference"] for h in listed] == [h.detail["reference"] for h in hyps]
    else:
        assert listed == []  # one hypothesis: nothing to list
    tried = [h for h in listed if not h.get("not_tried")]
    # hypotheses go untried only after one whose first round was accepted outright
    assert listed[: len(tried)] == tried
    if len(tried) < len(listed):
        last = tried[-1]
        assert last["inliers"] >= lc.hypothesis_accept_inlier_ratio * last["matches"] > 0
    if res.success:  # the winner has the most first-round inliers of those tried
        assert res.history[0].num_inliers == max(h["inliers"] for h in tried)


# ------------------------------------------------------------ flow refinement
def test_flow_matches_recover_a_known_shift():
    """A textured render and a query shifted by (2.3, -1.4) px: the flow matches map
    each render pixel's point to its shifted position, sub-pixel."""
    import cv2

    from neural_reloc.methods.common.refinement import flow_matches

    rng = np.random.default_rng(0)
    h, w = 96, 128
    base = cv2.GaussianBlur(rng.random((h + 20, w + 20)).astype(np.float32), (0, 0), 2.0)
    base = (base - base.min()) / (base.max() - base.min())
    shift = np.array([2.3, -1.4])
    M = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    query = cv2.warpAffine(base, M, (w + 20, h + 20), flags=cv2.INTER_LINEAR)[10:-10, 10:-10]
    render = base[10:-10, 10:-10]
    vv, uu = np.mgrid[0:h, 0:w]
    points = np.stack([uu + 0.5, vv + 0.5, np.ones_like(uu)], -1).astype(np.float64)  # "world" = render pixel
    q_rgb = (np.repeat(query[..., None], 3, -1) * 255).astype(np.uint8)
    fm = flow_matches(np.repeat(render[..., None], 3, -1), points, np.ones((h, w), bool), q_rgb,
                      min_gradient=2.0, consistency_px=0.5, max_points=5000)
    assert len(fm.uv) > 1000
    err = fm.uv - (fm.points[:, :2] + shift)
    assert np.median(np.abs(err)) < 0.15, np.median(np.abs(err), axis=0)
    # A flat render has no texture: no matches.
    none = flow_matches(np.full((h, w, 3), 0.5), points, np.ones((h, w), bool), q_rgb,
                        min_gradient=2.0, consistency_px=0.5, max_points=5000)
    assert len(none.uv) == 0 and none.candidates == 0


def test_colour_at_the_heaviest_samples_matches_the_full_render():
    m = _tiny_map()
    from test_crossfire import _rays

    rays = _rays(128)
    with torch.no_grad():
        full = m.render_rays(rays, ("rgb", "accumulation"))
        top = m.render_rays(rays, ("rgb", "accumulation"), color_samples=8)
    torch.testing.assert_close(top["accumulation"], full["accumulation"])
    # the colour of the 8 heaviest samples rescaled to the opacity: close to the full sum
    assert (top["rgb"] - full["rgb"]).abs().mean() < 0.05


def _budgeted_verifier(rt, found: dict, budgets: dict):
    """A stand-in for verify_by_keyframe that honours ``must_beat`` as a cut-short RANSAC
    does: a candidate with no more inliers than the bound finds none."""

    def verify(cand, matches, camera, min_matches, min_inliers, pnp, must_beat=0):
        budgets.setdefault(cand.row, []).append(must_beat)
        n = found[cand.row]
        return rt.Candidate(cand.row, cand.score, n if n > must_beat else 0, cand.w2c_opencv)

    return verify


def _at(xs):
    poses = []
    for x in xs:
        p = np.eye(4)
        p[0, 3] = x
        poses.append(p)
    return poses


def test_verification_budget_only_after_k_distinct_hypotheses(monkeypatch):
    """verify_candidates ranks like sorting every verified candidate by inliers (ties in
    retrieval order), and gives a candidate a RANSAC budget (must_beat) only once k
    distinct hypotheses exist: then the k-th's inliers, what it must beat to matter."""
    from neural_reloc.methods.common import retrieval as rt

    poses = _at([0.0, 0.01, 1.0, 2.0, 3.0, 4.0])  # rows 0 and 1 near-duplicates
    found = {0: 40, 1: 50, 2: 30, 3: 0, 4: 35, 5: 30}
    budgets = {}
    monkeypatch.setattr(rt, "verify_by_keyframe", _budgeted_verifier(rt, found, budgets))
    monkeypatch.setattr(rt, "keyframe_matches", lambda *a: (None, None))
    cands = [rt.Candidate(r, 1.0 - 0.1 * r, 0, poses[r]) for r in range(6)]
    out = rt.verify_candidates(None, cands, None, None, 8, 3, 0.1, 5.0, 0.5, 20, 12, None)
    # rows 0-2: fewer than 3 distinct hypotheses (0 and 1 are one); after row 2: {1, 2}
    # and row 3 has none; after row 4: 1 (50), 4 (35), 2 (30) -> row 5 must beat 30 and,
    # with 30, cannot: it changes nothing.
    assert budgets == {0: [0], 1: [0], 2: [0], 3: [0], 4: [0], 5: [30]}
    assert [c.row for c in out] == [1, 0, 4, 2, 3, 5]
    assert [c.row for c in rt.distinct_hypotheses(out, 3, 0.1, 5.0)] == [1, 4, 2]


def test_a_candidate_that_knocks_out_two_hypotheses_reopens_the_ones_cut_short(monkeypatch):
    """Row 5 (45 inliers) is near rows 1 and 2, which are not near each other: it knocks
    both out, the third hypothesis now comes from below the bound rows 3 and 4 were
    verified under, and they are verified again: the pick equals unbounded verification."""
    from neural_reloc.methods.common import retrieval as rt

    poses = _at([5.0, 0.0, 0.15, 3.0, 4.0, 0.075])
    found = {0: 50, 1: 40, 2: 30, 3: 20, 4: 28, 5: 45}
    budgets = {}
    monkeypatch.setattr(rt, "verify_by_keyframe", _budgeted_verifier(rt, found, budgets))
    monkeypatch.setattr(rt, "keyframe_matches", lambda *a: (None, None))
    cands = [rt.Candidate(r, 1.0 - 0.1 * r, 0, poses[r]) for r in range(6)]
    out = rt.verify_candidates(None, cands, None, None, 8, 3, 0.1, 5.0, 0.5, 20, 12, None)
    assert budgets[3] == [30, 0] and budgets[4] == [30, 0] and budgets[5] == [30]
    unbounded = sorted((rt.Candidate(c.row, c.score, found[c.row], c.w2c_opencv) for c in cands),
                       key=lambda c: -c.inliers)
    assert [c.row for c in rt.distinct_hypotheses(out, 3, 0.1, 5.0)] == [0, 5, 4]
    assert [c.row for c in rt.distinct_hypotheses(unbounded, 3, 0.1, 5.0)] == [0, 5, 4]


@pytest.mark.parametrize("workers", [2, 3])
def test_verification_in_threads_picks_what_one_at_a_time_picks(monkeypatch, workers):
    """Verified in batches of ``workers`` (threads), each batch under the bound of the
    batches before it: the same hypotheses as one at a time, in both scenarios above;
    the matches are made first, once per candidate, however often it is verified."""
    from neural_reloc.methods.common import retrieval as rt

    for poses, found in ((_at([0.0, 0.01, 1.0, 2.0, 3.0, 4.0]), {0: 40, 1: 50, 2: 30, 3: 0, 4: 35, 5: 30}),
                         (_at([5.0, 0.0, 0.15, 3.0, 4.0, 0.075]), {0: 50, 1: 40, 2: 30, 3: 20, 4: 28, 5: 45})):
        cands = [rt.Candidate(r, 1.0 - 0.1 * r, 0, poses[r]) for r in range(6)]
        picks, matched = [], []
        for w in (1, workers):
            monkeypatch.setattr(rt, "verify_by_keyframe", _budgeted_verifier(rt, found, {}))
            monkeypatch.setattr(rt, "keyframe_matches", lambda index, row, *a: matched.append(row) or (None, None))
            out = rt.verify_candidates(None, cands, None, None, 8, 3, 0.1, 5.0, 0.5, 20, 12, None, workers=w)
            picks.append([c.row for c in rt.distinct_hypotheses(out, 3, 0.1, 5.0)])
        assert picks[0] == picks[1]
        assert matched == list(range(6)) * 2  # once per candidate in each of the two runs


# ------------------------------------------------------------ poses between sparse views
def _yawed(x: float, yaw_deg: float) -> np.ndarray:
    p = panned_c2w_opengl(np.eye(4), yaw_deg)
    p[0, 3] = x
    return p


def test_index_fills_the_gap_between_sparse_mapping_cameras():
    """Two mapping cameras 1 m apart, turned 0 and 40 deg, spacing 0.25 m: three poses
    between them (centre on the line, yaw 10 / 20 / 30 deg, each from the nearer
    camera), then every pose panned; cameras closer than the spacing, or spacing 0: none."""
    from neural_reloc.methods.common.retrieval import index_poses

    c2w = np.stack([_yawed(0.0, 0.0), _yawed(1.0, 40.0)])
    cfg = LocalizationConfig(retrieval_fill_spacing_rel=0.1, retrieval_fill_neighbors=1, retrieval_extra_yaw_deg=(15.0,))
    poses = index_poses(c2w, cfg, extent=2.5)
    assert len(poses) == (2 + 3) * 2
    assert [ref for _, ref in poses] == [0, 1, 0, 0, 1] * 2
    for k, (pose, _) in enumerate(poses[2:5]):
        want = _yawed(0.25 * (k + 1), 10.0 * (k + 1))
        t, r = pose_error(pose, want)
        assert t == pytest.approx(0.0, abs=1e-12) and r == pytest.approx(0.0, abs=1e-6)
    for (pose, ref), (base, base_ref) in zip(poses[5:], poses[:5]):
        assert ref == base_ref
        np.testing.assert_allclose(pose, panned_c2w_opengl(base, 15.0), atol=1e-12)
    assert len(index_poses(c2w, cfg, extent=20.0)) == 2 * 2  # 1 m < the 2 m spacing: a dense walk
    off = LocalizationConfig(retrieval_fill_spacing_rel=0.0, retrieval_extra_yaw_deg=())
    assert [ref for _, ref in index_poses(c2w, off, extent=2.5)] == [0, 1]


def test_distinct_rows_keep_what_distinct_hypotheses_keep():
    from neural_reloc.methods.common import retrieval as rt

    rng = np.random.default_rng(3)
    c2w = [_yawed(float(x), float(y)) for x, y in zip(rng.uniform(0, 1, 60), rng.uniform(-60, 60, 60))]
    w2c = np.stack([invert_pose(p) for p in c2w])
    for n in (1, 5, 100):
        cands = [rt.Candidate(r, 0.0, 0, w2c[r]) for r in range(len(w2c))]
        want = [c.row for c in rt.distinct_hypotheses(cands, n, 0.2, 25.0)]
        assert rt.distinct_rows(w2c, n, 0.2, 25.0).tolist() == want
        assert 1 <= len(want) <= n


def test_shortlist_of_distinct_views_reaches_past_near_duplicates(monkeypatch):
    """Ten near-duplicate rows rank first by global descriptor, another place eleventh:
    a shortlist of 4 distinct views holds it, one of the top 4 does not."""
    from dataclasses import replace

    from neural_reloc.methods.common import retrieval as rt

    poses = [invert_pose(p) for p in _at([0.001 * k for k in range(10)] + [2.0])]
    g = torch.nn.functional.normalize(torch.ones(8), dim=0)
    rows = [torch.nn.functional.normalize(g + 0.01 * k * torch.arange(8.0), dim=0) for k in range(11)]
    index = rt.RetrievalIndex.from_views(rows, poses, list(range(11)), [torch.ones(2, 4)] * 11, [torch.zeros(2, 3)] * 11)
    shortlisted = []
    monkeypatch.setattr(rt, "verify_candidates", lambda index, cands, *a, **kw: shortlisted.append([c.row for c in cands]) or cands)
    lc = LocalizationConfig(retrieval_top_k=1, retrieval_shortlist=4, retrieval_distinct_rel=0.1, retrieval_distinct_deg=10.0)
    kq = rt.KeyframeQuery(torch.ones(2, 4), None, 8, 0.5, None)
    rt.hypotheses_from_retrieval(index, g, lc, 1.0, [f"v{k}" for k in range(11)], kq)
    rt.hypotheses_from_retrieval(index, g, replace(lc, retrieval_shortlist_distinct=False), 1.0,
                                 [f"v{k}" for k in range(11)], kq)
    assert shortlisted[0] == [0, 10]  # the only two distinct places, best first
    assert shortlisted[1] == [0, 1, 2, 3]


def test_widened_retrieval_verifies_past_the_shortlist_and_leaves_out_the_refused_places(monkeypatch):
    """After every hypothesis was refused: the best retrieval_widened_shortlist rows,
    near-duplicates included, and no hypothesis near a refused one's pose."""
    from dataclasses import replace

    from neural_reloc.methods.common import retrieval as rt

    poses = [invert_pose(p) for p in _at([0.001 * k for k in range(10)] + [2.0, 4.0])]
    g = torch.nn.functional.normalize(torch.ones(8), dim=0)
    rows = [torch.nn.functional.normalize(g + 0.01 * k * torch.arange(8.0), dim=0) for k in range(12)]
    names = [f"v{k}" for k in range(12)]
    index = rt.RetrievalIndex.from_views(rows, poses, list(range(12)), [torch.ones(2, 4)] * 12, [torch.zeros(2, 3)] * 12)
    verified = []

    def verify(index, cands, *a, **kw):  # every view verified at its own pose, but row 11
        verified.append([c.row for c in cands])
        return [rt.Candidate(c.row, c.score, 0 if c.row == 11 else 30, c.w2c_opencv) for c in cands]

    monkeypatch.setattr(rt, "verify_candidates", verify)
    lc = LocalizationConfig(retrieval_top_k=3, retrieval_widened_shortlist=11, retrieval_distinct_rel=0.1,
                            retrieval_distinct_deg=10.0)
    kq = rt.KeyframeQuery(torch.ones(2, 4), None, 8, 0.5, None)
    wider = rt.hypotheses_from_retrieval(index, g, lc, 1.0, names, kq, widened=True, exclude_w2c_opencv=[poses[0]])
    # the best 11 by global descriptor, near-duplicates included, but none near the refused
    # v0 (rows 0-9), not even to verification, where their inliers would set the bound
    assert verified[-1] == [10] and [h.detail["reference"] for h in wider] == ["v10"]
    wider = rt.hypotheses_from_retrieval(index, g, replace(lc, retrieval_widened_shortlist=12), 1.0, names, kq,
                                         widened=True, exclude_w2c_opencv=[poses[0]])
    assert verified[-1] == [10, 11] and [h.detail["reference"] for h in wider] == ["v10"]  # v11 not verified
    first = rt.hypotheses_from_retrieval(index, g, replace(lc, retrieval_shortlist=12, retrieval_shortlist_distinct=False),
                                         1.0, names, kq)
    assert "v11" in [h.detail["reference"] for h in first]  # the first search keeps an unverified view
    calls = len(verified)
    assert rt.hypotheses_from_retrieval(index, g, replace(lc, retrieval_widened_shortlist=0), 1.0, names, kq,
                                        widened=True) == []
    assert rt.hypotheses_from_retrieval(index, g, lc, 1.0, names, None, widened=True) == []  # no keyframe query
    assert len(verified) == calls
