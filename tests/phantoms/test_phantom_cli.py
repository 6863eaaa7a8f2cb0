import json

import nibabel as nib
import numpy as np
import pytest

from napari_medai.cli.main import main
from napari_medai.io import read_volume
from napari_medai.phantoms import make_chest_ct


def test_phantom_command_writes_image_labels_lowdose_and_nodules(tmp_path, capsys):
    rc = main(["phantom", "--seed", "5", "--count", "2", "--out", str(tmp_path), "--shape", "8", "64", "64",
               "--spacing", "2.5", "1.8", "1.8", "--low-dose", "5e3", "--nodules", "1"])
    assert rc == 0
    for seed in (5, 6):
        name = f"case{seed:04d}"
        image = read_volume(tmp_path / f"{name}_image.nii.gz")
        labels = nib.load(tmp_path / f"{name}_label.nii.gz")
        low = read_volume(tmp_path / f"{name}_lowdose.nii.gz")
        nodules = json.loads((tmp_path / f"{name}_nodules.json").read_text())
        assert image.data.shape == (8, 64, 64) and low.data.shape == (8, 64, 64)
        assert np.allclose(image.spacing, (2.5, 1.8, 1.8))
        assert labels.get_fdata().max() >= 1
        assert not np.array_equal(image.data, low.data)
        # --nodules 1: exactly one nodule, labelled (label 2) with the voxels its entry gives
        label_map = read_volume(tmp_path / f"{name}_label.nii.gz").data
        assert len(nodules) == 1
        (nodule,) = nodules
        assert nodule["label_voxels"] > 0 and int((label_map == 2).sum()) == nodule["label_voxels"]
        assert label_map[tuple(np.rint(nodule["center_voxel"]).astype(int))] == 2
        np.testing.assert_allclose(image.affine @ [*nodule["center_voxel"], 1.0], [*nodule["center_mm"], 1.0],
                                   atol=0.01)
        # the files hold the phantom of that seed
        phantom = make_chest_ct(seed, shape=(8, 64, 64), spacing=(2.5, 1.8, 1.8), n_nodules=1)
        np.testing.assert_array_equal(label_map, phantom.labels)
        assert nodules == json.loads(json.dumps(phantom.nodules))
    assert "case0006" in capsys.readouterr().out


def test_phantom_command_writes_each_cases_files_all_or_none(tmp_path, full_disk, capsys):
    """A full disk at a case's image (written last) left its new label map, low-dose image and
    nodule list beside an earlier image, or none; the cases before it stay whole."""
    out = tmp_path / "ph"
    command = ["phantom", "--seed", "5", "--count", "2", "--out", str(out), "--shape", "8", "32", "32",
               "--low-dose", "5e3", "--nodules", "1"]
    full_disk("case0006_image.nii.gz")
    assert main(command) == 2
    assert f"cannot write {out / 'case0006_image.nii.gz'}: [Errno 28]" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [f"case0005_{kind}" for kind in (
        "image.nii.gz", "label.nii.gz", "lowdose.nii.gz", "nodules.json")]
    earlier = {name: b"an earlier run's " + name.encode() for name in (
        "case0006_image.nii.gz", "case0006_label.nii.gz", "case0006_lowdose.nii.gz", "case0006_nodules.json")}
    for name, content in earlier.items():
        (out / name).write_bytes(content)
    assert main(command) == 2
    assert {name: (out / name).read_bytes() for name in earlier} == earlier
    assert len(list(out.iterdir())) == 8  # no temporary


def test_phantom_command_rejects_bad_count(tmp_path, capsys):
    assert main(["phantom", "--seed", "1", "--count", "0", "--out", str(tmp_path)]) == 2
    assert "count" in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [
    (["--nodules", "-1"], "--nodules must be from 0 to 20, got -1"),
    (["--nodules", "1000"], "--nodules must be from 0 to 20, got 1000"),  # these three: the folder was left
    (["--shape", "2", "8", "8"], "--shape must be three integers (z, y, x) of at least"),
    (["--spacing", "0", "1", "1"], "--spacing must be positive and finite"),
    (["--low-dose", "inf"], "--low-dose must be a finite number of photons per ray, at least 1, got inf"),
    (["--low-dose", "nan"], "--low-dose must be a finite number of photons per ray, at least 1, got nan"),
])
def test_phantom_options_are_refused_in_their_own_words(tmp_path, capsys, option, message):
    """The generator named its Python arguments, and called infinity "below 1" (found by an audit helper)."""
    out = tmp_path / "ph"
    assert main(["phantom", "--seed", "1", "--out", str(out), "--shape", "8", "32", "32", *option]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_napari_sample_gives_image_labels_and_nodule_points(monkeypatch):
    import napari_medai.phantoms as phantoms
    from napari_medai.napari_hooks import samples

    real = phantoms.make_chest_ct
    small = real(4, shape=(16, 64, 64), spacing=(2.5, 1.8, 1.8), n_nodules=2)
    monkeypatch.setattr(phantoms, "make_chest_ct", lambda seed, **kw: small)
    (ct, ct_meta, ct_kind), (lab, lab_meta, lab_kind), (pts, pts_meta, pts_kind) = samples.synthetic_chest_ct()
    assert (ct_kind, lab_kind, pts_kind) == ("image", "labels", "points")
    assert ct_meta["scale"] == lab_meta["scale"] == pts_meta["scale"]
    assert ct_meta["translate"] == pts_meta["translate"]
    assert np.allclose(ct_meta["scale"], small.spacing)
    np.testing.assert_array_equal(lab, small.labels)
    assert pts.shape == (len(small.nodules), 3)
    for centre in np.rint(pts).astype(int):
        assert small.labels[tuple(centre)] == 2
