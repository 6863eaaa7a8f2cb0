"""Nodule attenuation from the CT under a finding's mask, and its Lung-RADS v2022 category."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medai.postprocess.attenuation import add_attenuation, attenuation, lung_rads_by_attenuation
from napari_medai.postprocess.findings import Finding

SPACING = (1.0, 0.7, 0.7)
LUNG, GLASS, SOLID = -850.0, -500.0, 40.0


def _grid(shape=(40, 60, 60)):
    zz, yy, xx = np.indices(shape).astype(float)
    c = [(n - 1) / 2 for n in shape]
    return np.sqrt(((zz - c[0]) * SPACING[0]) ** 2 + ((yy - c[1]) * SPACING[1]) ** 2
                   + ((xx - c[2]) * SPACING[2]) ** 2)


def _nodule(radius_mm, core_mm=0.0, outer=SOLID):
    """HU of a ball of ``outer`` HU with a solid core, smoothed at the edges (partial volume),
    and the ball's mask as a detector would draw it (half way between nodule and lung)."""
    from scipy import ndimage

    r = _grid()
    hu = np.full(r.shape, LUNG)
    hu[r <= radius_mm] = outer
    hu[r <= core_mm] = SOLID
    hu = ndimage.gaussian_filter(hu, 0.6)
    return hu, r <= radius_mm


def test_solid_part_solid_and_ground_glass_are_told_apart():
    hu, mask = _nodule(7.0)
    solid = attenuation(mask, hu, SPACING)
    assert solid.kind == "solid" and solid.solid_share > 0.8 and solid.solid_diameter_mm == pytest.approx(14, abs=1.5)
    hu, mask = _nodule(7.0, core_mm=3.0, outer=GLASS)
    part = attenuation(mask, hu, SPACING)
    assert part.kind == "part-solid" and part.solid_share < 0.2
    assert part.solid_diameter_mm == pytest.approx(6.0, abs=1.0)  # the core, not the whole nodule
    hu, mask = _nodule(9.0, outer=GLASS)
    glass = attenuation(mask, hu, SPACING)
    assert glass.kind == "ground-glass" and glass.solid_share < 0.02 and glass.solid_diameter_mm == 0


def test_a_vessel_through_ground_glass_does_not_make_it_part_solid():
    hu, mask = _nodule(9.0, outer=GLASS)
    zz, yy, xx = np.indices(hu.shape)
    vessel = ((yy - 29.5) * SPACING[1]) ** 2 + ((xx - 32) * SPACING[2]) ** 2 <= 1.0  # 2 mm wide, along z
    hu[vessel] = SOLID
    result = attenuation(mask, hu, SPACING)
    assert result.kind == "ground-glass" and result.solid_share > 0.005  # solid voxels, but no component


def test_a_wide_vessel_through_ground_glass_is_a_tube_not_a_solid_component():
    hu, mask = _nodule(9.0, outer=GLASS)
    zz, yy, xx = np.indices(hu.shape)
    # 4 mm wide, running across the nodule in-plane: it survives the opening but is a tube
    vessel = ((zz - 19.5) * SPACING[0]) ** 2 + ((yy - 29.5) * SPACING[1]) ** 2 <= 4.0
    hu[vessel] = SOLID
    result = attenuation(mask, hu, SPACING)
    assert result.kind == "ground-glass" and result.solid_diameter_mm == 0
    hu[(np.abs(zz - 19.5) <= 3) & (np.abs(yy - 29.5) <= 4) & (np.abs(xx - 29.5) <= 4)] = SOLID  # a core on it
    assert attenuation(mask, hu, SPACING).kind == "part-solid"


def test_specks_under_3_mm_are_no_solid_component():
    hu, mask = _nodule(9.0, outer=GLASS)
    for z, y, x in ((14, 22, 22), (24, 36, 30), (19, 29, 38)):  # 3 x 3 x 3 voxels: 2.1 mm in-plane
        hu[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = SOLID
    result = attenuation(mask, hu, SPACING)
    assert result.kind == "ground-glass" and result.solid_share > 0


def test_a_small_solid_nodule_keeps_its_solid_diameter():
    hu, mask = _nodule(1.6)  # 3.2 mm: after the opening little is left, yet all of it is solid
    result = attenuation(mask, hu, SPACING)
    assert result.kind == "solid" and result.solid_diameter_mm > 0


def test_the_solid_component_is_rounded_as_a_findings_mean_diameter(monkeypatch):
    import napari_medai.postprocess.attenuation as module

    hu, mask = _nodule(6.0, core_mm=4.0, outer=GLASS)  # part-solid
    monkeypatch.setattr(module, "axial_axes", lambda piece, spacing: (6.05, 5.84))
    # each axis to one decimal first (6.1 and 5.8), then the mean: 6.0 mm, category 4A as a
    # part-solid nodule; the mean of the unrounded axes (5.945) rounds to 5.9 mm, category 3
    result = attenuation(mask, hu, SPACING)
    assert result.kind == "part-solid" and result.solid_diameter_mm == 6.0


def test_an_empty_mask_is_refused():
    with pytest.raises(ValueError, match="empty"):
        attenuation(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3)), SPACING)


@pytest.mark.parametrize("kind, mean, solid, category", [
    ("solid", 5.9, 5.0, "2"), ("solid", 7.0, 6.5, "3"), ("solid", 12.0, 11.0, "4A"), ("solid", 15.0, 14.0, "4B"),
    ("part-solid", 5.9, 3.0, "2"),  # under 6 mm in all: 2 whatever the solid part
    ("part-solid", 12.0, 5.9, "3"), ("part-solid", 12.0, 6.0, "4A"), ("part-solid", 20.0, 7.94, "4A"),  # Lung-RADS rounds to 0.1 mm: 7.96 would be 8.0
    ("part-solid", 20.0, 8.0, "4B"),
    ("ground-glass", 20.0, 0.0, "2"), ("ground-glass", 29.9, 0.0, "2"), ("ground-glass", 30.0, 0.0, "3"),
])
def test_lung_rads_v2022_baseline_categories_by_attenuation(kind, mean, solid, category):
    assert lung_rads_by_attenuation(kind, mean, solid) == category


def test_an_unknown_attenuation_is_refused():
    with pytest.raises(ValueError, match="unknown attenuation"):
        lung_rads_by_attenuation("calcified", 10.0, 0.0)


def test_add_attenuation_reads_each_findings_box_and_skips_those_without_a_mask():
    hu, mask = _nodule(9.0, core_mm=4.0, outer=GLASS)
    big = np.full((50, 80, 80), LUNG)
    big[5:45, 10:70, 15:75] = hu
    box = [[5, 10, 15], [45, 70, 75]]
    f = Finding([25.0, 40.0, 45.0], [0, 0, 0], box, 18.0, 18.0, 18.0, 3.0, 0.9, "4B", 1, mask=mask)
    no_mask = Finding([1.0, 1.0, 1.0], [0, 0, 0], [[0, 0, 0], [2, 2, 2]], 2.0, 2.0, 2.0, 0.0, 0.5, "2", 2)
    add_attenuation([f, no_mask], big, SPACING)
    assert f.attenuation == "part-solid" and f.solid_diameter_mm == pytest.approx(8.0, abs=1.0)
    assert f.lung_rads_by_attenuation == ("4B" if f.solid_diameter_mm >= 8.0 else "4A")
    assert f.lung_rads == "4B"  # the solid-nodule size category is kept as it was
    assert no_mask.attenuation == "" and no_mask.lung_rads_by_attenuation == ""
