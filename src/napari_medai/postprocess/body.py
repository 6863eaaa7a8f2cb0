"""The patient's body in a CT: organs and lesions of the chest lie inside it.

A chest model sees lung-like air in places a lung cannot be: between the skin and a
blanket, in a sheet's folds, under the table.  Those regions are outside the body, which
is the large tissue object (skin, fat, muscle, bone) with everything it encloses in each
axial slice (the lungs and airways included).  scipy.ndimage only; numpy in, numpy out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BODY_HU = -500.0  # skin, fat and soft tissue are far above; air, blankets' loose weave below
OPENING_MM = 3.0  # removes sheets, blankets and tubes thinner than ~6 mm before choosing the body
WORK_MM = 1.5  # in-plane pixel the mask is computed at: a body outline needs no finer, and a
# 512x512x300 scan at full resolution costs seconds and a 300 MB label map
# lung1's model lost 40 % of its "lung" this way (air between skin and blanket); beyond this
# share an organ's loss points to a failed body mask rather than to the model
ORGAN_MAX_LOSS = 0.6


def body_mask(hu: np.ndarray, spacing, threshold_hu: float = BODY_HU, opening_mm: float = OPENING_MM):
    """Boolean (z, y, x) mask of the body: the largest tissue component after an in-plane
    opening of ``opening_mm`` (so thin bedding does not join it), filled slice by slice.

    Where the field of view cuts the body, the cut is closed along the image edge between the
    outermost points where the body meets it, so a chest cut open by the edge still encloses
    its lungs; air beyond the body's contact with the edge (in front of the chest) stays outside.
    """
    hu = np.asarray(hu)
    step = max(1, int(WORK_MM / min(float(s) for s in spacing[1:])))
    if step > 1:
        small = body_mask(hu[:, ::step, ::step], (spacing[0], spacing[1] * step, spacing[2] * step),
                          threshold_hu, opening_mm)
        full = np.repeat(np.repeat(small, step, axis=1), step, axis=2)
        return np.ascontiguousarray(full[:, : hu.shape[1], : hu.shape[2]])
    tissue = hu > threshold_hu
    r = np.maximum(np.round(opening_mm / np.asarray(spacing[1:], float)).astype(int), 1)
    yy, xx = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1]
    disk = ((yy / r[0]) ** 2 + (xx / r[1]) ** 2) <= 1.0
    # opening; the image edge counts as tissue so a body the field of view cuts keeps its edge
    eroded = ndimage.binary_erosion(tissue, structure=disk[None], border_value=1)
    tissue = ndimage.binary_dilation(eroded, structure=disk[None]) & tissue
    lab, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())[1:]
    body = lab == (int(np.argmax(sizes)) + 1)
    for z in range(body.shape[0]):
        if body[z].any():
            body[z] = _fill_closing_edges(body[z])
    return body


def _fill_closing_edges(plane: np.ndarray) -> np.ndarray:
    """Fill the holes of a 2D mask, counting as closed each image edge's stretch between the
    first and last pixels where the mask touches that edge."""
    framed = np.pad(plane, 1)
    for edge, inner in ((framed[0, 1:-1], plane[0]), (framed[-1, 1:-1], plane[-1]),
                        (framed[1:-1, 0], plane[:, 0]), (framed[1:-1, -1], plane[:, -1])):
        touch = np.flatnonzero(inner)
        if len(touch):
            edge[touch[0] : touch[-1] + 1] = True  # views into the frame
    return ndimage.binary_fill_holes(framed)[1:-1, 1:-1] | plane


def keep_inside_body(labels: np.ndarray, body: np.ndarray, classes, max_loss: float = 1.0):
    """``labels`` with the given classes set to background outside ``body`` (a new array).

    When that would remove more than ``max_loss`` of a class, that class is left unchanged:
    the clean-up must never delete a real lung because the body mask failed (organs pass
    ``ORGAN_MAX_LOSS``).  Returns (labels, {class: fraction removed or None if skipped}).
    """
    out = np.array(labels, copy=True)
    report = {}
    for cls in classes:
        m = out == cls
        total = int(m.sum())
        if total == 0:
            continue
        outside = m & ~body
        frac = float(outside.sum()) / total
        if frac > max_loss:
            report[cls] = None
            continue
        out[outside] = 0
        report[cls] = frac
    return out, report
