"""The findings CSV (``medai detect --out x.csv``, the detection dock's Export CSV…)."""

import csv
import io

from napari_medai.postprocess.findings import Finding
from napari_medai.postprocess.report import CSV_FIELDS, findings_to_csv


def _finding(z: float, score: float, outline: str = "half-maximum", mean_mm: float = 6.15) -> Finding:
    return Finding(center_voxel=[z, 20.0, 31.4], center_mm=[2.5 * z, 16.0, 25.1], bbox_voxel=[[5, 18, 29], [9, 23, 34]],
                   diameter_mm=7.2, short_axis_mm=5.1, mean_diameter_mm=mean_mm, volume_ml=0.12, score=score,
                   lung_rads="3", outline=outline)


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_csv_lists_each_findings_slice_as_the_table_does():
    """The dock table's Slice column (the centre's z, halves rounded up) is in the file too, so the
    exported rows name the slices the reader saw."""
    findings = [_finding(13.21, 0.9), _finding(6.5, 0.8), _finding(7.49, 0.7)]
    rows = _rows(findings_to_csv(findings))
    assert list(rows[0]) == list(CSV_FIELDS) and "slice" in CSV_FIELDS
    assert [r["slice"] for r in rows] == ["13", "7", "7"]
    assert [r["center_voxel"] for r in rows] == ["13.21 20.0 31.4", "6.5 20.0 31.4", "7.49 20.0 31.4"]
    reviewed = _rows(findings_to_csv(findings, review=["accepted", "", "rejected"]))
    assert list(reviewed[0]) == [*CSV_FIELDS, "review"]
    assert [(r["slice"], r["review"]) for r in reviewed] == [("13", "accepted"), ("7", ""), ("7", "rejected")]


def test_the_file_grid_is_the_readers_only_while_the_data_keeps_its_shape():
    from napari_medai.postprocess.report import file_grid

    meta = {"nifti_orientation": "RAS", "shape": (20, 30, 40)}
    assert file_grid((20, 30, 40), meta) == ((20, 30, 40), "RAS")
    assert file_grid((20, 28, 40), meta) is None  # cropped, its metadata kept: no longer the file's grid
    assert file_grid((20, 30, 40), {"nifti_orientation": "RAS"}) == ((20, 30, 40), "RAS")  # no shape said
    assert file_grid((20, 30, 40), {}) is None and file_grid((20, 30, 40), None) is None


def test_small_findings_on_the_networks_outline_are_noted_and_the_csv_says_each_outline():
    """The network's outline undersizes nodules under 8 mm: the summary says which findings kept
    it, and the CSV names every finding's outline."""
    from napari_medai.postprocess.report import findings_markdown, outline_note

    findings = [_finding(13, 0.9, "network", 12.0), _finding(7, 0.8, "network", 7.9),
                _finding(6, 0.7, "half-maximum", 5.0), _finding(5, 0.6, "box", 4.0), _finding(4, 0.5, "mixed", 3.1)]
    note = outline_note(findings)
    # not 1 (12 mm); 5 is partly on the network's outline
    assert note.startswith("findings 2, 5 are measured (at least in part) on the network's outline as drawn")
    assert "no lung or no contrast around the finding" in note and "size category may be too low" in note
    assert note in findings_markdown(findings, shape=(40, 64, 64))
    assert outline_note(findings[:1]) is None and outline_note(findings[2:4]) is None
    assert outline_note(findings[1:2]).startswith("finding 1 is measured")
    assert [r["outline"] for r in _rows(findings_to_csv(findings))] == [
        "network", "network", "half-maximum", "box", "mixed"]
