"""A minimal MONAI bundle folder through the API, the CLI and the Segmentation widget; and a
RetinaNet-style detection bundle through the API and the CLI.

The bundles hold fixed-rule networks (tests/fixed_rule_models.py) whose rule thresholds live
in their weights: the weights written to models/model.pt differ from the constructor's
defaults, so a result that follows the rule shows the weights were loaded.  The bundles
resample (Spacingd pixdim twice the input's voxel size) and re-orient (RAS), so a result in
the right place shows the geometry round trip works; and the segmentation network records
what it is fed, which must be what the bundle's own MONAI preprocessing makes of the scan
(a pointwise rule would give the same labels on any grid, in any axis order).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from fixed_rule_models import (
    RecordingBrightBlobDetector,
    RecordingThresholdSegmenter,
    expected_labels,
    unit,
    write_bundle,
)
from scipy import ndimage

import napari_medai
from napari_medai.cli.main import main
from napari_medai.io import read_volume, write_volume
from napari_medai.models.bundle import BundleTrustWarning
from napari_medai.models.loading import load_model

SPACING = (2.0, 1.0, 1.0)
AFFINE = np.array([[2.0, 0, 0, -40.0], [0, 1.0, 0, 10.0], [0, 0, 1.0, 20.0], [0, 0, 0, 1]])
CLASS_NAMES = {"0": "background", "1": "air", "2": "lesion"}
# The weights' thresholds (the constructor's defaults are -500 / -300 HU).
LUNG_BELOW_HU, NODULE_ABOVE_HU = -600.0, -100.0


def bundle_volume() -> np.ndarray:
    """Asymmetric on every axis, edges on even voxels (exact after halving the grid)."""
    volume = np.full((16, 32, 32), -850.0, np.float32)  # "air"
    volume[4:8, 8:16, 20:28] = 100.0  # "lesion"
    volume[8:16, 20:32, 0:12] = -250.0  # background with these weights, a lesion with the defaults
    return volume


def interior(labels: np.ndarray, margin: int = 2) -> np.ndarray:
    """Voxels at least ``margin`` away from a change of class (where resampling may differ)."""
    size = 2 * margin + 1
    return ndimage.minimum_filter(labels, size) == ndimage.maximum_filter(labels, size)


@pytest.fixture
def seg_bundle(tmp_path):
    """roi_size is the whole resampled grid (x 16, y 16, z 8): one window, the whole input."""
    network = RecordingThresholdSegmenter(lung_below=unit(LUNG_BELOW_HU), nodule_above=unit(NODULE_ABOVE_HU))
    return write_bundle(
        tmp_path / "rule_bundle", {"_target_": "fixed_rule_models.RecordingThresholdSegmenter"},
        network.state_dict(), pixdim=(2.0, 2.0, 4.0), roi_size=(16, 16, 8), channel_def=CLASS_NAMES,
    )


@pytest.fixture
def fed(monkeypatch):
    """The input batches the bundles' networks (RecordingThresholdSegmenter, RecordingBrightBlobDetector) are given."""
    inputs = []
    monkeypatch.setattr(RecordingThresholdSegmenter, "inputs", inputs)
    monkeypatch.setattr(RecordingBrightBlobDetector, "inputs", inputs)
    return inputs


def bundle_preprocessing(bundle, nifti) -> np.ndarray:
    """What the bundle's own MONAI preprocessing (LoadImage, RAS, Spacing, intensity) makes of
    ``nifti``: (x, y, z) on the bundle's grid."""
    from monai.bundle import ConfigParser

    config = json.loads((bundle / "configs" / "inference.json").read_text())
    image = ConfigParser(config).get_parsed_content("preprocessing")({"image": str(nifti)})["image"]
    return np.asarray(image[0])


def assert_fed_as_the_bundle_says(fed, bundle, nifti):
    expected = bundle_preprocessing(bundle, nifti)
    assert expected.shape == (16, 16, 8)  # x, y, z at (2, 2, 4) mm: half the scan's 32 x 32 x 16 voxels
    assert len(fed) == 1 and tuple(fed[0].shape) == (1, 1, *expected.shape), [tuple(x.shape) for x in fed]
    np.testing.assert_allclose(fed[0][0, 0].numpy(), expected, atol=1e-5)


def write_det_bundle(folder, pixdim=(2.0, 2.0, 4.0)):
    detector_config = {
        "detector": {"_target_": "fixed_rule_models.DetectorWrapper", "network": "@network"},
        "detector_ops": ["$@detector.set_target_keys(box_key='box', label_key='label')",
                         "$@detector.set_sliding_window_inferer(roi_size=[16, 16, 8], overlap=0.25)"],
    }
    return write_bundle(
        folder, {"_target_": "fixed_rule_models.RecordingBrightBlobDetector", "threshold": 0.99},
        RecordingBrightBlobDetector(threshold=unit(-300)).state_dict(), pixdim=pixdim, roi_size=(16, 16, 8),
        task="CT lung nodule detection", extra_config=detector_config,
        outputs={"box": {"type": "object", "format": "bounding box", "num_channels": 1,
                         "channel_def": {"0": "nodule"}}},
    )


