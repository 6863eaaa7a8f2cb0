"""The main job: open napari with the MedAI widgets docked and a chest CT loaded."""

from __future__ import annotations

import argparse

WIDGETS = ("Lesion detection", "Segmentation", "Denoising")
TABBED = ("Screening report",)  # docked as tabs beside the last widget: four tall docks do not fit a laptop


def build_viewer(path: str | None = None, sample: str = "lung1"):
    import napari

    viewer = napari.Viewer(title="napari-medai")
    if path:
        viewer.open(path, plugin="napari-medai")
    else:
        viewer.open_sample("napari-medai", sample)
    for name in WIDGETS:
        viewer.window.add_plugin_dock_widget("napari-medai", name)
    for name in TABBED:
        viewer.window.add_plugin_dock_widget("napari-medai", name, tabify=True)
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
