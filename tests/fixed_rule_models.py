"""Networks with fixed, checkable rules, and model cards / bundles around them, for the
segmentation and detection tests (API, CLI, bundles, widgets).

They stand in for the trained built-in models, so the tests neither wait for training nor
depend on what a trained network happens to output.  Cards and bundles name these classes
by their dotted path (``fixed_rule_models.ThresholdSegmenter``): the tests folder is on
``sys.path`` because tests/conftest.py lives there.

Intensities: the cards window CT with ``ct_window`` -1000..400 HU -> 0..1, so the rules
below speak windowed units; :func:`unit` converts HU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

CT_WINDOW = {"kind": "ct_window", "a_min": -1000.0, "a_max": 400.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
CLASSES = [
    {"index": 0, "name": "background", "color": "#000000"},
    {"index": 1, "name": "lung", "color": "#3cb44b"},
    {"index": 2, "name": "nodule", "color": "#e6194b"},
]


def unit(hu: float) -> float:
    """HU -> the cards' windowed intensity."""
    return (hu + 1000.0) / 1400.0


class ThresholdSegmenter(nn.Module):
    """Per voxel: lung (1) below ``lung_below``, nodule (2) above ``nodule_above``, else
    background (0); argmax follows the thresholds exactly, whatever the ``steepness``.

    The thresholds live in a buffer, so they travel with the weights (state dict).  The
    nodule probability grows with intensity (``sigmoid(steepness * (x - nodule_above))``
    roughly), so brighter blobs get higher detection scores.  ``delay_s`` slows every
    forward pass down, for the Cancel tests.
    """

    def __init__(self, lung_below: float = unit(-500), nodule_above: float = unit(-300),
                 steepness: float = 10.0, delay_s: float = 0.0):
        super().__init__()
        self.register_buffer("thresholds", torch.tensor([float(lung_below), float(nodule_above)]))
        self.steepness = float(steepness)
        self.delay_s = float(delay_s)

    def forward(self, x):
        if self.delay_s:
            time.sleep(self.delay_s)
        lung = self.steepness * (self.thresholds[0] - x)
        nodule = self.steepness * (x - self.thresholds[1])
        return torch.cat([torch.zeros_like(x), lung, nodule], dim=1)


def expected_labels(hu: np.ndarray, lung_below_hu: float = -500.0, nodule_above_hu: float = -300.0):
    """What :class:`ThresholdSegmenter` labels, computed by hand from HU."""
    out = np.zeros(hu.shape, np.uint8)
    out[hu < lung_below_hu] = 1
    out[hu > nodule_above_hu] = 2
    return out


class BrightBlobDetector(nn.Module):
    """RetinaNet-style output (as MONAI's RetinaNetDetector in eval mode): per image a dict
    with "boxes" (N, 6), "labels" and "labels_scores".  One box per connected region of its
    input brighter than ``threshold``: the region's bounding box in voxel-edge coordinates
    of the network's own grid, scored by the region's peak intensity.  ``box_mode`` other
    than "xyzxyz" writes the boxes in that MONAI mode (e.g. "cccwhd")."""

    def __init__(self, threshold: float = 0.5, box_mode: str = "xyzxyz"):
        super().__init__()
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.box_mode = box_mode
        self.input_shapes = []

    def forward(self, images):
        from monai.data.box_utils import convert_box_mode

        images = list(images) if isinstance(images, torch.Tensor) else images
        results = []
        for image in images:
            arr = image[0].float().cpu().numpy()
            self.input_shapes.append(arr.shape)
            regions, n = ndimage.label(arr > float(self.threshold))
            boxes, scores = [], []
            for i, box in enumerate(ndimage.find_objects(regions)):
                boxes.append([s.start for s in box] + [s.stop for s in box])
                scores.append(float(arr[box][regions[box] == i + 1].max()))
            boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 6)
            if self.box_mode != "xyzxyz" and len(boxes):
                boxes = convert_box_mode(boxes, src_mode="xyzxyz", dst_mode=self.box_mode)
            results.append({"boxes": boxes, "labels": torch.zeros(n, dtype=torch.long),
                            "labels_scores": torch.tensor(scores, dtype=torch.float32)})
        return results


