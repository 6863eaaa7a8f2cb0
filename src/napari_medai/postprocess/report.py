"""Findings as JSON, CSV and a short Markdown summary (for the CLI and the widget's export)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from .findings import LUNG_RADS_NOTE, OUTLINES, Finding, axial_slice, lps_position

# What the attenuation column means, for the reports (postprocess.attenuation).
ATTENUATION_NOTE = ("*Attenuation*: read from the CT under the finding's mask (solid component: voxels of "
                    "-300 HU or more); its category is Lung-RADS v2022 on a baseline screen for that type "
                    "(part-solid: 2 under 6 mm in all, else by the solid component: 3 under 6 mm, 4A under 8 mm, "
                    "4B from 8 mm; ground-glass: 2 under 30 mm, 3 from 30 mm). "
                    "Confirm the type on the image: decision support, not a diagnosis")

# slice: the axial slice the findings table, the reports and the key images list (axial_slice);
# center_voxel: (z, y, x) array index; center_mm: napari's world (S, P, L); center_lps_mm: DICOM (x, y, z);
# center_file_voxel: (i, j, k) index in the NIfTI file's own voxel order (file_grid), empty otherwise
CSV_FIELDS = ("rank", "score", "slice", "center_voxel", "center_mm", "center_lps_mm", "center_file_voxel", "bbox_voxel",
              "diameter_mm", "short_axis_mm", "mean_diameter_mm", "volume_ml", "outline", "lung_rads", "attenuation",
              "solid_diameter_mm", "lung_rads_by_attenuation", "added_by_reader")


def file_grid(shape, metadata) -> tuple | None:
    """(shape, axis codes) of the NIfTI file a volume or layer was read from, where its metadata
    says (``nifti_orientation``, set by the reader; a layer's outputs keep it): what
    ``center_file_voxel`` needs.  None for anything else (an array, an in-memory phantom, a DICOM
    series), and for data that is no longer the file's grid (``metadata["shape"]``, the reader's,
    differs: a layer cropped or given other data with its metadata kept)."""
    metadata = metadata or {}
    codes = metadata.get("nifti_orientation")
    shape = tuple(int(n) for n in shape)[-3:]
    source_shape = metadata.get("shape")
    if not codes or (source_shape is not None and tuple(int(n) for n in source_shape)[-3:] != shape):
        return None
    return shape, str(codes)


def center_file_voxel(finding: Finding, grid: tuple | None) -> list[float] | None:
    """The finding's centre as the (i, j, k) index of its NIfTI file (``file_grid``): where another
    viewer of that file shows it, when the file stores its voxels in another order than the
    plugin's (z, y, x) display frame (e.g. RAS).  None without a file grid."""
    if grid is None:
        return None
    from ..io.orientation import file_voxel

    return file_voxel(finding.center_voxel, *grid)


def findings_to_records(findings: list[Finding], grid: tuple | None = None) -> list[dict]:
    """The findings as plain data, ranked; ``grid``: ``file_grid`` of the scan (None: the key
    ``center_file_voxel`` is null)."""
    rows = []
    for rank, f in enumerate(findings, start=1):
        d = f.to_dict()
        d.pop("label", None)
        rows.append({"rank": rank, **d, "center_lps_mm": lps_position(f),
                     "center_file_voxel": center_file_voxel(f, grid)})
    return rows


def findings_to_json(findings: list[Finding], source: str = "", grid: tuple | None = None) -> str:
    return json.dumps(findings_to_records(findings, grid), indent=2)


def findings_to_csv(findings: list[Finding], review=None, grid: tuple | None = None) -> str:
    """One row per finding with ``CSV_FIELDS`` (``slice``: the axial slice the findings table lists;
    ``center_file_voxel`` from ``grid``, ``file_grid`` of the scan, empty without it); with
    ``review`` (the reader's state per finding, napari_medai.review) a last column ``review``
    holds it ("" when not reviewed)."""
    from ..review import checked_review

    fields = CSV_FIELDS if review is None else (*CSV_FIELDS, "review")
    states = checked_review(review, len(findings))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for f, row, state in zip(findings, findings_to_records(findings, grid), states):
        writer.writerow({**{k: (" ".join(map(str, _flat(v))) if isinstance(v, list) else v) for k, v in row.items()},
                         "slice": axial_slice(f.center_voxel), "review": state})
    return buf.getvalue()


