"""Sub-pixel refinement of a pose by the map's own colours: render, optical flow, PnP.

Descriptor or feature matching finds the right place but not a precise pose:
its correspondences are quantized to matching-grid cells, and on plain or smooth
surfaces the descriptors are smooth too, so many matches land a few cells off. Near
the true pose, the map's render looks like the query; dense optical flow between the
two (OpenCV's DIS, pyramidal, sub-pixel) then gives correspondences as precise as the
image texture allows, and the render's 3D points make them 2D-3D matches for PnP.

Flow is kept where it is trustworthy: where the render is opaque
(``min_accumulation``, applied when the render is made), textured (a grey-level gradient of ``flow_min_gradient`` or
more) and forward-backward consistent within ``flow_consistency_px``. The render uses
the map's mean appearance; its brightness is matched to the query's (gain and offset
over the valid pixels) before the flow, as exposure differs per frame. Flow can land only
near the query's texture, so the render volume-renders only the pixels within
``flow_render_texture_dilate_px`` of it (about two thirds of a room view); the flat rest
shows the coarse guide's colour (inpainted, like any pixel without a point, when a later
round warps the render), enough for DIS to see no edge there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ...geometry.camera import Camera
from ...geometry.frames import opengl_c2w_from_opencv_w2c
from ...geometry.optical_flow import forward_backward_flow
from ...geometry.pnp import pnp_ransac
from ...geometry.se3 import invert_pose, pose_error
from ...geometry.warp import RenderedView, sample_bilinear, warp_rendered_view
from ...nerf.depth_band import render_view_depth_guided
from ...nerf.surface_render import render_at_surface, upsample_depth
from ..base import FINAL_CONTRADICTS, IterationRecord
from .texture import gradient_magnitude, near_texture
from .texture import grey as _grey

#: Grey levels of 8-bit images.
GREY_MAX = 255.0
#: Guards the brightness matching of a flat render.
STD_EPS = 1e-6


@dataclass
class FlowMatches:
    """2D-3D correspondences from flow: query pixels (N, 2) in the refinement camera
    (pixel centres at +0.5) and world points (N, 3); ``candidates``: how many pixels
    passed the opacity and texture tests before the consistency test."""

    uv: np.ndarray
    points: np.ndarray
    candidates: int


def flow_matches(
    render_rgb: np.ndarray,
    render_points: np.ndarray,
    render_valid: np.ndarray,
    query_rgb: np.ndarray,
    *,
    min_gradient: float,
    consistency_px: float,
    max_points: int,
    seed: int = 0,
) -> FlowMatches:
    """Correspondences between a render (float RGB in [0, 1], (H, W, 3), its world
    points and where they are surfaces, ``render_valid`` (H, W) bool) and the query image
    (uint8 RGB of the same size)."""
    h, w = render_valid.shape
    if query_rgb.shape[:2] != (h, w):
        raise ValueError(f"query is {query_rgb.shape[1]}x{query_rgb.shape[0]}, the render {w}x{h}")
    valid = render_valid
    render_grey = _grey(np.clip(render_rgb * GREY_MAX, 0, GREY_MAX).astype(np.uint8)).astype(np.float32)
    query_grey = _grey(query_rgb).astype(np.float32)
    if valid.sum() > 1:  # match the render's brightness to the query's (exposure)
        r, q = render_grey[valid], query_grey[valid]
        render_grey = (render_grey - r.mean()) * (q.std() / max(float(r.std()), STD_EPS)) + q.mean()
    render_u8 = np.clip(render_grey, 0, GREY_MAX).astype(np.uint8)
    query_u8 = query_grey.astype(np.uint8)
    textured = gradient_magnitude(render_u8) >= min_gradient
    keep = valid & textured
    candidates = int(keep.sum())
    empty = FlowMatches(np.zeros((0, 2)), np.zeros((0, 3)), candidates)
    if candidates == 0:
        return empty
    fw, bw = forward_backward_flow(render_u8, query_u8)
    rows, cols = np.nonzero(keep)
    u = cols + 0.5 + fw[rows, cols, 0]
    v = rows + 0.5 + fw[rows, cols, 1]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    rows, cols, u, v = rows[inside], cols[inside], u[inside], v[inside]
    back = sample_bilinear(bw, np.stack([u, v], -1))
    err = np.hypot(fw[rows, cols, 0] + back[:, 0], fw[rows, cols, 1] + back[:, 1])
    ok = err <= consistency_px
    rows, cols, u, v = rows[ok], cols[ok], u[ok], v[ok]
    if len(rows) > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
        rows, cols, u, v = rows[pick], cols[pick], u[pick], v[pick]
    return FlowMatches(np.stack([u, v], -1).astype(np.float64), render_points[rows, cols].astype(np.float64), candidates)


def refinement_camera(camera: Camera, long_side: int) -> Camera:
    """The camera the refinement renders and matches in: ``camera`` with its long side
    at ``long_side`` (or its own size if smaller)."""
    if max(camera.width, camera.height) <= long_side:
        return camera
    return camera.fit_within(long_side, long_side)


def near_query_texture(query_rgb: np.ndarray, lc) -> np.ndarray | None:
    """The pixels the flow rounds' render volume-renders (``flow_render_texture_dilate_px``
    of the query's textured pixels), (H, W) bool; None: every pixel."""
    if lc.flow_render_texture_dilate_px <= 0:
        return None
    return near_texture(query_rgb, lc.flow_min_gradient, lc.flow_render_texture_dilate_px)


