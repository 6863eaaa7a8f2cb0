"""``medai denoise`` round trip on a tiny NIfTI with a tiny model card."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_medai.cli.main import main
from napari_medai.io import read_volume, write_volume

_HELPERS = Path(__file__).resolve().parents[1] / "denoising" / "denoise_helpers.py"
_spec = importlib.util.spec_from_file_location("denoise_helpers", _HELPERS)
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
make_tiny_card = _helpers.make_tiny_card


@pytest.fixture
def noisy_nifti(tmp_path, rng):
    data = rng.normal(100, 10, (4, 20, 18)).astype(np.float32)
    affine = np.diag([3.0, 0.8, 0.9, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.5)
    return write_volume(data, tmp_path / "in.nii.gz", affine=affine, modality="MR")


def test_round_trip_keeps_grid_and_affine(tmp_path, noisy_nifti, capsys):
    card = make_tiny_card(tmp_path / "model", head_weight=0.05)
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(noisy_nifti), str(out_path), "--model", str(card), "--precision", "fp32"]) == 0
    src, out = read_volume(noisy_nifti), read_volume(out_path)
    assert out.data.shape == src.data.shape
    np.testing.assert_array_equal(out.affine, src.affine)
    assert not np.allclose(out.data, src.data)
    assert "slice 4/4" in capsys.readouterr().err


def test_strength_zero_writes_the_input(tmp_path, noisy_nifti, capsys):
    card = make_tiny_card(tmp_path / "model", head_weight=0.05)
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(noisy_nifti), str(out_path), "--model", str(card), "--strength", "0",
                 "--quiet"]) == 0
    np.testing.assert_array_equal(read_volume(out_path).data, read_volume(noisy_nifti).data)
    assert "slice" not in capsys.readouterr().out  # --quiet: no progress line in a log


def test_errors_exit_2_and_write_nothing(tmp_path, noisy_nifti, capsys):
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(noisy_nifti), str(out_path), "--model", "no-such-model"]) == 2
    assert "no built-in model" in capsys.readouterr().err
    assert main(["denoise", str(tmp_path / "missing.nii.gz"), str(out_path)]) == 2
    assert not out_path.exists()


def test_the_ct_denoiser_on_an_mr_file_exits_with_one_sentence(tmp_path, noisy_nifti, capsys):
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(noisy_nifti), str(out_path), "--model", "ct-lowdose-denoising"]) == 2
    err = capsys.readouterr().err
    assert "'ct-lowdose-denoising' reads CT in Hounsfield units" in err and "Traceback" not in err
    assert not out_path.exists()


def test_outputs_that_would_replace_the_input_or_cannot_be_written_are_refused_before_the_run(
        tmp_path, noisy_nifti, capsys, monkeypatch):
    import hashlib

    import napari_medai.denoising as denoising

    ran = []
    monkeypatch.setattr(denoising, "denoise", lambda *a, **k: ran.append(1))  # must not be reached
    before = hashlib.md5(noisy_nifti.read_bytes()).hexdigest()
    assert main(["denoise", str(noisy_nifti), str(noisy_nifti)]) == 2
    assert main(["denoise", str(noisy_nifti), str(tmp_path / "out.txt")]) == 2
    err = capsys.readouterr().err
    assert "is the input itself" in err and "must end in .nii or .nii.gz" in err
    assert ran == [] and hashlib.md5(noisy_nifti.read_bytes()).hexdigest() == before
    monkeypatch.undo()
    # a folder that does not exist yet is made, as medai detect does
    card = make_tiny_card(tmp_path / "model", head_weight=0.05)
    nested = tmp_path / "new" / "folder" / "out.nii.gz"
    assert main(["denoise", str(noisy_nifti), str(nested), "--model", str(card)]) == 0 and nested.exists()


def _slice_file(path, shape, dtype, rng):
    """A single slice stored as ``shape`` ((y, x), (y, x, 1) or a sagittal (1, y, x)), MR-like."""
    import nibabel as nib

    data = rng.normal(300, 30, shape).astype(dtype)
    affine = np.diag([-0.7, -0.8, 5.0, 1.0])  # LPS voxel axes, 5 mm thick
    affine[:3, 3] = (12.5, -30.25, 41.0)
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = b"medai modality=MR kind=image"
    nib.save(img, str(path))
    return path, data


@pytest.mark.parametrize("shape", [(64, 64), (64, 64, 1), (1, 64, 48)])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_a_single_slice_file_is_denoised_into_a_file_of_its_shape_dtype_and_affine(tmp_path, rng, capsys,
                                                                                    shape, dtype):
    """The denoisers are 2D: one slice used to exit 2 with "is not a 3D volume"."""
    import nibabel as nib

    from napari_medai.denoising import denoise

    card = make_tiny_card(tmp_path / "model", head_weight=0.05)
    src_path, _data = _slice_file(tmp_path / "slice.nii.gz", shape, dtype, rng)
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(src_path), str(out_path), "--model", str(card), "--precision", "fp32"]) == 0
    assert "slice 1/1" in capsys.readouterr().err
    src, out = nib.load(str(src_path)), nib.load(str(out_path))
    assert out.shape == shape and out.get_data_dtype() == np.dtype(dtype)  # as a volume's output
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
    assert [int(out.header[k]) for k in ("sform_code", "qform_code")] == [
        int(src.header[k]) for k in ("sform_code", "qform_code")]
    np.testing.assert_array_equal(read_volume(out_path, allow_slice=True).affine,
                                  read_volume(src_path, allow_slice=True).affine)
    # the very values the API gives for that slice (as displayed: (1, y, x), or (z, y) of the sagittal one)
    shown = read_volume(src_path, allow_slice=True).data.squeeze()
    expected = denoise(shown, model=str(card), settings={"precision": "fp32"})
    np.testing.assert_array_equal(read_volume(out_path, allow_slice=True).data.squeeze(), expected)
    assert not np.array_equal(expected, shown)


def test_a_single_slice_dicom_is_denoised_with_the_builtin_ct_model(tmp_path, capsys):
    """One full-size CT slice (pydicom's CT_small.dcm, 128 x 128): a NIfTI one slice thick on its grid."""
    import shutil

    import nibabel as nib
    from pydicom.data import get_testdata_file

    folder = tmp_path / "slice"
    folder.mkdir()
    dcm = Path(shutil.copy(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm"))
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(dcm), str(out_path), "--quiet"]) == 0  # CT from the file: ct-lowdose-denoising
    src, out = read_volume(dcm, allow_slice=True), read_volume(out_path, allow_slice=True)
    assert out.data.shape == src.data.shape == (1, 128, 128) and out.data.dtype == src.data.dtype == np.int16
    np.testing.assert_array_equal(out.affine, src.affine)
    np.testing.assert_allclose(out.spacing, (5.0, 0.661468, 0.661468), rtol=1e-6)  # SliceThickness 5 mm
    assert nib.load(str(out_path)).shape == (128, 128, 1) and not np.array_equal(out.data, src.data)
    assert "wrote" in capsys.readouterr().out


def test_the_other_tasks_still_refuse_a_single_slice(tmp_path, rng, capsys):
    src_path, _data = _slice_file(tmp_path / "slice.nii.gz", (64, 64), np.int16, rng)
    assert main(["segment", str(src_path), str(tmp_path / "seg.nii.gz"), "--quiet"]) == 2
    assert main(["detect", str(src_path), "--out", str(tmp_path / "f.json"), "--quiet"]) == 2
    assert main(["screen", str(src_path), "--out-dir", str(tmp_path / "report"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("slice.nii.gz is not a 3D volume (shape (64, 64))") == 3 and "Traceback" not in err


def test_a_ct_denoiser_named_for_a_file_that_says_mr_is_refused_unless_modality_says_ct(tmp_path, capsys):
    ct = np.full((3, 24, 24), -1000.0, np.float32)  # values that pass as HU
    ct[:, 4:20, 4:20] = 40.0
    ct[:, 8:14, 6:12] = -850.0
    src = write_volume(ct, tmp_path / "in.nii.gz", affine=np.eye(4), modality="MR")
    card = make_tiny_card(tmp_path / "model", modality="CT")
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(src), str(out_path), "--model", str(card), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"medai denoise: error: {src} is an MR image by its header, but model 'tiny-ct-denoiser' "
                          "is made for CT: if it is a CT after all, pass --modality CT")
    assert not out_path.exists()
    assert main(["denoise", str(src), str(out_path), "--model", str(card), "--quiet", "--modality", "CT"]) == 0
    assert out_path.exists()


def test_a_device_this_machine_lacks_is_refused_first_even_at_strength_zero(tmp_path, noisy_nifti, monkeypatch,
                                                                             capsys):
    """--device cuda --strength 0 wrote the input back on a machine without a GPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    card = make_tiny_card(tmp_path / "model")
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(noisy_nifti), str(out_path), "--model", str(card), "--device", "cuda",
                 "--strength", "0"]) == 2
    # checked before the input is read: a missing file is not what it says
    assert main(["denoise", str(tmp_path / "missing.nii.gz"), str(out_path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("a CUDA GPU was requested but none is available") == 2 and "does not exist" not in err
    assert not out_path.exists()


def test_apple_mps_is_a_device_for_the_2d_denoisers(tmp_path, noisy_nifti, monkeypatch, capsys):
    """The up-front --device check took the denoisers for 3D networks and refused "mps", which
    denoise() accepts for them (a 3D network cannot run there)."""
    from napari_medai.inference import device

    monkeypatch.setattr(device, "mps_available", lambda: True)
    card = make_tiny_card(tmp_path / "model")
    out_path = tmp_path / "out.nii.gz"
    assert main(["denoise", str(noisy_nifti), str(out_path), "--model", str(card), "--device", "mps",
                 "--strength", "0"]) == 0  # strength 0: no network runs, so no real MPS is needed
    assert "cannot run 3D networks" not in capsys.readouterr().err and out_path.exists()


def test_a_3d_denoiser_counts_passes_not_slices(tmp_path, noisy_nifti, capsys):
    card = make_tiny_card(tmp_path / "model", spatial_dims=3, head_weight=0.05)
    assert main(["denoise", str(noisy_nifti), str(tmp_path / "out.nii.gz"), "--model", str(card)]) == 0
    said = capsys.readouterr()
    assert "denoising: pass 1/1" in said.err and "\r" not in said.out  # progress on stderr: stdout stays a log


def test_a_modality_guessed_from_the_values_is_said_and_not_written_as_stated(tmp_path, rng, capsys):
    """A CT stored without its HU rescale (uint16, +1024, no scl_inter) reads as MR: the automatic
    choice ran the MR model without a word, and the output file was tagged MR as if the input had
    said so (found by an audit helper)."""
    import nibabel as nib

    ct = np.clip(rng.normal(1064, 30, (4, 24, 24)), 0, None).astype(np.uint16)  # soft tissue, +1024
    ct[:, :4] = 24  # air at -1000 HU
    path = tmp_path / "offset_ct.nii.gz"
    nib.save(nib.Nifti1Image(ct.T, np.diag([0.8, 0.8, 2.5, 1.0])), str(path))
    read = read_volume(path)
    assert read.modality == "MR" and read.metadata["modality_guessed"]
    out = tmp_path / "out.nii.gz"
    assert main(["denoise", str(path), str(out), "--precision", "fp32", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "does not state its modality; it is read as MR because none of its values is below 0" in err
    assert "'mr-denoising' runs" in err and "A CT stored without its HU rescale reads as MR too" in err
    again = read_volume(out)
    assert again.metadata["description"] == "medai kind=image" and again.metadata["modality_guessed"]
    # stated by --modality, a tagged file, or the model named: no note, and a tagged output
    assert main(["denoise", str(path), str(out), "--modality", "MR", "--precision", "fp32", "--quiet"]) == 0
    assert "does not state" not in capsys.readouterr().err
    assert read_volume(out).metadata["description"] == "medai modality=MR kind=image"  # stated now
    stated = write_volume(ct.astype(np.float32), tmp_path / "mr.nii.gz", modality="MR")
    assert "modality_guessed" not in read_volume(stated).metadata
    assert main(["denoise", str(stated), str(out), "--precision", "fp32", "--quiet"]) == 0
    assert "does not state" not in capsys.readouterr().err
    assert read_volume(out).metadata["description"] == "medai modality=MR kind=image"
