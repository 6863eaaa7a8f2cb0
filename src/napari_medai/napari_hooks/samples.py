"""napari sample data: two real scans shipped with the plugin, and the chest-CT phantom."""

from __future__ import annotations

from ..io import Volume, read_volume
from ..io.resources import sample_path
from .reader import MM_UNITS, volume_layer_data

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
    """A procedural chest CT with its ground truth: the HU image, the label map (table in
    docs/phantom.md) and the nodule centres as a Points layer, all on the phantom's grid."""
    import numpy as np

    from ..phantoms import LABEL_NAMES, make_chest_ct  # generated on demand, not at napari start-up
    from ..phantoms.tissues import LUNG, NODULE

    phantom = make_chest_ct(seed=PHANTOM_SEED, n_nodules=3)  # a sample should show nodules
    affine = getattr(phantom, "affine", None)
    if affine is None:
        ct = Volume.from_spacing(phantom.hu, phantom.spacing, modality="CT")
    else:
        ct = Volume(phantom.hu, affine, modality="CT")
    labels = Volume(phantom.labels, ct.affine, modality="CT", is_labels=True)
    labels.metadata["nodules"] = list(phantom.nodules)
    labels.metadata["label_names"] = dict(LABEL_NAMES)
    # the classes as the segmentation's layers carry them (lung and nodule in the built-in model's
    # colours): napari shows the name under the cursor, the detection widget finds the "nodule"
    # class by name, and the plugin's writer saves the names (with only "label_names" a saved and
    # reopened phantom lost them: an audit helper's finding)
    colors = {LUNG: "#4aa3ff", NODULE: "#ff3030"}
    labels.metadata["classes"] = {i: {"name": str(name), **({"color": colors[i]} if i in colors else {})}
                                  for i, name in LABEL_NAMES.items()}
    labels_data, labels_meta, kind = volume_layer_data(labels, name="phantom labels")
    layers = [
        volume_layer_data(ct, name="phantom CT"),
        (labels_data, labels_meta, kind),
    ]
    nodules = list(phantom.nodules)
    centres = np.array([n["center_voxel"] for n in nodules], float).reshape(-1, 3)
    in_plane = float(np.mean(ct.spacing[1:]))
    points_meta = {
        "name": "phantom nodules",
        **ct.napari_geometry(),
        # in mm like the images: a layer in pixels beside them leaves napari with no common
        # unit, and the scale bar falls back to dimensionless
        "units": MM_UNITS,
        "metadata": {**ct.layer_metadata(), "nodules": nodules},
        "features": {
            "diameter_mm": [float(n.get("diameter_mm", 0.0)) for n in nodules],
            "type": [str(n.get("type", "")) for n in nodules],
        },
        # Points sizes are in data units: one nodule diameter in in-plane pixels.
        "size": [max(float(n.get("diameter_mm", 5.0)) / in_plane, 3.0) for n in nodules] or 10,
        "face_color": "transparent",
        "border_color": "red",
    }
    layers.append((centres, points_meta, "points"))
    return layers
