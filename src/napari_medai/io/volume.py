"""The in-memory volume every part of the plugin exchanges.

Conventions (used everywhere, from readers to widgets):

* ``data`` has axes (z, y, x): axial slices first, rows, columns.
* World coordinates are patient coordinates in millimetres in DICOM's LPS frame
  (+x towards the patient's Left, +y Posterior, +z Superior), written in the same
  reversed order as the array axes: world = (S, P, L).  With the array re-oriented
  to that frame, an axial slice shows the patient's right on the screen's left and
  anterior at the top, as radiologists read CT, and napari's ``scale`` stays positive.
* ``affine`` is the 4x4 matrix napari uses: world(z, y, x) = affine @ (k, j, i, 1).
  It is diagonal plus translation unless the acquisition is oblique.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

# Reverse the axis order and flip R->L and A->P: maps a NIfTI RAS (x, y, z) vector to our
# (S, P, L) world order.  It is its own inverse up to the order reversal (see below).
_RAS_TO_SPL = np.array(
    [[0, 0, 1, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
)
# Index (k, j, i) -> NIfTI index (i, j, k).
_KJI_TO_IJK = np.array(
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
)


def voxel_spacing(linear) -> tuple[float, ...]:
    """Voxel size in mm along each axis of a 3x3 linear map (its columns are the axes' steps).

    The column norms, except on a sheared grid (a gantry-tilted CT: each slice is shifted
    along the table, so the slice axis is not at right angles to the slice plane).  There the
    slice axis gets the distance between its planes, the slice spacing a radiologist reads,
    so that the product of the three is the voxel's true volume and every mL the plugin
    reports is right.  Of the two axes not at right angles, the slice axis is the first (z):
    gantry tilt is an axial acquisition's, and readers put its slices first; where z is not one
    of them, the one with the longer step."""
    linear = np.asarray(linear, dtype=float)
    norms = np.linalg.norm(linear, axis=0)
    if linear.shape != (3, 3) or np.any(norms == 0):
        return tuple(float(v) for v in norms)
    cosines = _axis_cosines(linear)
    if np.allclose(cosines, np.eye(3), atol=1e-6):
        return tuple(float(v) for v in norms)
    a, b = max(((0, 1), (0, 2), (1, 2)), key=lambda pair: cosines[pair])  # the slanted pair
    slanted = 0 if 0 in (a, b) else (b if norms[b] > norms[a] else a)
    p, q = (axis for axis in range(3) if axis != slanted)
    spacing = norms.copy()
    spacing[slanted] = abs(np.linalg.det(linear)) / np.linalg.norm(np.cross(linear[:, p], linear[:, q]))
    return tuple(float(v) for v in spacing)


def _axis_cosines(linear: np.ndarray) -> np.ndarray:
    """|cos| of the angle between each pair of voxel axes (columns of ``linear``)."""
    unit = linear / np.linalg.norm(linear, axis=0)
    return np.abs(unit.T @ unit)


def is_sheared(affine, tol: float = 1e-4) -> bool:
    """Whether the voxel axes of ``affine`` are not at right angles (a gantry-tilted series)."""
    return not np.allclose(_axis_cosines(np.asarray(affine, dtype=float)[:3, :3]), np.eye(3), atol=tol)


def napari_affine_from_nifti(nifti_affine: np.ndarray) -> np.ndarray:
    """NIfTI affine (ijk -> RAS) to our affine (kji -> SPL).  Only permutations and
    sign flips: exact in floating point, so round trips are bit-exact."""
    return _RAS_TO_SPL @ np.asarray(nifti_affine, dtype=float) @ _KJI_TO_IJK


def nifti_affine_from_napari(affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`napari_affine_from_nifti`."""
    return np.linalg.inv(_RAS_TO_SPL) @ np.asarray(affine, dtype=float) @ np.linalg.inv(_KJI_TO_IJK)


@dataclass
class Volume:
    """A 3D medical image (or label map) with its geometry."""

    data: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    modality: str = "unknown"  # "CT", "MR" or "unknown"
    is_labels: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.affine = np.asarray(self.affine, dtype=float)
        if self.affine.shape != (4, 4):
            raise InputError(f"an affine must be 4x4, got {self.affine.shape}")

    @classmethod
    def from_spacing(cls, data, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), **kw) -> "Volume":
        """Axis-aligned volume from (z, y, x) spacing and origin in mm."""
        affine = np.eye(4)
        affine[:3, :3] = np.diag(np.asarray(spacing, dtype=float))
        affine[:3, 3] = np.asarray(origin, dtype=float)
        return cls(np.asarray(data), affine, **kw)

    def derived(self, data, *, is_labels: bool = False, modality: str | None = None) -> "Volume":
        """An output computed on this volume's grid (labels, a denoised image): the same affine
        and modality (unless given), the voxel order of the file this volume came from
        (``metadata["nifti_orientation"]``), so that ``write_volume`` puts it on that file's grid,
        and that file's space codes (``metadata["nifti_space"]``: scanner, MNI, ...), which hold
        for any volume with this affine."""
        grid = {k: copy.deepcopy(self.metadata[k]) for k in ("nifti_orientation", "nifti_space")
                if k in self.metadata}
        if modality is None and self.metadata.get("modality_guessed"):  # the same guess, still a guess
            grid["modality_guessed"] = True
        return Volume(data, self.affine.copy(), modality=self.modality if modality is None else modality,
                      is_labels=is_labels, metadata=grid)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (z, y, x): the column norms of the affine (on a gantry-tilted
        grid, the distance between slices: see :func:`voxel_spacing`)."""
        return voxel_spacing(self.affine[:3, :3])

    @property
    def origin(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.affine[:3, 3])

    @property
    def is_oblique(self) -> bool:
        lin = self.affine[:3, :3]
        return not np.allclose(lin, np.diag(np.diag(lin)))

    def napari_geometry(self) -> dict[str, Any]:
        """Keyword arguments that place a napari layer in world space."""
        if self.is_oblique or np.any(np.diag(self.affine[:3, :3]) <= 0):
            return {"affine": self.affine.copy()}
        return {
            "scale": tuple(np.diag(self.affine[:3, :3]).tolist()),
            "translate": tuple(self.affine[:3, 3].tolist()),
        }

    def layer_metadata(self) -> dict[str, Any]:
        meta = dict(self.metadata)
        meta.update(
            {
                "affine": self.affine.copy(),
                "nifti_affine": nifti_affine_from_napari(self.affine),
                "modality": self.modality,
                "spacing": self.spacing,
                # the NIfTI writer trusts "affine" only for data of this shape (napari_hooks.writer)
                "shape": tuple(int(n) for n in self.data.shape),
            }
        )
        return meta

    def voxel_to_world(self, zyx) -> np.ndarray:
        """Voxel index/indices (..., 3) in (z, y, x) to world mm (S, P, L)."""
        zyx = np.asarray(zyx, dtype=float)
        return zyx @ self.affine[:3, :3].T + self.affine[:3, 3]
