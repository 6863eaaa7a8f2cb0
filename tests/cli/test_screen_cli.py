"""``medai screen`` on a two-lung toy chest with fixed-rule model cards."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
from fixed_rule_models import detection_card, install, segmentation_card, two_lung_chest

from napari_medai.cli.main import main
from napari_medai.io import read_volume, write_volume


def test_screen_writes_the_report_files_with_the_inputs_geometry(tmp_path, capsys):
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-40.0, 10.0, 20.0)
    ct = write_volume(two_lung_chest(), tmp_path / "chest.nii.gz", affine=affine, modality="CT")
    det = install(detection_card(name="cli-det"), tmp_path / "models")
    seg = install(segmentation_card(name="cli-seg"), tmp_path / "models")
    out = tmp_path / "report"
    assert main(["screen", str(ct), "--out-dir", str(out), "--detector", str(det), "--segmenter", str(seg),
                 "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["findings.csv", "key_images", "report.json", "report.md",
                                                     "segmentation.nii.gz"]
    np.testing.assert_array_equal(nib.load(out / "segmentation.nii.gz").affine, nib.load(ct).affine)
    labels = read_volume(out / "segmentation.nii.gz").data
    assert labels.shape == (30, 40, 60) and set(np.unique(labels)) == {0, 1, 2}
    record = json.loads((out / "report.json").read_text())
    assert record["source"] == "chest.nii.gz" and record["highest_size_category"] == "4A"
    assert [(f["side"], f["zone"]) for f in record["findings"]] == [("left", "upper"), ("right", "lower")]
    # one key image per finding, in rank order, linked from both report files
    assert [f["key_image"] for f in record["findings"]] == ["key_images/finding_01.png", "key_images/finding_02.png"]
    assert sorted(p.name for p in (out / "key_images").iterdir()) == ["finding_01.png", "finding_02.png"]
    report = (out / "report.md").read_text()
    assert "](key_images/finding_01.png)" in report and "](key_images/finding_02.png)" in report
    rows = list(csv.DictReader((out / "findings.csv").open()))
    assert [r["lung_rads"] for r in rows] == ["4A", "2"]
    # each centre also as the (i, j, k) index of the file's own voxels, on the nodule in the file
    data = np.asanyarray(nib.load(ct).dataobj)
    for f, row in zip(record["findings"], rows):
        assert data[tuple(int(round(v)) for v in f["center_file_voxel"])] > -300, f
        assert row["center_file_voxel"] == " ".join(map(str, f["center_file_voxel"]))
    printed = capsys.readouterr().out
    assert "Highest Lung-RADS category (v2022, baseline screen, by each nodule's attenuation) among the reported findings: 4A" in printed and "report written to" in printed
    # run again into the same folder: the previous report's files are its own to replace
    assert main(["screen", str(ct), "--out-dir", str(out), "--detector", str(det), "--segmenter", str(seg),
                 "--quiet"]) == 0


def test_screen_refuses_a_2d_image_and_writes_nothing(tmp_path, capsys):
    flat = write_volume(np.full((1, 40, 60), -850.0, np.float32), tmp_path / "slice.nii.gz", modality="CT")
    out = tmp_path / "report"
    assert main(["screen", str(flat), "--out-dir", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert "3D" in capsys.readouterr().err


def test_screen_refuses_an_mr_volume_for_its_ct_models_and_writes_nothing(tmp_path, capsys):
    mr = np.random.default_rng(5).uniform(0, 300, (12, 40, 60)).astype(np.float32)
    _screen_mr_file_with_ct_models(mr, tmp_path)
    assert "'cli-det' reads CT in Hounsfield units" in capsys.readouterr().err


def _screen_mr_file_with_ct_models(volume, tmp_path):
    """``medai screen`` of ``volume`` saved as an MR NIfTI with stand-in CT models: it must exit
    2 and write no report folder.  Returns the file's path."""
    path = write_volume(volume, tmp_path / "t1.nii.gz", modality="MR")
    det = install(detection_card(name="cli-det"), tmp_path / "models")
    seg = install(segmentation_card(name="cli-seg"), tmp_path / "models")
    out = tmp_path / "report"
    assert main(["screen", str(path), "--out-dir", str(out), "--detector", str(det), "--segmenter", str(seg),
                 "--quiet"]) == 2
    assert not out.exists()
    return path


