"""``medai measure``: nodules measured from points given in voxels or in DICOM patient mm."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from napari_medai.cli.main import main
from napari_medai.io import read_volume, write_volume


def _chest(tmp_path):
    """Lung (-850 HU) with a 8 mm solid ball, saved with an oblique-free but shifted, anisotropic affine."""
    spacing = (1.5, 0.8, 0.8)
    zz, yy, xx = np.indices((40, 64, 64), dtype=np.float32)
    ball = ((zz - 20) * spacing[0]) ** 2 + ((yy - 30) * spacing[1]) ** 2 + ((xx - 36) * spacing[2]) ** 2 <= 16.0
    ct = np.where(ball, 40.0, -850.0).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-120.0, 35.0, -60.0)
    return write_volume(ct, tmp_path / "ct.nii.gz", affine=affine, modality="CT")


def test_points_in_voxels_and_in_lps_give_the_same_nodule_and_a_bad_point_is_reported(tmp_path, capsys):
    path = _chest(tmp_path)
    vol = read_volume(path)
    centre = np.argwhere(vol.data > 0).mean(0)  # the ball as napari-medai reads the file
    lps = (vol.affine[:3, :3] @ centre + vol.affine[:3, 3])[::-1]  # world (S, P, L) -> DICOM (x, y, z)
    # the same point from the file's own NIfTI (RAS) affine: DICOM's LPS flips x and y
    img = nib.load(path)
    ijk = np.argwhere(np.asarray(img.dataobj) > 0).mean(0)
    ras = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
    np.testing.assert_allclose(lps, (-ras[0], -ras[1], ras[2]), atol=1e-3)
    out = tmp_path / "measured.json"
    rc = main(["measure", str(path), "--at", *map(str, centre), "--at-lps", *map(str, lps),
               "--at", "5", "5", "5", "--out", str(out)])
    assert rc == 1  # one point held no nodule
    found = json.loads(out.read_text())
    assert len(found) == 2 and all(f["added_by_reader"] for f in found)
    assert found[0]["center_voxel"] == found[1]["center_voxel"]
    np.testing.assert_allclose(found[0]["center_voxel"], centre, atol=0.3)
    assert abs(found[0]["mean_diameter_mm"] - 8.0) <= 0.8 and found[0]["lung_rads"] == "4A"
    captured = capsys.readouterr()
    assert "--at 5 5 5: no nodule at the point" in captured.err and "2 of 3 point(s) measured" in captured.out


def test_a_point_as_the_files_own_voxel_index_gives_the_same_nodule(tmp_path, capsys):
    # the ball's index in a RAS-stored copy (what other viewers of that file show) finds it, and
    # the output gives it back as center_file_voxel
    path = _chest(tmp_path)
    ras = nib.as_closest_canonical(nib.load(path))
    assert "".join(nib.aff2axcodes(ras.affine)) == "RAS"
    nib.save(ras, str(tmp_path / "ras.nii.gz"))
    ijk = np.argwhere(np.asarray(ras.dataobj) > 0).mean(0)
    for name in ("ct", "ras"):
        out = tmp_path / f"{name}.json"
        file_ijk = ijk if name == "ras" else np.argwhere(np.asarray(nib.load(path).dataobj) > 0).mean(0)
        assert main(["measure", str(tmp_path / f"{name}.nii.gz"), "--at-file", *map(str, file_ijk),
                     "--out", str(out)]) == 0
        found = json.loads(out.read_text())
        assert len(found) == 1 and abs(found[0]["mean_diameter_mm"] - 8.0) <= 0.8
        np.testing.assert_allclose(found[0]["center_file_voxel"], file_ijk, atol=0.3)
    assert "--at-file" in capsys.readouterr().out


def test_a_file_index_off_the_files_grid_is_named_in_its_own_terms(tmp_path, capsys):
    """The refusal gave the display frame's (z, y, x) point and shape, not the I J K typed (found by
    an audit helper)."""
    path = _chest(tmp_path)
    ras = nib.as_closest_canonical(nib.load(path))
    nib.save(ras, str(tmp_path / "ras.nii.gz"))
    shape = ras.shape
    ijk = np.argwhere(np.asarray(ras.dataobj) > 0).mean(0)
    out = tmp_path / "m.json"
    assert main(["measure", str(tmp_path / "ras.nii.gz"), "--at-file", *map(str, ijk), "--at-file", "1", "2",
                 str(shape[2] + 5), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert (f"--at-file 1 2 {shape[2] + 5}: the point lies outside the file's voxel grid (I J K from 0 to "
            f"{shape[0] - 1} {shape[1] - 1} {shape[2] - 1})") in captured.err
    assert "1 of 2 point(s) measured" in captured.out and len(json.loads(out.read_text())) == 1


def test_a_file_voxel_index_on_a_dicom_series_is_refused(tmp_path, capsys, monkeypatch):
    import napari_medai.io as io

    path = _chest(tmp_path)
    vol = read_volume(path)
    vol.metadata.pop("nifti_orientation")  # what a DICOM series' volume holds
    monkeypatch.setattr(io, "read_volume", lambda *_a, **_k: vol)
    assert main(["measure", str(path), "--at-file", "1", "2", "3", "--out", str(tmp_path / "m.json")]) == 2
    assert "--at-file takes a NIfTI file's own voxel index" in capsys.readouterr().err


def test_no_point_or_a_wrong_suffix_is_refused(tmp_path, capsys):
    path = _chest(tmp_path)
    assert main(["measure", str(path), "--out", str(tmp_path / "m.json")]) == 2
    assert main(["measure", str(path), "--at", "1", "2", "3", "--out", str(tmp_path / "m.txt")]) == 2
    assert main(["measure", str(path), "--at", "1", "2", "3", "--max-diameter", "0",
                 "--out", str(tmp_path / "m.json")]) == 2
    assert main(["measure", str(path), "--at", "1", "2", "3", "--max-diameter", "1e9",
                 "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "give at least one point" in err and "--out must be a file name ending in .json or .csv" in err
    assert "--max-diameter must be a size in mm from 1 to 100 (the largest nodule or mass to measure), got 0" in err
    assert "got 1e+09" in err
    assert not (tmp_path / "m.json").exists()


def test_no_point_measured_leaves_an_earlier_result_as_it_was(tmp_path, capsys):
    path = _chest(tmp_path)
    centre = np.argwhere(read_volume(path).data > 0).mean(0)
    out = tmp_path / "measured.json"
    assert main(["measure", str(path), "--at", *map(str, centre), "--out", str(out)]) == 0
    before = out.read_text()
    assert len(json.loads(before)) == 1
    # a mistyped slice: exit 1 with the reason, and the good result is not replaced with []
    assert main(["measure", str(path), "--at", "100", "10", "10", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "lies outside the volume" in err and "nothing written to" in err
    assert out.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_an_image_not_in_hu_or_a_label_map_is_refused(tmp_path, capsys):
    ct = read_volume(_chest(tmp_path))
    raw = write_volume((ct.data + 1024).astype(np.uint16), tmp_path / "raw.nii.gz", affine=ct.affine)  # no HU rescale
    mask = write_volume((ct.data > 0).astype(np.uint8), tmp_path / "mask.nii.gz", affine=ct.affine, is_labels=True)
    centre = [str(c) for c in np.argwhere(ct.data > 0).mean(0)]
    for path in (raw, mask):
        assert main(["measure", str(path), "--at", *centre, "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "medai measure reads CT in Hounsfield units" in err and "(from 174 to 1064) are not on that scale" in err
    assert "is a label map (a mask), not a CT" in err
    assert "no lung around the point" not in err and not (tmp_path / "m.json").exists()
