"""What a room's window shows: a distant street (sky, a skyline of buildings with lit
and dark windows, the ground), far enough away that its colour depends on the viewing
direction only. A NeRF must explain it with view-dependent colour on the glass, as
real rooms force it to; its brightness is that of daylight, not of the room's lamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Sky colours (linear RGB) at the horizon and at the zenith; ground colour.
SKY_HORIZON = (0.92, 0.94, 0.97)
SKY_ZENITH = (0.45, 0.62, 0.9)
GROUND = (0.42, 0.44, 0.38)
#: Elevation (radians) over which the sky blends from horizon to zenith colour.
SKY_BLEND_RAD = math.radians(40.0)
#: Building facade windows: angular period (radians) and the fraction that is window.
FACADE_PERIOD_RAD = math.radians(1.6)
FACADE_WINDOW_FRACTION = 0.55


@dataclass(frozen=True)
class Building:
    az0: float  # radians, start of its azimuth span
    az1: float
    top: float  # elevation of its roof line, radians
    color: tuple[float, float, float]
    window_color: tuple[float, float, float]


class StreetView:
    """Direction -> colour of the outside (see the module docstring)."""

    def __init__(self, buildings: list[Building], horizon: float):
        self.buildings = buildings
        self.horizon = horizon

    @classmethod
    def random(cls, rng: np.random.Generator, count: int = 14) -> "StreetView":
        horizon = math.radians(rng.uniform(-4.0, -1.0))
        buildings, az = [], -math.pi
        while az < math.pi and len(buildings) < 4 * count:
            width = math.radians(rng.uniform(8.0, 30.0))
            gap = math.radians(rng.uniform(0.0, 8.0))
            value = rng.uniform(0.35, 0.85)
            tint = rng.uniform(-0.06, 0.06, size=3)
            buildings.append(
                Building(
                    az0=az + gap,
                    az1=az + gap + width,
                    top=horizon + math.radians(rng.uniform(4.0, 22.0)),
                    color=tuple(float(c) for c in np.clip(value + tint, 0, 1)),
                    window_color=tuple(float(c) for c in np.clip(rng.uniform(0.1, 0.3) + tint, 0, 1)),
                )
            )
            az += gap + width
        return cls(buildings, horizon)

    def color(self, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
        f32 = np.float32
        el = np.arcsin(np.clip(dz, -1.0, 1.0)).astype(f32)
        az = np.arctan2(dy, dx).astype(f32)
        t = np.clip((el - f32(self.horizon)) / f32(SKY_BLEND_RAD), 0.0, 1.0)[..., None]
        out = np.asarray(SKY_HORIZON, f32) * (1 - t) + np.asarray(SKY_ZENITH, f32) * t
        for b in self.buildings:
            # the span may wrap past +-pi
            inside = ((az - f32(b.az0)) % f32(2 * math.pi)) < f32(b.az1 - b.az0)
            m = inside & (el < f32(b.top))
            if not m.any():
                continue
            fa = ((az - f32(b.az0)) % f32(FACADE_PERIOD_RAD)) / f32(FACADE_PERIOD_RAD)
            fe = ((el - f32(self.horizon)) % f32(FACADE_PERIOD_RAD)) / f32(FACADE_PERIOD_RAD)
            win = (fa < FACADE_WINDOW_FRACTION) & (fe < FACADE_WINDOW_FRACTION) & (el < f32(b.top - FACADE_PERIOD_RAD))
            col = np.where(win[..., None], np.asarray(b.window_color, f32), np.asarray(b.color, f32))
            out = np.where(m[..., None], col, out)
        return np.where((el < f32(self.horizon))[..., None], np.asarray(GROUND, f32), out).astype(f32)
