"""Options shared by the model-running subcommands."""

from __future__ import annotations


def add_runtime_options(p) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "amp"],
                   help="auto: AMP on CUDA, bf16 on CPUs with native bf16, else fp32")
    p.add_argument("--tta", default="auto", choices=["auto", "off", "mirror"],
                   help="test-time mirroring: mirror averages the output over the volume and its mirror "
                        "images along each axis (4x the time); auto: as the model card says")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def check_outputs(source, *outputs) -> None:
    """Before any model runs: each NIfTI output (None: not asked for) ends in .nii or .nii.gz,
    is not the input itself (writing there would destroy the scan) and has a file of its own."""
    from pathlib import Path

    from ..errors import InputError
    from ..io.nifti import is_nifti_path

    seen = {Path(source).resolve()}
    for out in (Path(o) for o in outputs if o):
        if not is_nifti_path(out):
            raise InputError(f"{out.name}: an output image must end in .nii or .nii.gz")
        if out.resolve() == Path(source).resolve():
            raise InputError(f"{out} is the input itself: writing there would replace the scan; name another file")
        if out.resolve() in seen:
            raise InputError(f"{out} is named twice: each output needs a file of its own")
        seen.add(out.resolve())


def add_training_device(p) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda, cuda:N; the shipped weights were trained with cpu")


def runtime(args):
    """(settings, progress callback) from the parsed options."""
    from ..inference import InferenceSettings

    settings = InferenceSettings(device=args.device, precision=args.precision, tta=args.tta)
    progress = None
    if not args.quiet:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            bar = {}

            def progress(done, total):
                if "b" not in bar:
                    bar["b"] = tqdm(total=total, unit="window", leave=False)
                bar["b"].update(done - bar["b"].n)
                if done >= total:
                    bar["b"].close()
    return settings, progress
