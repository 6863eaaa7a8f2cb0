"""check_modality: a CT model refuses values that cannot be Hounsfield units."""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from napari_medai.errors import ModelError
from napari_medai.inference.modality import (
    SAMPLE_VOXELS,
    check_file_modality,
    check_modality,
    check_stated_modality,
    regular_sample,
)
from napari_medai.io import read_volume
from napari_medai.io.resources import sample_path

CT_MODEL = SimpleNamespace(name="a-ct-model", modality="CT")
NOT_HU = "are not on that scale"


def _chest_slice(rng):
    hu = np.full((32, 32), -1000.0, np.float32)
    hu[4:28, 4:28] = 40.0
    hu[10:20, 6:14] = -850.0  # a lung
    return hu + rng.normal(0.0, 20.0, hu.shape).astype(np.float32)


@pytest.fixture(scope="module")
def lung1():
    return read_volume(sample_path("lung1_ct")).data  # int16, 48 x 386 x 512


@pytest.fixture(scope="module")
def lung1_crop(lung1):
    """16 slices of lung1's chest, 128 x 128 pixels, much of them lung."""
    return lung1[16:32, 120:248, 160:288]


def test_a_ct_model_refuses_a_ct_scaled_for_deep_learning_or_a_z_scored_mr():
    rng = np.random.default_rng(0)
    hu = _chest_slice(rng)
    check_modality(CT_MODEL, hu)  # HU: accepted
    check_modality(CT_MODEL, hu[6:26, 2:20])  # a crop that holds some lung
    z_scored_mr = rng.normal(0.0, 1.0, (32, 32)).astype(np.float32)
    for values in (hu / 1000.0, z_scored_mr):  # negatives, but a range of a few units
        with pytest.raises(ModelError, match="does not look like Hounsfield units"):
            check_modality(CT_MODEL, values)


def test_a_crop_without_air_passes_on_its_fat_or_noise_but_not_on_a_background_a_few_units_below_0():
    rng = np.random.default_rng(0)
    soft_tissue = rng.normal(40.0, 30.0, (4, 32, 32))  # CT noise: 2 % of the voxels under -20 HU
    check_modality(CT_MODEL, soft_tissue)
    check_modality(CT_MODEL, np.where(rng.random((4, 32, 32)) > 0.9, -100.0, 40.0))  # fat and muscle
    mr = np.abs(rng.normal(0.0, 5.0, (4, 32, 32)))
    mr[:, 8:24, 8:24] += 300.0
    mr[mr < 2.0] = -3.0  # the background a resampling left a few units below 0
    with pytest.raises(ModelError, match=f"{NOT_HU}: under 0.1% of its voxels lie between -1500 and -20"):
        check_modality(CT_MODEL, mr)


def test_the_lung1_sample_crops_of_it_and_phantoms_are_hounsfield_units(lung1, lung1_crop):
    from napari_medai.phantoms import make_chest_ct

    check_modality(CT_MODEL, lung1)
    check_modality(CT_MODEL, lung1_crop)
    check_modality(CT_MODEL, lung1_crop.astype(np.float32))
    check_modality(CT_MODEL, lung1[20:28, 200:240, 300:340])  # a small crop, a corner of it lung
    for seed in range(3):
        ph = make_chest_ct(seed, shape=(8, 48, 48), spacing=(10.0, 7.0, 7.0), low_dose_photons=2e3 if seed else None)
        check_modality(CT_MODEL, ph.hu)
        if seed:
            check_modality(CT_MODEL, ph.low_dose)


@pytest.mark.parametrize("padding", [-1024, -2000, -2048, -3024, -32768])
def test_padding_outside_a_circular_field_of_view_is_not_taken_for_values_below_air(lung1_crop, padding):
    ct = lung1_crop.copy()
    yy, xx = np.mgrid[:128, :128]
    ct[:, (yy - 64) ** 2 + (xx - 64) ** 2 > 60 ** 2] = padding  # 30 % of the crop
    check_modality(CT_MODEL, ct)
    # resampled (linear), the edge of the field of view leaves a rim of values between padding and air
    check_modality(CT_MODEL, ndimage.zoom(ct.astype(np.float32), (1, 0.77, 0.77), order=1))


def test_metal_is_hounsfield_units_clipped_or_on_an_extended_scale(lung1_crop):
    for metal in (3071, 25000):
        ct = lung1_crop.astype(np.int32)
        ct[4:12, 40:60, 50:66] = metal  # 2 % of the crop: a pacemaker, a spinal rod
        check_modality(CT_MODEL, ct)


def test_a_ct_on_another_scale_or_an_mr_with_a_negative_background_is_refused(lung1_crop):
    hu = lung1_crop.astype(np.float32)
    for values in (hu * 10, hu * 1e30):  # a wrong rescale slope: lungs at -8500
        with pytest.raises(ModelError, match=f"{NOT_HU}: .* lie below -1500 and hold no padding value"):
            check_modality(CT_MODEL, values)
    with pytest.raises(ModelError, match=f"{NOT_HU}: .* lie above 4000"):
        check_modality(CT_MODEL, np.where(hu > 0, np.float32(3e38), hu))
    raw = lung1_crop.astype(np.int16) + 1024  # stored without its rescale, padded with -2000 outside
    raw[:, :, :10] = -2000
    with pytest.raises(ModelError, match=f"{NOT_HU}: under 0.1%.*nothing but padding lies below 0, as in a CT saved without its rescale"):
        check_modality(CT_MODEL, raw)
    mr = read_volume(sample_path("colin27_t1")).data[80:88].astype(np.float32)
    mr[mr == 0] = -3.0  # a background a few units below 0, as a resampling or bias correction leaves
    assert mr.min() < 0 and np.ptp(mr) > 50  # what the check used to accept as HU
    with pytest.raises(ModelError, match=f"{NOT_HU}: under 0.1%.*just below 0, as an MR.s background does"):
        check_modality(CT_MODEL, mr)


