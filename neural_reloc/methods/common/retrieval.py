"""Retrieval over a map's rendered reference views, for any method: the index, the
choice of distinct hypotheses and their verification by keyframes.

A method supplies the global descriptor (computed on the query and, at build time, on
views rendered from the map) and the keyframe descriptors; this module stores them
with each row's pose, ranks rows by cosine (:meth:`RetrievalIndex.query`), verifies a
shortlist by matching the query's descriptor blocks to each row's keyframe + PnP
(:func:`verify_by_keyframe`, :func:`verify_candidates`) and keeps the best ``k`` rows that are not near-duplicates
of a better one (:func:`distinct_hypotheses`); :func:`hypotheses_from_retrieval` does all of it
for a query. Poses: ``w2c_opencv``.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...geometry.camera import Camera
from ...geometry.pnp import PnPConfig, pnp_ransac, ransac_iterations
from ...geometry.neighbours import nearest_pairs
from ...geometry.se3 import interpolate_pose, invert_pose, pose_error
from ..base import PosePrior
from .matching import mutual_nearest_neighbours


#: Spatial pyramid levels (cells per side) of the global descriptor.
PYRAMID_LEVELS = (1, 2)


def global_descriptor(fmap: torch.Tensor) -> torch.Tensor:
    """(1, D, h, w) unit descriptor map -> (D * sum(l^2),) unit global descriptor."""
    parts = []
    for level in PYRAMID_LEVELS:
        pooled = F.adaptive_avg_pool2d(fmap, level)  # (1, D, l, l)
        parts.append(F.normalize(pooled, dim=1).flatten())
    return F.normalize(torch.cat(parts), dim=0)


class RetrievalIndex(nn.Module):
    """Global descriptors (N, K) of rendered views, their poses (N, 4, 4) OpenCV
    world-to-camera and the mapping view each came from (N,), stored in the bundle;
    optionally each view's *keyframe*: descriptors (N, B, D) and world points (N, B, 3)
    rendered at B block centres, which verify a retrieved view by matching without
    rendering (zero descriptors where the render was transparent)."""

    def __init__(self, num_views: int = 0, dim: int = 0, keyframe_blocks: int = 0, descriptor_dim: int = 0):
        super().__init__()
        self.register_buffer("descriptors", torch.zeros(num_views, dim))
        self.register_buffer("w2c_opencv", torch.zeros(num_views, 4, 4, dtype=torch.float64))
        self.register_buffer("reference", torch.zeros(num_views, dtype=torch.long))
        self.register_buffer("keyframe_descriptors", torch.zeros(num_views, keyframe_blocks, descriptor_dim))
        self.register_buffer("keyframe_points", torch.zeros(num_views, keyframe_blocks, 3))

    @property
    def has_keyframes(self) -> bool:
        return self.keyframe_descriptors.shape[1] > 0

    @classmethod
    def from_views(cls, descriptors: list[torch.Tensor], w2c_opencv: list[np.ndarray], reference: list[int],
                   keyframe_descriptors: list[torch.Tensor] = (), keyframe_points: list[torch.Tensor] = ()
                   ) -> "RetrievalIndex":
        """An index of rendered views: each view's global descriptor (K,), pose and
        mapping view, and optionally its keyframe, descriptors (B_i, D) and points
        (B_i, 3); views with fewer blocks (other image sizes) are zero-padded."""
        blocks = max((len(d) for d in keyframe_descriptors), default=0)
        dim = keyframe_descriptors[0].shape[1] if len(keyframe_descriptors) else 0
        index = cls(len(descriptors), descriptors[0].numel(), blocks, dim)
        for k, (d, p) in enumerate(zip(keyframe_descriptors, keyframe_points)):
            index.keyframe_descriptors[k, : len(d)] = d
            index.keyframe_points[k, : len(p)] = p
        index.descriptors.copy_(torch.stack(descriptors))
        index.w2c_opencv.copy_(torch.from_numpy(np.stack(w2c_opencv)))
        index.reference.copy_(torch.tensor(reference))
        return index

    @classmethod
    def from_state(cls, state: dict, reference_w2c_opencv: np.ndarray) -> "RetrievalIndex":
        """An index from a bundle's state; an index written before poses were stored
        has one row per mapping view, in order."""
        n, dim = state["descriptors"].shape
        if "keyframe_descriptors" not in state:  # written before keyframes existed
            state = {**state, "keyframe_descriptors": torch.zeros(n, 0, 0), "keyframe_points": torch.zeros(n, 0, 3)}
        _, blocks, ddim = state["keyframe_descriptors"].shape
        index = cls(n, dim, blocks, ddim)
        if "w2c_opencv" not in state:
            if n != len(reference_w2c_opencv):
                raise ValueError(f"retrieval index has {n} rows but the map has {len(reference_w2c_opencv)} reference views")
            state = {**state, "w2c_opencv": torch.from_numpy(np.asarray(reference_w2c_opencv, np.float64)),
                     "reference": torch.arange(n)}
        index.load_state_dict({"descriptors": state["descriptors"].float(), "w2c_opencv": state["w2c_opencv"].double(),
                               "reference": state["reference"].long(),
                               "keyframe_descriptors": state["keyframe_descriptors"].float(),
                               "keyframe_points": state["keyframe_points"].float()})
        return index

    @torch.no_grad()
    def query(self, g: torch.Tensor, top_k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and cosine scores of the ``top_k`` most similar views."""
        if self.descriptors.shape[0] == 0:
            raise ValueError("the map's retrieval index is empty")
        sims = self.descriptors.to(g.dtype) @ g
        k = min(top_k, sims.numel())
        s, i = torch.topk(sims, k)
        return i.cpu().numpy(), s.cpu().numpy()


