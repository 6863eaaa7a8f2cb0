"""napari reader / writer / sample hooks, called the way npe2 calls them (no viewer needed)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_medai.io import Volume, read_volume, write_volume
from napari_medai.io.resources import sample_path
from napari_medai.napari_hooks import samples
from napari_medai.napari_hooks.reader import CT_CONTRAST_LIMITS, get_reader
from napari_medai.napari_hooks.writer import write_image, write_labels


@pytest.fixture
def tiny_mr(tmp_path):
    data = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 7 % 251).astype(np.float32)
    vol = Volume.from_spacing(data, (3.0, 0.5, 0.75), origin=(10.0, -20.0, 5.5), modality="MR")
    return write_volume(vol, tmp_path / "mr.nii.gz"), vol


def test_reader_declines_unsupported_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    for path in ["x.png", str(tmp_path / "notes.txt"), str(tmp_path / "empty"), str(tmp_path)]:
        assert get_reader(path) is None, path
    assert get_reader([str(sample_path("lung1_ct")), "x.png"]) is None


def test_reader_opens_nifti_as_image_with_geometry(tiny_mr):
    path, vol = tiny_mr
    layers = get_reader(str(path))(str(path))
    assert len(layers) == 1
    data, meta, kind = layers[0]
    assert kind == "image" and meta["name"] == "mr"
    np.testing.assert_array_equal(data, vol.data)
    assert meta["scale"] == pytest.approx((3.0, 0.5, 0.75))
    assert meta["translate"] == pytest.approx((10.0, -20.0, 5.5))
    assert meta["colormap"] == "gray"
    lo, hi = meta["contrast_limits"]
    assert vol.data.min() <= lo < hi <= vol.data.max()
    assert meta["metadata"]["modality"] == "MR"
    np.testing.assert_array_equal(meta["metadata"]["affine"], vol.affine)
    Image(data, **meta)  # napari accepts every keyword


def test_reader_opens_the_lung1_pair_as_image_and_labels():
    paths = [str(sample_path("lung1_ct")), str(sample_path("lung1_nodule_mask"))]
    (ct, ct_meta, ct_kind), (mask, mask_meta, mask_kind) = get_reader(paths)(paths)
    assert (ct_kind, mask_kind) == ("image", "labels")
    assert ct_meta["contrast_limits"] == CT_CONTRAST_LIMITS and ct.dtype == np.int16
    assert mask_meta["scale"] == ct_meta["scale"] and mask_meta["translate"] == ct_meta["translate"]
    Labels(mask, **mask_meta)


def _ct_small_series(folder, n_slices=3):
    """A 3-slice series made from pydicom's real test slice CT_small.dcm, 5 mm apart."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir()
    for k in range(n_slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5 * k]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"slice{n_slices - k}.dcm")
    return sorted(folder.iterdir())


def test_reader_opens_a_dicom_folder_once_for_many_of_its_files(tmp_path):
    files = _ct_small_series(tmp_path / "ct_small")
    [(data, meta, kind)] = get_reader(str(tmp_path / "ct_small"))(str(tmp_path / "ct_small"))
    assert kind == "image" and data.shape == (3, 128, 128) and data.dtype == np.int16
    assert meta["name"] == "ct_small" and meta["metadata"]["modality"] == "CT"
    assert meta["scale"] == pytest.approx((5.0, 0.661468, 0.661468))
    picked = [str(f) for f in files]
    layers = get_reader(picked)(picked)
    assert len(layers) == 1
    np.testing.assert_array_equal(layers[0][0], data)


def test_writer_round_trip_keeps_scale_and_translate(tmp_path, tiny_mr):
    path, vol = tiny_mr
    layer = Image(vol.data, scale=(3.0, 0.5, 0.75), translate=(10.0, -20.0, 5.5), name="mr")
    data, meta, _ = layer.as_layer_data_tuple()  # what napari hands to an npe2 writer
    written = write_image(str(tmp_path / "out"), data, meta)
    assert written == [str(tmp_path / "out.nii.gz")]
    again = get_reader(written[0])(written[0])[0][1]
    assert again["scale"] == pytest.approx((3.0, 0.5, 0.75))
    assert again["translate"] == pytest.approx((10.0, -20.0, 5.5))


