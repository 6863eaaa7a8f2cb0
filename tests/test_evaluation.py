"""``napari_medai.evaluation`` and ``medai evaluate``: scoring segmentation models on annotated pairs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from fixed_rule_models import blob_volume, expected_labels, install, segmentation_card

from napari_medai.cli.main import main
from napari_medai.errors import InputError
from napari_medai.evaluation import evaluate_segmentation, summarise
from napari_medai.io import write_volume

AFFINE = np.diag([2.0, 1.0, 1.0, 1.0])
BLOBS = ((4, 8, 8, 2, 200.0), (12, 22, 22, 1, 200.0))  # a 5-voxel and a 3-voxel cube


@pytest.fixture
def model(tmp_path):
    return str(install(segmentation_card(name="rule-seg"), tmp_path / "model"))


def _pair(folder, case, labels, volume):
    write_volume(volume, folder / f"{case}_image.nii.gz", affine=AFFINE, modality="CT")
    write_volume(labels.astype(np.uint8), folder / f"{case}_label.nii.gz", affine=AFFINE, is_labels=True)


@pytest.fixture
def data(tmp_path):
    """Case a: the labels the rule draws.  Case b: a reference that also marks a nodule the image
    does not show (the rule cannot find it) and lacks the small one.  Case c: no nodule at all in
    the reference, while the image shows one."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    volume = blob_volume(blobs=BLOBS)
    truth = expected_labels(volume)
    _pair(folder, "a", truth, volume)
    b = truth.copy()
    b[12, 22, 22] = 1  # the small cube's centre is lung in this reference: 26 of its 27 voxels stay
    b[11:14, 21:24, 21:24] = 1
    b[4, 20:23, 4:7] = 2  # a nodule the image does not show
    _pair(folder, "b", b, volume)
    c = truth.copy()
    c[c == 2] = 1
    _pair(folder, "c", c, volume)
    return folder, truth


def test_each_case_and_class_is_scored_and_lesions_counted(data, model):
    from napari_medai.training.seg_data import find_pairs

    folder, truth = data
    rows = evaluate_segmentation(find_pairs(folder), [model])
    by = {(r["case"], r["class"]): r for r in rows}
    assert set(by) == {(c, k) for c in "abc" for k in ("lung", "nodule")}
    assert by["a", "nodule"]["dice"] == 1.0 and by["a", "lung"]["dice"] == 1.0
    assert by["a", "nodule"]["lesions"] == 2 and by["a", "nodule"]["lesions_found"] == 2
    assert by["a", "nodule"]["reference_ml"] == pytest.approx((125 + 27) * 2.0 / 1000)
    # b: the big cube found, the invented 3x3 patch missed
    assert by["b", "nodule"]["lesions"] == 2 and by["b", "nodule"]["lesions_found"] == 1
    assert 0 < by["b", "nodule"]["dice"] < 1
    assert "lesions" not in by["b", "lung"]
    s = {x["class"]: x for x in summarise(rows)}
    assert s["nodule"]["cases"] == 2  # c's reference has no nodule: not in the mean ...
    assert s["nodule"]["false_positive_cases"] == 1  # ... but its predicted nodule is counted
    assert s["nodule"]["dice_mean"] == pytest.approx(np.mean([1.0, by["b", "nodule"]["dice"]]))
    assert s["nodule"]["lesions"] == 4 and s["nodule"]["lesions_found"] == 3


def test_labels_off_the_images_grid_are_refused(tmp_path, model):
    from napari_medai.evaluation import read_pair

    volume = blob_volume(blobs=BLOBS)
    write_volume(volume, tmp_path / "x_image.nii.gz", affine=AFFINE, modality="CT")
    write_volume(expected_labels(volume)[:-1], tmp_path / "x_label.nii.gz", affine=AFFINE, is_labels=True)
    with pytest.raises(InputError, match="do not match the image"):
        read_pair(tmp_path / "x_image.nii.gz", tmp_path / "x_label.nii.gz")
    shifted = AFFINE.copy()
    shifted[0, 3] = 10.0
    write_volume(expected_labels(volume), tmp_path / "x_label.nii.gz", affine=shifted, is_labels=True)
    with pytest.raises(InputError, match="elsewhere in space"):
        read_pair(tmp_path / "x_image.nii.gz", tmp_path / "x_label.nii.gz")