def render_for_flow(model, camera: Camera, w2c_opencv: np.ndarray, lc, pixels: np.ndarray | None = None
                    ) -> RenderedView:
    """The flow rounds' render of the map at ``w2c_opencv``: a depth-guided volume render
    (:func:`~neural_reloc.nerf.depth_band.render_view_depth_guided`) of colour and points,
    of ``pixels`` only when given (:func:`near_query_texture`)."""
    out = render_view_depth_guided(
        model, camera, opengl_c2w_from_opencv_w2c(w2c_opencv), ("rgb", "points", "accumulation"),
        guide_stride=lc.flow_render_guide_stride, margin_rel=lc.flow_render_band_margin_rel,
        band_coarse=lc.flow_render_band_coarse_samples, min_accumulation=lc.min_accumulation,
        num_fine=lc.flow_render_samples, num_coarse=lc.flow_render_coarse_samples or None,
        color_samples=lc.flow_render_color_samples or None, pixels=pixels,
    )
    valid = out["accumulation"] > lc.min_accumulation
    if pixels is not None:  # a pixel next to a stand-in one: its gradient (3x3) spans the seam
        valid &= cv2.erode(pixels.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE) > 0
    return RenderedView(camera, w2c_opencv, out["rgb"], out["points"], valid)


def _within_warp_reach(w2c_opencv: np.ndarray, rendered, lc, extent: float) -> bool:
    """Whether the estimate ``w2c_opencv`` is close enough to the last render's pose for
    a warp of that render to stand in for a new one."""
    if rendered is None or lc.flow_warp_max_translation_rel <= 0:
        return False
    dt, dr = pose_error(invert_pose(w2c_opencv), invert_pose(rendered.w2c_opencv))
    return dt <= lc.flow_warp_max_translation_rel * extent and dr <= lc.flow_warp_max_rotation_deg


