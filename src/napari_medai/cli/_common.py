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


def check_writable(path, what: str, *, folder: bool = False) -> None:
    """Before the input is read or a model loads (a run used to fail only after it, with an
    errno): ``path`` (a file to write, or with ``folder`` a folder to write into) can be made.
    Missing folders are fine (the commands make them); the nearest one that exists must be a
    folder and take a new file.  ``what`` names the option in the message ("--out", "output")."""
    import os
    import tempfile
    from pathlib import Path

    from ..errors import InputError

    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder: name a folder")
    if not folder and path.is_dir():
        raise InputError(f"{what} {path} is a folder: name a file")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:  # "." and "/" end the walk
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} {path}: {existing} is a file, not a folder")
    try:  # a real write: root passes os.access anywhere, yet /proc or a read-only mount refuse files
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise InputError(f"{what} {path}: {existing} cannot be written") from None
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{what} {path} cannot be written")


def check_seeds(seeds, option: str = "--seeds") -> None:
    """Before any phantom is made: a FIRST STOP range that holds no seed (STOP <= FIRST) used to
    run for minutes and then fail on an empty list, or write NaN scores into a card."""
    from ..errors import InputError

    first, stop = seeds
    if stop <= first:
        raise InputError(f"{option} FIRST STOP needs STOP > FIRST (got {first} {stop})")


def add_training_device(p) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda, cuda:N; the shipped weights were trained with cpu")


def runtime(args):
    """(settings, progress callback) from the parsed options."""
    from ..inference import InferenceSettings

    settings = InferenceSettings(device=args.device, precision=args.precision, tta=args.tta)
    progress = None if args.quiet else ProgressBar(unit="window", leave=False, close_at_end=True)
    return settings, progress


class ProgressBar:
    """A ``progress(done, total)`` callback drawing a tqdm bar (nothing without tqdm).  The bar is
    made at the first step, so its rate and time left count the work, not what came before it
    (loading cases, say); a run resumed at step n starts the bar there."""

    def __init__(self, unit: str = "it", leave: bool = True, close_at_end: bool = False, mininterval: float = 0.1):
        self.options = dict(unit=unit, leave=leave, mininterval=mininterval)
        self.close_at_end, self.bar = close_at_end, None

    def __call__(self, done: int, total: int) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, initial=max(0, done - 1), **self.options)
        self.bar.update(done - self.bar.n)
        if self.close_at_end and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_install_name(name: str) -> None:
    """A built-in model's name becomes two file names: checked before hours of training."""
    import re

    from ..errors import InputError

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name.endswith((".pt", ".json")):
        raise InputError(f"--install-as {name!r}: use letters, digits, '.', '_' and '-' only (it names "
                         "the model's .pt and .json files), without a suffix")
