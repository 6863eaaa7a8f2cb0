"""``medai measure IN --at Z Y X [--at ...] --out measured.json|.csv``: nodules measured from points.

The command-line side of the widgets' *Add missed nodule*: each point is grown into a nodule on
the CT alone (``postprocess.seeded.nodule_at``, no model) and measured like a detector's finding.
Points are given as voxel indices of the volume as napari-medai reads it (``--at``: the
``center_voxel`` of its findings, and what napari's status bar shows), as the NIfTI file's own
voxel index (``--at-file I J K``: what ITK-SNAP, FSLeyes or nibabel show for that file, and the
``center_file_voxel`` of the findings files), or as DICOM patient coordinates in mm (``--at-lps
X Y Z``: left, posterior, superior, as DICOM and LIDC-style annotation lists give them).  A point that holds no nodule is reported with its reason and
the others go on; the command then exits 1 (and writes nothing when no point was measured, so
an earlier result stays).  An image that is not CT in HU, or a label map, is refused.  The output's ``center_mm`` is in napari-medai's
world order (S, P, L), as for every finding: the reverse of ``--at-lps``'s (x, y, z).
"""

from __future__ import annotations

import sys
from pathlib import Path


# --max-diameter's range: Lung-RADS nodules are under 30 mm (the default); up to 100 mm takes in a
# lung mass, and beyond that the region grown from a point is a lobe, not a lesion
MIN_DIAMETER_MM, MAX_DIAMETER_MM = 1.0, 100.0


