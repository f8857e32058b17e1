"""The reported covariance: PnP's (the residuals) plus the map's bias floor, relative
to the inliers' depth, the refined or the unrefined pair by what made the pose."""

from __future__ import annotations

import numpy as np
import pytest

from neural_reloc.geometry.pnp import pnp_ransac
from neural_reloc.methods.base import PosePrior
from neural_reloc.methods.common.iterative import map_bias_covariance
from test_iterative_prior_gate import CAM, IMAGE, TRUE, Exact

NO_FLOORS = dict(covariance_floor_depth_rel=0.0, covariance_floor_rotation_deg=0.0,
                 covariance_floor_unrefined_depth_rel=0.0, covariance_floor_unrefined_rotation_deg=0.0)
FLOORS = dict(covariance_floor_depth_rel=0.01, covariance_floor_rotation_deg=0.2,
              covariance_floor_unrefined_depth_rel=0.05, covariance_floor_unrefined_rotation_deg=1.0)


class Refined(Exact):
    """A refine hook that re-solves (a new estimate, as a refinement round gives)."""

    def refine(self, image_rgb, camera, query, best, result, clock):
        c = self.correspondences(query, best[0].w2c_opencv, 0, clock)
        return pnp_ransac(c.uv, c.points, c.camera, self.loc.pnp), best[1]


def _pnp_alone():
    reloc = Exact()
    c = reloc.correspondences(None, TRUE, 0, None)
    return pnp_ransac(c.uv, c.points, c.camera, reloc.loc.pnp)


def test_median_inlier_depth_is_the_inliers_camera_z():
    pnp = _pnp_alone()
    z = Exact().points @ TRUE[:3, :3].T[:, 2] + TRUE[2, 3]
    assert pnp.median_inlier_depth == pytest.approx(float(np.median(z)), rel=1e-6)


@pytest.mark.parametrize("reloc_cls, rel, deg", [(Exact, 0.05, 1.0), (Refined, 0.01, 0.2)])
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
