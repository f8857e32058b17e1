"""The iterate-correspondences-PnP loop every map-rendering method shares.

:class:`IterativeRelocalizer` does what does not depend on how 2D-3D correspondences
are found: input checks, stage clocks, hypotheses (the given prior, or the method's
own retrieval), the first round from every hypothesis (the one with the most inliers
goes on; a first round at ``hypothesis_accept_inlier_ratio`` ends the search), further
rounds from the last estimate until ``max_iterations`` (``max_unverified_iterations``
while no round is confident) or convergence, minimum counts, the confidence gate (success needs one round at
``min_inlier_ratio``; ``start_min_inlier_ratio`` is enough to go on, and the
refinement's own evidence may confirm such a frame: :meth:`~IterativeRelocalizer.refinement_confirms`),
an optional refinement, best-so-far (a later failed round does not void an earlier estimate, but a
verified one then stands only on the refinement's verdict, with a refinement-only pose's
covariance floor),
prior plausibility and the per-round history. A frame refused from the winning
hypothesis is pursued from the others (``hypotheses_after_refusal``) and, refused from
all of its retrieval's, from a widened retrieval's. A method implements
:meth:`~IterativeRelocalizer.correspondences` (and optionally
:meth:`~IterativeRelocalizer.prepare_query`, :meth:`~IterativeRelocalizer.retrieval_hypotheses`,
:meth:`~IterativeRelocalizer.widened_retrieval_hypotheses` and :meth:`~IterativeRelocalizer.refine`).

Poses: ``w2c_opencv`` (OpenCV world-to-camera) throughout.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...device import synchronize
from ...geometry.camera import Camera
from ...geometry.frames import pose_mahalanobis
from ...geometry.pnp import PnPResult, pnp_ransac, ransac_iterations
from ...geometry.se3 import invert_pose, pose_error
from ..base import NOT_ADOPTED_STAGES, IterationRecord, LocalizationResult, PosePrior, Relocalizer
from .config import IterativeLocalizationConfig

#: Reason prefix of a result refused because it is implausible given its prior (too far
#: from it, or too many standard deviations by its covariance): a global prior then
#: falls back to retrieval (:mod:`.global_prior`).
IMPLAUSIBLE_GIVEN_PRIOR = "implausible: "


def map_bias_covariance(median_depth: float, lc: IterativeLocalizationConfig, refined: bool) -> np.ndarray:
    """The pose error PnP's covariance cannot see (6x6, ROS order: x, y, z, rot_x, rot_y,
    rot_z): the map's geometric bias, shared by every correspondence of a frame, so not
    in the residuals. Isotropic, per axis ``covariance_floor_depth_rel`` x the inliers'
    median depth and ``covariance_floor_rotation_deg``, or the ``_unrefined`` pair when
    the refinement accepted no step after the matching rounds."""
    rel = lc.covariance_floor_depth_rel if refined else lc.covariance_floor_unrefined_depth_rel
    deg = lc.covariance_floor_rotation_deg if refined else lc.covariance_floor_unrefined_rotation_deg
    sigma_t = rel * median_depth if np.isfinite(median_depth) else 0.0
    return np.diag([sigma_t**2] * 3 + [np.radians(deg) ** 2] * 3)


def beyond_prior_covariance(w2c_opencv: np.ndarray, prior: PosePrior, limit: float) -> float | None:
    """The Mahalanobis distance of ``w2c_opencv`` from ``prior`` when it exceeds ``limit``;
    None when it does not, when ``limit`` is 0 (off) or when the prior has no usable
    (finite, positive-definite) covariance."""
    if limit <= 0 or prior.covariance is None:
        return None
    sigmas = pose_mahalanobis(w2c_opencv, prior.w2c_opencv, prior.covariance)
    return sigmas if sigmas is not None and sigmas > limit else None


def _first_round_entry(hypothesis: PosePrior, record: IterationRecord, must_beat: int) -> dict:
    """A hypothesis's first round as the prior's detail lists it ("hypotheses")."""
    return {"reference": hypothesis.detail.get("reference"), "inliers": record.num_inliers,
            "matches": record.num_matches, "must_beat": must_beat}


def start_at(w2c_opencv: np.ndarray) -> tuple[PnPResult, int]:
    """A (PnP result, matches) estimate that is only a starting pose (no inliers, no
    matches), for a refinement run from a prior; it never reaches a result on its own:
    only a refinement whose verdict confirms its own records makes a pose of it."""
    return PnPResult(True, w2c_opencv, np.zeros(0, bool), 0, float("nan")), 0


class StageClock:
    """Per-stage wall-clock milliseconds, summed over a frame; each reading waits for
    the device's queued work, so a stage's time is its own."""

    def __init__(self, device=None):
        self.device = device
        self.ms: dict[str, float] = defaultdict(float)

    def now(self) -> float:
        if self.device is not None:
            synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def stage(self, name: str):
        t0 = self.now()
        try:
            yield
        finally:
            self.ms[name] += (self.now() - t0) * 1e3


@dataclass
class Correspondences:
    """2D-3D correspondences of one round: pixel centres ``uv`` (N, 2) in ``camera``
    (the camera PnP runs in), world points (N, 3); ``num_matches`` = N."""

    uv: np.ndarray
    points: np.ndarray
    camera: Camera
    #: Matches dropped because the query is flat around them (``match_min_gradient``).
    untextured: int = 0

    @property
    def num_matches(self) -> int:
        return len(self.uv)


def check_query(image_rgb: np.ndarray, camera: Camera) -> np.ndarray:
    """The image as an RGB uint8 (H, W, 3) array of ``camera``'s size, else ValueError."""
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
    if (image_rgb.shape[1], image_rgb.shape[0]) != (camera.width, camera.height):
        raise ValueError(
            f"image is {image_rgb.shape[1]}x{image_rgb.shape[0]} but the camera is {camera.width}x{camera.height}"
        )
    return image_rgb