def add_parser(sub) -> None:
    p = sub.add_parser("measure", help="measure nodules from points (a reader's marks) on a chest CT, no model")
    p.add_argument("input", help="NIfTI file or DICOM folder (CT in HU)")
    p.add_argument("--at", nargs=3, type=float, action="append", default=[], metavar=("Z", "Y", "X"),
                   help="a point in voxels of the volume as napari-medai reads it (axial slice first); repeat")
    p.add_argument("--at-file", nargs=3, type=float, action="append", default=[], metavar=("I", "J", "K"),
                   help="a point as the voxel index of the NIfTI file itself, in its own axis order (what other "
                        "viewers of the file show); repeat")
    p.add_argument("--at-lps", nargs=3, type=float, action="append", default=[], metavar=("X", "Y", "Z"),
                   help="a point in DICOM patient coordinates, mm (x left, y posterior, z superior); repeat")
    p.add_argument("--out", required=True, help="measured nodules: .json or .csv")
    p.add_argument("--max-diameter", type=float, default=None,
                   help=f"largest nodule to measure, mm, {MIN_DIAMETER_MM:g} to {MAX_DIAMETER_MM:g} (a larger "
                        "structure, or one running on beyond it, is refused); default 30, and 50 for a nodule "
                        "whose core reads ground glass (Lung-RADS: 3 from 30 mm)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..errors import InputError
    from ..io import read_volume
    from ..io.atomic import write_text_atomic
    from ..io.orientation import display_voxel, file_voxel
    from ..io.validate import check_volume
    from ..postprocess.report import file_grid, findings_to_csv, findings_to_json
    from ..postprocess.seeded import nodule_at
    from ._common import check_findings_out, check_writable

    out = Path(args.out)
    check_findings_out(out)
    if not args.at and not args.at_lps and not args.at_file:
        raise InputError("give at least one point: --at Z Y X (voxels), --at-file I J K (the file's own voxel "
                         "index) or --at-lps X Y Z (mm)")
    # given: the limit for every nodule; not given: nodule_at's own (30 mm, 50 for a ground-glass core)
    limits = {} if args.max_diameter is None else {"max_diameter_mm": args.max_diameter,
                                                   "ground_glass_max_mm": args.max_diameter}
    if args.max_diameter is not None and not MIN_DIAMETER_MM <= args.max_diameter <= MAX_DIAMETER_MM:  # NaN fails too
        raise InputError(f"--max-diameter must be a size in mm from {MIN_DIAMETER_MM:g} to {MAX_DIAMETER_MM:g} "
                         f"(the largest nodule or mass to measure), got {args.max_diameter:g}")
    check_writable(out, "--out")
    vol = read_volume(args.input)
    data = check_volume(vol.data, vol.spacing, need_3d=True, what="CT")
    _check_ct(vol, data, args.input)
    inverse = np.linalg.inv(vol.affine)
    # napari-medai's world axes are (S, P, L): DICOM's (x, y, z) = (L, P, S) reversed
    points = [("voxel", tuple(p), np.asarray(p, dtype=float)) for p in args.at]
    total, refused = len(args.at) + len(args.at_file) + len(args.at_lps), 0
    if args.at_file:
        codes = vol.metadata.get("nifti_orientation")
        if not codes:  # a DICOM series has no one file whose index could be meant
            raise InputError(f"--at-file takes a NIfTI file's own voxel index; {Path(args.input).name} is not a "
                             "NIfTI file: use --at or --at-lps")
        # the file's own grid, in its I J K: a point off it was reported in the display frame's (z, y, x)
        corners = (file_voxel((0, 0, 0), data.shape, codes), file_voxel(np.subtract(data.shape, 1), data.shape, codes))
        file_shape = tuple(int(round(abs(b - a))) + 1 for a, b in zip(*corners))
        for p in args.at_file:
            if all(-0.5 < v < n - 0.5 for v, n in zip(p, file_shape)):
                points.append(("file", tuple(p), np.asarray(display_voxel(p, data.shape, codes))))
            else:
                refused += 1
                print(f"medai measure: --at-file {' '.join(f'{v:g}' for v in p)}: the point lies outside the file's "
                      f"voxel grid (I J K from 0 to {' '.join(str(n - 1) for n in file_shape)})", file=sys.stderr)
    points += [("lps", tuple(p), inverse[:3, :3] @ np.asarray(p[::-1], dtype=float) + inverse[:3, 3])
               for p in args.at_lps]
    found = []
    for kind, given, voxel in points:
        option = {"voxel": "--at", "file": "--at-file", "lps": "--at-lps"}[kind]
        where = f"{option} {' '.join(f'{v:g}' for v in given)}"
        try:
            f = nodule_at(data, vol.spacing, voxel, vol.affine, **limits)
        except InputError as exc:
            refused += 1
            print(f"medai measure: {where}: {exc}", file=sys.stderr)
            continue
        f.label = len(found) + 1
        found.append(f)
        print(f"{where}: centre {[round(c, 1) for c in f.center_voxel]} (voxels), long axis {f.diameter_mm:.1f} mm, "
              f"mean {f.mean_diameter_mm:.1f} mm, {f.volume_ml:.3f} mL, Lung-RADS {f.lung_rads} by size, "
              f"{f.attenuation}: {f.lung_rads_by_attenuation or f.lung_rads}")
    if not found:  # an earlier run's file there stays as it was (a mistyped point used to replace it with [])
        print(f"medai measure: none of the {total} point(s) could be measured: nothing written to {out}",
              file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = file_grid(data.shape, vol.metadata)
    write_text_atomic(out, findings_to_json(found, grid=grid) if out.suffix.lower() == ".json"
                      else findings_to_csv(found, grid=grid))
    print(f"{len(found)} of {total} point(s) measured, written to {out}")
    return 1 if refused else 0


def _check_ct(vol, data, source) -> None:
    """A label map, or an image that is not CT in HU, is refused by the rule the CT models apply
    (inference.modality.check_modality): nodule_at would say "no lung around the point"."""
    from types import SimpleNamespace

    from ..errors import InputError, ModelError
    from ..inference.modality import check_modality

    if vol.is_labels:
        raise InputError(f"{source} is a label map (a mask), not a CT: medai measure grows nodules on the CT "
                         "in Hounsfield units")
    try:
        check_modality(SimpleNamespace(name="medai measure", modality="CT"), data)
    except ModelError:
        lo, hi = float(data.min()), float(data.max())
        raise InputError(f"medai measure reads CT in Hounsfield units (air -1000, lung about -850), but the values "
                         f"of {source} (from {lo:g} to {hi:g}) are not on that scale: it looks like MR, a CT saved "
                         "without its rescale to HU, or one rescaled (HU/1000, HU x 10); give the CT in HU") from None
