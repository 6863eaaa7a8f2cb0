"""Label classes on napari Labels layers: their colours, names (``features``) and colormap.

Shared by the widgets (segmentation, screening, *New labels*) and the reader, which gives a
label file that names its classes (``io.nifti``'s class extension) the same colours and names.
"""

from __future__ import annotations

import numpy as np

# Colours for classes whose card gives none (as for bundles without colours).
FALLBACK_COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
                   "#f032e6", "#bcf60c", "#fabebe", "#008080"]
# Label values given napari's own colours when they are no class: every value of the uint8 maps
# segment() returns.  Higher values (only in wider maps) share OTHER_LABEL_COLOR.
OTHER_LABELS = 255
OTHER_LABEL_COLOR = "white"


def class_colors(classes: dict[int, dict]) -> dict[int, str]:
    """Hex colour of each class; a foreground class without one gets a palette colour that
    no other class uses (the background is drawn transparent whatever its colour)."""
    colors = {index: info.get("color") for index, info in classes.items()}
    taken = {c.lower() for c in colors.values() if c}
    spare = [c for c in FALLBACK_COLORS if c not in taken] or FALLBACK_COLORS
    for k, index in enumerate(i for i in sorted(colors) if i != 0 and not colors[i]):
        colors[index] = spare[k % len(spare)]
    return colors


def class_colormap(classes: dict[int, dict]):
    """napari label colormap: each class in its card colour, background transparent, and any
    other value (a label painted with napari's "new label") in the colour napari's default
    colormap gives it, so that what the user paints is seen."""
    from napari.utils.colormaps import DirectLabelColormap, label_colormap
    from napari.utils.colormaps.standardize_color import transform_color

    napari_colors = label_colormap(49).map(np.arange(OTHER_LABELS + 1))  # a new Labels layer's colours
    color_dict = {None: transform_color(OTHER_LABEL_COLOR)[0], **dict(enumerate(napari_colors))}
    color_dict[0] = np.zeros(4, np.float32)
    for index, color in class_colors(classes).items():
        if index != 0:
            color_dict[index] = transform_color(color)[0]
    return DirectLabelColormap(color_dict=color_dict)


def class_features(classes: dict[int, dict]) -> dict[str, list]:
    """Labels-layer features: one row per label value ("index"), with the class name."""
    indices = sorted(classes)
    return {"index": indices, "class": [str(classes[i]["name"]) for i in indices]}


def named_labels(classes: dict[int, dict]) -> dict:
    """A Labels layer's ``colormap`` and ``features`` for ``classes``: how the widgets' outputs,
    *New labels* and a label file that names its classes are all drawn and named."""
    return {"colormap": class_colormap(classes), "features": class_features(classes)}
