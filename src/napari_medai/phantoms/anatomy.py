"""Painting the noise-free anatomy (labels + HU) of one chest on a voxel grid.

Structures are painted in order, later ones over earlier ones: table, body (fat,
muscle), mediastinal fat, spine, lungs, abdomen under the diaphragm, heart, sternum,
ribs, scapulae, great vessels, oesophagus, airways, pulmonary vessels.  Shapes that do
not change along z (body outline, spine cross-section, table) are computed once per
slice plane and broadcast.
"""

from __future__ import annotations

import numpy as np

from . import tissues as T
from .layout import ChestLayout
from .raster import Frame, ball_voxels, sample_segments, sample_tube
from .vessels import Tree, airway_tree, vessel_trees


def _paint(label, hu, where, lab, value):
    label[where] = lab
    hu[where] = value


def _linear_upsampler(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix of linear-interpolation weights (grid-centre aligned)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = pos - i0
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] += 1 - w
    m[np.arange(n_out), i1] += w
    return m


def _smooth_field(rng, shape, coarse_mm, spacing, amplitude):
    """Gaussian random field with features of about ``coarse_mm``, float32.

    Drawn on a coarse grid and interpolated linearly, one axis at a time as matrix
    products (BLAS), which is several times faster than ndimage.zoom on a full grid."""
    small = [max(2, int(np.ceil(n * sp / coarse_mm)) + 1) for n, sp in zip(shape, spacing)]
    field = rng.standard_normal(small).astype(np.float32)
    norm = amplitude / (field.std() + 1e-6)
    mz, my, mx = (_linear_upsampler(n, m) for n, m in zip(shape, small))
    field = field @ mx.T  # (sz, sy, X)
    field = np.matmul(my, field)  # (sz, Y, X)
    big = (mz @ field.reshape(small[0], -1)).reshape(shape)
    big *= norm  # the coarse field's spread: no extra pass over the big array
    return big


def paint_body(frame: Frame, lay: ChestLayout, label, hu, jitter):
    _, y, x = frame.coords()
    s = lay.scale
    y2, x2 = y[0], x[0]  # (Y, 1), (1, X)
    # Supine patient: superellipse body, flattened where the back lies on the table.
    p = 2.4
    body = (np.abs(x2 / lay.body_a) ** p + np.abs((y2 - lay.body_yc) / lay.body_b) ** p) < 1
    body &= y2 < lay.body_yc + 0.94 * lay.body_b
    inner = (np.abs(x2 / (lay.body_a - lay.fat)) ** p + np.abs((y2 - lay.body_yc) / (lay.body_b - 0.7 * lay.fat)) ** p) < 1
    plane_label = np.zeros(frame.shape[1:], np.uint8)
    plane_hu = np.full(frame.shape[1:], T.HU["air"], np.float32)
    skin = 2.0 * s
    dermis_free = (np.abs(x2 / (lay.body_a - skin)) ** p + np.abs((y2 - lay.body_yc) / (lay.body_b - skin)) ** p) < 1
    _paint(plane_label, plane_hu, body, T.SOFT_TISSUE, jitter["muscle"])
    _paint(plane_label, plane_hu, body & dermis_free, T.FAT, jitter["fat"])
    _paint(plane_label, plane_hu, inner & body, T.SOFT_TISSUE, jitter["muscle"])
    # The thoracic cavity starts as (mediastinal) fat; organs are painted into it later.
    cav = lay.in_cavity(y2, x2)
    _paint(plane_label, plane_hu, cav, T.FAT, jitter["fat"])
    # Table: curved carbon shell over a foam core, below the body.
    y_top = lay.table_y - 0.0006 / s * x2**2
    # Kept inside the scanner's circular field of view (the reconstruction circle).
    fov_r = 0.98 * min(frame.shape[1] * frame.spacing[1], frame.shape[2] * frame.spacing[2]) / 2
    table = (np.abs(x2) < lay.body_a) & (y2 > y_top) & (y2 < y_top + 28 * s) & (x2**2 + y2**2 < fov_r**2)
    shell = table & ((y2 < y_top + 2.5 * s) | (y2 > y_top + 25.5 * s))
    _paint(plane_label, plane_hu, table, T.TABLE, T.HU["table_foam"])
    _paint(plane_label, plane_hu, shell, T.TABLE, T.HU["table_shell"])
    label[:] = plane_label
    hu[:] = plane_hu


