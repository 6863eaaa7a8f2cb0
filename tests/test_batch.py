"""``napari_medai.batch`` and ``medai batch``: screening a cohort with fixed-rule models."""

from __future__ import annotations

import csv
from pathlib import Path
import json

import numpy as np
import pytest
from fixed_rule_models import detection_card, install, segmentation_card, two_lung_chest

from napari_medai.batch import COHORT_FILE, find_cases, screen_cases
from napari_medai.cli.main import main
from napari_medai.errors import InputError
from napari_medai.io import write_volume
from napari_medai.models.card import save_card

AFFINE = np.diag([2.0, 1.0, 1.0, 1.0])


@pytest.fixture
def models(tmp_path):
    """A segmentation and a detection card on one weights file, as the built-ins."""
    seg_path = install(segmentation_card(name="rule-seg"), tmp_path / "models")
    seg = json.loads(seg_path.read_text())
    det = detection_card(name="rule-det")
    det.weights, det.sha256 = seg["weights"], seg["sha256"]
    return str(save_card(det, tmp_path / "models" / "rule-det.json")), str(seg_path)


@pytest.fixture
def cohort(tmp_path):
    """Two toy chests (one with a nodule less), a corrupt NIfTI, a corrupt 'DICOM series', a note."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    write_volume(two_lung_chest(), folder / "alpha.nii.gz", affine=AFFINE, modality="CT")
    write_volume(two_lung_chest(blobs=((21, 20, 45, 5, 200.0),)), folder / "beta.nii", affine=AFFINE, modality="CT")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti at all")
    series = folder / "gamma"
    series.mkdir()
    (series / "slice1.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    (folder / "notes.txt").write_text("not a scan")
    return folder


def test_find_cases_takes_files_series_folders_and_folders_of_them(tmp_path, cohort):
    cases = find_cases([cohort])
    assert [name for name, _ in cases] == ["alpha", "beta", "broken", "gamma"]  # the .txt is no case
    # a file given twice (and in a folder given) is one case, screened once; "." is named by its folder
    again = find_cases([cohort / "alpha.nii.gz", cohort, cohort / "gamma"])
    assert [name for name, _ in again] == ["alpha", "beta", "broken", "gamma"]
    assert find_cases([cohort / "gamma" / "."]) == [("gamma", cohort / "gamma" / ".")]
    # the first mention of a file keeps its place and name
    assert [name for name, _ in find_cases([cohort / "gamma", cohort / "beta.nii", cohort])] == [
        "gamma", "beta", "alpha", "broken"]
    # two cases with one name keep apart, also beside a case whose own name already ends in _2
    other = tmp_path / "other"
    other.mkdir()
    for name in ("scan.nii.gz", "scan_2.nii.gz"):
        (other / name).write_bytes(b"")
    (tmp_path / "third").mkdir()
    (tmp_path / "third" / "scan.nii.gz").write_bytes(b"")
    names = [name for name, _ in find_cases([other, tmp_path / "third"])]
    assert names == ["scan", "scan_2", "scan_3"] and len(set(names)) == len(names)
    with pytest.raises(InputError, match="does not exist"):
        find_cases([tmp_path / "nowhere"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no chest CT found"):
        find_cases([empty])
    with pytest.raises(InputError, match="neither a NIfTI file nor a folder"):
        find_cases([cohort / "notes.txt"])


def test_each_case_gets_its_report_and_a_bad_case_its_message(tmp_path, cohort, models):
    det, seg = models
    seen, tables = [], []

    def on_case(record, done, total):  # the table on disk already holds every finished case
        seen.append((record.case, done, total))
        tables.append((tmp_path / "out" / COHORT_FILE).read_text().count("\n") - 1)

    records = screen_cases(find_cases([cohort]), tmp_path / "out", detector=det, segmenter=seg, on_case=on_case)
    assert tables == [1, 2, 3, 4]
    by_case = {r.case: r for r in records}
    assert [r.case for r in records] == ["alpha", "beta", "broken", "gamma"]
    assert sorted(done for _, done, _ in seen) == [1, 2, 3, 4] and {t for *_, t in seen} == {4}
    assert by_case["alpha"].status == "ok" and by_case["alpha"].findings == 2
    assert by_case["alpha"].highest_category == "4A" and by_case["alpha"].largest_finding_mm > 10
    assert by_case["alpha"].category_by_attenuation == "4A"
    assert by_case["beta"].findings == 1 and by_case["beta"].score_threshold == 0.5
    assert by_case["alpha"].nodule_segmented_ml == pytest.approx((11 ** 3 + 3 ** 3) * 2.0 / 1000)
    assert by_case["alpha"].right_lung_ml > 0 and by_case["alpha"].left_lung_ml > 0
    for bad in ("broken", "gamma"):
        assert by_case[bad].status == "error" and by_case[bad].message and by_case[bad].findings is None
        assert not (tmp_path / "out" / bad).exists()
    for good in ("alpha", "beta"):
        files = {p.name for p in (tmp_path / "out" / good).iterdir()}
        assert files == {"report.md", "report.json", "findings.csv", "segmentation.nii.gz", "key_images"}
    with open(tmp_path / "out" / COHORT_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["case"] for row in rows] == ["alpha", "beta", "broken", "gamma"]
    assert rows[0]["findings"] == "2" and rows[2]["findings"] == "" and rows[2]["status"] == "error"


def test_two_workers_give_the_same_cohort(tmp_path, cohort, models):
    det, seg = models
    cases = [c for c in find_cases([cohort]) if c[0] in ("alpha", "beta")]
    one = screen_cases(cases, tmp_path / "one", detector=det, segmenter=seg, workers=1)
    two = screen_cases(cases, tmp_path / "two", detector=det, segmenter=seg, workers=2)
    strip = [{k: v for k, v in vars(r).items() if k != "seconds"} for r in one]
    assert strip == [{k: v for k, v in vars(r).items() if k != "seconds"} for r in two]
    assert (tmp_path / "one" / "alpha" / "findings.csv").read_text() == \
        (tmp_path / "two" / "alpha" / "findings.csv").read_text()
    with pytest.raises(InputError, match="workers"):
        screen_cases(cases, tmp_path / "none", detector=det, segmenter=seg, workers=0)


def test_the_cli_reports_each_case_and_fails_when_one_did(tmp_path, cohort, models, capsys):
    det, seg = models
    out = tmp_path / "out"
    rc = main(["batch", str(cohort), "--out-dir", str(out), "--detector", det, "--segmenter", seg, "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 1 and "2 of 4 case(s) screened" in printed
    assert "broken: ERROR" in printed and "alpha:" not in printed  # --quiet: only the failures
    assert main(["batch", str(cohort / "alpha.nii.gz"), "--out-dir", str(out), "--detector", det,
                 "--segmenter", seg]) == 0
    assert "alpha: 2 finding(s), highest size category 4A" in capsys.readouterr().out
    assert main(["batch", str(tmp_path / "nowhere"), "--out-dir", str(out)]) == 2


def test_a_cancelled_run_stops_and_keeps_the_table_of_what_it_finished(tmp_path, cohort, models):
    from napari_medai.errors import Cancelled
    from napari_medai.inference import CancelToken

    det, seg = models
    token = CancelToken()
    cases = [c for c in find_cases([cohort]) if c[0] in ("alpha", "beta")]
    with pytest.raises(Cancelled):
        screen_cases(cases, tmp_path / "out", detector=det, segmenter=seg, cancel=token,
                     on_case=lambda record, done, total: token.cancel())  # stop after the first case
    with open(tmp_path / "out" / COHORT_FILE, newline="") as fh:
        rows = [row["case"] for row in csv.DictReader(fh)]
    assert len(rows) == 1  # dask may start either case first: the other never starts
    finished, other = rows[0], ({"alpha", "beta"} - set(rows)).pop()
    assert (tmp_path / "out" / finished / "report.md").is_file() and not (tmp_path / "out" / other).exists()


def test_an_unforeseen_failure_on_one_case_is_recorded_and_the_others_go_on(tmp_path, cohort, models, monkeypatch):
    import napari_medai.io

    det, seg = models
    real = napari_medai.io.read_volume

    def flaky(path):  # a library's own bug on one scan, say
        if str(path).endswith("alpha.nii.gz"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore text")
        return real(path)

    monkeypatch.setattr(napari_medai.io, "read_volume", flaky)
    records = {r.case: r for r in screen_cases(find_cases([cohort / "alpha.nii.gz", cohort / "beta.nii"]),
                                               tmp_path / "out", detector=det, segmenter=seg)}
    assert records["alpha"].status == "error" and records["alpha"].message == "unexpected RuntimeError: more text"
    assert records["beta"].status == "ok" and records["beta"].findings == 1  # the cohort went on


def test_a_spacing_that_would_need_gigabytes_is_refused_before_allocation():
    from napari_medai.errors import InputError as Refused
    from napari_medai.inference.engine import check_working_grid

    check_working_grid((188, 358, 358), (600, 512, 512), (0.625, 0.7, 0.7), (2.0, 1.0, 1.0))  # thin-slice CT
    # no resampling (no spacing, or a model that keeps the input's): the volume is in memory already
    check_working_grid((800, 800, 800), (800, 800, 800), None, None)
    check_working_grid((800, 800, 800), (800, 800, 800), (1.0, 1.0, 1.0), None)
    with pytest.raises(Refused, match=r"800 x 2400 x 2400 voxels \(18 GB a channel\).*1600 x 2400 x 2400 mm"):
        check_working_grid((800, 2400, 2400), (32, 48, 48), (50.0, 50.0, 50.0), (2.0, 1.0, 1.0))


def test_label_maps_beside_the_cts_are_skipped_with_a_note(tmp_path, models, capsys):
    det, seg = models
    folder = tmp_path / "phantoms"  # as medai phantom writes them
    folder.mkdir()
    write_volume(two_lung_chest(), folder / "case0001_image.nii.gz", affine=AFFINE, modality="CT")
    labels = (two_lung_chest() < -500).astype(np.uint8)
    write_volume(labels, folder / "case0001_label.nii.gz", affine=AFFINE, is_labels=True)
    records = screen_cases(find_cases([folder]), tmp_path / "out", detector=det, segmenter=seg)
    assert [(r.case, r.status, r.message) for r in records][1] == ("case0001_label", "skipped", "a label map, not a CT")
    assert records[0].status == "ok" and not (tmp_path / "out" / "case0001_label").exists()
    assert main(["batch", str(folder), "--out-dir", str(tmp_path / "cli"), "--detector", det, "--segmenter", seg,
                 "--quiet"]) == 0  # a skipped label map is no failure
    printed = capsys.readouterr().out
    assert "case0001_label: skipped: a label map, not a CT" not in printed  # --quiet
    assert "1 of 2 case(s) screened, 1 label map(s) skipped" in printed


def test_a_case_that_its_own_report_would_replace_is_refused_and_left_alone(tmp_path, models):
    det, seg = models
    out = tmp_path / "out"
    cases = []
    for name in ("segmentation", "denoised"):  # out/<case>/<name>.nii.gz is a report file of that case
        (out / name).mkdir(parents=True)
        cases.append((name, write_volume(two_lung_chest(), out / name / f"{name}.nii.gz", affine=AFFINE,
                                         modality="CT")))
    before = [path.read_bytes() for _, path in cases]
    records = screen_cases(cases, out, detector=det, segmenter=seg)
    assert all(r.status == "error" and "is the input itself" in r.message for r in records)
    assert [path.read_bytes() for _, path in cases] == before
    assert not (out / "segmentation" / "report.md").exists()


def test_a_case_folder_holding_a_readers_own_file_is_refused_and_the_others_go_on(tmp_path, cohort, models):
    det, seg = models
    out = tmp_path / "out"
    (out / "alpha").mkdir(parents=True)
    mine = write_volume(np.ones((30, 40, 60), np.uint8), out / "alpha" / "segmentation.nii.gz", is_labels=True)
    before = mine.read_bytes()
    cases = [c for c in find_cases([cohort]) if c[0] in ("alpha", "beta")]
    alpha, beta = screen_cases(cases, out, detector=det, segmenter=seg)
    assert alpha.status == "error" and f"{mine} is not a file of an earlier screening report" in alpha.message
    assert mine.read_bytes() == before and [p.name for p in (out / "alpha").iterdir()] == ["segmentation.nii.gz"]
    assert beta.status == "ok" and (out / "beta" / "report.json").is_file()


def test_a_threshold_that_is_no_score_is_refused_before_any_case(tmp_path, cohort, models):
    det, seg = models
    with pytest.raises(InputError, match="score_threshold must be a score between 0 and 1"):
        screen_cases(find_cases([cohort]), tmp_path / "out", detector=det, segmenter=seg, score_threshold=float("nan"))
    assert not (tmp_path / "out" / COHORT_FILE).exists()


def test_a_report_listing_no_finding_is_refused_before_any_case(tmp_path, cohort, models):
    det, seg = models  # every case would fail on it, after the models loaded and cohort.csv was begun
    with pytest.raises(InputError, match="max_findings must be 1 or more for a screening report"):
        screen_cases(find_cases([cohort]), tmp_path / "out", detector=det, segmenter=seg, max_findings=0)
    assert not (tmp_path / "out").exists()


def test_a_cohort_table_that_no_run_wrote_is_refused_before_any_model_loads(tmp_path, cohort, models, monkeypatch):
    import napari_medai.api as api

    det, seg = models
    out = tmp_path / "out"
    out.mkdir()
    mine = "patient,age,smoker\nalpha,61,yes\n"  # a researcher's own table of the cohort, so named
    (out / COHORT_FILE).write_text(mine)
    monkeypatch.setattr(api, "_model", lambda *a, **k: pytest.fail("a model loaded"))
    cases = [c for c in find_cases([cohort]) if c[0] == "alpha"]
    with pytest.raises(InputError, match="not a cohort table that medai batch wrote"):
        screen_cases(cases, out, detector=det, segmenter=seg)
    assert (out / COHORT_FILE).read_text() == mine and sorted(p.name for p in out.iterdir()) == [COHORT_FILE]
    (out / COHORT_FILE).write_bytes(b"\xff\xfe\x00garbage")  # not even text
    with pytest.raises(InputError, match="cannot be read as an earlier run's cohort table"):
        screen_cases(cases, out, detector=det, segmenter=seg)


def test_a_run_on_some_cases_keeps_the_other_cases_rows(tmp_path, cohort, models):
    det, seg = models
    out = tmp_path / "out"
    cases = dict(find_cases([cohort]))
    screen_cases([("alpha", cases["alpha"]), ("broken", cases["broken"])], out, detector=det, segmenter=seg)
    # an older version's table had no category_by_attenuation column: its rows are kept too
    with open(out / COHORT_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    old_fields = [k for k in rows[0] if k != "category_by_attenuation"]
    with open(out / COHORT_FILE, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=old_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (cohort / "broken.nii.gz").unlink()  # mended: now a good scan under the same name
    write_volume(two_lung_chest(), cohort / "broken.nii.gz", affine=AFFINE, modality="CT")
    screen_cases([("beta", cases["beta"]), ("broken", cases["broken"])], out, detector=det, segmenter=seg)
    with open(out / COHORT_FILE, newline="") as fh:
        after = {row["case"]: row for row in csv.DictReader(fh)}
    assert list(after) == ["alpha", "broken", "beta"]  # earlier rows keep their place, new ones follow
    assert after["alpha"]["status"] == "ok" and after["alpha"]["findings"] == rows[0]["findings"]
    assert after["alpha"]["category_by_attenuation"] == ""  # the old table did not have it
    assert after["broken"]["status"] == "ok" and after["beta"]["category_by_attenuation"] != ""
    assert rows[1]["status"] == "error"  # the first run's row that the second replaced


def test_hidden_files_and_folders_are_no_cases(tmp_path, cohort):
    (cohort / "._alpha.nii.gz").write_bytes(b"\0\5\26\7" + b"\0" * 4092)  # a Mac resource-fork twin
    hidden = cohort / ".trash"
    hidden.mkdir()
    write_volume(two_lung_chest(), hidden / "old.nii.gz", affine=AFFINE, modality="CT")
    names = [name for name, _ in find_cases([cohort])]
    assert not any(name.startswith(".") or name == "old" for name in names) and "alpha" in names


def test_a_device_this_machine_lacks_is_refused_once_before_any_case(tmp_path, cohort, models, monkeypatch, capsys):
    """--device cuda without a GPU failed every case one by one, wrote cohort.csv and exited 1."""
    import torch

    from napari_medai import api
    from napari_medai.inference import InferenceSettings

    det, seg = models
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cases = [c for c in find_cases([cohort]) if c[0] == "alpha"]
    with pytest.raises(InputError, match="a CUDA GPU was requested but none is available"):
        screen_cases(cases, tmp_path / "out", detector=det, segmenter=seg, settings=InferenceSettings(device="cuda"))
    assert not (tmp_path / "out").exists()
    assert main(["batch", str(cohort / "alpha.nii.gz"), "--out-dir", str(tmp_path / "out2"), "--detector", det,
                 "--segmenter", seg, "--device", "cuda", "--quiet"]) == 2
    assert "case(s) to screen" not in capsys.readouterr().out and not (tmp_path / "out2").exists()
    monkeypatch.setattr(api, "_model", lambda *a, **k: pytest.fail("a model loaded"))
    with pytest.raises(InputError, match="cancel must be a napari_medai.inference.CancelToken"):
        screen_cases(cases, tmp_path / "out3", detector=det, segmenter=seg, cancel=True)


def test_a_bad_setting_is_refused_before_any_case(tmp_path, cohort, models, monkeypatch):
    from napari_medai import api

    det, seg = models
    cases = [c for c in find_cases([cohort]) if c[0] == "alpha"]
    monkeypatch.setattr(api, "_model", lambda *a, **k: pytest.fail("a model loaded"))
    for settings, match in (({"focus_probability": 2}, "focus_probability"), ({"tta": "flip"}, "test-time")):
        with pytest.raises(InputError, match=match):
            screen_cases(cases, tmp_path / "out", detector=det, segmenter=seg, settings=settings)
    assert not (tmp_path / "out").exists()


def test_a_model_that_does_not_load_leaves_no_empty_out_dir(tmp_path, cohort, models):
    from napari_medai.errors import ModelError

    det, seg = models
    cases = [c for c in find_cases([cohort]) if c[0] == "alpha"]
    with pytest.raises(ModelError, match="no built-in model called 'nope'"):
        screen_cases(cases, tmp_path / "out", detector="nope", segmenter=seg)
    assert not (tmp_path / "out").exists()  # medai screen leaves none either


def test_a_detector_that_does_not_load_is_the_only_thing_batch_prints(tmp_path, cohort, models, capsys):
    det, seg = models
    assert main(["batch", str(cohort), "--out-dir", str(tmp_path / "out"), "--detector", "nope",
                 "--segmenter", seg]) == 2
    captured = capsys.readouterr()
    assert "no built-in model called 'nope'" in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()
    # a run whose models load counts its cases first
    assert main(["batch", str(cohort / "alpha.nii.gz"), "--out-dir", str(tmp_path / "out"), "--detector", det,
                 "--segmenter", seg, "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("1 case(s) to screen with 1 worker(s)\n")


def test_no_workers_is_refused_before_the_cases_are_counted(tmp_path, cohort, models, capsys):
    det, seg = models
    assert main(["batch", str(cohort), "--out-dir", str(tmp_path / "out"), "--workers", "0"]) == 2
    captured = capsys.readouterr()
    assert "--workers must be 1 or more, got 0" in captured.err and "case(s) to screen" not in captured.out
    assert not (tmp_path / "out").exists()


def test_a_case_whose_file_says_mr_is_an_error_and_the_others_go_on(tmp_path, models):
    """medai screen refuses a file that says MR for its CT models; batch screened it."""
    det, seg = models
    folder = tmp_path / "cohort"
    folder.mkdir()
    write_volume(two_lung_chest(), folder / "ct.nii.gz", affine=AFFINE, modality="CT")
    write_volume(two_lung_chest(), folder / "t1.nii.gz", affine=AFFINE, modality="MR")  # values pass as HU
    records = {r.case: r for r in screen_cases(find_cases([folder]), tmp_path / "out", detector=det, segmenter=seg)}
    assert records["ct"].status == "ok"
    assert records["t1"].status == "error" and "is an MR image by its header" in records["t1"].message
    assert not (tmp_path / "out" / "t1" / "report.md").exists()


def test_a_rerun_on_fewer_inputs_keeps_each_sources_case_name(tmp_path, models):
    """Names depend on the inputs given: a re-run with b/scan.nii.gz alone named it "scan", wrote
    its report over a's, and the table listed b twice (found by an audit helper)."""
    det, seg = models
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_volume(two_lung_chest(), tmp_path / folder / "scan.nii.gz", affine=AFFINE, modality="CT")
    out = tmp_path / "out"
    first = screen_cases(find_cases([tmp_path / "a", tmp_path / "b"]), out, detector=det, segmenter=seg)
    assert [(r.case, Path(r.source).parent.name) for r in first] == [("scan", "a"), ("scan_2", "b")]
    a_report = (out / "scan" / "report.json").read_text()
    again = screen_cases(find_cases([tmp_path / "b"]), out, detector=det, segmenter=seg)
    assert [r.case for r in again] == ["scan_2"]  # b's name from the first run
    assert (out / "scan" / "report.json").read_text() == a_report  # a's report untouched
    with open(out / COHORT_FILE, newline="") as fh:
        rows = [(row["case"], Path(row["source"]).parent.name) for row in csv.DictReader(fh)]
    assert rows == [("scan", "a"), ("scan_2", "b")]
    # a new source never takes a name an earlier row gave another
    (tmp_path / "c").mkdir()
    write_volume(two_lung_chest(), tmp_path / "c" / "scan.nii.gz", affine=AFFINE, modality="CT")
    assert [r.case for r in screen_cases(find_cases([tmp_path / "c"]), out, detector=det, segmenter=seg)] == ["scan_3"]