def test_large_volumes_are_counted_on_a_regular_sample():
    ct = np.full((300, 512, 512), -1000, np.int16)
    ct[:, 100:400, 100:400] = 40
    sample = regular_sample(ct)
    assert sample.base is ct and SAMPLE_VOXELS * 0.5 < sample.size <= SAMPLE_VOXELS  # a view, not a copy
    check_modality(CT_MODEL, ct)
    small = np.zeros((4, 8, 8))
    assert regular_sample(small) is small


def test_models_of_another_modality_are_not_held_to_hounsfield_units():
    narrow = np.random.default_rng(0).normal(0.0, 1.0, (16, 16))
    check_modality(SimpleNamespace(name="mr", modality="MR"), narrow)
    check_modality(SimpleNamespace(name="any", modality="any"), narrow)


def test_a_file_that_says_mr_is_not_run_through_a_ct_model(lung1_crop):
    # values that pass as HU: the header decides, and names the option that corrects it
    with pytest.raises(ModelError, match=r"ct.nii.gz is an MR image by its header, but model 'a-ct-model' is made "
                                         r"for CT: if it is a CT after all, pass --modality CT"):
        check_file_modality(CT_MODEL, "MR", lung1_crop, "ct.nii.gz", override="--modality")
    with pytest.raises(ModelError, match="is made for CT: choose a model made for MR$"):
        check_file_modality(CT_MODEL, "MR", lung1_crop, "ct.nii.gz")
    for stated in ("CT", "unknown"):
        check_file_modality(CT_MODEL, stated, lung1_crop, "ct.nii.gz")
    check_file_modality(SimpleNamespace(name="any", modality="any"), "MR", lung1_crop, "ct.nii.gz")
    # values that are not HU get the values' own message
    with pytest.raises(ModelError, match=NOT_HU):
        check_file_modality(CT_MODEL, "MR", lung1_crop * 10.0, "ct.nii.gz")


def test_check_stated_modality_checks_every_card_it_is_given(lung1_crop):
    mr_model = SimpleNamespace(name="an-mr-model", modality="MR")
    with pytest.raises(ModelError) as refused:  # the MR card passes, None is skipped, the CT card is refused
        check_stated_modality("MR", [mr_model, None, CT_MODEL], lung1_crop, "'t1'",
                              said_by="the file it was opened from")
    assert str(refused.value) == ("'t1' is an MR image by the file it was opened from, but model 'a-ct-model' "
                                  "is made for CT: choose a model made for MR")
    with pytest.raises(ModelError, match=r"^t1.nii.gz is an MR image by its header, but model 'a-ct-model'"):
        check_stated_modality("MR", (CT_MODEL,), lung1_crop, "t1.nii.gz")
    for stated in ("CT", None, "unknown"):
        check_stated_modality(stated, [CT_MODEL], lung1_crop, "t1.nii.gz")

    def cards():  # not iterated for a file that states no modality: no card is read
        raise AssertionError("cards read")
        yield
    check_stated_modality(None, cards(), lung1_crop, "t1.nii.gz")


def _ct_card():
    from types import SimpleNamespace

    return SimpleNamespace(name="ct-model", modality="CT")


def test_soft_tissue_crops_without_air_or_fat_pass_on_their_noise():
    """A liver crop at 55 +- 20 HU and a contrast-enhanced mediastinum reach only -20 to -40 in a
    few voxels: the "0.1 % clearly below 0" rule alone refused them as an MR's background."""
    rng = np.random.default_rng(0)
    liver = (55 + 20 * rng.standard_normal((40, 64, 64))).round().astype(np.int16)
    mediastinum = 50 + 15 * rng.standard_normal((40, 64, 64))
    mediastinum[:, 20:40, 20:40] = 350 + 20 * rng.standard_normal((40, 20, 20))
    for crop in (liver, mediastinum.round().astype(np.int16)):
        check_modality(_ct_card(), crop)


def test_an_unlisted_padding_value_is_padding_though_a_resampling_overshoots_below_it():
    rng = np.random.default_rng(1)
    head = np.full((20, 64, 64), -1000.0, np.float32)
    head[:, 12:52, 12:52] = 35 + 5 * rng.standard_normal((20, 40, 40))
    head[:, :, :20] = -2500.0  # outside the field of view: not in PADDING_HU, and not the minimum below
    head[0, 0, 0] = -2600.0
    check_modality(_ct_card(), head)
    x10 = (rng.normal(-700, 300, (20, 64, 64)) * 10).astype(np.float32)
    with pytest.raises(ModelError, match=r"wrong rescale \(e.g. HU x 10\)"):  # many values, none of them padding
        check_modality(_ct_card(), x10)


def test_an_mr_background_and_a_ct_without_its_rescale_are_still_refused():
    rng = np.random.default_rng(2)
    mr = np.full((20, 64, 64), -3.0, np.float32)
    mr[:, 10:54, 10:54] = 300 + 20 * rng.standard_normal((20, 44, 44))
    with pytest.raises(ModelError, match="just below 0, as an MR's background does"):
        check_modality(_ct_card(), mr)
    raw = rng.uniform(0, 2000, (20, 64, 64)).astype(np.float32)
    raw[:, :5] = -2000.0
    with pytest.raises(ModelError, match="nothing but padding lies below 0"):
        check_modality(_ct_card(), raw)
