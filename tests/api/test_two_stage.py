"""Two-stage detection and the segmentation's second opinion, with fixed-rule models.

Scene (1 mm voxels, lung-like -850 HU): A, a small bright nodule (200 HU); B, a bright rod
(a vessel, 200 HU); C, a small faint nodule (-100 HU).  The first-pass segmenter calls
everything above 0 HU a nodule (A and B, not C); the candidate network everything above
-300 HU (A, B, C); the classifier accepts blobs that fill little of their patch (A, C).
"""

import numpy as np
import pytest

from fixed_rule_models import classifier_card, detection_card, install, segmentation_card, unit


def _scene():
    vol = np.full((16, 40, 40), -850.0, np.float32)
    vol[4:7, 5:8, 5:8] = 200.0  # A
    vol[4:7, 25:28, 2:38] = 200.0  # B
    vol[11:14, 15:18, 20:23] = -100.0  # C
    return vol


@pytest.fixture
def models(tmp_path):
    clf = install(classifier_card(), tmp_path)
    det = detection_card("rule-two-stage", roi_size=(8, 32, 32), nodule_above=unit(-300))
    det.extra.update(classifier=str(clf), candidate_threshold=0.5)
    det_path = install(det, tmp_path)
    seg = segmentation_card("rule-first-pass", roi_size=(8, 32, 32), nodule_above=unit(0))
    seg.extra.update(lesion_hosts=[1], confirm={"detector": str(det_path), "threshold": 0.5, "drop_rejected": True})
    return {"detector": det_path, "seg": install(seg, tmp_path)}


def test_two_stage_detection_ranks_candidates_by_the_classifier(models):
    from napari_medai import detect

    found = detect(_scene(), (1.0, 1.0, 1.0), model=str(models["detector"]), max_findings=None)
    assert len(found) == 3  # every candidate is reported, with the classifier's score
    by_place = {("A" if f.center_voxel[1] < 10 else "B" if f.center_voxel[1] > 20 else "C"): f for f in found}
    assert set(by_place) == {"A", "B", "C"}
    assert by_place["A"].score > 0.99 and by_place["C"].score > 0.99  # small blobs: nodules
    assert by_place["B"].score < 0.01  # the rod: a vessel, however bright
    assert found[-1] is by_place["B"]
    np.testing.assert_allclose(by_place["C"].center_voxel, [12, 16, 21], atol=0.01)
    assert by_place["C"].volume_ml == pytest.approx(27 / 1000)
    # the score threshold applies to the classifier's score
    kept = detect(_scene(), (1.0, 1.0, 1.0), model=str(models["detector"]), score_threshold=0.5)
    assert len(kept) == 2


def test_segmentation_takes_the_second_opinion(models):
    from napari_medai import segment

    vol = _scene()
    calls = []
    labels, _ = segment(vol, (1.0, 1.0, 1.0), model=str(models["seg"]), progress=lambda d, t: calls.append((d, t)))
    assert (labels[4:7, 5:8, 5:8] == 2).all()  # A: found and confirmed
    assert (labels[11:14, 15:18, 20:23] == 2).all()  # C: missed by the first pass, added
    assert not (labels[4:7, 25:28, 2:38] == 2).any()  # B: rejected, given back to the lung...
    assert (labels[4:7, 25:28, 2:38] == 1).all()
    assert (labels == 2).sum() == 54  # ... and nothing else is a nodule
    # one progress bar over both passes: it never goes back and ends full
    done = [d / t for d, t in calls]
    assert done == sorted(done) and done[-1] == 1.0 and len({t for _, t in calls}) == 1
    # without post-processing the first pass stands alone
    raw, _ = segment(vol, (1.0, 1.0, 1.0), model=str(models["seg"]), postprocess=False)
    assert (raw[4:7, 25:28, 2:38] == 2).all() and not (raw[11:14, 15:18, 20:23] == 2).any()


def test_a_classifier_that_is_not_one_is_refused(models, tmp_path):
    from napari_medai import detect
    from napari_medai.errors import ModelError

    det = detection_card("rule-bad-two-stage", roi_size=(8, 32, 32))
    det.extra.update(classifier=str(models["seg"]))
    with pytest.raises(ModelError, match="not a classifier"):
        detect(_scene(), (1.0, 1.0, 1.0), model=str(install(det, tmp_path)))


def test_first_pass_nodules_keep_their_confidence_when_asked(models, tmp_path):
    from napari_medai import detect

    def score_of_rod(first_pass_score):
        det = detection_card(f"rule-2s-{first_pass_score}", roi_size=(8, 32, 32), nodule_above=unit(-300))
        det.extra.update(classifier=str(tmp_path / "rule-classifier.json"), candidate_threshold=0.5,
                         first_pass=str(models["seg"]), first_pass_score=first_pass_score)
        found = detect(_scene(), (1.0, 1.0, 1.0), model=str(install(det, tmp_path)), max_findings=None)
        assert len(found) == 3  # A and B from the first pass, C from the candidate network
        return next(f.score for f in found if f.center_voxel[1] > 20)

    assert score_of_rod("classifier") < 0.01  # the classifier's veto stands
    assert score_of_rod("max") > 0.8  # the first pass's own peak probability on the rod (0.81) stands


def test_a_multi_label_first_pass_is_read_from_its_lesion_channel(tmp_path):
    """A sigmoid first pass's lesion label 2 is its channel 1: the label itself indexed past its two
    channels (IndexError; found by an audit helper)."""
    from napari_medai import detect

    clf = install(classifier_card(), tmp_path)
    seg = segmentation_card("sigmoid-first", roi_size=(8, 32, 32), nodule_above=unit(0))
    seg.output, seg.out_channels = "sigmoid", 2
    seg.classes = [{"index": 1, "name": "lung", "color": "#00ff00"}, {"index": 2, "name": "nodule", "color": "#ff0000"}]
    seg.network = {"name": "fixed_rule_models.SigmoidLungNodule", "kwargs": {"nodule_above": unit(0)}}
    seg_path = install(seg, tmp_path)
    det = detection_card("two-stage-sigmoid", roi_size=(8, 32, 32), nodule_above=unit(-300))
    det.extra.update(classifier=str(clf), candidate_threshold=0.5, first_pass=str(seg_path))
    volume = np.full((16, 40, 40), -850.0, np.float32)
    volume[4:7, 5:8, 5:8] = 200.0
    found = detect(volume, (1.0, 1.0, 1.0), model=str(install(det, tmp_path)))
    assert len(found) == 1 and np.allclose(found[0].center_voxel, (5, 6, 6))