def test_a_case_being_screened_is_listed_as_running_not_by_its_earlier_row(tmp_path, cohort, models, monkeypatch):
    """A re-run killed while a case's files were rewritten left that case's earlier "ok" row."""
    import napari_medai.screening as screening

    det, seg = models
    out = tmp_path / "out"
    cases = [c for c in find_cases([cohort]) if c[0] == "alpha"]
    screen_cases(cases, out, detector=det, segmenter=seg)
    real, seen = screening.screen, []

    def looking(*args, **kwargs):
        with open(out / COHORT_FILE, newline="") as fh:
            seen.append({row["case"]: row["status"] for row in csv.DictReader(fh)})
        return real(*args, **kwargs)

    monkeypatch.setattr(screening, "screen", looking)
    (record,) = screen_cases(cases, out, detector=det, segmenter=seg)
    assert seen == [{"alpha": "running"}] and record.status == "ok"
    with open(out / COHORT_FILE, newline="") as fh:
        assert [row["status"] for row in csv.DictReader(fh)] == ["ok"]
    # a re-run cancelled before it wrote anything gives the earlier row back (it stayed "running")
    from napari_medai.errors import Cancelled

    def cancelled(*args, **kwargs):
        raise Cancelled()

    monkeypatch.setattr(screening, "screen", cancelled)
    with pytest.raises(Cancelled):
        screen_cases(cases, out, detector=det, segmenter=seg)
    with open(out / COHORT_FILE, newline="") as fh:
        assert [row["status"] for row in csv.DictReader(fh)] == ["ok"]


