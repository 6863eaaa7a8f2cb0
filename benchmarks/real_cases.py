"""The real annotated CTs the benchmarks test on (never trained on by a segmentation or detection model).

* ``lung1``: the repository's sample (pyradiomics' lung1, a 1.4 mL solid nodule).
* ``lung2``: pyradiomics' second chest CT, a 48 mL tumour (4-5 cm, beyond the 3-30 mm nodules
  the models are trained on). Fetched with pip on first use into the training cache
  (``training.real_ct``; needs pynrrd). The CT denoiser trains on it, so it is no denoising test.
"""

from __future__ import annotations

import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("lung1", "lung2")


@functools.lru_cache(maxsize=2)  # each model of a benchmark runs on the same case: read it once
def real_case(name: str):
    """(volume, spacing, affine or None, truth mask) of real annotated CT ``name`` (read-only:
    every caller shares the arrays)."""
    if name == "lung1":
        from napari_medai.io import read_volume

        ct = read_volume(ROOT / "sample_data" / "lung1_ct.nii.gz")
        truth = read_volume(ROOT / "sample_data" / "lung1_nodule_mask.nii.gz").data > 0
        return ct.data, ct.spacing, ct.affine, truth
    if name != "lung2":
        raise ValueError(f"unknown real case {name!r}: one of {CASES}")
    from napari_medai.training.real_ct import lung2_with_label

    hu, spacing, label = lung2_with_label()
    return hu, spacing, None, label > 0
