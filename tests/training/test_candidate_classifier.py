"""The second-stage classifier trainer on tiny synthetic scans with a fixed-rule candidate model."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fixed_rule_models import segmentation_card, unit
from napari_medai.io import Volume, write_volume
from napari_medai.training import candidate_classifier as cc


def _scan(seed):
    """Lung (label 1, -850 HU) with two small nodules (label 2) and two vessels (rods, label 3)."""
    rng = np.random.default_rng(seed)
    hu = np.full((12, 32, 32), -850.0, np.float32)
    labels = np.ones(hu.shape, np.uint8)
    for k in range(2):
        z, y = 3 + 6 * k, int(rng.integers(3, 13))
        x = int(rng.integers(3, 28))
        hu[z:z + 2, y:y + 2, x:x + 2] = 100.0
        labels[z:z + 2, y:y + 2, x:x + 2] = 2
        y = int(rng.integers(18, 29))
        hu[z:z + 2, y:y + 2, :] = 100.0
        labels[z:z + 2, y:y + 2, :] = 3
    return hu, labels


@pytest.fixture
def setup(tmp_path, monkeypatch):
    from napari_medai.models.loading import LoadedModel
    from napari_medai.models.networks import build_network

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        hu, labels = _scan(i)
        write_volume(Volume.from_spacing(hu, (1.0, 1.0, 1.0), modality="CT"), data / f"case{i}_image.nii.gz")
        write_volume(Volume.from_spacing(labels, (1.0, 1.0, 1.0), is_labels=True), data / f"case{i}_label.nii.gz")
    card = segmentation_card("rule-candidates", roi_size=(8, 32, 32), nodule_above=unit(-300))
    monkeypatch.setattr(cc, "load_candidate_model", lambda cfg: LoadedModel(card, build_network(card).eval()))
    from napari_medai.training import phantom_dataset

    def tiny_phantom(seed, **_):
        hu, labels = _scan(100 + seed)
        return SimpleNamespace(hu=hu, labels=labels, spacing=(1.0, 1.0, 1.0))

    monkeypatch.setattr(phantom_dataset, "phantom_for", tiny_phantom)
    return data


def _cfg(data, out):
    return cc.ClassifierTrainConfig(data=(str(data),), out=str(out), val_seeds=(0, 2), patch_shape=(4, 8, 8),
                                    patch_step_mm=(1.0, 1.0, 1.0), channels=(4, 8), strides=(2, 2), epochs=3,
                                    max_negatives=5, batch_size=4, threads=1,
                                    candidate_separation_mm=None)


def test_trainer_labels_candidates_deterministically_and_installs(setup, tmp_path):
    logs = []
    s1 = cc.train_classifier(_cfg(setup, tmp_path / "a"), log=logs.append)
    # every nodule and every vessel is a candidate; the nodules are the positives
    assert s1["training_positives"] == 6 and s1["training_candidates"] == 12
    assert s1["validation_positives"] == 4 and s1["validation_candidates"] == 8
    assert any("2 of 2 nodules found" in m for m in logs)
    assert len(s1["history"]) == 3 and set(s1["history"][0]["val_sensitivity"]) == {str(r) for r in cc.FP_RATES}
    s2 = cc.train_classifier(_cfg(setup, tmp_path / "b"), log=lambda *_: None)
    a = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in s1["history"]] == [h["loss"] for h in s2["history"]]
    # a second run in the same folder reuses the collected candidates and trains the same
    logs.clear()
    s3 = cc.train_classifier(_cfg(setup, tmp_path / "a"), log=logs.append)
    assert any("reusing" in m for m in logs)
    assert [h["loss"] for h in s3["history"]] == [h["loss"] for h in s1["history"]]
    path = cc.install_classifier(tmp_path / "a", "tiny-classifier", "medai train nodule-classifier ...",
                                 folder=tmp_path / "weights")
    from napari_medai.models import load_model
    from napari_medai.models.registry import sha256_of

    model = load_model(str(path))
    assert model.card.task == "classification" and model.card.sha256 == sha256_of(tmp_path / "weights" / "tiny-classifier.pt")
    assert model.network(torch.zeros(2, 2, 4, 8, 8)).shape == (2, 1)


def test_sensitivity_at_false_positive_rates():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([True, False, True, False, False, True])
    sens = cc.sensitivity_at_fp_rates(scores, labels, n_scans=2, rates=(0.5, 1.0, 2.0))
    # 0.5 FP/scan: 1 negative passes (threshold 0.6) -> 2 of 3; 1 FP/scan: 2 pass -> 2 of 3; 2: all -> 3 of 3
    assert sens == {"0.5": pytest.approx(2 / 3), "1.0": pytest.approx(2 / 3), "2.0": 1.0}


def test_validation_phantoms_without_a_nodule_candidate_are_refused(setup, tmp_path, monkeypatch):
    """No validation positive: torch.cat of nothing (no candidate) or a sensitivity of 0 every epoch."""
    from napari_medai.errors import InputError
    from napari_medai.training import phantom_dataset

    def no_nodule(seed, **_):
        hu, labels = _scan(100 + seed)
        labels[labels == 2] = 1
        hu[labels == 1] = -850.0
        return SimpleNamespace(hu=hu, labels=labels, spacing=(1.0, 1.0, 1.0))

    monkeypatch.setattr(phantom_dataset, "phantom_for", no_nodule)
    with pytest.raises(InputError, match="none on a nodule.*--val-seeds"):
        cc.train_classifier(_cfg(setup, tmp_path / "run"), log=lambda *_: None)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_the_inputs_are_read_before_the_run_folder_is_made(setup, tmp_path, monkeypatch):
    """A mistyped data folder or weights file, or a candidate model that does not load, left an
    empty run folder: it was made before anything was read."""
    from napari_medai.errors import InputError, ModelError

    run = tmp_path / "run"
    with pytest.raises(InputError, match=f"data folder {tmp_path / 'typo'} does not exist"):
        cc.train_classifier(_cfg(tmp_path / "typo", run), log=lambda *_: None)
    assert not run.exists()
    cfg = _cfg(setup, run)
    cfg.candidate_weights = str(tmp_path / "typo.pt")
    with pytest.raises(InputError, match=f"--candidate-weights {cfg.candidate_weights} is not a file"):
        cc.train_classifier(cfg, log=lambda *_: None)
    assert not run.exists()

    def does_not_load(cfg):
        raise ModelError("the weights do not fit the network")

    monkeypatch.setattr(cc, "load_candidate_model", does_not_load)
    with pytest.raises(ModelError, match="do not fit"):
        cc.train_classifier(_cfg(setup, run), log=lambda *_: None)
    assert not run.exists()


def test_the_candidate_cache_is_collected_again_when_the_pairs_or_the_weights_change(setup, tmp_path):
    """The cache was keyed on folder paths only: reused after a case was added or the candidate
    weights were retrained in place."""
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"first")
    cfg = _cfg(setup, tmp_path / "run")
    cfg.epochs, cfg.candidate_weights = 1, str(weights)

    def reused():
        logs = []
        cc.train_classifier(cfg, log=logs.append)
        return any("reusing" in m for m in logs)

    assert not reused() and reused()
    assert not list((tmp_path / "run").glob(".*"))  # no temporary file left beside the cache
    weights.write_bytes(b"retrained")
    assert not reused() and reused()
    for suffix in ("image", "label"):
        (setup / f"case9_{suffix}.nii.gz").write_bytes((setup / f"case0_{suffix}.nii.gz").read_bytes())
    assert not reused()
    # a cache cut off by a kill (an old non-atomic write) or an empty one is collected again, not a
    # BadZipFile or EOFError traceback (found by a reviewer)
    cache = tmp_path / "run" / "candidates.npz"
    for broken in (cache.read_bytes()[: len(cache.read_bytes()) // 2], b""):
        cache.write_bytes(broken)
        assert not reused()
    assert cc.check_config(cc.ClassifierTrainConfig(data=(str(setup),), out=str(tmp_path / "o"),
                                                    max_negatives=None)) is None  # None keeps every negative
