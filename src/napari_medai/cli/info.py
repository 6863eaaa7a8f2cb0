"""``medai info PATH``: what a volume holds and where it lies, without opening napari."""

from __future__ import annotations

PERCENTILES = (1, 5, 50, 95, 99)
MAX_LISTED_LABELS = 16


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "info",
        help="print shape, spacing, orientation, modality and intensities of a volume",
        description="Describe a NIfTI file or a DICOM series (folder or one of its files).",
    )
    parser.add_argument("path", help="a .nii/.nii.gz file, a DICOM folder, or a DICOM file")
    parser.set_defaults(func=run)


def run(args) -> int:
    for line in describe(args.path):
        print(line)
    return 0


def describe(path) -> list[str]:
    import numpy as np

    from ..io import read_volume
    from ..io.orientation import orientation_codes
    from ..io.volume import nifti_affine_from_napari

    vol = read_volume(path, allow_slice=True)  # a one-slice file medai phantom writes and medai denoise reads
    data = vol.data
    meta = vol.metadata
    spacing = " x ".join(f"{s:g}" for s in vol.spacing)
    extent = " x ".join(f"{s * n:g}" for s, n in zip(vol.spacing, data.shape))
    lines = [
        f"file:        {path}",
        f"format:      {meta.get('format', '?')}",
        f"kind:        {'labels' if vol.is_labels else 'image'}",
        f"modality:    {vol.modality}",
        f"shape:       {' x '.join(map(str, data.shape))} (z, y, x)",
        f"spacing:     {spacing} mm (z, y, x)",
        f"extent:      {extent} mm",
        f"origin:      ({', '.join(f'{v:g}' for v in vol.origin)}) mm (S, P, L)",
        f"orientation: {orientation_codes(nifti_affine_from_napari(vol.affine))} as loaded"
        f" (i, j, k); {meta.get('source_orientation', '?')} in the file"
        + ("; oblique" if vol.is_oblique else ""),
        f"dtype:       {data.dtype}",
    ]
    values = data
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.all():
            n_nan = int(np.isnan(data).sum())
            lines.append(f"not finite:  {n_nan} NaN and {int(data.size - finite.sum()) - n_nan} infinite voxel(s) "
                         "(left out of the figures below; the models refuse such an image)")
            values = data[finite]
    if values.size == 0:
        lines.append("range:       no finite voxel")
        return lines
    lines.append(f"range:       {values.min():g} to {values.max():g}")
    if vol.is_labels:
        values, counts = np.unique(values, return_counts=True)
        listed = ", ".join(f"{v}: {c}" for v, c in list(zip(values, counts))[:MAX_LISTED_LABELS])
        more = f" (+{len(values) - MAX_LISTED_LABELS} more)" if len(values) > MAX_LISTED_LABELS else ""
        lines.append(f"labels:      {listed}{more} voxels")
    else:
        pct = np.percentile(values, PERCENTILES)
        lines.append(
            "percentiles: " + ", ".join(f"p{p}={v:g}" for p, v in zip(PERCENTILES, pct))
        )
    return lines
