"""Procedural textures: value noise, a painter of tile albedo (noise, patches, blobs,
patterned posters, floors) and the texture atlas all tiles are packed into.

The atlas has four channels: albedo RGB and the fraction of the texel that is window
glass, through which the renderer shows the outside view instead of a lit surface.
"""

from __future__ import annotations

import colorsys
import math
from typing import Callable

import numpy as np

from .primitives import Tile
from .style import STREAM_TEXTURES, SceneStyle

#: Width of the texture atlas in texels (tiles are shelf-packed into rows).
ATLAS_WIDTH = 4096
#: Atlas channels: albedo R, G, B and the glass fraction.
ATLAS_CHANNELS = 4
#: Value noise: random lattice cells added around a tile, and the offset (in cells)
#: of the tile inside the upsampled lattice (away from the interpolation border).
NOISE_GRID_PAD_CELLS = 4
NOISE_OFFSET_CELLS = 1.5
#: Guards the normalization of noise by its standard deviation.
NOISE_STD_EPS = 1e-6
#: Poster patterns: 0 stripes, 1 rings, 2 checker, 3 frame, 4 two-tone noise.
POSTER_KINDS = 5
#: Centre of a ring poster, as a fraction of the poster size (random in this range).
POSTER_RING_CENTER = (0.3, 0.7)
#: Band width of a frame poster, as a fraction of its shorter side.
POSTER_FRAME_BAND = (0.12, 0.25)
#: Two-tone noise poster: signed distance (metres) per unit of noise std at the
#: boundary, i.e. how sharp the two-tone transition is.
TWO_TONE_SHARPNESS_M = 0.05


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def soft(sd: np.ndarray, softness: float) -> np.ndarray:
    """Coverage from a signed distance in metres (positive inside), ramp of ``softness``."""
    return np.clip(0.5 + sd / softness, 0.0, 1.0).astype(np.float32)


def _value_noise(rng: np.random.Generator, th: int, tw: int, scale_texels: float) -> np.ndarray:
    """Smooth noise in [-0.5, 0.5]-ish with features of ``scale_texels`` texels."""
    import cv2

    scale_texels = max(scale_texels, 1.0)
    gh = math.ceil(th / scale_texels) + NOISE_GRID_PAD_CELLS
    gw = math.ceil(tw / scale_texels) + NOISE_GRID_PAD_CELLS
    grid = rng.random((gh, gw)).astype(np.float32) - 0.5
    up = cv2.resize(grid, (round(gw * scale_texels), round(gh * scale_texels)), interpolation=cv2.INTER_CUBIC)
    off = round(NOISE_OFFSET_CELLS * scale_texels)
    return up[off : off + th, off : off + tw]


def fbm(
    rng: np.random.Generator, th: int, tw: int, config: SceneStyle, scales=None, amps=None
) -> np.ndarray:
    """Multi-octave value noise normalized to zero mean, unit standard deviation."""
    scales = config.noise_scales_m if scales is None else scales
    amps = config.noise_amplitudes if amps is None else amps
    total = np.zeros((th, tw), dtype=np.float32)
    for s, a in zip(scales, amps):
        total += a * _value_noise(rng, th, tw, s / config.texel_m)
    return (total - total.mean()) / (total.std() + NOISE_STD_EPS)


def _uv_grid(tile: Tile, texel: float) -> tuple[np.ndarray, np.ndarray]:
    u = (np.arange(tile.tw, dtype=np.float32) + 0.5) * texel
    v = (np.arange(tile.th, dtype=np.float32) + 0.5) * texel
    return np.meshgrid(u, v)