def test_writer_prefers_the_source_affine_in_metadata(tmp_path):
    path = str(sample_path("colin27_t1"))
    data, meta, _ = get_reader(path)(path)[0]
    layer = Image(data, **meta)
    out = write_image(str(tmp_path / "colin.nii.gz"), *layer.as_layer_data_tuple()[:2])[0]
    first, second = read_volume(path), read_volume(out)
    np.testing.assert_array_equal(second.affine, first.affine)
    np.testing.assert_array_equal(second.data, first.data)
    assert second.modality == "MR"
    # saved in the source file's voxel order (Colin27 is stored RAS), so the two files line up
    import nibabel as nib

    source, saved = nib.load(path), nib.load(out)
    assert nib.aff2axcodes(saved.affine) == nib.aff2axcodes(source.affine) == ("R", "A", "S")
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), np.asanyarray(source.dataobj))


def test_labels_writer_round_trip_keeps_dtype_and_kind(tmp_path):
    path = str(sample_path("lung1_nodule_mask"))
    data, meta, _ = get_reader(path)(path)[0]
    layer = Labels(data, **meta)
    out = write_labels(str(tmp_path / "mask.nii"), *layer.as_layer_data_tuple()[:2])[0]
    back = read_volume(out)
    assert back.is_labels and back.data.dtype == np.uint8
    np.testing.assert_array_equal(back.data, read_volume(path).data)


def test_writer_uses_layer_affine_when_no_metadata(tmp_path):
    affine = np.array([[0, 0, 2.0, 1], [0, 1.5, 0, 2], [-1.0, 0, 0, 3], [0, 0, 0, 1]])
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    meta = {"name": "a", "scale": [1, 1, 1], "translate": [0, 0, 0], "affine": affine, "metadata": {}}
    back = read_volume(write_image(str(tmp_path / "a.nii.gz"), data, meta)[0])
    for zyx in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        world = affine[:3, :3] @ zyx + affine[:3, 3]
        index = np.rint(np.linalg.solve(back.affine[:3, :3], world - back.affine[:3, 3])).astype(int)
        assert back.data[tuple(index)] == data[zyx]


def test_lung1_sample_gives_ct_and_nodule_layers():
    (ct, ct_meta, ct_kind), (mask, mask_meta, mask_kind) = samples.lung1_ct()
    assert (ct_kind, mask_kind) == ("image", "labels")
    assert mask_meta["name"] == "lung1 nodule"
    assert ct.shape == mask.shape == (48, 386, 512)
    assert ct_meta["metadata"]["modality"] == "CT"
    assert mask_meta["scale"] == ct_meta["scale"]
    assert int((mask > 0).sum()) == 837


def test_colin27_sample_gives_one_mr_image():
    [(data, meta, kind)] = samples.colin27_mr()
    assert kind == "image" and meta["metadata"]["modality"] == "MR"
    assert data.shape == (181, 217, 181)


def test_synthetic_sample_wraps_the_phantom(monkeypatch):
    import napari_medai.phantoms as phantoms

    hu = np.full((4, 5, 6), -1000, np.int16)
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 2
    fake = types.SimpleNamespace(
        hu=hu, labels=labels, spacing=(2.0, 0.7, 0.7),
        nodules=[{"center_voxel": (2, 2, 2), "diameter_mm": 5.0, "type": "solid"}],
    )
    monkeypatch.setattr(phantoms, "make_chest_ct", lambda seed, **kw: fake, raising=False)
    (ct, ct_meta, ct_kind), (lab, lab_meta, lab_kind), *_points = samples.synthetic_chest_ct()
    assert (ct_kind, lab_kind) == ("image", "labels")
    assert ct_meta["scale"] == pytest.approx((2.0, 0.7, 0.7)) == lab_meta["scale"]
    assert ct_meta["metadata"]["modality"] == "CT"
    assert lab_meta["metadata"]["nodules"][0]["diameter_mm"] == 5.0
    np.testing.assert_array_equal(lab, labels)