def refine_by_flow(model, image_rgb: np.ndarray, camera: Camera, best: tuple, result, lc, extent: float) -> tuple:
    """Up to ``lc.flow_refinement_iterations`` rounds of render -> optical flow -> PnP from
    the estimate ``best`` = (PnP result, matches), for any map-rendering method (``lc``:
    a :class:`~.config.RenderingLocalizationConfig`); each accepted round is a history
    record of ``result``. A first round that finds no pose on a query the flow could
    confirm (:func:`flow_could_confirm`) is recorded too, without a pose, for the verdict.
    A round whose estimate is within the warp reach of the last render
    (``flow_warp_max_*``) warps that render
    (:func:`~neural_reloc.geometry.warp.warp_rendered_view`) instead of rendering the map
    again. Returns the best (PnP result, matches) so far."""
    cam_r = refinement_camera(camera, lc.flow_refinement_long_side)
    query = cv2.resize(image_rgb, (cam_r.width, cam_r.height), interpolation=cv2.INTER_AREA)
    pixels = near_query_texture(query, lc)
    rendered = None
    last = None  # the last accepted round's record
    failed = None  # the first round's record when it found no pose
    for k in range(max(lc.flow_refinement_iterations, lc.flow_unsettled_iterations)):
        if k >= lc.flow_refinement_iterations and (last is None or flow_settled(last, lc, extent)):
            break  # rounds past flow_refinement_iterations only while the pose still moves
        w2c_opencv = best[0].w2c_opencv
        if _within_warp_reach(w2c_opencv, rendered, lc, extent):
            view = warp_rendered_view(rendered, w2c_opencv)
        else:
            view = rendered = render_for_flow(model, cam_r, w2c_opencv, lc, pixels)
        fm = flow_matches(
            view.rgb, view.points, view.valid, query, min_gradient=lc.flow_min_gradient, consistency_px=lc.flow_consistency_px,
            max_points=lc.flow_max_points, seed=lc.pnp.seed,
        )
        n = len(fm.uv)
        if n < lc.min_matches:
            failed = IterationRecord(None, n, 0, stage="flow")
            break
        pnp = pnp_ransac(fm.uv, fm.points, cam_r, lc.flow_pnp)
        if not pnp.success or pnp.num_inliers < lc.min_inliers or pnp.inlier_ratio < lc.flow_min_inlier_ratio:
            failed = IterationRecord(None, n, pnp.num_inliers if pnp.success else 0, stage="flow")
            break
        dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(w2c_opencv))
        last = IterationRecord(pnp.w2c_opencv, n, pnp.num_inliers, dt, dr, stage="flow")
        result.history.append(last)
        best = (pnp, n)
        if dt < lc.converged_translation_rel * extent and dr < lc.converged_rotation_deg:
            break
    if last is None and failed is not None and flow_could_confirm(query, lc):
        result.history.append(failed)  # no pose where the query has texture: evidence against the estimate
    if last is not None and not flow_verdict(last, lc, extent):  # no cost on frames the verdict refuses ...
        best = final_flow_round(model, image_rgb, camera, best, rendered, result, lc, extent)
    elif last is not None and finer_resolution_could_settle(last, lc):  # ... but those the finer resolution may settle
        best = settle_at_final_resolution(model, image_rgb, camera, best, rendered, result, lc, extent)
    return best


def flow_could_confirm(query_rgb: np.ndarray, lc) -> bool:
    """Whether the query (at the flow rounds' size) has at least ``flow_confirm_min_inliers``
    textured pixels (grey-level gradient ``flow_min_gradient`` or more): enough for the
    flow to confirm a pose where the map rendered there matches it. A query with fewer
    (a plain wall, a dark frame) could not be confirmed by any render."""
    if lc.flow_confirm_min_inliers <= 0:
        return False
    return int(near_texture(query_rgb, lc.flow_min_gradient, 0).sum()) >= lc.flow_confirm_min_inliers


def final_flow_round(model, image_rgb: np.ndarray, camera: Camera, best: tuple, rendered: RenderedView, result, lc,
                     extent: float) -> tuple:
    """One flow round at ``lc.flow_final_long_side`` from a settled estimate ``best``
    (:func:`_final_round_pnp`). Kept (a history record, stage "flow_final") when PnP has
    ``flow_confirm_min_inlier_ratio`` of the correspondences as inliers and moved the pose
    within ``flow_final_max_update_*``; else ``best`` stands.

    A pose beyond that reach with the inlier share any flow round is kept with
    (``flow_min_inlier_ratio``), or within it but not adopted for its inliers and further
    from the settled pose than a settled round moves (:func:`flow_settled`;
    ``flow_final_unsettled_contradicts``), means the two resolutions disagree (with
    ``flow_final_contradiction_refuses`` and a verdict, ``flow_confirm_min_inliers`` > 0):
    up to ``flow_final_confirm_rounds`` more rounds at the finer resolution follow from
    it while they land beyond the reach, and the first within it that the flow's verdict
    accepts at that resolution (:func:`flow_verdict`: ``flow_confirm_min_inliers`` inliers,
    ``flow_confirm_min_inlier_ratio`` of its correspondences, moved no more than a settled
    round) confirms it (the finer resolution settled: the chain's records are "flow_final"
    and its last pose is the frame's); else the first such pose is recorded, not adopted (stage
    :data:`~neural_reloc.methods.base.FINAL_CONTRADICTS`), for the verdict to refuse the frame."""
    round_from = _final_rounds(model, image_rgb, camera, rendered, lc, extent)
    if round_from is None:
        return best
    first = round_from(best[0].w2c_opencv)
    if first is None:
        return best
    pnp, n, record, within = first
    if within and pnp.inlier_ratio >= lc.flow_confirm_min_inlier_ratio:
        result.history.append(record)
        return pnp, n
    if within and (flow_settled(record, lc, extent) or not lc.flow_final_unsettled_contradicts):
        return best  # not adopted, and no further than a settled round moves: the settled pose stands
    if not (lc.flow_final_contradiction_refuses and lc.flow_confirm_min_inliers > 0
            and pnp.inlier_ratio >= lc.flow_min_inlier_ratio):
        return best  # no evidence either way: the settled pose stands
    # A pose any flow round would keep, this far from the settled one: the two resolutions disagree.
    chain = [record]
    for _ in range(lc.flow_final_confirm_rounds):
        nxt = round_from(pnp.w2c_opencv)
        if nxt is None:
            break
        pnp, n, record, within = nxt
        chain.append(record)
        if within and not flow_verdict(record, lc, extent):
            result.history.extend(chain)  # the finer resolution settled: its pose is the frame's
            return pnp, n
        if within or pnp.inlier_ratio < lc.flow_min_inlier_ratio:
            break
    result.history.append(replace(chain[0], stage=FINAL_CONTRADICTS))  # the verdict refuses the frame
    return best


