"""The main job's window: the sample CT open and the four widgets docked as tabs."""

from __future__ import annotations

import pytest

from napari_medai.app import FRONT, WIDGETS, build_viewer

pytestmark = pytest.mark.gui


def test_the_app_opens_lung1_with_every_widget_as_a_tab_and_detection_in_front(make_napari_viewer):
    from qtpy.QtWidgets import QDockWidget, QTabBar

    viewer = build_viewer(viewer=make_napari_viewer())
    assert [layer.name for layer in viewer.layers] == ["lung1 CT", "lung1 nodule"]
    window = viewer.window._qt_window
    docks = {d.windowTitle(): d for d in window.findChildren(QDockWidget)}
    ours = [docks[f"{name} (napari-medai)"] for name in WIDGETS]
    # Tabs of one area: each sibling tabified with the first, so each gets the window's height.
    for dock in ours[1:]:
        assert dock in window.tabifiedDockWidgets(ours[0])
    # The tab bar Qt draws for them: workflow order, detection selected.
    bars = [b for b in window.findChildren(QTabBar) if b.count() == len(WIDGETS)]
    assert len(bars) == 1
    bar = bars[0]
    assert [bar.tabText(i) for i in range(bar.count())] == [f"{name} (napari-medai)" for name in WIDGETS]
    assert bar.tabText(bar.currentIndex()) == f"{FRONT} (napari-medai)"