def test_synthetic_sample_names_its_label_classes(monkeypatch):
    import napari_medai.phantoms as phantoms
    from napari_medai.widgets.detection import nodule_label

    fake = types.SimpleNamespace(hu=np.full((4, 5, 6), -1000, np.int16), labels=np.zeros((4, 5, 6), np.uint8),
                                 spacing=(2.0, 0.7, 0.7), nodules=[])
    monkeypatch.setattr(phantoms, "make_chest_ct", lambda seed, **kw: fake, raising=False)
    _, (lab, lab_meta, _), *_ = samples.synthetic_chest_ct()
    layer = Labels(lab, **lab_meta)  # as the segmentation widget's layers: "index" and "class"
    assert dict(zip(layer.features["index"], layer.features["class"])) == phantoms.LABEL_NAMES
    assert lab_meta["metadata"]["label_names"] == phantoms.LABEL_NAMES
    assert nodule_label(layer) == next(i for i, name in phantoms.LABEL_NAMES.items() if name == "nodule")


def test_the_synthetic_samples_label_names_survive_the_plugins_writer(monkeypatch, tmp_path):
    """The sample kept its names in "label_names" and features only, which the writer does not
    read: a saved and reopened phantom lost them (an audit helper's finding)."""
    import napari_medai.phantoms as phantoms

    fake = types.SimpleNamespace(hu=np.full((4, 5, 6), -1000, np.int16), labels=np.zeros((4, 5, 6), np.uint8),
                                 spacing=(2.0, 0.7, 0.7), nodules=[])
    fake.labels[1:3, 1:4, 1:5] = 2
    monkeypatch.setattr(phantoms, "make_chest_ct", lambda seed, **kw: fake, raising=False)
    _, (lab, lab_meta, _), *_ = samples.synthetic_chest_ct()
    layer = Labels(lab, **lab_meta)
    [path] = write_labels(str(tmp_path / "phantom labels.nii.gz"), *layer.as_layer_data_tuple()[:2])
    [(data, meta, kind)] = get_reader(path)(path)
    assert kind == "labels"
    reopened = Labels(data, **meta)
    assert dict(zip(reopened.features["index"], reopened.features["class"])) == phantoms.LABEL_NAMES


def test_an_rgb_picture_is_refused_by_the_writer_with_a_message(tmp_path):
    """A (y, x, 3) RGB layer passed the 3D check and failed with numpy's matmul error, which napari
    discards (an audit helper's finding)."""
    from napari_medai.napari_hooks.writer import SaveError

    layer = Image(np.zeros((5, 6, 3), np.uint8), rgb=True, name="photo")
    with pytest.raises(SaveError, match="'photo' is an RGB picture, not a volume"):
        write_image(str(tmp_path / "photo.nii.gz"), *layer.as_layer_data_tuple()[:2])
    assert not list(tmp_path.iterdir())


def test_a_nan_background_still_gives_a_visible_window(tmp_path):
    data = np.random.default_rng(1).uniform(0, 300, (4, 5, 6)).astype(np.float32)
    data[:, :2] = np.nan  # a statistical or ADC map's background
    path = write_volume(Volume.from_spacing(data, modality="MR"), tmp_path / "nan.nii.gz")
    [(layer_data, meta, kind)] = get_reader(str(path))(str(path))
    lo, hi = meta["contrast_limits"]
    assert np.isfinite([lo, hi]).all() and 0 <= lo < hi <= 300


def test_a_float_mask_opens_as_a_labels_layer(tmp_path):
    import nibabel as nib

    mask = np.zeros((4, 5, 6), np.float32)  # as MONAI's SaveImage writes it
    mask[1:3, 1:4, 2:5] = 1.0
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / "mask.nii.gz"))
    [(data, meta, kind)] = get_reader(str(tmp_path / "mask.nii.gz"))(str(tmp_path / "mask.nii.gz"))
    assert kind == "labels" and Labels(data, **{k: v for k, v in meta.items() if k in ("scale", "translate",
                                                                                   "affine")}).data.sum() == 18


