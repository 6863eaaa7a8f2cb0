"""``medai segment IN OUT``: label a volume and save the labels with the input's geometry."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    from ._common import add_runtime_options

    p = sub.add_parser("segment", help="segment a volume (default: lungs and nodules in chest CT)")
    p.add_argument("input", help="NIfTI file or DICOM folder")
    p.add_argument("output", help="labels .nii.gz (written with the input's affine)")
    p.add_argument("--model", default="chest-ct-lung-nodule",
                   help="built-in model name, MONAI bundle folder or TorchScript file")
    p.add_argument("--min-lesion-mm3", type=float, default=None, help="drop lesion components smaller than this")
    p.add_argument("--probability", metavar="FILE", help="also save the lesion probability map (.nii.gz)")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from pathlib import Path

    from ..api import segment
    from ..io import read_volume, write_volume
    from ..io.atomic import all_or_nothing
    from ._common import check_not_labels, check_outputs, check_writable, models_for_file, runtime

    check_outputs(args.input, args.output, args.probability)
    check_writable(args.output, "output")
    if args.probability:
        check_writable(args.probability, "--probability")
    vol = read_volume(args.input)
    check_not_labels(vol, args.input, "segment")
    (model,) = models_for_file(vol, args.input, args.model)  # a file that says MR, a CT model: refused
    settings, progress = runtime(args)
    result = segment(vol.data, vol.spacing, model=model, settings=settings, progress=progress,
                     min_lesion_mm3=args.min_lesion_mm3)
    for out in (args.output, args.probability):
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)  # as medai detect does
    missing = bool(args.probability) and result.lesion_probability is None
    # both or neither: new labels stayed beside an earlier probability map when the map's write failed;
    # on the input file's grid, voxel for voxel (Volume.derived)
    with all_or_nothing():
        write_volume(vol.derived(result.labels, is_labels=True), args.output, classes=result.classes)
        if args.probability and not missing:
            write_volume(vol.derived(result.lesion_probability.astype(np.float32), modality="unknown"),
                         args.probability)
    print(f"{'class':<14}{'voxels':>12}{'volume mL':>12}")
    for row in result.volumes:
        print(f"{row['name']:<14}{row['voxels']:>12}{row['volume_ml']:>12.2f}")
    if result.lesion_outlines:
        # which outline each lesion got: its volume on a follow-up compares only with the same kind
        print(f"{'lesion at (z, y, x) voxel':<28}{'volume mL':>10}{'peak p':>8}  outline")
        for row in result.lesion_outlines:
            centre = ", ".join(f"{c:g}" for c in row["center_voxel"])
            peak = "" if row["peak_probability"] is None else f"{row['peak_probability']:.3f}"
            print(f"{'(' + centre + ')':<28}{row['volume_ml']:>10.4f}{peak:>8}  {row['outline']}")
    print(f"labels written to {args.output}")
    if missing:  # asked for, and not made: say so, and exit 1 (done in part)
        print(f"medai segment: the model has no lesion class, so no probability map was written to "
              f"{args.probability}", file=sys.stderr)
        return 1
    return 0
