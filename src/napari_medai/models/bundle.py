"""Load a local MONAI bundle folder as a model with a card.

Only the pieces the engine needs are parsed: ``network_def`` (built through
``monai.bundle.ConfigParser``), ``models/model.pt`` (a state dict read with
``weights_only=True``, unwrapped as ``registry.unwrap_state_dict`` does, or a TorchScript
network used as it is) and the geometry/intensity facts found in ``preprocessing``,
``inferer`` and ``postprocessing`` (:func:`bundle_card_fields`, also used for TorchScript
files that carry their bundle's config).  The bundle's own workflow (data loading, saving)
is never run.

Detection bundles (metadata ``task`` mentioning detection, or an output described as boxes)
get ``task="detection"`` and ``extra["method"] = "boxes"``; their ``detector`` (a
RetinaNetDetector wrapping ``network_def``, configured by ``detector_ops``) becomes the
network, run by ``models/detection.py``.

Bundle configs are Python expressions ("$..." entries) evaluated on parsing: a bundle is
trusted code, and loading one says so.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ModelError
from .card import ModelCard

if TYPE_CHECKING:  # loading.py imports this module
    from .loading import LoadedModel

log = logging.getLogger(__name__)

TRUST_MESSAGE = (
    "MONAI bundle configs can execute Python code: load bundles only from sources you trust ({})"
)
# Colours for classes whose metadata gives none (background first, then distinct hues).
PALETTE = ["#000000", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4",
           "#46f0f0", "#f032e6", "#bcf60c", "#fabebe", "#008080"]


class BundleTrustWarning(UserWarning):
    """Emitted whenever a bundle's configs are parsed."""


def _config_file(configs: Path, stem: str) -> Path | None:
    for suffix in (".json", ".yaml", ".yml"):
        if (configs / f"{stem}{suffix}").is_file():
            return configs / f"{stem}{suffix}"
    return None


def classes_from_channel_def(channel_def: dict | None) -> list[dict[str, Any]]:
    if not channel_def or not isinstance(channel_def, dict):
        return []
    try:
        items = sorted(((int(k), str(v)) for k, v in channel_def.items()), key=lambda kv: kv[0])
    except (TypeError, ValueError):
        raise ModelError(f"the bundle's channel_def must map channel numbers to names, got {channel_def!r}") from None
    return [{"index": i, "name": n, "color": PALETTE[i % len(PALETTE)]} for i, n in items]


def sigmoid_classes(classes: list[dict[str, Any]], out_channels: int) -> list[dict[str, Any]]:
    """Classes of a sigmoid (multi-label) output as label values: channel k is label k + 1 and
    label 0 is background, the label map ``api.first_segmentation`` draws.  A ``channel_def``
    that numbers the channels 0..C-1 (``{"0": "spleen"}``) is shifted; one that already gives
    labels (``{"1": "spleen"}``) only gains the background, and one that calls class 0
    "background" is left alone."""
    by_index = {c["index"]: str(c["name"]).lower() for c in classes}
    if sorted(by_index) == list(range(out_channels)) and by_index[0] != "background":
        classes = [{**c, "index": c["index"] + 1, "color": PALETTE[(c["index"] + 1) % len(PALETTE)]}
                   for c in classes]
    if all(c["index"] != 0 for c in classes):
        classes = [{"index": 0, "name": "background", "color": PALETTE[0]}] + classes
    return classes


def card_fields_from_metadata(meta: dict, output: str | None = None, defaults: dict | None = None) -> dict[str, Any]:
    """Channels, class names and modality from a bundle's ``network_data_format``.

    ``output`` is the bundle's activation when known: a segmentation with a sigmoid output,
    or with one output channel (necessarily independent), names its classes by label
    (see :func:`sigmoid_classes`).  ``defaults`` holds fields the metadata may override."""
    def section(parent, key) -> dict:  # a part of metadata.json that is not a mapping counts as absent
        value = parent.get(key) if isinstance(parent, dict) else None
        return value if isinstance(value, dict) else {}

    fmt = section(meta, "network_data_format")
    image = section(section(fmt, "inputs"), "image")
    pred = section(section(fmt, "outputs"), "pred")
    fields: dict[str, Any] = dict(defaults or {})  # e.g. channels read from network_def
    if isinstance(image.get("num_channels"), int):
        fields["in_channels"] = image["num_channels"]
    if isinstance(pred.get("num_channels"), int):
        fields["out_channels"] = pred["num_channels"]
    classes = classes_from_channel_def(pred.get("channel_def"))
    out = fields.get("out_channels")
    if classes and out and bundle_task(meta) == "segmentation" and (output == "sigmoid" or out == 1):
        classes = sigmoid_classes(classes, out)
    if classes:
        fields["classes"] = classes
    modality = str(image.get("modality", "")).upper()
    fields["modality"] = {"CT": "CT", "MR": "MR", "MRI": "MR"}.get(modality, "any")
    if meta.get("description"):
        fields["description"] = str(meta["description"])
    return fields