class Painter:
    """Paints one tile: noise base, patches, blobs and patterned posters."""

    def __init__(self, config: SceneStyle, tile: Tile, rng: np.random.Generator, hue: float):
        self.c, self.tile, self.rng, self.hue = config, tile, rng, hue
        self.U, self.V = _uv_grid(tile, config.texel_m)
        self.img = np.zeros((tile.th, tile.tw, 3), dtype=np.float32)
        #: fraction of each texel that is window glass (see render.py: the outside shows through)
        self.glass = np.zeros((tile.th, tile.tw), dtype=np.float32)

    def base_color(self, hue_shift: float = 0.0, value: float | None = None) -> np.ndarray:
        r = self.rng
        sat = r.uniform(*self.c.base_saturation)
        val = r.uniform(*self.c.base_value) if value is None else value
        return hsv(self.hue + hue_shift, sat, val)

    def accent_color(self) -> np.ndarray:
        r = self.rng
        return hsv(r.random(), r.uniform(*self.c.accent_saturation), r.uniform(*self.c.accent_value))

    def noisy_base(self, contrast: float, with_patches: bool = True) -> None:
        c, r = self.c, self.rng
        v0 = r.uniform(*c.base_value)
        # the second base colour is clearly lighter or darker than the first
        dv = r.uniform(*c.base_value_step) * (1 if v0 < np.mean(c.base_value) else -1)
        c0 = self.base_color(value=v0)
        c1 = self.base_color(
            r.uniform(-c.base_hue_step, c.base_hue_step), value=float(np.clip(v0 + dv, 0, 1))
        )
        w = np.clip(0.5 + contrast * fbm(r, self.tile.th, self.tile.tw, c), 0.0, 1.0)[..., None]
        self.img[:] = c0 * (1 - w) + c1 * w
        if with_patches:
            c2 = self.base_color(r.uniform(*c.patch_hue_offset))
            n = fbm(r, self.tile.th, self.tile.tw, c, c.noise_scales_m[:2], c.noise_amplitudes[:2])
            thr = float(np.quantile(n, 1.0 - c.patch_fraction)) if n.size else 0.0
            m = np.clip(0.5 + (n - thr) / c.patch_softness, 0.0, 1.0)[..., None]
            self.img[:] = self.img * (1 - m) + c2 * m
        fine = fbm(r, self.tile.th, self.tile.tw, c, c.noise_scales_m[1:], c.noise_amplitudes[1:])
        self.img *= 1.0 + c.brightness_noise * fine[..., None]

    def plain(self, color: np.ndarray, amplitude: float) -> None:
        n = fbm(self.rng, self.tile.th, self.tile.tw, self.c, self.c.noise_scales_m[:1], (1.0,))
        self.img[:] = color * (1.0 + amplitude * n[..., None])

    def region(self, u0: float, v0: float, u1: float, v1: float):
        t = self.c.texel_m
        j0, j1 = max(0, int(u0 / t) - 1), min(self.tile.tw, math.ceil(u1 / t) + 1)
        i0, i1 = max(0, int(v0 / t) - 1), min(self.tile.th, math.ceil(v1 / t) + 1)
        if j0 >= j1 or i0 >= i1:
            return None
        return (slice(i0, i1), slice(j0, j1))

    def blend(self, sl, alpha: np.ndarray, color: np.ndarray) -> None:
        a = alpha[..., None] if alpha.ndim == 2 else alpha
        self.img[sl] = self.img[sl] * (1 - a) + color * a

    def blobs(self, density: float, allowed_u: tuple[float, float] | None = None) -> None:
        c, r = self.c, self.rng
        area = self.tile.width_m * self.tile.height_m
        umin, umax = allowed_u if allowed_u else (0.0, self.tile.width_m)
        for _ in range(int(r.poisson(density * area))):
            ra, rb = r.uniform(*c.blob_radius_m, size=2)
            cu, cv = r.uniform(umin, umax), r.uniform(0.0, self.tile.height_m)
            col = self.accent_color()
            if allowed_u and not (umin + max(ra, rb) <= cu <= umax - max(ra, rb)):
                continue
            sl = self.region(cu - ra, cv - rb, cu + ra, cv + rb)
            if sl is None:
                continue
            du, dv = (self.U[sl] - cu) / ra, (self.V[sl] - cv) / rb
            sd = (1.0 - np.sqrt(du * du + dv * dv)) * min(ra, rb)
            self.blend(sl, soft(sd, c.edge_softness_m), col)

    def poster(self, u0: float, v0: float, pw: float, ph: float) -> None:
        c, r = self.c, self.rng
        sl = self.region(u0, v0, u0 + pw, v0 + ph)
        if sl is None:
            return
        U, V = self.U[sl], self.V[sl]
        inside = np.minimum(np.minimum(U - u0, u0 + pw - U), np.minimum(V - v0, v0 + ph - V))
        alpha = soft(inside, c.edge_softness_m)
        ca, cb = self.accent_color(), self.accent_color()
        kind = int(r.integers(POSTER_KINDS))
        period = r.uniform(*c.pattern_period_m)
        if kind == 0:  # stripes at a random angle
            ang = r.uniform(0, math.pi)
            coord = U * math.cos(ang) + V * math.sin(ang)
            f = coord / period - np.floor(coord / period)
            pat = soft((0.25 - np.abs(f - 0.5)) * period, c.edge_softness_m)
        elif kind == 1:  # concentric rings
            rr = np.hypot(
                U - (u0 + pw * r.uniform(*POSTER_RING_CENTER)), V - (v0 + ph * r.uniform(*POSTER_RING_CENTER))
            )
            f = rr / period - np.floor(rr / period)
            pat = soft((0.25 - np.abs(f - 0.5)) * period, c.edge_softness_m)
        elif kind == 2:  # coarse checker
            fx = U / period - np.floor(U / period)
            fy = V / period - np.floor(V / period)
            a = soft((0.25 - np.abs(fx - 0.5)) * period, c.edge_softness_m)
            b = soft((0.25 - np.abs(fy - 0.5)) * period, c.edge_softness_m)
            pat = a * b + (1 - a) * (1 - b)
        elif kind == 3:  # frame: border band + inner panel
            band = min(pw, ph) * r.uniform(*POSTER_FRAME_BAND)
            pat = soft(inside - band, c.edge_softness_m)
        else:  # two-tone noise
            n = fbm(r, U.shape[0], U.shape[1], c, c.noise_scales_m[1:], c.noise_amplitudes[1:])
            pat = soft(n * TWO_TONE_SHARPNESS_M, c.edge_softness_m)
        col = ca * (1 - pat[..., None]) + cb * pat[..., None]
        self.img[sl] = self.img[sl] * (1 - alpha[..., None]) + col * alpha[..., None]

    def posters(self, density: float, allowed_u: tuple[float, float] | None = None, size=None) -> None:
        c, r = self.c, self.rng
        size = size or c.poster_size_m
        umin, umax = allowed_u if allowed_u else (0.0, self.tile.width_m)
        for _ in range(int(r.poisson(density * self.tile.width_m * self.tile.height_m))):
            pw, ph = r.uniform(*size, size=2)
            if umax - umin <= pw or self.tile.height_m <= ph:
                continue
            self.poster(r.uniform(umin, umax - pw), r.uniform(0.0, self.tile.height_m - ph), pw, ph)


