"""The main job: open napari with the MedAI widgets docked and a chest CT loaded."""

from __future__ import annotations

import argparse
from pathlib import Path

# Docked as tabs of one dock area, in the order of the screening workflow (denoise, detect,
# segment, report).  Stacked, three docks shared the window's height and the findings table
# got one row's height; as tabs each widget has the whole height.
WIDGETS = ("Denoising", "Lesion detection", "Segmentation", "Screening report")
FRONT = "Lesion detection"  # the tab shown first
SAMPLES = ("lung1", "colin27", "synthetic_chest_ct")  # napari.yaml's sample_data keys
READER_PATTERNS = ("*.nii", "*.nii.gz", "*.dcm", "*.ima", "*.dicom")  # napari.yaml's reader filename_patterns


def build_viewer(path: str | None = None, sample: str = "lung1", viewer=None):
    """Open ``path`` (or the sample) with the MedAI widgets docked, in ``viewer`` or a new one."""
    import napari

    viewer = viewer if viewer is not None else napari.Viewer(title="napari-medai")
    if path and _file_no_pattern_takes(path):
        # a DICOM file without an extension (as scanners write them): napari asks the readers by
        # name pattern, and none matched ("no compatible readers"), though the plugin reads it
        from .napari_hooks.reader import read_paths

        for data, meta, kind in read_paths(path):  # the plugin's reader itself, as viewer.open would call it
            getattr(viewer, f"add_{kind}")(data, **meta)
    elif path:
        viewer.open(path, plugin="napari-medai")
    else:
        viewer.open_sample("napari-medai", sample)
    docks = {}
    for k, name in enumerate(WIDGETS):
        docks[name], _ = viewer.window.add_plugin_dock_widget("napari-medai", name, tabify=k > 0)
    docks[FRONT].raise_()
    return viewer


def _file_no_pattern_takes(path: str) -> bool:
    """A file the plugin reads whose name matches none of its reader's patterns (napari.yaml)."""
    from fnmatch import fnmatch

    from .io import is_supported_path

    name = Path(path).name.lower()
    return (Path(path).is_file() and is_supported_path(path)
            and not any(fnmatch(name, pattern) for pattern in READER_PATTERNS))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_medai", description=__doc__)
    parser.add_argument("path", nargs="?", help="NIfTI file or DICOM folder (default: the lung1 sample)")
    parser.add_argument("--sample", default="lung1", help="sample key when no path is given")
    args = parser.parse_args(argv)
    import sys

    import napari

    from .errors import MedaiError, reason_of

    if args.path is None and args.sample not in SAMPLES:
        parser.error(f"--sample must be one of {', '.join(SAMPLES)}, got {args.sample!r}")
    viewer = napari.Viewer(title="napari-medai")
    try:
        build_viewer(args.path, args.sample, viewer=viewer)
    except (MedaiError, OSError, ValueError, KeyError) as exc:
        # one sentence, as medai's commands say it: a 4D file, a missing path, a file no reader
        # takes or an unknown sample ended in a 40-line traceback with an empty window behind it
        viewer.close()
        what = args.path or f"sample {args.sample!r}"
        print(f"python -m napari_medai: cannot open {what}: {reason_of(exc)}", file=sys.stderr)
        return 2
    napari.run()
    return 0
