"""``medai segment`` and ``medai detect`` on a tiny NIfTI with fixed-rule model cards."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from fixed_rule_models import blob_volume, detection_card, expected_labels, install, segmentation_card

from napari_medai.cli.main import main
from napari_medai.io import read_volume, write_volume
from napari_medai.postprocess.report import CSV_FIELDS

BLOBS = ((4, 8, 8, 2, 200.0), (10, 20, 20, 2, 0.0))


@pytest.fixture
def ct_nifti(tmp_path):
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-40.0, 10.0, 20.0)
    return write_volume(blob_volume(blobs=BLOBS), tmp_path / "ct.nii.gz", affine=affine, modality="CT")


def test_segment_writes_labels_with_the_inputs_affine(tmp_path, ct_nifti, capsys):
    model = install(segmentation_card(), tmp_path / "model")
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(ct_nifti), str(out), "--model", str(model), "--quiet"]) == 0
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(ct_nifti).affine)
    labels = read_volume(out)
    np.testing.assert_array_equal(labels.data, expected_labels(read_volume(ct_nifti).data))
    # the file names its classes (opened in napari, they are named and coloured again)
    assert {k: v["name"] for k, v in labels.metadata["classes"].items()} == {0: "background", 1: "lung", 2: "nodule"}
    printed = capsys.readouterr().out
    assert "nodule" in printed and "lung" in printed and "labels written to" in printed
    # each lesion with its outline: this card refines no edge, so every one keeps the network's
    lines = printed.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("lesion at"))) + 1:-1]
    nodules = int((labels.data == 2).sum())
    assert table and all(line.endswith("  network") for line in table)
    assert nodules * 2.0 / 1000 == pytest.approx(sum(float(line.split()[-3]) for line in table), abs=1e-3 * len(table))


def test_segment_of_a_ras_file_writes_labels_on_that_files_grid(tmp_path, ct_nifti):
    ras = nib.as_closest_canonical(nib.load(ct_nifti))  # the same CT stored RAS, as many tools write it
    assert "".join(nib.aff2axcodes(ras.affine)) == "RAS"
    nib.save(ras, str(tmp_path / "ras.nii.gz"))
    model = install(segmentation_card(), tmp_path / "model")
    for name in ("ct", "ras"):
        assert main(["segment", str(tmp_path / f"{name}.nii.gz"), str(tmp_path / f"{name}_labels.nii.gz"),
                     "--model", str(model), "--quiet"]) == 0
    from_lps, from_ras = nib.load(tmp_path / "ct_labels.nii.gz"), nib.load(tmp_path / "ras_labels.nii.gz")
    assert "".join(nib.aff2axcodes(from_ras.affine)) == "RAS"
    np.testing.assert_allclose(from_ras.affine, ras.affine, atol=1e-4)
    # the same labels, each on its own input file's grid, index for index
    labels = np.asanyarray(from_ras.dataobj)
    assert labels.shape == ras.shape and labels.any()
    np.testing.assert_array_equal(np.asanyarray(nib.as_closest_canonical(from_lps).dataobj), labels)


def test_segment_with_test_time_mirroring(tmp_path, ct_nifti, capsys):
    # a voxel-wise model gives the same labels mirrored: the mirrored passes come back aligned
    model = install(segmentation_card(), tmp_path / "model")
    out = tmp_path / "labels.nii.gz"
    for tta in ("mirror", "mirror-lesions"):
        assert main(["segment", str(ct_nifti), str(out), "--model", str(model), "--quiet", "--tta", tta]) == 0
        np.testing.assert_array_equal(read_volume(out).data, expected_labels(read_volume(ct_nifti).data))
    with pytest.raises(SystemExit):
        main(["segment", str(ct_nifti), str(out), "--model", str(model), "--tta", "rotate"])
    assert "invalid choice" in capsys.readouterr().err


def test_segment_can_save_the_lesion_probability(tmp_path, ct_nifti):
    model = install(segmentation_card(), tmp_path / "model")
    out, prob = tmp_path / "labels.nii.gz", tmp_path / "prob.nii.gz"
    assert main(["segment", str(ct_nifti), str(out), "--model", str(model), "--quiet",
                 "--probability", str(prob)]) == 0
    probability = read_volume(prob)
    np.testing.assert_array_equal(probability.affine, read_volume(ct_nifti).affine)
    assert probability.data[4, 8, 8] > 0.9 and probability.data[0, 0, 0] < 0.05


def test_segment_writes_labels_and_probability_both_or_neither(tmp_path, ct_nifti, full_disk, capsys):
    """A full disk at the probability map (written second) left the new labels in place while the
    command reported the failure."""
    model = install(segmentation_card(), tmp_path / "model")
    out, prob = tmp_path / "run" / "labels.nii.gz", tmp_path / "run" / "prob.nii.gz"
    command = ["segment", str(ct_nifti), str(out), "--model", str(model), "--quiet", "--probability", str(prob)]
    full_disk("prob.nii.gz")
    assert main(command) == 2
    assert f"cannot write {prob}: [Errno 28] No space left on device" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []  # no labels, no temporary
    out.write_bytes(b"an earlier run's labels")
    prob.write_bytes(b"an earlier run's probability")
    assert main(command) == 2
    assert out.read_bytes() == b"an earlier run's labels" and prob.read_bytes() == b"an earlier run's probability"
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.nii.gz", "prob.nii.gz"]


def test_segment_outputs_keep_the_inputs_space_codes(tmp_path, ct_nifti):
    img = nib.load(ct_nifti)
    img.set_sform(img.affine, code="mni")  # an MNI-space input, as FSL registrations write
    img.set_qform(img.affine, code="scanner")
    nib.save(img, str(tmp_path / "mni.nii.gz"))
    model = install(segmentation_card(), tmp_path / "model")
    out, prob = tmp_path / "labels.nii.gz", tmp_path / "prob.nii.gz"
    assert main(["segment", str(tmp_path / "mni.nii.gz"), str(out), "--model", str(model), "--quiet",
                 "--probability", str(prob)]) == 0
    for written in (nib.load(out), nib.load(prob)):
        assert (int(written.header["sform_code"]), int(written.header["qform_code"])) == (4, 1)
        np.testing.assert_array_equal(written.affine, img.affine)


def test_a_probability_map_the_model_cannot_make_is_reported_not_skipped(tmp_path, ct_nifti, capsys):
    card = segmentation_card(name="no-lesion-seg")
    card.extra = {**card.extra, "lesions": []}  # organs only
    model = install(card, tmp_path / "model")
    out, prob = tmp_path / "labels.nii.gz", tmp_path / "prob.nii.gz"
    assert main(["segment", str(ct_nifti), str(out), "--model", str(model), "--quiet",
                 "--probability", str(prob)]) == 1  # done in part
    assert out.exists() and not prob.exists()
    assert "no lesion class, so no probability map was written" in capsys.readouterr().err


def test_detect_gives_each_findings_index_in_the_files_own_voxel_order(tmp_path, ct_nifti):
    # a RAS-stored copy (as many tools write it): center_voxel is the display frame's (z, y, x);
    # center_file_voxel is the (i, j, k) another viewer of that file shows, on the blob itself
    ras = nib.as_closest_canonical(nib.load(ct_nifti))
    nib.save(ras, str(tmp_path / "ras.nii.gz"))
    model = install(detection_card(), tmp_path / "model")
    for name in ("ct", "ras"):
        for suffix in (".json", ".csv"):
            out = tmp_path / f"{name}{suffix}"
            assert main(["detect", str(tmp_path / f"{name}.nii.gz"), "--out", str(out), "--model", str(model),
                         "--quiet"]) == 0
        records = json.loads((tmp_path / f"{name}.json").read_text())
        with (tmp_path / f"{name}.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        data = np.asanyarray(nib.load(tmp_path / f"{name}.nii.gz").dataobj)
        for record, row, hu in zip(records, rows, (200.0, 0.0)):  # the two blobs, ranked
            ijk = record["center_file_voxel"]
            assert data[tuple(int(round(v)) for v in ijk)] == hu, (name, ijk)
            assert row["center_file_voxel"] == " ".join(map(str, ijk))
        if name == "ras":
            assert records[0]["center_file_voxel"] != records[0]["center_voxel"][::-1]  # not the display order
    # an array has no file: the key is there, empty
    from napari_medai.postprocess.report import findings_to_records

    found = __import__("napari_medai").detect(read_volume(ct_nifti).data, (2.0, 1.0, 1.0), model=str(model))
    assert findings_to_records(found)[0]["center_file_voxel"] is None


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_detect_writes_findings_and_a_markdown_summary(tmp_path, ct_nifti, suffix, capsys):
    model = install(detection_card(), tmp_path / "model")
    out = tmp_path / "reports" / f"findings{suffix}"
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--quiet"]) == 0
    if suffix == ".json":
        records = json.loads(out.read_text())
        assert [r["rank"] for r in records] == [1, 2]
        assert {"center_voxel", "center_mm", "bbox_voxel", "diameter_mm", "volume_ml", "score",
                "lung_rads"} <= set(records[0])
        assert records[0]["center_voxel"] == [4.0, 8.0, 8.0]
        assert records[0]["center_mm"] == [-32.0, 18.0, 28.0]  # world mm through the input's affine
        assert records[0]["score"] > records[1]["score"]
    else:
        with out.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == list(CSV_FIELDS) and len(rows) == 2
        assert rows[0]["center_voxel"] == "4.0 8.0 8.0"
    summary = out.with_suffix(".md").read_text()
    assert "decision support, not a diagnosis" in summary and "| 1 |" in summary and "| 2 |" in summary
    assert "first or last slice" not in summary  # both blobs lie inside the scan
    assert "2 finding(s) written" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_detect_writes_findings_and_summary_both_or_neither(tmp_path, ct_nifti, full_disk, capsys, suffix):
    """A full disk at the summary (.md, written second) left the new findings file beside an
    earlier summary, or none, while the command reported the failure."""
    from napari_medai.postprocess.report import SUMMARY_TITLE

    model = install(detection_card(), tmp_path / "model")
    out = tmp_path / "reports" / f"findings{suffix}"
    summary = out.with_suffix(".md")
    full_disk("findings.md")
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--quiet"]) == 2
    assert f"cannot write {summary}: [Errno 28] No space left on device" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []  # no findings file, no temporary
    out.write_text("an earlier run's findings")
    summary.write_text(f"{SUMMARY_TITLE}\n\nan earlier run's summary\n")
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--quiet"]) == 2
    assert out.read_text() == "an earlier run's findings"
    assert summary.read_text() == f"{SUMMARY_TITLE}\n\nan earlier run's summary\n"
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, summary.name])


def test_detect_summary_says_when_max_findings_cut_the_list(tmp_path, ct_nifti, capsys):
    model = install(detection_card(), tmp_path / "model")
    out = tmp_path / "findings.json"
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--quiet",
                 "--max-findings", "1"]) == 0
    assert len(json.loads(out.read_text())) == 1
    assert "more findings scored 0 or more than the 1 listed (--max-findings)" in out.with_suffix(".md").read_text()
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--quiet",
                 "--max-findings", "2"]) == 0  # the two there are: nothing cut, nothing said
    assert len(json.loads(out.read_text())) == 2 and "more findings" not in out.with_suffix(".md").read_text()


def test_detect_summary_says_which_findings_reach_the_models_operating_point(tmp_path, ct_nifti):
    from napari_medai.models.card import load_card, save_card

    model = install(detection_card(), tmp_path / "model")
    out = tmp_path / "findings.json"
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--quiet"]) == 0
    assert "operating point" not in out.with_suffix(".md").read_text()  # the card has none
    high, low = (r["score"] for r in json.loads(out.read_text()))
    card = load_card(model)
    card.extra["operating_point"] = {"score_threshold": round((high + low) / 2, 2), "fp_per_scan": 1.0}
    save_card(card, model)
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--quiet"]) == 0
    summary = out.with_suffix(".md").read_text()
    assert f"1 of them score at least {round((high + low) / 2, 2):.2f}, the model's operating point" in summary
    assert len(json.loads(out.read_text())) == 2  # the findings file still holds every finding


def test_detect_notes_a_finding_on_the_scans_last_slice(tmp_path):
    # slices 13-15 of 16: the scan ends inside this blob; the other lies inside
    ct = write_volume(blob_volume(blobs=((14, 8, 8, 1, 200.0), (6, 20, 20, 2, 200.0))), tmp_path / "ct.nii.gz",
                      affine=np.diag([2.0, 1.0, 1.0, 1.0]), modality="CT")
    model = install(detection_card(), tmp_path / "model")
    out = tmp_path / "findings.json"
    assert main(["detect", str(ct), "--out", str(out), "--model", str(model), "--quiet"]) == 0
    records = json.loads(out.read_text())
    at_end = [r["rank"] for r in records if r["bbox_voxel"][1][0] == 16]
    assert len(at_end) == 1 and len(records) == 2
    summary = out.with_suffix(".md").read_text()
    assert f"Note: finding {at_end[0]} touches the scan's first or last slice: it may continue beyond" in summary


def test_detect_refuses_an_unknown_report_format(tmp_path, ct_nifti, capsys):
    model = install(detection_card(), tmp_path / "model")
    out = tmp_path / "findings.txt"
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--quiet"]) == 2
    assert "--out must be a file name ending in .json or .csv" in capsys.readouterr().err
    assert main(["detect", str(ct_nifti), "--out", str(tmp_path / ".json")]) == 2  # a dot name has no suffix
    assert "(e.g. findings.json), got .json" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", ["segment", "detect"])
def test_a_ct_model_on_an_mr_file_exits_with_one_sentence_and_writes_nothing(tmp_path, command, capsys):
    mr = np.random.default_rng(3).uniform(0, 600, size=(12, 24, 24)).astype(np.float32)
    _run_ct_model_on_mr_file(command, mr, tmp_path)
    err = capsys.readouterr().err
    assert "reads CT in Hounsfield units" in err and "Traceback" not in err


def _run_ct_model_on_mr_file(command, volume, tmp_path):
    """``medai segment``/``detect`` of ``volume`` saved as an MR NIfTI with a stand-in CT model:
    it must exit 2 and write nothing.  Returns the file's path."""
    mr_nifti = write_volume(volume, tmp_path / "t1.nii.gz", affine=np.eye(4), modality="MR")
    card = segmentation_card() if command == "segment" else detection_card()
    model = install(card, tmp_path / "model")
    out = tmp_path / ("labels.nii.gz" if command == "segment" else "findings.json")
    args = [str(mr_nifti), str(out)] if command == "segment" else [str(mr_nifti), "--out", str(out)]
    assert main([command, *args, "--model", str(model), "--quiet"]) == 2
    assert not out.exists()
    return mr_nifti


