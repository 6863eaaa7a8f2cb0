"""GUI fixtures: pytest-xvfb provides the X server, napari provides make_napari_viewer."""

from __future__ import annotations

import pytest

SPACING = (2.5, 0.8, 0.8)  # mm, (z, y, x): anisotropic on purpose


@pytest.fixture
def notifications():
    """Messages napari notified since the test started: ``notifications()`` -> [(severity, text)]."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: [(str(n.severity), n.message) for n in notification_manager.records[start:]]


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def ct_layer(viewer, small_ct):
    return viewer.add_image(small_ct, name="ct", scale=SPACING, translate=(-30.0, 5.0, 7.0))
