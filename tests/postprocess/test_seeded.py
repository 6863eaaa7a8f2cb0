"""A nodule measured from one marked point (postprocess.seeded) on small synthetic chests."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medai.errors import InputError
from napari_medai.postprocess.seeded import READER_SCORE, RIM_MM, nodule_at

SPACING = (1.0, 0.8, 0.8)
SHAPE = (48, 80, 80)
CENTRE = np.array([24.0, 40.0, 40.0])


def _grid_mm():
    zz, yy, xx = np.indices(SHAPE, dtype=np.float32)
    return zz * SPACING[0], yy * SPACING[1], xx * SPACING[2]


def _lung(rng_seed=0):
    """Lung parenchyma (-850 HU) with a little noise."""
    rng = np.random.default_rng(rng_seed)
    return (-850 + rng.normal(0, 15, SHAPE)).astype(np.float32)


def _ball(centre_voxel, radius_mm):
    z, y, x = _grid_mm()
    c = np.asarray(centre_voxel) * SPACING
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius_mm ** 2


def _vessel_along_x(centre_voxel, radius_mm):
    z, y, _x = _grid_mm()
    c = np.asarray(centre_voxel) * SPACING
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 <= radius_mm ** 2


def test_a_nodule_on_a_vessel_is_measured_without_the_vessel_from_a_click_beside_its_centre():
    ct = _lung()
    nodule = _ball(CENTRE, 4.0)
    ct[_vessel_along_x(CENTRE, 1.0)] = 30.0  # a vessel through the nodule, across the whole volume
    ct[nodule] = 40.0
    click = CENTRE + [0.0, 2.0 / SPACING[1], 0.0]  # 2 mm off the centre, as a reader's click lands
    f = nodule_at(ct, SPACING, click)
    # calipers on the mask: across the vessel the nodule's own 8 mm; along it the stubs of at
    # most RIM_MM a side that the rim gives back count, one pixel of rounding included
    assert f.short_axis_mm == pytest.approx(8.0, abs=0.8) and f.lung_rads == "4A"
    assert 8.0 - 0.8 <= f.diameter_mm <= 8.0 + 2 * RIM_MM + SPACING[2]
    np.testing.assert_allclose(f.center_voxel, CENTRE, atol=0.6)
    # the vessel is cut off: the mask reaches at most a couple of millimetres beyond the nodule along it
    (z0, y0, x0), (z1, y1, x1) = f.bbox_voxel
    assert (x1 - x0) * SPACING[2] <= 8.0 + 2 * 2.0
    assert f.volume_ml == pytest.approx(nodule.sum() * np.prod(SPACING) / 1000, rel=0.25)
    assert f.attenuation == "solid" and f.score == READER_SCORE and f.outline == "half-maximum"
    assert f.mask.shape == tuple(np.subtract(f.bbox_voxel[1], f.bbox_voxel[0]))


def test_a_nodule_on_the_pleura_stops_at_the_pleural_line():
    ct = _lung()
    wall = np.zeros(SHAPE, bool)
    wall[:, :, :20] = True  # chest wall: soft tissue on one side
    ct[wall] = 40.0
    centre = np.array([24.0, 40.0, 22.0])  # a 5 mm nodule whose centre lies 1.6 mm inside the lung
    nodule = _ball(centre, 5.0) & ~wall
    ct[nodule] = 40.0
    f = nodule_at(ct, SPACING, centre + [0, 0, 2])
    mask = np.zeros(SHAPE, bool)
    (z0, y0, x0), (z1, y1, x1) = f.bbox_voxel
    mask[z0:z1, y0:y1, x0:x1] = f.mask
    assert (mask & wall).sum() <= 0.1 * mask.sum()  # a sliver of the wall at most, not the wall itself
    assert 2 * (mask & nodule).sum() / (mask.sum() + nodule.sum()) > 0.75


def test_a_ground_glass_nodule_is_measured_and_read_as_ground_glass():
    ct = _lung()
    nodule = _ball(CENTRE, 6.0)
    ct[nodule] = -600.0
    f = nodule_at(ct, SPACING, CENTRE)
    assert f.attenuation == "ground-glass" and f.lung_rads_by_attenuation == "2"
    assert f.mean_diameter_mm == pytest.approx(12.0, abs=1.0)


def test_marks_that_are_no_nodule_are_refused_with_a_message():
    ct = _lung()
    with pytest.raises(InputError, match="no nodule at the point"):
        nodule_at(ct, SPACING, CENTRE)  # plain lung
    ct[_vessel_along_x(CENTRE, 2.0)] = 40.0
    with pytest.raises(InputError, match="runs on beyond 30 mm"):
        nodule_at(ct, SPACING, CENTRE)  # a vessel running through the whole volume
    short = _lung()  # a vessel segment 24 mm long and 3 mm wide, ending inside the lung
    segment = _vessel_along_x(CENTRE, 1.5)
    segment[:, :, : 40 - 15] = False
    segment[:, :, 40 + 15:] = False
    short[segment] = 40.0
    with pytest.raises(InputError, match="a tube, not a nodule"):
        nodule_at(short, SPACING, CENTRE)
    with pytest.raises(InputError, match="outside the volume"):
        nodule_at(ct, SPACING, (-3.0, 10.0, 10.0))
    with pytest.raises(InputError, match="no lung around the point"):
        nodule_at(np.full(SHAPE, 40.0, np.float32), SPACING, CENTRE)  # soft tissue only
    with pytest.raises(InputError, match="3D volume"):
        nodule_at(ct[0], SPACING, CENTRE)


def test_world_centre_follows_the_affine():
    ct = _lung()
    ct[_ball(CENTRE, 4.0)] = 40.0
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-100.0, 20.0, 5.0]
    f = nodule_at(ct, SPACING, CENTRE, affine)
    np.testing.assert_allclose(f.center_mm, affine[:3, :3] @ np.asarray(f.center_voxel) + affine[:3, 3], atol=0.02)


@pytest.mark.parametrize("slice_mm", [2.0, 2.5, 3.0])
def test_a_small_nodule_on_thick_slices_keeps_its_first_and_last_slices(slice_mm):
    # the vessel cut's opening takes a small ball's end slices; the rim gives back one slice
    from napari_medai.postprocess.findings import mask_measurements

    spacing = (slice_mm, 0.7, 0.7)
    shape = (int(60 / slice_mm), 80, 80)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    rng = np.random.default_rng(1)
    for _ in range(4):
        centre = np.array(shape) / 2 + rng.uniform(-0.5, 0.5, 3)
        radius = rng.uniform(2.5, 4.0)
        ball = sum(((g - c) * s) ** 2 for g, c, s in zip((zz, yy, xx), centre, spacing)) <= radius ** 2
        ct = np.where(ball, 40.0, -850.0).astype(np.float32)
        found, truth = nodule_at(ct, spacing, centre), mask_measurements(ball, spacing)
        assert found.mask.shape[0] == np.ptp(np.flatnonzero(ball.any(axis=(1, 2)))) + 1
        assert found.volume_ml == pytest.approx(truth["volume_ml"], rel=0.1)


def test_the_largest_nodule_to_measure_is_a_bound_on_the_measured_size():
    ct = _lung()
    ct[_ball(CENTRE, 6.0)] = 40.0  # 12 mm across
    assert nodule_at(ct, SPACING, CENTRE, max_diameter_mm=14).diameter_mm == pytest.approx(12, abs=1.0)
    with pytest.raises(InputError, match="more than the 10 mm largest nodule"):
        nodule_at(ct, SPACING, CENTRE, max_diameter_mm=10)
    for bad in (0, -5, float("nan")):
        with pytest.raises(InputError, match="positive size in mm"):
            nodule_at(ct, SPACING, CENTRE, max_diameter_mm=bad)


def test_nan_around_the_point_and_a_point_off_the_volume_get_plain_messages():
    ct = _lung()
    ct[_ball(CENTRE, 4.0)] = 40.0
    ct[tuple(CENTRE.astype(int))] = np.nan
    with pytest.raises(InputError, match="NaN"):
        nodule_at(ct, SPACING, CENTRE)
    with pytest.raises(InputError, match=r"the point \(-3\.0, 10\.0, 10\.5\) lies outside"):
        nodule_at(ct, SPACING, np.array([-3.0, 10.0, 10.5]))


def test_a_spacing_that_is_missing_or_not_a_voxel_size_is_refused_first():
    ct = _lung()
    ct[_ball(CENTRE, 4.0)] = 40.0
    for spacing, message in ((None, "spacing must be 3 numbers"), ((0.0, 0.8, 0.8), "must be positive"),
                             ((-1.0, 0.8, 0.8), "must be positive"), ((0.8, 0.8), "must have 3 values")):
        with pytest.raises(InputError, match=message):
            nodule_at(ct, spacing, CENTRE)


def test_a_ground_glass_nodule_of_30_mm_or_more_is_measured_and_a_solid_one_refused():
    # Lung-RADS v2022: a non-solid nodule of 30 mm or more is category 3, no mass; the 30 mm limit
    # refused it (found by an audit helper). A solid one that size stays refused (a mass).
    from napari_medai.postprocess.seeded import nodule_at

    spacing = (1.0, 0.7, 0.7)
    volume = np.full((90, 160, 160), 40.0, np.float32)
    volume[3:87, 5:155, 5:155] = -850.0
    z, y, x = np.ogrid[0:90, 0:160, 0:160]
    r = np.sqrt(((z - 45) * spacing[0]) ** 2 + ((y - 80) * spacing[1]) ** 2 + ((x - 80) * spacing[2]) ** 2)
    ggn = volume.copy()
    ggn[r <= 16] = -600.0
    found = nodule_at(ggn, spacing, (45, 80, 80))
    assert found.attenuation == "ground-glass" and found.lung_rads_by_attenuation == "3"
    assert 31 <= found.mean_diameter_mm <= 34
    solid = volume.copy()
    solid[r <= 16] = 40.0
    with pytest.raises(InputError, match="more than the 30 mm largest nodule|runs on beyond 30 mm"):
        nodule_at(solid, spacing, (45, 80, 80))
    with pytest.raises(InputError, match="30 mm"):  # a caller's own limit is not widened past itself
        nodule_at(ggn, spacing, (45, 80, 80), ground_glass_max_mm=30.0)
    huge = volume.copy()  # a ground-glass mass 64 mm long: refused, naming the limit of 30 mm (not 50)
    huge[((z - 45) * spacing[0] / 15) ** 2 + ((y - 80) * spacing[1] / 15) ** 2 + ((x - 80) * spacing[2] / 32) ** 2
         <= 1] = -600.0
    with pytest.raises(InputError, match="more than the 30 mm largest nodule|runs on beyond 30 mm"):
        nodule_at(huge, spacing, (45, 80, 80))
