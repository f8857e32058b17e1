"""The localization settings every method shares; a method's ``LocalizationConfig``
extends one of these (and may change a default with
:func:`~neural_reloc.config_fields.with_default`).

* :class:`LocalizationConfigBase`: 2D-3D correspondences -> PnP + RANSAC -> accepted
  or not (every method);
* :class:`IterativeLocalizationConfig`: the iterate-render-match-PnP loop of
  :class:`~neural_reloc.methods.common.iterative.IterativeRelocalizer` on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config_fields import setting
from ...geometry.pnp import PnPConfig
from ..base import PRIOR_SOURCES

_COUNT = (0, 1_000_000)


@dataclass
class LocalizationConfigBase:
    min_matches: int = setting(20, "Fewer 2D-3D correspondences than this: the frame fails without PnP.",
                               range=_COUNT)
    min_inliers: int = setting(12, "Fewer PnP inliers than this: the frame fails.", range=_COUNT)
    min_inlier_ratio: float = setting(
        0.1, "A frame is localized only if its PnP reaches this inlier ratio; otherwise it fails as unsure.",
        range=(0.0, 1.0),
    )
    pnp: PnPConfig = setting(PnPConfig(), "PnP + RANSAC (poselib).")


@dataclass
class IterativeLocalizationConfig(LocalizationConfigBase):
    max_iterations: int = setting(2, "Correspondence -> PnP rounds at most per frame (each from the last pose).",
                                  range=(1, 100))
    max_unverified_iterations: int = setting(
        4, "While no round has reached min_inlier_ratio (the rounds so far only reached start_min_inlier_ratio), "
        "rounds go on from the last estimate, as the last of max_iterations does, up to this many in all; a frame "
        "verified by then stops at max_iterations as before. max_iterations or less: off.", range=(1, 100),
    )
    hypothesis_accept_inlier_ratio: float = setting(
        0.0, "With several retrieval hypotheses (retrieval_top_k), their first rounds run best-retrieved first and "
        "stop at one that reaches min_inliers and this inlier ratio (and min_inlier_ratio): the rest would cost a "
        "render, matching and PnP each, and the accepted one goes on (an earlier one may have more inliers at a "
        "ratio that verified nothing). Safe where retrieval ranks its hypotheses by a verification (keyframe "
        "PnP); where it ranks by global descriptor alone a first wrong hypothesis can end the search "
        "(measurements: NOTES.md). 0: every hypothesis gets its first round and the one with the most inliers "
        "goes on.", range=(0.0, 1.0),
    )
    refine_from_prior: bool = setting(
        True, "When the first round fails from every hypothesis, a method whose refinement can confirm a pose "
        "(the flow refinement's verdict, flow_confirm_min_inliers) refines from the best hypothesis itself; the "
        "pose counts only if that verdict confirms it (and keeps the matching rounds' covariance floor). The flow "
        "converges from 1-2 m off where descriptor rounds do not start (NOTES.md).",
    )
    refine_from_prior_after_refusal: bool = setting(
        True, "When the refinement from the matching rounds' estimate is refused and the rounds had led beyond "
        "the flow's warp reach (flow_warp_max_*) from the hypothesis they started at, the refinement runs once "
        "more from the hypothesis itself; the pose counts only if its verdict confirms it (and keeps the matching "
        "rounds' covariance floor): descriptor rounds can lead away from a prior 0.3 m off on a view the "
        "descriptors do not tell apart, where the flow converges (NOTES.md, twenty-first session).",
    )
    hypotheses_after_refusal: int = setting(
        2, "A frame refused from the hypothesis that won the first rounds (no pose, or a pose the verdicts did "
        "not confirm) is pursued from up to this many of the other retrieval hypotheses in turn (those whose first "
        "round started, by inliers, then those a first round accepted outright had left untried), each through the "
        "same rounds and verdicts; the first confirmed pose is the frame's. Costs time on refused frames only: a "
        "wrong place can outscore the right one in the keyframe verification (NOTES.md, twenty-second session). "
        "0: off.", range=(0, 100),
    )
    flow_first_prior_source: str = setting(
        "odometry", "A prior of this source (odometry: the last fix carried by odometry while tracking) goes "
        "straight to the refinement (the flow refinement from the prior itself, no feature extraction or matching "
        "rounds), for a method whose refinement can confirm a pose; its verdict (flow_confirm_min_inliers, settled) "
        "decides, and a frame it refuses gets the full pipeline from the same prior. A confirmed pose gets the "
        "refined covariance floor (the prior and the flow agree). Empty: off.", choices=("",) + PRIOR_SOURCES,
    )
    converged_translation_rel: float = setting(
        0.001, "Stop iterating when the pose moved less than this fraction of the scene extent (and rotated "
        "less than converged_rotation_deg).", range=(0.0, 1e9),
    )
    converged_rotation_deg: float = setting(
        0.1, "Stop iterating when the pose rotated less than this (degrees) and moved less than "
        "converged_translation_rel.", range=(0.0, 180.0),
    )
    start_min_inlier_ratio: float = setting(
        0.04, "A round whose PnP reaches only this looser inlier ratio is a starting point for the next round, "
        "not an estimate: success still needs a round at min_inlier_ratio. 0.03 and 0.04 localized the same frames "
        "of unseen rooms, 0.05 fewer, none of them a wrong pose (NOTES.md).", range=(0.0, 1.0),
    )
    max_prior_translation_rel: float = setting(
        0.5, "A result that moved further than this fraction of the scene extent from its prior is implausible.",
        range=(0.0, 1e9),
    )
    max_prior_rotation_deg: float = setting(
        90.0, "A result rotated further than this from its prior is implausible (degrees).", range=(0.0, 180.0)
    )
    max_prior_mahalanobis: float = setting(
        5.0, "A result further than this from a prior that has a covariance (Mahalanobis distance over the 6 pose "
        "dimensions; priors whose covariance is positive definite: kscr's and PoseMap's poses as global priors) "
        "is implausible; a global prior then falls back to retrieval. 5: beyond the 99.9% quantile of a 6-dof "
        "Gaussian (4.7), for a calibrated covariance. 0: off.", range=(0.0, 1e9),
    )
    refused_prior_agreement_rel: float = setting(
        0.005, "A global prior's pose that led to a pose implausible by max_prior_* falls back to retrieval; when the "
        "pose from retrieval lies within this fraction of the scene extent (and refused_prior_agreement_deg) of "
        "that refused one, two refinements from different starts agree and the frame is localized, however far "
        "the prior (an APR's pose 1-3 m off: PoseMap's covariance is overconfident on query walks off the mapping "
        "path, NOTES.md); else the two answers disagree and the frame is unsure. 0: always unsure.",
        range=(0.0, 1e9),
    )
    refused_prior_agreement_deg: float = setting(
        1.0, "The rotation half of refused_prior_agreement_rel (degrees).", range=(0.0, 180.0)
    )
    retrieval_after_failed_global_prior: bool = setting(
        True, "A frame localized from a global prior's pose (--global-prior, the node's global_prior) that ends in "
        "no pose (PnP failed, unsure) is localized again from this method's own retrieval, as without a global "
        "prior (a far-off first guess costs the frame nothing but time). An implausible result (max_prior_*) "
        "falls back either way, and must then agree with the prior. False: such a frame fails.",
    )

    covariance_floor_depth_rel: float = setting(
        0.0035, "The reported covariance is PnP's (from the inliers' residuals) plus the map's geometric bias, which "
        "every correspondence of a frame shares and the residuals cannot show: per axis, this fraction of the "
        "inliers' median depth (standard deviation of the camera position), for a pose the refinement accepted "
        "a step for (flow; the photometric steps alone were not calibrated). Set so that 90% of room seed 0's query frames (CROSSFIRE and NeRFMatch) lie within the 90% "
        "chi-square bound; checked on unseen seeds (NOTES.md). 0: PnP's covariance alone.", range=(0.0, 1e3),
    )
    covariance_floor_rotation_deg: float = setting(
        0.16, "The rotation half of covariance_floor_depth_rel: standard deviation per axis (degrees).",
        range=(0.0, 180.0),
    )
    covariance_floor_unrefined_depth_rel: float = setting(
        0.04, "covariance_floor_depth_rel for a pose from the matching rounds alone (no refinement step "
        "accepted, or refinement off) or one only the refinement confirmed (flow_confirm_min_inliers): their "
        "precision, not the refinement's. Tracking accepts a fix only up to "
        "tracking.accept_max_position_std_m (0.25 m): beyond ~6 m of median depth such poses are no longer fixes.",
        range=(0.0, 1e3),
    )
    covariance_floor_unrefined_rotation_deg: float = setting(
        2.0, "The rotation half of covariance_floor_unrefined_depth_rel (degrees).", range=(0.0, 180.0)
    )


_PNP_1PX = PnPConfig(reprojection_threshold_px=1.0, max_ransac_points=500)
#: RANSAC budget of a keyframe verification (a method's keyframe_pnp): most shortlisted
#: views fail and run to it.
KEYFRAME_RANSAC_ITERATIONS = 4000


@dataclass
class RenderingLocalizationConfig(IterativeLocalizationConfig):
    """A method that renders the neural map at its estimates: render budgets, the flow
    refinement by the map's colours (:mod:`.refinement`) that follows its rounds, and
    retrieval over views rendered from the map (:mod:`.retrieval`)."""

    render_samples: int = setting(12, "Fine samples per ray when rendering for localization.", range=(1, 1024))
    render_coarse_samples: int = setting(
        64, "Coarse proposal samples per ray (read from the density grid, no network) when rendering for "
        "localization; 0: the map's sampler.num_coarse.", range=(0, 4096),
    )
    render_head_samples: int = setting(
        4, "Heads (descriptors; the photometric refinement's colour) run at the k heaviest fine samples per ray "
        "(weights rescaled to the ray's opacity); 0: at every sample.", range=(0, 1024),
    )
    min_accumulation: float = setting(
        0.5, "Rendered pixels with less accumulated opacity than this have no reliable depth.", range=(0.0, 1.0)
    )
    match_min_gradient: float = setting(
        1.0, "The descriptor rounds match a query feature cell only if some pixel within half the feature network's "
        "receptive field of it has a grey-level gradient of at least this (levels per pixel of the image the "
        "network sees, Sobel / 8): a cell that sees only an exactly flat patch (a saturated or black region, a "
        "synthetic flat image) has a descriptor of padding and biases, which on a flat image still matched the map "
        "along the image border. Sensor noise passes the test (RANSAC refuses its random matches); the retrieval's "
        "keyframe verification does not apply it. Every cell of the procedural rooms' and fox's queries passes. "
        "0: every cell.", range=(0.0, 255.0),
    )
    flow_refinement_iterations: int = setting(
        3, "Refinement by the map's colours after the rounds: render RGB and points at the estimate, optical "
        "flow (DIS) from the render to the query, PnP; this many rounds (0: off).", range=(0, 100),
    )
    flow_refinement_long_side: int = setting(
        160, "Long side (pixels) of the render and the query for the flow (the query's own size if smaller).",
        range=(8, 4096),
    )
    flow_render_samples: int = setting(
        8, "Fine samples per ray of the flow refinement's render (colour and points; render_samples is the "
        "descriptor rounds'). With the depth-guided render (flow_render_guide_stride) 8 in the band localize as 12 "
        "over the full bounds did, in about two thirds of the time (NOTES.md, eighth session).", range=(1, 1024),
    )
    flow_render_coarse_samples: int = setting(
        64, "Coarse proposal samples per ray of the flow refinement's render (0: the map's sampler.num_coarse).",
        range=(0, 4096),
    )
    flow_render_color_samples: int = setting(
        4, "The colour of the flow refinement's render comes from the k heaviest fine samples per ray (weights "
        "rescaled to the ray's opacity); 0: every sample.", range=(0, 1024),
    )
    flow_render_guide_stride: int = setting(
        4, "Depth-guided flow render (nerf/depth_band.py): first the distances of every this-th pixel block "
        "(flow_render_samples / flow_render_coarse_samples), then every pixel sampled only in the band those "
        "blocks give (flow_render_band_margin_rel, flow_render_band_coarse_samples proposal samples); 0: one pass "
        "over the scene's full bounds.", range=(0, 64),
    )
    flow_render_band_margin_rel: float = setting(
        0.1, "The band of a depth-guided render: the nearest to the farthest distance of the 3x3 blocks around a "
        "pixel's own, widened by this fraction.", range=(0.01, 10.0),
    )
    flow_render_band_coarse_samples: int = setting(
        16, "Proposal samples per ray within the band of a depth-guided render.", range=(1, 4096),
    )
    flow_render_texture_dilate_px: int = setting(
        5, "The flow rounds' depth-guided render volume-renders only the pixels within this many pixels of the "
        "query's textured ones (grey-level gradient flow_min_gradient or more, at flow_refinement_long_side), "
        "where flow can land; the others show the guide blocks' colour, upsampled, and have no point: flat in "
        "the query, they are flat in a render near its pose, and flow is kept only where the render has texture. "
        "The margin covers the estimate's error and the later rounds' warps. 0: every pixel.", range=(0, 64),
    )
    flow_min_gradient: float = setting(
        4.0, "Flow is used where the render's grey-level gradient is at least this (levels per pixel, "
        "Sobel / 8; the final round also evaluates the map only near query pixels above it). Per pixel, at the "
        "final round's finer resolution the same edge has about half the gradient.", range=(0.0, 1e9),
    )
    flow_consistency_px: float = setting(
        0.5, "Flow is used where forward and backward flow agree within this (pixels).", range=(0.0, 1e9)
    )
    flow_warp_max_translation_rel: float = setting(
        0.03, "A flow round whose estimate is within this fraction of the scene extent (and flow_warp_max_rotation_deg) "
        "of the last render's pose warps that render to the estimate (geometry/warp.py, a few milliseconds) instead "
        "of rendering the map again (the refinement's costliest step); 0: every round renders. The warp matches a "
        "render to ~1 mm (NOTES.md).", range=(0.0, 1e9),
    )
    flow_warp_max_rotation_deg: float = setting(
        5.0, "The rotation half of flow_warp_max_translation_rel (degrees).", range=(0.0, 180.0)
    )
    flow_max_points: int = setting(
        2000, "At most this many flow correspondences go to PnP (a seeded random subset).", range=(1, 10_000_000)
    )
    flow_min_inlier_ratio: float = setting(
        0.3, "A refinement round is kept only with at least min_inliers and this inlier ratio.", range=(0.0, 1.0)
    )
    flow_confirm_min_inliers: int = setting(
        1000, "The flow refinement's verdict on a frame's pose: its last accepted round must have at least this many "
        "PnP inliers (of at most flow_max_points) and have settled (flow_confirm_max_update_*). A frame whose "
        "matching rounds reached only start_min_inlier_ratio is localized on that evidence alone (from the true "
        "pose the descriptor rounds of a sparse map reach 10% inliers for half its frames; its pose keeps the "
        "matching rounds' covariance floor, covariance_floor_unrefined_*); a frame a round verified is refused as "
        "unsure when the flow, having accepted a round, fails the test (a round at 20% of 155 matches verified a "
        "pose 2.4 m off whose flow reached 655), when its first flow round finds no pose although the query "
        "has this many textured pixels (a round at 13% of 190 matches verified a pose 3.3 m off whose render "
        "the flow found nothing in), and, when a later round from it found no pose, unless the flow "
        "confirms it. On unseen rooms the correct frames' last flow rounds had "
        "1142-2000 inliers, the wrong poses' 153-763 (NOTES.md). An absolute count: it assumes "
        "flow_max_points=2000, flow_refinement_long_side=160 and flow_pnp's 1 px threshold. 0: off.",
        range=(0, 10_000_000),
    )
    flow_confirm_min_inlier_ratio: float = setting(
        0.7, "With flow_confirm_min_inliers: the flow's last round must also have this share of its "
        "correspondences as PnP inliers. Flow against a render of the wrong place can still line up 1000 "
        "consistent pixels; it does so with about half of them (NOTES.md).", range=(0.0, 1.0),
    )
    flow_confirm_max_update_rel: float = setting(
        0.003, "With flow_confirm_min_inliers: the flow's last round must also have moved the pose by at most this "
        "fraction of the scene extent (it settled); until then rounds go on (flow_unsettled_iterations). Poses "
        "still converging from tens of centimetres off pass the inlier count, not this; 93% of the frames within "
        "5 cm moved less than 0.3% of the extent in their last round and most of the rest settle in a round or "
        "two more (NOTES.md).", range=(0.0, 1e9),
    )
    flow_confirm_max_update_deg: float = setting(
        0.5, "The rotation half of flow_confirm_max_update_rel (degrees; 95% of the frames within 5 cm moved less "
        "than 0.44 deg in their last round).", range=(0.0, 180.0),
    )
    flow_unsettled_iterations: int = setting(
        6, "While the flow's last round has not settled (it moved more than flow_confirm_max_update_rel / _deg), "
        "rounds go on past flow_refinement_iterations, up to this many in all: a start far off converges in a few "
        "more (1.49 -> 0.87 -> 0.17 -> 0.04 m). flow_refinement_iterations or less: off.", range=(0, 100),
    )
    flow_pnp: PnPConfig = setting(_PNP_1PX, "PnP of the flow refinement: threshold in pixels of the refinement camera "
                                  "(flow_refinement_long_side; flow_final_long_side in the final round).")
    flow_final_long_side: int = setting(
        320, "Once the flow rounds settled on a pose the verdict's tests accept (flow_confirm_*), one more round at "
        "this long side (the query's own size if smaller; not above flow_refinement_long_side: off): the map's "
        "colour evaluated once "
        "per pixel at the surfaces of the last render seen from the estimate (nerf/surface_render.py), flow and PnP "
        "(flow_pnp's threshold, in these pixels) at this resolution. The map is trained at a lower resolution than "
        "the query; its colours still carry finer detail than a render at flow_refinement_long_side shows.",
        range=(0, 4096),
    )
    flow_final_edge_rel: float = setting(
        0.05, "The final round evaluates a pixel only where the last render's inverse depth around it (3x3) has no "
        "kink: a second difference along a row or column above this fraction of the inverse depth (a depth edge, "
        "where interpolation would put the point in the air; planes have none).", range=(0.0, 10.0),
    )
    flow_final_texture_dilate_px: int = setting(
        3, "The final round evaluates the map only within this many pixels of the query's textured pixels (grey-level "
        "gradient flow_min_gradient or more), where flow can land; elsewhere the warped coarse render stands in. "
        "0: every pixel.", range=(0, 64),
    )
    flow_final_max_update_rel: float = setting(
        0.01, "The final round's pose is kept only if it moved the settled pose by at most this fraction of the "
        "scene extent (and flow_final_max_update_deg), with flow_confirm_min_inlier_ratio of its correspondences "
        "as inliers; else the settled pose stands (a confident pose beyond this reach makes the frame unsure: "
        "flow_final_contradiction_refuses).", range=(0.0, 1e9),
    )
    flow_final_max_update_deg: float = setting(
        1.0, "The rotation half of flow_final_max_update_rel (degrees).", range=(0.0, 180.0)
    )
    flow_final_contradiction_refuses: bool = setting(
        True, "A final round with flow_min_inlier_ratio of its correspondences as inliers (what any flow round is "
        "kept with) whose pose lies beyond flow_final_max_update_* from the settled one contradicts it (at the "
        "finer resolution the flow finds another pose: the coarser rounds settled where the render at "
        "flow_refinement_long_side cannot tell them apart, e.g. a shift along a far wall against a turn): the "
        "frame is unsure (needs flow_confirm_min_inliers > 0) unless the finer resolution settles there "
        "(flow_final_confirm_rounds). False: the settled pose stands.",
    )
    flow_final_unsettled_contradicts: bool = setting(
        True, "With flow_final_contradiction_refuses: a final round within flow_final_max_update_* that is not "
        "adopted (fewer than flow_confirm_min_inlier_ratio of its correspondences as inliers, but "
        "flow_min_inlier_ratio) and moved the settled pose further than a settled round moves "
        "(flow_confirm_max_update_*) contradicts it too: the finer resolution finds another pose and cannot "
        "confirm either. False: such a round is ignored and the settled pose stands.",
    )
    flow_final_confirm_rounds: int = setting(
        1, "When the final round contradicts the settled pose (flow_final_contradiction_refuses), up to this many "
        "more rounds at flow_final_long_side from its pose, while they land beyond flow_final_max_update_*: the "
        "first within it that passes the flow's verdict at that resolution (flow_confirm_min_inliers inliers, "
        "flow_confirm_min_inlier_ratio of its correspondences, moved no more than flow_confirm_max_update_*) "
        "confirms it (the finer resolution settled: its pose is the frame's); none does: the frame is unsure. "
        "0: unsure at once.", range=(0, 10),
    )
    flow_final_settles_unconfirmed: bool = setting(
        True, "Flow rounds that ended unconfirmed (their last round moved more than flow_confirm_max_update_*, "
        "or had fewer than flow_confirm_min_inlier_ratio of its correspondences as inliers) with "
        "flow_confirm_min_inliers inliers get up to 1 + flow_final_confirm_rounds rounds at flow_final_long_side, "
        "each from the last one's pose: the first that passes the flow's verdict at that resolution "
        "(flow_confirm_*) confirms the frame and its pose is the frame's; none: the frame stays unsure. At "
        "flow_refinement_long_side the render of a sparsely mapped place can be too blurred for the rounds to "
        "settle. False: such frames are unsure at once.",
    )
    photometric_steps: int = setting(
        0, "Photometric refinement (iNeRF-style) after the flow rounds (or alone when flow_refinement_iterations "
        "is 0): this many Adam steps on the pose through the frozen map's rendered colours (photometric.py); the "
        "result is kept only if it lowers the photometric loss. 0: off.", range=(0, 10_000),
    )
    photometric_rays: int = setting(
        1024, "Rays rendered per photometric step: query pixels (at flow_refinement_long_side) drawn once per "
        "frame where the query is textured, with probability by gradient magnitude (iNeRF's interest regions).",
        range=(16, 1_000_000),
    )
    photometric_min_gradient: float = setting(
        4.0, "Photometric rays are drawn among query pixels with at least this grey-level gradient (levels per "
        "pixel, Sobel / 8); fewer than min_matches such pixels: the step is skipped (textureless query).",
        range=(0.0, 1e9),
    )
    photometric_lr: float = setting(
        0.005, "Adam learning rate of the photometric pose update (~ its step per coordinate): the rotation in "
        "radians (about the point at the rays' median rendered depth on the start's optical axis), the "
        "translation in units of that depth.", range=(0.0, 1.0),
    )
    photometric_lr_final_ratio: float = setting(
        0.3, "The learning rate decays exponentially over the photometric steps to this fraction of photometric_lr.",
        range=(1e-6, 1.0),
    )
    photometric_loss: str = setting(
        "huber", "Robust loss of the photometric refinement on the colour residuals (0-1 per channel, after a "
        "gain and offset match the render's brightness to the query's).", choices=("huber", "l1", "l2"),
    )
    photometric_huber_delta: float = setting(
        0.1, "Residual (colour, 0-1) where the Huber loss turns linear; a ray whose channels are all within it "
        "counts as an inlier in the step's history record.", range=(1e-6, 1.0),
    )
    retrieval_top_k: int = setting(
        3, "Without a prior, the best this many retrieved reference views are hypotheses: each gets a first "
        "round and the one with the most inliers goes on (hloc's top-k; 1: a top-1 retrieval prior), unless a "
        "first round is accepted outright before (hypothesis_accept_inlier_ratio): that one goes on.",
        range=(1, 1000),
    )
    retrieval_distinct_rel: float = setting(
        0.05, "A retrieved view closer than both this (fraction of the scene extent) and retrieval_distinct_deg "
        "to a better-ranked hypothesis is skipped (it would give the same first round).", range=(0.0, 1e9),
    )
    retrieval_distinct_deg: float = setting(20.0, "The rotation half of that test (degrees).", range=(0.0, 180.0))
    retrieval_shortlist: int = setting(
        20, "Retrieved views are verified before they become hypotheses, on a map whose retrieval index has "
        "keyframes (features and 3D points rendered at build time; no rendering at query time): the best this "
        "many by global descriptor are matched to the query by their keyframes and ranked by PnP inliers; a "
        "verified view starts from its PnP pose. 0: ranked by global descriptor alone.", range=(0, 100_000),
    )
    retrieval_shortlist_distinct: bool = setting(
        True, "The shortlist holds distinct views: a view closer than retrieval_distinct_rel and "
        "retrieval_distinct_deg to a better-ranked one is skipped, so that near-duplicates (the index's poses "
        "between sparse mapping views, a dense walk's neighbours) do not crowd out other places.",
    )
    retrieval_widened_shortlist: int = setting(
        400, "A frame refused from every retrieval hypothesis (and the others, hypotheses_after_refusal) gets a "
        "wider search: the best this many views by global descriptor, near-duplicates included, verified by their "
        "keyframes, and the best retrieval_top_k of them not near a refused hypothesis pursued the same way. The "
        "global descriptor can rank the right place last on a view unlike the mapping walk's (room 6 sparse: "
        "ranks 125-197 of 210). Costs time (a verification per view, ~1.2 ms on 2 cores) on refused frames only; "
        "needs keyframes. 0: off.", range=(0, 1_000_000),
    )
    keyframe_verify_threads: int = setting(
        2, "The shortlisted views' keyframe verifications run this many at a time, in threads (their PnP runs "
        "in poselib, outside Python's lock); 1: one after another.", range=(1, 64),
    )
    retrieval_extra_yaw_deg: tuple[float, ...] = setting(
        (-35.0, 35.0), "Besides the mapping poses, the retrieval index holds each mapping pose panned by these "
        "angles (degrees, about the camera's vertical axis), rendered when the method is trained: views where "
        "the mapping walk did not look.", range=(-180.0, 180.0),
    )
    retrieval_fill_spacing_rel: float = setting(
        0.03, "Where two neighbouring mapping cameras (each with its retrieval_fill_neighbors nearest) are farther "
        "apart than this fraction of the scene extent, the retrieval index also holds poses between them, this "
        "far apart (centre on the line, rotation by slerp), each panned as the mapping poses are: the places "
        "between the views of a sparse capture. A dense walk's neighbours are closer: nothing added. 0: off.",
        range=(0.0, 1.0),
    )
    retrieval_fill_neighbors: int = setting(
        3, "Each mapping camera's nearest mapping cameras (by centre) that retrieval_fill_spacing_rel fills "
        "towards (descriptor synthesis's k).", range=(1, 100),
    )


__all__ = ["KEYFRAME_RANSAC_ITERATIONS", "IterativeLocalizationConfig", "LocalizationConfigBase", "RenderingLocalizationConfig"]
