"""PoseMap localization: one APR-Net forward pass, no prior, no rendering (the paper's
inference: "a simple APRNet for fast inference").

The covariance is diagonal, from the validation error measured after training
(per-axis mean squares on renders at unseen poses) times ``covariance_scale``, with
floors: an APR pose is a first guess, far less certain than a matched fix. ``success``
only when the camera centre is inside the mapping cameras' box (grown by
``bounds_margin_rel``): anything else is not a plausible pose in this map.

:meth:`PoseMapRelocalizer.predict_w2c_opencv` is the plain call for using PoseMap as a
prior source of another method.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ...geometry.camera import Camera
from ...geometry.frames import opencv_c2w_from_opengl_c2w, opencv_w2c_from_opencv_c2w
from ...map_bundle import MapBundle, MapError
from ...map_loading import map_method_config
from ...nerf.scene import SceneNormalization
from ..base import LocalizationResult, PosePrior, Relocalizer
from .apr_net import AprNet, apr_camera, apr_input, to_tensor
from .config import PoseMapConfig
from .trainer import APR


class PoseMapRelocalizer(Relocalizer):
    method = "posemap"

    def __init__(self, apr: AprNet, cfg: PoseMapConfig, reference_c2w_opengl: np.ndarray, extent: float, device):
        self.apr = apr.to(device).eval()
        self.cfg = cfg
        self.loc = cfg.localization
        self.device = torch.device(device)
        self.extent = float(extent)
        self._ref_c2w_opencv = np.stack([opencv_c2w_from_opengl_c2w(T) for T in reference_c2w_opengl])
        centers = self._ref_c2w_opencv[:, :3, 3]
        margin = self.loc.bounds_margin_rel * self.extent
        self.bounds_min, self.bounds_max = centers.min(0) - margin, centers.max(0) + margin
        var = apr.validation_var.detach().cpu().double().numpy()
        if not np.all(np.isfinite(var)):
            raise MapError("the PoseMap component has no validation error (train.validation_per_view=0): "
                           "it cannot give a covariance")
        pos_floor = (self.loc.min_position_std_rel * self.extent) ** 2
        rot_floor = np.radians(self.loc.min_rotation_std_deg) ** 2
        scaled = var * self.loc.covariance_scale
        self.covariance = np.diag(np.concatenate([np.maximum(scaled[:3], pos_floor), np.maximum(scaled[3:], rot_floor)]))

    @classmethod
    def from_bundle(cls, bundle: MapBundle, device, overrides: dict | None = None) -> PoseMapRelocalizer:
        cfg = map_method_config(bundle.manifest, overrides, method=cls.method)
        apr = AprNet(cfg.apr)
        try:
            apr.load_state_dict(bundle.module_state(APR))
        except RuntimeError as e:
            raise MapError(f"{bundle.path}: PoseMap weights do not match its config: {e}") from e
        extent = SceneNormalization.from_dict(bundle.manifest["scene"]).extent
        return cls(apr, cfg, bundle.references.c2w_opengl, extent, device)

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:
        return np.stack([opencv_w2c_from_opencv_c2w(T) for T in self._ref_c2w_opencv])

    @torch.no_grad()
    def predict_w2c_opencv(self, image_rgb: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray, float]:
        """(w2c_opencv, 6x6 covariance, milliseconds) of one image: APR-Net alone."""
        if image_rgb.shape[:2] != (camera.height, camera.width):
            raise ValueError(f"image is {image_rgb.shape[1]}x{image_rgb.shape[0]} but the camera is "
                             f"{camera.width}x{camera.height}")
        t0 = time.perf_counter()
        cam = apr_camera(camera, self.cfg.apr.image_long_side, self.apr.num_blocks)
        c2w_opencv = self.apr(to_tensor(apr_input(image_rgb, cam), self.device))[0].cpu().double().numpy()
        ms = (time.perf_counter() - t0) * 1000.0
        return opencv_w2c_from_opencv_c2w(c2w_opencv), self.covariance.copy(), ms

    def localize(self, image_rgb: np.ndarray, camera: Camera, prior: PosePrior | None) -> LocalizationResult:
        w2c, cov, ms = self.predict_w2c_opencv(image_rgb, camera)
        res = LocalizationResult(success=True, method=self.method, prior=prior, w2c_opencv=w2c, covariance=cov,
                                 iterations=1, latency_ms={"apr": ms})
        center = res.camera_center
        if not (np.all(center >= self.bounds_min) and np.all(center <= self.bounds_max)):
            res.success = False
            res.reason = (f"APR pose outside the map: camera centre {np.round(center, 3).tolist()} not in "
                          f"{np.round(self.bounds_min, 3).tolist()}..{np.round(self.bounds_max, 3).tolist()}")
        return res


def make_relocalizer(bundle: MapBundle, device, overrides: dict | None = None, method: str = "posemap"):
    return PoseMapRelocalizer.from_bundle(bundle, torch.device(device), overrides)


__all__ = ["PoseMapRelocalizer", "make_relocalizer"]