def _final_rounds(model, image_rgb: np.ndarray, camera: Camera, rendered: RenderedView, lc, extent: float):
    """``round_from(w2c_opencv)``: one flow round at ``lc.flow_final_long_side`` from that
    pose (:func:`_final_round_pnp`), as (PnP result, correspondences, its "flow_final"
    record, whether it moved the pose :func:`within_final_reach`), or None when PnP found
    no pose; None instead of the function when there is no finer resolution (off, or a
    query no larger than the flow rounds' camera)."""
    if lc.flow_final_long_side <= lc.flow_refinement_long_side:
        return None
    cam_f = refinement_camera(camera, lc.flow_final_long_side)
    if max(cam_f.width, cam_f.height) <= max(rendered.camera.width, rendered.camera.height):
        return None
    query = image_rgb if (camera.width, camera.height) == (cam_f.width, cam_f.height) else cv2.resize(
        image_rgb, (cam_f.width, cam_f.height), interpolation=cv2.INTER_AREA)
    texture = (near_texture(query, lc.flow_min_gradient, lc.flow_final_texture_dilate_px)
               if lc.flow_final_texture_dilate_px > 0 else None)

    def round_from(w2c_opencv):
        pnp, n = _final_round_pnp(model, rendered, cam_f, query, texture, w2c_opencv, lc)
        if pnp is None:
            return None
        dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(w2c_opencv))
        record = IterationRecord(pnp.w2c_opencv, n, pnp.num_inliers, dt, dr, stage="flow_final")
        return pnp, n, record, within_final_reach(record, lc, extent)

    return round_from


def finer_resolution_could_settle(last: IterationRecord, lc) -> bool:
    """Whether flow rounds whose verdict failed (their last accepted round ``last``) get
    rounds at the finer resolution (:func:`settle_at_final_resolution`): with
    ``flow_final_settles_unconfirmed``, a verdict (``flow_confirm_min_inliers`` > 0) and a
    last round with that many inliers (it failed for moving too much or for its inlier
    share; a round with fewer was not close to a pose the verdict would take)."""
    return (lc.flow_final_settles_unconfirmed and lc.flow_confirm_min_inliers > 0
            and last.num_inliers >= lc.flow_confirm_min_inliers)


def settle_at_final_resolution(model, image_rgb: np.ndarray, camera: Camera, best: tuple, rendered: RenderedView,
                               result, lc, extent: float) -> tuple:
    """Up to ``1 + lc.flow_final_confirm_rounds`` flow rounds at ``flow_final_long_side``,
    each from the last one's pose, after flow rounds whose verdict failed
    (:func:`finer_resolution_could_settle`): the first round the flow's verdict accepts
    at that resolution (:func:`flow_verdict`: inliers, their share, settled) confirms
    the frame, the chain's records ("flow_final") go to the history and its pose is the
    frame's; a round PnP keeps with fewer than ``flow_min_inlier_ratio`` of its
    correspondences, or none accepted: nothing is recorded, ``best`` and the refusal
    stand."""
    round_from = _final_rounds(model, image_rgb, camera, rendered, lc, extent)
    if round_from is None:
        return best
    chain: list[IterationRecord] = []
    w2c_opencv = best[0].w2c_opencv
    for _ in range(1 + lc.flow_final_confirm_rounds):
        nxt = round_from(w2c_opencv)
        if nxt is None:
            return best
        pnp, n, record, _ = nxt
        if pnp.inlier_ratio < lc.flow_min_inlier_ratio:
            return best
        chain.append(record)
        if not flow_verdict(record, lc, extent):
            result.history.extend(chain)
            return pnp, n
        w2c_opencv = pnp.w2c_opencv
    return best


