"""A napari layer's world units to millimetres (no Qt, no napari: the writer uses it too).

napari >= 0.5 gives each world axis of a layer a pint unit; the plugin measures in mm.

* A length unit (mm, µm, cm, m, inch, ...) is converted with pint.
* napari's default, ``pixel`` (what a layer made by hand or by another reader has), and no
  units at all (older napari) keep the rule the plugin has always had: the world is in mm.
* Any other unit (seconds, say) cannot be a voxel size and is refused.

The units belong to the WORLD axes, after the layer's ``affine``: napari converts between
layers' units that way (``apply_units_to_transform`` scales world coordinates per axis), so
the transform in mm is ``diag(mm per unit) @ data-to-world``, whatever the rotate, shear and
affine are (napari >= 0.7 also draws layers of different units that way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

# napari's default unit (pint's "pixel" has no length; "px" in pint is css_pixel, a length)
_PIXEL = "pixel"


def mm_per_unit(units: Sequence | None, layer_name: str) -> tuple[float, ...] | None:
    """Millimetres per world unit along each axis; None when every axis is in pixels or there
    are no units (nothing to convert)."""
    if units is None:
        return None
    factors = tuple(_mm_per(unit, axis, layer_name) for axis, unit in enumerate(units))
    return None if all(f is None for f in factors) else tuple(1.0 if f is None else f for f in factors)


def world_matrix_mm(matrix, units: Sequence | None, layer_name: str) -> np.ndarray:
    """A (n+1)x(n+1) data-to-world matrix in the layer's units, as a matrix to world mm."""
    matrix = np.asarray(matrix, dtype=float)
    factors = mm_per_unit(units, layer_name)
    if factors is None:
        return matrix
    if len(factors) != matrix.shape[0] - 1:  # napari keeps one unit per axis: a caller's bug
        raise ValueError(f"{len(factors)} units for a {matrix.shape[0] - 1}D transform")
    return np.diag([*factors, 1.0]) @ matrix


def _mm_per(unit, axis: int, layer_name: str) -> float | None:
    import pint  # napari depends on it; imported here as pint loads slowly

    if isinstance(unit, str):  # a layer-data tuple built by hand (the reader's "mm")
        try:
            unit = pint.get_application_registry().parse_expression(unit).units  # as napari does
        except (pint.errors.UndefinedUnitError, AttributeError, ValueError):
            raise InputError(f"layer '{layer_name}' has the unknown unit {unit!r} on axis {axis}") from None
    if unit is None or str(unit) == _PIXEL:
        return None
    quantity = 1.0 * unit  # in the unit's own registry (napari's application registry)
    if not quantity.is_compatible_with("millimeter"):
        raise InputError(
            f"layer '{layer_name}' has axis {axis} in {unit}, which is not a length, so its voxel "
            "size cannot be read in mm: set the layer's units to a length (mm, um) or to pixels"
        )
    return float(quantity.to("millimeter").magnitude)
