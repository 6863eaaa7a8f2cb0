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
    assert "slice 4/4" in capsys.readouterr().out


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