def bundle_task(meta: dict) -> str:
    """"detection" for box-detection bundles (metadata ``task`` mentions detection, or an
    output is described as boxes), else "segmentation"."""
    if "detect" in str(meta.get("task", "")).lower():
        return "detection"
    outputs = (meta.get("network_data_format") or {}).get("outputs") or {}
    for key, spec in outputs.items():
        described = [str(key)] + ([str(spec.get("type", "")), str(spec.get("format", ""))]
                                  if isinstance(spec, dict) else [])
        if any("box" in text.lower() for text in described):
            return "detection"
    return "segmentation"


def _detector(parser, network, folder: Path):
    """A detection bundle's ``detector`` (e.g. RetinaNetDetector around ``network_def``),
    configured by its ``detector_ops``; the bare network when the bundle defines none."""
    if "detector" not in parser:
        return network
    try:
        detector = parser.get_parsed_content("detector")
        if "detector_ops" in parser:  # set_box_selector_parameters, set_sliding_window_inferer, ...
            parser.get_parsed_content("detector_ops")
    except Exception as exc:
        raise ModelError(f"cannot build the detector of bundle {folder.name}: {exc}") from None
    if not isinstance(detector, torch.nn.Module):
        raise ModelError(f"bundle {folder.name}: 'detector' did not build a torch network")
    return detector


def _flatten(transform) -> list:
    """The transforms inside (nested) Compose objects, in order."""
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple)):
        return [t for item in inner for t in _flatten(item)]
    return [transform]


def _preprocessing_facts(transforms: list) -> dict[str, Any]:
    """Spacing (network axis order), orientation and intensity from instantiated transforms."""
    from monai import transforms as mt

    facts: dict[str, Any] = {}
    for t in transforms:
        if isinstance(t, (mt.Spacingd, mt.Spacing)):
            spacing = t.spacing_transform if isinstance(t, mt.Spacingd) else t
            facts["pixdim"] = [float(v) for v in spacing.pixdim]
        elif isinstance(t, (mt.Orientationd, mt.Orientation)):
            orient = t.ornt_transform if isinstance(t, mt.Orientationd) else t
            if orient.axcodes:
                facts["axcodes"] = str(orient.axcodes)
        elif isinstance(t, (mt.ScaleIntensityRanged, mt.ScaleIntensityRange)):
            s = t.scaler if isinstance(t, mt.ScaleIntensityRanged) else t
            facts["intensity"] = {"kind": "ct_window", "a_min": float(s.a_min), "a_max": float(s.a_max),
                                  "b_min": float(s.b_min), "b_max": float(s.b_max), "clip": bool(s.clip)}
        elif isinstance(t, (mt.ScaleIntensityRangePercentilesd, mt.ScaleIntensityRangePercentiles)):
            s = t.scaler if isinstance(t, mt.ScaleIntensityRangePercentilesd) else t
            facts["intensity"] = {"kind": "percentile", "lower": float(s.lower), "upper": float(s.upper),
                                  "b_min": float(s.b_min), "b_max": float(s.b_max), "clip": bool(s.clip)}
        elif isinstance(t, (mt.NormalizeIntensityd, mt.NormalizeIntensity)):
            n = t.normalizer if isinstance(t, mt.NormalizeIntensityd) else t
            # nonzero (MR: statistics of the head, not of the air around it) changes the result
            facts["intensity"] = {"kind": "zscore", "nonzero": bool(n.nonzero), "channel_wise": bool(n.channel_wise)}
    return facts


def _output_activation(postprocessing: list, out_channels: int | None) -> str:
    from monai import transforms as mt

    for t in postprocessing:
        if isinstance(t, (mt.Activationsd, mt.Activations)):
            # Both keep their flags on themselves (Activationsd one per key); Activationsd's
            # ``converter`` is a bare Activations() whose flags are always False.
            if any(_as_tuple(t.softmax)):
                return "softmax"
            if any(_as_tuple(t.sigmoid)):
                return "sigmoid"
    return "softmax" if (out_channels or 2) > 1 else "sigmoid"


