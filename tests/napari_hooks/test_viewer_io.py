"""The reader and writers as napari uses them: viewer.open and layer.save with the plugin."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_medai.napari_hooks import reader

pytestmark = pytest.mark.gui
PLUGIN = "napari-medai"
# a NIfTI stored with its first two index axes swapped and one flipped (codes 'ALS')
SWAPPED_AFFINE = np.array([[0, -0.9, 0, 50], [0.8, 0, 0, -40], [0, 0, 2.5, 12], [0, 0, 0, 1.0]])


def _series(write_dicom_series, folder, n=4, series_uid=None, suffix=".dcm"):
    raw = np.arange(n * 6 * 5, dtype=np.uint16).reshape(n, 6, 5) * 7
    files = write_dicom_series(folder, raw, [(-30.0, -40.0, 10.0 + 3 * k) for k in range(n)],
                               (1, 0, 0, 0, 1, 0), (0.7, 0.6), intercept=-1024, series_uid=series_uid)
    return [path.rename(path.with_name(f"{series_uid or 'IM'}_{path.stem}{suffix}")) for path in files]


def _nifti(path, affine=SWAPPED_AFFINE):
    values = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5) * 3 + 100  # unique, MR-like
    nib.save(nib.Nifti1Image(values, affine), str(path))
    return str(path)


def test_picking_every_file_of_a_series_opens_it_once(viewer, dicom_writer, tmp_path):
    files = _series(dicom_writer, tmp_path / "ct")
    # napari's File > Open and drag-and-drop: one reader call per file (stack=False)
    layers = viewer.open([str(f) for f in files], plugin=PLUGIN)
    assert len(layers) == len(viewer.layers) == 1
    assert layers[0].data.shape == (4, 6, 5)


def test_picking_every_file_of_two_series_opens_each_once(viewer, dicom_writer, tmp_path):
    files = [*_series(dicom_writer, tmp_path / "two", n=4, series_uid="1.2.3.4"),
             *_series(dicom_writer, tmp_path / "two", n=3, series_uid="1.2.3.5")]
    layers = viewer.open([str(f) for f in sorted(files)], plugin=PLUGIN)
    assert sorted(layer.data.shape[0] for layer in layers) == [3, 4]
    assert len(viewer.layers) == 2


def test_files_of_two_series_interleaved_in_one_folder_open_each_series_once(viewer, dicom_writer, tmp_path):
    """IM0000 of one series, IM0001 of the other...: only the newest layer was compared, so every
    file read its whole series again, 12 layers for two 6-slice series (an audit helper's finding)."""
    a = _series(dicom_writer, tmp_path / "a", n=4, series_uid="1.2.3.4")
    b = _series(dicom_writer, tmp_path / "b", n=4, series_uid="1.2.3.5")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, (fa, fb) in enumerate(zip(a, b)):
        fa.rename(mixed / f"IM{2 * k:04d}.dcm")
        fb.rename(mixed / f"IM{2 * k + 1:04d}.dcm")
    layers = viewer.open([str(f) for f in sorted(mixed.iterdir())], plugin=PLUGIN)
    assert len(layers) == len(viewer.layers) == 2
    assert {layer.metadata["series_instance_uid"] for layer in layers} == {"1.2.3.4", "1.2.3.5"}


def test_a_series_read_more_than_the_window_before_is_still_skipped_within_the_run(viewer, dicom_writer, tmp_path):
    """Interleaved with a series whose read took longer than the window, the first series' files
    were each read again: the window ran from each series' own read (a reviewer's finding)."""
    a = _series(dicom_writer, tmp_path / "a", n=4, series_uid="1.2.3.4")
    b = _series(dicom_writer, tmp_path / "b", n=4, series_uid="1.2.3.5")
    assert len(viewer.open(str(a[0]), plugin=PLUGIN)) == 1
    [key_a] = reader._recent_series
    assert len(viewer.open(str(b[0]), plugin=PLUGIN)) == 1
    reader._recent_series[key_a] -= reader.REPEAT_WINDOW_S + 1  # a's read ended 6 s before b's
    assert viewer.open(str(a[1]), plugin=PLUGIN) == []  # the same run: a is not read again
    assert len(viewer.layers) == 2


def test_a_copy_of_the_series_below_other_layers_does_not_hide_the_new_one(viewer, dicom_writer, tmp_path):
    """A series opened earlier and segmented since, then all its files picked again: the old copy
    was found first, the segmentation above it made every file a new read (a reviewer's finding)."""
    files = _series(dicom_writer, tmp_path / "ct")
    viewer.open(str(files[0]), plugin=PLUGIN)
    viewer.add_labels(np.zeros((4, 6, 5), np.uint8), name="ct segmentation")  # a widget's output
    layers = viewer.open([str(f) for f in files], plugin=PLUGIN)  # picked again, one call per file
    assert len(layers) == 1 and len(viewer.layers) == 3


def test_a_series_opened_again_later_or_after_closing_it_is_read_again(viewer, dicom_writer, tmp_path):
    first, second = (str(f) for f in _series(dicom_writer, tmp_path / "ct")[:2])
    assert len(viewer.open(first, plugin=PLUGIN)) == 1
    assert viewer.open(second, plugin=PLUGIN) == []  # a repeat: npe2's "read, no layers"
    for key in reader._recent_series:  # as if the window had passed
        reader._recent_series[key] -= reader.REPEAT_WINDOW_S + 1
    assert len(viewer.open(second, plugin=PLUGIN)) == 1
    viewer.layers.clear()  # closed: opening it at once reads it again
    [layer] = viewer.open(first, plugin=PLUGIN)
    assert layer.data.shape == (4, 6, 5)


def test_without_a_viewer_a_repeat_is_read_again(dicom_writer, tmp_path, monkeypatch):
    """Only napari calls the reader once per file: code that reads a series twice gets it twice."""
    import napari

    monkeypatch.setattr(napari, "current_viewer", lambda: None)
    first, second = (str(f) for f in _series(dicom_writer, tmp_path / "ct")[:2])
    [(data, meta, kind)] = reader.read_paths(first)
    [(again, _, _)] = reader.read_paths(second)
    assert again.shape == data.shape == (4, 6, 5)


def test_a_repeat_is_skipped_only_while_its_layer_is_the_newest(viewer, dicom_writer, tmp_path):
    files = _series(dicom_writer, tmp_path / "ct")
    viewer.open(str(files[0]), plugin=PLUGIN)
    viewer.add_image(np.zeros((4, 6, 5)), name="another")  # the user added something since
    assert len(viewer.open(str(files[1]), plugin=PLUGIN)) == 1


@pytest.mark.parametrize("suffix", [".IMA", ".dicom"])
def test_siemens_ima_and_dicom_files_open_with_the_plugin(viewer, dicom_writer, tmp_path, suffix):
    files = _series(dicom_writer, tmp_path / "siemens", suffix=suffix)
    [layer] = viewer.open(str(files[1]), plugin=PLUGIN)
    assert layer.data.shape == (4, 6, 5) and layer.metadata["modality"] == "CT"


def _world(layer, index):
    return np.asarray(layer.data_to_world(index), dtype=float)


@pytest.mark.parametrize("change", ["affine", "scale", "translate"])
def test_a_moved_or_rescaled_layer_is_saved_where_it_is_shown(viewer, tmp_path, change):
    [layer] = viewer.open(_nifti(tmp_path / "scan.nii.gz"), plugin=PLUGIN)
    if change == "affine":  # what napari's transform mode edits
        moved = np.eye(4)
        moved[:3, 3] = (0.0, 15.0, -7.0)
        layer.affine = moved
    elif change == "scale":
        layer.scale = np.asarray(layer.scale) * (1.0, 2.0, 0.5)
    else:
        layer.translate = np.asarray(layer.translate) + (4.0, -3.0, 2.5)
    layer.save(str(tmp_path / "out.nii.gz"), plugin=PLUGIN)
    [again] = viewer.open(str(tmp_path / "out.nii.gz"), plugin=PLUGIN)
    np.testing.assert_array_equal(again.data, layer.data)
    for index in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        np.testing.assert_allclose(_world(again, index), _world(layer, index), atol=1e-4)


def test_an_unchanged_layer_keeps_the_exact_stored_affine(viewer, tmp_path):
    source = _nifti(tmp_path / "scan.nii.gz")
    [layer] = viewer.open(source, plugin=PLUGIN)
    layer.save(str(tmp_path / "out.nii.gz"), plugin=PLUGIN)
    saved, original = nib.load(tmp_path / "out.nii.gz"), nib.load(source)
    assert saved.shape == original.shape
    np.testing.assert_array_equal(saved.affine, original.affine.astype(np.float32))


def test_saving_errors_reach_the_caller_with_their_message(viewer, tmp_path):
    # napari's write_layers takes a ValueError for "not my format" and only warns
    [layer] = viewer.open(_nifti(tmp_path / "scan.nii.gz"), plugin=PLUGIN)
    with pytest.raises(OSError, match=r"the folder .*missing does not exist"):
        layer.save(str(tmp_path / "missing" / "x.nii.gz"), plugin=PLUGIN)
    flat = viewer.add_image(np.zeros((10, 12), np.float32), name="flat")
    with pytest.raises(OSError, match=r"only 3D layers can be saved as NIfTI; layer 'flat'"):
        flat.save(str(tmp_path / "flat.nii.gz"), plugin=PLUGIN)


def test_a_mask_painted_over_a_nifti_is_saved_on_its_grid(viewer, tmp_path):
    source = _nifti(tmp_path / "swapped.nii.gz")
    coded = nib.load(source)
    coded.set_sform(coded.affine, code=4)  # an MNI-space image
    coded.set_qform(coded.affine, code=1)
    nib.save(coded, source)
    [image] = viewer.open(source, plugin=PLUGIN)
    mask = viewer.add_labels(np.zeros(image.data.shape, np.uint8), scale=image.scale,
                             translate=image.translate, name="mask")
    mask.data[2, 3, 1] = 5
    mask.save(str(tmp_path / "mask.nii.gz"), plugin=PLUGIN)
    saved, original = nib.load(tmp_path / "mask.nii.gz"), nib.load(source)
    assert saved.shape == original.shape and nib.aff2axcodes(saved.affine) == nib.aff2axcodes(original.affine)
    np.testing.assert_array_equal(saved.affine, original.affine.astype(np.float32))
    # the painted voxel is at the file index of the image voxel under it
    value = image.data[2, 3, 1]
    painted = np.argwhere(np.asanyarray(saved.dataobj) == 5)
    np.testing.assert_array_equal(painted, np.argwhere(np.asanyarray(original.dataobj) == value))
    # and it states the image file's space (its sform/qform codes), not "aligned"
    assert (int(saved.header["sform_code"]), int(saved.header["qform_code"])) == (4, 1)


def test_a_mask_elsewhere_keeps_its_own_place(viewer, tmp_path):
    [image] = viewer.open(_nifti(tmp_path / "swapped.nii.gz"), plugin=PLUGIN)
    mask = viewer.add_labels(np.zeros(image.data.shape, np.uint8), scale=image.scale,
                             translate=np.asarray(image.translate) + 10.0, name="mask")
    mask.save(str(tmp_path / "mask.nii.gz"), plugin=PLUGIN)
    [again] = viewer.open(str(tmp_path / "mask.nii.gz"), plugin=PLUGIN)
    np.testing.assert_allclose(_world(again, (1, 2, 3)), _world(mask, (1, 2, 3)), atol=1e-4)
    assert nib.aff2axcodes(nib.load(tmp_path / "mask.nii.gz").affine) == ("L", "P", "S")


def test_the_app_opens_a_dicom_file_without_an_extension(viewer, dicom_writer, tmp_path):
    """Scanners write DICOM files with no extension: the app asked napari, whose readers are
    chosen by name pattern, and said "no compatible readers" (an audit helper's finding)."""
    from napari_medai import app

    files = _series(dicom_writer, tmp_path / "ct", suffix="")
    app.build_viewer(str(files[1]), viewer=viewer)
    image = viewer.layers[0]
    assert image.data.shape == (4, 6, 5) and image.metadata["modality"] == "CT"


def test_the_apps_reader_patterns_are_the_manifests():
    import yaml

    from napari_medai import app

    manifest = yaml.safe_load((Path(app.__file__).parent / "napari.yaml").read_text())
    [reader] = manifest["contributions"]["readers"]
    assert tuple(reader["filename_patterns"]) == app.READER_PATTERNS