@dataclass
class Candidate:
    """A retrieved row: its global cosine ``score``, keyframe PnP ``inliers`` (0 when
    not verified) and the pose a round starts from (the row's, or the verified PnP's)."""

    row: int
    score: float
    inliers: int
    w2c_opencv: np.ndarray


def keyframe_matches(index: RetrievalIndex, row: int, blocks: torch.Tensor, camera: Camera, stride: int,
                     min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """2D-3D correspondences of row ``row``'s keyframe with the query's unit descriptor
    ``blocks`` (the ``stride`` blocks of ``camera``, row-major) by mutual nearest
    neighbours: query pixels (N, 2) and world points (N, 3)."""
    ia, ib, _ = mutual_nearest_neighbours(index.keyframe_descriptors[row], blocks, min_similarity)
    uv = camera.pixel_centers(stride=stride).reshape(-1, 2)[ib.cpu().numpy()]
    return uv, index.keyframe_points[row][ia].double().cpu().numpy()


def verify_by_keyframe(cand: Candidate, matches: tuple[np.ndarray, np.ndarray], camera: Camera, min_matches: int,
                       min_inliers: int, pnp: PnPConfig, must_beat: int = 0) -> Candidate:
    """``cand`` scored by PnP on its keyframe's ``matches`` with the query
    (:func:`keyframe_matches`; pixels of ``camera``): with the PnP pose and its inliers,
    or unchanged (0 inliers) when that fails. ``must_beat`` > 0: the candidate matters
    only with more inliers than that, so RANSAC gets only the iterations that finding
    such a pose needs (:func:`~neural_reloc.geometry.pnp.ransac_iterations`), and none
    with no more matches than that."""
    uv, pts = matches
    if len(uv) < min_matches or (must_beat > 0 and len(uv) <= must_beat):
        return cand
    if must_beat > 0:
        pnp = replace(pnp, max_iterations=ransac_iterations(must_beat + 1, len(uv), pnp))
    res = pnp_ransac(uv, pts, camera, pnp)
    if not res.success or res.num_inliers < min_inliers:
        return cand
    return Candidate(cand.row, cand.score, res.num_inliers, res.w2c_opencv)


def near_any(w2c_opencv: np.ndarray, others_w2c_opencv: Sequence[np.ndarray], distinct_m: float,
             distinct_deg: float) -> bool:
    """Whether a pose lies within both ``distinct_m`` and ``distinct_deg`` of one of the others."""
    c2w = invert_pose(w2c_opencv)
    near = (pose_error(c2w, invert_pose(other)) for other in others_w2c_opencv)
    return any(dt <= distinct_m and dr <= distinct_deg for dt, dr in near)


def distinct_hypotheses(candidates: list[Candidate], k: int, distinct_m: float, distinct_deg: float) -> list[Candidate]:
    """The first ``k`` candidates (in the given order) each at least ``distinct_m`` or
    ``distinct_deg`` from every one kept before it (a near-duplicate would give the
    same first round)."""
    kept: list[Candidate] = []
    for cand in candidates:
        if near_any(cand.w2c_opencv, [other.w2c_opencv for other in kept], distinct_m, distinct_deg):
            continue
        kept.append(cand)
        if len(kept) == k:
            break
    return kept


def distinct_rows(w2c_opencv: np.ndarray, n: int, distinct_m: float, distinct_deg: float) -> np.ndarray:
    """Positions (into ``w2c_opencv`` (M, 4, 4), taken in that order) of the first ``n``
    poses each at least ``distinct_m`` or ``distinct_deg`` from every one kept before it:
    :func:`distinct_hypotheses` on poses alone, vectorized (a shortlist is drawn from
    the whole index): each kept pose blocks the poses near it."""
    c2w_opencv = np.linalg.inv(np.asarray(w2c_opencv, dtype=np.float64).reshape(-1, 4, 4))
    centers, rot = c2w_opencv[:, :3, 3], c2w_opencv[:, :3, :3]
    cos_limit = np.cos(np.radians(distinct_deg))
    blocked = np.zeros(len(c2w_opencv), bool)
    kept: list[int] = []
    for m in range(len(c2w_opencv)):
        if blocked[m]:
            continue
        kept.append(m)
        if len(kept) == n:
            break
        # rotation angle between two cameras: cos = (trace(Ra^T Rb) - 1) / 2
        cos = (np.einsum("kij,ij->k", rot, rot[m]) - 1.0) / 2.0
        blocked |= (np.linalg.norm(centers - centers[m], axis=1) <= distinct_m) & (cos >= cos_limit)
    return np.array(kept, dtype=np.int64)


@functools.cache
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keyframe-verify")


def verify_candidates(index: RetrievalIndex, candidates: list[Candidate], blocks: torch.Tensor, camera: Camera,
                      stride: int, k: int, distinct_m: float, distinct_deg: float, min_similarity: float,
                      min_matches: int, min_inliers: int, pnp: PnPConfig, workers: int = 1) -> list[Candidate]:
    """Every candidate verified by :func:`verify_by_keyframe`, in the given (retrieval)
    order, returned sorted by inliers (ties keep that order): what
    :func:`distinct_hypotheses` then picks from.

    Once ``k`` distinct verified hypotheses exist, a later candidate changes that pick
    only with more inliers than the k-th of them, so its RANSAC stops when such a pose
    would have been found (a failing verification otherwise runs to
    ``pnp.max_iterations``, most of a shortlist's cost). A later candidate near two
    kept ones can knock both out and lower the k-th below a bound given earlier: the
    candidates that bound may have cut short are verified again under the new one,
    until the pick is stable. The bound is on RANSAC's own count while the inliers
    are recounted after the final refinement, so a near-tie can still come out
    differently from unbounded verification: rarely, not never.

    Every candidate's matches are made once, first, in this thread
    (:func:`keyframe_matches`: torch work from other threads would start thread teams
    of its own that then spin beside the rendering). ``workers`` > 1: the PnPs run that
    many at a time, in threads (poselib runs without Python's lock), each of a batch
    under the bound the batches before it gave. Batches are cut in retrieval order, so the result does not depend
    on the threads' timing; it can differ from ``workers=1`` only as the bound's cuts
    can (a later candidate of a batch verified under a looser bound than one at a time
    would have given it)."""
    done: list[Candidate] = []
    bounds: list[int] = []

    def kth_inliers() -> int:
        kept = distinct_hypotheses(sorted(done, key=lambda c: -c.inliers), k, distinct_m, distinct_deg)
        return kept[-1].inliers if len(kept) == k else 0

    matches = {c.row: keyframe_matches(index, c.row, blocks, camera, stride, min_similarity) for c in candidates}

    def verify(cand: Candidate, must_beat: int) -> Candidate:
        return verify_by_keyframe(cand, matches[cand.row], camera, min_matches, min_inliers, pnp, must_beat)

    def verify_all(batch: list[Candidate], must_beat: int) -> list[Candidate]:
        if workers <= 1 or len(batch) <= 1:
            return [verify(c, must_beat) for c in batch]
        return list(_thread_pool(workers).map(lambda c: verify(c, must_beat), batch))

    step = max(1, workers)
    must_beat = 0
    for start in range(0, len(candidates), step):
        batch = candidates[start:start + step]
        done += verify_all(batch, must_beat)
        bounds += [must_beat] * len(batch)
        must_beat = kth_inliers()
    while True:
        cut_short = [i for i, b in enumerate(bounds) if b > must_beat and done[i].inliers <= b]
        if not cut_short:
            break
        for i, cand in zip(cut_short, verify_all([candidates[i] for i in cut_short], must_beat)):
            done[i] = cand
            bounds[i] = must_beat
        must_beat = kth_inliers()
    return sorted(done, key=lambda c: -c.inliers)


#: Retrieval candidates looked at per hypothesis kept (near-duplicates are skipped).
RETRIEVAL_CANDIDATES_PER_HYPOTHESIS = 4


def query_blocks(fmap: torch.Tensor, size: int) -> torch.Tensor:
    """A query's unit descriptor map (D, h, w) averaged over ``size`` x ``size`` blocks
    (the remainder rows and columns dropped) and re-normalized: (B, D), row-major, the
    query side of a keyframe verification whose blocks are ``size`` cells wide."""
    d, h, w = fmap.shape
    pooled = F.avg_pool2d(fmap[None, :, : h // size * size, : w // size * size], size)[0]
    return F.normalize(pooled, dim=0).reshape(d, -1).T


def verifies_by_keyframes(index: RetrievalIndex | None, lc) -> bool:
    """Whether retrieval with ``index`` ranks its hypotheses by keyframe PnP: the index
    has keyframes and ``lc.retrieval_shortlist`` > 0 (else by global descriptor alone)."""
    return index is not None and index.has_keyframes and lc.retrieval_shortlist > 0


@dataclass
class KeyframeQuery:
    """The query side of a keyframe verification: its unit descriptor ``blocks`` (B, D),
    the centres of the ``stride``-pixel blocks of ``camera`` (row-major), and how they
    are matched (cosine above ``min_similarity``) and posed (``pnp``)."""

    blocks: torch.Tensor
    camera: Camera
    stride: int
    min_similarity: float
    pnp: PnPConfig


def hypotheses_from_retrieval(index: RetrievalIndex, g: torch.Tensor, lc, extent: float, reference_names: list[str],
                              keyframes: KeyframeQuery | None = None, widened: bool = False,
                              exclude_w2c_opencv: Sequence[np.ndarray] = ()) -> list[PosePrior]:
    """The retrieval hypotheses of a query with global descriptor ``g``, best first:
    with ``keyframes`` and an index that :func:`verifies_by_keyframes`, the
    ``lc.retrieval_shortlist`` best views by global descriptor ranked by keyframe PnP
    inliers (:func:`verify_candidates`; a verified view starts from its PnP pose), else
    the best by global descriptor; ``lc.retrieval_top_k`` of them, each at least
    ``lc.retrieval_distinct_rel`` (of the scene ``extent``) or ``retrieval_distinct_deg``
    from every better one (:func:`distinct_hypotheses`). ``lc``: a
    :class:`~.config.RenderingLocalizationConfig`.

    ``widened``: the search after every hypothesis of the first was refused (their poses
    ``exclude_w2c_opencv``): the best ``lc.retrieval_widened_shortlist`` views by global
    descriptor, near-duplicates included, none within ``retrieval_distinct_*`` of an
    excluded pose (before and after verification: they would repeat a refused search),
    and only those keyframe PnP verified; none without keyframes or with the setting 0."""
    k = max(1, lc.retrieval_top_k)
    verify = keyframes is not None and verifies_by_keyframes(index, lc)
    if widened and not (verify and lc.retrieval_widened_shortlist > 0):
        return []
    n = lc.retrieval_widened_shortlist if widened else max(
        k * RETRIEVAL_CANDIDATES_PER_HYPOTHESIS, lc.retrieval_shortlist if verify else 0)
    poses = index.w2c_opencv.cpu().numpy()
    distinct_m = lc.retrieval_distinct_rel * extent
    if verify and lc.retrieval_shortlist_distinct and not widened:
        rows, scores = index.query(g, len(poses))
        pick = distinct_rows(poses[rows], n, distinct_m, lc.retrieval_distinct_deg)
        rows, scores = rows[pick], scores[pick]
    else:
        rows, scores = index.query(g, n)
    refs = index.reference.cpu().numpy()
    candidates = [Candidate(int(r), float(sc), 0, poses[r]) for r, sc in zip(rows, scores)]

    def away_from_excluded(cands: list[Candidate]) -> list[Candidate]:
        if not len(exclude_w2c_opencv):  # the first search of every frame: nothing to leave out
            return cands
        return [c for c in cands if not near_any(c.w2c_opencv, exclude_w2c_opencv, distinct_m, lc.retrieval_distinct_deg)]

    # Views at a refused place are left out before verification too: their inliers would
    # set the bound (verify_candidates' must_beat) the other places' RANSAC has to beat.
    candidates = away_from_excluded(candidates)
    if verify:
        candidates = verify_candidates(
            index, candidates, keyframes.blocks, keyframes.camera, keyframes.stride, k, distinct_m,
            lc.retrieval_distinct_deg, keyframes.min_similarity, lc.min_matches, lc.min_inliers, keyframes.pnp,
            workers=lc.keyframe_verify_threads,
        )
    candidates = away_from_excluded(candidates)  # a view elsewhere whose PnP pose lands at one
    if widened:
        candidates = [c for c in candidates if c.inliers > 0]  # only verified views: the search is wide
    kept = distinct_hypotheses(candidates, k, distinct_m, lc.retrieval_distinct_deg)
    return [
        PosePrior(c.w2c_opencv, source="retrieval", detail={
            "reference": reference_names[refs[c.row]], "index_row": c.row, "score": c.score, "rank": r,
            **({"keyframe_inliers": c.inliers} if verify else {}),
        })
        for r, c in enumerate(kept)
    ]


def index_poses(c2w_opengl: np.ndarray, lc, extent: float) -> list[tuple[np.ndarray, int]]:
    """The retrieval index's poses (OpenGL camera-to-world) and the mapping view each
    came from (an index into ``c2w_opengl``, (N, 4, 4)): the mapping poses, the poses
    ``lc.retrieval_fill_spacing_rel`` x ``extent`` apart between neighbouring mapping
    cameras farther apart than that (each from the nearer end), then all of those panned
    by each of ``lc.retrieval_extra_yaw_deg``."""
    c2w_opengl = np.asarray(c2w_opengl, dtype=np.float64).reshape(-1, 4, 4)
    base = [(c2w_opengl[i], i) for i in range(len(c2w_opengl))]
    spacing = lc.retrieval_fill_spacing_rel * extent
    if spacing > 0 and len(c2w_opengl) > 1:
        centers = c2w_opengl[:, :3, 3]
        for i, j in nearest_pairs(centers, lc.retrieval_fill_neighbors):
            steps = int(np.ceil(np.linalg.norm(centers[j] - centers[i]) / spacing))
            for n in range(1, steps):
                alpha = n / steps
                base.append((interpolate_pose(c2w_opengl[i], c2w_opengl[j], alpha), int(i if alpha <= 0.5 else j)))
    return base + [(panned_c2w_opengl(view_c2w_opengl, yaw), ref)
                   for yaw in lc.retrieval_extra_yaw_deg for view_c2w_opengl, ref in base]


def stale_index(bundle, lc, prefix: str) -> str:
    """Why the retrieval index a map stores under ``prefix`` is not the one ``lc`` plans
    ("" if it is): another number of views than :func:`index_poses` places (an index
    built before the poses between sparse mapping views, or with other settings)."""
    from ...nerf.scene import SceneNormalization

    state = bundle.module_state(prefix)
    if "descriptors" not in state:
        return ""  # no index at all: the relocalizer says so when it needs one
    rows = int(state["descriptors"].shape[0])
    extent = SceneNormalization.from_dict(bundle.manifest["scene"]).extent
    want = len(index_poses(bundle.references.c2w_opengl, lc, float(extent)))
    if rows == want:
        return ""
    return (f"its retrieval index holds {rows} views where these settings place {want} "
            "(localization.retrieval_fill_spacing_rel, retrieval_extra_yaw_deg)")


def panned_c2w_opengl(c2w_opengl: np.ndarray, yaw_deg: float) -> np.ndarray:
    """The camera turned by ``yaw_deg`` about its own vertical (OpenGL y) axis, in place:
    a reference view where the mapping walk did not look."""
    a = np.radians(yaw_deg)
    R = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    out = np.array(c2w_opengl, dtype=np.float64, copy=True)
    out[:3, :3] = out[:3, :3] @ R
    return out


__all__ = ["RETRIEVAL_CANDIDATES_PER_HYPOTHESIS", "Candidate", "KeyframeQuery", "RetrievalIndex", "distinct_hypotheses", "distinct_rows",
           "global_descriptor", "index_poses", "keyframe_matches", "panned_c2w_opengl", "query_blocks", "hypotheses_from_retrieval", "stale_index",
           "verifies_by_keyframes", "verify_by_keyframe", "verify_candidates"]