def test_a_layer_saved_in_place_keeps_its_files_space_codes_and_a_moved_one_does_not(tmp_path):
    import nibabel as nib

    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5) * 10 - 200, np.diag([0.9, 1.1, 2.0, 1.0]))
    img.set_sform(img.affine, code=4)  # MNI
    img.set_qform(img.affine, code=1)  # scanner
    nib.save(img, str(tmp_path / "mni.nii.gz"))
    data, meta, _ = get_reader(str(tmp_path / "mni.nii.gz"))(str(tmp_path / "mni.nii.gz"))[0]
    layer = Image(data, **meta)
    out = write_image(str(tmp_path / "same.nii.gz"), *layer.as_layer_data_tuple()[:2])[0]
    header = nib.load(out).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (4, 1)
    layer.translate = np.asarray(layer.translate) + 5.0  # moved in napari: no longer in MNI space
    out = write_image(str(tmp_path / "moved.nii.gz"), *layer.as_layer_data_tuple()[:2])[0]
    header = nib.load(out).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (2, 2)


CHEST_CLASSES = {0: {"name": "background", "color": "#000000"}, 1: {"name": "lung", "color": "#4aa3ff"},
                 2: {"name": "nodule", "color": "#ff3030"}}


def test_a_segmentation_saved_and_opened_again_keeps_its_class_names_and_colours(tmp_path):
    """NIfTI has no field for label names: a segmentation layer saved and opened again was plain
    labels, so *Add to labels* wrote a nodule as 1 (lung).  The class table rides in the file."""
    from napari_medai.napari_hooks.label_classes import class_colormap
    from napari_medai.widgets.detection import nodule_label

    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 1:4, 1:4], data[2, 2, 2] = 1, 2
    layer = Labels(data, scale=(2.0, 0.7, 0.7), features={"index": [0, 1, 2], "class": ["background", "lung", "nodule"]},
                   colormap=class_colormap(CHEST_CLASSES), metadata={"classes": CHEST_CLASSES})
    out = write_labels(str(tmp_path / "seg.nii.gz"), *layer.as_layer_data_tuple()[:2])[0]
    assert read_volume(out).metadata["classes"] == CHEST_CLASSES
    opened, meta, kind = get_reader(out)(out)[0]
    again = Labels(opened, **meta)
    assert kind == "labels" and list(again.features["class"]) == ["background", "lung", "nodule"]
    assert nodule_label(again) == 2
    np.testing.assert_allclose(again.colormap.map(2), layer.colormap.map(2))
    # saved again from the reopened layer, the table is still there
    twice = write_labels(str(tmp_path / "seg2.nii.gz"), *again.as_layer_data_tuple()[:2])[0]
    assert read_volume(twice).metadata["classes"] == CHEST_CLASSES


def test_a_foreign_comment_extension_or_an_image_reads_as_before(tmp_path):
    import nibabel as nib

    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 1:4, 1:4] = 1
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_intent("label")
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"made by another tool {not json"))
    nib.save(img, str(tmp_path / "other.nii.gz"))
    back = read_volume(tmp_path / "other.nii.gz")
    assert back.is_labels and "classes" not in back.metadata
    # an image volume never carries a class table, whatever its metadata says
    vol = Volume.from_spacing(np.arange(120, dtype=np.float32).reshape(4, 5, 6), (1.0, 1.0, 1.0), modality="MR")
    vol.metadata["classes"] = CHEST_CLASSES
    assert not nib.load(str(write_volume(vol, tmp_path / "mr.nii.gz"))).header.extensions


def test_a_class_table_with_a_colour_that_is_no_colour_still_opens(tmp_path):
    import json

    import nibabel as nib

    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 1:4, 1:4] = 1
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_intent("label")
    table = {"medai_classes": {"0": {"name": "background", "color": [0, 0, 0]}, "1": {"name": "lesion", "color": "red"}}}
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(table).encode()))
    path = str(tmp_path / "odd.nii.gz")
    nib.save(img, path)
    opened, meta, kind = get_reader(path)(path)[0]
    layer = Labels(opened, **meta)
    assert kind == "labels" and list(layer.features["class"]) == ["background", "lesion"]
    assert read_volume(path).metadata["classes"][1]["color"] is None  # a palette colour instead
