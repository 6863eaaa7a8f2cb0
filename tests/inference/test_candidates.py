"""Candidates of a probability map, their patches, and the classifier that scores them."""

import numpy as np
import pytest
import torch

from napari_medai.inference.candidates import classify_patches, extract_patches, find_candidates, patch_offsets


def test_components_become_candidates_with_centre_volume_and_peak():
    prob = np.zeros((10, 20, 20), np.float32)
    prob[2:4, 3:6, 3:6] = 0.9  # 2 x 3 x 3 voxels
    prob[7, 15, 15] = 0.6
    prob[7, 2, 18] = 0.4  # below the threshold: not a candidate
    cands = find_candidates(prob, (2.0, 1.0, 0.5), threshold=0.5)
    assert len(cands) == 2
    np.testing.assert_allclose(cands.centres[0], [2.5, 4.0, 4.0])
    np.testing.assert_allclose(cands.centres[1], [7.0, 15.0, 15.0])
    np.testing.assert_allclose(cands.volumes_mm3(), [18 * 1.0, 1.0])
    np.testing.assert_allclose(cands.peaks(prob), [0.9, 0.6])
    assert cands.labels[2, 3, 3] == 1 and cands.labels[7, 15, 15] == 2 and cands.labels[7, 2, 18] == 0


def test_no_candidates_in_an_empty_map():
    cands = find_candidates(np.zeros((4, 8, 8), np.float32), (1, 1, 1))
    assert len(cands) == 0 and cands.centres.shape == (0, 3) and not cands.labels.any()


def test_patches_cover_the_same_millimetres_whatever_the_voxel_size():
    # a ramp in z measured in mm: the patch of a 3 mm-slice scan and of a 1 mm-slice scan agree
    def ramp(dz, n):
        return np.broadcast_to((np.arange(n) * dz)[:, None, None], (n, 40, 40)).astype(np.float32)

    thick = extract_patches([ramp(3.0, 30)], [[15.0, 20.0, 20.0]], (3.0, 1.0, 1.0), shape=(4, 8, 8), step_mm=(2.0, 1.0, 1.0))
    thin = extract_patches([ramp(1.0, 90)], [[45.0, 20.0, 20.0]], (1.0, 1.0, 1.0), shape=(4, 8, 8), step_mm=(2.0, 1.0, 1.0))
    assert thick.shape == (1, 1, 4, 8, 8)
    np.testing.assert_allclose(thick[0, 0, :, 0, 0], [42.0, 44.0, 46.0, 48.0], atol=1e-4)  # 45 mm -3, -1, +1, +3
    np.testing.assert_allclose(thick, thin, atol=1e-4)


def test_patch_grid_is_centred_and_edges_repeat():
    offsets = patch_offsets((2, 4, 4), (2.0, 1.0, 1.0), (1.0, 0.5, 0.5))
    np.testing.assert_allclose(offsets.mean(1), 0.0)
    np.testing.assert_allclose(np.unique(offsets[0]), [-1.0, 1.0])  # +-1 mm at 1 mm slices
    np.testing.assert_allclose(np.unique(offsets[1]), [-3, -1, 1, 3])  # +-0.5, 1.5 mm at 0.5 mm pixels
    vol = np.zeros((4, 4, 4), np.float32)
    vol[0] = 5.0
    patch = extract_patches([vol, vol * 2], [[0.0, 2.0, 2.0]], (1, 1, 1), shape=(4, 2, 2), step_mm=(1, 1, 1))
    assert patch.shape == (1, 2, 4, 2, 2)
    np.testing.assert_allclose(patch[0, 0, :2], 5.0)  # beyond the first slice: the edge value
    np.testing.assert_allclose(patch[0, 1], 2 * patch[0, 0])


class MeanScore(torch.nn.Module):
    """Logit = 10 * (mean of channel 0 - 0.5)."""

    def forward(self, x):
        return 10.0 * (x[:, :1].mean(dim=(2, 3, 4)) - 0.5)


def test_classifier_scores_each_patch_in_batches():
    patches = np.stack([np.full((1, 2, 2, 2), v, np.float32) for v in (0.0, 0.5, 1.0, 0.9, 0.1)])
    scores = classify_patches(MeanScore(), patches, batch_size=2)
    expected = 1 / (1 + np.exp(-10 * (np.array([0.0, 0.5, 1.0, 0.9, 0.1]) - 0.5)))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_classifier_stops_when_cancelled():
    from napari_medai.errors import Cancelled
    from napari_medai.inference import CancelToken

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        classify_patches(MeanScore(), np.zeros((3, 1, 2, 2, 2), np.float32), cancel=token)


