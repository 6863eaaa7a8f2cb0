"""Bring any voxel grid into the plugin's display frame (see io/volume.py).

Both readers describe what they loaded the NIfTI way: an array indexed (i, j, k) and an
affine mapping (i, j, k) to RAS millimetres.  :func:`to_display_frame` then flips and
permutes axes (never resamples) so that i runs to the patient's Left, j Posterior and
k Superior, and transposes to (z, y, x) = (k, j, i).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation

from ..errors import InputError
from .volume import napari_affine_from_nifti, nifti_affine_from_napari

# NIfTI index axes of the display frame: i -> Left, j -> Posterior, k -> Superior.
DISPLAY_AXCODES = ("L", "P", "S")


# Two affines closer than this place every voxel at the same spot (mm): a header's affine is
# float32-rounded (about 2e-5 mm on a 300 mm translation), a move or rescale in napari is far larger.
SAME_PLACE_ATOL_MM = 1e-4


def same_place(affine, other) -> bool:
    """Whether two 4 x 4 affines put every voxel at the same spot (to ``SAME_PLACE_ATOL_MM``)."""
    a, b = np.asarray(affine, dtype=float), np.asarray(other, dtype=float)
    return a.shape == b.shape == (4, 4) and np.allclose(a, b, rtol=0, atol=SAME_PLACE_ATOL_MM)


def orientation_codes(nifti_affine: np.ndarray) -> str:
    """Three letters naming where each index axis points, e.g. 'LPS' or 'RAS'."""
    return "".join(str(c) for c in nib.aff2axcodes(nifti_affine))


def to_display_frame(data_ijk: np.ndarray, nifti_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-orient ``data_ijk`` to LPS and return ``(data_zyx, napari_affine)``.

    Flips and axis swaps are exact, so values are untouched.  The affine is rounded to
    float32, the precision a NIfTI header stores, so that a volume read from any source,
    written to NIfTI and read again has a bit-identical affine.
    """
    nifti_affine = np.asarray(nifti_affine, dtype=float)
    if not np.isfinite(nifti_affine).all():
        raise InputError("the image geometry (affine) contains NaN or infinite values")
    if abs(np.linalg.det(nifti_affine[:3, :3])) < 1e-12:
        raise InputError(
            "the image geometry is degenerate (a voxel size of 0 or axes that coincide); "
            f"affine:\n{np.array2string(nifti_affine, precision=4)}"
        )
    current = io_orientation(nifti_affine)
    target = axcodes2ornt(DISPLAY_AXCODES)
    transform = nib.orientations.ornt_transform(current, target)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        data, affine = data_ijk, nifti_affine  # already LPS: skip any arithmetic
    else:
        data = apply_orientation(data_ijk, transform)
        affine = nifti_affine @ inv_ornt_aff(transform, data_ijk.shape)
    affine = affine.astype(np.float32).astype(np.float64)
    data_zyx = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    return data_zyx, napari_affine_from_nifti(affine)


def from_display_frame(data_zyx: np.ndarray, napari_affine: np.ndarray, axcodes: str = "LPS"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`to_display_frame`: ``(data_ijk, nifti_affine)`` with the index
    axes pointing along ``axcodes`` (e.g. 'RAS', the orientation of the file an input came
    from), so that an output lies on its input file's voxel grid, voxel for voxel."""
    transform = _display_to_file(axcodes)
    data_ijk = np.transpose(np.asarray(data_zyx), (2, 1, 0))
    nifti_affine = nifti_affine_from_napari(napari_affine)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return data_ijk, nifti_affine
    return apply_orientation(data_ijk, transform), nifti_affine @ inv_ornt_aff(transform, data_ijk.shape)


def file_voxel(point_zyx, shape_zyx, axcodes: str) -> list[float]:
    """A point given in the display frame's (z, y, x) voxels, as the (i, j, k) voxel index of the
    file it was read from, whose index axes point along ``axcodes`` (``Volume.metadata
    ["nifti_orientation"]``, e.g. 'RAS'): the index another viewer of that file shows.  The
    inverse of :func:`to_display_frame`'s flips and swaps, for one point (sub-voxel positions
    stay sub-voxel: a flip maps c to n - 1 - c)."""
    shape_ijk = tuple(int(n) for n in shape_zyx)[::-1]
    display_ijk = np.asarray(point_zyx, dtype=float)[::-1]
    out = np.linalg.solve(_file_to_display(shape_ijk, axcodes), np.append(display_ijk, 1.0))[:3]
    return [float(v) + 0.0 for v in np.round(out, 6)]  # + 0.0: no -0.0 in the files


def display_voxel(file_ijk, shape_zyx, axcodes: str) -> list[float]:
    """The inverse of :func:`file_voxel`: a file's own (i, j, k) voxel index (its index axes
    pointing along ``axcodes``) as the display frame's (z, y, x) voxels of that volume."""
    shape_ijk = tuple(int(n) for n in shape_zyx)[::-1]
    out = _file_to_display(shape_ijk, axcodes) @ np.append(np.asarray(file_ijk, dtype=float), 1.0)
    return [float(v) + 0.0 for v in np.round(out[:3][::-1], 6)]


def _file_to_display(shape_ijk, axcodes: str) -> np.ndarray:
    """4 x 4 map from the file's (i, j, k) indices to the display array's (i, j, k) (before its
    transpose to (z, y, x)); ``shape_ijk``: the display array's shape in (i, j, k) order."""
    # inv_ornt_aff maps the re-oriented (file) array's indices to the display array's
    return inv_ornt_aff(_display_to_file(axcodes), shape_ijk)


def _display_to_file(axcodes: str) -> np.ndarray:
    """nibabel's orientation transform from the display frame (LPS) to index axes along
    ``axcodes``, or an InputError for anything that is not three axis codes such as 'RAS'."""
    codes = tuple(str(axcodes).upper())
    try:
        target = axcodes2ornt(codes)
    except Exception:  # nibabel raises ValueError or its own error for a wrong code
        target = None
    # each axis once: 'RLS' names left-right twice and no front-back axis, a mapping that was
    # silently wrong in one direction and a bare LinAlgError in the other
    if target is None or len(codes) != 3 or np.isnan(target).any() or sorted(target[:, 0]) != [0, 1, 2]:
        raise InputError(f"orientation must be three axis codes such as 'RAS' or 'LPS', got {axcodes!r}")
    return nib.orientations.ornt_transform(axcodes2ornt(DISPLAY_AXCODES), target)