def _flat(v):
    for x in v:
        yield from (_flat(x) if isinstance(x, list) else [x])


def edge_findings(findings, n_slices: int, axes=(0,)) -> list[int]:
    """Ranks (1-based) of the findings whose box reaches either end of the volume along ``axes``
    (of z, y, x; ``n_slices``: the volume's size along the one axis, or its (z, y, x) shape)."""
    shape = (n_slices,) if np.ndim(n_slices) == 0 else tuple(n_slices)
    return [rank for rank, f in enumerate(findings, start=1)
            if any(f.bbox_voxel[0][a] <= 0 or f.bbox_voxel[1][a] >= shape[a] for a in axes)]


def _ranks(cut: list[int]) -> tuple[bool, str]:
    return len(cut) == 1, ", ".join(map(str, cut))


def scan_edge_note(findings, n_slices: int) -> str | None:
    """The reports' note on findings at the scan's first or last slice (None when there are none).
    It changes no ranking: a rule that ranked them lower would need data to fit it on."""
    cut = edge_findings(findings, n_slices)
    if not cut:
        return None
    one, ranks = _ranks(cut)
    return (f"{'finding' if one else 'findings'} {ranks} {'touches' if one else 'touch'} "
            f"the scan's first or last slice: {'it' if one else 'they'} may continue beyond the scan, so the size "
            "may be underestimated, and the network saw nothing past that slice to tell a nodule from a vessel")


def field_edge_note(findings, shape) -> str | None:
    """The reports' note on findings at the side of the image's field of view (``shape``: the
    volume's (z, y, x)), where a nodule is cut off in-plane as at the first or last slice: a 10 mm
    sphere cut by the image's edge measured 7.9 mm (Lung-RADS 3, not 4A).  None when there are none."""
    cut = edge_findings(findings, shape, axes=(1, 2))
    if not cut:
        return None
    one, ranks = _ranks(cut)
    return (f"{'finding' if one else 'findings'} {ranks} {'touches' if one else 'touch'} the edge of the image's "
            f"field of view: {'it' if one else 'they'} may continue beyond the image, so the size may be "
            "underestimated")


def edge_notes(findings, shape) -> list[str]:
    """The notes on findings at the scan's first or last slice and at the side of its field of
    view (``shape``: the volume's (z, y, x)); empty when no finding is cut off."""
    return [note for note in (scan_edge_note(findings, shape[0]), field_edge_note(findings, shape)) if note]


def craniocaudal_note(findings, slice_mm: float) -> str | None:
    """The reports' note on findings longer along the body axis than their axial long axis
    (None when there are none): Lung-RADS v2022 takes the axes in whatever plane shows the
    nodule's true size, and the axes here are axial.  The extent is counted conservatively, from
    the centre of the first slice the mask holds to that of the last ((n - 1) slices), so a small
    nodule on thick slices is not flagged for its slice thickness."""
    long = []
    for rank, f in enumerate(findings, start=1):
        if f.mask is None or not np.any(f.mask):
            continue
        slices = np.flatnonzero(f.mask.reshape(f.mask.shape[0], -1).any(1))
        extent = (slices[-1] - slices[0]) * float(slice_mm)
        if extent >= 1.3 * f.diameter_mm and extent - f.diameter_mm >= 3.0:
            long.append(f"{rank} ({extent:.0f} mm along the body axis, {f.diameter_mm:.1f} mm axial long axis)")
    if not long:
        return None
    return (f"finding{'s' if len(long) > 1 else ''} {'; '.join(long)} {'are' if len(long) > 1 else 'is'} longer "
            "craniocaudally than across: measure on a coronal or sagittal reformat, as Lung-RADS takes the "
            "plane that shows the true size (the category here is from the axial axes)")


def outline_note(findings) -> str | None:
    """The reports' note on small findings measured, at least in part, on the network's outline as
    drawn (None when there are none): that outline undersizes nodules under 8 mm, where the size
    categories 2, 3 and 4A meet (held-out phantoms, docs/detection.md).  A finding with no lung or
    no contrast around it keeps it (``postprocess.refine.refine_findings``), and so does every
    finding of a detector that does not refine."""
    ranks = [rank for rank, f in enumerate(findings, start=1) if small_on_network_outline(f)]
    if not ranks:
        return None
    one = len(ranks) == 1
    return (f"{'finding' if one else 'findings'} {', '.join(map(str, ranks))} {'is' if one else 'are'} measured "
            f"(at least in part) on {OUTLINES['network']}, not on the CT's half-maximum edge: under "
            f"{SMALL_OUTLINE_MM:g} mm that outline reads small ({DRAWN_EVIDENCE}), so the size category may be too "
            "low: measure on the image")