@pytest.fixture
def det_bundle(tmp_path):
    return write_det_bundle(tmp_path / "blob_detection")


@pytest.fixture
def ct_nifti(tmp_path):
    return write_volume(bundle_volume(), tmp_path / "ct.nii.gz", affine=AFFINE, modality="CT")


def test_bundle_segments_through_the_api(seg_bundle, fed, ct_nifti):
    volume = bundle_volume()
    with pytest.warns(BundleTrustWarning):
        result = napari_medai.segment(volume, SPACING, model=str(seg_bundle))
    # an array's axes are (z, y, x) towards (S, P, L): the network saw what MONAI makes of the
    # same scan written with that geometry
    assert_fed_as_the_bundle_says(fed, seg_bundle, ct_nifti)
    expected = expected_labels(volume, LUNG_BELOW_HU, NODULE_ABOVE_HU)
    inside = interior(expected)
    assert inside.mean() > 0.5
    np.testing.assert_array_equal(result.labels[inside], expected[inside])
    assert {i: c["name"] for i, c in result.classes.items()} == {0: "background", 1: "air", 2: "lesion"}
    assert result.lesion_probability is None  # a bundle names no lesion class


def test_bundle_segments_through_the_cli(tmp_path, seg_bundle, ct_nifti, fed, capsys):
    out = tmp_path / "labels.nii.gz"
    with pytest.warns(BundleTrustWarning):
        assert main(["segment", str(ct_nifti), str(out), "--model", str(seg_bundle), "--quiet"]) == 0
    assert_fed_as_the_bundle_says(fed, seg_bundle, ct_nifti)
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(ct_nifti).affine)
    labels = read_volume(out).data
    expected = expected_labels(bundle_volume(), LUNG_BELOW_HU, NODULE_ABOVE_HU)
    np.testing.assert_array_equal(labels[interior(expected)], expected[interior(expected)])
    assert set(np.unique(labels)) == {0, 1, 2}
    printed = capsys.readouterr().out
    assert "air" in printed and "lesion" in printed  # the bundle's class names


@pytest.mark.gui
def test_bundle_segments_in_the_widget(qtbot, make_napari_viewer, seg_bundle, fed, ct_nifti):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    image = viewer.add_image(bundle_volume(), name="ct", scale=SPACING, translate=(-40.0, 10.0, 20.0))
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", "Segmentation")
    seen = len(notification_manager.records)
    widget.add_model_path(str(seg_bundle))
    assert any("can run Python code" in str(n.message) and str(n.severity) == "warning"
               for n in notification_manager.records[seen:])
    with qtbot.waitSignal(widget.job_finished, timeout=15_000) as ended:
        widget.run_button.click()
    assert ended.args == ["done"]
    assert_fed_as_the_bundle_says(fed, seg_bundle, ct_nifti)
    labels = viewer.layers["ct segmentation"]
    expected = expected_labels(bundle_volume(), LUNG_BELOW_HU, NODULE_ABOVE_HU)
    np.testing.assert_array_equal(labels.data[interior(expected)], expected[interior(expected)])
    assert list(labels.features["class"]) == ["background", "air", "lesion"]
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    table = widget.volume_table
    assert [table.cell_text(r, 0) for r in range(table.rowCount())] == ["air", "lesion"]


def test_detection_bundle_gets_a_detection_card_and_its_detector(det_bundle, fed, ct_nifti):
    with pytest.warns(BundleTrustWarning):
        model = load_model(det_bundle)
    assert model.card.task == "detection" and model.card.extra["method"] == "boxes"
    assert type(model.network).__name__ == "DetectorWrapper"  # the bundle's detector, not network_def
    assert model.network.box_key == "box" and model.network.inferer is not None  # detector_ops ran
    assert torch.equal(model.network.network.threshold, torch.tensor(unit(-300)))  # weights loaded

    findings = napari_medai.detect(bundle_volume(), SPACING, model=model, affine=AFFINE)
    assert model.network.use_inferer_calls == [True]  # its sliding-window inferer was asked for
    # the whole scan, resampled to the bundle's (2, 2, 4) mm in its RAS (x, y, z) order
    assert model.network.network.input_shapes == [(16, 16, 8)]
    assert_fed_as_the_bundle_says(fed, det_bundle, ct_nifti)
    (top,) = [f for f in findings if f.bbox_voxel == [[4, 8, 20], [8, 16, 28]]]
    assert top is findings[0] and top.center_voxel == [5.5, 11.5, 23.5]
    np.testing.assert_allclose(top.center_mm, AFFINE[:3, :3] @ [5.5, 11.5, 23.5] + AFFINE[:3, 3])
    assert top.diameter_mm == 8.0 and top.lung_rads == "4A"  # an 8 x 8 mm box


