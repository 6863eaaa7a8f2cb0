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


def test_the_app_says_in_one_line_why_it_cannot_open_a_path(make_napari_viewer, tmp_path, capsys, monkeypatch):
    import napari

    from napari_medai import app

    monkeypatch.setattr(napari, "run", lambda: pytest.fail("the event loop started"))
    viewers = []
    monkeypatch.setattr(napari, "Viewer", lambda **kw: viewers.append(make_napari_viewer()) or viewers[-1])
    assert app.main([str(tmp_path / "missing.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m napari_medai: cannot open") and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        app.main(["--sample", "nosuch"])
    assert "--sample must be one of lung1, colin27, synthetic_chest_ct" in capsys.readouterr().err


def test_the_samples_the_app_knows_are_the_manifests():
    from pathlib import Path

    import yaml

    from napari_medai import app

    manifest = yaml.safe_load((Path(app.__file__).parent / "napari.yaml").read_text())
    assert tuple(s["key"] for s in manifest["contributions"]["sample_data"]) == app.SAMPLES
