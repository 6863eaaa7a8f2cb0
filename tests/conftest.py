"""Fixtures shared by every test folder (Qt-free: GUI fixtures live in tests/widgets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def small_ct(rng) -> np.ndarray:
    """A tiny CT-like volume (z, y, x) in HU: air around a soft-tissue block with noise."""
    volume = np.full((12, 24, 24), -1000.0, dtype=np.float32)
    volume[2:10, 4:20, 4:20] = 40.0
    return volume + rng.normal(0.0, 10.0, volume.shape).astype(np.float32)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name)``: from then on, writing a file called ``name`` fails as on a full disk
    (OSError 28, after part of it reached the temporary file), the other files are written.  The
    writers of every output (write_text_atomic, write_volume, key images) go through
    ``replace_atomically``, which is patched where it is looked up."""
    import napari_medai.io.atomic as atomic
    import napari_medai.io.nifti as nifti

    real, names = atomic.replace_atomically, set()

    def cut_off(tmp):
        tmp.write_bytes(b"cut off")
        raise OSError(28, "No space left on device")

    def replace_atomically(path, save, suffix=""):
        return real(path, cut_off if Path(path).name in names else save, suffix)

    monkeypatch.setattr(atomic, "replace_atomically", replace_atomically)
    monkeypatch.setattr(nifti, "replace_atomically", replace_atomically)
    return names.add
