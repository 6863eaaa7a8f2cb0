"""`medai info PATH` prints geometry, modality and intensities; bad files exit with code 2."""

from __future__ import annotations

from napari_medai.cli.main import main
from napari_medai.io.resources import sample_path


def test_info_on_the_lung1_ct(capsys):
    assert main(["info", str(sample_path("lung1_ct"))]) == 0
    out = capsys.readouterr().out
    assert "shape:       48 x 386 x 512 (z, y, x)" in out
    assert "spacing:     5 x 0.570312 x 0.570312 mm" in out
    assert "orientation: LPS as loaded (i, j, k); LPS in the file" in out
    assert "modality:    CT" in out
    assert "dtype:       int16" in out
    assert "range:       -1024 to " in out
    assert "percentiles: p1=" in out and "p50=" in out


def test_info_on_colin27_names_its_file_orientation(capsys):
    assert main(["info", str(sample_path("colin27_t1"))]) == 0
    out = capsys.readouterr().out
    assert "RAS in the file" in out and "modality:    MR" in out


def test_info_on_a_label_map_counts_voxels(capsys):
    assert main(["info", str(sample_path("lung1_nodule_mask"))]) == 0
    out = capsys.readouterr().out
    assert "kind:        labels" in out
    assert "labels:      0: 9485499, 1: 837 voxels" in out


def test_info_on_a_bad_file_prints_the_reason(tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00truncated")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "medai info: error: bad.nii.gz is damaged, truncated or not a NIfTI file" in err


def test_info_counts_nan_voxels_and_describes_the_rest(tmp_path, capsys):
    import numpy as np

    from napari_medai.io import Volume, write_volume

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    data[0, 0, :3] = np.nan
    path = write_volume(Volume.from_spacing(data, modality="MR"), tmp_path / "nan.nii.gz")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "not finite:  3 NaN and 0 infinite voxel(s)" in out
    assert "range:       3 to 119" in out and "nan" not in out.split("not finite")[1].split("\n", 1)[1]


def test_info_describes_a_single_slice_file(tmp_path, capsys):
    """medai phantom --shape 1 32 32 writes one slice, which medai denoise reads but medai info
    refused as "not a 3D volume" (found by an audit helper)."""
    from napari_medai.cli.main import main

    assert main(["phantom", "--seed", "1", "--out", str(tmp_path), "--shape", "1", "32", "32"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "case0001_image.nii.gz")]) == 0
    assert "1 x 32 x 32" in capsys.readouterr().out
