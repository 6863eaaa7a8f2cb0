"""Options shared by the model-running subcommands."""

from __future__ import annotations


def typed_command(args) -> list[str]:
    """``medai`` and the arguments ``main()`` parsed: the command a model card records, so that
    it can be run again."""
    import sys

    return ["medai", *getattr(args, "argv", sys.argv[1:])]


def add_runtime_options(p, quiet_help: str = "no progress bar") -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "amp"],
                   help="auto: AMP on CUDA, bf16 on CPUs with native bf16, else fp32")
    p.add_argument("--tta", default="auto", choices=["auto", "off", "mirror-lesions", "mirror"],
                   help="test-time mirroring: mirror averages the output over the volume and its mirror "
                        "images along each axis (4x the time); mirror-lesions does so only where the plain "
                        "run sees a possible lesion (models naming lesion classes); auto: as the model card says")
    p.add_argument("--quiet", action="store_true", help=quiet_help)


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


def check_findings_out(path, option: str = "--out") -> None:
    """A findings file's name (``medai detect``, ``medai measure``): one ending in .json or .csv,
    and not a ``.json`` that exists and is no findings list (a JSON array, as ``findings_to_json``
    writes): ``scan.json`` beside ``scan.nii.gz`` is the scan's BIDS sidecar, which the reader
    takes the modality from, and ``--out scan.json`` replaced it silently."""
    import json
    from pathlib import Path

    from ..errors import InputError

    path = Path(path)
    if path.suffix.lower() not in (".json", ".csv"):  # ".json" alone is a hidden name without a suffix
        raise InputError(f"{option} must be a file name ending in .json or .csv (e.g. findings.json), got {path.name}")
    if path.suffix.lower() != ".json" or not path.is_file():
        return
    try:
        ours = isinstance(json.loads(path.read_text(encoding="utf-8")), list)
    except (OSError, UnicodeDecodeError, ValueError):
        ours = False
    if not ours:
        raise InputError(f"{option} {path} exists and is not a findings list (a scan's BIDS sidecar, or another "
                         "tool's file), and would be replaced; choose another name")


def check_seeds(seeds, option: str = "--seeds") -> None:
    """Before any phantom is made: a FIRST STOP range that holds no seed (STOP <= FIRST) used to
    run for minutes and then fail on an empty list, or write NaN scores into a card."""
    from ..errors import InputError

    first, stop = seeds
    if stop <= first:
        raise InputError(f"{option} FIRST STOP needs STOP > FIRST (got {first} {stop})")


def add_training_device(p, note: str = "the shipped weights were trained with cpu") -> None:
    p.add_argument("--device", default="auto", help=f"auto (CUDA when present), cpu, cuda, cuda:N; {note}")


# --device of the commands that fit a card's settings by running its networks on validation phantoms
FIT_DEVICE_NOTE = "where the networks run on the validation phantoms"


def check_device(preference: str, spatial_dims: int = 3) -> None:
    """Before any phantom is made or a model loads: ``--device`` names a device this machine has
    ("cuda" without a GPU used to fail only when the first network ran, minutes in) for networks
    of ``spatial_dims`` (the 2D denoisers also run on Apple's "mps")."""
    from ..inference.device import select_device

    select_device(preference, spatial_dims)


def check_not_labels(vol, source, command: str) -> None:
    """A label map (its header or values say so) is no image to run a model on: the models' own
    check blamed its values ("looks like MR, or a CT saved without its rescale")."""
    from ..errors import InputError

    if vol.is_labels:
        raise InputError(f"{source} is a label map (a mask), not an image: medai {command} runs its model on the "
                         "scan itself")


def models_for_file(vol, source, *models) -> tuple:
    """``models`` as they are, or, where the file ``vol`` says it is MR, each loaded and checked
    against that (``check_file_modality``: a CT model is refused with one sentence naming
    ``source``); a loaded model is not loaded again by the API."""
    if vol.modality != "MR":
        return models
    from ..inference.modality import check_stated_modality
    from ..models import load_model

    loaded = tuple(load_model(m) for m in models)
    check_stated_modality(vol.modality, (model.card for model in loaded), vol.data, source)
    return loaded


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
        if total != self.bar.total:  # a run mirrored only at lesions learns its size after the first pass
            self.bar.total = total
            self.bar.refresh()
        self.bar.update(done - self.bar.n)
        if self.close_at_end and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# How the shipped cards that share another model's weights file are fitted again after those
# weights change (scripts/train_models.sh); a card not listed here is named with its own command.
REFIT_COMMANDS = {
    "chest-ct-lung-nodule-argmax": ("medai train lesion-threshold --model chest-ct-lung-nodule --thresholds 0.5 "
                                    "--try-refinement --try-confidence --install-as chest-ct-lung-nodule-argmax "
                                    "--replace",),
    "lung-nodule-detection": ("medai train detection --from chest-ct-lung-nodule",
                              "medai train operating-point --model lung-nodule-detection"),
}


def add_replace_option(p) -> None:
    p.add_argument("--replace", action="store_true",
                   help="let --install-as write over a built-in model of that name that is already installed "
                        "(cards sharing its weights file stop loading until fitted again; the run names them)")


def check_install_as(args, replace: bool | None = None, weights: bool = True) -> None:
    """``--install-as NAME``, when given, checked before any training or model loading (see
    ``check_install_name``); ``replace`` defaults to ``args.replace``."""
    if args.install_as:
        check_install_name(args.install_as, replace=args.replace if replace is None else replace, weights=weights)


def check_install_name(name: str, replace: bool = False, weights: bool = True) -> None:
    """A built-in model's name becomes two file names: checked before hours of training.

    A name already installed is refused unless ``replace`` (--install-as used to write over any
    model silently, the shipped one included).  With ``replace`` and ``weights`` (the command
    writes ``<name>.pt``), the other cards that use that weights file are named with how to fit
    them again: their sha256 no longer matches once it is replaced, so they fail to load."""
    import re

    from ..errors import InputError
    from ..models import registry

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name.endswith((".pt", ".json")):
        raise InputError(f"--install-as {name!r}: use letters, digits, '.', '_' and '-' only (it names "
                         "the model's .pt and .json files), without a suffix")
    folder = registry.WEIGHTS_DIR  # read now: tests point it elsewhere
    written = [f"{name}.json"] + ([f"{name}.pt"] if weights else [])
    if not any((folder / f).exists() for f in written):
        return
    if not replace:
        raise InputError(f"--install-as {name}: a built-in model of that name is already installed in {folder}; "
                         "choose another name, or add --replace to write over it")
    if not weights:
        return
    sharing = registry.cards_using_weights(f"{name}.pt", folder, but=name)
    if sharing:
        lines = [f"--replace: {len(sharing)} other installed card(s) use {name}.pt and will fail to load "
                 "(sha256 mismatch) until fitted again:"]
        for card in sharing:
            commands = _refit_commands(card)
            lines.append(f"  {card.name}: " + (" && ".join(commands) if commands else
                                               "fit it again the way it was made"))
        print("\n".join(lines), flush=True)


def _refit_commands(card) -> tuple:
    """How to fit ``card`` again on new weights: the known command(s) of a shipped card, else the
    last step of the command its card records (a lesion-threshold variant's `...; then medai ...`)."""
    if card.name in REFIT_COMMANDS:
        return REFIT_COMMANDS[card.name]
    last = (card.train_command or "").split("; then ")[-1].strip()
    if not last.startswith("medai "):
        return ()
    if "--install-as" in last and "--replace" not in last:  # its own card is installed by now
        last += " --replace"
    return (last,)