def test_a_case_that_fails_on_a_rerun_moves_its_earlier_report_aside(tmp_path, cohort, models):
    """Its folder kept the earlier run's complete report beside a cohort row saying error."""
    det, seg = models
    out = tmp_path / "out"
    cases = [c for c in find_cases([cohort]) if c[0] == "alpha"]
    screen_cases(cases, out, detector=det, segmenter=seg)
    (out / "alpha" / "notes.txt").write_text("the reader's")  # not the report's: stays where it is
    (cohort / "alpha.nii.gz").write_bytes(b"damaged now")
    (record,) = screen_cases(cases, out, detector=det, segmenter=seg)
    assert record.status == "error" and "the earlier run's report was moved to 'alpha (earlier run)'" in record.message
    aside = out / "alpha (earlier run)"
    assert {p.name for p in aside.iterdir()} == {"report.md", "report.json", "findings.csv", "segmentation.nii.gz",
                                                  "key_images"}
    assert [p.name for p in (out / "alpha").iterdir()] == ["notes.txt"]
    (record,) = screen_cases(cases, out, detector=det, segmenter=seg)  # no report left to move
    assert record.status == "error" and "moved" not in record.message and aside.is_dir()


def test_nifti_files_in_sub_folders_are_named_not_dropped_silently(tmp_path, models, capsys):
    """A folder per patient (p02/ct.nii.gz): only the top level is searched, and those were left
    out while the run said "1 of 1 case(s) screened" (found by an audit helper)."""
    folder = tmp_path / "cohort"
    for sub in ("p02", "p03", "empty", ".hidden"):
        (folder / sub).mkdir(parents=True)
    write_volume(two_lung_chest(), folder / "p01.nii.gz", affine=AFFINE, modality="CT")
    for sub in ("p02", "p03", ".hidden"):
        write_volume(two_lung_chest(), folder / sub / "ct.nii.gz", affine=AFFINE, modality="CT")
    notes = []
    assert [name for name, _ in find_cases([folder], on_note=notes.append)] == ["p01"]
    assert notes == [f"{folder}: the NIfTI files in p02, p03 (sub-folders) are not screened: give those folders "
                     "as inputs too"]
    with pytest.warns(UserWarning, match="p02, p03"):
        find_cases([folder])
    (folder / "p03" / "report.json").write_text("{}")  # a report folder (--out-dir the cohort) is no patient's
    find_cases([folder], on_note=notes.append)
    assert notes[-1].endswith("the NIfTI files in p02 (sub-folders) are not screened: give those folders as inputs too")
    det, seg = models
    main(["batch", str(folder), "--out-dir", str(tmp_path / "out"), "--detector", det, "--segmenter", seg, "--quiet"])
    assert "note: " in capsys.readouterr().err