def _as_tuple(value):
    return value if isinstance(value, (list, tuple)) else (value,)


def _parsed(parser, key: str):
    """Parsed content of an optional config entry; None when absent or unparsable."""
    try:  # "network_def#x" where network_def is an expression string fails on the test itself
        if key not in parser:
            return None
        with warnings.catch_warnings():  # deprecation chatter of transforms we only inspect
            warnings.simplefilter("ignore")
            return parser.get_parsed_content(key)
    except Exception as exc:  # a section we only read facts from must not stop loading
        log.info("bundle entry %r could not be parsed: %s", key, exc)
        return None


def _per_axis(values, n: int, what: str, *, pad: bool = False) -> list:
    """``values`` as ``n`` numbers, as MONAI reads them: one number for every axis, and (with
    ``pad``, as ``Spacingd``'s pixdim) a short sequence padded with its last value."""
    import numpy as np

    values = np.ravel(np.asarray(values)).tolist()  # a number, a list, a tuple or an array
    if len(values) == 1:
        values = values * n
    elif pad and 0 < len(values) < n:
        values = values + [values[-1]] * (n - len(values))
    if len(values) < n:
        raise ModelError(f"the bundle's {what} has {len(values)} values for a {n}D network: {values}")
    return values[:n]


def _to_zyx(values, axcodes: str):
    """Reorder per-axis values from the network's axis order into the project's (z, y, x)."""
    from ..inference.layout import axes_permutation

    perm, _ = axes_permutation(axcodes)
    out = [None] * 3
    for net_axis, our_axis in enumerate(perm):
        out[our_axis] = values[net_axis]
    return tuple(out)


def _bundle_spacing(pixdim, axcodes: str):
    """Spacingd's pixdim as the card's (z, y, x) spacing.  In MONAI a pixdim <= 0 keeps the
    input's spacing on that axis: the card leaves that axis None (the engine takes it from
    the input), and None for the whole spacing when every axis does (no resampling)."""
    values = [float(v) for v in _per_axis(pixdim, 3, "pixdim", pad=True)]
    if all(v <= 0 for v in values):
        return None
    return _to_zyx([v if v > 0 else None for v in values], axcodes)


def _bundle_roi(roi, spatial_dims: int, axcodes: str) -> tuple:
    """The inferer's roi_size as the card's window: (z, y, x), or (y, x) for 2D networks,
    which see each slice as it is.  A size <= 0 (MONAI: the whole image on that axis) is
    None, resolved by the engine once it knows the image."""
    if roi is None:
        return (96, 96, 96) if spatial_dims == 3 else (256, 256)
    values = _per_axis(roi, spatial_dims, "roi_size")
    values = [None if isinstance(v, (int, float)) and v <= 0 else v for v in values]
    return _to_zyx(values, axcodes) if spatial_dims == 3 else tuple(values)


def _network_channels(parser) -> dict[str, int]:
    """``in_channels``/``out_channels`` written in ``network_def``: used where metadata.json
    gives no ``num_channels``."""
    found = {}
    for key in ("in_channels", "out_channels"):
        value = _parsed(parser, f"network_def#{key}")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found[key] = value
    return found


def bundle_card_fields(parser, meta: dict, name: str, network=None) -> dict[str, Any]:
    """Card fields from a bundle's parsed inference config and its metadata: spacing,
    orientation and intensity from ``preprocessing``, the window from ``inferer``, the
    activation from ``postprocessing``, channels and classes from the metadata (``network_def``
    where it says nothing).  Shared by bundle folders and TorchScript files exported from them."""
    preprocessing, postprocessing = _parsed(parser, "preprocessing"), _parsed(parser, "postprocessing")
    facts = _preprocessing_facts(_flatten(preprocessing) if preprocessing is not None else [])
    channels = _network_channels(parser)
    out_channels = card_fields_from_metadata(meta, defaults=channels).get("out_channels")
    output = _output_activation(_flatten(postprocessing) if postprocessing is not None else [], out_channels)
    spatial_dims = int(_parsed(parser, "network_def#spatial_dims") or getattr(network, "dimensions", None) or 3)
    # MONAI arrays are (x, y, z) in the Orientationd codes (RAS when none is given); the card
    # speaks the project's (z, y, x) and the engine re-orients the volume for the network.
    axcodes = facts.get("axcodes", "RAS") if spatial_dims == 3 else "SPL"
    spacing = _bundle_spacing(facts["pixdim"], axcodes) if "pixdim" in facts and spatial_dims == 3 else None
    roi = _bundle_roi(getattr(_parsed(parser, "inferer"), "roi_size", None), spatial_dims, axcodes)
    return {**card_fields_from_metadata(meta, output, defaults=channels), "task": bundle_task(meta),
            "spatial_dims": spatial_dims, "spacing": spacing, "roi_size": roi,
            "intensity": facts.get("intensity", {"kind": "none"}), "output": output, "extra": {"axes": axcodes}}