def test_detection_bundle_through_the_cli(tmp_path, det_bundle, ct_nifti, fed):
    out = tmp_path / "findings.json"
    with pytest.warns(BundleTrustWarning):
        assert main(["detect", str(ct_nifti), "--out", str(out), "--model", str(det_bundle), "--quiet"]) == 0
    assert_fed_as_the_bundle_says(fed, det_bundle, ct_nifti)
    records = json.loads(out.read_text())
    assert records[0]["bbox_voxel"] == [[4, 8, 20], [8, 16, 28]]
    assert [r["rank"] for r in records] == list(range(1, len(records) + 1))
    assert out.with_suffix(".md").is_file()


# ---- pixdim and roi_size <= 0 on one axis: MONAI's "as the input" ------------------------------
# 12 slices of 2.5 mm: at the bundles' in-plane 2 mm the grid is x 16, y 16, z 12, no two axes
# alike, and keeping the slices (12) differs from resampling them to 2 mm (15).
SLAB_SPACING = (2.5, 1.0, 1.0)
SLAB_AFFINE = np.diag([*SLAB_SPACING, 1.0])


def slab_volume() -> np.ndarray:
    return bundle_volume()[2:14]  # lesion on slices 2:6, the -250 HU block on 6:12


@pytest.fixture
def slab_nifti(tmp_path):
    return write_volume(slab_volume(), tmp_path / "slab.nii.gz", affine=SLAB_AFFINE, modality="CT")


def slice_keeping_bundle(folder, roi_size):
    """Spacingd pixdim (2, 2, -1) in RAS (x, y, z): x and y to 2 mm, z as the scan has it."""
    network = RecordingThresholdSegmenter(lung_below=unit(LUNG_BELOW_HU), nodule_above=unit(NODULE_ABOVE_HU))
    return write_bundle(folder, {"_target_": "fixed_rule_models.RecordingThresholdSegmenter"}, network.state_dict(),
                        pixdim=(2.0, 2.0, -1), roi_size=roi_size, channel_def=CLASS_NAMES)


def test_pixdim_below_zero_on_z_resamples_x_and_y_and_keeps_the_slices(tmp_path, fed, slab_nifti):
    bundle = slice_keeping_bundle(tmp_path / "keep_z", roi_size=(16, 16, 12))
    volume = slab_volume()
    with pytest.warns(BundleTrustWarning):
        result = napari_medai.segment(volume, SLAB_SPACING, model=str(bundle))
    expected_input = bundle_preprocessing(bundle, slab_nifti)
    assert expected_input.shape == (16, 16, 12)  # MONAI's own Spacingd: x, y halved, the 12 slices kept
    assert len(fed) == 1 and tuple(fed[0].shape) == (1, 1, 16, 16, 12), [tuple(x.shape) for x in fed]
    np.testing.assert_allclose(fed[0][0, 0].numpy(), expected_input, atol=1e-5)
    expected = expected_labels(volume, LUNG_BELOW_HU, NODULE_ABOVE_HU)
    assert result.labels.shape == volume.shape  # back on the input grid
    np.testing.assert_array_equal(result.labels[interior(expected)], expected[interior(expected)])


def test_roi_size_below_zero_on_z_gives_windows_through_every_slice(tmp_path, fed, slab_nifti):
    from monai.inferers import sliding_window_inference

    bundle = slice_keeping_bundle(tmp_path / "whole_z", roi_size=(8, 8, -1))
    volume = slab_volume()
    with pytest.warns(BundleTrustWarning):
        result = napari_medai.segment(volume, SLAB_SPACING, model=str(bundle))
    ours = [tuple(x.shape[2:]) for x in fed]
    # what MONAI's sliding window cuts from the bundle's own preprocessing of the same scan
    monai = []
    image = torch.from_numpy(bundle_preprocessing(bundle, slab_nifti))[None, None]
    sliding_window_inference(image, (8, 8, -1), 2, lambda x: monai.append(tuple(x.shape[2:])) or x, overlap=0.25)
    assert set(ours) == set(monai) == {(8, 8, 12)}  # x, y windows of 8 and all 12 slices on z
    expected = expected_labels(volume, LUNG_BELOW_HU, NODULE_ABOVE_HU)
    assert result.labels.shape == volume.shape
    np.testing.assert_array_equal(result.labels[interior(expected)], expected[interior(expected)])


def test_a_detection_bundle_keeping_the_slices_boxes_the_blob_on_the_input_grid(tmp_path, fed, slab_nifti):
    bundle = write_det_bundle(tmp_path / "keep_z_detection", pixdim=(2.0, 2.0, -1))
    with pytest.warns(BundleTrustWarning):
        model = load_model(bundle)
    findings = napari_medai.detect(slab_volume(), SLAB_SPACING, model=model, affine=SLAB_AFFINE)
    assert model.network.network.input_shapes == [(16, 16, 12)]  # x, y at 2 mm, the slices kept
    np.testing.assert_allclose(fed[0][0, 0].numpy(), bundle_preprocessing(bundle, slab_nifti), atol=1e-5)
    assert findings[0].bbox_voxel == [[2, 8, 20], [6, 16, 28]]  # the lesion, on the input grid