class DetectorWrapper(nn.Module):
    """The part of MONAI's RetinaNetDetector interface that detection bundles use, around
    any ``network`` returning boxes (MONAI's own needs torchvision for its feature pyramid):
    ``set_target_keys`` renames the output keys, ``set_sliding_window_inferer`` sets
    ``inferer``, and ``forward(images, use_inferer=False)`` records how it was called."""

    def __init__(self, network):
        super().__init__()
        self.network = network
        self.box_key, self.label_key = "boxes", "labels"
        self.inferer = None
        self.use_inferer_calls = []

    def set_target_keys(self, box_key: str, label_key: str) -> None:
        self.box_key, self.label_key = box_key, label_key

    def set_sliding_window_inferer(self, **kwargs) -> None:
        self.inferer = kwargs

    def forward(self, images, use_inferer: bool = False):
        self.use_inferer_calls.append(use_inferer)
        return [{self.box_key: r["boxes"], self.label_key: r["labels"],
                 f"{self.label_key}_scores": r["labels_scores"]} for r in self.network(images)]


class BrightFractionClassifier(nn.Module):
    """A second-stage classifier by rule: a candidate is a nodule when less than
    ``max_fraction`` of its patch (channel 0, windowed CT) is brighter than ``level`` -- a
    small blob fills little of the patch, a vessel crossing it fills more."""

    def __init__(self, level: float = unit(-300), max_fraction: float = 0.08, steepness: float = 200.0):
        super().__init__()
        self.register_buffer("rule", torch.tensor([float(level), float(max_fraction)]))
        self.steepness = float(steepness)

    def forward(self, x):
        fraction = (x[:, :1] > self.rule[0]).float().mean(dim=(2, 3, 4))
        return self.steepness * (self.rule[1] - fraction)


# ---- cards ---------------------------------------------------------------------------------
def segmentation_card(name="rule-seg", spacing=None, roi_size=(8, 32, 32), **network_kwargs):
    from napari_medai.models.card import ModelCard

    return ModelCard(
        name=name, task="segmentation", modality="CT", description="fixed-rule test model",
        spacing=spacing, roi_size=roi_size, out_channels=3, classes=[dict(c) for c in CLASSES],
        intensity=dict(CT_WINDOW), output="softmax",
        network={"name": "fixed_rule_models.ThresholdSegmenter", "kwargs": network_kwargs},
        extra={"organs": {}, "lesions": [2], "min_lesion_mm3": 0.0},
    )


def detection_card(name="rule-det", spacing=None, roi_size=(8, 32, 32), **network_kwargs):
    card = segmentation_card(name, spacing, roi_size, **network_kwargs)
    card.task = "detection"
    card.extra = {"method": "segmentation", "probability_channel": 2, "candidate_threshold": 0.1,
                  "mask_threshold": 0.5}
    return card


def classifier_card(name="rule-classifier", patch=(4, 8, 8), step_mm=(1.0, 1.0, 1.0), **network_kwargs):
    from napari_medai.models.card import ModelCard

    return ModelCard(
        name=name, task="classification", modality="CT", description="fixed-rule test classifier",
        spacing=step_mm, roi_size=patch, in_channels=2, out_channels=1,
        classes=[{"index": 0, "name": "other"}, {"index": 1, "name": "nodule"}],
        intensity=dict(CT_WINDOW), output="sigmoid",
        network={"name": "fixed_rule_models.BrightFractionClassifier", "kwargs": network_kwargs},
        extra={"inputs": ["image", "probability"], "candidate_threshold": 0.5},
    )


def install(card, folder) -> Path:
    """Write the card and the weights of its network into ``folder``; returns the card path."""
    from napari_medai.models.networks import build_network
    from napari_medai.models.registry import save_builtin

    return save_builtin(card, build_network(card), folder=folder)


# ---- volumes -------------------------------------------------------------------------------
def blob_volume(shape=(16, 32, 32), background_hu=-850.0, blobs=((4, 8, 8, 3, 200.0),)):
    """Lung-like background with cubic blobs ``(z, y, x, half-size, HU)``."""
    volume = np.full(shape, background_hu, np.float32)
    for z, y, x, r, hu in blobs:
        volume[z - r:z + r + 1, y - r:y + r + 1, x - r:x + r + 1] = hu
    return volume


