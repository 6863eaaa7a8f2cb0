"""Tiny denoising model cards in tmp_path (see denoise_helpers.py)."""

from __future__ import annotations

import pytest
from denoise_helpers import make_tiny_card


@pytest.fixture
def tiny_card(tmp_path):
    return make_tiny_card(tmp_path)


@pytest.fixture
def changing_card(tmp_path):
    return make_tiny_card(tmp_path, head_weight=0.05)
