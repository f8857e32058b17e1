"""CROSSFIRE's training losses (paper Sec. 3.2), pure differentiable torch functions.

    L = L_MSE + lambda1 L_SSIM + lambda2 L_TV + L_pos + L_neg        (paper eq. 3)

Descriptor tensors are per pixel rows (N, D) in the same pixel order for the image
side (CNN, :func:`~.feature_extractor.flatten_descriptor_map`) and the rendered side
(the renderer's per-ray output); ``xyz`` (N, 3) are the world points of those rendered
pixels (``NeuralMap.render_rays(..., outputs=("points", ...))``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .config import CrossfireLossConfig

# SSIM constants for images in [0, 1] (Wang et al. 2004: K1 = 0.01, K2 = 0.03, L = 1).
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
#: Gaussian window standard deviation, pixels (Wang et al. 2004).
SSIM_SIGMA = 1.5
#: Default window size (mirrors CrossfireLossConfig.ssim_window).
SSIM_WINDOW = 7


# ---------------------------------------------------------------- descriptor terms
def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)


def l_pos(f_image: torch.Tensor, f_render: torch.Tensor) -> torch.Tensor:
    """Paper eq. (1): L_pos = 1/n sum_i max(0, 1 - F_I[i] (x) F_R[i]).

    ``(x)`` is the cosine similarity, computed here (inputs need not be unit). Inputs
    (..., N, D) of equal shape; mean over every pixel (and batch). Range [0, 2]:
    0 for parallel descriptors, 2 for opposite ones.
    """
    if f_image.shape != f_render.shape:
        raise ValueError(f"l_pos: shapes differ, {tuple(f_image.shape)} vs {tuple(f_render.shape)}")
    return (1.0 - _cosine(f_image, f_render)).clamp_min(0.0).mean()


def t_lambda(xyz_a: torch.Tensor, xyz_b: torch.Tensor, lam: float) -> torch.Tensor:
    """t_lambda(i, j) = max(0, 1 - lambda ||xyz(i) - xyz(j)||) (paper, after eq. 2):
    the largest cosine similarity tolerated between descriptors of two 3D points; 0
    (the descriptors must be orthogonal or worse) beyond a distance of 1 / lambda."""
    return (1.0 - lam * (xyz_a - xyz_b).norm(dim=-1)).clamp_min(0.0)


def l_neg(
    f_image: torch.Tensor,
    f_render: torch.Tensor,
    xyz: torch.Tensor,
    lam: float,
    permutations: torch.Tensor,
) -> torch.Tensor:
    """Paper eq. (2): L_neg = 1/(mn) sum_{k,i} max(0, F_I[p_k(i)] (x) F_R[i] - t_lambda(p_k(i), i)).

    f_image, f_render: (N, D) descriptors (any norm; cosine inside); xyz: (N, 3) 3D
    points of the rendered pixels; permutations: (m, N) LongTensor, row k = p_k, random
    permutations of 0..N-1 drawn by the caller (:func:`random_permutations`).
    ``xyz`` is detached: "we do not backpropagate the gradient of this loss to the depth
    map" (Sec. 3.2). A pixel paired with itself contributes 0 (t = 1 >= cos).
    """
    xyz = xyz.detach()
    n = f_render.shape[0]
    if f_image.shape != f_render.shape or f_render.dim() != 2:
        raise ValueError(f"l_neg: want two (N, D), got {tuple(f_image.shape)} and {tuple(f_render.shape)}")
    if xyz.shape != (n, 3):
        raise ValueError(f"l_neg: xyz must be ({n}, 3), got {tuple(xyz.shape)}")
    if permutations.dim() != 2 or permutations.shape[1] != n:
        raise ValueError(f"l_neg: permutations must be (m, {n}), got {tuple(permutations.shape)}")
    fi = F.normalize(f_image, dim=-1)
    fr = F.normalize(f_render, dim=-1)
    cos = (fi[permutations] * fr).sum(-1)  # (m, N): F_I[p_k(i)] (x) F_R[i]
    t = t_lambda(xyz[permutations], xyz, lam)  # (m, N): t_lambda(p_k(i), i)
    return (cos - t).clamp_min(0.0).mean()


def random_permutations(
    n: int, m: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """(m, n) LongTensor, each row an independent uniform random permutation of 0..n-1
    (p_k of eq. 2). Drawn on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else (device or "cpu")
    perms = torch.rand(m, n, generator=generator, device=gen_device).argsort(dim=1)
    return perms.to(device) if device is not None else perms