def two_lung_chest(blobs=((21, 20, 45, 5, 200.0), (5, 20, 15, 1, 200.0)), lungs=("right", "left")):
    """(30, 40, 60) at -400 HU (neither class of the rule), the patient's right lung at x 3-26
    (small L), the left at x 34-57, both over z 2-27; cubic 200 HU blobs (z, y, x, half-size, HU)."""
    v = np.full((30, 40, 60), -400.0, np.float32)
    if "right" in lungs:
        v[2:28, 5:35, 3:27] = -850.0
    if "left" in lungs:
        v[2:28, 5:35, 34:58] = -850.0
    for z, y, x, r, hu in blobs:
        v[z - r:z + r + 1, y - r:y + r + 1, x - r:x + r + 1] = hu
    return v


# ---- bundles -------------------------------------------------------------------------------
def write_bundle(folder: Path, network_def: dict, state_dict: dict, *, pixdim=(1.0, 1.0, 1.0),
                 roi_size=(16, 16, 16), channel_def=None, task=None, outputs=None, extra_config=None) -> Path:
    """A minimal MONAI bundle folder: configs/inference.json, configs/metadata.json, models/model.pt.

    ``pixdim`` and ``roi_size`` are in MONAI's (x, y, z) order of the RAS-oriented array.
    """
    folder = Path(folder)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    inference = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": list(pixdim), "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": CT_WINDOW["a_min"],
             "a_max": CT_WINDOW["a_max"], "b_min": 0.0, "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(roi_size), "sw_batch_size": 2},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        ]},
        **(extra_config or {}),
    }
    channel_def = channel_def or {str(c["index"]): c["name"] for c in CLASSES}
    metadata = {
        "name": folder.name, "version": "0.0.1", "description": "fixed-rule test bundle",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1}},
            "outputs": outputs or {"pred": {"type": "image", "format": "segmentation",
                                            "num_channels": len(channel_def), "channel_def": channel_def}},
        },
    }
    if task:
        metadata["task"] = task
    (folder / "configs" / "inference.json").write_text(json.dumps(inference, indent=1))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=1))
    torch.save(state_dict, folder / "models" / "model.pt")
    return folder


class RecordingThresholdSegmenter(ThresholdSegmenter):
    """:class:`ThresholdSegmenter` that keeps a copy of every input batch it is given in the
    class-level list ``inputs`` (tests give it a fresh list), to show what a bundle's network
    was fed: the grid (resampling) and the axis order and directions (re-orientation)."""

    inputs: list = []

    def forward(self, x):
        type(self).inputs.append(x.detach().cpu().clone())
        return super().forward(x)


class RecordingBrightBlobDetector(BrightBlobDetector):
    """:class:`BrightBlobDetector` that keeps a copy of every image it is given, as a (1, 1,
    ...) batch, in the class-level list ``inputs`` (tests give it a fresh list)."""

    inputs: list = []

    def forward(self, images):
        images = list(images) if isinstance(images, torch.Tensor) else images
        type(self).inputs.extend(image[None].detach().cpu().clone() for image in images)
        return super().forward(images)


def stand_in_phantoms(monkeypatch, scans: dict) -> list:
    """Make ``training.phantom_dataset.phantom_for(seed)`` return ``scans[seed]()`` (tiny scenes
    whose answer is known) and return the list of seeds made, in order: a test can then check
    that nothing was made before a refusal."""
    from napari_medai.training import phantom_dataset

    made = []

    def phantom_for(seed, **_):
        made.append(seed)
        return scans[seed]()

    monkeypatch.setattr(phantom_dataset, "phantom_for", phantom_for)
    return made


class SigmoidLungNodule(ThresholdSegmenter):
    """ThresholdSegmenter's lung and nodule logits only: a multi-label (sigmoid) model whose label
    k + 1 is channel k."""

    def forward(self, x):
        return super().forward(x)[:, 1:]