class IterativeRelocalizer(Relocalizer):
    """Base of relocalizers that find correspondences from a pose and iterate.

    Subclasses set ``self.loc`` (an :class:`IterativeLocalizationConfig`),
    ``self.extent`` (scene extent, metres, for the relative thresholds), ``self.device``
    and :attr:`STAGES` (stage names in report order)."""

    STAGES: tuple[str, ...] = ("retrieval", "extract", "correspondences", "pnp", "refine")
    loc: IterativeLocalizationConfig
    extent: float
    device: Any = None

    # ------------------------------------------------------------ hooks
    def prepare_query(self, image_rgb: np.ndarray, camera: Camera, clock: StageClock) -> Any:
        """Per-frame work done once (e.g. the query's feature map); passed to the hooks."""
        return image_rgb

    def retrieval_hypotheses(self, image_rgb: np.ndarray, camera: Camera, query: Any) -> list[PosePrior]:
        """Starting poses when no prior is given, best first; ValueError when the map
        cannot give any (the frame then fails with that reason)."""
        raise ValueError(f"method {self.method!r} has no retrieval of its own: give a prior")

    def widened_retrieval_hypotheses(self, image_rgb: np.ndarray, camera: Camera, query: Any,
                                     exclude_w2c_opencv: list[np.ndarray]) -> list[PosePrior]:
        """More starting poses, best first, for a frame refused from every one
        :meth:`retrieval_hypotheses` gave (their poses ``exclude_w2c_opencv``): a wider
        search of the map, none near those. Default: none."""
        return []

    def correspondences(self, query: Any, w2c_opencv: np.ndarray, round_index: int, clock: StageClock) -> Correspondences:
        """2D-3D correspondences for the query seen from ``w2c_opencv`` (round
        ``round_index``, 0-based; from round 1 on the pose is this frame's own estimate)."""
        raise NotImplementedError

    def refine(self, image_rgb: np.ndarray, camera: Camera, query: Any, best: tuple[PnPResult, int],
               result: LocalizationResult, clock: StageClock) -> tuple[PnPResult, int]:
        """Refine an estimate ``best`` = (PnP result, matches); append a history record per
        accepted step. The loop times the call as the "refine" stage. Default: none."""
        return best

    def refinement_can_confirm(self) -> bool:
        """Whether :meth:`refine` gathers evidence of its own that can confirm (or
        contradict) an estimate (:meth:`refinement_confirms`). Default: no."""
        return False

    def refinement_confirms(self, records: list[IterationRecord], verified: bool) -> str:
        """"" when the history records the refinement appended (``records``) confirm the
        estimate, else why not. ``verified``: a round verified the estimate and no later
        round from it failed; otherwise (its rounds reached start_min_inlier_ratio only, or
        a later round contradicted it) the refinement's evidence is the proof (such a pose
        keeps the matching rounds' covariance floor); a ``verified`` one the refinement may
        still contradict. Only called when :meth:`refinement_can_confirm`."""
        return "" if verified else "this method's refinement cannot confirm a pose"

    # ------------------------------------------------------------ the loop
    def _round(self, query: Any, w2c_opencv: np.ndarray, round_index: int, clock: StageClock, must_beat: int = 0
               ) -> tuple[PnPResult | None, IterationRecord, str]:
        """One correspondences -> PnP round: the PnP result (None on failure), its
        history record and why it failed ("" on success). ``must_beat`` > 0: the round
        matters only with more inliers than that (another hypothesis's first round has
        them), so RANSAC stops when such a pose would have been found
        (:func:`~neural_reloc.geometry.pnp.ransac_iterations`)."""
        lc = self.loc
        c = self.correspondences(query, w2c_opencv, round_index, clock)
        n = c.num_matches
        if n < lc.min_matches:
            flat = f" ({c.untextured} more where the query is flat, match_min_gradient)" if c.untextured else ""
            return None, IterationRecord(None, n, 0), f"{n} matches < min_matches={lc.min_matches}{flat}"
        pnp_cfg = lc.pnp
        if must_beat > 0:
            pnp_cfg = replace(pnp_cfg, max_iterations=ransac_iterations(must_beat + 1, n, pnp_cfg))
        with clock.stage("pnp"):
            pnp = pnp_ransac(c.uv, c.points, c.camera, pnp_cfg)
        if not pnp.success or pnp.num_inliers < lc.min_inliers or pnp.inlier_ratio < lc.start_min_inlier_ratio:
            why = pnp.reason or (
                f"{pnp.num_inliers} inliers of {n} matches "
                f"(min_inliers={lc.min_inliers}, start_min_inlier_ratio={lc.start_min_inlier_ratio})"
            )
            return None, IterationRecord(None, n, pnp.num_inliers), f"PnP failed: {why}"
        dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(w2c_opencv))
        return pnp, IterationRecord(pnp.w2c_opencv, n, pnp.num_inliers, dt, dr), ""

    def _confident(self, pnp: PnPResult) -> bool:
        return pnp.num_inliers >= self.loc.min_inliers and pnp.inlier_ratio >= self.loc.min_inlier_ratio

    def hypotheses_ranked_by_verification(self) -> bool:
        """Whether :meth:`retrieval_hypotheses` ranks its hypotheses by a verification
        (keyframe PnP), the condition for a first round to end the search early
        (``hypothesis_accept_inlier_ratio``). Default: yes; a method whose retrieval can
        rank by global descriptor alone says when."""
        return True

    def _accepts_hypothesis(self, pnp: PnPResult | None) -> bool:
        """Whether a hypothesis's first round ends the search over the others
        (``hypothesis_accept_inlier_ratio``, hypotheses ranked by a verification)."""
        lc = self.loc
        return (lc.hypothesis_accept_inlier_ratio > 0 and pnp is not None and self._confident(pnp)
                and pnp.inlier_ratio >= lc.hypothesis_accept_inlier_ratio and self.hypotheses_ranked_by_verification())

    def _converged(self, rec: IterationRecord) -> bool:
        lc = self.loc
        return rec.pose_update_m < lc.converged_translation_rel * self.extent and rec.pose_update_deg < lc.converged_rotation_deg

    def localize(self, image_rgb: np.ndarray, camera: Camera, prior: PosePrior | None) -> LocalizationResult:
        lc = self.loc
        clock = StageClock(self.device)
        image_rgb = check_query(image_rgb, camera)
        result = LocalizationResult(success=False, method=self.method, prior=prior)
        can_confirm = self.refinement_can_confirm()
        if prior is not None and prior.source == lc.flow_first_prior_source and can_confirm:
            done = self._refinement_first(image_rgb, camera, result, clock)
            if done is not None:
                return done
        query = self.prepare_query(image_rgb, camera, clock)
        if prior is None:
            try:
                with clock.stage("retrieval"):
                    hypotheses = self.retrieval_hypotheses(image_rgb, camera, query)
            except ValueError as e:
                result.reason = f"no prior and no retrieval: {e}"
                return self._finish(result, None, clock)
        else:
            hypotheses = [prior]

        result = self._search(image_rgb, camera, query, result, hypotheses, clock)
        if result.success or prior is not None:
            return result
        # Every retrieved hypothesis refused: the method's widened retrieval may have others.
        with clock.stage("retrieval"):
            wider = self.widened_retrieval_hypotheses(image_rgb, camera, query, [h.w2c_opencv for h in hypotheses])
        if wider:
            retry = self._search(image_rgb, camera, query, LocalizationResult(success=False, method=self.method,
                                                                              prior=None), wider, clock)
            if retry.success:
                retry.prior.detail["widened_retrieval"] = {
                    "refused_before": [h.detail.get("reference") for h in hypotheses]}
                return retry
            result.reason += (f"; the widened retrieval's {len(wider)} hypotheses gave no confirmed pose either "
                              f"(retrieval_widened_shortlist)")
        result.latency_ms = {k: clock.ms[k] for k in self.STAGES if k in clock.ms}  # every attempt counts
        return result

    def _search(self, image_rgb: np.ndarray, camera: Camera, query: Any, result: LocalizationResult,
                hypotheses: list[PosePrior], clock: StageClock) -> LocalizationResult:
        """The frame pursued from ``hypotheses`` (best first): their first rounds
        (:meth:`_first_rounds`), the winner pursued (:meth:`_pursue`), and after a
        refusal up to ``hypotheses_after_refusal`` others; the first localized result,
        else the winner's refusal (its latency counting every attempt). With several
        hypotheses the prior's detail lists them ("hypotheses")."""
        first, bounds = self._first_rounds(query, hypotheses, clock)
        ok = [k for k, (pnp, _, _) in enumerate(first) if pnp is not None]
        win = len(first) - 1 if self._accepts_hypothesis(first[-1][0]) else (
            max(ok, key=lambda k: first[k][0].num_inliers) if ok else 0)
        summary = [_first_round_entry(h, rec, b) for h, (_, rec, _), b in zip(hypotheses, first, bounds)] + [
            {"reference": h.detail.get("reference"), "not_tried": True} for h in hypotheses[len(first):]]
        result.prior = hypotheses[win]
        result = self._pursue(image_rgb, camera, query, result, first[win], len(hypotheses), clock)
        refused = result
        for k in self._hypotheses_after_refusal(first, win, len(hypotheses)):
            if result.success:
                break
            if k >= len(first) or bounds[k] > 0:
                # never tried, or its RANSAC was cut short by another's inliers: the first
                # round again with the full budget (a bounded count is only a lower bound)
                first_round = self._round(query, hypotheses[k].w2c_opencv, 0, clock)
                summary[k] = _first_round_entry(hypotheses[k], first_round[1], 0)
            else:
                first_round = first[k]
            if first_round[0] is None:
                summary[k]["after_refusal"] = "refused"
                continue
            retry = LocalizationResult(success=False, method=self.method, prior=hypotheses[k])
            result = self._pursue(image_rgb, camera, query, retry, first_round, len(hypotheses), clock)
            summary[k]["after_refusal"] = "localized" if result.success else "refused"
        if not result.success:
            result = refused  # the first hypothesis's refusal says why; the clock counts every attempt
            result.latency_ms = {k: clock.ms[k] for k in self.STAGES if k in clock.ms}
        if len(hypotheses) > 1:
            # "must_beat" > 0: that round's RANSAC stopped once it could not beat it, so
            # its inlier count is a lower bound, not comparable to the winner's
            result.prior.detail["hypotheses"] = summary
        return result

    def _first_rounds(self, query: Any, hypotheses: list[PosePrior], clock: StageClock) -> tuple[list, list[int]]:
        """The first round from every hypothesis, best first, and each one's RANSAC bound:
        the one with the most inliers (the first of equals) goes on, so a later one only
        needs the RANSAC budget to beat it. A round accepted outright
        (:meth:`_accepts_hypothesis`) ends the search and goes on itself (an earlier one
        may have more inliers at a ratio that verified nothing): the later hypotheses are
        not tried."""
        first, bounds = [], []
        for h in hypotheses:
            bounds.append(max((p.num_inliers for p, _, _ in first if p is not None), default=0))
            first.append(self._round(query, h.w2c_opencv, 0, clock, bounds[-1]))
            if self._accepts_hypothesis(first[-1][0]):
                break
        return first, bounds

    def _hypotheses_after_refusal(self, first: list, win: int, num_hypotheses: int) -> list[int]:
        """The hypotheses (indices) a frame refused from hypothesis ``win`` is pursued from
        next (``hypotheses_after_refusal`` of them at most), in this order: those whose
        first round started, by its inliers (under a RANSAC bound a lower bound: they go by
        it), then those the search never tried, best retrieved first. Hypotheses whose
        first round found no pose are not pursued; an untried one whose first round finds
        none uses its turn."""
        started = sorted((k for k, (pnp, _, _) in enumerate(first) if k != win and pnp is not None),
                         key=lambda k: -first[k][0].num_inliers)
        return (started + list(range(len(first), num_hypotheses)))[: self.loc.hypotheses_after_refusal]

    def _pursue(self, image_rgb: np.ndarray, camera: Camera, query: Any, result: LocalizationResult,
                first_round: tuple, num_hypotheses: int, clock: StageClock) -> LocalizationResult:
        """The frame pursued from ``result.prior`` whose first round was ``first_round`` =
        (PnP result or None, record, why it failed): further rounds, the refinement and
        its verdict, the refinement from the hypothesis itself; the finished result."""
        lc = self.loc
        can_confirm = self.refinement_can_confirm()
        pnp, rec, why = first_round
        result.history.append(rec)
        best = None
        # Success needs one round at the full inlier ratio (see the config).
        verified = pnp is not None and self._confident(pnp)
        if pnp is None:
            result.reason = f"iteration 1: {why}" + (
                f" (best of {num_hypotheses} retrieval hypotheses)" if num_hypotheses > 1 else "")
        else:
            best = (pnp, rec.num_matches)
        w2c = pnp.w2c_opencv if pnp is not None else None
        failed_round = False  # a round from this frame's own estimate found no pose
        # Rounds past max_iterations only while no round is confident yet (see the config).
        for it in range(1, max(lc.max_iterations, lc.max_unverified_iterations)):
            if best is None or self._converged(rec) or (verified and it >= lc.max_iterations):
                break
            pnp, rec, why = self._round(query, w2c, it, clock)
            result.history.append(rec)
            if pnp is None:
                result.reason = f"iteration {it + 1}: {why}"
                failed_round = True
                break
            best = (pnp, rec.num_matches)
            w2c = pnp.w2c_opencv
            verified = verified or self._confident(pnp)

        refined = False
        verified_by = "match" if verified else ""
        if best is not None and not verified:
            last = result.history[-1]
            result.reason = (
                f"unsure: no round reached min_inlier_ratio={lc.min_inlier_ratio} "
                f"(last: {last.num_inliers} inliers of {last.num_matches} matches)"
                + (f"; {result.reason}" if failed_round else "")
            )
        if best is None and can_confirm and lc.refine_from_prior and "refinement_first" not in result.prior.detail:
            # No round started: the refinement may still converge from the hypothesis itself,
            # and only its own verdict can make that a pose.
            best = start_at(result.prior.w2c_opencv)
        # A verified estimate that a later round from it found no pose for is contradicted:
        # the map rendered there did not match the query. It stands only on the
        # refinement's own evidence, as an unverified one does: a refinement that accepted
        # nothing is no longer read as a textureless view (NOTES.md, fourteenth session).
        contradicted = verified and failed_round
        trusted = verified and not contradicted  # the matching rounds' verification stands
        if contradicted and not can_confirm:
            result.reason = (f"unsure: a round from the verified estimate found no pose ({result.reason}) "
                             "and no refinement can confirm it")
            best = None
        # An unverified estimate is refined only when the refinement's own evidence may
        # confirm it, and not after a round from it failed (evidence against it).
        refined_from_w2c_opencv = None  # the estimate the refinement started from
        if best is not None and (verified or (can_confirm and not failed_round)):
            rounds_before = len(result.history)
            refined_from_w2c_opencv = best[0].w2c_opencv
            with clock.stage("refine"):
                refined_best = self.refine(image_rgb, camera, query, best, result, clock)
            refined = len(result.history) > rounds_before  # the hook records each step it accepts
            why = self.refinement_confirms(result.history[rounds_before:], trusted) if can_confirm else ""
            if why:  # an unverified or contradicted frame not confirmed, or a verified one the flow disagrees with
                if contradicted:
                    why = f"a round from the verified estimate found no pose ({result.reason}); {why}"
                result.reason = f"unsure: {why}" if verified else f"{result.reason}; {why}"
                best = None
            else:
                best = refined_best
                verified_by = "match" if trusted else "refinement"
        elif not verified:
            best = None
        if best is None and self._prior_gets_a_refinement_of_its_own(result.prior, refined_from_w2c_opencv,
                                                                     can_confirm):
            confirmed = self._refine_from_hypothesis(image_rgb, camera, query, result, clock)
            if confirmed is not None:  # on the refinement's evidence alone, as refine_from_prior's poses
                best, trusted, verified_by = confirmed, False, "refinement"
        # A pose only the refinement confirmed keeps the matching rounds' covariance floor.
        result = self._finish(result, best, clock, refined and trusted, verified_by)
        if result.success:
            self._set_inlier_uv(result, best[0], camera)
        return result

    def _prior_gets_a_refinement_of_its_own(self, prior, refined_from_w2c_opencv, can_confirm: bool) -> bool:
        """Whether a frame refused after a refinement from the matching rounds' estimate
        ``refined_from_w2c_opencv`` gets one from the hypothesis ``prior`` itself
        (``refine_from_prior_after_refusal``): the rounds led away from it, beyond the
        warp reach of the flow rounds (``flow_warp_max_*``: only a refinement that can
        confirm a pose, the flow's, with its rendering config, gets here), and it was not
        refined before (``flow_first_prior_source``)."""
        lc = self.loc
        if refined_from_w2c_opencv is None or not can_confirm or not lc.refine_from_prior_after_refusal:
            return False
        if "refinement_first" in prior.detail:
            return False
        dt, dr = pose_error(invert_pose(refined_from_w2c_opencv), invert_pose(prior.w2c_opencv))
        return dt > lc.flow_warp_max_translation_rel * self.extent or dr > lc.flow_warp_max_rotation_deg

    def _refine_from_hypothesis(self, image_rgb: np.ndarray, camera: Camera, query: Any,
                                result: LocalizationResult, clock: StageClock) -> tuple[PnPResult, int] | None:
        """The refinement from ``result.prior`` itself after the one from the rounds'
        estimate was refused: its best estimate when its own verdict confirms it (its
        records stay in the history), else None (its records dropped, a note added to
        the refusal's reason)."""
        rounds_before = len(result.history)
        with clock.stage("refine"):
            best = self.refine(image_rgb, camera, query, start_at(result.prior.w2c_opencv), result, clock)
        why = self.refinement_confirms(result.history[rounds_before:], False)
        if not why:
            return best
        del result.history[rounds_before:]
        result.reason = f"{result.reason}; the refinement from the hypothesis itself was not confirmed either ({why})"
        return None

    @staticmethod
    def _set_inlier_uv(result: LocalizationResult, pnp: PnPResult, camera: Camera) -> None:
        """The pose's inliers in the query's pixels (PnP may run on a resized camera)."""
        if pnp.inlier_uv is not None:
            w, h = pnp.image_size
            result.inlier_uv = pnp.inlier_uv * np.array([camera.width / w, camera.height / h])

    def _refinement_first(self, image_rgb: np.ndarray, camera: Camera, result: LocalizationResult,
                          clock: StageClock) -> LocalizationResult | None:
        """The refinement straight from ``result.prior`` (``flow_first_prior_source``): the
        finished result when its verdict confirms the pose, else None (and ``result`` as it
        was, the attempt noted in the prior's detail; the full pipeline then does not repeat
        it through ``refine_from_prior``). The refinement gets no query (no features were
        extracted): only refinements that render and compare images
        (:class:`~.refinement.FlowRefinement`) can confirm a pose. A confirmed pose gets the
        refined covariance floor: the flow converged, from an odometry prediction it agrees
        with (two witnesses, as a matching round and the flow are)."""
        with clock.stage("refine"):
            best = self.refine(image_rgb, camera, None, start_at(result.prior.w2c_opencv), result, clock)
        why = self.refinement_confirms(result.history, verified=False)
        if not why:  # finished on a copy: an implausible pose also leaves ``result`` to the full pipeline
            done = self._finish(replace(result, history=list(result.history)), best, clock, True, "refinement")
            if done.success:
                self._set_inlier_uv(done, best[0], camera)
                return done
            why = done.reason
        result.prior.detail["refinement_first"] = why
        result.history.clear()
        return None

    def _finish(self, result: LocalizationResult, best: tuple[PnPResult, int] | None, clock: StageClock,
                refined: bool = False, verified_by: str = "") -> LocalizationResult:
        lc = self.loc
        result.iterations = sum(h.stage not in NOT_ADOPTED_STAGES for h in result.history)
        result.latency_ms = {k: clock.ms[k] for k in self.STAGES if k in clock.ms}
        if best is None:
            rounds = [h for h in result.history if h.stage == "match"]
            if rounds:  # report what the last matching round got, for status/plots
                result.num_matches = rounds[-1].num_matches
                result.num_inliers = rounds[-1].num_inliers
            return result
        pnp, n_matches = best
        result.w2c_opencv = pnp.w2c_opencv
        result.covariance = pnp.covariance + map_bias_covariance(pnp.median_inlier_depth, lc, refined)
        result.num_matches = n_matches
        result.num_inliers = pnp.num_inliers
        dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(result.prior.w2c_opencv))
        if dt > lc.max_prior_translation_rel * self.extent or dr > lc.max_prior_rotation_deg:
            result.reason = (
                f"{IMPLAUSIBLE_GIVEN_PRIOR}the estimate is {dt:.2f} m / {dr:.1f} deg from the prior "
                f"(limits {lc.max_prior_translation_rel * self.extent:.2f} m / {lc.max_prior_rotation_deg} deg)"
            )
            return result
        sigmas = beyond_prior_covariance(pnp.w2c_opencv, result.prior, lc.max_prior_mahalanobis)
        if sigmas is not None:
            result.reason = (
                f"{IMPLAUSIBLE_GIVEN_PRIOR}the estimate is {dt:.2f} m / {dr:.1f} deg from the {result.prior.source} "
                f"prior, {sigmas:.1f} standard deviations by its covariance (limit {lc.max_prior_mahalanobis})"
            )
            return result
        result.success = True
        result.reason = ""
        result.verified_by = verified_by
        return result


__all__ = [
    "IMPLAUSIBLE_GIVEN_PRIOR",
    "Correspondences",
    "IterativeRelocalizer",
    "StageClock",
    "beyond_prior_covariance",
    "map_bias_covariance",
    "check_query",
]
