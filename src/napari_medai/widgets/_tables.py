"""Small read-only tables for the dock widgets: class volumes and findings."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QPalette
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QStyle, QTableWidget, QTableWidgetItem

from ..postprocess.findings import OUTLINES, axial_slice
from ..postprocess.report import DRAWN_EVIDENCE, score_cell, small_on_network_outline
from ..review import ACCEPTED, REJECTED, review_mark


class _ReadOnlyTable(QTableWidget):
    columns: tuple[str, ...] = ()
    column_tips: tuple[str, ...] = ()  # what each header means, shown on hover
    # Rows shown without scrolling.  A dock packs its widgets tightly: without a minimum the
    # table got one row's height, so a run with eight findings showed one of them.
    visible_rows: int = 3

    def __init__(self, parent=None):
        super().__init__(0, len(self.columns), parent)
        self.setHorizontalHeaderLabels(list(self.columns))
        for c, tip in enumerate(self.column_tips):
            self.horizontalHeaderItem(c).setToolTip(tip)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setMinimumHeight(self.rows_height(self.visible_rows))

    def rows_height(self, rows: int) -> int:
        """Pixels for the header, ``rows`` rows and a horizontal scroll bar."""
        return (self.horizontalHeader().sizeHint().height() + rows * self.verticalHeader().defaultSectionSize()
                + self.horizontalScrollBar().sizeHint().height() + 2 * self.frameWidth())

    def _set_rows(self, rows: list[list]) -> None:
        self.clearContents()
        self.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, value in enumerate(values):
                self.setItem(r, c, QTableWidgetItem(str(value)))

    def cell_text(self, row: int, column: int) -> str:
        item = self.item(row, column)
        return item.text() if item is not None else ""


class VolumeTable(_ReadOnlyTable):
    """Volume (mL) of each non-background class, with the class colour beside its name."""

    columns = ("Class", "Volume (mL)")

    def show_volumes(self, volumes: list[dict], colors: dict[int, str] | None = None) -> None:
        """``volumes``: rows of ``postprocess.class_volumes`` ({"index", "name", "volume_ml"})."""
        self._set_rows([[row["name"], _ml(row["volume_ml"])] for row in volumes])
        for r, row in enumerate(volumes):
            color = (colors or {}).get(int(row["index"]))
            if color:
                self.item(r, 0).setData(Qt.DecorationRole, QColor(color))


class FindingsTable(_ReadOnlyTable):
    """One row per finding, in rank order: rank, score, long-axis and mean diameter, volume,
    Lung-RADS size category, attenuation with its category, the axial slice of its centre, and
    the reader's review (✓ accepted, ✗ rejected).

    Both diameters are shown because the size category follows the mean diameter (Lung-RADS
    v2022), not the long axis: a 9.0 mm long axis with a 6.0 mm mean is category 3.
    """

    # Short headers: with the full words the dock's default width cut off the last columns.
    columns = ("#", "Score", "Long (mm)", "Mean (mm)", "Vol. (mL)", "Lung-RADS", "Type", "Slice", "Reader")
    column_tips = ("Rank by score (a nodule the reader added comes last)",
                   "Detector confidence, 0 to 1 (reader: a nodule the reader marked)",
                   "Long-axis diameter on the axial slice, mm",
                   "Mean of the long and short axis, mm: the diameter the Lung-RADS size category uses",
                   "Volume of the finding's mask, mL",
                   "Lung-RADS v2022 size category (solid nodule, baseline screen): decision support",
                   "Attenuation read from the CT under the mask (solid, part-solid, GGN: ground glass) and the "
                   "Lung-RADS v2022 baseline category for it (part-solid: 2 under 6 mm in all, else by the solid "
                   "component; GGN: 2 under 30 mm, 3 from 30 mm); confirm the type on the image",
                   # the layer's own index, as the reports give it: napari's slider counts over every
                   # layer's world range, so it shows another number when a layer reaches further
                   "Axial slice of the finding's centre: the image's own slice index (napari's slider shows the "
                   "same number when this image alone sets the viewer's range); click the row to go there",
                   "The reader's review: ✓ accepted, ✗ rejected (Accept / Reject, keys A and R)")
    visible_rows = 6
    # A and R while the table has the focus: the reader accepts or rejects the current finding
    # without leaving the keyboard (the arrow keys already step through the findings).
    review_key_pressed = Signal(str)
    REVIEW_KEYS = {Qt.Key_A: ACCEPTED, Qt.Key_R: REJECTED}  # unscoped: PyQt5 and PyQt6 (qtpy)

    def keyPressEvent(self, event) -> None:
        state = self.REVIEW_KEYS.get(event.key())
        if state is not None and event.modifiers() in (Qt.NoModifier, Qt.KeypadModifier):
            if not event.isAutoRepeat():  # a held key decides once; it does not flip the state back
                self.review_key_pressed.emit(state)
            return
        super().keyPressEvent(event)

    def show_findings(self, findings: list) -> None:
        self._set_rows([
            [rank, score_cell(f), f"{f.diameter_mm:.1f}",
             f"{f.mean_diameter_mm:.1f}{DRAWN_MARK if small_on_network_outline(f) else ''}", _ml(f.volume_ml),
             f.lung_rads, attenuation_text(f), axial_slice(f.center_voxel), ""]
            for rank, f in enumerate(findings, start=1)
        ])
        mean = self.columns.index("Mean (mm)")
        for row, f in enumerate(findings):
            if small_on_network_outline(f):
                self.item(row, mean).setToolTip(DRAWN_TIP)
        # Ask the dock for the width every column needs, so none hides behind a scroll bar.  The
        # header's length would count the stretched last column at its current width instead.
        header = self.horizontalHeader()
        header.setStretchLastSection(False)  # a stretched last column kept a width wider than it needs
        needed = sum(max(self.sizeHintForColumn(c), header.sectionSizeHint(c)) for c in range(self.columnCount()))
        scroll_bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        self.setMinimumWidth(needed + scroll_bar + 2 * self.frameWidth())

    def show_review(self, review: list[str]) -> None:
        """The reader's state of each finding in the last column; rejected rows greyed."""
        column = self.columns.index("Reader")
        grey = self.palette().color(QPalette.Disabled, QPalette.Text)
        normal = self.palette().color(QPalette.Text)
        for row, state in enumerate(review):
            self.item(row, column).setText(review_mark(state))
            for c in range(self.columnCount()):
                self.item(row, c).setForeground(grey if state == REJECTED else normal)


# A small finding measured on the network's outline as drawn (postprocess.report.outline_note)
DRAWN_MARK = "†"
DRAWN_TIP = (f"† Measured (at least in part) on {OUTLINES['network']}, not on the CT's half-maximum edge: under "
             f"8 mm that outline reads small ({DRAWN_EVIDENCE}), so the size category may be too low. "
             "Measure it on the image")


def attenuation_text(f) -> str:
    """"part-solid: 4A", "GGN: 2" or "solid" (its category is the Lung-RADS column's): the
    finding's attenuation and the category for it ("" when it was not read)."""
    if not f.attenuation or f.attenuation == "solid":
        return f.attenuation
    kind = "GGN" if f.attenuation == "ground-glass" else f.attenuation
    return f"{kind}: {f.lung_rads_by_attenuation}"


def _ml(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"
