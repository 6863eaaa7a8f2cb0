"""Small read-only tables for the dock widgets: class volumes and findings."""

from __future__ import annotations

import math

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


class _ReadOnlyTable(QTableWidget):
    columns: tuple[str, ...] = ()

    def __init__(self, parent=None):
        super().__init__(0, len(self.columns), parent)
        self.setHorizontalHeaderLabels(list(self.columns))
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)

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


def axial_slice(center_voxel) -> int:
    """The axial slice a finding is listed on: its centre's z, halves rounded up."""
    return int(math.floor(float(center_voxel[0]) + 0.5))


class FindingsTable(_ReadOnlyTable):
    """One row per finding, in rank order: rank, score, long-axis diameter, volume,
    Lung-RADS size category and the axial slice of its centre."""

    columns = ("#", "Score", "Diameter (mm)", "Volume (mL)", "Lung-RADS", "Slice")

    def show_findings(self, findings: list) -> None:
        self._set_rows([
            [rank, f"{f.score:.2f}", f"{f.diameter_mm:.1f}", _ml(f.volume_ml), f.lung_rads,
             axial_slice(f.center_voxel)]
            for rank, f in enumerate(findings, start=1)
        ])


def _ml(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"
