"""Furnishing a room: furniture along the walls, a coffee table in the middle, and the
wall decorations (window, door, pictures, baseboards), all placed by rejection
sampling so that nothing overlaps and every camera walk keeps its clearance.

Sizes are those of real furniture (the ``*_M`` tables below); which pieces a room
gets, where, and their colours come from the seed.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from .materials import Decor, Material
from .primitives import Box, Cylinder, Room, Sphere
from .style import STREAM_OBJECTS

#: Furniture sizes (metres): (min, max) per dimension.
BOOKSHELF_M = {"w": (0.8, 1.5), "d": (0.3, 0.38), "h": (1.6, 2.1)}
SOFA_M = {"w": (1.7, 2.3), "d": (0.85, 0.95), "seat": 0.42, "back": 0.85, "arm": 0.62, "arm_w": 0.18, "back_d": 0.2}
SIDEBOARD_M = {"w": (1.2, 1.8), "d": (0.4, 0.5), "h": (0.55, 0.8)}
TV_M = {"w": (0.8, 1.3), "d": 0.05, "h": (0.5, 0.7)}
DESK_M = {"w": (1.0, 1.4), "d": (0.6, 0.7), "h": 0.74, "top": 0.03, "leg": 0.04}
MONITOR_M = {"w": (0.45, 0.6), "d": 0.04, "h": (0.3, 0.36), "lift": 0.12}
CHAIR_M = {"seat": 0.45, "seat_h": 0.46, "back_h": 0.45, "leg": 0.03, "thick": 0.05}
WARDROBE_M = {"w": (0.9, 1.3), "d": (0.55, 0.62), "h": (1.9, 2.2)}
PLANT_M = {"pot_r": (0.14, 0.2), "pot_h": (0.3, 0.45), "leaves_r": (0.3, 0.42)}
LAMP_M = {"base_r": 0.15, "base_h": 0.03, "pole_r": 0.015, "shade_r": 0.2, "shade_h": 0.28, "h": (1.45, 1.65)}
WALL_SHELF_M = {"w": (0.8, 1.2), "d": 0.22, "t": 0.025, "z": (1.45, 1.8)}
COFFEE_TABLE_M = {"w": (0.9, 1.2), "d": (0.5, 0.65), "h": (0.38, 0.45), "top": 0.04, "leg": 0.05}
RUG_MARGIN_M = (0.3, 0.5)
WINDOW_M = {"w": (1.2, 2.0), "sill": (0.85, 1.0), "top": 2.2, "ceiling_gap": 0.25, "corner": 0.6}
DOOR_M = {"w": (0.85, 0.95), "h": (2.0, 2.08), "corner": (0.15, 0.8), "casing": 0.07}
SWITCH_M = {"size": 0.08, "z": 1.05, "gap": 0.12}
PICTURE_Z_M = (1.3, 1.75)
BASEBOARD_M = 0.09
#: Pieces placed beside the walls, in this order, each with this probability.
WALL_PIECES = (("bookshelf", 1.0), ("sofa", 1.0), ("sideboard", 1.0), ("desk", 0.9),
               ("bookshelf", 0.7), ("wardrobe", 0.6), ("wall_shelf", 1.0), ("wall_shelf", 0.7),
               ("plant", 1.0), ("floor_lamp", 0.8), ("plant", 0.5), ("wall_shelf", 0.5))  # fmt: skip
#: Curtains beside the window: width of each panel (metres) and overlap of the frame.
CURTAIN_M = {"w": (0.3, 0.45), "overlap": 0.08, "top_gap": 0.12}
#: Wall clocks: count range and diameter (metres).
CLOCK_M = {"count": (0, 2), "d": (0.25, 0.4), "z": (1.7, 2.1)}
#: Gap kept between pieces (metres).
PIECE_GAP_M = 0.05
#: Wall pieces taller than the window sill minus this may not stand in front of it.
UNDER_WINDOW_SLACK_M = 0.02


def hsv_color(h: float, s: float, v: float) -> tuple[float, float, float]:
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


@dataclass
class Layout:
    """The furniture (primitives) and each primitive's material per face."""

    objects: list = field(default_factory=list)
    materials: dict[str, list[Material]] = field(default_factory=dict)


