"""The reported covariance: PnP's (the residuals) plus the map's bias floor, relative
to the inliers' depth, the refined or the unrefined pair by what made the pose."""

from __future__ import annotations

import numpy as np
import pytest

from neural_reloc.geometry.pnp import pnp_ransac
from neural_reloc.geometry.se3 import invert_pose, make_pose, rotation_from_rotvec
from neural_reloc.methods.base import IterationRecord, PosePrior
from neural_reloc.methods.common.iterative import map_bias_covariance
from test_iterative_prior_gate import CAM, IMAGE, TRUE, Exact

NO_FLOORS = dict(covariance_floor_depth_rel=0.0, covariance_floor_rotation_deg=0.0,
                 covariance_floor_unrefined_depth_rel=0.0, covariance_floor_unrefined_rotation_deg=0.0)
FLOORS = dict(covariance_floor_depth_rel=0.01, covariance_floor_rotation_deg=0.2,
              covariance_floor_unrefined_depth_rel=0.05, covariance_floor_unrefined_rotation_deg=1.0)


class Refined(Exact):
    """A refine hook that re-solves and records the step, as a refinement round does."""

    def refine(self, image_rgb, camera, query, best, result, clock):
        c = self.correspondences(query, best[0].w2c_opencv, 0, clock)
        pnp = pnp_ransac(c.uv, c.points, c.camera, self.loc.pnp)
        result.history.append(IterationRecord(pnp.w2c_opencv, len(c.uv), pnp.num_inliers, 0.0, 0.0))
        return pnp, best[1]


class Rebuilt(Exact):
    """A refine hook that accepts nothing but hands back a new tuple: still unrefined."""

    def refine(self, image_rgb, camera, query, best, result, clock):
        return best[0], best[1]


def _pnp_alone():
    reloc = Exact()
    c = reloc.correspondences(None, TRUE, 0, None)
    return pnp_ransac(c.uv, c.points, c.camera, reloc.loc.pnp)


def test_median_inlier_depth_is_the_inliers_camera_z():
    # A rotated, translated camera and 30% outliers: the depth is the inliers' camera z,
    # not world z, not the outliers'.
    rng = np.random.default_rng(1)
    c2w_opencv = make_pose(rotation_from_rotvec([0.2, -0.5, 0.1]), [0.4, -0.3, 1.0])
    w2c_opencv = invert_pose(c2w_opencv)
    cam_pts = np.column_stack([rng.uniform(-2, 2, 300), rng.uniform(-1.5, 1.5, 300), rng.uniform(3, 9, 300)])
    world = (cam_pts - w2c_opencv[:3, 3]) @ w2c_opencv[:3, :3]
    uv, _ = CAM.project(cam_pts)
    outlier = rng.random(300) < 0.3
    uv[outlier] = rng.uniform([0, 0], [CAM.width, CAM.height], size=(outlier.sum(), 2))
    pnp = pnp_ransac(uv, world, CAM, Exact().loc.pnp)
    assert pnp.success
    assert pnp.median_inlier_depth == pytest.approx(float(np.median(cam_pts[pnp.inlier_mask, 2])), rel=1e-3)


@pytest.mark.parametrize("reloc_cls, rel, deg", [(Exact, 0.05, 1.0), (Rebuilt, 0.05, 1.0), (Refined, 0.01, 0.2)])
def test_floor_by_what_made_the_pose(reloc_cls, rel, deg):
    prior = PosePrior(TRUE, source="given")
    pnp = _pnp_alone()
    without = reloc_cls(**NO_FLOORS).localize(IMAGE, CAM, prior)
    with_floor = reloc_cls(**FLOORS).localize(IMAGE, CAM, prior)
    assert without.success and with_floor.success
    np.testing.assert_allclose(without.covariance, pnp.covariance, rtol=1e-9, atol=1e-15)
    added = with_floor.covariance - without.covariance
    sigma_t = rel * pnp.median_inlier_depth
    np.testing.assert_allclose(added, np.diag([sigma_t**2] * 3 + [np.radians(deg) ** 2] * 3), atol=1e-12)


def test_no_depth_no_translation_floor():
    from neural_reloc.methods.common.config import IterativeLocalizationConfig

    b = map_bias_covariance(float("nan"), IterativeLocalizationConfig(**FLOORS), refined=True)
    assert np.all(b[:3, :3] == 0) and b[3, 3] == pytest.approx(np.radians(0.2) ** 2)