def small_on_network_outline(f: Finding) -> bool:
    """Whether ``f`` is under ``SMALL_OUTLINE_MM`` and measured, at least in part, on the network's
    outline as drawn: its size may read small (``outline_note``; the dock's table marks its mean
    diameter)."""
    return f.outline in ("network", "mixed") and f.mean_diameter_mm < SMALL_OUTLINE_MM


# docs/detection.md, "How the found nodules are measured": the shipped card's held-out figures
DRAWN_EVIDENCE = ("held-out phantoms, 4 nodules of 6-8 mm: median volume -57 % as drawn, -9 % on the half-maximum "
                  "edge; size category right for 1 of 4 as drawn, 3 of 4 on the edge")


SMALL_OUTLINE_MM = 8.0  # the network's outline undersizes nodules under this (docs/detection.md)
SUMMARY_TITLE = "# Lesion detection"  # how the summary begins: medai detect knows its own .md by it


def findings_markdown(findings: list[Finding], source: str = "", model: str = "", shape=None,
                      operating_point: float | None = None, fp_per_scan: float = 1.0) -> str:
    """The detection summary (``medai detect``'s .md); with ``shape`` (the scan's (z, y, x)) it
    notes the findings at the scan's first or last slice or at the side of its field of view
    (``edge_notes``); with ``operating_point``
    (the model's default score threshold, fitted for ``fp_per_scan`` false positives per
    validation scan) it says which findings reach it."""
    lines = [f"{SUMMARY_TITLE}: {source}".rstrip(": "), ""]
    if model:
        lines.append(f"Model: `{model}`. {len(findings)} finding(s), ranked by score.")
    if operating_point is not None and findings:
        above = sum(f.score >= operating_point for f in findings)
        lines += ["", f"{above} of them score at least {operating_point:.2f}, the model's operating point "
                  f"(fitted for at most {fp_per_scan:g} false positive(s) per scan on validation phantoms; "
                  "`medai screen` reports only those). The ones below it are candidates, most of them false."]
    lines += ["", f"> {LUNG_RADS_NOTE}.", ""]
    if not findings:
        lines.append("No findings above the score threshold.")
        return "\n".join(lines) + "\n"
    lines += ["| # | score | centre (z, y, x voxels) | long axis mm | mean diameter mm | volume mL | Lung-RADS size | "
              "attenuation: category |", "|---|---|---|---|---|---|---|---|"]
    for rank, f in enumerate(findings, start=1):
        # the slice as every report gives it (halves up), the row and column to the nearest
        c = ", ".join(map(str, [axial_slice(f.center_voxel), *(int(np.floor(v + 0.5)) for v in f.center_voxel[1:])]))
        lines.append(f"| {rank} | {f.score:.2f} | {c} | {f.diameter_mm:.1f} | {f.mean_diameter_mm:.1f} | "
                     f"{f.volume_ml:.3f} | {f.lung_rads} | {attenuation_cell(f)} |")
    notes = [*(edge_notes(findings, shape) if shape is not None else []), outline_note(findings)]
    lines += [line for note in notes if note for line in ("", f"Note: {note}.")]
    if any(f.attenuation for f in findings):
        lines += ["", f"{ATTENUATION_NOTE}."]
    return "\n".join(lines) + "\n"


def score_cell(f: Finding) -> str:
    """The score as tables show it: two decimals, or "reader" for a nodule the reader marked
    (no detector scored it)."""
    return "reader" if f.added_by_reader else f"{f.score:.2f}"


def attenuation_cell(f: Finding) -> str:
    """"part-solid (solid 5.1 mm): 3" for a report table; "?" when the attenuation was not read."""
    if not f.attenuation:
        return "?"
    solid = f" (solid {f.solid_diameter_mm:.1f} mm)" if f.attenuation == "part-solid" else ""
    return f"{f.attenuation}{solid}: {f.lung_rads_by_attenuation}"