def bundle_config_parser(meta, config, root, source, what: str):
    """A ConfigParser over a bundle's metadata and inference config (file paths or dicts),
    ``bundle_root`` set to ``root``.  Parsing runs the config's "$..." expressions, so it
    warns first, naming ``source`` (the path loaded); ``what`` names it in errors."""
    from monai.bundle import ConfigParser

    message = TRUST_MESSAGE.format(source)
    warnings.warn(message, BundleTrustWarning, stacklevel=3)
    log.warning(message)
    parser = ConfigParser()
    try:
        parser.read_meta(meta)
        parser.read_config(config)
    except Exception as exc:
        raise ModelError(f"cannot read the configs of {what}: {exc}") from None
    parser["bundle_root"] = str(root)
    return parser


def _weights_file(folder: Path) -> Path:
    """models/model.pt (state dict or TorchScript), or the models/model.ts bundles also ship."""
    for name in ("model.pt", "model.ts"):
        if (folder / "models" / name).is_file():
            return folder / "models" / name
    raise ModelError(f"bundle {folder.name} has no weights (models/model.pt is missing)")


def _network_def(parser, folder: Path) -> torch.nn.Module:
    if "network_def" not in parser:
        raise ModelError(f"bundle {folder.name} has no 'network_def' in its inference config")
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as exc:
        raise ModelError(f"cannot build the network of bundle {folder.name}: {exc}") from None
    if not isinstance(network, torch.nn.Module):
        raise ModelError(f"bundle {folder.name}: network_def did not build a torch network")
    return network


def _bundle_network(parser, folder: Path, weights: Path) -> torch.nn.Module:
    """The bundle's network with its weights.  A TorchScript file is the network itself (a
    state-dict load would fail on it with a hint to weights_only=False); otherwise
    ``network_def`` is built and given the state dict, unwrapped by the registry's rule."""
    from ..errors import reason_of
    from .registry import unwrap_state_dict
    from .torchscript import is_torchscript

    if is_torchscript(weights):
        try:
            return torch.jit.load(str(weights), map_location=torch.device("cpu"))
        except Exception as exc:
            raise ModelError(f"cannot load the TorchScript model of bundle {folder.name}: {reason_of(exc)}") from None
    network = _network_def(parser, folder)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        network.load_state_dict(unwrap_state_dict(state, network.state_dict().keys()))
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load the weights of bundle {folder.name}: {first_line}") from None
    return network


def load_bundle(folder) -> LoadedModel:
    from .loading import LoadedModel

    folder = Path(folder)
    configs = folder / "configs"
    inference_file = _config_file(configs, "inference")
    metadata_file = _config_file(configs, "metadata")
    if inference_file is None or metadata_file is None:
        raise ModelError(
            f"{folder.name} is not a MONAI bundle: configs/metadata.json and configs/inference.json are needed"
        )
    parser = bundle_config_parser(str(metadata_file), str(inference_file), folder, folder, f"bundle {folder.name}")
    weights = _weights_file(folder)
    network = _bundle_network(parser, folder, weights)
    meta = parser.get(parser.meta_key) or {}
    fields = bundle_card_fields(parser, meta, folder.name, network)
    fields["extra"].update({"source": "monai_bundle", "bundle": str(folder), "version": meta.get("version")})
    if fields["task"] == "detection":  # RetinaNet-style: boxes, labels, scores (models/detection.py)
        network = _detector(parser, network, folder)
        fields["extra"]["method"] = "boxes"
    card = ModelCard(name=str(meta.get("name") or folder.name), weights=str(weights), **fields)
    return LoadedModel(card, network.eval())
