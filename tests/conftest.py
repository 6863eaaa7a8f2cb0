"""Fixtures shared by every test folder (Qt-free: GUI fixtures live in tests/widgets)."""

from __future__ import annotations

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