def test_segment_refuses_an_output_that_is_the_input_or_named_twice(tmp_path, ct_nifti, capsys):
    before = ct_nifti.read_bytes()
    out = tmp_path / "o.nii.gz"
    assert main(["segment", str(ct_nifti), str(ct_nifti), "--quiet"]) == 2
    assert main(["segment", str(ct_nifti), str(out), "--probability", str(out), "--quiet"]) == 2
    assert main(["segment", str(ct_nifti), str(out), "--probability", str(tmp_path / "p.nrrd"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is the input itself" in err and "named twice" in err and "p.nrrd: an output image must end in" in err
    assert ct_nifti.read_bytes() == before and not out.exists()


def test_a_negative_max_findings_is_refused_before_a_model_runs(tmp_path, ct_nifti, capsys):
    import napari_medai
    from napari_medai.errors import InputError

    model = install(detection_card(), tmp_path / "model")
    out = tmp_path / "f.json"
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(model), "--max-findings", "-1",
                 "--quiet"]) == 2
    assert "--max-findings must be a whole number of findings, 1 or more, got -1" in capsys.readouterr().err
    assert not out.exists()
    for bad in (-1, 2.5):  # checked first: the model named here does not even exist
        with pytest.raises(InputError, match="max_findings"):
            napari_medai.detect(np.zeros((4, 8, 8)), (1.0, 1.0, 1.0), model="no-such-model", max_findings=bad)


def test_a_file_that_cannot_be_written_exits_2_with_one_line(tmp_path, ct_nifti, capsys):
    model = install(detection_card(), tmp_path / "model")
    (tmp_path / "a_file").write_text("not a folder")
    assert main(["detect", str(ct_nifti), "--out", str(tmp_path / "a_file" / "f.json"), "--model", str(model),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medai detect: error:") and "Traceback" not in err


def test_output_locations_that_cannot_be_written_are_refused_before_the_model_loads(tmp_path, ct_nifti, capsys):
    import os

    (tmp_path / "a_file").write_text("not a folder")
    # the model named does not exist: the refusal must come first
    assert main(["segment", str(ct_nifti), str(tmp_path / "a_file" / "seg.nii.gz"), "--model", "no-such",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"output {tmp_path / 'a_file' / 'seg.nii.gz'}: {tmp_path / 'a_file'} is a file, not a folder" in err
    assert main(["segment", str(ct_nifti), str(tmp_path / "o.nii.gz"), "--probability",
                 str(tmp_path / "a_file" / "deeper" / "p.nii.gz"), "--model", "no-such", "--quiet"]) == 2
    assert "--probability" in capsys.readouterr().err
    assert main(["segment", str(ct_nifti), str(tmp_path), "--model", "no-such", "--quiet"]) == 2  # a folder
    assert main(["detect", str(ct_nifti), "--out", str(tmp_path / "a_file" / "f.json"), "--model", "no-such",
                 "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err and not (tmp_path / "o.nii.gz").exists()
    if os.path.isdir("/proc"):
        assert main(["segment", str(ct_nifti), "/proc/seg.nii.gz", "--model", "no-such", "--quiet"]) == 2
        assert main(["detect", str(ct_nifti), "--out", "/proc/f.json", "--model", "no-such", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "output /proc/seg.nii.gz: /proc cannot be written" in err and "--out /proc/f.json: /proc cannot" in err


def test_a_threshold_that_is_no_score_is_refused_before_the_model_loads(tmp_path, ct_nifti, capsys):
    for bad in ("nan", "1.5"):
        assert main(["detect", str(ct_nifti), "--out", str(tmp_path / "f.json"), "--threshold", bad,
                     "--model", "no-such", "--quiet"]) == 2
        assert "--threshold must be a score between 0 and 1" in capsys.readouterr().err


def test_detect_replaces_its_own_summary_but_never_another_md_beside_out(tmp_path, ct_nifti, capsys, monkeypatch):
    import napari_medai.api as api

    model = str(install(detection_card(), tmp_path / "model"))
    out = tmp_path / "notes.json"
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", model, "--quiet"]) == 0
    first = out.with_suffix(".md").read_text()
    assert first.startswith("# Lesion detection: ct.nii.gz")
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", model, "--quiet"]) == 0  # its own: replaced
    assert out.with_suffix(".md").read_text() == first
    mine = tmp_path / "mine.md"
    mine.write_text("# My notes on this patient\n")  # a reader's notes beside the name given to --out
    monkeypatch.setattr(api, "detect", lambda *a, **k: pytest.fail("the detector ran"))
    capsys.readouterr()
    assert main(["detect", str(ct_nifti), "--out", str(tmp_path / "mine.csv"), "--model", model, "--quiet"]) == 2
    assert "is not a summary medai detect wrote" in capsys.readouterr().err
    assert mine.read_text() == "# My notes on this patient\n" and not (tmp_path / "mine.csv").exists()
    (tmp_path / "dir.md").mkdir()  # the summary's name is a folder: refused before the run, nothing half-written
    assert main(["detect", str(ct_nifti), "--out", str(tmp_path / "dir.json"), "--model", model, "--quiet"]) == 2
    assert "is a folder" in capsys.readouterr().err and not (tmp_path / "dir.json").exists()


def test_detect_refuses_a_cap_of_zero_findings_before_the_run(tmp_path, ct_nifti, capsys, monkeypatch):
    import napari_medai.api as api

    monkeypatch.setattr(api, "detect", lambda *a, **k: pytest.fail("the detector ran"))
    out = tmp_path / "f.json"
    assert main(["detect", str(ct_nifti), "--out", str(out), "--max-findings", "0", "--quiet"]) == 2
    assert "--max-findings must be 1 or more, got 0" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("command", ["segment", "detect"])
def test_a_file_that_says_mr_is_not_run_through_a_ct_model_even_with_values_like_hu(tmp_path, command, capsys):
    # values a CT model takes (lung, blobs): only the file's modality tells them apart
    mr_nifti = _run_ct_model_on_mr_file(command, blob_volume(blobs=BLOBS), tmp_path)
    assert read_volume(mr_nifti).modality == "MR"
    name = (segmentation_card() if command == "segment" else detection_card()).name
    err = capsys.readouterr().err
    assert err.startswith(f"medai {command}: error: {mr_nifti} is an MR image by its header, but model "
                          f"'{name}' is made for CT: choose a model made for MR")


@pytest.mark.parametrize("command", ["segment", "detect"])
def test_a_network_that_returns_nan_exits_2_naming_fp32_and_writes_nothing(tmp_path, ct_nifti, command, capsys):
    # bf16/float16 overflow gives NaN: the softmax then labelled nothing and the detector found nothing, exit 0
    card = (segmentation_card if command == "segment" else detection_card)(name="nan-net", steepness=float("nan"))
    model = install(card, tmp_path / "model")
    out = tmp_path / ("labels.nii.gz" if command == "segment" else "findings.json")
    args = [str(ct_nifti), str(out)] if command == "segment" else [str(ct_nifti), "--out", str(out)]
    assert main([command, *args, "--model", str(model), "--quiet", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"medai {command}: error: model 'nan-net' returned NaN or infinite values in bfloat16 "
                          "precision") and "--precision fp32" in err
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_detect_and_measure_do_not_replace_the_scans_bids_sidecar(tmp_path, ct_nifti, capsys):
    """--out ct.json beside ct.nii.gz replaced its BIDS sidecar, which the reader takes the modality
    from (found by an audit helper); an earlier findings list there is replaced as before."""
    model = str(install(detection_card(), tmp_path / "model"))
    sidecar = ct_nifti.with_name("ct.json")
    sidecar.write_text(json.dumps({"Modality": "CT", "ConvolutionKernel": "B30f"}))
    for command in (["detect", str(ct_nifti), "--out", str(sidecar), "--model", model],
                    ["measure", str(ct_nifti), "--at", "4", "8", "8", "--out", str(sidecar)]):
        assert main(command) == 2
        assert "exists and is not a findings list" in capsys.readouterr().err
        assert json.loads(sidecar.read_text())["ConvolutionKernel"] == "B30f"
    out = tmp_path / "findings.json"
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", model]) == 0
    assert main(["detect", str(ct_nifti), "--out", str(out), "--model", model]) == 0  # its own list again


def test_a_label_map_is_refused_as_a_mask_not_blamed_on_its_values(tmp_path, ct_nifti, capsys):
    """segment's own output fed to detect was said to look like MR or an unrescaled CT (found by an
    audit helper)."""
    labels = tmp_path / "labels.nii.gz"
    assert main(["segment", str(ct_nifti), str(labels), "--model", str(install(segmentation_card(), tmp_path / "s"))]) == 0
    capsys.readouterr()
    for command in (["segment", str(labels), str(tmp_path / "again.nii.gz")],
                    ["detect", str(labels), "--out", str(tmp_path / "f.json")],
                    ["screen", str(labels), "--out-dir", str(tmp_path / "report")],  # these two: since 11-29
                    ["denoise", str(labels), str(tmp_path / "den.nii.gz")]):
        assert main(command) == 2
        assert "is a label map (a mask), not an image" in capsys.readouterr().err
    assert not (tmp_path / "report").exists() and not (tmp_path / "den.nii.gz").exists()
