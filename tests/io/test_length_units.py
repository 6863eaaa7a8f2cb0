"""io.units: a layer's world units as millimetres per unit, and its transform in mm."""

from __future__ import annotations

import numpy as np
import pint
import pytest

from napari_medai.errors import InputError
from napari_medai.io.units import mm_per_unit, world_matrix_mm

UREG = pint.get_application_registry()


def test_length_units_as_names_or_pint_units_give_mm_per_unit():
    assert mm_per_unit(("mm", "um", "cm"), "x") == pytest.approx((1.0, 0.001, 10.0))
    assert mm_per_unit((UREG.meter, UREG.inch, UREG.micrometer), "x") == pytest.approx((1000.0, 25.4, 0.001))


def test_pixels_and_no_units_are_left_as_they_are():
    assert mm_per_unit(None, "x") is None
    assert mm_per_unit(("pixel",) * 3, "x") is None
    assert mm_per_unit((UREG.pixel, "um", UREG.pixel), "x") == pytest.approx((1.0, 0.001, 1.0))


@pytest.mark.parametrize(
    "units, message",
    [
        (("mm", "s", "mm"), "layer 'cine' has axis 1 in second, which is not a length"),
        (("mm", "mm", "no_such_unit"), "layer 'cine' has the unknown unit 'no_such_unit' on axis 2"),
    ],
    ids=["time", "unknown"],
)
def test_a_unit_that_is_not_a_length_is_refused_naming_layer_and_unit(units, message):
    with pytest.raises(InputError, match="^" + message):
        mm_per_unit(units, "cine")


def test_the_whole_transform_is_converted_per_world_axis():
    matrix = np.array([[0.0, 2.0, 0.0, 5.0], [3.0, 0.0, 0.0, 6.0], [0.0, 0.0, 4.0, 7.0], [0, 0, 0, 1]])
    converted = world_matrix_mm(matrix, ("cm", "mm", "um"), "x")
    np.testing.assert_allclose(converted[:3], matrix[:3] * np.array([[10.0], [1.0], [0.001]]))
    np.testing.assert_array_equal(converted[3], (0, 0, 0, 1))
    np.testing.assert_array_equal(world_matrix_mm(matrix, ("pixel",) * 3, "x"), matrix)
    np.testing.assert_array_equal(world_matrix_mm(matrix, None, "x"), matrix)
