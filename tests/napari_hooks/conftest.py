"""Fixtures for the napari hook tests: a clean reader memory, and a real viewer (pytest-xvfb
provides the X server, napari provides make_napari_viewer)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from napari_medai.napari_hooks import reader


@pytest.fixture(autouse=True)
def fresh_reader_memory():
    """The reader skips a DICOM series it returned seconds ago; no test sees another's reads."""
    reader._recent_series.clear()
    yield
    reader._recent_series.clear()


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def dicom_writer():
    """tests/io's DICOM series writer (that folder's conftest, loaded by path: every test
    folder's conftest is a module named "conftest")."""
    spec = importlib.util.spec_from_file_location("io_test_conftest", Path(__file__).parents[1] / "io" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_dicom_series