def paint_spine(frame: Frame, lay: ChestLayout, label, hu, jitter):
    z, y, x = frame.coords()
    s = lay.scale
    y2, x2 = y[0], x[0]
    ry, rx = lay.vert_r
    body_ = ((y2 - lay.spine_y) / ry) ** 2 + (x2 / rx) ** 2 < 1
    core = ((y2 - lay.spine_y) / (ry - 2 * s)) ** 2 + (x2 / (rx - 2 * s)) ** 2 < 1
    canal_y = lay.spine_y + ry + 9 * s
    canal = ((y2 - canal_y) / (8 * s)) ** 2 + (x2 / (9 * s)) ** 2 < 1
    arch = (((y2 - canal_y) / (14 * s)) ** 2 + (x2 / (15 * s)) ** 2 < 1) & ~canal
    spinous = (np.abs(x2) < 3.5 * s) & (y2 > canal_y) & (y2 < canal_y + 26 * s)
    # Transverse processes point back and out, towards the rib heads.
    ty = y2 - canal_y - 0.45 * np.abs(x2)
    transverse = (np.abs(ty) < 4 * s) & (np.abs(x2) > 8 * s) & (np.abs(x2) < 27 * s)
    posterior = arch | spinous | transverse
    # Vertebral bodies alternate with discs along z.
    phase = np.mod(z[:, 0, 0] - lay.dome_r, lay.vert_h)
    is_disc = phase < 5 * s
    for k in range(frame.shape[0]):
        lab, h = label[k], hu[k]
        if is_disc[k]:
            _paint(lab, h, body_, T.SOFT_TISSUE, T.HU["disc"])
        else:
            _paint(lab, h, body_, T.BONE, jitter["cortical"])
            _paint(lab, h, core, T.BONE, jitter["cancellous"])
            _paint(lab, h, posterior, T.BONE, 0.5 * (jitter["cortical"] + jitter["cancellous"]))
        _paint(lab, h, canal, T.SOFT_TISSUE, T.HU["csf"])


def _slab(frame: Frame, lo: float, hi: float) -> slice:
    """Slices of ``frame`` whose zeta lies in [lo, hi]."""
    zeta = frame.axis_mm(0)
    rows = np.flatnonzero((zeta >= lo) & (zeta <= hi))
    return slice(rows[0], rows[-1] + 1) if len(rows) else slice(0, 0)


