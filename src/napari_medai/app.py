"""The main job: open napari with the MedAI widgets docked and a chest CT loaded."""

from __future__ import annotations

import argparse

# Docked as tabs of one dock area, in the order of the screening workflow (denoise, detect,
# segment, report).  Stacked, three docks shared the window's height and the findings table
# got one row's height; as tabs each widget has the whole height.
WIDGETS = ("Denoising", "Lesion detection", "Segmentation", "Screening report")
FRONT = "Lesion detection"  # the tab shown first


def build_viewer(path: str | None = None, sample: str = "lung1", viewer=None):
    """Open ``path`` (or the sample) with the MedAI widgets docked, in ``viewer`` or a new one."""
    import napari

    viewer = viewer if viewer is not None else napari.Viewer(title="napari-medai")
    if path:
        viewer.open(path, plugin="napari-medai")
    else:
        viewer.open_sample("napari-medai", sample)
    docks = {}
    for k, name in enumerate(WIDGETS):
        docks[name], _ = viewer.window.add_plugin_dock_widget("napari-medai", name, tabify=k > 0)
    docks[FRONT].raise_()
    return viewer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_medai", description=__doc__)
    parser.add_argument("path", nargs="?", help="NIfTI file or DICOM folder (default: the lung1 sample)")
    parser.add_argument("--sample", default="lung1", help="sample key when no path is given")
    args = parser.parse_args(argv)
    import napari

    build_viewer(args.path, args.sample)
    napari.run()
    return 0
