"""``medai denoise IN OUT [--model NAME] [--modality CT|MR] [--strength S]``.

The output keeps the input's grid and affine; the model comes from the image's modality
(read from the file, or ``--modality``) unless ``--model`` names one.  The denoisers are 2D
(slice-wise), so a single slice is taken too: a 2D NIfTI, a NIfTI one slice thick, a DICOM
series of one slice; its output has the input file's shape.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("denoise", help="denoise a CT or MR volume, or a single slice, with a built-in model")
    p.add_argument("input", help="NIfTI file or DICOM folder")
    p.add_argument("output", help="output .nii.gz")
    p.add_argument("--model", default=None, help="model name or card (default: from the modality)")
    p.add_argument("--modality", default=None, type=str.upper, choices=["CT", "MR"],
                   help="override the modality found in the file")
    p.add_argument("--strength", type=float, default=1.0, help="0 = input unchanged, 1 = full denoising")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or amp")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def _progress_printer(unit: str):
    import sys

    def show(done: int, total: int) -> None:  # on stderr, as the other commands' progress bars: stdout stays a log
        print(f"\rdenoising: {unit} {done}/{total}", end="\n" if done == total else "", flush=True, file=sys.stderr)

    return show


def run(args) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from ..denoising import denoise, guessed_mr_note, load_denoiser
    from ..errors import InputError
    from ..io import read_volume, write_volume
    from ._common import check_device, check_not_labels, check_outputs, check_writable

    check_outputs(args.input, args.output)
    check_writable(args.output, "output")
    check_device(args.device, spatial_dims=2)  # the denoisers are 2D; before reading: --strength 0 returned before the device was looked at
    volume = read_volume(args.input, allow_slice=True)  # denoise() runs 2D models only
    check_not_labels(volume, args.input, "denoise")  # it read "looks like MR" (an audit helper)
    modality = args.modality or (volume.modality if volume.modality in ("CT", "MR") else None)
    if args.model is None and modality is None:
        raise InputError(f"the modality of {args.input} is unknown: pass --modality CT or MR, or --model")
    data, spacing = volume.data, volume.spacing
    # loaded once here (denoise() takes it as loaded): its card names the progress unit
    model = load_denoiser(args.model) if args.model is not None else load_denoiser(modality=modality)
    guessed = guessed_mr_note({**volume.metadata, "modality": volume.modality}, args.input, model.card.name)
    if args.model is None and args.modality is None and guessed:
        print(f"note: {guessed} (--modality, --model)", file=sys.stderr)
    if args.model is not None and modality is not None:  # a CT denoiser named for a file that says MR
        from ..inference.modality import check_file_modality

        said_by = f"--modality {args.modality}" if args.modality else "its header"
        check_file_modality(model.card, modality, np.squeeze(data), args.input, said_by,
                            override=None if args.modality else "--modality")
    # 2D and 2.5D models count slices; a 3D one counts passes (the whole volume, or its blocks)
    unit = "pass" if model.card.spatial_dims == 3 else "slice"
    # a single slice lies along any axis (a sagittal slice is (z, y, 1)): denoise() takes it as (1, y, x)
    thin = data.shape.index(1) if 1 in data.shape else 0
    out = denoise(np.moveaxis(data, thin, 0), [spacing[thin], *np.delete(spacing, thin)], model=model,
                  modality=modality, strength=args.strength,
                  settings={"device": args.device, "precision": args.precision},
                  progress=None if args.quiet else _progress_printer(unit))
    out = np.moveaxis(out, 0, thin)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)  # as medai detect does
    # on the input file's grid, with the modality --modality stated (the file's own otherwise)
    path = write_volume(volume.derived(out, modality=args.modality), args.output)
    print(f"wrote {path}")
    return 0