class _Furnisher:
    def __init__(self, config, room: Room, path: np.ndarray):
        self.c, self.room, self.path = config, room, path
        self.rng = np.random.default_rng([config.seed, STREAM_OBJECTS, 1])
        self.layout = Layout()
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []  # AABBs of placed pieces
        self.count: dict[str, int] = {}
        #: per wall: (s0, s1, top z) of the spans taken by pieces, decorations
        self.spans: dict[int, list[tuple[float, float, float]]] = {k: [] for k in range(4)}
        self.decor: dict[int, list[Decor]] = {k: [] for k in range(4)}
        self.window: tuple[int, float, float, float] | None = None  # wall, s0, s1, sill

    # ------------------------------------------------------------ geometry helpers
    def wall_length(self, k: int) -> float:
        size = self.room.hi - self.room.lo
        return float(size[1] if k < 2 else size[0])

    def wall_box(self, k: int, s: float, n0: float, z0: float, w: float, d: float, h: float, name: str):
        """Axis-aligned box against wall k: centred at s along it, its back n0 from the
        wall, bottom at z0; returns the box and the index of its face into the room."""
        lo, hi = self.room.lo, self.room.hi
        n = n0 + d / 2
        if k == 0:
            c, half, front = (lo[0] + n, lo[1] + s), (d / 2, w / 2), 1
        elif k == 1:
            c, half, front = (hi[0] - n, lo[1] + s), (d / 2, w / 2), 0
        elif k == 2:
            c, half, front = (lo[0] + s, lo[1] + n), (w / 2, d / 2), 3
        else:
            c, half, front = (lo[0] + s, hi[1] - n), (w / 2, d / 2), 2
        return Box(np.array([c[0], c[1], z0 + h / 2]), np.array([half[0], half[1], h / 2]), 0.0, name), front

    def wall_point(self, k: int, s: float, n: float) -> tuple[float, float]:
        lo, hi = self.room.lo, self.room.hi
        return {0: (lo[0] + n, lo[1] + s), 1: (hi[0] - n, lo[1] + s),
                2: (lo[0] + s, lo[1] + n), 3: (lo[0] + s, hi[1] - n)}[k]  # fmt: skip

    def clear_of_path(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        d = np.linalg.norm(np.maximum(np.maximum(lo - self.path, self.path - hi), 0.0), axis=1)
        return bool(d.min() >= self.c.min_clearance_m + self.c.furniture_path_margin_m)

    def fits(self, parts: list) -> bool:
        lo = np.min([p.aabb()[0] for p, _ in parts], axis=0)
        hi = np.max([p.aabb()[1] for p, _ in parts], axis=0)
        if np.any(lo < self.room.lo - 1e-9) or np.any(hi > self.room.hi + 1e-9):
            return False
        g = PIECE_GAP_M
        if any(np.all(lo < ohi + g) and np.all(olo < hi + g) for olo, ohi in self.boxes):
            return False
        return all(self.clear_of_path(*p.aabb()) for p, _ in parts)

    def name(self, kind: str) -> str:
        k = self.count.get(kind, 0)
        self.count[kind] = k + 1
        return f"{kind}{k}"

    def add(self, parts: list, wall: int | None = None, span: tuple[float, float] | None = None) -> None:
        for prim, mats in parts:
            self.layout.objects.append(prim)
            self.layout.materials[prim.name] = mats
        lo = np.min([p.aabb()[0] for p, _ in parts], axis=0)
        hi = np.max([p.aabb()[1] for p, _ in parts], axis=0)
        self.boxes.append((lo, hi))
        if wall is not None and span is not None:
            self.spans[wall].append((span[0], span[1], float(hi[2])))

    def span_free(self, k: int, s0: float, s1: float, top: float) -> bool:
        if self.window is not None and self.window[0] == k:
            _, w0, w1, sill = self.window
            if s0 < w1 and w0 < s1 and top > sill - UNDER_WINDOW_SLACK_M:
                return False
        return all(not (s0 < b1 and b0 < s1) for b0, b1, _ in self.spans[k])

    # ------------------------------------------------------------ colours
    def wood(self) -> tuple[float, float, float]:
        r = self.rng
        if r.random() < 0.25:  # white-painted furniture
            return hsv_color(r.uniform(0.05, 0.15), r.uniform(0.0, 0.05), r.uniform(0.82, 0.92))
        return hsv_color(r.uniform(0.05, 0.1), r.uniform(0.3, 0.6), r.uniform(0.3, 0.72))

    def fabric(self) -> tuple[float, float, float]:
        r = self.rng
        return hsv_color(r.random(), r.uniform(0.12, 0.45), r.uniform(0.25, 0.6))


def _uniform(rng, lo_hi) -> float:
    return float(rng.uniform(*lo_hi)) if isinstance(lo_hi, tuple) else float(lo_hi)


# ================================================================ pieces
# Each returns (parts, footprint width along the wall) for a piece against wall k at s
# (its centre along the wall), or builds free-standing parts; parts are (primitive,
# materials per face).


def _bookshelf(f: _Furnisher, k: int, s: float, dims: dict):
    w, d, h = dims["w"], dims["d"], dims["h"]
    box, front = f.wall_box(k, s, 0.0, 0.0, w, d, h, f.name("bookshelf"))
    col = f.wood()
    mats = [Material("wood", col, along_v=True)] * 6
    mats[front] = Material("books", col)
    return [(box, mats)]


def _sofa(f: _Furnisher, k: int, s: float, dims: dict):
    S = SOFA_M
    w, d = dims["w"], dims["d"]
    col = f.fabric()
    fab = [Material("fabric", col)] * 6
    name = f.name("sofa")
    aw = S["arm_w"]
    parts = [
        (f.wall_box(k, s, S["back_d"], 0.0, w - 2 * aw, d - S["back_d"], S["seat"], f"{name}/seat")[0], fab),
        (f.wall_box(k, s, 0.0, 0.0, w - 2 * aw, S["back_d"], S["back"], f"{name}/back")[0], fab),
    ]
    for side in (-1, 1):
        parts.append((f.wall_box(k, s + side * (w - aw) / 2, 0.0, 0.0, aw, d, S["arm"], f"{name}/arm{side + 1}")[0], fab))
    cushion = f.fabric()
    for side in (-1, 1):
        box, front = f.wall_box(k, s + side * (w - 2 * aw) / 4, S["back_d"], S["seat"], 0.42, 0.14, 0.38, f"{name}/cushion{side + 1}")
        mats = [Material("fabric", cushion)] * 6
        parts.append((box, mats))
    return parts


def _sideboard(f: _Furnisher, k: int, s: float, dims: dict):
    r = f.rng
    w, d, h = dims["w"], dims["d"], dims["h"]
    name = f.name("sideboard")
    box, front = f.wall_box(k, s, 0.0, 0.0, w, d, h, f"{name}/body")
    col = f.wood()
    mats = [Material("wood", col)] * 6
    mats[front] = Material("doors", col)
    parts = [(box, mats)]
    tw = min(_uniform(r, TV_M["w"]), w - 0.1)
    th = _uniform(r, TV_M["h"])
    tv, tv_front = f.wall_box(k, s, 0.05, h, tw, TV_M["d"], th, f"{name}/tv")
    tv_mats = [Material("paint", hsv_color(0, 0, 0.12))] * 6
    tv_mats[tv_front] = Material("screen", hsv_color(0.6, 0.2, r.uniform(0.04, 0.08)))
    parts.append((tv, tv_mats))
    vx, vy = f.wall_point(k, s + (w / 2 - 0.12) * (1 if r.random() < 0.5 else -1), d / 2)
    vr, vh = r.uniform(0.04, 0.07), r.uniform(0.15, 0.3)
    vase = Cylinder(np.array([vx, vy]), vr, h, h + vh, f"{name}/vase")
    parts.append((vase, [Material("fabric", hsv_color(r.random(), r.uniform(0.3, 0.7), r.uniform(0.3, 0.8)))] * 3))
    return parts


def _desk(f: _Furnisher, k: int, s: float, dims: dict):
    D, M, C = DESK_M, MONITOR_M, CHAIR_M
    r = f.rng
    w, d = dims["w"], dims["d"]
    h, t, leg = D["h"], D["top"], D["leg"]
    name = f.name("desk")
    col = f.wood()
    wood = [Material("wood", col)] * 6
    parts = [(f.wall_box(k, s, 0.0, h - t, w, d, t, f"{name}/top")[0], wood)]
    metal = [Material("paint", hsv_color(0, 0, 0.25))] * 6
    for a, (ds, dn) in enumerate(((-1, 0), (1, 0), (-1, 1), (1, 1))):
        parts.append((f.wall_box(k, s + ds * (w - leg) / 2, dn * (d - leg), 0.0, leg, leg, h - t, f"{name}/leg{a}")[0], metal))
    mw, mh = _uniform(r, M["w"]), _uniform(r, M["h"])
    mon, mon_front = f.wall_box(k, s, 0.08, h + M["lift"], mw, M["d"], mh, f"{name}/monitor")
    mon_mats = [Material("paint", hsv_color(0, 0, 0.1))] * 6
    mon_mats[mon_front] = Material("screen", hsv_color(0.6, 0.3, r.uniform(0.05, 0.1)))
    parts.append((mon, mon_mats))
    parts.append((f.wall_box(k, s, 0.1, h, 0.05, 0.05, M["lift"], f"{name}/stand")[0], metal))
    # a chair pushed in: seat over the desk's front edge, back on the room side
    cs, sh, bt = C["seat"], C["seat_h"], C["thick"]
    n0 = d - cs * 0.4
    chair_col = f.fabric()
    cm = [Material("fabric", chair_col)] * 6
    parts.append((f.wall_box(k, s, n0, sh - bt, cs, cs, bt, f"{name}/chair_seat")[0], cm))
    parts.append((f.wall_box(k, s, n0 + cs - bt, sh, cs, bt, C["back_h"], f"{name}/chair_back")[0], cm))
    for a, (ds, dn) in enumerate(((-1, 0), (1, 0), (-1, 1), (1, 1))):
        parts.append((f.wall_box(k, s + ds * (cs - C["leg"]) / 2, n0 + dn * (cs - C["leg"]), 0.0, C["leg"], C["leg"],
                                 sh - bt, f"{name}/chair_leg{a}")[0], metal))
    return parts


def _wardrobe(f: _Furnisher, k: int, s: float, dims: dict):
    w, d, h = dims["w"], dims["d"], dims["h"]
    box, front = f.wall_box(k, s, 0.0, 0.0, w, d, h, f.name("wardrobe"))
    col = f.wood()
    mats = [Material("wood", col, along_v=True)] * 6
    mats[front] = Material("doors", col)
    return [(box, mats)]


def _wall_shelf(f: _Furnisher, k: int, s: float, dims: dict):
    W = WALL_SHELF_M
    r = f.rng
    w, z = dims["w"], _uniform(r, W["z"])
    name = f.name("wall_shelf")
    col = f.wood()
    parts = [(f.wall_box(k, s, 0.0, z, w, W["d"], W["t"], f"{name}/board")[0], [Material("wood", col)] * 6)]
    u = -w / 2 + 0.05
    item = 0
    while u < w / 2 - 0.15:
        iw = float(r.uniform(0.1, 0.3))
        if u + iw > w / 2 - 0.05:
            break
        if r.random() < 0.6:  # a row of books
            bh = float(r.uniform(0.15, 0.24))
            box, front = f.wall_box(k, s + u + iw / 2, 0.02, z + W["t"], iw, 0.17, bh, f"{name}/books{item}")
            mats = [Material("fabric", f.fabric())] * 6
            mats[front] = Material("books", col)
            parts.append((box, mats))
        else:  # a vase
            vr = min(iw / 2, float(r.uniform(0.04, 0.07)))
            x, y = f.wall_point(k, s + u + iw / 2, W["d"] / 2)
            vase = Cylinder(np.array([x, y]), vr, z + W["t"], z + W["t"] + float(r.uniform(0.12, 0.25)), f"{name}/vase{item}")
            parts.append((vase, [Material("fabric", hsv_color(r.random(), r.uniform(0.3, 0.8), r.uniform(0.3, 0.85)))] * 3))
        u += iw + float(r.uniform(0.02, 0.1))
        item += 1
    return parts


def _plant(f: _Furnisher, k: int, s: float, dims: dict):
    r = f.rng
    pr, ph, lr = _uniform(r, PLANT_M["pot_r"]), _uniform(r, PLANT_M["pot_h"]), _uniform(r, PLANT_M["leaves_r"])
    x, y = f.wall_point(k, s, lr + 0.02)
    name = f.name("plant")
    pot = Cylinder(np.array([x, y]), pr, 0.0, ph, f"{name}/pot")
    leaves = Sphere(np.array([x, y, ph + lr * 0.85]), lr, f"{name}/leaves")
    return [
        (pot, [Material("fabric", hsv_color(r.uniform(0.02, 0.08), r.uniform(0.4, 0.7), r.uniform(0.35, 0.65)))] * 3),
        (leaves, [Material("foliage", hsv_color(r.uniform(0.22, 0.36), r.uniform(0.45, 0.8), r.uniform(0.3, 0.55)))]),
    ]


def _floor_lamp(f: _Furnisher, k: int, s: float, dims: dict):
    L = LAMP_M
    r = f.rng
    h = _uniform(r, L["h"])
    x, y = f.wall_point(k, s, L["shade_r"] + 0.05)
    name = f.name("floor_lamp")
    metal = [Material("paint", hsv_color(0, 0, r.uniform(0.15, 0.6)))] * 3
    shade = [Material("fabric", hsv_color(r.uniform(0.08, 0.15), r.uniform(0.05, 0.25), r.uniform(0.75, 0.9)))] * 3
    c = np.array([x, y])
    return [
        (Cylinder(c, L["base_r"], 0.0, L["base_h"], f"{name}/base"), metal),
        (Cylinder(c, L["pole_r"], L["base_h"], h - L["shade_h"], f"{name}/pole"), metal),
        (Cylinder(c, L["shade_r"], h - L["shade_h"], h, f"{name}/shade"), shade),
    ]


#: kind -> (builder, size table with the along-wall width "w", depth "d", height "h"
#: where the piece has them)
PIECES = {
    "bookshelf": (_bookshelf, BOOKSHELF_M),
    "sofa": (_sofa, {"w": SOFA_M["w"], "d": SOFA_M["d"], "h": SOFA_M["back"]}),
    "sideboard": (_sideboard, {**SIDEBOARD_M, "h_total": 1.5}),
    "desk": (_desk, {**DESK_M, "h": 1.2}),
    "wardrobe": (_wardrobe, WARDROBE_M),
    "wall_shelf": (_wall_shelf, {**WALL_SHELF_M, "h": 2.0}),
    "plant": (_plant, {"w": (0.7, 0.85), "h": 1.3}),
    "floor_lamp": (_floor_lamp, {"w": (0.5, 0.5), "h": 1.65}),
}


def _place_wall_piece(f: _Furnisher, kind: str) -> bool:
    build, sizes = PIECES[kind]
    r = f.rng
    for _ in range(f.c.placement_attempts):
        dims = {key: _uniform(r, v) for key, v in sizes.items() if key in ("w", "d", "h")}
        if kind == "sideboard":
            dims["h"] = _uniform(r, SIDEBOARD_M["h"])
        k = int(r.integers(4))
        L = f.wall_length(k)
        w = dims["w"]
        if w >= L - 0.2:
            continue
        s = float(r.uniform(w / 2 + 0.02, L - w / 2 - 0.02))
        top = PIECES[kind][1].get("h_total", dims.get("h", 1.0))
        if not f.span_free(k, s - w / 2, s + w / 2, top):
            continue
        parts = build(f, k, s, dims)
        if f.fits(parts):
            f.add(parts, k, (s - w / 2, s + w / 2))
            return True
        # names drawn for a rejected piece are not reused: harmless, they stay unique
    return False


def _place_coffee_table(f: _Furnisher) -> Decor | None:
    T = COFFEE_TABLE_M
    r = f.rng
    for _ in range(f.c.placement_attempts):
        w, d, h = _uniform(r, T["w"]), _uniform(r, T["d"]), _uniform(r, T["h"])
        cx, cy = r.uniform(-0.3, 0.3), r.uniform(-0.3, 0.3)
        name = f.name("coffee_table")
        col = f.wood()
        wood = [Material("wood", col)] * 6
        parts = [(Box(np.array([cx, cy, h - T["top"] / 2]), np.array([w / 2, d / 2, T["top"] / 2]), 0.0, f"{name}/top"), wood)]
        lg = T["leg"]
        for a, (sx, sy) in enumerate(((-1, -1), (1, -1), (-1, 1), (1, 1))):
            c = np.array([cx + sx * (w - lg) / 2, cy + sy * (d - lg) / 2, (h - T["top"]) / 2])
            parts.append((Box(c, np.array([lg / 2, lg / 2, (h - T["top"]) / 2]), 0.0, f"{name}/leg{a}"), wood))
        bw, bd, bh = r.uniform(0.15, 0.3), r.uniform(0.12, 0.22), r.uniform(0.02, 0.06)
        book = Box(np.array([cx + r.uniform(-w / 4, w / 4), cy, h + bh / 2]), np.array([bw / 2, bd / 2, bh / 2]),
                   0.0, f"{name}/book")
        bmats = [Material("fabric", f.fabric())] * 6
        bmats[5] = Material("books", f.wood())
        parts.append((book, bmats))
        if f.fits(parts):
            f.add(parts)
            mw, md = _uniform(r, RUG_MARGIN_M), _uniform(r, RUG_MARGIN_M)
            lo = f.room.lo
            return Decor("rug", cx - w / 2 - mw - lo[0], cy - d / 2 - md - lo[1], w + 2 * mw, d + 2 * md)
    return None


def _wall_decor(f: _Furnisher) -> None:
    """Window (first: furniture keeps clear of it), door and switch; pictures come
    after the furniture (see :func:`_pictures`)."""
    r = f.rng
    sz = float(f.room.hi[2] - f.room.lo[2])
    W, D = WINDOW_M, DOOR_M
    kw = int(r.integers(4))
    L = f.wall_length(kw)
    ww = min(_uniform(r, W["w"]), L - 2 * W["corner"] - 0.1)
    s0 = float(r.uniform(W["corner"], L - W["corner"] - ww))
    sill = _uniform(r, W["sill"])
    top = min(W["top"], sz - W["ceiling_gap"])
    frame = hsv_color(0.1, 0.02, 0.93)
    f.decor[kw].append(Decor("window", s0, sill, ww, top - sill, frame))
    cw = _uniform(r, CURTAIN_M["w"])
    curtain = f.fabric()
    ctop = min(sz - CURTAIN_M["top_gap"], top + 0.15)
    for cu in (s0 - cw + CURTAIN_M["overlap"], s0 + ww - CURTAIN_M["overlap"]):
        f.decor[kw].append(Decor("curtain", cu, sill - 0.3, cw, ctop - sill + 0.3, curtain))
    f.window = (kw, s0 - cw, s0 + ww + cw, sill)
    # radiator under the window
    rw = ww * 0.8
    rad, _ = f.wall_box(kw, s0 + ww / 2, 0.03, 0.15, rw, 0.1, min(0.5, sill - 0.25), "radiator0")
    f.add([(rad, [Material("paint", hsv_color(0, 0, 0.92))] * 6)], kw, (s0 + ww / 2 - rw / 2, s0 + ww / 2 + rw / 2))
    # door on another wall, near a corner
    kd = int((kw + 1 + r.integers(3)) % 4)
    L = f.wall_length(kd)
    dw, dh = _uniform(r, D["w"]), _uniform(r, D["h"])
    off = _uniform(r, D["corner"]) + D["casing"]
    ds0 = off if r.random() < 0.5 else L - off - dw
    door_col = f.wood() if r.random() < 0.5 else hsv_color(0.1, 0.02, 0.9)
    f.decor[kd].append(Decor("door", ds0, 0.0, dw, dh, door_col))
    f.spans[kd].append((ds0 - D["casing"] - 0.1, ds0 + dw + D["casing"] + 0.1, sz))
    sw = SWITCH_M
    sx = ds0 + dw + D["casing"] + sw["gap"] if ds0 < L / 2 else ds0 - D["casing"] - sw["gap"] - sw["size"]
    f.decor[kd].append(Decor("switch", sx, sw["z"], sw["size"], sw["size"] * 1.4, hsv_color(0, 0, 0.95)))


def _pictures(f: _Furnisher) -> None:
    r, c = f.rng, f.c
    n = int(r.integers(c.num_pictures[0], c.num_pictures[1] + 1))
    placed: dict[int, list[tuple[float, float]]] = {k: [] for k in range(4)}
    for _ in range(n):
        for _ in range(c.placement_attempts):
            k = int(r.integers(4))
            L = f.wall_length(k)
            pw, ph = r.uniform(*c.picture_size_m, size=2)
            if pw > L - 0.4:
                continue
            s0 = float(r.uniform(0.2, L - 0.2 - pw))
            zc = _uniform(r, PICTURE_Z_M)
            v0 = zc - ph / 2
            blocked = any(s0 < b1 and b0 < s0 + pw and top > v0 for b0, b1, top in f.spans[k])
            blocked |= any(s0 < b1 and b0 < s0 + pw for b0, b1 in placed[k])
            if f.window is not None and f.window[0] == k and s0 < f.window[2] and f.window[1] < s0 + pw:
                blocked = True
            if not blocked:
                frame = hsv_color(r.uniform(0.05, 0.1), r.uniform(0, 0.5), r.uniform(0.1, 0.9))
                f.decor[k].append(Decor("picture", s0, v0, float(pw), float(ph), frame))
                placed[k].append((s0 - 0.15, s0 + pw + 0.15))
                break


def _clocks(f: _Furnisher) -> None:
    r = f.rng
    for _ in range(int(r.integers(CLOCK_M["count"][0], CLOCK_M["count"][1] + 1))):
        for _ in range(f.c.placement_attempts):
            k = int(r.integers(4))
            dia = _uniform(r, CLOCK_M["d"])
            s0 = float(r.uniform(0.3, f.wall_length(k) - 0.3 - dia))
            v0 = _uniform(r, CLOCK_M["z"])
            taken = [(d.u0, d.u0 + d.w, d.v0, d.v0 + d.h) for d in f.decor[k]]
            taken += [(b0, b1, 0.0, top) for b0, b1, top in f.spans[k]]
            if all(not (s0 < u1 + 0.1 and u0 - 0.1 < s0 + dia and v0 < t1 and b0 < v0 + dia) for u0, u1, b0, t1 in taken):
                f.decor[k].append(Decor("clock", s0, v0, dia, dia, hsv_color(r.random(), r.uniform(0, 0.6), r.uniform(0.1, 0.8))))
                break


def furnish(config, room: Room, path: np.ndarray) -> Layout:
    """Furniture, wall and floor decorations of a room whose cameras move along
    ``path`` (N, 3) (every camera keeps ``config.min_clearance_m`` from everything)."""
    f = _Furnisher(config, room, path)
    r = f.rng
    accent = int(r.integers(4)) if r.random() < config.accent_wall_probability else -1
    base_hue = r.random()
    wall_colors = []
    for k in range(4):
        if k == accent:
            wall_colors.append(hsv_color(r.random(), r.uniform(0.2, 0.4), r.uniform(0.5, 0.75)))
        else:
            wall_colors.append(hsv_color(base_hue, r.uniform(*config.wall_saturation), r.uniform(*config.wall_value)))
    _wall_decor(f)
    for kind, prob in WALL_PIECES:
        if r.random() < prob:
            _place_wall_piece(f, kind)
    rug = _place_coffee_table(f)
    _pictures(f)
    _clocks(f)

    board = f.wood() if r.random() < 0.5 else hsv_color(0.1, 0.02, 0.92)
    walls = []
    for k in range(4):
        band = Decor("band", 0.0, 0.0, f.wall_length(k), BASEBOARD_M, board)
        walls.append(Material("wall", wall_colors[k], decor=(band, *f.decor[k])))
    floor_kind = ("floor_wood", "floor_wood", "carpet", "tiles")[int(r.integers(4))]
    if floor_kind == "carpet":
        floor_col = hsv_color(r.random(), r.uniform(0.05, 0.3), r.uniform(0.3, 0.6))
    else:
        floor_col = hsv_color(r.uniform(0.06, 0.1), r.uniform(0.3, 0.55), r.uniform(0.4, 0.7))
    floor = Material(floor_kind, floor_col, decor=(rug,) if rug is not None else (), board_m=float(r.uniform(0.12, 0.2)))
    ceiling = Material("paint", hsv_color(0.1, config.ceiling_saturation, config.ceiling_value))
    f.layout.materials[room.name] = [*walls, floor, ceiling]
    return f.layout
