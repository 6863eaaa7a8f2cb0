"""napari sample data: two real scans shipped with the plugin, and the chest-CT phantom."""

from __future__ import annotations

from ..io import Volume, read_volume
from ..io.resources import sample_path
from .reader import volume_layer_data

PHANTOM_SEED = 0


def lung1_ct() -> list[tuple]:
    """Real chest CT (pyradiomics' lung1, cropped in-plane) with its nodule mask."""
    ct = read_volume(sample_path("lung1_ct"))
    mask = read_volume(sample_path("lung1_nodule_mask"))
    mask.is_labels = True  # a one-value mask could pass for an image without the hint
    return [
        volume_layer_data(ct, name="lung1 CT"),
        volume_layer_data(mask, name="lung1 nodule"),
    ]


def colin27_mr() -> list[tuple]:
    """Real T1 MR brain (Colin27, 27 scans of one subject averaged)."""
    return [volume_layer_data(read_volume(sample_path("colin27_t1")), name="colin27 T1")]


def synthetic_chest_ct() -> list[tuple]:
    """A procedural chest CT with known lungs and nodules (seed fixed for reproducibility)."""
    from ..phantoms import make_chest_ct  # generated on demand, not at napari start-up

    phantom = make_chest_ct(seed=PHANTOM_SEED)
    ct = Volume.from_spacing(phantom.hu, phantom.spacing, modality="CT")
    labels = Volume.from_spacing(phantom.labels, phantom.spacing, is_labels=True)
    labels.metadata["nodules"] = list(phantom.nodules)
    return [
        volume_layer_data(ct, name="phantom CT"),
        volume_layer_data(labels, name="phantom labels"),
    ]
