"""Helpers for the widget tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import time

import numpy as np


def fake_core(result, steps: int = 5, delay_s: float = 0.0):
    """A core job ``(progress, cancel) -> result`` that reports ``steps`` windows."""

    def job(progress, cancel):
        for done in range(1, steps + 1):
            time.sleep(delay_s)
            progress(done, steps, f"window {done}")
        return result

    return job


def layer_snapshot(viewer):
    """Names and data identities of the viewer's layers, to show nothing was touched."""
    return [(layer.name, id(layer.data), layer.data.copy()) for layer in viewer.layers]


def assert_unchanged(viewer, snapshot):
    assert [layer.name for layer in viewer.layers] == [name for name, _, _ in snapshot]
    for layer, (_, data_id, data) in zip(viewer.layers, snapshot):
        assert id(layer.data) == data_id
        np.testing.assert_array_equal(layer.data, data)
