"""TorchScript models: a self-contained network file, with its card inside when we wrote it.

Files written by :func:`save_torchscript` carry the card as the extra file
``medai_card.json``; files exported from MONAI bundles carry the bundle metadata
(``metadata.json``, read by ``monai.data.load_net_with_metadata``).  Anything missing comes
from the caller's keyword arguments or from defaults (3D, roi 96^3, no resampling, no
intensity preprocessing, softmax).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import ModelError, reason_of
from .card import ModelCard
from .bundle import card_fields_from_metadata

CARD_FILE = "medai_card.json"
METADATA_FILE = "metadata.json"  # written by monai.data.save_net_with_metadata


def _not_a_model(path: Path) -> ModelError:
    if not zipfile.is_zipfile(path):
        return ModelError(
            f"{path.name} is not a model file: expected a TorchScript model (.pt/.ts), a model card "
            "(.json) or a MONAI bundle folder"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        state = None
    if isinstance(state, dict):
        return ModelError(
            f"{path.name} holds only weights (a state dict), not a runnable network: load it through a "
            "model card (.json naming the network) or a MONAI bundle folder"
        )
    return ModelError(f"{path.name} is a PyTorch file but not a TorchScript model")


def load_torchscript(path, card: ModelCard | None = None, **card_fields) -> "LoadedModel":  # noqa: F821
    """Load a TorchScript file; ``card`` or ``card_fields`` fill what the file does not say."""
    from .loading import LoadedModel

    path = Path(path)
    # Read the extra files directly: monai.data.load_net_with_metadata fails on files that
    # have no metadata.json (plain torch.jit.save output).
    extra = {METADATA_FILE: "", CARD_FILE: ""}
    try:
        network = torch.jit.load(str(path), map_location=torch.device("cpu"), _extra_files=extra)
    except Exception:
        raise _not_a_model(path) from None
    try:
        meta = json.loads(extra[METADATA_FILE] or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = {}
    if card is None and extra.get(CARD_FILE):
        card = ModelCard.from_json(extra[CARD_FILE].decode("utf-8"), source_dir=path.parent)
        for key, value in card_fields.items():
            setattr(card, key, value)
        card.validate()
    if card is None:
        fields = {"name": meta.get("name") or path.stem, **card_fields_from_metadata(meta), **card_fields}
        fields.setdefault("out_channels", _probe_out_channels(network, fields))
        card = ModelCard(**fields)
    card.extra.setdefault("source", "torchscript")
    return LoadedModel(card, network.eval())


def _probe_out_channels(network, fields) -> int:
    """Run one small dummy window to learn how many channels the network returns."""
    dims = fields.get("spatial_dims", 3)
    # 32 voxels per axis suits networks that downsample up to 5 times, and stays cheap.
    roi = tuple(min(int(r), 32) for r in fields.get("roi_size", (96,) * dims))
    dummy = torch.zeros(1, fields.get("in_channels", 1), *roi)
    try:
        with torch.inference_mode():
            out = network.eval()(dummy)
    except Exception as exc:
        raise ModelError(
            f"the TorchScript model does not run on a {tuple(dummy.shape)} input ({reason_of(exc)}); "
            "give in_channels/spatial_dims/roi_size"
        ) from None
    out = out[0] if isinstance(out, (list, tuple)) else out
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        raise ModelError(f"the TorchScript model returns {type(out).__name__}, not a (batch, channels, *size) "
                         "tensor: the plugin runs networks that return one image tensor (or a list of them)")
    return int(out.shape[1])


def save_torchscript(network: torch.nn.Module, card: ModelCard, path) -> Path:
    """Script ``network`` and save it with ``card`` inside (and MONAI's metadata.json)."""
    from monai.data import save_net_with_metadata

    path = Path(path)
    if not path.suffix:  # save_net_with_metadata adds .ts in that case
        path = path.with_suffix(".ts")
    with warnings.catch_warnings():  # torch 2.13 flags torch.jit.script as deprecated
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(network.eval())
    save_net_with_metadata(
        scripted,
        str(path),
        meta_values={"name": card.name},
        more_extra_files={CARD_FILE: card.to_json().encode("utf-8")},
    )
    return path
