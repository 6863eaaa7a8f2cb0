import numpy as np
import pytest

from napari_medai.errors import InputError
from napari_medai.io.volume import Volume
from napari_medai.phantoms import LABEL_NAMES, make_chest_ct
from napari_medai.phantoms import nodules as nod
from napari_medai.phantoms import tissues as T

SMALL = dict(shape=(32, 96, 96), spacing=(2.5, 1.6, 1.6))


@pytest.fixture(scope="module")
def phantom():
    return make_chest_ct(7, n_nodules=3, **SMALL)


def test_same_seed_gives_identical_volumes(phantom):
    again = make_chest_ct(7, n_nodules=3, **SMALL)
    assert np.array_equal(phantom.hu, again.hu)
    assert np.array_equal(phantom.labels, again.labels)
    assert phantom.nodules == again.nodules
    other = make_chest_ct(8, n_nodules=3, **SMALL)
    assert not np.array_equal(phantom.hu, other.hu)


def test_types_shapes_and_geometry(phantom):
    assert phantom.hu.dtype == np.int16 and phantom.hu.shape == SMALL["shape"]
    assert phantom.labels.dtype == np.uint8 and phantom.labels.shape == SMALL["shape"]
    assert phantom.low_dose is None
    assert np.allclose(np.diag(phantom.affine)[:3], SMALL["spacing"])
    vol = phantom.to_volume()
    assert isinstance(vol, Volume) and vol.modality == "CT"
    assert np.allclose(vol.spacing, SMALL["spacing"])
    assert set(np.unique(phantom.labels)) <= set(LABEL_NAMES)


def test_class_hu_ranges(phantom):
    hu, lab = phantom.hu.astype(float), phantom.labels
    assert -900 <= hu[lab == T.LUNG].mean() <= -700
    for soft in (T.HEART, T.LIVER):
        assert 0 <= hu[lab == soft].mean() <= 100
    assert hu[lab == T.BONE].mean() > 300
    assert -140 <= hu[lab == T.FAT].mean() <= -60
    assert hu[lab == T.BACKGROUND].mean() < -950
    # Every main structure is present in a chest slab.
    for k in (T.LUNG, T.VESSEL, T.AIRWAY, T.BONE, T.FAT, T.SOFT_TISSUE):
        assert (lab == k).sum() > 20, LABEL_NAMES[k]


@pytest.mark.parametrize("seed", [1, 2])
def test_listed_nodules_are_labelled_with_their_volume(seed):
    ph = make_chest_ct(seed, n_nodules=4, **SMALL)
    assert len(ph.nodules) >= 2
    voxel_ml = np.prod(SMALL["spacing"]) / 1000
    for n in ph.nodules:
        k, j, i = np.rint(n["center_voxel"]).astype(int)
        window = ph.labels[max(k - 1, 0) : k + 2, max(j - 2, 0) : j + 3, max(i - 2, 0) : i + 3]
        assert (window == T.NODULE).any(), n
        assert n["type"] in nod.TYPES and n["shape"] in nod.SHAPES and n["location"] in nod.LOCATIONS
        assert 3.0 <= n["diameter_mm"] <= 30.0
        # The labelled voxels around the centre match the stated volume within 15 %.
        from scipy import ndimage

        comp, _ = ndimage.label(ph.labels == T.NODULE)
        ids = np.unique(comp[max(k - 1, 0) : k + 2, max(j - 2, 0) : j + 3, max(i - 2, 0) : i + 3])
        ids = ids[ids > 0]
        labelled_ml = np.isin(comp, ids).sum() * voxel_ml
        assert abs(labelled_ml - n["volume_ml"]) <= 0.15 * n["volume_ml"], n
        world = ph.affine @ np.r_[n["center_voxel"], 1.0]
        assert np.allclose(world[:3], n["center_mm"], atol=1e-2)
    total = sum(n["label_voxels"] for n in ph.nodules)
    assert (ph.labels == T.NODULE).sum() == total


def test_nodules_are_visible_in_the_image(phantom):
    hu, lab = phantom.hu.astype(float), phantom.labels
    lung = hu[lab == T.LUNG].mean()
    for n in phantom.nodules:
        k, j, i = np.rint(n["center_voxel"]).astype(int)
        assert hu[k, j, i] > lung + 150, n


def test_zero_nodules_and_low_dose():
    ph = make_chest_ct(3, n_nodules=0, low_dose_photons=2e3, shape=(8, 96, 96), spacing=SMALL["spacing"])
    assert ph.nodules == [] and not (ph.labels == T.NODULE).any()
    assert ph.low_dose.dtype == np.int16 and ph.low_dose.shape == ph.hu.shape
    soft = ph.labels == T.LIVER if (ph.labels == T.LIVER).sum() > 200 else ph.labels == T.SOFT_TISSUE
    noise_full = (ph.hu.astype(float) - ph.noise_free)[soft].std()
    noise_low = (ph.low_dose.astype(float) - ph.noise_free)[soft].std()
    assert noise_low > noise_full


def test_max_nodule_diameter_gives_a_small_nodule_set():
    ph = make_chest_ct(5, n_nodules=6, max_nodule_diameter_mm=6.0, shape=(40, 128, 128), spacing=(2.0, 1.0, 1.0))
    assert len(ph.nodules) >= 3 and all(3.0 <= n["diameter_mm"] <= 6.0 for n in ph.nodules)
    default = make_chest_ct(5, n_nodules=6, shape=(40, 128, 128), spacing=(2.0, 1.0, 1.0))
    assert max(n["diameter_mm"] for n in default.nodules) > 6.0  # the default range reaches 30 mm


@pytest.mark.parametrize(
    "kwargs",
    [dict(shape=(0, 8, 8)), dict(shape=(4, 8, 8)), dict(spacing=(0, 1, 1)), dict(n_nodules=-1), dict(n_nodules=2.5),
     dict(low_dose_photons=0), dict(low_dose_photons="many"), dict(n_nodules="2"), dict(shape="big"),
     dict(max_nodule_diameter_mm=2.0), dict(max_nodule_diameter_mm=31.0)],
)
def test_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError):
        make_chest_ct(0, **kwargs)