def test_first_pass_lesions_come_first_and_replace_the_components_they_touch():
    prob = np.zeros((10, 30, 30), np.float32)
    prob[2:5, 2:20, 4:7] = 0.9  # a nodule joined to a vessel in the high-recall map ...
    prob[7:9, 24:27, 24:27] = 0.8  # ... and a small candidate elsewhere
    first = np.zeros(prob.shape, bool)
    first[2:5, 2:6, 4:7] = True  # the precise pass outlines the nodule alone
    first[8, 10, 10] = True  # and a lesion the high-recall map does not have
    cands = find_candidates(prob, (1.0, 1.0, 1.0), 0.5, first=first)
    assert len(cands) == 3
    np.testing.assert_allclose(cands.centres[0], [3.0, 3.5, 5.0])  # the nodule's own centre, not the joint one
    np.testing.assert_allclose(cands.centres[1], [8.0, 10.0, 10.0])
    np.testing.assert_allclose(cands.centres[2], [7.5, 25.0, 25.0])
    assert cands.labels[3, 15, 5] == 0  # the vessel part is no candidate
    np.testing.assert_allclose(cands.volumes_mm3(), [36, 1, 18])


def test_a_nodule_on_a_vessel_gets_a_candidate_of_its_own():
    prob = np.zeros((12, 40, 40), np.float32)
    prob[5:7, 19:21, 2:38] = 0.9  # a 2 x 2 voxel vessel, 36 mm long
    zz, yy, xx = np.ogrid[:12, :40, :40]
    nodule = (zz - 6) ** 2 + (yy - 23) ** 2 + (xx - 20) ** 2 <= 9  # a 6 mm ball touching it
    prob[nodule] = 0.95
    one = find_candidates(prob, (1.0, 1.0, 1.0), 0.5)
    assert len(one) == 1 and np.linalg.norm(one.centres[0] - [6, 23, 20]) < 1.0  # the thickest point
    many = find_candidates(prob, (1.0, 1.0, 1.0), 0.5, separation_mm=5.0)
    assert len(many) > 3 and (many.component == 1).all()
    d = np.linalg.norm(many.centres - [6, 23, 20], axis=1)
    assert d.min() < 1.0 and many.radii_mm[np.argmin(d)] == many.radii_mm.max()
    # candidates keep their distance, and each region is the part of the component near it
    gaps = np.linalg.norm(many.centres[:, None] - many.centres[None], axis=2)
    assert gaps[np.triu_indices(len(many), 1)].min() >= 5.0
    box = many.boxes[int(np.argmin(d))]
    nod = many.region(int(np.argmin(d)))
    assert nod.sum() < (many.labels[box] == 1).sum() and nodule[box][nod].mean() > 0.5
    painted = many.paint(np.ones(len(many), bool))
    assert not (painted & (prob <= 0.5)).any() and painted.sum() > 0.9 * (prob > 0.5).sum()


def test_a_candidate_is_centred_on_its_component_not_between_two_equal_parts():
    """The mean of tied deepest voxels fell on the strand between two equal balls (the region then
    missed both) or in a ring's hole (an empty region measured as its whole box); found by an
    audit helper."""
    from napari_medai.postprocess.findings import findings_from_scored_components

    prob = np.zeros((20, 20, 60), np.float32)
    zz, yy, xx = np.ogrid[:20, :20, :60]
    for cx in (12, 47):
        prob[(zz - 10) ** 2 + (yy - 10) ** 2 + (xx - cx) ** 2 <= 9] = 0.9
    prob[10, 10, 12:48] = 0.9  # the strand
    found = find_candidates(prob, (1.0, 1.0, 1.0), 0.5)
    np.testing.assert_allclose(found.centres[0], (10, 10, 12))  # the deepest voxel nearest the mean: a ball's centre
    assert found.region(0).sum() > 100  # a ball, not 14 voxels of strand
    ring = np.zeros((9, 40, 40), np.float32)
    yy, xx = np.ogrid[:40, :40]
    distance = np.sqrt((yy - 20) ** 2 + (xx - 20) ** 2)
    ring[3:6][:, (distance >= 12) & (distance <= 14)] = 0.9
    found = find_candidates(ring, (1.0, 1.0, 1.0), 0.5)
    assert found.labels[tuple(np.round(found.centres[0]).astype(int))] == 1 and found.region(0).any()
    finding = findings_from_scored_components(found, ring, np.array([0.9]), (1.0, 1.0, 1.0))[0]
    assert finding.volume_ml < 0.528  # measured on its region, not on the whole 2523-voxel box