def test_a_case_is_never_named_as_the_runs_own_files(tmp_path):
    # "a (earlier run).nii.gz" beside "a.nii.gz": a's failed re-run moved its report into the other
    # case's folder, removing it; "cohort.csv.nii.gz" failed on the cohort file (found by an audit helper)
    for name in ("a.nii.gz", "a (earlier run).nii.gz", "cohort.csv.nii.gz", "COHORT.CSV.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    names = sorted(case for case, _ in find_cases([tmp_path]))
    assert names == ["COHORT.CSV_2", "a", "a (earlier run)_2", "cohort.csv_3"]  # one folder where case is ignored


def test_an_earlier_runs_reserved_case_name_is_not_kept(tmp_path):
    from napari_medai.batch import keep_earlier_names

    scan = tmp_path / "a (Earlier Run).nii.gz"
    scan.write_bytes(b"")
    earlier = [{"case": "a (Earlier Run)", "source": str(scan)}]  # named so before names were reserved
    ((name, _),) = keep_earlier_names([("a (Earlier Run)", scan)], earlier)
    assert name == "a (Earlier Run)_2"



def _cohort_rows(out) -> list[dict]:
    with open(out / COHORT_FILE, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_a_rerun_replaces_the_row_of_a_file_whose_name_is_not_utf8(tmp_path, models):
    """b'caf\\xe9.nii.gz' (Latin-1) was named 'caf\\udce9' (a lone surrogate), which cohort.csv
    holds as the text 'caf\\\\udce9': a re-run did not know its earlier row and listed the case
    again, once more each run (found by an audit helper)."""
    import os

    det, seg = models
    folder = tmp_path / "cohort"
    folder.mkdir()
    latin1 = folder / os.fsdecode(b"caf\xe9.nii.gz")
    for path in (folder / "alpha.nii.gz", latin1, folder / "omega.nii.gz"):
        write_volume(two_lung_chest(), path, affine=AFFINE, modality="CT")
    out = tmp_path / "out"
    first = screen_cases(find_cases([folder]), out, detector=det, segmenter=seg)
    again = screen_cases(find_cases([latin1]), out, detector=det, segmenter=seg)
    rows = _cohort_rows(out)
    assert [row["case"] for row in rows] == ["alpha", "café", "omega"]  # replaced in its place
    assert [r.case for r in first] == ["alpha", "café", "omega"] and [r.case for r in again] == ["café"]
    assert rows[1]["source"] == str(folder / "caf\\udce9.nii.gz") and again[0].source == str(latin1)
    assert {p.name for p in out.iterdir()} == {COHORT_FILE, "alpha", "café", "omega"}  # one folder, both runs
    # a table such re-runs wrote, the case twice: one row again
    with open(out / COHORT_FILE, "a", newline="", encoding="utf-8") as fh:
        csv.DictWriter(fh, fieldnames=list(rows[1]), lineterminator="\n").writerow(rows[1])
    screen_cases(find_cases([latin1]), out, detector=det, segmenter=seg)
    assert [row["case"] for row in _cohort_rows(out)] == ["alpha", "café", "omega"]


def test_an_earlier_row_whose_name_is_not_kept_is_replaced_in_its_place(tmp_path, models):
    """An older version's row "x (earlier run)" (a name now reserved) stayed beside the re-run's
    "x (earlier run)_2": the table listed the scan twice."""
    from napari_medai.batch import CaseRecord, cohort_csv

    det, seg = models
    folder = tmp_path / "cohort"
    folder.mkdir()
    scan = write_volume(two_lung_chest(), folder / "x (earlier run).nii.gz", affine=AFFINE, modality="CT")
    out = tmp_path / "out"
    out.mkdir()
    older = [CaseRecord("x (earlier run)", str(scan.resolve()), "ok"), CaseRecord("y", str(folder / "y.nii.gz"), "ok")]
    (out / COHORT_FILE).write_text(cohort_csv(older))
    (record,) = screen_cases(find_cases([scan]), out, detector=det, segmenter=seg)
    assert record.case == "x (earlier run)_2" and record.status == "ok"
    assert [(row["case"], row["status"]) for row in _cohort_rows(out)] == [("x (earlier run)_2", "ok"), ("y", "ok")]


def test_names_that_differ_only_in_letter_case_are_kept_apart(tmp_path):
    """a/Scan.nii.gz and b/scan.nii.gz were named "Scan" and "scan": one report folder on a
    case-insensitive file system (macOS, Windows, an exFAT drive), the second report over the first."""
    from napari_medai.batch import keep_earlier_names

    for path in (tmp_path / "a" / "Scan.nii.gz", tmp_path / "a" / "scan.nii.gz", tmp_path / "b" / "SCAN.nii.gz"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    assert [name for name, _ in find_cases([tmp_path / "a", tmp_path / "b"])] == ["Scan", "scan_2", "SCAN_3"]
    earlier = [{"case": "scan", "source": str(tmp_path / "a" / "scan.nii.gz")}]  # a re-run on b alone
    assert [name for name, _ in keep_earlier_names(find_cases([tmp_path / "b"]), earlier)] == ["SCAN_2"]