def paint_lungs_and_abdomen(frame: Frame, lay: ChestLayout, rng, label, hu, jitter):
    z, y, x = frame.coords()
    s = lay.scale
    lung = lay.in_lungs(z, y, x)
    label[lung] = T.LUNG
    hu[lung] = jitter["lung"]  # texture and gravity gradient: add_lung_texture()
    # Where the rib cage narrows upwards, chest-wall muscle fills the gap to the body wall.
    wall = lay.in_cavity(y, x) & ~lay.in_rib_cage(z, y, x) & (label == T.FAT)
    _paint(label, hu, wall, T.SOFT_TISSUE, jitter["muscle"])
    # Around the apices (outside the mediastinum) and above them, the thoracic inlet
    # holds muscle rather than fat.
    top = _slab(frame, lay.apex - 0.3 * (lay.apex - lay.dome_r), np.inf)
    neck = lay.in_cavity(y, x) & (label[top] == T.FAT)
    neck &= (np.abs(x) > lay.mediastinum_half_width(y)) | (z[top] > lay.apex - 10 * s)
    _paint(label[top], hu[top], neck, T.SOFT_TISSUE, jitter["muscle"])
    # Heart with a rim of epicardial fat, resting on the diaphragm.
    c, ax = lay.heart_c, lay.heart_ax
    heart_rows = _slab(frame, c[0] - 1.1 * ax[0], c[0] + 1.1 * ax[0])
    zh, lab_h, hu_h = z[heart_rows], label[heart_rows], hu[heart_rows]
    cavity = lay.in_cavity(y, x)
    rim = lay.in_heart(zh, y, x, grow=1.1) & cavity & (lab_h != T.LUNG)
    _paint(lab_h, hu_h, rim, T.FAT, jitter["fat"])
    _paint(lab_h, hu_h, lay.in_heart(zh, y, x) & cavity, T.HEART, jitter["blood"])
    # Abdomen below the diaphragm: liver on the right, stomach and spleen on the left.
    low = _slab(frame, -np.inf, lay.dome_r)
    za, lab_a, hu_a = z[low], label[low], hu[low]
    abdomen = cavity & (za <= lay.dome(y, x)) & (lab_a != T.BONE)
    abdomen &= ~((lab_a == T.SOFT_TISSUE) & (hu_a < 30))  # keep the spinal canal
    liver = abdomen & (x < 0.25 * lay.cav_a + 0.3 * (za - lay.dome_r))
    _paint(lab_a, hu_a, abdomen, T.SOFT_TISSUE, jitter["muscle"] - 10)
    _paint(lab_a, hu_a, liver, T.LIVER, jitter["liver"])


def add_lung_texture(frame: Frame, lay: ChestLayout, rng, label, hu):
    """Parenchyma: denser towards the back (gravity) plus a soft mottled texture.

    Applied on the final grid (the texture is smooth, so slab averaging changes nothing),
    to the lung voxels only."""
    lung = label == T.LUNG
    _, y, _ = frame.coords()
    gradient = 50.0 * np.clip((y - (lay.cav_yc - lay.cav_b)) / (2 * lay.cav_b), 0, 1)
    texture = _smooth_field(rng, frame.shape, 5.0, frame.spacing, 22.0)
    texture += gradient
    hu[lung] += texture[lung]


def paint_sternum(frame: Frame, lay: ChestLayout, label, hu, jitter):
    z, y, x = frame.coords()
    s = lay.scale
    y2, x2 = y[0], x[0]
    sy = lay.cav_yc - lay.cav_b - 6 * s
    outer = ((y2 - sy) / (7 * s)) ** 2 + (x2 / (16 * s)) ** 2 < 1
    inner = ((y2 - sy) / (4.5 * s)) ** 2 + (x2 / (13 * s)) ** 2 < 1
    zeta = z[:, 0, 0]
    for k in np.flatnonzero((zeta > lay.dome_l + 10 * s) & (zeta < lay.apex - 25 * s)):
        _paint(label[k], hu[k], outer, T.BONE, jitter["cortical"])
        _paint(label[k], hu[k], inner, T.BONE, jitter["cancellous"])


