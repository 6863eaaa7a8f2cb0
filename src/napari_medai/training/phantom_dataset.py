"""Folders of phantom chest CTs for training and benchmarks, with varied acquisitions.

Each case draws its own scanner geometry from its seed (in-plane pixel 0.65-1.0 mm, slice
thickness 1.25-5 mm, field of view 330-400 mm), so that models see the spread of real
chest CT protocols rather than one grid.  Files follow ``medai phantom``'s naming:
``caseNNNN_image.nii.gz``, ``caseNNNN_label.nii.gz``, ``caseNNNN_nodules.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SLICE_THICKNESS_MM = (1.25, 2.0, 2.5, 3.0, 5.0)


def validation_seeds(seeds, purpose: str) -> list[int]:
    """``seeds`` as a list of ints, refused when empty: a fit on no phantom ran every other step
    first and then failed on the empty list, or wrote NaN scores into a card.  ``purpose``
    completes "... needs phantoms to ..." in the message."""
    from ..errors import InputError

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise InputError(f"no validation seeds given: {purpose} needs phantoms to be fitted on")
    return seeds


def acquisition_for(seed: int) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(shape, spacing) of the scan simulated for ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, 7919])  # independent of the anatomy's own stream
    dz = float(rng.choice(SLICE_THICKNESS_MM))
    dxy = round(float(rng.uniform(0.65, 1.0)), 3)
    fov = float(rng.uniform(330, 400))
    z_extent = float(rng.uniform(200, 280))
    n_xy = int(round(fov / dxy))
    return (max(8, int(round(z_extent / dz))), n_xy, n_xy), (dz, dxy, dxy)


def phantom_for(seed: int, max_shape=None, **kwargs):
    """Phantom ``seed`` with the acquisition drawn for it; ``max_shape`` crops the grid
    (benchmarks' quick runs) without changing the voxel size."""
    from ..phantoms import make_chest_ct

    shape, spacing = acquisition_for(seed)
    if max_shape is not None:
        shape = tuple(min(n, m) for n, m in zip(shape, max_shape))
    return make_chest_ct(seed, shape=shape, spacing=spacing, **kwargs)


def case_name(seed: int) -> str:
    return f"case{seed:04d}"


def write_phantom_case(seed: int, folder, low_dose_photons: float | None = None, n_nodules: int | None = None,
                       max_nodule_diameter_mm: float | None = None) -> Path:
    """Generate phantom ``seed`` into ``folder`` unless it is already there.

    ``n_nodules``: a fixed number of nodules per case (default: the phantom's own 0-4);
    training sets use more, because nodules are the rare class the model must learn.
    ``max_nodule_diameter_mm``: only nodules up to that size (a set rich in small nodules)."""
    from ..io import write_volume

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = case_name(seed)
    image = folder / f"{name}_image.nii.gz"
    if image.exists() and (folder / f"{name}_nodules.json").exists():
        return image
    ph = phantom_for(seed, low_dose_photons=low_dose_photons, n_nodules=n_nodules,
                     max_nodule_diameter_mm=max_nodule_diameter_mm)
    write_volume(ph.labels_volume(), folder / f"{name}_label.nii.gz")
    if ph.low_dose is not None:
        write_volume(ph.low_dose_volume(), folder / f"{name}_lowdose.nii.gz")
    (folder / f"{name}_nodules.json").write_text(json.dumps(ph.nodules, indent=1))
    write_volume(ph.to_volume(), image)  # last: its presence marks a complete case
    return image


def write_phantom_dataset(folder, seeds, log=print, n_nodules: int | None = None,
                          max_nodule_diameter_mm: float | None = None) -> list[Path]:
    out = []
    for i, seed in enumerate(seeds):
        out.append(write_phantom_case(int(seed), folder, n_nodules=n_nodules,
                                      max_nodule_diameter_mm=max_nodule_diameter_mm))
        log(f"phantom {i + 1}/{len(seeds)}: {out[-1].name}")
    return out