def test_the_cli_prints_the_summary_and_writes_the_rows(tmp_path, data, model, capsys):
    folder, _ = data
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--data", str(folder), "--model", model, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 annotated case(s)" in printed and "a · rule-seg: lung Dice 1.000, nodule Dice 1.000" in printed
    summary = next(line for line in printed.splitlines() if line.startswith("rule-seg") and "nodule" in line)
    assert summary.split()[2] == "2" and summary.rstrip().endswith("3/4")
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 6
    assert main(["evaluate", "--data", str(tmp_path / "nowhere"), "--model", model]) == 2
    assert main(["evaluate", "--data", str(folder), "--model", model, "--out", str(tmp_path / "x.txt")]) == 2


def test_detectors_are_scored_against_the_labelled_lesions(tmp_path, data):
    from fixed_rule_models import detection_card

    from napari_medai.evaluation import evaluate_detection, lesion_targets
    from napari_medai.training.seg_data import find_pairs

    folder, truth = data
    targets, diameters = lesion_targets(truth, 2, (2.0, 1.0, 1.0))
    assert len(diameters) == 2 and set(np.unique(targets)) == {0, 1, 2}
    assert diameters[0] == pytest.approx(2 * (3 * 125 * 2.0 / (4 * np.pi)) ** (1 / 3))
    card = detection_card(name="rule-det")
    card.extra["operating_point"] = {"score_threshold": 0.5, "fp_per_scan": 1.0}
    det = str(install(card, tmp_path / "det"))
    result = evaluate_detection(find_pairs(folder), [det])["rule-det"]
    by_case = {c["case"]: c for c in result["cases"]}
    assert by_case["a"]["lesions"] == 2 and by_case["a"]["lesions_hit"] == 2
    assert by_case["b"]["lesions"] == 2 and by_case["b"]["lesions_hit"] == 1  # the invented nodule is missed
    assert by_case["c"]["lesions"] == 0 and by_case["c"]["findings"] == 2  # both blobs are false positives here
    assert result["froc"]["targets"] == 4 and result["froc"]["sensitivity"][8] == pytest.approx(0.75)
    op = result["operating_point"]
    assert op["score_threshold"] == 0.5 and op["lesions_found"] == 3
    # b's big cube is hit, its small one (lung in that reference) is a false positive; c's two as well
    assert op["fp_per_scan"] == pytest.approx(3 / 3)


