"""The shipped chest-CT models on small crops: a phantom it never saw and the real lung1 nodule."""

import numpy as np
import pytest

from napari_medai.api import detect, segment
from napari_medai.io import read_volume
from napari_medai.io.resources import sample_path
from napari_medai.models import list_models

pytestmark = pytest.mark.integration
SHIPPED = {c.name for c in list_models()}
needs = pytest.mark.skipif(
    not {"chest-ct-lung-nodule", "lung-nodule-detection"} <= SHIPPED, reason="lung models are not installed"
)


@pytest.fixture(scope="module")
def lung1_crop():
    """All 48 slices of lung1 around its nodule (rows 221-246, cols 206-229 of the sample).

    The crop (142 mm square) is wider than the model's 96 mm window, as a whole scan would be:
    a crop smaller than the window gets padded with air and is no fair test."""
    ct = read_volume(sample_path("lung1_ct"))
    mask = read_volume(sample_path("lung1_nodule_mask")).data > 0
    box = (slice(None), slice(110, 360), slice(90, 340))
    return ct.data[box], mask[box], ct.spacing


@needs
def test_segmentation_finds_the_lungs_of_an_unseen_phantom():
    from napari_medai.phantoms import make_chest_ct
    from napari_medai.training.seg_data import chest_targets

    # a routine acquisition (35 cm field of view, 2.5 mm slices), seed never used in training
    ph = make_chest_ct(9999, shape=(64, 384, 384), spacing=(2.5, 0.9, 0.9), n_nodules=0)
    res = segment(ph.hu, ph.spacing)
    assert res.labels.shape == ph.hu.shape
    ref = chest_targets(ph.labels) == 1
    pred = res.labels == 1
    assert 2 * (pred & ref).sum() / (pred.sum() + ref.sum()) > 0.85
    assert [r["name"] for r in res.volumes] == ["lung", "nodule"]


@needs
def test_segmentation_overlaps_the_real_lung1_nodule(lung1_crop):
    hu, truth, spacing = lung1_crop
    res = segment(hu, spacing)
    nodule = res.labels == 2
    assert 2 * (nodule & truth).sum() / (nodule.sum() + truth.sum()) > 0.3
    assert res.lesion_probability[truth].mean() > 0.5
    # the nodule's component is confident (p >= 0.99), so its outline is the refined half-maximum
    # one, and the rows add up to the nodule class's volume
    at = [r for r in res.lesion_outlines if truth[tuple(int(round(c)) for c in r["center_voxel"])]]
    assert len(at) == 1 and at[0]["outline"] == "half-maximum" and at[0]["peak_probability"] >= 0.99
    assert sum(r["voxels"] for r in res.lesion_outlines) == int(nodule.sum())
    raw = segment(hu, spacing, postprocess=False)
    assert raw.lesion_outlines and {r["outline"] for r in raw.lesion_outlines} == {"network"}


@needs
def test_the_real_trachea_is_not_lung(lung1_crop):
    """lung1's trachea (slices 36-42; rows 147-205, columns 248-280 of the sample) is air in the
    mediastinum, which the network labels lung; the card's clean-up gives it back."""
    hu, _truth, spacing = lung1_crop
    lumen = np.zeros(hu.shape, bool)
    lumen[36:43, 147 - 110:205 - 110, 248 - 90:280 - 90] = True
    lumen &= hu < -950
    assert lumen.sum() > 1000
    from napari_medai.models import load_model

    without = load_model("chest-ct-lung-nodule")  # a private copy: no cache is shared
    without.card.extra = {k: v for k, v in without.card.extra.items() if k != "extrapulmonary_air"}
    before = segment(hu, spacing, model=without).labels
    assert (before[lumen] == 1).mean() > 0.5  # what the network draws, and the rest of the clean-up keeps
    labels = segment(hu, spacing).labels
    assert (labels[lumen] == 1).mean() < 0.05
    # only air left the lungs (the removed voxels are air, and a small share of the lungs)
    removed = (before == 1) & (labels != 1)
    assert np.median(hu[removed]) < -950 and (labels[removed] == 0).all()
    assert removed.sum() < 0.01 * (before == 1).sum()
    np.testing.assert_array_equal(labels == 2, before == 2)  # the nodules are untouched


@needs
def test_detection_ranks_the_real_lung1_nodule_first(lung1_crop):
    hu, truth, spacing = lung1_crop
    found = detect(hu, spacing, max_findings=5)
    assert found, "no finding on a crop holding a 14 mm nodule"
    z, y, x = np.rint(found[0].center_voxel).astype(int)
    assert truth[max(z - 1, 0) : z + 2, y - 1 : y + 2, x - 1 : x + 2].any()
    assert 8 <= found[0].diameter_mm <= 25 and found[0].lung_rads in {"4A", "4B"}
    # a solid tumour: read solid, so its category by attenuation is its size category
    assert found[0].attenuation == "solid" and found[0].lung_rads_by_attenuation == found[0].lung_rads
    # the card refines the finding's mask: it is measured on the CT's half-maximum edge
    assert found[0].outline == "half-maximum"
