"""TorchScript models: a self-contained network file, with its card inside when we wrote it.

Files written by :func:`save_torchscript` carry the card as the extra file
``medai_card.json``; files exported from MONAI bundles carry the bundle metadata
(``metadata.json``, read by ``monai.data.load_net_with_metadata``) and, from
``monai.bundle.ckpt_export``, the bundle's inference config (``inference.json``), from which
spacing, orientation, intensity, window and activation are read as for a bundle folder
(``bundle.bundle_card_fields``).  Anything missing comes from the caller's keyword arguments
or from defaults (2D or 3D as the network's convolutions say, ``bundle.network_spatial_dims``,
else 3D; roi 96^3, or 256^2 in 2D; no resampling, no intensity preprocessing; softmax, or sigmoid
for a network with one output channel).  Metadata alone (``save_net_with_metadata``) also
gives the dimensions and window through the input's ``spatial_shape``.  A model card beside the
file that names it as its weights (and no network) is loaded by ``loading.load_from_card``,
which hands it here.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ModelError, reason_of
from .card import ModelCard
from .bundle import (_section, bundle_card_fields, bundle_config_parser, card_fields_from_metadata, check_task,
                     default_window, network_spatial_dims)

if TYPE_CHECKING:  # loading.py imports this module
    from .loading import LoadedModel

CARD_FILE = "medai_card.json"
METADATA_FILE = "metadata.json"  # written by monai.data.save_net_with_metadata
# ckpt_export stores each config under its file name with ".json" (older MONAI: without it).
CONFIG_FILES = ("inference.json", "inference")


def is_torchscript(path) -> bool:
    """Whether ``path`` is a TorchScript archive: those hold compiled code (``constants.pkl``,
    ``code/``), which ``torch.save`` archives never do."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:  # a damaged index: torch.load's own reading gives the "damaged" message
        return False


def _not_a_model(path: Path) -> ModelError:
    from .registry import run_file_message

    message = run_file_message(path)
    if message:  # a training run's last.pt: say which of its files is the model
        return ModelError(message)
    with open(path, "rb") as handle:
        zipped = handle.read(2) == b"PK"  # torch's archives are zips: a cut-off one has no readable index
    if not zipfile.is_zipfile(path) and not zipped:
        return ModelError(
            f"{path.name} is not a model file: expected a TorchScript model (.pt/.ts), a model card "
            "(.json) or a MONAI bundle folder"
        )
    from .loading import read_quietly  # here: loading imports this module

    state, why = read_quietly(path)
    if why is not None:  # cut off, or a pickled network: say which
        return ModelError(f"{path.name} is no TorchScript model: it {why}")
    if isinstance(state, dict):
        return ModelError(
            f"{path.name} holds only weights (a state dict), not a runnable network: load it through a "
            "model card (.json naming the network) or a MONAI bundle folder"
        )
    return ModelError(f"{path.name} is a PyTorch file but not a TorchScript model")


