"""Screenshots of the app for the docs: lung1 after the screening report, and after detection.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/make_screenshots.py

Opens the window ``scripts/start.sh`` opens (``app.build_viewer``), clicks Run in a widget as a
user would, waits off the Qt thread's job, and saves the whole window to docs/images/.  In the
screening tab it then reviews two findings as a reader would (``SCREENING_REVIEW``), so the
screenshot shows the *Reader* column and the report after the review.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
SIZE = (1440, 900)  # a laptop screen
# lung1's finding 1 is the annotated nodule; finding 3 is a vessel branch on the scan's first
# slice (looked at by eye on 2026-11-27, docs/screening.md)
SCREENING_REVIEW = {0: "accepted", 2: "rejected"}


def pump(app, seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.02)


def run(app, widget, timeout: float = 600.0) -> float:
    start = time.time()
    widget.run_button.click()
    pump(app, 0.5)
    while widget.runner.is_running and time.time() - start < timeout:
        pump(app, 0.2)
    pump(app, 1.0)
    if "done" not in widget.status_label.text():
        sys.exit(f"{widget.title} did not finish: {widget.status_label.text()!r}")
    return time.time() - start


def main() -> int:
    from imageio.v3 import imwrite
    from qtpy.QtWidgets import QApplication

    from napari_medai.app import build_viewer
    from napari_medai.widgets.detection import DetectionWidget
    from napari_medai.widgets.screening import ScreeningWidget

    viewer = build_viewer()
    window = viewer.window
    window.resize(*SIZE)
    window.show()
    app = QApplication.instance()
    pump(app, 2.0)
    OUT.mkdir(parents=True, exist_ok=True)

    docks = {type(w): (name, w) for name, w in window.dock_widgets.items()}
    for kind, filename in ((ScreeningWidget, "app_screening_lung1.png"), (DetectionWidget, "app_detection_lung1.png")):
        name, widget = docks[kind]
        widget.parent().raise_()  # its dock: bring the tab to the front
        seconds = run(app, widget)
        if kind is ScreeningWidget:
            for row, state in SCREENING_REVIEW.items():
                widget.set_review(row, state)
        widget.findings_table.setFocus()
        widget.findings_table.setCurrentCell(0, 0)  # go to the top finding, as a click would
        pump(app, 1.0)
        imwrite(OUT / filename, window.screenshot(flash=False, canvas_only=False))
        print(f"{filename}: {widget.title} in {seconds:.1f} s, {len(widget.findings)} findings")
        for layer in [layer for layer in viewer.layers if layer.name not in ("lung1 CT", "lung1 nodule")]:
            viewer.layers.remove(layer)  # the next widget starts from the sample alone
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