def test_the_cli_scores_detectors_too(tmp_path, data, capsys):
    from fixed_rule_models import detection_card

    folder, _ = data
    det = str(install(detection_card(name="rule-det"), tmp_path / "det"))
    out = tmp_path / "det.csv"
    assert main(["evaluate", "--task", "detection", "--data", str(folder), "--model", det, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "b · rule-det: 1 of 2 lesion(s) hit" in printed and "mean" in printed and "(4 lesions, 3 scans)" in printed
    assert main(["evaluate", "--task", "detection", "--data", str(folder), "--model", det, "--quiet"]) == 0
    quiet = capsys.readouterr().out  # no line per case, the summary as before
    assert "lesion(s) hit" not in quiet and "(4 lesions, 3 scans)" in quiet
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == ["a", "b", "c"] and rows[1]["lesions_hit"] == "1"


def test_models_sharing_a_name_stay_apart_and_unnamed_classes_are_scored(data, tmp_path):
    from napari_medai.training.seg_data import find_pairs

    folder, _truth = data
    first = str(install(segmentation_card(name="same"), tmp_path / "one"))
    copy = str(install(segmentation_card(name="same"), tmp_path / "two"))  # e.g. a fine-tuned copy
    rows = evaluate_segmentation(find_pairs(folder), [first, copy])
    assert {r["model"] for r in rows} == {f"same ({first})", f"same ({copy})"}
    assert {(s["model"], s["cases"]) for s in summarise(rows) if s["class"] == "nodule"} == {
        (f"same ({first})", 2), (f"same ({copy})", 2)}
    unnamed = segmentation_card(name="no-names")
    unnamed.classes = []  # a model that names no class: scored as segment() names them
    rows = evaluate_segmentation(find_pairs(folder), [str(install(unnamed, tmp_path / "three"))])
    assert {r["class"] for r in rows} == {"class 1", "class 2"} and len(rows) == 6


def test_one_bad_pair_is_skipped_and_named_the_others_scored(tmp_path, data, model, capsys):
    folder, _ = data
    labels = expected_labels(blob_volume(blobs=BLOBS))
    shifted = AFFINE.copy()
    shifted[0, 3] = 10.0  # case b's labels now lie elsewhere in space
    write_volume(labels.astype(np.uint8), folder / "b_label.nii.gz", affine=shifted, is_labels=True)
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--data", str(folder), "--model", model, "--out", str(out), "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert "b: skipped: b_label.nii.gz: the labels lie elsewhere in space" in printed
    assert "1 of 3 case(s) skipped, the figures are of the others: b" in printed
    with open(out, newline="") as fh:  # the other cases' rows are written
        assert {row["case"] for row in csv.DictReader(fh)} == {"a", "c"}
    from napari_medai.training.seg_data import find_pairs

    with pytest.raises(InputError, match="elsewhere in space"):  # from Python without on_skip: raised
        evaluate_segmentation(find_pairs(folder), [model])


def test_detection_against_references_with_no_lesion_of_the_label_is_said(tmp_path, data, capsys):
    # the sample's own 0/1 nodule mask scored at the default label 2: "0 of 0 lesions", FROC NaN,
    # every finding a false positive, exit 0 (found by an audit helper)
    from fixed_rule_models import detection_card

    folder, _ = data
    det = str(install(detection_card(name="rule-det"), tmp_path / "det"))
    out = tmp_path / "none.csv"
    assert main(["evaluate", "--task", "detection", "--data", str(folder), "--model", det, "--lesion-label", "7",
                 "--out", str(out)]) == 0  # a cohort of negative scans is fair: said, not refused
    err = capsys.readouterr().err
    assert "warning: no reference holds a lesion of label 7 (their labels hold 1, 2)" in err and "--lesion-label" in err
    assert out.exists()
    for bad in ("0", "-1"):
        assert main(["evaluate", "--task", "detection", "--data", str(folder), "--model", det,
                     "--lesion-label", bad]) == 2
        assert "1 or more" in capsys.readouterr().err


def _nan_image(folder, case):
    """Case ``case``'s image gets a NaN voxel: it reads, but every model refuses it."""
    volume = blob_volume(blobs=BLOBS)
    volume[0, 0, 0] = np.nan
    write_volume(volume, folder / f"{case}_image.nii.gz", affine=AFFINE, modality="CT")


def test_a_case_a_model_refuses_is_skipped_and_the_others_scored(tmp_path, data, model, capsys):
    folder, _ = data
    _nan_image(folder, "b")
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--data", str(folder), "--model", model, "--out", str(out), "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert "b: skipped: the image contains 1 NaN" in printed and "Dice mean" in printed
    assert "1 of 3 case(s) skipped, the figures are of the others: b" in printed
    with open(out, newline="") as fh:
        assert {row["case"] for row in csv.DictReader(fh)} == {"a", "c"}
    from napari_medai.training.seg_data import find_pairs

    with pytest.raises(InputError, match="NaN"):  # from Python without on_skip: raised
        evaluate_segmentation(find_pairs(folder), [model])


def test_a_case_a_detector_refuses_is_skipped_and_the_others_scored(tmp_path, data, capsys):
    from fixed_rule_models import detection_card

    folder, _ = data
    _nan_image(folder, "a")
    det = str(install(detection_card(name="rule-det"), tmp_path / "det"))
    out = tmp_path / "det.csv"
    assert main(["evaluate", "--task", "detection", "--data", str(folder), "--model", det, "--out", str(out),
                 "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert "a: skipped: the image contains 1 NaN" in printed and "(2 lesions, 2 scans)" in printed
    with open(out, newline="") as fh:
        assert [r["case"] for r in csv.DictReader(fh)] == ["b", "c"]


def test_a_missing_data_folder_is_named_neutrally(tmp_path, model, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "nodata"), "--model", model]) == 2
    err = capsys.readouterr().err
    assert f"medai evaluate: error: data folder {tmp_path / 'nodata'} does not exist" in err and "training" not in err


def test_a_case_a_later_model_refuses_is_announced_by_no_model(tmp_path, data):
    """The first model scores case b, the second (made for CT) refuses it: b is skipped, and
    the first model's figures for b are neither counted nor announced."""
    from napari_medai.training.seg_data import find_pairs

    folder, _ = data
    write_volume(blob_volume(blobs=BLOBS) + 1000.0, folder / "b_image.nii.gz", affine=AFFINE)  # no value below 0
    first = segmentation_card(name="rule-any")
    first.modality = "any"
    said, skipped = [], []
    rows = evaluate_segmentation(find_pairs(folder), [install(first, tmp_path / "any"), install(
        segmentation_card(name="rule-ct"), tmp_path / "ct")], on_case=lambda c, m, d: said.append((c, m)),
        on_skip=lambda c, why: skipped.append(c))
    assert skipped == ["b"]
    assert said == [("a", "rule-any"), ("a", "rule-ct"), ("c", "rule-any"), ("c", "rule-ct")]
    assert {r["case"] for r in rows} == {"a", "c"}


def test_images_without_labels_are_named_and_img_suffixes_left_out_of_case_names(tmp_path, data, model, capsys):
    """An image without a label file used to drop out of `medai evaluate` silently; a
    ``<case>_img``/``_seg`` pair used to be called ``<case>_img``."""
    folder, truth = data
    volume = blob_volume(blobs=BLOBS)
    write_volume(volume, folder / "lonely_image.nii.gz", affine=AFFINE, modality="CT")
    write_volume(volume, folder / "d_img.nii.gz", affine=AFFINE, modality="CT")
    write_volume(truth.astype(np.uint8), folder / "d_seg.nii.gz", affine=AFFINE, is_labels=True)
    assert main(["evaluate", "--data", str(folder), "--model", model]) == 0
    printed = capsys.readouterr().out
    assert "1 image(s) without a label file are left out: lonely_image.nii.gz" in printed
    assert "d · rule-seg: lung Dice 1.000" in printed and "d_img" not in printed
    from napari_medai.training.seg_data import case_name, find_pairs

    # training names its cases the same way
    assert [case_name(i) for i, _ in find_pairs(folder)] == ["a", "b", "c", "d"]
    assert case_name(folder / "case_001_0000.nii.gz") == "case_001"


def test_a_label_file_that_is_no_class_indices_is_skipped_not_rounded(tmp_path, data, model):
    """A probability map saved under a label name used to be rounded (0.6 -> 1) and scored;
    training refuses it, and so does evaluate now: skipped with the reason, like other bad pairs."""
    from napari_medai.training.seg_data import find_pairs

    folder, truth = data
    write_volume(np.where(truth == 2, 0.6, truth).astype(np.float32), folder / "b_label.nii.gz", affine=AFFINE)
    skipped = []
    rows = evaluate_segmentation(find_pairs(folder), [model], on_skip=lambda c, why: skipped.append((c, why)))
    assert [c for c, _ in skipped] == ["b"]
    assert skipped[0][1].startswith("b_label.nii.gz: label values must be whole numbers (class indices), "
                                    "found e.g. [0.6")
    assert {r["case"] for r in rows} == {"a", "c"}


def test_pairs_given_as_str_paths_are_read_and_named(tmp_path, data, model):
    from napari_medai.evaluation import read_pair

    folder, _ = data
    rows = evaluate_segmentation([(str(folder / "a_image.nii.gz"), str(folder / "a_label.nii.gz"))], [model])
    assert {(r["case"], r["class"]) for r in rows} == {("a", "lung"), ("a", "nodule")}
    volume = blob_volume(blobs=BLOBS)
    write_volume(expected_labels(volume)[:-1], tmp_path / "x_label.nii.gz", affine=AFFINE, is_labels=True)
    with pytest.raises(InputError, match="x_label.nii.gz: labels of shape"):
        read_pair(str(folder / "a_image.nii.gz"), str(tmp_path / "x_label.nii.gz"))


def test_one_model_given_alone_is_one_model(tmp_path, data, model):
    from fixed_rule_models import detection_card

    from napari_medai.evaluation import evaluate_detection
    from napari_medai.models import load_model
    from napari_medai.training.seg_data import find_pairs

    folder, _ = data
    pairs = find_pairs(folder)

    def scores(models):
        return [(r["case"], r["model"], r["class"], r["dice"]) for r in evaluate_segmentation(pairs, models)]

    assert scores(model) == scores([model])  # a str, not its letters
    assert scores(load_model(model)) == scores([model])
    det = install(detection_card(name="rule-det"), tmp_path / "det")  # a Path
    alone = evaluate_detection(pairs, det)
    assert list(alone) == ["rule-det"]
    assert alone["rule-det"]["cases"] == evaluate_detection(pairs, [det])["rule-det"]["cases"]


def test_a_class_no_reference_holds_prints_no_cases_and_monai_stays_quiet(tmp_path, data, model, capsys, recwarn):
    """Only case c (its reference has no nodule): the nodule row said "nan ± nan" and "nan", and
    MONAI's FutureWarning about always_return_as_numpy came out of the HD95 in the middle."""
    import shutil

    folder, _ = data
    only_c = tmp_path / "only_c"
    only_c.mkdir()
    for f in folder.glob("c_*"):
        shutil.copy(f, only_c / f.name)
    assert main(["evaluate", "--data", str(only_c), "--model", model, "--quiet"]) == 0
    printed = capsys.readouterr().out
    nodule = next(line for line in printed.splitlines() if line.startswith("rule-seg") and "nodule" in line)
    lung = next(line for line in printed.splitlines() if line.startswith("rule-seg") and "lung" in line)
    assert "no cases" in nodule and "nan" not in nodule and nodule.split()[2] == "0"
    assert " ± 0.000" in lung and lung.split()[2] == "1"
    assert not [w for w in recwarn if "always_return_as_numpy" in str(w.message)]


def test_the_hd95_median_says_over_how_many_cases_and_a_model_that_missed(tmp_path, model, capsys):
    """HD95 has no value where the model labels none of the class: the median over the other
    cases alone read better for a model that missed a class outright (found by an audit helper)."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    shown = blob_volume(blobs=BLOBS)
    _pair(folder, "a", expected_labels(shown), shown)
    hidden = blob_volume(blobs=((4, 8, 8, 2, -700.0),))  # no nodule in the image (a -700 HU patch of lung); the reference marks one
    marked = expected_labels(hidden)
    marked[4, 20:23, 4:7] = 2
    _pair(folder, "b", marked, hidden)
    from napari_medai.training.seg_data import find_pairs

    s = {x["class"]: x for x in summarise(evaluate_segmentation(find_pairs(folder), [model]))}
    assert s["nodule"]["cases"] == 2 and s["nodule"]["hd95_cases"] == 1 and s["nodule"]["missed_cases"] == 1
    assert s["lung"]["missed_cases"] == 0 and s["lung"]["hd95_cases"] == 2
    assert main(["evaluate", "--data", str(folder), "--model", model, "--quiet"]) == 0
    nodule = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rule-seg") and "nodule" in line)
    assert "(1 missed)" in nodule


def test_a_run_that_scored_no_case_leaves_an_earlier_scores_file(tmp_path, data, model, capsys):
    """Every case skipped: the earlier file was replaced by a header alone (found by an audit helper)."""
    folder, _ = data
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--data", str(folder), "--model", model, "--out", str(out), "--quiet"]) == 0
    before = out.read_text()
    for label in folder.glob("*_label.nii.gz"):  # every reference now on another grid: each case is skipped
        write_volume(np.zeros((3, 4, 5), np.uint8), label, affine=AFFINE, is_labels=True)
    assert main(["evaluate", "--data", str(folder), "--model", model, "--out", str(out), "--quiet"]) == 1
    assert "no case was scored" in capsys.readouterr().out and out.read_text() == before


def test_the_rows_file_is_rounded_and_long_names_keep_their_columns(tmp_path, data, capsys):
    # the CSV held 0.9601378285250997 and "nan"; a name over 28 characters ran into the class column
    # (found by an audit helper)
    folder, _ = data
    long_name = tmp_path / "a-model-with-a-rather-long-name-indeed.json"
    model = install(segmentation_card(name="rule-seg"), tmp_path / "m")
    long_name.write_text(model.read_text() if hasattr(model, "read_text") else open(model).read())
    import json as _json

    card = _json.loads(long_name.read_text())
    card["name"] = long_name.stem
    card["weights"] = str((model.parent if hasattr(model, "parent") else tmp_path / "m") / card["weights"])
    long_name.write_text(_json.dumps(card))
    out = tmp_path / "rows.csv"
    assert main(["evaluate", "--data", str(folder), "--model", str(long_name), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{long_name.stem}  lung" in printed or f"{long_name.stem}  nodule" in printed
    with open(out, newline="") as fh:
        for row in csv.DictReader(fh):
            for key in ("dice", "hd95_mm", "reference_ml", "predicted_ml"):
                assert row[key] != "nan" and (row[key] == "" or len(row[key].split(".")[-1]) <= 4)