def load_torchscript(path, card: ModelCard | None = None, **card_fields) -> LoadedModel:
    """Load a TorchScript file; ``card`` or ``card_fields`` fill what the file does not say."""
    from .loading import LoadedModel

    path = Path(path)
    # Read the extra files directly: monai.data.load_net_with_metadata fails on files that
    # have no metadata.json (plain torch.jit.save output).
    extra = dict.fromkeys((METADATA_FILE, CARD_FILE, *CONFIG_FILES), "")
    try:
        network = torch.jit.load(str(path), map_location=torch.device("cpu"), _extra_files=extra)
    except Exception:
        raise _not_a_model(path) from None
    try:
        meta = json.loads(extra[METADATA_FILE] or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = {}
    if not isinstance(meta, dict):  # "[1]" is JSON but no metadata: read as none
        meta = {}
    if card is None and extra.get(CARD_FILE):
        card = ModelCard.from_json(extra[CARD_FILE].decode("utf-8"), source_dir=path.parent)
        for key, value in card_fields.items():
            setattr(card, key, value)
        card.validate()
    if card is None:
        if "task" not in card_fields:  # the caller may say what the file is
            check_task(meta, f"TorchScript file {path.name}")
        config = _embedded_config(extra)
        if config:
            found = _bundle_fields(config, meta, path, network)
        else:
            found = {**card_fields_from_metadata(meta), **_metadata_geometry(meta)}
        fields = {"name": meta.get("name") or path.stem, **found, **card_fields}
        if "spatial_dims" not in fields:  # a plain file: its convolutions say 2D or 3D, as a bundle's do
            dims = network_spatial_dims(network)
            if dims is not None:
                fields["spatial_dims"] = dims
                fields.setdefault("roi_size", default_window(dims))  # a 2D network runs slice by slice
        fields.setdefault("out_channels", _probe_out_channels(network, fields, path))
        card = ModelCard(**fields)  # one output channel: a sigmoid map (ModelCard's default output)
    card.extra.setdefault("source", "torchscript")
    return LoadedModel(card, network.eval())


def _metadata_geometry(meta: dict) -> dict:
    """``spatial_dims`` and the window from MONAI metadata's input ``spatial_shape``
    (``save_net_with_metadata``): two sizes are a 2D network, three a 3D one.  The sizes are
    in the network's own axis order; a TorchScript file says nothing of its orientation, so
    the card keeps the default axes (the arrays are fed as they are) and the window as given.
    Sizes written as expressions ("16*n") say only the number of dimensions; the window is
    then the default."""
    image = _section(_section(meta, "network_data_format"), "inputs").get("image")
    shape = image.get("spatial_shape") if isinstance(image, dict) else None
    if not isinstance(shape, (list, tuple)) or len(shape) not in (2, 3):
        return {}
    dims = len(shape)
    fields = {"spatial_dims": dims, "roi_size": default_window(dims)}
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        fields["roi_size"] = tuple(shape)
    return fields


def _embedded_config(extra: dict) -> dict | None:
    """The bundle inference config ckpt_export put in the file, or None."""
    for name in CONFIG_FILES:
        try:
            config = json.loads(extra[name] or "null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(config, dict):
            return config
    return None


def _bundle_fields(config: dict, meta: dict, path: Path, network) -> dict:
    """Card fields from the embedded bundle config, read as ``load_bundle`` reads a folder's
    (the file stands in for the network, so ``network_def`` is never built)."""
    parser = bundle_config_parser(meta, config, path.parent, path, f"TorchScript file {path.name}")
    fields = bundle_card_fields(parser, meta, f"TorchScript file {path.name}", network, source=path)
    fields["task"] = "segmentation"  # a box detector needs its bundle's detector, not an exported network
    return fields


def _probe_out_channels(network, fields, path: Path | None = None) -> int:
    """Run one small dummy window to learn how many channels the network returns."""
    dims = fields.get("spatial_dims", 3)
    # 32 voxels per axis suits networks that downsample up to 5 times, and stays cheap.
    # an axis left None (the whole image, a bundle roi_size <= 0) is probed at 32 too
    roi = tuple(min(int(r or 32), 32) for r in fields.get("roi_size", default_window(dims)))
    dummy = torch.zeros(1, fields.get("in_channels", 1), *roi)
    try:
        with torch.inference_mode():
            out = network.eval()(dummy)
    except Exception as exc:
        path = Path(path or "model.ts")
        raise ModelError(
            f"the TorchScript model {path.name} does not run on a {tuple(dummy.shape)} input ({reason_of(exc)}), "
            f"and the file does not say what it takes: write a model card beside it ({path.stem}.json with "
            f"\"weights\": \"{path.name}\" and its spatial_dims, in_channels, out_channels, roi_size and spacing; "
            "docs/inference.md), or export it with MONAI's metadata (monai.data.save_net_with_metadata, "
            "giving the input's num_channels and spatial_shape)"
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