def paint_tiled_floor(p: Painter) -> None:
    c, r = p.c, p.rng
    base = p.base_color()
    grout = p.base_color(0.5) * c.floor_grout_value
    t = c.floor_tile_m
    iu, iv = np.floor(p.U / t).astype(np.int64), np.floor(p.V / t).astype(np.int64)
    jitter = r.uniform(-c.floor_tile_jitter, c.floor_tile_jitter, size=(iv.max() + 1, iu.max() + 1)).astype(
        np.float32
    )
    n = fbm(r, p.tile.th, p.tile.tw, c, (c.floor_noise_scale,), (1.0,))
    shade = 1.0 + jitter[iv, iu] + c.floor_tile_jitter * n
    p.img[:] = base * shade[..., None]
    fu, fv = p.U / t - iu, p.V / t - iv
    dist = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * t
    p.blend((slice(None), slice(None)), soft(c.floor_grout_m / 2 - dist, c.edge_softness_m), grout)
    for _ in range(c.floor_rugs):
        rw, rh = r.uniform(*c.rug_size_m, size=2)
        if rw < p.tile.width_m and rh < p.tile.height_m:
            p.poster(r.uniform(0, p.tile.width_m - rw), r.uniform(0, p.tile.height_m - rh), rw, rh)


def build_atlas(style: SceneStyle, tiles: list[Tile], paint: Callable[[int, Painter], None]) -> np.ndarray:
    """Pack the tiles into one atlas (setting their positions) and paint tile i with
    ``paint(i, painter)``; returns (Ha, ATLAS_WIDTH, ATLAS_CHANNELS) float32.

    Each tile's painter draws from its own random stream and gets a hue from the
    golden-ratio sequence, so surfaces have distinct palettes and a tile's texture does
    not depend on how many other tiles there are.
    """
    texel = style.texel_m
    for tile in tiles:
        tile.tw = max(2, math.ceil(tile.width_m / texel))
        tile.th = max(2, math.ceil(tile.height_m / texel))
    # shelf packing, tallest first (stable order => deterministic)
    order = sorted(range(len(tiles)), key=lambda i: (-tiles[i].th, i))
    x = y = row_h = 0
    for i in order:
        tile = tiles[i]
        if tile.tw > ATLAS_WIDTH:
            raise ValueError(f"procedural scene: a surface is wider than the atlas ({tile.tw} texels)")
        if x + tile.tw > ATLAS_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        tile.x0, tile.y0 = x, y
        x += tile.tw
        row_h = max(row_h, tile.th)
    atlas = np.zeros((y + row_h, ATLAS_WIDTH, ATLAS_CHANNELS), dtype=np.float32)

    golden = (math.sqrt(5.0) - 1.0) / 2.0
    hue0 = np.random.default_rng([style.seed, STREAM_TEXTURES]).random()
    for i, tile in enumerate(tiles):
        rng = np.random.default_rng([style.seed, STREAM_TEXTURES, i])
        hue = hue0 + i * golden + rng.uniform(-style.surface_hue_jitter, style.surface_hue_jitter)
        p = Painter(style, tile, rng, hue)
        paint(i, p)
        rows, cols = slice(tile.y0, tile.y0 + tile.th), slice(tile.x0, tile.x0 + tile.tw)
        atlas[rows, cols, :3] = np.clip(p.img, 0.0, 1.0)
        atlas[rows, cols, 3] = np.clip(p.glass, 0.0, 1.0)
    return atlas
