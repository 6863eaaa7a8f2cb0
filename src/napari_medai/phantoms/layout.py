"""Random anatomical layout of one phantom chest, in millimetres.

All sizes are drawn per seed around adult values and multiplied by one scale factor
chosen so that the body and the table fit the field of view (a 205 mm field, the
default 256 x 0.8 mm grid, gets a smaller chest than a 360 mm one).  Coordinates are
the phantom's (zeta, y, x) of :class:`raster.Frame`.

The lungs are an analytic shape (:meth:`ChestLayout.lung_side`), so vessel trees and
nodules can test arbitrary points against it without a voxel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ChestLayout:
    scale: float
    body_a: float  # body half-width
    body_b: float  # body half-depth
    body_yc: float
    fat: float  # subcutaneous fat thickness
    cav_a: float  # thoracic cavity (inside the ribs) half-width
    cav_b: float
    cav_yc: float
    apex: float  # zeta of the lung apices
    dome_r: float  # zeta of the right and left diaphragm domes
    dome_l: float
    recess: float  # how far below the dome the costophrenic recesses reach
    med_w: float  # mediastinum half-width at the back
    med_w_front: float  # ... and behind the sternum
    heart_c: np.ndarray  # (zeta, y, x)
    heart_ax: np.ndarray  # semi-axes (zeta, y, x)
    heart_turn: float  # in-plane angle of the heart's long axis (rad)
    spine_y: float  # vertebral body centre y
    vert_r: tuple[float, float]  # vertebral body half-depth, half-width
    vert_h: float  # vertebra period (body + disc)
    carina: float  # zeta of the tracheal bifurcation
    hilum_r: np.ndarray  # (zeta, y, x) of the right and left hila
    hilum_l: np.ndarray
    table_y: float  # top of the table at x = 0

    @property
    def top_of_thorax(self) -> float:
        return self.apex + 40 * self.scale

    def dome(self, y, x):
        """Zeta of the diaphragm under (y, x): two domes sloping down to the recesses."""
        s = self.scale
        right = self.dome_r - 0.9 * self.recess * (
            ((x + 0.45 * self.cav_a) / (0.75 * self.cav_a)) ** 2 + ((y - self.cav_yc) / (1.1 * self.cav_b)) ** 2
        )
        left = self.dome_l - 0.9 * self.recess * (
            ((x - 0.45 * self.cav_a) / (0.75 * self.cav_a)) ** 2 + ((y - self.cav_yc) / (1.1 * self.cav_b)) ** 2
        )
        # Posterior recesses go deeper than anterior ones.
        tilt = 12 * s * (y - self.cav_yc) / self.cav_b
        return np.maximum(np.maximum(right, left) - tilt, self.dome_r - self.recess)

    def in_cavity(self, y, x):
        return (x / self.cav_a) ** 2 + ((y - self.cav_yc) / self.cav_b) ** 2 < 1.0

    def width_factor(self, z):
        """The rib cage narrows from the diaphragm up to the apices (bell-shaped
        lungs on coronal views): 1 at the base, about 0.75 at the top."""
        h = self.apex - self.dome_r
        return 1.0 - 0.25 * np.clip((z - self.dome_r - 0.15 * h) / (0.85 * h), 0.0, 1.0) ** 1.5

    def in_rib_cage(self, z, y, x):
        """The thoracic cavity at height z (narrower than :meth:`in_cavity` higher up)."""
        w = np.asarray(self.width_factor(z), np.float32)
        return (x / (self.cav_a * w)) ** 2 + ((y - self.cav_yc) / self.cav_b) ** 2 < 1.0

    def in_heart(self, z, y, x, grow: float = 1.0):
        """Heart ellipsoid, its long axis turned towards the left front (``heart_turn``)."""
        # Python floats keep float32 coordinates in float32 (numpy scalars would upcast).
        c = [float(v) for v in self.heart_c]
        ax = [float(v) * grow for v in self.heart_ax]
        cos, sin = np.cos(self.heart_turn), np.sin(self.heart_turn)
        u = (x - c[2]) * cos - (y - c[1]) * sin
        v = (x - c[2]) * sin + (y - c[1]) * cos
        in_plane = (u / ax[2]) ** 2 + (v / ax[1]) ** 2
        return _slab_apply(z, c[0] - ax[0], c[0] + ax[0], lambda zz: ((zz - c[0]) / ax[0]) ** 2 + in_plane < 1.0)

    def mediastinum_half_width(self, y):
        """Narrow in front (the lungs almost meet behind the sternum), wide at the back."""
        frac = np.clip((y - (self.cav_yc - self.cav_b)) / (1.4 * self.cav_b), 0.0, 1.0)
        return self.med_w_front + (self.med_w - self.med_w_front) * frac

    def in_spine_block(self, y, x):
        """Vertebra plus the paravertebral tissue the lungs wrap around."""
        s = self.scale
        return (np.abs(x) < self.vert_r[1] + 8 * s) & (y > self.spine_y - self.vert_r[0] - 4 * s)

    def lung_side(self, z, y, x):
        """0 outside the lungs, 1 right lung (x < 0), 2 left lung; broadcasts."""
        inside = self.in_lungs(z, y, x)
        return inside.astype(np.uint8) * np.where(np.asarray(x) < 0, 1, 2).astype(np.uint8)

    def in_lungs(self, z, y, x):
        """True inside either lung; broadcasts.

        With grid coordinates ((Z,1,1), (1,Y,1), (1,1,X)) the z-independent parts are
        computed once per plane and the z-dependent ones only on the slabs they touch.
        """
        inside = self.in_cavity(y, x) & (np.abs(x) > self.mediastinum_half_width(y))
        inside = inside & ~self.in_spine_block(y, x)
        inside = inside & self.in_rib_cage(z, y, x)
        inside = inside & (z > self.dome(y, x))
        inside &= ~self.in_heart(z, y, x, grow=1.12)
        # Apices: each lung narrows to a rounded cone over the top 30 % of its height.
        taper_len = 0.3 * (self.apex - self.dome_r)
        xl = np.where(x < 0, -1.0, 1.0) * 0.5 * self.cav_a
        cone = ((x - xl) / (0.62 * self.cav_a)) ** 2 + ((y - self.cav_yc - 0.25 * self.cav_b) / self.cav_b) ** 2

        def apex_ok(zz):
            taper = np.clip((self.apex - zz) / taper_len, 0.0, 1.0) ** 0.6
            return (cone < taper**2 * 1.2) | (taper >= 1.0)

        inside &= _slab_apply(z, self.apex - taper_len, np.inf, apex_ok, default=True)
        return inside


def _slab_apply(z, lo, hi, fn, default=False):
    """``fn(z)`` (a boolean array), evaluated only on grid slices with lo <= z <= hi.

    ``z`` is either a (Z, 1, 1) grid axis (then only the touched slices are computed;
    the others get ``default``) or any array of point coordinates (computed as is).
    """
    z = np.asarray(z)
    if z.ndim != 3 or z.shape[1:] != (1, 1):
        return fn(z)
    rows = np.flatnonzero((z[:, 0, 0] >= lo) & (z[:, 0, 0] <= hi))
    if len(rows) == 0:
        return np.full(z.shape, default)
    part = fn(z[rows[0] : rows[-1] + 1])
    out = np.full((z.shape[0], *part.shape[1:]), default)
    out[rows[0] : rows[-1] + 1] = part
    return out


def sample_layout(rng: np.random.Generator, fov_mm: tuple[float, float, float]) -> ChestLayout:
    """Draw one chest; ``fov_mm`` is the grid's extent (z, y, x) in mm."""
    _, fov_y, fov_x = fov_mm
    body_a0 = rng.uniform(150, 180)
    body_b0 = body_a0 * rng.uniform(0.68, 0.8)
    table_gap0, table_t0 = 6.0, 30.0
    # Shrink the chest (never enlarge it) until body and table fit the field of view.
    scale = min(1.0, 0.46 * fov_x / body_a0, 0.47 * fov_y / (body_b0 + 0.5 * (table_gap0 + table_t0)))
    s = scale
    body_a, body_b = body_a0 * s, body_b0 * s
    # Centre body + table vertically in the field.
    body_yc = -0.5 * (table_gap0 + table_t0) * s
    fat = rng.uniform(10, 30) * s
    muscle = rng.uniform(8, 14) * s
    rib_room = 9 * s
    cav_a = body_a - fat - muscle - rib_room
    cav_b = body_b - 0.8 * fat - muscle - rib_room - 6 * s  # thick paraspinal muscles at the back
    cav_yc = body_yc - 6 * s
    height = rng.uniform(175, 215) * s  # dome to apex
    dome_r = 0.0
    dome_l = -rng.uniform(8, 22) * s
    heart_ax = np.array([rng.uniform(45, 55), rng.uniform(40, 50), rng.uniform(55, 65)]) * s
    heart_c = np.array(
        [dome_l + 0.8 * heart_ax[0], cav_yc - cav_b + heart_ax[1] + 6 * s, rng.uniform(12, 28) * s]
    )
    spine_y = cav_yc + cav_b - 8 * s
    carina = 0.58 * height + rng.uniform(-10, 10) * s
    hilum_y = cav_yc + rng.uniform(-0.05, 0.15) * cav_b
    med_w = rng.uniform(24, 32) * s
    return ChestLayout(
        scale=s,
        body_a=body_a,
        body_b=body_b,
        body_yc=body_yc,
        fat=fat,
        cav_a=cav_a,
        cav_b=cav_b,
        cav_yc=cav_yc,
        apex=height,
        dome_r=dome_r,
        dome_l=dome_l,
        recess=rng.uniform(50, 70) * s,
        med_w=med_w,
        med_w_front=rng.uniform(6, 12) * s,
        heart_turn=rng.uniform(0.4, 0.8),
        heart_c=heart_c,
        heart_ax=heart_ax,
        spine_y=spine_y,
        vert_r=(15 * s, 19 * s),
        vert_h=rng.uniform(24, 28) * s,
        carina=carina,
        hilum_r=np.array([carina - 25 * s, hilum_y, -(med_w + 12 * s)]),
        hilum_l=np.array([carina - 35 * s, hilum_y, med_w + 12 * s]),
        table_y=body_yc + body_b + table_gap0 * s,
    )


def scan_origin_zeta(layout: ChestLayout, fov_z: float) -> float:
    """Zeta of the lowest point of the scan: the whole thorax when the field is tall
    enough (apex near the top), else a slab centred on the hila."""
    s = layout.scale
    bottom, top = layout.dome_r - layout.recess - 30 * s, layout.top_of_thorax
    if fov_z >= top - bottom:
        return top + 10 * s - fov_z
    return layout.hilum_r[0] - 0.5 * fov_z
