"""Built-in models: ``weights/<name>.json`` (card) next to ``weights/<name>.pt`` (state_dict).

Training code writes a model with :func:`save_builtin`; users list and load them by name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import ModelError
from .card import ModelCard, load_card, save_card

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_models(task: str | None = None, folder=None) -> list[ModelCard]:
    """Cards of the built-in models (installed or not), sorted by name."""
    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    cards = [load_card(p) for p in sorted(folder.glob("*.json"))]
    return [c for c in cards if task is None or c.task == task]


def get_card(name: str, folder=None) -> ModelCard:
    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    path = folder / f"{name}.json"
    if not path.is_file():
        known = ", ".join(c.name for c in list_models(folder=folder)) or "none"
        raise ModelError(f"there is no built-in model called '{name}' (built-in models: {known})")
    return load_card(path)


def fitted_card_path(model) -> Path:
    """The card file a fit of ``model`` writes its result back into: a built-in name's card in
    the weights folder; a card .json (or a .pt with its card beside it) that file itself.  A run's
    card used to be written into the weights folder under its card name: a bogus built-in whose
    weights were not there, or, for a run folder named like a shipped model, that model's card
    replaced without --replace.  A model with no card file (a bundle, TorchScript): ModelError."""
    from .card import card_for_path

    path = Path(str(model)).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".json":
            return path
        if card_for_path(path) is not None:
            return path.with_suffix(".json")
    elif isinstance(model, str) and "/" not in model and "\\" not in model and not path.suffix:
        return WEIGHTS_DIR / f"{model}.json"
    raise ModelError(f"{model} has no model card file to write the fit into: give a built-in model's name "
                     "or a card (.json) path")


def in_weights_dir(card: ModelCard) -> bool:
    """Whether ``card``'s weights file lies in the built-in weights folder (a built-in card can
    name it by file name alone)."""
    weights = card.weights_path()
    return weights is not None and weights.resolve().parent == Path(WEIGHTS_DIR).resolve()


def load_state_dict(card: ModelCard) -> dict:
    """The card's weights, after checking that they are there and intact."""
    path = card.weights_path()
    if path is None:
        raise ModelError(f"model '{card.name}' has no weights file in its card")
    if not path.is_file():
        raise ModelError(f"model '{card.name}' is not installed yet (weights file {path.name} is missing)")
    if card.sha256 and sha256_of(path) != card.sha256.lower():
        raise ModelError(
            f"the weights of model '{card.name}' ({path.name}) are corrupted or were replaced: "
            "their sha256 does not match the model card; reinstall the model"
        )
    try:
        import torch  # here, not at import: listing models (widget start-up) must not load torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from .loading import unreadable_weights  # here: loading imports this module

        raise ModelError(f"model '{card.name}': its weights file {path.name} {unreadable_weights(path, exc)}") from None
    state = unwrap_state_dict(state)
    if not isinstance(state, dict):
        raise ModelError(f"{path.name} does not hold a state dict (got {type(state).__name__})")
    return state


# Keys under which training checkpoints keep the weights ({"model": ..., "optimizer": ...});
# MONAI's CheckpointSaver writes "model" or "network", Lightning and others "state_dict", and
# this plugin's trainer (a run's last.pt) "net", so a card can name a run's last.pt.
CHECKPOINT_KEYS = ("state_dict", "model", "network", "net")
# Prefixes that wrappers add to every key: DataParallel/DistributedDataParallel ("module."),
# torch.compile ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_state_dict(state, expected_keys=None):
    """The bare state dict inside a checkpoint: the one rule for cards and bundles.

    A wrapper prefix is removed only when every key carries it and, given the network's own
    ``expected_keys``, the network does not itself expect it (a network whose only child is
    called ``module``)."""
    for key in CHECKPOINT_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        return state
    expected = set(expected_keys or ())
    for prefix in WRAPPER_PREFIXES:
        wrapped = all(isinstance(k, str) and k.startswith(prefix) for k in state)
        if wrapped and not (expected and set(state) <= expected):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def cards_using_weights(weights_name: str, folder=None, but: str | None = None) -> list[ModelCard]:
    """The cards in ``folder`` whose weights file is ``weights_name`` (other than the card ``but``):
    the shipped chest-ct-lung-nodule.pt also serves chest-ct-lung-nodule-argmax and
    lung-nodule-detection, which stop loading (sha256 mismatch) when it is replaced."""
    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    found = []
    for path in sorted(folder.glob("*.json")):
        if path.stem == but:
            continue
        try:
            card = load_card(path)
        except Exception:  # noqa: BLE001 - a card that does not load is no model to protect
            continue
        if card.weights == weights_name and card.name != but:
            found.append(card)
    return found


def save_builtin(card: ModelCard, network, folder=None, replace: bool = False) -> Path:
    """Write ``<name>.pt`` and ``<name>.json`` (with the sha256) into ``folder``; return the card path.

    A ``<name>.pt`` that another card also uses is written over only with ``replace`` (that card's
    sha256 stops matching: it fails to load until fitted again).  Whether ``<name>`` itself may be
    replaced is the caller's question, asked before training (cli._common.check_install_name)."""
    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{card.name}.pt"
    sharing = cards_using_weights(weights.name, folder, but=card.name) if weights.exists() else []
    if sharing and not replace:
        raise ModelError(f"{weights.name} is also the weights file of {', '.join(c.name for c in sharing)}, "
                         "which would fail to load if it were replaced: install under another name, or "
                         "replace it on purpose (--replace) and fit those cards again")
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    import torch

    from ..io.atomic import all_or_nothing, pending, replace_atomically

    # each file whole or not at all (a kill mid-write left cut-off weights under the old card), and
    # both or neither: a full disk at the card left the new weights under the old card's sha256
    with all_or_nothing():
        replace_atomically(weights, lambda tmp: torch.save(state, tmp))
        card.weights = weights.name
        card.sha256 = sha256_of(pending(weights))
        card.source_dir = folder
        path = save_card(card, folder / f"{card.name}.json")
    return path


# What `medai train segmentation` writes into its --out folder besides the model (best.pt, best.json)
RUN_FILES = ("last.pt", "training.json")


def run_file_message(path) -> str | None:
    """For a training run's folder, its last.pt or its training.json given as a model: the
    sentence naming the run's best.pt (or best.json) to pass instead; None for anything else.
    Those used to be refused as "not a MONAI bundle", "holds only weights" or "unknown card
    fields", which never said which file of the run is the model."""
    path = Path(path).expanduser()
    run = path if path.is_dir() else path.parent
    if not (path.is_dir() or path.name in RUN_FILES) or not any((run / f).is_file() for f in RUN_FILES):
        return None
    what = {"last.pt": "resumable state", "training.json": "log"}.get(path.name, "folder")
    return (f"{path} is a training run's {what}, not a model: pass {run / 'best.pt'} (or its card "
            f"{run / 'best.json'}), or for the final epoch's weights a card whose 'weights' is last.pt")
