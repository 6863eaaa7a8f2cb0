"""Load a local MONAI bundle folder as a model with a card.

Only the pieces the engine needs are parsed: ``network_def`` (built through
``monai.bundle.ConfigParser``), ``models/model.pt`` (read with ``weights_only=True``) and the
geometry/intensity facts found in ``preprocessing``, ``inferer`` and ``postprocessing``.
The bundle's own workflow (data loading, saving) is never run.

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
from typing import Any

import torch

from ..errors import ModelError
from .card import ModelCard

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


def card_fields_from_metadata(meta: dict) -> dict[str, Any]:
    """Channels, class names and modality from a bundle's ``network_data_format``."""
    def section(parent, key) -> dict:  # a part of metadata.json that is not a mapping counts as absent
        value = parent.get(key) if isinstance(parent, dict) else None
        return value if isinstance(value, dict) else {}

    fmt = section(meta, "network_data_format")
    image = section(section(fmt, "inputs"), "image")
    pred = section(section(fmt, "outputs"), "pred")
    fields: dict[str, Any] = {}
    if isinstance(image.get("num_channels"), int):
        fields["in_channels"] = image["num_channels"]
    if isinstance(pred.get("num_channels"), int):
        fields["out_channels"] = pred["num_channels"]
    classes = classes_from_channel_def(pred.get("channel_def"))
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
            facts["intensity"] = {"kind": "zscore"}
    return facts


def _output_activation(postprocessing: list, out_channels: int | None) -> str:
    from monai import transforms as mt

    for t in postprocessing:
        if isinstance(t, (mt.Activationsd, mt.Activations)):
            conv = t.converter if isinstance(t, mt.Activationsd) else t
            if any(_as_tuple(conv.softmax)):
                return "softmax"
            if any(_as_tuple(conv.sigmoid)):
                return "sigmoid"
    return "softmax" if (out_channels or 2) > 1 else "sigmoid"


def _as_tuple(value):
    return value if isinstance(value, (list, tuple)) else (value,)


def _parsed(parser, key: str):
    """Parsed content of an optional config entry; None when absent or unparsable."""
    if key not in parser:
        return None
    try:
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


def load_bundle(folder) -> "LoadedModel":  # noqa: F821 (import below avoids a cycle)
    from monai.bundle import ConfigParser

    from .loading import LoadedModel

    folder = Path(folder)
    configs = folder / "configs"
    inference_file = _config_file(configs, "inference")
    metadata_file = _config_file(configs, "metadata")
    if inference_file is None or metadata_file is None:
        raise ModelError(
            f"{folder.name} is not a MONAI bundle: configs/metadata.json and configs/inference.json are needed"
        )
    message = TRUST_MESSAGE.format(folder)
    warnings.warn(message, BundleTrustWarning, stacklevel=2)
    log.warning(message)

    parser = ConfigParser()
    try:
        parser.read_meta(str(metadata_file))
        parser.read_config(str(inference_file))
    except Exception as exc:
        raise ModelError(f"cannot read the configs of bundle {folder.name}: {exc}") from None
    parser["bundle_root"] = str(folder)
    if "network_def" not in parser:
        raise ModelError(f"bundle {folder.name} has no 'network_def' in {inference_file.name}")
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as exc:
        raise ModelError(f"cannot build the network of bundle {folder.name}: {exc}") from None
    if not isinstance(network, torch.nn.Module):
        raise ModelError(f"bundle {folder.name}: network_def did not build a torch network")

    weights = folder / "models" / "model.pt"
    if not weights.is_file():
        raise ModelError(f"bundle {folder.name} has no weights (models/model.pt is missing)")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        network.load_state_dict(state)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load the weights of bundle {folder.name}: {first_line}") from None

    meta = parser.get(parser.meta_key) or {}
    preprocessing = _parsed(parser, "preprocessing")
    facts = _preprocessing_facts(_flatten(preprocessing) if preprocessing is not None else [])
    inferer = _parsed(parser, "inferer")
    postprocessing = _parsed(parser, "postprocessing")

    fields = card_fields_from_metadata(meta)
    task = bundle_task(meta)
    extra = {"source": "monai_bundle", "bundle": str(folder), "version": meta.get("version")}
    if task == "detection":  # RetinaNet-style: boxes, labels, scores (models/detection.py)
        network = _detector(parser, network, folder)
        extra["method"] = "boxes"
    spatial_dims = _parsed(parser, "network_def#spatial_dims") or getattr(network, "dimensions", None) or 3
    spatial_dims = int(spatial_dims)
    # MONAI arrays are (x, y, z) in the Orientationd codes (RAS when none is given); the card
    # speaks the project's (z, y, x) and the engine re-orients the volume for the network.
    axcodes = facts.get("axcodes", "RAS") if spatial_dims == 3 else "SPL"
    roi = getattr(inferer, "roi_size", None)
    if spatial_dims == 3:
        roi = _to_zyx(_per_axis(roi, 3, "roi_size"), axcodes) if roi is not None else (96, 96, 96)
    else:  # 2D networks see each (y, x) slice as it is
        roi = tuple(_per_axis(roi, 2, "roi_size")) if roi is not None else (256, 256)
    card = ModelCard(
        name=str(meta.get("name") or folder.name),
        task=task,
        spatial_dims=spatial_dims,
        spacing=(_to_zyx(_per_axis(facts["pixdim"], 3, "pixdim", pad=True), axcodes)
                 if "pixdim" in facts and spatial_dims == 3 else None),
        roi_size=roi,
        intensity=facts.get("intensity", {"kind": "none"}),
        output=_output_activation(_flatten(postprocessing) if postprocessing is not None else [],
                                  fields.get("out_channels")),
        weights=str(weights),
        extra={"axes": axcodes, **extra},
        **fields,
    )
    return LoadedModel(card, network.eval())