def _final_round_pnp(model, rendered: RenderedView, cam_f: Camera, query: np.ndarray, texture: np.ndarray | None,
                     w2c_opencv: np.ndarray, lc):
    """One flow round at ``cam_f`` (the query ``query`` at that size) from ``w2c_opencv``:
    the flow rounds' last render (``rendered``) warped there gives each finer pixel its
    surface, the map's colour there is one field evaluation per pixel
    (:func:`~neural_reloc.nerf.surface_render.render_at_surface`; near the query's
    ``texture`` only, when given), then flow and PnP. (PnP result, correspondences), or
    (None, correspondences) when PnP found no pose with ``min_inliers``."""
    seen = warp_rendered_view(rendered, w2c_opencv)
    seen_z = np.where(seen.valid, (seen.points @ w2c_opencv[:3, :3].T + w2c_opencv[:3, 3])[..., 2], np.inf)
    depth_z, surface = upsample_depth(seen_z, seen.valid, cam_f.width, cam_f.height, lc.flow_final_edge_rel)
    if texture is not None:
        surface = surface & texture
    out = render_at_surface(model, cam_f, opengl_c2w_from_opencv_w2c(w2c_opencv), depth_z, surface)
    # Pixels without a surface keep the warped coarse colour: flow sees no artificial edges there.
    rgb = cv2.resize(seen.rgb, (cam_f.width, cam_f.height), interpolation=cv2.INTER_LINEAR)
    rgb[surface] = out["rgb"][surface]
    fm = flow_matches(rgb, out["points"], surface, query, min_gradient=lc.flow_min_gradient,
                      consistency_px=lc.flow_consistency_px, max_points=lc.flow_max_points, seed=lc.pnp.seed)
    n = len(fm.uv)
    if n < lc.min_matches:
        return None, n
    pnp = pnp_ransac(fm.uv, fm.points, cam_f, lc.flow_pnp)
    if not pnp.success or pnp.num_inliers < lc.min_inliers:
        return None, n
    return pnp, n


def within_final_reach(record: IterationRecord, lc, extent: float) -> bool:
    """Whether a final round moved the pose by at most ``flow_final_max_update_rel`` of the
    scene extent and ``flow_final_max_update_deg`` (the reach it is adopted within)."""
    return (record.pose_update_m <= lc.flow_final_max_update_rel * extent
            and record.pose_update_deg <= lc.flow_final_max_update_deg)


def flow_settled(record: IterationRecord, lc, extent: float) -> bool:
    """Whether a flow round moved the pose by at most ``flow_confirm_max_update_rel`` of
    the scene extent and ``flow_confirm_max_update_deg``."""
    return (record.pose_update_m <= lc.flow_confirm_max_update_rel * extent
            and record.pose_update_deg <= lc.flow_confirm_max_update_deg)


def flow_verdict(last: IterationRecord, lc, extent: float) -> str:
    """"" when the flow's last accepted round ``last`` confirms its pose: at least
    ``flow_confirm_min_inliers`` PnP inliers, ``flow_confirm_min_inlier_ratio`` of its
    correspondences, and settled (:func:`flow_settled`); else why not."""
    if last.num_inliers < lc.flow_confirm_min_inliers:
        return (f"the flow refinement's last round had {last.num_inliers} inliers "
                f"< flow_confirm_min_inliers={lc.flow_confirm_min_inliers}")
    if last.num_inliers < lc.flow_confirm_min_inlier_ratio * last.num_matches:
        return (f"the flow refinement's last round had {last.num_inliers} inliers of {last.num_matches} "
                f"correspondences < flow_confirm_min_inlier_ratio={lc.flow_confirm_min_inlier_ratio}")
    if not flow_settled(last, lc, extent):
        return (f"the flow refinement had not settled: its last round moved {last.pose_update_m:.3f} m / "
                f"{last.pose_update_deg:.2f} deg (flow_confirm_max_update_rel={lc.flow_confirm_max_update_rel}, "
                f"{lc.flow_confirm_max_update_rel * extent:.3f} m here; "
                f"flow_confirm_max_update_deg={lc.flow_confirm_max_update_deg})")
    return ""


def check_flow_settings(lc) -> None:
    """ValueError for flow settings that would refuse every refined frame: the flow's
    verdict needs ``flow_confirm_min_inliers`` inliers, and at most ``flow_max_points``
    correspondences reach PnP."""
    if lc.flow_refinement_iterations > 0 and lc.flow_confirm_min_inliers > lc.flow_max_points:
        raise ValueError(
            f"localization.flow_confirm_min_inliers={lc.flow_confirm_min_inliers} is above "
            f"localization.flow_max_points={lc.flow_max_points}: no flow round could pass it and every refined frame "
            "would be refused; lower flow_confirm_min_inliers with flow_max_points (or set it to 0: off)"
        )