def neg_lambda(cfg: CrossfireLossConfig, scene_extent: float) -> float:
    """lambda of t_lambda from the config: t reaches 0 at
    ``neg_zero_similarity_distance_rel * scene_extent`` (world units)."""
    return 1.0 / (cfg.neg_zero_similarity_distance_rel * float(scene_extent))


# ---------------------------------------------------------------- image terms
def _window_1d(window: int, sigma: float | None, device, dtype) -> torch.Tensor:
    if sigma is None:
        return torch.full((window,), 1.0 / window, device=device, dtype=dtype)
    x = torch.arange(window, device=device, dtype=dtype) - (window - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def dssim(
    img_a: torch.Tensor, img_b: torch.Tensor, window: int = SSIM_WINDOW, sigma: float | None = SSIM_SIGMA
) -> torch.Tensor:
    """Structural dissimilarity L_SSIM = (1 - SSIM) / 2, mean over pixels (Sec. 3.2, [49]).

    SSIM of Wang et al. 2004 (the paper's [49]): local statistics under a
    ``window`` x ``window`` Gaussian window of standard deviation ``sigma`` = 1.5
    (their choice; they use 11 x 11, we default to the config's 7 x 7 for the small
    rendered training images; ``sigma=None`` gives a uniform box window), evaluated at
    every *valid* window position (no padding, as Wang et al.), per channel, with
    C1 = 0.01^2, C2 = 0.03^2 for images in [0, 1]:

        SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))

    Inputs (B, C, H, W) with H, W >= window. Returns a scalar in [0, 1]; 0 iff equal.
    """
    if img_a.shape != img_b.shape or img_a.dim() != 4:
        raise ValueError(f"dssim: want two (B, C, H, W) of equal shape, got {tuple(img_a.shape)}, {tuple(img_b.shape)}")
    c, h, w = img_a.shape[1:]
    if h < window or w < window:
        raise ValueError(f"dssim: image {w}x{h} smaller than the {window}x{window} window")
    g = _window_1d(window, sigma, img_a.device, img_a.dtype)
    kv = g.view(1, 1, window, 1).expand(c, 1, window, 1)
    kh = g.view(1, 1, 1, window).expand(c, 1, 1, window)

    def filt(x: torch.Tensor) -> torch.Tensor:  # separable, valid, per channel
        return F.conv2d(F.conv2d(x, kv, groups=c), kh, groups=c)

    mu_a, mu_b = filt(img_a), filt(img_b)
    var_a = (filt(img_a * img_a) - mu_a**2).clamp_min(0.0)
    var_b = (filt(img_b * img_b) - mu_b**2).clamp_min(0.0)
    cov = filt(img_a * img_b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    )
    return ((1.0 - ssim) / 2.0).clamp(0.0, 1.0).mean()


def sample_patch_origins(
    h: int, w: int, patch_size: int, num_patches: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """(num_patches, 2) LongTensor of uniformly random top-left corners (row, col) of
    patch_size x patch_size patches lying fully inside an h x w map."""
    if h < patch_size or w < patch_size:
        raise ValueError(f"depth map {w}x{h} smaller than the {patch_size}x{patch_size} TV patch")
    gen_device = generator.device if generator is not None else (device or "cpu")
    rows = torch.randint(0, h - patch_size + 1, (num_patches,), generator=generator, device=gen_device)
    cols = torch.randint(0, w - patch_size + 1, (num_patches,), generator=generator, device=gen_device)
    origins = torch.stack([rows, cols], dim=1)
    return origins.to(device) if device is not None else origins


def depth_tv(
    depth: torch.Tensor,
    patch_size: int = 5,
    num_patches: int = 64,
    generator: torch.Generator | None = None,
    origins: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth total variation on random patches, L_TV (Sec. 3.2: "depth total variation of
    randomly sampled 5 x 5 image patches [29]").

    The form of the paper's reference [29] (RegNeRF's depth smoothness loss, their
    ``compute_tv_norm(..., 'l2')`` then mean): *squared* differences, for every patch
    position (r, c) with r, c < patch_size - 1,

        (d[r, c] - d[r, c + 1])^2 + (d[r, c] - d[r + 1, c])^2,

    averaged over the (patch_size - 1)^2 positions and the patches.

    depth: (H, W). origins: (num_patches, 2) (row, col) top-left corners, or None to
    draw them (uniformly, with ``generator``). Returns (tv, origins).
    """
    if depth.dim() != 2:
        raise ValueError(f"depth_tv expects an (H, W) depth map, got {tuple(depth.shape)}")
    h, w = depth.shape
    if origins is None:
        origins = sample_patch_origins(h, w, patch_size, num_patches, generator, depth.device)
    origins = origins.to(depth.device)
    if origins.dim() != 2 or origins.shape[1] != 2:
        raise ValueError(f"depth_tv: origins must be (P, 2) (row, col), got {tuple(origins.shape)}")
    if (origins < 0).any() or (origins[:, 0] > h - patch_size).any() or (origins[:, 1] > w - patch_size).any():
        raise ValueError("depth_tv: a patch lies outside the depth map")
    k = torch.arange(patch_size, device=depth.device)
    rows = origins[:, 0, None] + k  # (P, s)
    cols = origins[:, 1, None] + k
    patches = depth[rows[:, :, None], cols[:, None, :]]  # (P, s, s)
    v00 = patches[:, :-1, :-1]
    v01 = patches[:, :-1, 1:]
    v10 = patches[:, 1:, :-1]
    tv = ((v00 - v01) ** 2 + (v00 - v10) ** 2).mean()
    return tv, origins


# ---------------------------------------------------------------- eq. (3)
def crossfire_loss(
    cfg: CrossfireLossConfig,
    rgb_render: torch.Tensor,
    rgb_image: torch.Tensor,
    depth: torch.Tensor,
    hw: tuple[int, int],
    f_image: torch.Tensor | None = None,
    f_render: torch.Tensor | None = None,
    xyz: torch.Tensor | None = None,
    lam: float | None = None,
    permutations: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    tv_origins: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Paper eq. (3): L = L_MSE + lambda1 L_SSIM + lambda2 L_TV + L_pos + L_neg.

    One whole (downsampled) training view of h x w = ``hw`` pixels, as per-pixel rows in
    row-major order (the renderer's layout): rgb_render, rgb_image (N, 3) in [0, 1];
    depth (N,); f_image, f_render (N, D); xyz (N, 3) the rendered world points; ``lam``
    of t_lambda (:func:`neg_lambda`). Without descriptors (f_image None) only the
    photometric/geometric terms are computed (e.g. before descriptor training starts).
    ``permutations`` (cfg.neg_permutations, N) and ``tv_origins`` are drawn with
    ``generator`` when not given.

    Returns the *weighted* terms {"mse", "dssim", "tv"[, "pos", "neg"]} and their sum
    "total" (lambda1 = cfg.lambda_dssim, lambda2 = cfg.lambda_tv, cfg.weight_pos,
    cfg.weight_neg).
    """
    h, w = int(hw[0]), int(hw[1])
    n = h * w
    if rgb_render.shape != (n, 3) or rgb_image.shape != (n, 3):
        raise ValueError(
            f"crossfire_loss: rgb must be ({n}, 3) for hw={hw}, got {tuple(rgb_render.shape)}, {tuple(rgb_image.shape)}"
        )
    if depth.numel() != n:
        raise ValueError(f"crossfire_loss: depth must have {n} values, got {tuple(depth.shape)}")
    terms: dict[str, torch.Tensor] = {}
    terms["mse"] = F.mse_loss(rgb_render, rgb_image)
    to_img = lambda x: x.reshape(h, w, 3).permute(2, 0, 1)[None]
    terms["dssim"] = cfg.lambda_dssim * dssim(to_img(rgb_render), to_img(rgb_image), window=cfg.ssim_window)
    tv, _ = depth_tv(depth.reshape(h, w), cfg.tv_patch_size, cfg.tv_patches, generator, tv_origins)
    terms["tv"] = cfg.lambda_tv * tv
    if f_image is not None or f_render is not None:
        if f_image is None or f_render is None or xyz is None or lam is None:
            raise ValueError("crossfire_loss: descriptor terms need f_image, f_render, xyz and lam")
        terms["pos"] = cfg.weight_pos * l_pos(f_image, f_render)
        if permutations is None:
            permutations = random_permutations(n, cfg.neg_permutations, generator, f_render.device)
        terms["neg"] = cfg.weight_neg * l_neg(f_image, f_render, xyz, lam, permutations)
    terms["total"] = sum(terms.values())
    return terms


__all__ = [
    "SSIM_C1",
    "SSIM_C2",
    "crossfire_loss",
    "depth_tv",
    "dssim",
    "l_neg",
    "l_pos",
    "neg_lambda",
    "random_permutations",
    "sample_patch_origins",
    "t_lambda",
]