def rib_paths(lay: ChestLayout, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Twelve pairs of ribs: each leaves the spine posteriorly, follows the cavity wall
    round to the front while descending, and ends in costal cartilage near the sternum.
    Returns (path mm, cartilage flag per point) per rib."""
    s = lay.scale
    ribs = []
    t = np.linspace(0.0, 1.0, 60)
    for level in range(12):
        zeta0 = lay.apex - 8 * s - level * lay.vert_h * 0.95
        reach = 0.86 - 0.02 * level  # lower ribs stop further from the sternum
        phi = (0.10 + reach * t) * np.pi  # 0 = posterior midline, pi = anterior midline
        drop = lay.vert_h * (rng.uniform(2.6, 3.2) * t**1.2 - 0.5 * np.sin(np.pi * np.minimum(t, 0.5)))
        a = lay.cav_a * lay.width_factor(zeta0 - drop) + 5 * s  # hugging the narrowing cage
        b = lay.cav_b + 5 * s
        for sign in (-1.0, 1.0):
            path = np.stack([zeta0 - drop, lay.cav_yc + b * np.cos(phi), sign * a * np.sin(phi)], 1)
            ribs.append((path, t > 0.82))
    return ribs


def paint_ribs_and_scapulae(frame: Frame, lay: ChestLayout, rng, label, hu, jitter):
    s = lay.scale
    flat = label.reshape(-1), hu.reshape(-1)
    min_step = 0.5 * min(frame.spacing)
    for path, cartilage in rib_paths(lay, rng):
        for part, value in ((~cartilage, jitter["cortical"]), (cartilage, T.HU["cartilage"])):
            if part.sum() < 2:
                continue
            pts, rad = sample_tube(path[part], np.full(part.sum(), 5.0 * s), min_step)
            idx = ball_voxels(frame, pts, rad)
            idx = idx[flat[0][idx] != T.LUNG]  # ribs sit outside the pleura
            flat[0][idx] = T.BONE if value != T.HU["cartilage"] else T.SOFT_TISSUE
            flat[1][idx] = value
            if value != T.HU["cartilage"]:
                marrow = ball_voxels(frame, pts, rad - 2.0 * s, min_radius_vox=0.0)
                marrow = marrow[flat[0][marrow] == T.BONE]
                flat[1][marrow] = T.HU["rib_marrow"]
    # Scapulae: thin plates behind the upper posterior ribs.
    for sign in (-1.0, 1.0):
        zs = np.linspace(lay.apex - 5 * s, lay.apex - 110 * s, 12)
        for zeta in zs:
            phi = np.linspace(0.18, 0.42, 10) * np.pi
            ring = np.stack(
                [np.full_like(phi, zeta), lay.cav_yc + (lay.cav_b + 22 * s) * np.cos(phi),
                 sign * (lay.cav_a + 14 * s) * np.sin(phi)], 1
            )
            pts, rad = sample_tube(ring, np.full(len(ring), 3.0 * s), min_step)
            idx = ball_voxels(frame, pts, rad)
            idx = idx[np.isin(flat[0][idx], (T.SOFT_TISSUE, T.FAT))]
            flat[0][idx] = T.BONE
            flat[1][idx] = 0.5 * (jitter["cortical"] + jitter["cancellous"])


def _draw(frame, label, hu, pts, rad, lab, value, onto):
    idx = ball_voxels(frame, pts, rad)
    flat_l, flat_h = label.reshape(-1), hu.reshape(-1)
    idx = idx[np.isin(flat_l[idx], onto)]
    flat_l[idx] = lab
    flat_h[idx] = value
    return idx


def paint_mediastinum(frame: Frame, lay: ChestLayout, rng, label, hu, jitter):
    """Aorta, pulmonary trunk, superior vena cava and oesophagus as tubes."""
    s = lay.scale
    min_step = 0.5 * min(frame.spacing)
    hc = lay.heart_c
    arch_z = lay.carina + rng.uniform(25, 40) * s
    desc_x, desc_y = lay.vert_r[1] + 2 * s, lay.spine_y - lay.vert_r[0] - 6 * s
    aorta = np.array(
        [
            [hc[0] + 0.5 * lay.heart_ax[0], hc[1] - 0.2 * lay.heart_ax[1], -6 * s],
            [arch_z - 10 * s, hc[1] - 0.3 * lay.heart_ax[1], -12 * s],
            [arch_z, lay.cav_yc - 0.2 * lay.cav_b, -4 * s],
            [arch_z - 5 * s, desc_y - 8 * s, desc_x],
            [lay.dome_r - lay.recess - 80 * s, desc_y, desc_x],
        ]
    )
    radius = np.array([15, 14, 13, 12, 11]) * s * rng.uniform(0.9, 1.1)
    onto = (T.FAT, T.LUNG, T.SOFT_TISSUE, T.LIVER, T.HEART)
    _draw(frame, label, hu, *sample_tube(aorta, radius, min_step), T.GREAT_VESSEL, jitter["blood"], onto)
    # Pulmonary trunk: from the heart, up and left, splitting towards both hila.
    split = np.array([lay.carina - 15 * s, hc[1] - 0.25 * lay.heart_ax[1], 12 * s])
    trunk = np.array([[hc[0] + 0.5 * lay.heart_ax[0], hc[1] - 0.5 * lay.heart_ax[1], 18 * s], split])
    _draw(frame, label, hu, *sample_tube(trunk, 13 * s, min_step), T.GREAT_VESSEL, jitter["blood"], onto)
    for hilum in (lay.hilum_r, lay.hilum_l):
        branch = np.array([split, hilum + np.array([12 * s, -6 * s, 0.0])])
        _draw(frame, label, hu, *sample_tube(branch, np.array([10, 7]) * s, min_step), T.GREAT_VESSEL, jitter["blood"], onto)
    svc = np.array([[lay.top_of_thorax + 100 * s, lay.cav_yc - 0.45 * lay.cav_b, -28 * s],
                    [hc[0] + 0.6 * lay.heart_ax[0], lay.cav_yc - 0.4 * lay.cav_b, -26 * s]])
    _draw(frame, label, hu, *sample_tube(svc, 9 * s, min_step), T.GREAT_VESSEL, jitter["blood"], onto)
    oesophagus = np.array([[lay.top_of_thorax + 100 * s, desc_y - 4 * s, 4 * s],
                           [lay.dome_r - 20 * s, desc_y - 12 * s, 14 * s]])
    _draw(frame, label, hu, *sample_tube(oesophagus, 7 * s, min_step), T.SOFT_TISSUE, jitter["muscle"], (T.FAT, T.LUNG))


def paint_trees(frame: Frame, label, hu, trees: list[Tree], lab, value, onto, wall=None):
    """Draw trees; with ``wall`` (fraction of radius) as walled tubes with an air lumen."""
    min_step = 0.5 * min(frame.spacing)
    starts, ends, r0, r1 = (np.concatenate(a) for a in zip(*(t.segments() for t in trees)))
    if wall is None:
        pts, rad = sample_segments(starts, ends, r0, r1, min_step)
        return _draw(frame, label, hu, pts, rad, lab, value, onto)
    outer = 1.0 + wall
    pts, rad = sample_segments(starts, ends, r0 * outer, r1 * outer, min_step)
    walls = _draw(frame, label, hu, pts, rad, lab, value, onto)
    pts, rad = sample_segments(starts, ends, r0, r1, min_step)
    lumen = ball_voxels(frame, pts, rad, min_radius_vox=0.0)
    lumen = lumen[label.reshape(-1)[lumen] == lab]
    hu.reshape(-1)[lumen] = T.HU["air"]
    return walls


def paint_anatomy(frame: Frame, lay: ChestLayout, rng, jitter) -> tuple[np.ndarray, np.ndarray, list[Tree]]:
    """Labels (uint8) and noise-free HU (float32) of the whole chest on ``frame``."""
    label = np.zeros(frame.shape, np.uint8)
    hu = np.empty(frame.shape, np.float32)
    paint_body(frame, lay, label, hu, jitter)
    paint_spine(frame, lay, label, hu, jitter)
    paint_lungs_and_abdomen(frame, lay, rng, label, hu, jitter)
    paint_sternum(frame, lay, label, hu, jitter)
    paint_ribs_and_scapulae(frame, lay, rng, label, hu, jitter)
    paint_mediastinum(frame, lay, rng, label, hu, jitter)
    airways = airway_tree(lay, rng)
    paint_trees(frame, label, hu, airways, T.AIRWAY, jitter["muscle"],
                (T.LUNG, T.FAT, T.SOFT_TISSUE), wall=0.3)
    vessels = vessel_trees(lay, rng)
    paint_trees(frame, label, hu, vessels, T.VESSEL, jitter["blood"], (T.LUNG, T.FAT))
    return label, hu, vessels
