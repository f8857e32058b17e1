"""Camera models: pinhole and OpenCV radial-tangential (k1, k2, p1, p2, k3).

Pixel convention (the one COLMAP, instant-ngp and nerfstudio use): continuous image
coordinates with the origin at the *top-left corner* of the top-left pixel, so pixel
(col i, row j) has its centre at (i + 0.5, j + 0.5). Resizing an image by a factor s
then scales fx, fy, cx, cy by s exactly. ROS ``sensor_msgs/CameraInfo`` and OpenCV put
pixel centres at integer coordinates; :meth:`Camera.from_ros_k` and
:meth:`Camera.ros_k` convert (cx_ours = cx_ros + 0.5).

Camera-frame points here are in the OpenCV camera frame (x right, y down, z forward),
which is also the REP-103 optical frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

#: Undistortion: fixed-point iterations to reach the right branch, then Newton steps
#: (each halved up to BACKTRACK_STEPS times if it would increase the residual).
FIXED_POINT_START_ITERATIONS = 5
UNDISTORT_ITERATIONS = 10
BACKTRACK_STEPS = 4


def _distort(x, y, k1, k2, p1, p2, k3):
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    return (
        x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
        y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y,
        r2,
        radial,
    )


def undistort_normalized_newton(xd, yd, k1, k2, p1, p2, k3, iterations: int = UNDISTORT_ITERATIONS):
    """Invert OpenCV radial-tangential distortion.

    Starts from OpenCV's fixed-point iteration (which lands in the right branch of the
    radial map), then refines with Newton steps that are halved whenever they would
    increase the residual. Pure arithmetic + ``where``, so it works on numpy arrays
    and torch tensors alike (the torch ray generator uses it too).
    """
    where = np.where if isinstance(xd, np.ndarray) else _torch_where
    x, y = xd, yd
    for _ in range(FIXED_POINT_START_ITERATIONS):
        _, _, r2, radial = _distort(x, y, k1, k2, p1, p2, k3)
        x = (xd - (2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x))) / radial
        y = (yd - (p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y)) / radial
    for _ in range(iterations):
        dx_, dy_, r2, radial = _distort(x, y, k1, k2, p1, p2, k3)
        fx, fy = dx_ - xd, dy_ - yd
        dradial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
        j11 = radial + 2.0 * x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x
        j12 = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
        j22 = radial + 2.0 * y * y * dradial + 6.0 * p1 * y + 2.0 * p2 * x
        det = j11 * j22 - j12 * j12
        det = where(abs(det) < 1e-12, 1e-12, det)
        sx = (j22 * fx - j12 * fy) / det
        sy = (j11 * fy - j12 * fx) / det
        res = fx * fx + fy * fy
        step = 1.0
        for _ in range(BACKTRACK_STEPS):
            nx, ny = x - step * sx, y - step * sy
            ex, ey, _, _ = _distort(nx, ny, k1, k2, p1, p2, k3)
            better = (ex - xd) ** 2 + (ey - yd) ** 2 <= res
            x = where(better, nx, x) if step == 1.0 else where(better & ~accepted, nx, x)
            y = where(better, ny, y) if step == 1.0 else where(better & ~accepted, ny, y)
            accepted = better if step == 1.0 else (accepted | better)
            step *= 0.5
    return x, y


def _torch_where(cond, a, b):
    import torch

    if not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
    return torch.where(cond, a, b)


@dataclass(frozen=True)
class Camera:
    """Intrinsics of one image. Distortion follows OpenCV's (k1, k2, p1, p2, k3)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0
    # Not part of equality: a human-readable origin (e.g. "transforms.json frame 3").
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        problems = []
        if int(self.width) <= 0 or int(self.height) <= 0:
            problems.append(f"image size {self.width}x{self.height} must be positive")
        for name in ("fx", "fy"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v <= 0:
                problems.append(f"{name}={v} must be a positive finite focal length")
        for name in ("cx", "cy", "k1", "k2", "p1", "p2", "k3"):
            if not np.isfinite(float(getattr(self, name))):
                problems.append(f"{name} is not finite")
        if not problems and not (0.0 <= float(self.cx) <= self.width and 0.0 <= float(self.cy) <= self.height):
            problems.append(
                f"principal point ({float(self.cx):g}, {float(self.cy):g}) lies outside the {self.width}x{self.height} "
                "image: the intrinsics are for another image size"
            )
        if problems:
            where = f" ({self.source})" if self.source else ""
            raise ValueError(f"invalid camera{where}: " + "; ".join(problems))

    # ------------------------------------------------------------------ basics
    @property
    def is_distorted(self) -> bool:
        return any(v != 0.0 for v in (self.k1, self.k2, self.p1, self.p2, self.k3))

    @property
    def K(self) -> np.ndarray:
        """3x3 intrinsic matrix in *our* pixel convention (centre of pixel 0 at 0.5)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def distortion(self) -> np.ndarray:
        """OpenCV order (k1, k2, p1, p2, k3)."""
        return np.array([self.k1, self.k2, self.p1, self.p2, self.k3], dtype=np.float64)

    def undistorted(self) -> "Camera":
        """The same camera without distortion (the target of :func:`undistort_image`)."""
        return replace(self, k1=0.0, k2=0.0, p1=0.0, p2=0.0, k3=0.0)

    def scaled(self, factor: float) -> "Camera":
        """Camera of the image resized by ``factor`` (size rounded to whole pixels).

        Intrinsics are scaled by the *actual* size ratio per axis so a resized image and
        its camera always agree exactly.
        """
        w = max(1, int(round(self.width * factor)))
        h = max(1, int(round(self.height * factor)))
        return self.resized(w, h)

    def resized(self, width: int, height: int) -> "Camera":
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            width=int(width),
            height=int(height),
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
        )

    def fit_within(self, long_side: int, short_side: int) -> "Camera":
        """Resize (keeping aspect ratio) to fit a ``long_side`` x ``short_side`` box.

        The box is orientation-agnostic: a portrait image fits its long side to
        ``long_side`` too, so 160x120 means "160 along the long axis".
        """
        long_img, short_img = max(self.width, self.height), min(self.width, self.height)
        factor = min(long_side / long_img, short_side / short_img)
        return self.scaled(factor)

    # ------------------------------------------------------------- ROS / OpenCV
    def ros_k(self) -> np.ndarray:
        """K in the ROS/OpenCV convention (pixel centres at integer coordinates)."""
        K = self.K
        K[0, 2] -= 0.5
        K[1, 2] -= 0.5
        return K

    @classmethod
    def from_ros_k(
        cls, width: int, height: int, K: np.ndarray, D=(), source: str = ""
    ) -> "Camera":
        """From a ROS CameraInfo (K row-major 3x3, D plumb_bob k1 k2 p1 p2 k3)."""
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        d = list(np.asarray(D, dtype=np.float64).ravel()) + [0.0] * 5
        if len(np.asarray(D).ravel()) > 5:
            raise ValueError(
                f"distortion with {len(np.asarray(D).ravel())} coefficients is not the "
                "plumb_bob/radial-tangential model (k1, k2, p1, p2, k3)"
                + (f" ({source})" if source else "")
            )
        return cls(
            width=int(width),
            height=int(height),
            fx=float(K[0, 0]),
            fy=float(K[1, 1]),
            cx=float(K[0, 2]) + 0.5,
            cy=float(K[1, 2]) + 0.5,
            k1=d[0],
            k2=d[1],
            p1=d[2],
            p2=d[3],
            k3=d[4],
            source=source,
        )

    # ------------------------------------------------------------- projection
    def distort_normalized(self, xy: np.ndarray) -> np.ndarray:
        """Apply radial-tangential distortion to normalized coordinates (..., 2)."""
        xy = np.asarray(xy, dtype=np.float64)
        if not self.is_distorted:
            return xy.copy()
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
        xd = x * radial + 2.0 * self.p1 * x * y + self.p2 * (r2 + 2.0 * x * x)
        yd = y * radial + self.p1 * (r2 + 2.0 * y * y) + 2.0 * self.p2 * x * y
        return np.stack([xd, yd], axis=-1)

    def undistort_normalized(self, xy_distorted: np.ndarray) -> np.ndarray:
        """Invert :meth:`distort_normalized` (Newton's method)."""
        xyd = np.asarray(xy_distorted, dtype=np.float64)
        if not self.is_distorted:
            return xyd.copy()
        x, y = undistort_normalized_newton(
            xyd[..., 0], xyd[..., 1], self.k1, self.k2, self.p1, self.p2, self.k3
        )
        return np.stack([x, y], axis=-1)

    def project(self, points_cam_opencv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project camera-frame points (N, 3), OpenCV axes, to pixels (N, 2).

        Returns (pixels, in_front) where ``in_front`` marks z > 0.
        """
        p = np.asarray(points_cam_opencv, dtype=np.float64)
        z = p[..., 2]
        in_front = z > 1e-9
        safe_z = np.where(in_front, z, 1.0)
        xy = p[..., :2] / safe_z[..., None]
        xy = self.distort_normalized(xy)
        uv = np.stack([self.fx * xy[..., 0] + self.cx, self.fy * xy[..., 1] + self.cy], -1)
        return uv, in_front

    def pixel_to_normalized(self, uv: np.ndarray) -> np.ndarray:
        """Pixels (..., 2) -> undistorted normalized image coords (..., 2)."""
        uv = np.asarray(uv, dtype=np.float64)
        xyd = np.stack([(uv[..., 0] - self.cx) / self.fx, (uv[..., 1] - self.cy) / self.fy], -1)
        return self.undistort_normalized(xyd)

    def pixel_rays_opencv(self, uv: np.ndarray) -> np.ndarray:
        """Unit ray directions in the OpenCV camera frame for pixels (..., 2)."""
        xy = self.pixel_to_normalized(uv)
        d = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def pixel_centers(self, stride: int = 1) -> np.ndarray:
        """Centres of every ``stride``-th pixel block, (H', W', 2) as (u, v)."""
        us = np.arange(self.width // stride) * stride + stride / 2.0
        vs = np.arange(self.height // stride) * stride + stride / 2.0
        uu, vv = np.meshgrid(us, vs)
        return np.stack([uu, vv], axis=-1)

    def in_image(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv)
        return (
            (uv[..., 0] >= 0) & (uv[..., 0] < self.width) & (uv[..., 1] >= 0) & (uv[..., 1] < self.height)
        )

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("width", "height", "fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3")
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> "Camera":
        return cls(
            width=int(d["width"]),
            height=int(d["height"]),
            **{k: float(d.get(k, 0.0)) for k in ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3")},
            source=source,
        )


def undistort_image(image: np.ndarray, camera: Camera) -> tuple[np.ndarray, Camera]:
    """Resample an image of a distorted camera to the same camera without distortion.

    Returns the undistorted image and its (undistorted) camera; a camera without
    distortion returns the input unchanged.
    """
    import cv2

    if not camera.is_distorted:
        return image, camera
    target = camera.undistorted()
    h, w = camera.height, camera.width
    uu, vv = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xy = np.stack([(uu - target.cx) / target.fx, (vv - target.cy) / target.fy], -1)
    xyd = camera.distort_normalized(xy)
    # Source sample positions in OpenCV's integer-centre pixel convention for remap.
    map_x = (camera.fx * xyd[..., 0] + camera.cx - 0.5).astype(np.float32)
    map_y = (camera.fy * xyd[..., 1] + camera.cy - 0.5).astype(np.float32)
    out = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, target