class FlowRefinement:
    """The ``refine`` hook of an :class:`~.iterative.IterativeRelocalizer` that renders a
    map (``self.model``, ``self.loc`` a :class:`~.config.RenderingLocalizationConfig`,
    ``self.extent``): :func:`refine_by_flow`, then, when ``photometric_steps`` > 0, the
    iNeRF-style photometric refinement from its best pose
    (:func:`~.photometric.photometric_refinement`; either may be off). The loop times the
    hook as its "refine" stage (a second timer here counted that stage twice)."""

    def refine(self, image_rgb, camera, query, best, result, clock):
        lc = self.loc
        if lc.flow_refinement_iterations <= 0 and lc.photometric_steps <= 0:
            return best
        if lc.flow_refinement_iterations > 0:
            best = refine_by_flow(self.model, image_rgb, camera, best, result, lc, self.extent)
        if lc.photometric_steps > 0:
            from .photometric import photometric_refinement

            best = photometric_refinement(self.model, image_rgb, camera, best, result, lc, self.extent)
        return best

    def refinement_can_confirm(self) -> bool:
        lc = self.loc
        return lc.flow_refinement_iterations > 0 and lc.flow_confirm_min_inliers > 0

    def refinement_confirms(self, records: list, verified: bool) -> str:
        """"" when the flow refinement's last accepted round (of ``records``, those the
        hook appended) has ``flow_confirm_min_inliers`` inliers, at least
        ``flow_confirm_min_inlier_ratio`` of its correspondences, and moved the pose no more
        than ``flow_confirm_max_update_*`` (it settled), else why not. A ``verified``
        estimate the flow accepted no round for stands when the query has too little texture
        for the flow to confirm anything (no record: a plain view); where it has enough
        (:func:`flow_could_confirm`), the first round's record without a pose refuses it. The
        loop passes ``verified=False`` for one a later matching round from it found no pose
        for. A final round that contradicts the settled pose
        (:data:`~neural_reloc.methods.base.FINAL_CONTRADICTS`) refuses any frame. Rounds
        that failed the verdict stand confirmed when a later round at the finer resolution
        passed it (:func:`settle_at_final_resolution`)."""
        lc = self.loc
        flow = [r for r in records if r.stage == "flow"]
        if not flow:
            return "" if verified else "the flow refinement accepted no round"
        if flow[-1].w2c_opencv is None:  # the first round found no pose on a textured query
            f = flow[-1]
            return (f"the flow refinement found no pose where the query has texture (its first round: "
                    f"{f.num_matches} correspondences, {f.num_inliers} PnP inliers; the query has at least "
                    f"flow_confirm_min_inliers={lc.flow_confirm_min_inliers} textured pixels)")
        contradicts = [r for r in records if r.stage == FINAL_CONTRADICTS]
        if contradicts:
            c = contradicts[-1]
            if within_final_reach(c, lc, self.extent):
                limits = (f"further than a settled round moves (flow_confirm_max_update_rel="
                          f"{lc.flow_confirm_max_update_rel}, flow_confirm_max_update_deg="
                          f"{lc.flow_confirm_max_update_deg}) with too few inliers to be adopted "
                          f"(flow_confirm_min_inlier_ratio={lc.flow_confirm_min_inlier_ratio})")
            else:
                limits = (f"beyond flow_final_max_update_rel={lc.flow_final_max_update_rel} "
                          f"({lc.flow_final_max_update_rel * self.extent:.3f} m here) / "
                          f"flow_final_max_update_deg={lc.flow_final_max_update_deg}")
            return (f"the final flow round at {lc.flow_final_long_side} px found a pose {c.pose_update_m:.3f} m / "
                    f"{c.pose_update_deg:.2f} deg from the settled one ({c.num_inliers} of {c.num_matches} inliers), "
                    f"{limits}, and no further round there confirmed it")
        verdict = flow_verdict(flow[-1], lc, self.extent)
        finer = [r for r in records if r.stage == "flow_final"]
        if verdict and finer and not flow_verdict(finer[-1], lc, self.extent):
            return ""  # the finer resolution settled where the flow rounds had not (settle_at_final_resolution)
        return verdict
