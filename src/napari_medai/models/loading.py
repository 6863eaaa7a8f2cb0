"""One entry point to get a runnable model: ``load_model(spec)``.

``spec`` may be a built-in model name, a model card (object or .json file), a MONAI bundle
folder, or a TorchScript file (.pt/.ts).
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .card import ModelCard, card_for_path
from .networks import build_network
from .registry import WRAPPER_PREFIXES, get_card, load_state_dict, run_file_message


@dataclass
class LoadedModel:
    card: ModelCard
    network: torch.nn.Module

    def __repr__(self):
        return f"LoadedModel({self.card.name!r}, {type(self.network).__name__})"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # torch colours parts of its messages for a terminal


def _plain(exc: BaseException) -> str:
    """An exception's text on one line, without terminal escape codes."""
    text = " ".join(line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip())
    return text or type(exc).__name__


def _is_network_class(dotted: str) -> bool:
    """Whether ``dotted`` names a torch network class of a module already imported (nothing is
    imported to find out: the name comes from an untrusted file)."""
    module, _, name = dotted.rpartition(".")
    obj = getattr(sys.modules.get(module), name, None)
    return isinstance(obj, type) and issubclass(obj, torch.nn.Module)


def unreadable_weights(path, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, as the end of a sentence naming the
    file ("model.pt " + this).  Weights are never unpickled as code: a pickled network is
    refused, not loaded."""
    text = _ANSI.sub("", str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:  # other weights_only failures ("Unsupported operand") are files that are no pickle at all
        name = found.group(1)
        if name and _is_network_class(name):
            return (f"holds a pickled network object ({name.rpartition('.')[2]}), not a state_dict: save "
                    "net.state_dict() (weights are read with weights_only=True, which runs no code from the file)")
        return (f"holds pickled Python objects ({name}) besides tensors, not only a "
                "state_dict: save net.state_dict() (weights are read with weights_only=True, which runs no code "
                "from the file)")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(2)
    except OSError:
        magic = b""
    if magic == b"PK" or magic[:1] == b"\x80":  # a torch.save zip archive, or a legacy pickle
        return f"is damaged or truncated: torch cannot read it ({_plain(exc)})"
    return f"is not a PyTorch weights file, or is damaged: torch cannot read it ({_plain(exc)})"


def _example(keys) -> str:
    return repr(sorted(keys)[0])


def weights_mismatch(network: torch.nn.Module, state, exc: BaseException | None = None) -> str:
    """What keeps ``state`` from loading into ``network``, in one sentence: how many keys are
    missing from the file, unexpected in it and of another size, with one example of each, and a
    hint when every key of the file carries an extra leading part (a Lightning module's
    "model.") without which the keys fit.  ``exc`` (load_state_dict's error) is the fallback when none differ."""
    if not isinstance(state, dict):
        return f"the file holds a {type(state).__name__}, not a state_dict (a dict of tensors)"
    expected = network.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    resized = {k for k in set(expected) & set(state)
               if getattr(state[k], "shape", None) is not None and tuple(state[k].shape) != tuple(expected[k].shape)}
    parts = []
    if missing:
        parts.append(f"{len(missing)} key(s) missing from the file (e.g. {_example(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) in it (e.g. {_example(unexpected)})")
    if resized:
        key = sorted(resized)[0]
        parts.append(f"{len(resized)} tensor(s) of another size (e.g. {key!r}: {list(state[key].shape)} in the file, "
                     f"{list(expected[key].shape)} in the network)")
    if not parts:
        return _plain(exc) if exc is not None else "load_state_dict refused them"
    sentence = ", ".join(parts)
    prefix = _common_prefix(state)
    if unexpected and prefix and {k[len(prefix):] for k in state} & set(expected):
        sentence += (f"; every key of the file has an extra leading {prefix!r} (a training wrapper's attribute, "
                     f"e.g. a Lightning module's), without which its keys match the network's: save the inner "
                     f"network's state_dict(), or remove {prefix!r} from the keys (only "
                     f"{' and '.join(map(repr, WRAPPER_PREFIXES))} are removed when loading)")
    return sentence


def _common_prefix(state: dict) -> str | None:
    """The first dotted part that every key of ``state`` starts with ("model."), or None."""
    heads = {k.split(".", 1)[0] + "." for k in state if isinstance(k, str) and "." in k}
    if len(heads) != 1 or not all(isinstance(k, str) and "." in k for k in state):
        return None
    return heads.pop()


def load_from_card(card: ModelCard) -> LoadedModel:
    """Build the card's network and load its verified weights.  A card whose weights file is
    a TorchScript network and that names no ``network`` describes that file (a card written
    beside a TorchScript model: its dimensions, window, channels, task)."""
    torchscript = _torchscript_weights(card)
    if torchscript is not None:
        from .torchscript import load_torchscript

        return load_torchscript(torchscript, card=card)
    network = build_network(card)
    state = load_state_dict(card)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"the weights of model '{card.name}' do not fit the network in its card: "
                         f"{weights_mismatch(network, state, exc)}") from None
    return LoadedModel(card, network.eval())


def _torchscript_weights(card: ModelCard) -> Path | None:
    """The card's weights file when it is a TorchScript network and the card names no network
    to build (its sha256, where given, checked as for a state dict)."""
    from .registry import sha256_of
    from .torchscript import is_torchscript

    path = card.weights_path()
    if card.network or path is None or not path.is_file():
        return None
    # the sha256 first: a damaged TorchScript file is no TorchScript, and was then built as a network
    # the card does not name ("needs a 'name'"), its sha256 never checked (an audit helper's finding)
    if card.sha256 and sha256_of(path) != card.sha256.lower():
        raise ModelError(f"the weights of model '{card.name}' ({path.name}) are corrupted or were replaced: "
                         "their sha256 does not match the model card")
    if not is_torchscript(path):
        raise ModelError(f"model '{card.name}' names no network, so its weights file {path.name} must be a "
                         f"TorchScript model, but it {_not_torchscript(path)}")
    return path


def _not_torchscript(path: Path) -> str:
    """Why a card's weights file is no TorchScript model, as the end of a sentence."""
    state, why = read_quietly(path)
    if why is not None:
        return why
    if isinstance(state, dict):
        return "holds only weights (a state dict): name the network they fit in the card's 'network'"
    return f"holds a {type(state).__name__}, not a network"


def read_quietly(path):
    """``torch.load(path, weights_only=True)`` without torch's warnings: (what it holds, None),
    or (None, why it cannot be read, as the end of a sentence naming the file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True), None
    except Exception as exc:
        return None, unreadable_weights(path, exc)


def load_model(spec, device=None) -> LoadedModel:
    """Load a model from a name, a card, a bundle folder or a TorchScript file."""
    if isinstance(spec, LoadedModel):
        model = spec
    elif isinstance(spec, ModelCard):
        model = load_from_card(spec)
    elif isinstance(spec, (str, Path)):
        model = _load_from_path_or_name(spec)
    else:
        raise ModelError(f"cannot load a model from a {type(spec).__name__}")
    if device is not None:
        model.network.to(device)
    model.network.eval()
    return model


def _load_from_path_or_name(spec) -> LoadedModel:
    path = Path(spec).expanduser()
    if path.is_dir():
        from .bundle import load_bundle

        return load_bundle(path)
    if path.is_file():
        try:
            card = card_for_path(path)
        except ModelError:  # a run's training.json is no card: name the run's model instead
            message = run_file_message(path)
            if message is None:
                raise
            raise ModelError(message) from None
        if card is not None:
            return load_from_card(card)
        from .torchscript import load_torchscript

        return load_torchscript(path)
    if isinstance(spec, str) and "/" not in spec and "\\" not in spec and not path.suffix:
        return load_from_card(get_card(spec))
    raise ModelError(f"model file or folder {spec} does not exist")

