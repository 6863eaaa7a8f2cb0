"""NIfTI space codes (sform_code / qform_code: scanner, MNI, ...) survive read -> write.

FSL-style tools take the space an affine maps into from these codes, so an output on its
input's geometry must state the input's codes, not "aligned"."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medai.io import Volume, read_volume, write_volume

SCANNER, ALIGNED, MNI = 1, 2, 4


def _coded(path, sform_code, qform_code, *, qform_shift=0.0):
    """A small PIR-ordered file (so re-orientation is exercised) with the given codes; its qform
    lies ``qform_shift`` mm from its sform."""
    affine = np.array([[0, 0, -0.9, 40.0], [-1.1, 0, 0, 12.0], [0, -2.0, 0, 7.5], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5) * 10 - 200, affine)
    shifted = affine.copy()
    shifted[0, 3] += qform_shift
    img.set_sform(affine, code=sform_code)
    img.set_qform(shifted, code=qform_code)
    nib.save(img, str(path))
    return path


def _codes(path) -> tuple[int, int]:
    header = nib.load(str(path)).header
    return int(header["sform_code"]), int(header["qform_code"])


def test_an_mni_file_and_outputs_derived_from_it_keep_its_codes_and_affine(tmp_path):
    source = _coded(tmp_path / "mni.nii.gz", MNI, SCANNER)
    vol = read_volume(source)
    assert vol.metadata["nifti_space"] == {"sform_code": MNI, "qform_code": SCANNER, "affine_from": "both"}
    labels = vol.derived((vol.data > 0).astype(np.uint8), is_labels=True)
    assert labels.metadata["nifti_space"] == vol.metadata["nifti_space"]
    for out in (write_volume(vol, tmp_path / "copy.nii.gz"), write_volume(labels, tmp_path / "labels.nii.gz")):
        assert _codes(out) == (MNI, SCANNER)
        written = nib.load(str(out))
        np.testing.assert_array_equal(written.get_sform(), nib.load(str(source)).get_sform())
        np.testing.assert_allclose(written.get_qform(), nib.load(str(source)).get_qform(), atol=1e-5)
        np.testing.assert_array_equal(read_volume(out).affine, vol.affine)


@pytest.mark.parametrize(
    "sform_code, qform_code, affine_from, written",
    [
        (MNI, 0, "sform", (MNI, 0)),  # colin27's header: no qform, and none is made up
        (0, SCANNER, "qform", (0, SCANNER)),  # nibabel (and FSL) then take the qform
        (0, 0, "pixdim", (ALIGNED, ALIGNED)),  # no space at all: written explicitly, as before
    ],
)
def test_a_missing_code_stays_missing(tmp_path, sform_code, qform_code, affine_from, written):
    vol = read_volume(_coded(tmp_path / "in.nii", sform_code, qform_code))
    assert vol.metadata["nifti_space"]["affine_from"] == affine_from
    out = write_volume(vol.derived(vol.data + 1), tmp_path / "out.nii")
    assert _codes(out) == written
    np.testing.assert_allclose(read_volume(out).affine, vol.affine, atol=1e-6)


def test_a_qform_that_disagrees_with_the_sform_is_not_claimed_for_the_sforms_affine(tmp_path):
    vol = read_volume(_coded(tmp_path / "in.nii", MNI, SCANNER, qform_shift=3.0))
    assert vol.metadata["nifti_space"]["affine_from"] == "sform"  # nibabel's rule: the sform wins
    out = write_volume(vol, tmp_path / "out.nii")
    assert _codes(out) == (MNI, 0)  # the scanner-space qform was 3 mm elsewhere, and is not kept
    np.testing.assert_array_equal(read_volume(out).affine, vol.affine)


def test_volumes_without_codes_are_written_aligned_as_before(tmp_path):
    plain = Volume.from_spacing(np.ones((3, 4, 5), np.int16), (2.0, 1.0, 1.0))
    assert _codes(write_volume(plain, tmp_path / "plain.nii")) == (ALIGNED, ALIGNED)
    assert _codes(write_volume(plain.data, tmp_path / "array.nii")) == (ALIGNED, ALIGNED)
    # layer metadata edited by hand into something no header holds: ignored, not written
    for odd in ({"sform_code": 9, "qform_code": 1, "affine_from": "both"},
                {"sform_code": "mni", "qform_code": 1, "affine_from": "both"},
                {"sform_code": 0, "qform_code": 0, "affine_from": "both"}):
        odd_volume = Volume(plain.data, plain.affine, metadata={"nifti_space": odd})
        assert _codes(write_volume(odd_volume, tmp_path / "odd.nii")) == (ALIGNED, ALIGNED)


def test_codes_hold_only_while_the_geometry_is_kept(tmp_path):
    vol = read_volume(_coded(tmp_path / "in.nii", MNI, SCANNER))
    assert _codes(write_volume(vol, tmp_path / "same.nii", affine=vol.affine.copy())) == (MNI, SCANNER)
    moved = vol.affine.copy()
    moved[:3, 3] += 5.0  # no longer where the MNI template puts it
    assert _codes(write_volume(vol, tmp_path / "moved.nii", affine=moved)) == (ALIGNED, ALIGNED)


def test_a_sheared_output_puts_the_code_on_the_sform(tmp_path):
    affine = np.eye(4)
    affine[1, 0] = 0.5  # a gantry tilt: the qform cannot hold it
    space = {"sform_code": 0, "qform_code": SCANNER, "affine_from": "qform"}
    out = write_volume(Volume(np.ones((3, 4, 5), np.int16), affine, metadata={"nifti_space": space}),
                       tmp_path / "tilt.nii")
    assert _codes(out) == (SCANNER, 0)


def test_layer_metadata_carries_the_codes_to_the_array_writer(tmp_path):
    # what napari_hooks.writer has: the layer's array and the metadata the reader gave it
    vol = read_volume(_coded(tmp_path / "in.nii", MNI, SCANNER))
    meta = vol.layer_metadata()
    out = write_volume(np.asarray(vol.data), tmp_path / "layer.nii", affine=meta["affine"],
                       nifti_space=meta["nifti_space"], orientation=meta["nifti_orientation"])
    assert _codes(out) == (MNI, SCANNER)
    np.testing.assert_array_equal(nib.load(str(out)).affine, nib.load(str(tmp_path / "in.nii")).affine)


def test_a_dicom_series_is_written_in_scanner_space(tmp_path, tiny_ct, volume_to_dicom):
    volume_to_dicom(tmp_path / "series", tiny_ct)
    from_dicom = read_volume(tmp_path / "series")
    out = write_volume(from_dicom.derived(from_dicom.data > 0, is_labels=True), tmp_path / "labels.nii")
    assert _codes(out) == (SCANNER, SCANNER)  # patient coordinates are the scanner's, as dcm2niix says
