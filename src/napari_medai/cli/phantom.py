"""``medai phantom --seed S --out DIR``: write synthetic chest CTs with ground truth.

For each seed S, S+1, ... (``--count``) it writes ``caseSSSS_image.nii.gz`` (HU),
``caseSSSS_label.nii.gz`` (label table in docs/phantom.md), ``caseSSSS_nodules.json``
and, with ``--low-dose PHOTONS``, ``caseSSSS_lowdose.nii.gz``.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "phantom",
        help="generate synthetic chest CTs with labels and nodule lists",
        description="Generate procedural chest CT phantoms (NIfTI image + labels + nodules.json).",
    )
    p.add_argument("--seed", type=int, required=True, help="seed of the first case")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--count", type=int, default=1, help="number of cases (seeds S, S+1, ...)")
    p.add_argument("--low-dose", type=float, default=None, metavar="PHOTONS",
                   help="also write a low-dose image simulated with PHOTONS incident photons per ray")
    p.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256), metavar=("Z", "Y", "X"))
    p.add_argument("--spacing", type=float, nargs=3, default=(2.5, 0.8, 0.8), metavar=("Z", "Y", "X"),
                   help="voxel size in mm; Z is also the slice thickness")
    p.add_argument("--nodules", type=int, default=None, help="nodules per case, 0 to 20 (default: 0-4 at random)")
    p.set_defaults(func=run)


def case_name(seed: int) -> str:
    return f"case{seed:04d}"


def run(args) -> int:
    import json
    import math
    from pathlib import Path

    from ..errors import InputError
    from ..io import write_volume
    from ..io.atomic import all_or_nothing, write_text_atomic
    from ..phantoms import make_chest_ct
    from ..phantoms.chest import MAX_NODULES, check_phantom_args
    from ._common import check_writable

    if args.count < 1:
        raise InputError(f"--count must be at least 1, got {args.count}")
    if args.seed < 0:
        raise InputError(f"--seed must be 0 or more, got {args.seed}")
    # in the options' words, before the folder is made (the generator named its Python arguments, and
    # called infinity "below 1")
    if args.nodules is not None and not 0 <= args.nodules <= MAX_NODULES:
        raise InputError(f"--nodules must be from 0 to {MAX_NODULES}, got {args.nodules}")
    if args.low_dose is not None and not (math.isfinite(args.low_dose) and args.low_dose >= 1):
        raise InputError(f"--low-dose must be a finite number of photons per ray, at least 1, got {args.low_dose:g}")
    try:  # shape and spacing too, before the folder is made (it was left empty; an audit helper)
        check_phantom_args(args.seed, args.shape, args.spacing, args.nodules, args.low_dose)
    except InputError as exc:
        said = str(exc).replace("shape must", "--shape must").replace("voxel spacing", "--spacing")
        raise InputError(said.replace(" (check the layer's scale)", "")) from None  # no layer on the command line
    check_writable(args.out, "--out", folder=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seed, args.seed + args.count):
        ph = make_chest_ct(seed, shape=tuple(args.shape), spacing=tuple(args.spacing),
                           n_nodules=args.nodules, low_dose_photons=args.low_dose)
        name = case_name(seed)
        # a case's files all or none (a full disk left a new label map beside an earlier image); the
        # cases before it stay written, each whole
        with all_or_nothing():
            write_volume(ph.labels_volume(), out / f"{name}_label.nii.gz")
            if ph.low_dose is not None:
                write_volume(ph.low_dose_volume(), out / f"{name}_lowdose.nii.gz")
            write_text_atomic(out / f"{name}_nodules.json", json.dumps(ph.nodules, indent=1))
            write_volume(ph.to_volume(), out / f"{name}_image.nii.gz")
        print(f"{name}: {len(ph.nodules)} nodule(s) -> {out / (name + '_image.nii.gz')}")
    return 0
