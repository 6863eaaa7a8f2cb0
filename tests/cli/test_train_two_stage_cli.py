"""``medai train nodule-classifier`` / ``confirm`` / ``detection --classifier``: argument checks
(the runs themselves segment full-size phantoms; their logic is tested in tests/training)."""

from napari_medai.cli.main import main


def test_two_stage_detection_needs_both_the_weights_and_the_classifier(tmp_path, capsys):
    assert main(["train", "detection", "--classifier", "lung-nodule-classifier"]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["train", "detection", "--candidate-weights", str(tmp_path / "w.pt")]) == 2


def test_classifier_training_refuses_a_missing_data_folder(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["train", "nodule-classifier", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--epochs", "1"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()  # it was made first, and left empty


def test_classifier_training_checks_its_weights_and_device_before_making_the_run_folder(tmp_path, capsys):
    """A mistyped --candidate-weights, or a --device this machine lacks, left an empty --out behind
    (the device was looked at only after the candidates were collected)."""
    out, data = tmp_path / "out", tmp_path / "data"
    data.mkdir()
    base = ["train", "nodule-classifier", "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert main(base + ["--candidate-weights", str(tmp_path / "typo.pt")]) == 2
    assert f"--candidate-weights {tmp_path / 'typo.pt'} is not a file" in capsys.readouterr().err
    assert main(base + ["--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    assert not out.exists()


def test_train_lists_the_two_stage_tasks(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "nodule-classifier" in text and "confirm" in text


def test_operating_point_and_detection_errors_read_like_the_other_train_tasks(capsys):
    assert main(["train", "operating-point", "--model", "no-such-model", "--dry-run"]) == 2
    assert main(["train", "operating-point", "--fp-per-scan", "-1"]) == 2
    assert main(["train", "operating-point", "--seeds", "3", "1"]) == 2
    assert main(["train", "detection", "--classifier", "lung-nodule-classifier"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("medai train: error: ") for line in lines)
    assert "no-such-model" in lines[0] and "--fp-per-scan" in lines[1] and "STOP > FIRST" in lines[2]


def test_classifier_options_are_refused_before_any_candidate(tmp_path, capsys):
    """An empty --val-seeds range failed after collecting every candidate, --epochs 0 never wrote best.pt."""
    import pytest

    base = ["train", "nodule-classifier", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]
    for extra, said in ((["--val-seeds", "5", "5"], "--val-seeds FIRST STOP needs STOP > FIRST"),
                        (["--epochs", "0"], "--epochs must be at least 1"),
                        (["--threads", "0"], "--threads must be at least 1"),
                        (["--max-negatives", "0"], "--max-negatives must be at least 1")):
        assert main(base + extra) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    from napari_medai.errors import InputError
    from napari_medai.training.candidate_classifier import ClassifierTrainConfig, train_classifier

    with pytest.raises(InputError, match="--val-seeds"):  # from Python too
        train_classifier(ClassifierTrainConfig(data=(str(tmp_path),), out=str(tmp_path / "out"), val_seeds=(3, 1)))


def test_classifier_training_takes_fp32(tmp_path, monkeypatch):
    """The classifier trained in bf16 wherever the CPU had it natively; no option reached fp32."""
    import napari_medai.training.candidate_classifier as classifier

    seen = []

    def fake(cfg, log=print):
        seen.append(cfg.bf16)
        return {"best_val_mean_sensitivity": 0.0, "best_val_auc": 0.5, "time_s": 0}

    monkeypatch.setattr(classifier, "check_config", lambda cfg: None)
    monkeypatch.setattr(classifier, "train_classifier", fake)
    base = ["train", "nodule-classifier", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main(base) == 0 and main(base + ["--fp32"]) == 0
    assert seen == [True, False]
