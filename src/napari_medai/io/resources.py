"""Where the shipped sample volumes live.

``src/napari_medai/sample_data`` is a symlink to the repository's ``sample_data/`` (an
editable install follows it); a wheel carries a real copy inside the package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import InputError

SAMPLES = {
    "lung1_ct": "lung1_ct.nii.gz",
    "lung1_nodule_mask": "lung1_nodule_mask.nii.gz",
    "colin27_t1": "colin27_t1.nii.gz",
}


def sample_path(name: str) -> Path:
    """Path of a shipped sample, by key (``"lung1_ct"``) or file name."""
    filename = SAMPLES.get(name, name)
    path = Path(str(files("napari_medai") / "sample_data" / filename))
    if not path.is_file():
        raise InputError(
            f"the sample file {filename} is missing from this installation ({path}); reinstall napari-medai"
        )
    return path
