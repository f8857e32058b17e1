"""Materials of the furnished rooms: what a surface looks like, painted into its tile.

Real rooms are mostly plain: painted walls and ceilings with barely any texture, wood
with a faint grain, fabric, dark screens; detail sits in a few places (book spines,
pictures, the window, door frames, cabinet doors). Each :class:`Material` names a kind,
a base colour and, for walls and floors, decorations placed in the tile's (u, v)
coordinates (metres from the surface's minimum corner, see :mod:`.primitives`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .textures import Painter, fbm, paint_tiled_floor, soft

#: Relative brightness noise of a painted surface (wall paint, ceiling).
PAINT_NOISE = 0.012
#: Wood: grain stretch (texels of noise along the grain per texel across), grain and
#: per-board brightness variation, board joint width and darkening.
WOOD_GRAIN_STRETCH = 12
WOOD_GRAIN_AMPLITUDE = 0.07
WOOD_BOARD_JITTER = 0.06
WOOD_JOINT_M = 0.004
WOOD_JOINT_SHADE = 0.7
#: Fabric and carpet: fine low-contrast noise.
FABRIC_NOISE = 0.05
FABRIC_NOISE_SCALE_M = (0.03, 0.012)
#: Book shelves: board thickness, shelf pitch, book widths and heights (fraction of
#: the shelf gap), the dark back, the chance of a gap instead of a book.
SHELF_BOARD_M = 0.025
SHELF_PITCH_M = (0.3, 0.4)
BOOK_WIDTH_M = (0.018, 0.05)
BOOK_HEIGHT_FRACTION = (0.6, 0.95)
SHELF_BACK_VALUE = 0.12
BOOK_GAP_PROBABILITY = 0.08
BOOK_BAND_PROBABILITY = 0.3
#: Cabinet doors: outline width and darkening, handle size.
DOOR_LINE_M = 0.006
DOOR_LINE_SHADE = 0.55
HANDLE_M = (0.015, 0.09)
#: Window: frame and mullion width (metres).
WINDOW_FRAME_M = 0.06
#: Picture frames: band width (metres).
PICTURE_FRAME_M = (0.015, 0.04)
#: Interior doors: casing width, panel inset.
DOOR_CASING_M = 0.07
DOOR_PANEL_INSET_M = 0.12
#: Photos and paintings: colours mixed by noise at these scales (metres), and blobs.
PHOTO_NOISE_SCALES_M = (0.12, 0.05, 0.02)
PHOTO_BLOB_DENSITY = 60.0
#: Probability that a picture is a photo (non-repetitive detail) rather than a graphic.
PHOTO_PROBABILITY = 0.7
#: Curtains: fold period (metres) and shading depth.
CURTAIN_FOLD_M = (0.08, 0.14)
CURTAIN_SHADE = 0.25
#: Wall clock: rim width and tick length as fractions of the radius.
CLOCK_RIM = 0.1
CLOCK_TICK = 0.15
#: Foliage: leaf blob density (per square metre) and radii.
LEAF_DENSITY = 900.0
LEAF_RADIUS_M = (0.012, 0.035)


@dataclass(frozen=True)
class Decor:
    """A decoration on a wall or floor tile: kind and rectangle (u0, v0, width, height)."""

    kind: str  # "picture", "window", "door", "switch", "band", "rug"
    u0: float
    v0: float
    w: float
    h: float
    color: tuple[float, float, float] = (0.9, 0.9, 0.9)


@dataclass(frozen=True)
class Material:
    kind: str  # see PAINTERS
    color: tuple[float, float, float] = (0.8, 0.8, 0.8)
    decor: tuple[Decor, ...] = ()
    #: wood: grain/boards along v instead of u; floor: board width
    along_v: bool = False
    board_m: float = 0.0


def _rect_alpha(p: Painter, u0: float, v0: float, w: float, h: float):
    sl = p.region(u0, v0, u0 + w, v0 + h)
    if sl is None:
        return None, None
    U, V = p.U[sl], p.V[sl]
    inside = np.minimum(np.minimum(U - u0, u0 + w - U), np.minimum(V - v0, v0 + h - V))
    return sl, inside


def _fill_rect(p: Painter, u0, v0, w, h, color, inset: float = 0.0) -> None:
    sl, inside = _rect_alpha(p, u0, v0, w, h)
    if sl is not None:
        p.blend(sl, soft(inside - inset, p.c.edge_softness_m), np.asarray(color, np.float32))


def paint_plain(p: Painter, m: Material) -> None:
    p.plain(np.asarray(m.color, np.float32), PAINT_NOISE)


def paint_wood(p: Painter, m: Material) -> None:
    th, tw = p.tile.th, p.tile.tw
    import cv2

    if m.along_v:  # grain along v: noise stretched vertically
        n = fbm(p.rng, max(2, th // WOOD_GRAIN_STRETCH), tw, p.c, FABRIC_NOISE_SCALE_M, (1.0, 0.5))
        n = cv2.resize(n, (tw, th), interpolation=cv2.INTER_LINEAR)
    else:
        n = fbm(p.rng, th, max(2, tw // WOOD_GRAIN_STRETCH), p.c, FABRIC_NOISE_SCALE_M, (1.0, 0.5))
        n = cv2.resize(n, (tw, th), interpolation=cv2.INTER_LINEAR)
    shade = 1.0 + WOOD_GRAIN_AMPLITUDE * n
    if m.board_m > 0:  # floor boards: joints and a shade per board
        across = p.U if m.along_v else p.V
        board = np.floor(across / m.board_m).astype(np.int64)
        jitter = p.rng.uniform(-WOOD_BOARD_JITTER, WOOD_BOARD_JITTER, size=int(board.max()) + 1)
        shade = shade * (1.0 + jitter[board])
        f = across / m.board_m - board
        joint = soft(WOOD_JOINT_M / 2 - np.minimum(f, 1 - f) * m.board_m, p.c.edge_softness_m / 3)
        shade = shade * (1.0 - (1.0 - WOOD_JOINT_SHADE) * joint)
    p.img[:] = np.asarray(m.color, np.float32) * shade[..., None].astype(np.float32)


def paint_fabric(p: Painter, m: Material) -> None:
    n = fbm(p.rng, p.tile.th, p.tile.tw, p.c, FABRIC_NOISE_SCALE_M, (1.0, 0.6))
    p.img[:] = np.asarray(m.color, np.float32) * (1.0 + FABRIC_NOISE * n)[..., None]


def paint_books(p: Painter, m: Material) -> None:
    """A book shelf's front: boards (the material's colour) and rows of book spines."""
    r = p.rng
    wood = np.asarray(m.color, np.float32)
    p.img[:] = SHELF_BACK_VALUE * wood / max(float(wood.max()), 1e-6)
    W, H = p.tile.width_m, p.tile.height_m
    z = 0.0
    while z < H:
        _fill_rect(p, 0.0, z, W, SHELF_BOARD_M, wood)
        gap = float(r.uniform(*SHELF_PITCH_M))
        top = min(z + SHELF_BOARD_M + gap, H)
        u = SHELF_BOARD_M
        while u < W - SHELF_BOARD_M:
            bw = float(r.uniform(*BOOK_WIDTH_M))
            if r.random() > BOOK_GAP_PROBABILITY and u + bw < W - SHELF_BOARD_M:
                bh = (top - z - SHELF_BOARD_M) * float(r.uniform(*BOOK_HEIGHT_FRACTION))
                col = p.accent_color() * np.float32(r.uniform(0.55, 0.9))
                _fill_rect(p, u, z + SHELF_BOARD_M, bw, bh, col)
                if r.random() < BOOK_BAND_PROBABILITY:
                    band_v = z + SHELF_BOARD_M + bh * float(r.uniform(0.55, 0.8))
                    _fill_rect(p, u, band_v, bw, bh * 0.08, np.clip(col * 1.8, 0, 1))
            u += bw
        z = top
    # side boards
    _fill_rect(p, 0.0, 0.0, SHELF_BOARD_M, H, wood)
    _fill_rect(p, W - SHELF_BOARD_M, 0.0, SHELF_BOARD_M, H, wood)


def paint_doors(p: Painter, m: Material) -> None:
    """Cabinet / wardrobe front: plain doors with thin gaps and handles."""
    paint_plain(p, m)
    W, H = p.tile.width_m, p.tile.height_m
    n = max(1, int(round(W / float(p.rng.uniform(0.4, 0.6)))))
    dark = np.asarray(m.color, np.float32) * DOOR_LINE_SHADE
    for k in range(n + 1):
        _fill_rect(p, k * W / n - DOOR_LINE_M / 2, 0.0, DOOR_LINE_M, H, dark)
    _fill_rect(p, 0.0, H - DOOR_LINE_M, W, DOOR_LINE_M, dark)
    _fill_rect(p, 0.0, 0.0, W, DOOR_LINE_M, dark)
    hw, hh = HANDLE_M
    for k in range(n):
        side = (k + 0.5) * W / n + (0.35 if k % 2 else -0.35) * W / n
        _fill_rect(p, side - hw / 2, H * 0.5 - hh / 2, hw, hh, np.full(3, 0.2, np.float32))


def paint_screen(p: Painter, m: Material) -> None:
    n = fbm(p.rng, p.tile.th, p.tile.tw, p.c, p.c.noise_scales_m[:1], (1.0,))
    p.img[:] = np.asarray(m.color, np.float32) * (1.0 + 0.15 * n)[..., None]


def paint_foliage(p: Painter, m: Material) -> None:
    base = np.asarray(m.color, np.float32)
    p.img[:] = base * 0.6
    r = p.rng
    area = p.tile.width_m * p.tile.height_m
    for _ in range(int(r.poisson(LEAF_DENSITY * area))):
        ra = float(r.uniform(*LEAF_RADIUS_M))
        cu, cv = r.uniform(0, p.tile.width_m), r.uniform(0, p.tile.height_m)
        sl = p.region(cu - ra, cv - ra, cu + ra, cv + ra)
        if sl is None:
            continue
        d = np.hypot(p.U[sl] - cu, (p.V[sl] - cv) * 1.8)
        p.blend(sl, soft(ra - d, p.c.edge_softness_m), base * np.float32(r.uniform(0.6, 1.5)))


def paint_floor(p: Painter, m: Material) -> None:
    if m.kind == "tiles":
        paint_tiled_floor(p)
    elif m.kind == "carpet":
        paint_fabric(p, m)
    else:
        paint_wood(p, m)
    _paint_decor(p, m.decor)


def paint_wall(p: Painter, m: Material) -> None:
    paint_plain(p, m)
    _paint_decor(p, m.decor)


def _paint_decor(p: Painter, decor: tuple[Decor, ...]) -> None:
    r = p.rng
    for d in decor:
        col = np.asarray(d.color, np.float32)
        if d.kind in ("band", "switch"):
            _fill_rect(p, d.u0, d.v0, d.w, d.h, col)
            if d.kind == "switch":
                _fill_rect(p, d.u0 + d.w * 0.35, d.v0 + d.h * 0.3, d.w * 0.3, d.h * 0.4, col * 0.8)
        elif d.kind == "rug":
            p.poster(d.u0, d.v0, d.w, d.h)
        elif d.kind == "picture":
            band = float(r.uniform(*PICTURE_FRAME_M))
            _fill_rect(p, d.u0, d.v0, d.w, d.h, col)
            if r.random() < PHOTO_PROBABILITY:
                _photo(p, d.u0 + band, d.v0 + band, d.w - 2 * band, d.h - 2 * band)
            else:
                p.poster(d.u0 + band, d.v0 + band, d.w - 2 * band, d.h - 2 * band)
        elif d.kind == "curtain":
            _curtain(p, d)
        elif d.kind == "clock":
            _clock(p, d)
        elif d.kind == "door":
            _fill_rect(p, d.u0 - DOOR_CASING_M, d.v0, d.w + 2 * DOOR_CASING_M, d.h + DOOR_CASING_M, col)
            panel = col * np.float32(0.93)
            _fill_rect(p, d.u0, d.v0, d.w, d.h, panel)
            i = DOOR_PANEL_INSET_M
            for v0, h in ((d.v0 + i, d.h * 0.45 - i), (d.v0 + d.h * 0.55, d.h * 0.45 - i)):
                _fill_rect(p, d.u0 + i, v0, d.w - 2 * i, h, col * np.float32(0.85))
                _fill_rect(p, d.u0 + i + DOOR_LINE_M, v0 + DOOR_LINE_M, d.w - 2 * i - 2 * DOOR_LINE_M,
                           h - 2 * DOOR_LINE_M, panel)
            hw, hh = HANDLE_M
            _fill_rect(p, d.u0 + d.w - 0.09, d.v0 + 1.0, hh, hw * 1.5, np.full(3, 0.25, np.float32))
        elif d.kind == "window":
            _paint_window(p, d)
        else:
            raise ValueError(f"unknown decoration kind {d.kind!r}")


def _photo(p: Painter, u0: float, v0: float, w: float, h: float) -> None:
    """A photo or painting: three colours mixed by noise, with blobs of a fourth."""
    sl, inside = _rect_alpha(p, u0, v0, w, h)
    if sl is None:
        return
    r, c = p.rng, p.c
    th, tw = inside.shape
    cols = [p.accent_color() for _ in range(4)]
    a = np.clip(0.5 + 0.8 * fbm(r, th, tw, c, PHOTO_NOISE_SCALES_M, (1.0, 0.6, 0.3)), 0, 1)[..., None]
    b = np.clip(0.5 + 0.8 * fbm(r, th, tw, c, PHOTO_NOISE_SCALES_M, (1.0, 0.6, 0.3)), 0, 1)[..., None]
    img = (cols[0] * (1 - a) + cols[1] * a) * (1 - b) + cols[2] * b
    U, V = p.U[sl], p.V[sl]
    for _ in range(int(r.poisson(PHOTO_BLOB_DENSITY * w * h))):
        cu, cv, rad = r.uniform(u0, u0 + w), r.uniform(v0, v0 + h), r.uniform(0.01, 0.06)
        m = soft(rad - np.hypot(U - cu, V - cv), c.edge_softness_m)[..., None]
        img = img * (1 - m) + cols[3] * np.float32(r.uniform(0.5, 1.2)) * m
    alpha = soft(inside, c.edge_softness_m)[..., None]
    p.img[sl] = p.img[sl] * (1 - alpha) + np.clip(img, 0, 1) * alpha


def _curtain(p: Painter, d: Decor) -> None:
    """A curtain panel: fabric with vertical folds (shading varies across them)."""
    sl, inside = _rect_alpha(p, d.u0, d.v0, d.w, d.h)
    if sl is None:
        return
    r = p.rng
    period = float(r.uniform(*CURTAIN_FOLD_M))
    phase = p.U[sl] / period * 2 * math.pi + fbm(r, *inside.shape, p.c, (0.3,), (1.0,)) * 0.8
    shade = 1.0 - CURTAIN_SHADE * (0.5 + 0.5 * np.sin(phase))
    n = fbm(r, *inside.shape, p.c, FABRIC_NOISE_SCALE_M, (1.0, 0.6))
    img = np.asarray(d.color, np.float32) * (shade * (1.0 + FABRIC_NOISE * n))[..., None]
    alpha = soft(inside, p.c.edge_softness_m)[..., None]
    p.img[sl] = p.img[sl] * (1 - alpha) + img * alpha


def _clock(p: Painter, d: Decor) -> None:
    """A round wall clock: rim, face, twelve ticks and two hands."""
    rad = d.w / 2
    cu, cv = d.u0 + rad, d.v0 + rad
    sl = p.region(d.u0, d.v0, d.u0 + d.w, d.v0 + d.w)
    if sl is None:
        return
    U, V = p.U[sl] - cu, p.V[sl] - cv
    dist = np.hypot(U, V)
    ang = np.arctan2(V, U)
    e = p.c.edge_softness_m
    rim = np.asarray(d.color, np.float32)
    p.blend(sl, soft(rad - dist, e), rim)
    p.blend(sl, soft(rad * (1 - CLOCK_RIM) - dist, e), np.full(3, 0.95, np.float32))
    tick = (np.abs(((ang / (2 * math.pi / 12)) + 0.5) % 1.0 - 0.5) < 0.08) & (dist > rad * (1 - CLOCK_RIM - CLOCK_TICK))
    p.blend(sl, (tick & (dist < rad * (1 - CLOCK_RIM))).astype(np.float32), np.full(3, 0.1, np.float32))
    for hand_ang, length in ((float(p.rng.uniform(0, 2 * math.pi)), 0.5), (float(p.rng.uniform(0, 2 * math.pi)), 0.75)):
        along = U * math.cos(hand_ang) + V * math.sin(hand_ang)
        across = np.abs(-U * math.sin(hand_ang) + V * math.cos(hand_ang))
        hand = (along > 0) & (along < rad * length) & (across < rad * 0.04)
        p.blend(sl, hand.astype(np.float32), np.full(3, 0.1, np.float32))


def _paint_window(p: Painter, d: Decor) -> None:
    """Glass panes (the outside shows through) in a frame with a cross of mullions,
    over a sill."""
    col = np.asarray(d.color, np.float32)
    f = WINDOW_FRAME_M
    _fill_rect(p, d.u0 - f, d.v0 - 2 * f, d.w + 2 * f, 2 * f, col * np.float32(0.95))  # sill
    _fill_rect(p, d.u0 - f / 2, d.v0 - f / 2, d.w + f, d.h + f, col)
    cols = max(1, int(math.ceil(d.w / 0.8)))
    pane_w = (d.w - (cols + 1) * f) / cols
    mid = d.v0 + d.h * 0.62
    for k in range(cols):
        u0 = d.u0 + f + k * (pane_w + f)
        for v0, v1 in ((d.v0 + f, mid - f / 2), (mid + f / 2, d.v0 + d.h - f)):
            sl, inside = _rect_alpha(p, u0, v0, pane_w, v1 - v0)
            if sl is not None:
                a = soft(inside, p.c.edge_softness_m)
                p.glass[sl] = np.maximum(p.glass[sl], a)


PAINTERS = {
    "paint": paint_plain,
    "wall": paint_wall,
    "wood": paint_wood,
    "fabric": paint_fabric,
    "books": paint_books,
    "doors": paint_doors,
    "screen": paint_screen,
    "foliage": paint_foliage,
    "floor_wood": paint_floor,
    "carpet": paint_floor,
    "tiles": paint_floor,
}


def paint_material(p: Painter, m: Material) -> None:
    try:
        painter = PAINTERS[m.kind]
    except KeyError:
        raise ValueError(f"unknown material {m.kind!r}; known: {sorted(PAINTERS)}") from None
    painter(p, m)