def test_an_out_dir_that_is_a_file_is_refused_before_the_run(tmp_path, capsys):
    scan = write_volume(np.full((12, 40, 60), -850.0, np.float32), tmp_path / "ct.nii.gz", modality="CT")
    before = scan.read_bytes()
    assert main(["screen", str(scan), "--out-dir", str(scan), "--detector", "no-such-model", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err
    assert scan.read_bytes() == before


def test_an_input_that_a_report_file_would_replace_is_refused_before_the_run(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    for name in ("segmentation.nii.gz", "denoised.nii.gz"):  # denoised: written with --denoise, else removed
        scan = write_volume(two_lung_chest(), out / name, modality="CT")
        before = scan.read_bytes()
        # the model named does not exist: the refusal must come first
        assert main(["screen", str(scan), "--out-dir", str(out), "--detector", "no-such-model", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"is the input itself: the report's {name}" in err and "would replace the scan" in err
        assert scan.read_bytes() == before
        scan.unlink()


def test_a_file_of_the_readers_own_in_the_report_folder_is_refused_before_the_run(tmp_path, capsys):
    scan = write_volume(two_lung_chest(), tmp_path / "ct.nii.gz", modality="CT")
    out = tmp_path / "report"
    out.mkdir()
    # a hand-corrected segmentation where the report would write its own
    mine = write_volume(np.ones((30, 40, 60), np.uint8), out / "segmentation.nii.gz", is_labels=True)
    before = mine.read_bytes()
    # the model named does not exist: the refusal must come first
    assert main(["screen", str(scan), "--out-dir", str(out), "--detector", "no-such-model", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{mine} is not a file of an earlier screening report" in err and "choose another folder" in err
    assert mine.read_bytes() == before and [p.name for p in out.iterdir()] == ["segmentation.nii.gz"]


def test_an_out_dir_that_cannot_be_made_or_a_bad_threshold_is_refused_before_the_run(tmp_path, capsys):
    import os

    import pytest

    scan = write_volume(two_lung_chest(), tmp_path / "ct.nii.gz", modality="CT")
    (tmp_path / "a_file").write_text("not a folder")
    common = ["--detector", "no-such-model", "--quiet"]
    assert main(["screen", str(scan), "--out-dir", str(tmp_path / "a_file" / "scr"), *common]) == 2
    assert f"--out-dir {tmp_path / 'a_file' / 'scr'}: {tmp_path / 'a_file'} is a file, not a folder" in \
        capsys.readouterr().err
    for bad in ("nan", "1.5", "-1"):
        assert main(["screen", str(scan), "--out-dir", str(tmp_path / "r"), "--threshold", bad, *common]) == 2
        assert "--threshold must be a score between 0 and 1" in capsys.readouterr().err
    # a report listing nothing headed "No nodule reported" over the findings it left out
    assert main(["screen", str(scan), "--out-dir", str(tmp_path / "r"), "--max-findings", "0", *common]) == 2
    assert "--max-findings must be 1 or more, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc to refuse files")
    assert main(["screen", str(scan), "--out-dir", "/proc/medai-scr", *common]) == 2
    assert "--out-dir /proc/medai-scr: /proc cannot be written" in capsys.readouterr().err


def test_screen_refuses_a_file_that_says_mr_even_with_values_like_hu(tmp_path, capsys):
    path = _screen_mr_file_with_ct_models(two_lung_chest(), tmp_path)  # lungs at -850: passes as HU
    assert (f"{path} is an MR image by its header, but model 'cli-det' is made for CT: choose a model made for MR"
            in capsys.readouterr().err)
