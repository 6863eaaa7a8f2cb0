"""One entry point to get a runnable model: ``load_model(spec)``.

``spec`` may be a built-in model name, a model card (object or .json file), a MONAI bundle
folder, or a TorchScript file (.pt/.ts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .card import ModelCard, card_for_path
from .networks import build_network
from .registry import get_card, load_state_dict, run_file_message


@dataclass
class LoadedModel:
    card: ModelCard
    network: torch.nn.Module

    def __repr__(self):
        return f"LoadedModel({self.card.name!r}, {type(self.network).__name__})"


def load_from_card(card: ModelCard) -> LoadedModel:
    """Build the card's network and load its verified weights."""
    network = build_network(card)
    state = load_state_dict(card)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ModelError(
            f"the weights of model '{card.name}' do not fit the network in its card ({first_line})"
        ) from None
    return LoadedModel(card, network.eval())


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

