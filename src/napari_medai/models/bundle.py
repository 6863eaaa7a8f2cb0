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

Bundle configs are Python expressions ("$..." entries) evaluated on parsing, and the bundle's
own ``scripts/`` package is importable while it loads (as MONAI's runner makes it): a bundle
is trusted code, and loading one says so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
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
    "MONAI bundle configs (and a bundle's scripts/ folder) can execute Python code: load bundles only "
    "from sources you trust ({})"
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


def _check_output_range(scaler, transform: str, name) -> None:
    """A bundle's b_min/b_max of None (MONAI then skips the rescale) has no counterpart in the
    card's window: refused in one sentence (float(None) was a TypeError)."""
    if getattr(scaler, "b_min", 0) is None or getattr(scaler, "b_max", 0) is None:
        raise ModelError(f"{name}: its {transform} leaves b_min/b_max unset, which the card's intensity window "
                         "cannot state; give both numbers")


def _section(parent, key) -> dict:
    """``parent[key]``; a part of metadata.json that is not a mapping counts as absent."""
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else {}


def card_fields_from_metadata(meta: dict, output: str | None = None, defaults: dict | None = None) -> dict[str, Any]:
    """Channels, class names and modality from a bundle's ``network_data_format``.

    ``output`` is the bundle's activation when known: a segmentation with a sigmoid output,
    or with one output channel (necessarily independent), names its classes by label
    (see :func:`sigmoid_classes`).  ``defaults`` holds fields the metadata may override."""
    fmt = _section(meta, "network_data_format")
    image = _section(_section(fmt, "inputs"), "image")
    pred = _section(_section(fmt, "outputs"), "pred")
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
    outputs = _section(_section(meta, "network_data_format"), "outputs")  # a list there is no mapping
    for key, spec in outputs.items():
        described = [str(key)] + ([str(spec.get("type", "")), str(spec.get("format", ""))]
                                  if isinstance(spec, dict) else [])
        if any("box" in text.lower() for text in described):
            return "detection"
    return "segmentation"


# Metadata tasks that are neither segmentation nor detection: such a bundle's output is no class
# probability map, and reading it as one gives labels (or findings) that mean nothing.
_OTHER_TASKS = (("denois", "denoising"), ("classif", "classification"), ("regist", "registration"),
                ("generat", "image generation"), ("synthes", "image synthesis"), ("reconstruct", "reconstruction"),
                ("super-resolution", "super-resolution"))


def check_task(meta: dict, name: str) -> None:
    """Refuse a bundle (or a file exported from one) whose metadata ``task`` is another kind of
    model than a segmentation or a detection, before anything is built."""
    task = str(meta.get("task") or "") if isinstance(meta, dict) else ""
    lower = task.lower()
    if "segment" in lower or "detect" in lower:
        return
    for stem, kind in _OTHER_TASKS:
        if stem in lower:
            hint = ("; a denoiser is brought as a model card instead: a .json with \"task\": \"denoising\", its "
                    "network and its weights (a state-dict .pt beside it), as docs/denoising.md describes"
                    if kind == "denoising" else "")
            raise ModelError(f"{name}: its metadata task is {task!r}, a {kind} model, and the plugin reads MONAI "
                             f"bundles (and files exported from them) only as segmentation models or box "
                             f"detectors{hint}")


def _check_channels(meta: dict, channels: dict[str, int], name: str) -> None:
    """metadata.json's channels (``num_channels``, the names in the output's ``channel_def``)
    against ``network_def``'s ``in_channels``/``out_channels``, when the bundle loads: a
    disagreement was found only once every window had run, and blamed on the card."""
    fmt = _section(meta, "network_data_format")
    for key, group, entry, side in (("in_channels", "inputs", "image", "input"),
                                    ("out_channels", "outputs", "pred", "output")):
        built = channels.get(key)
        if built is None:
            continue
        spec = _section(_section(fmt, group), entry)
        said = spec.get("num_channels")
        if isinstance(said, int) and not isinstance(said, bool) and said != built:
            raise ModelError(f"{name}: metadata.json gives {said} {side} channel(s) (network_data_format {group}."
                             f"{entry}.num_channels) but network_def's {key} is {built}; the two must agree")
        names = spec.get("channel_def")
        if key == "out_channels" and isinstance(names, dict) and len(names) > built:
            # a one-channel (sigmoid) output may name its background as label 0 besides its class
            background = any(str(v).strip().lower() == "background" for v in names.values())
            if not (background and len(names) == built + 1):
                raise ModelError(f"{name}: metadata.json names {len(names)} output channels (network_data_format "
                                 f"outputs.pred.channel_def) but network_def's out_channels is {built}; the two "
                                 "must agree")


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


def _preprocessing_facts(transforms: list, name: str = "the bundle") -> dict[str, Any]:
    """Spacing (network axis order), orientation, intensity and DivisiblePad's k from
    instantiated transforms.  Intensity transforms are kept in order (several become a
    "chain" the engine applies in turn); one of monai.transforms.intensity that the plugin
    cannot reproduce stops loading, since skipping it would feed the network other values."""
    from monai import transforms as mt

    facts: dict[str, Any] = {}
    intensity: list[dict[str, Any]] = []
    for t in transforms:
        if isinstance(t, (mt.Spacingd, mt.Spacing)):
            spacing = t.spacing_transform if isinstance(t, mt.Spacingd) else t
            facts["pixdim"] = [float(v) for v in spacing.pixdim]
        elif isinstance(t, (mt.Orientationd, mt.Orientation)):
            orient = t.ornt_transform if isinstance(t, mt.Orientationd) else t
            if orient.axcodes:
                facts["axcodes"] = str(orient.axcodes)
                # A Spacingd before it applied pixdim along the file's own voxel axes, which the
                # card (in Orientationd's order) cannot say; equal values are the same either way.
                # (Without any Orientationd the card reads pixdim in RAS order, as before.)
                facts["spacing_first"] = "pixdim" in facts
        elif isinstance(t, (mt.DivisiblePadd, mt.DivisiblePad)):
            pad = t.padder if isinstance(t, mt.DivisiblePadd) else t
            facts["divisible_k"] = pad.k  # MONAI: one number for every axis, or one per axis
        elif isinstance(t, (mt.ScaleIntensityRanged, mt.ScaleIntensityRange)):
            s = t.scaler if isinstance(t, mt.ScaleIntensityRanged) else t
            _check_output_range(s, type(t).__name__, name)
            intensity.append({"kind": "ct_window", "a_min": float(s.a_min), "a_max": float(s.a_max),
                              "b_min": float(s.b_min), "b_max": float(s.b_max), "clip": bool(s.clip)})
        elif isinstance(t, (mt.ScaleIntensityRangePercentilesd, mt.ScaleIntensityRangePercentiles)):
            s = t.scaler if isinstance(t, mt.ScaleIntensityRangePercentilesd) else t
            _check_output_range(s, type(t).__name__, name)
            b_min, b_max = float(s.b_min), float(s.b_max)
            if getattr(s, "relative", False):  # MONAI maps the percentiles to their share of b_min..b_max
                b_min, b_max = (b_min + (float(s.b_max) - b_min) * float(s.lower) / 100.0,
                                b_min + (float(s.b_max) - b_min) * float(s.upper) / 100.0)
            spec = {"kind": "percentile", "lower": float(s.lower), "upper": float(s.upper),
                    "b_min": b_min, "b_max": b_max, "clip": bool(s.clip)}
            if getattr(s, "channel_wise", False):  # each channel its own percentiles (refused for several)
                spec["channel_wise"] = True
            intensity.append(spec)
        elif isinstance(t, (mt.NormalizeIntensityd, mt.NormalizeIntensity)):
            n = t.normalizer if isinstance(t, mt.NormalizeIntensityd) else t
            # nonzero (MR: statistics of the head, not of the air around it) changes the result
            spec = {"kind": "zscore", "nonzero": bool(n.nonzero), "channel_wise": bool(n.channel_wise)}
            for key in ("subtrahend", "divisor"):  # fixed values replace the image's mean/std
                value = _fixed_value(getattr(n, key), key, bool(n.channel_wise), name)
                if value is not None:
                    spec[key] = value
            intensity.append(spec)
        elif isinstance(t, (mt.ScaleIntensityd, mt.ScaleIntensity)):
            s = t.scaler if isinstance(t, mt.ScaleIntensityd) else t
            intensity.append(_scale_intensity_spec(s))
        elif type(t).__module__.startswith("monai.transforms.intensity"):
            raise ModelError(f"{name}: its preprocessing step {type(t).__name__} changes the image intensities in a "
                             "way the plugin does not reproduce (it reads ScaleIntensityRange(d), "
                             "ScaleIntensityRangePercentiles(d), NormalizeIntensity(d) and ScaleIntensity(d))")
        elif type(t).__module__.startswith("monai.transforms.spatial"):
            # Resize, Zoom, Flip, Rotate90, Rotate, Affine: the network would run on another grid or
            # orientation than it was trained on; they were skipped without a word.  (Crops and pads,
            # monai.transforms.croppad, change neither voxel size nor orientation: the whole volume runs.)
            raise ModelError(f"{name}: its preprocessing step {type(t).__name__} resizes, flips or turns the image "
                             "in a way the plugin does not reproduce (it reads Spacing(d), Orientation(d) and "
                             "DivisiblePad(d)); the network would see another grid than it was trained on")
    if len(intensity) == 1:
        facts["intensity"] = intensity[0]
    elif intensity:
        facts["intensity"] = {"kind": "chain", "steps": intensity}
    return facts


def _fixed_value(value, key: str, channel_wise: bool, name: str):
    """NormalizeIntensity's fixed subtrahend/divisor as a number, or a list (one per channel,
    only with channel_wise, as MONAI requires); None when the image's statistic is used."""
    import numpy as np

    if value is None:
        return None
    values = np.ravel(np.asarray(value, dtype=float)).tolist()
    if len(values) == 1 and not isinstance(value, (list, tuple, np.ndarray)):
        return values[0]
    if not channel_wise:
        raise ModelError(f"{name}: NormalizeIntensity's {key} {value!r} is a sequence without channel_wise; "
                         "the plugin reads one number, or one per channel with channel_wise=True")
    return values


def _scale_intensity_spec(s) -> dict[str, Any]:
    """ScaleIntensity as MONAI computes it: with minv or maxv, the image's min..max to
    minv..maxv (0..1 when either is None); otherwise ``x * (1 + factor)``, or unchanged."""
    if s.minv is not None or s.maxv is not None:
        both = s.minv is not None and s.maxv is not None
        return {"kind": "minmax", "b_min": float(s.minv) if both else 0.0,
                "b_max": float(s.maxv) if both else 1.0, "channel_wise": bool(s.channel_wise)}
    if s.factor is not None:  # a fixed linear map: x * (1 + factor), as a window 0..1 -> 0..1 + factor
        return {"kind": "ct_window", "a_min": 0.0, "a_max": 1.0, "b_min": 0.0, "b_max": 1.0 + float(s.factor),
                "clip": False}
    return {"kind": "none"}


def _output_activation(postprocessing: list, out_channels: int | None) -> str | None:
    """The Activations flag, else sigmoid for one channel and softmax for more; None when
    neither is known (a TorchScript file decides once it has probed its channels)."""
    from monai import transforms as mt

    for t in postprocessing:
        if isinstance(t, (mt.Activationsd, mt.Activations)):
            # Both keep their flags on themselves (Activationsd one per key); Activationsd's
            # ``converter`` is a bare Activations() whose flags are always False.
            if any(_as_tuple(t.softmax)):
                return "softmax"
            if any(_as_tuple(t.sigmoid)):
                return "sigmoid"
    if out_channels is None:
        return None
    return "softmax" if out_channels > 1 else "sigmoid"


def _as_tuple(value):
    return value if isinstance(value, (list, tuple)) else (value,)


def _parsed(parser, key: str):
    """Parsed content of an optional config entry; None when absent or unparsable."""
    try:  # "network_def#x" where network_def is an expression string fails on the test itself
        if key not in parser:
            return None
        return _quiet_parse(parser, key)
    except Exception as exc:  # a section we only read facts from must not stop loading
        log.info("bundle entry %r could not be parsed: %s", key, exc)
        return None


# Steps that only load, save, invert, copy or re-type data: when one of them cannot be built
# (a reader that is not installed, an output folder that is not defined, an Invertd of a
# section that failed) nothing the plugin reads is lost.  Matched on the ``_target_`` class
# name, with or without MONAI's dictionary suffix.
_SKIPPABLE = re.compile(
    r"^(LoadImage|SaveImage|Invert|EnsureChannelFirst|AddChannel|EnsureType|ToTensor|ToNumpy|ToDevice|"
    r"CopyItems|DeleteItems|SelectItems|Identity|FromMetaTensor|ToMetaTensor|DataStats)(d|D|Dict)?$")
# Postprocessing also turns the probabilities into labels, which the plugin does itself.
_SKIPPABLE_AFTER = re.compile(
    r"^(AsDiscrete|KeepLargestConnectedComponent|FillHoles|RemoveSmallObjects|LabelFilter)(d|D|Dict)?$")


_REFERENCE = re.compile(r"\$?@[\w#:]+")  # "@id" or "$@id": the config at id


def _follow_references(parser, path: str):
    """``(path, raw config)`` at the end of a chain of "@id"/"$@id" references from ``path``."""
    raw = parser.get(path)
    for _ in range(8):  # a chain, not a cycle
        if not (isinstance(raw, str) and _REFERENCE.fullmatch(raw)):
            break
        path = raw.lstrip("$@")
        raw = parser.get(path)
    return path, raw


def _config_target(parser, path: str) -> str:
    """The ``_target_`` text of the config at ``path`` (following references), or the
    expression itself; "?" when there is none."""
    _path, raw = _follow_references(parser, path)
    if isinstance(raw, dict):
        return str(raw.get("_target_", "?"))
    return str(raw) if isinstance(raw, str) else "?"


def _step_paths(parser, path: str) -> list[str] | None:
    """Config ids of the steps of the Compose (or plain list) at ``path``, following references
    to it and to its ``transforms``; None when it is not written as a list (e.g. an expression)."""
    path, raw = _follow_references(parser, path)
    for _ in range(8):
        if not (isinstance(raw, dict) and "transforms" in raw):
            break
        path, raw = _follow_references(parser, f"{path}#transforms")
    return [f"{path}#{i}" for i in range(len(raw))] if isinstance(raw, list) else None


def _quiet_parse(parser, key: str):
    with warnings.catch_warnings():  # deprecation chatter of transforms we only inspect
        warnings.simplefilter("ignore")
        return parser.get_parsed_content(key)


def _section_transforms(parser, key: str, name: str) -> list:
    """The transforms of ``preprocessing``/``postprocessing``, flattened.  When the section
    as a whole cannot be built, its steps are built one by one: load/save/invert/copy steps
    that fail are skipped (the plugin does that part itself), any other step that fails
    stops loading, since the plugin cannot know what it does to the image.  Before, the whole
    section was dropped silently (no spacing, no intensity window, softmax for sigmoid)."""
    from ..errors import reason_of

    if key not in parser:
        return []
    try:
        return _flatten(_quiet_parse(parser, key))
    except Exception as exc:
        log.info("bundle %s: %r could not be built as a whole (%s); reading it step by step", name, key, exc)
        paths = _step_paths(parser, key)
        if paths is None:
            raise ModelError(f"{name}: its {key} cannot be built ({reason_of(exc)})") from None
    return _steps_one_by_one(parser, key, paths, name)


def _steps_one_by_one(parser, key: str, paths: list[str], name: str) -> list:
    from ..errors import reason_of

    skippable = [_SKIPPABLE] + ([_SKIPPABLE_AFTER] if key == "postprocessing" else [])
    out = []
    for path in paths:
        try:
            out.extend(_flatten(_quiet_parse(parser, path)))
            continue
        except Exception as exc:
            reason = reason_of(exc)
        target = _config_target(parser, path)
        inner = _step_paths(parser, path) if target.split(".")[-1] == "Compose" else None
        if inner is not None:  # a nested Compose: its own steps, by the same rule
            out.extend(_steps_one_by_one(parser, key, inner, name))
        elif any(rule.match(target.split(".")[-1]) for rule in skippable):
            log.info("bundle %s: skipped %s (%s), which cannot be built: %s", name, path, target, reason)
        else:
            raise ModelError(f"{name}: {key} step {path.split('#')[-1]} ({target}; config id {path}) cannot be "
                             f"built: {reason.rstrip('.')}. The plugin cannot tell what it does to the "
                             f"{'network output' if key == 'postprocessing' else 'image'}, so the bundle is not "
                             "loaded") from None
    return out


_SPACING_STEP = re.compile(r"^Spacing(d|D|Dict)?$")
_ORIENTATION_STEP = re.compile(r"^Orientation(d|D|Dict)?$")


def _raw_steps(parser, key: str, depth: int = 0) -> list[tuple[str, str, Any]]:
    """``(config id, _target_ class name, raw config)`` of each step written in section ``key``,
    in order, nested Compose followed: the steps as written, before MONAI drops those switched
    off by ``"_disabled_"``.  Empty when the section is not written as a list (an expression)."""
    if depth > 8 or key not in parser:
        return []
    steps = []
    for path in _step_paths(parser, key) or []:
        path, raw = _follow_references(parser, path)
        target = str(raw.get("_target_", "")).split(".")[-1] if isinstance(raw, dict) else ""
        if target == "Compose":
            steps.extend(_raw_steps(parser, path, depth + 1))
        else:
            steps.append((path, target, raw))
    return steps


def _switched_off_spacing(parser, facts: dict, name: str, source) -> dict[str, Any]:
    """The grid of a ``Spacing(d)`` that ``preprocessing`` writes but switches off with
    ``"_disabled_"``: the Model Zoo's lung_nodule_ct_detection does so by default
    (``"@whether_resampled_luna16"``), its LUNA16 data having been resampled to that grid
    beforehand.  MONAI drops the step, so the transforms built say nothing of the grid and every
    scan would run on its own (5 mm slices for 1.25 mm ones, silently); the step's pixdim,
    resolved as the parser resolves it, is the grid the bundle's data were on and the card
    resamples to it.  A pixdim that cannot be resolved leaves the bundle resampling nothing, with
    a warning.  Returns ``pixdim``/``spacing_first`` facts and a ``pixdim_note`` for the card."""
    import numpy as np

    steps = _raw_steps(parser, "preprocessing")
    found, unread = [], []
    for i, (path, target, raw) in enumerate(steps):
        if not (_SPACING_STEP.match(target) and isinstance(raw, dict) and "_disabled_" in raw):
            continue
        try:
            pixdim = [float(v) for v in np.ravel(np.asarray(_parsed(parser, f"{path}#pixdim"), dtype=float))]
        except (TypeError, ValueError):
            pixdim = []
        if not pixdim or not np.isfinite(pixdim).all():  # None (an expression that gave nothing) reads as NaN
            unread.append(f"{path} (pixdim {raw.get('pixdim')!r})")
            continue
        oriented_after = any(_ORIENTATION_STEP.match(t) for _p, t, _r in steps[i + 1:])
        found.append((path, raw["_disabled_"], pixdim, oriented_after))
    if not found and not unread:
        return {}
    if unread or len({tuple(f[2]) for f in found}) > 1:
        what = ("its pixdim cannot be resolved: " + ", ".join(unread) if unread
                else "they give different pixdims: " + ", ".join(f"{f[0]} {f[2]}" for f in found))
        _warn(f"{name}: its preprocessing writes a Spacingd that is switched off (\"_disabled_\"), the grid its "
              f"data were resampled to beforehand, but {what}; so the bundle resamples nothing and each scan runs "
              "on its own grid, which may not be the one the network was trained on", UserWarning, source)
        return {}
    path, flag, pixdim, oriented_after = found[0]
    note = (f"Its Spacingd (pixdim {pixdim}, MONAI's x, y, z) is switched off by \"_disabled_\": {flag!r}, its data "
            "having been resampled to that grid beforehand; the plugin resamples each scan to it.")
    log.info("%s: %s", name, note)
    return {"pixdim": pixdim, "spacing_first": bool(facts.get("axcodes")) and oriented_after, "pixdim_note": note}


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


def _bundle_spacing(pixdim, spatial_dims: int, axcodes: str):
    """Spacingd's pixdim as the card's (z, y, x) spacing, or (y, x) for a 2D network.  In
    MONAI a pixdim <= 0 keeps the input's spacing on that axis: the card leaves that axis None
    (the engine takes it from the input), and None for the whole spacing when every axis does
    (no resampling)."""
    values = [float(v) for v in _per_axis(pixdim, spatial_dims, "pixdim", pad=True)]
    if all(v <= 0 for v in values):
        return None
    return _to_card_order([v if v > 0 else None for v in values], spatial_dims, axcodes)


def _check_slice_axis(inferer, axcodes: str, name: str) -> None:
    """A 2D network under MONAI's SliceInferer runs on the slices across its ``spatial_dim`` of
    the (x, y, z) array in ``axcodes``; the engine runs axial slices only.  Another axis (its
    default 0 is sagittal in RAS) ran axially without a word, and the labels disagreed with
    MONAI's on 42 % of voxels (found by an audit helper)."""
    from monai.inferers import SliceInferer

    if not isinstance(inferer, SliceInferer) or len(str(axcodes)) < 3:  # 2D arrays: no axis to slice across
        return
    axial = next((i for i, c in enumerate(str(axcodes).upper()) if c in "SI"), None)
    if axial is None or int(inferer.spatial_dim) != axial:
        raise ModelError(f"{name}: its SliceInferer runs the network on slices across axis {inferer.spatial_dim} "
                         f"of the {axcodes} array, and the plugin runs 2D networks on axial slices only "
                         f"(spatial_dim {axial} there)")


def _bundle_roi(inferer, spatial_dims: int, axcodes: str) -> tuple:
    """The inferer's roi_size as the card's window: (z, y, x), or (y, x) for 2D networks.  A
    size <= 0 (MONAI: the whole image on that axis) is None, resolved by the engine once it
    knows the image; a SimpleInferer runs the whole image at once, None on every axis."""
    from monai.inferers import SimpleInferer

    if isinstance(inferer, SimpleInferer):
        return (None,) * spatial_dims
    roi = getattr(inferer, "roi_size", None)
    if roi is None:
        return default_window(spatial_dims)
    values = _per_axis(roi, spatial_dims, "roi_size")
    values = [None if isinstance(v, (int, float)) and v <= 0 else v for v in values]
    return _to_card_order(values, spatial_dims, axcodes)


def _bundle_blending(inferer, name: str, source) -> dict[str, Any]:
    """The card's ``sw_overlap`` and ``sw_mode`` from a sliding-window inferer, so that the engine
    steps and blends the windows as the bundle does (MONAI's defaults, 0.25 and "constant", when
    the config names neither); the engine's defaults (0.25, "gaussian") changed the argmax of 7 %
    of voxels with a random network.  Nothing for an inferer without windows."""
    from monai.inferers import SlidingWindowInferer

    from ..inference.engine import BLEND_MODES, MAX_OVERLAP

    if not isinstance(inferer, SlidingWindowInferer):
        return {}
    out: dict[str, Any] = {}
    mode = str(getattr(inferer.mode, "value", inferer.mode))
    if mode in BLEND_MODES:
        out["sw_mode"] = mode
    else:
        _warn(f"{name}: its inferer blends windows by {mode!r}; the plugin blends by one of {BLEND_MODES}, "
              "and uses 'gaussian'", UserWarning, source)
    overlap = inferer.overlap
    values = [float(v) for v in (overlap if isinstance(overlap, (list, tuple)) else [overlap])]
    value = max(values)
    if len(set(values)) > 1:
        _warn(f"{name}: its inferer overlaps windows by {values} per axis; the plugin takes one overlap for "
              f"every axis, the largest ({value:g})", UserWarning, source)
    if value > MAX_OVERLAP:
        _warn(f"{name}: its inferer overlaps windows by {value:g}; the plugin runs at most {MAX_OVERLAP:g}",
              UserWarning, source)
        value = MAX_OVERLAP
    out["sw_overlap"] = value
    # what else MONAI's sliding window takes: the engine runs MONAI's defaults for these
    defaults = {"sigma_scale": 0.125, "padding_mode": "constant", "cval": 0.0}
    differ = {key: getattr(inferer, key) for key, default in defaults.items()
              if _differs(getattr(inferer, key), default)}
    if differ:
        _warn(f"{name}: its inferer sets {differ}; the plugin runs MONAI's defaults for these ({defaults}), so its "
              "output may differ from the bundle's near window edges", UserWarning, source)
    return out


def _differs(value, default) -> bool:
    """Whether an inferer setting (a number, one per axis, or an enum/str) is not ``default``."""
    if isinstance(default, str):
        return str(getattr(value, "value", value)) != default
    return any(float(v) != default for v in (value if isinstance(value, (list, tuple)) else [value]))


def default_window(spatial_dims: int) -> tuple:
    """The sliding window of a model that names none: 96³ in 3D, 256² in 2D."""
    return (96, 96, 96) if spatial_dims == 3 else (256, 256)


def _to_card_order(values, spatial_dims: int, axcodes: str) -> tuple:
    """Per-axis values from the network's axis order into the card's: (z, y, x), or (y, x)
    for a 2D network, whose two codes name its in-plane axes (R/L is our x, A/P our y)."""
    if spatial_dims == 3:
        return _to_zyx(values, axcodes)
    out = [None, None]
    for value, code in zip(values, axcodes):
        out[0 if code in "AP" else 1] = value
    return tuple(out)


def _plane_codes(axcodes: str | None, name: str) -> str:
    """A 2D bundle's in-plane Orientationd codes ("RA" when it has none, MONAI's arrays then
    being the file's (x, y)); the plugin runs 2D networks on axial slices, so both codes must
    be in-plane (R/L and A/P)."""
    codes = (axcodes or "RA").upper()[:2]
    if sorted(_PLANE.get(c, "?") for c in codes) != ["x", "y"]:
        raise ModelError(f"{name}: a 2D network oriented {axcodes!r} works on non-axial slices; the plugin runs "
                         "2D networks on axial slices (codes of R/L and A/P, e.g. 'RA')")
    return codes


_PLANE = {"R": "x", "L": "x", "A": "y", "P": "y"}


def _divisible_k(k, spatial_dims: int, axcodes: str) -> list | None:
    """DivisiblePad's k in the card's axis order; None when it pads nothing (k <= 1)."""
    # MONAI: k <= 0 on an axis keeps its size, which k = 1 does too
    values = [max(int(v), 1) for v in _per_axis(k, spatial_dims, "DivisiblePad k")]
    if all(v == 1 for v in values):
        return None
    return list(_to_card_order(values, spatial_dims, axcodes))


def _spatial_dims(parser, network) -> int:
    """2 or 3: ``network_def#spatial_dims`` where written, else the built network's
    ``spatial_dims``/``dimensions``, else the kind of its first convolution (a network_def
    written as a "$..." expression has no readable arguments); 3 when nothing says."""
    value = _parsed(parser, "network_def#spatial_dims")
    if value in (2, 3):
        return int(value)
    return network_spatial_dims(network) or 3


def network_spatial_dims(network) -> int | None:
    """2 or 3 from a built network (a TorchScript module too): its ``spatial_dims``/``dimensions``
    attribute, else the kind of its first convolution; None when neither says."""
    for attr in ("spatial_dims", "dimensions"):
        value = getattr(network, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value in (2, 3):
            return value
    if isinstance(network, torch.nn.Module):
        for module in network.modules():
            # a TorchScript module keeps its Python class name in original_name
            kind = getattr(module, "original_name", None) or type(module).__name__
            match = re.fullmatch(r"Conv(?:Transpose)?([23])d", str(kind))
            if match:
                return int(match.group(1))
    return None


def _network_channels(parser) -> dict[str, int]:
    """``in_channels``/``out_channels`` written in ``network_def``: used where metadata.json
    gives no ``num_channels``."""
    found = {}
    for key in ("in_channels", "out_channels"):
        value = _parsed(parser, f"network_def#{key}")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found[key] = value
    return found


def bundle_card_fields(parser, meta: dict, name: str, network=None, source=None) -> dict[str, Any]:
    """Card fields from a bundle's parsed inference config and its metadata: spacing,
    orientation, intensity and DivisiblePad's k from ``preprocessing``, the window from
    ``inferer``, the activation from ``postprocessing``, channels and classes from the metadata
    (``network_def`` where it says nothing).  Shared by bundle folders and TorchScript files
    exported from them.  ``source`` (the path loaded) is named in warnings."""
    facts = _preprocessing_facts(_section_transforms(parser, "preprocessing", name), name)
    if "pixdim" not in facts:  # a Spacingd switched off: the grid the bundle's data were already on
        facts.update(_switched_off_spacing(parser, facts, name, source))
    channels = _network_channels(parser)
    _check_channels(meta, channels, name)
    out_channels = card_fields_from_metadata(meta, defaults=channels).get("out_channels")
    output = _output_activation(_section_transforms(parser, "postprocessing", name), out_channels)
    spatial_dims = _spatial_dims(parser, network)
    inferer = _parsed(parser, "inferer")  # built once: the window, slice axis and blending all read it
    extra: dict[str, Any] = {}
    if spatial_dims == 3:
        # MONAI arrays are (x, y, z) in the Orientationd codes (RAS when none is given); the
        # card speaks the project's (z, y, x) and the engine re-orients the volume for the network.
        axcodes = facts.get("axcodes", "RAS")
        extra["axes"] = axcodes
    else:
        # A 2D network's sizes are mapped to (y, x) by its in-plane codes, and the engine turns
        # each axial slice into that orientation ("S" first: the slices stay the batch).
        axcodes = _plane_codes(facts.get("axcodes"), name)
        extra["axes"] = "S" + axcodes
        _check_slice_axis(inferer, facts.get("axcodes") or "RAS", name)
    spacing = None
    if "pixdim" in facts:
        pixdim = _per_axis(facts["pixdim"], spatial_dims, "pixdim", pad=True)
        if facts.get("spacing_first") and len(set(pixdim)) > 1:
            raise ModelError(f"{name}: its Spacingd (pixdim {pixdim}) comes before Orientationd, so MONAI applies "
                             "it along each file's own voxel axes; the plugin can only follow a pixdim given in "
                             "Orientationd's order (or the same on every axis)")
        spacing = _bundle_spacing(pixdim, spatial_dims, axcodes)
    if "divisible_k" in facts:
        k = _divisible_k(facts["divisible_k"], spatial_dims, axcodes)
        if k:
            extra["divisible_k"] = k  # whole-image windows are rounded up to it (engine.window_size)
    roi = _bundle_roi(inferer, spatial_dims, axcodes)
    extra.update(_bundle_blending(inferer, name, source))
    fields = {**card_fields_from_metadata(meta, output, defaults=channels), "task": bundle_task(meta),
              "spatial_dims": spatial_dims, "spacing": spacing, "roi_size": roi,
              "intensity": facts.get("intensity", {"kind": "none"}), "extra": extra}
    if facts.get("pixdim_note"):  # the card says where its spacing came from
        said = str(fields.get("description", "")).rstrip()
        said += "." if said and not said.endswith((".", "!", "?")) else ""
        fields["description"] = f"{said} {facts['pixdim_note']}".strip()
    if output is not None:  # else the card's default (softmax), or a TorchScript file's probe
        fields["output"] = output
    return fields


def _warn(message: str, category, source) -> None:
    """A warning located at the bundle (or file) ``source``, not at a line of this module: shown
    once, as the message and that path (it was printed twice on the command line, once with a
    source line of the loader, when a log warning went with it), and at every load."""
    warnings.warn_explicit(message, category, filename=str(source or "bundle"), lineno=0,
                           module="napari_medai.models.bundle")


def bundle_config_parser(meta, config, root, source, what: str):
    """A ConfigParser over a bundle's metadata and inference config (file paths or dicts),
    ``bundle_root`` set to ``root``.  Parsing runs the config's "$..." expressions, so it
    warns first, naming ``source`` (the path loaded); ``what`` names it in errors."""
    from monai.bundle import ConfigParser

    _warn(TRUST_MESSAGE.format(source), BundleTrustWarning, source)
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
    from .loading import unreadable_weights, weights_mismatch

    network = _network_def(parser, folder)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load the weights of bundle {folder.name}: models/{weights.name} "
                         f"{unreadable_weights(weights, exc)}") from None
    state = unwrap_state_dict(state, network.state_dict().keys())
    try:
        network.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"cannot load the weights of bundle {folder.name}: models/{weights.name} does not fit "
                         f"network_def's {type(network).__name__}: {weights_mismatch(network, state, exc)}") from None
    return network


@contextlib.contextmanager
def _bundle_on_path(folder: Path):
    """The bundle root on ``sys.path`` while its configs are parsed and built, as MONAI's
    bundle runner does, so that ``_target_``s and imports from the bundle's own ``scripts/``
    resolve.  A ``scripts`` package already imported (another bundle's, or the user's) is set
    aside first and put back after, and this bundle's is dropped, so that two bundles each
    with a ``scripts`` package never see each other's code."""
    def is_scripts(module_name: str) -> bool:
        return module_name == "scripts" or module_name.startswith("scripts.")

    saved = {k: sys.modules.pop(k) for k in [k for k in sys.modules if is_scripts(k)]}
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(folder))
        except ValueError:  # the bundle's own code removed it
            pass
        for key in [k for k in sys.modules if is_scripts(k)]:
            del sys.modules[key]
        sys.modules.update(saved)


def load_bundle(folder) -> LoadedModel:
    folder = Path(folder)
    configs = folder / "configs"
    inference_file = _config_file(configs, "inference")
    metadata_file = _config_file(configs, "metadata")
    if inference_file is None or metadata_file is None:
        from .registry import run_file_message

        raise ModelError(run_file_message(folder) or
            f"{folder.name} is not a MONAI bundle: configs/metadata.json and configs/inference.json are needed"
        )
    with _bundle_on_path(folder.resolve()):
        return _load_bundle(folder, inference_file, metadata_file)


def _load_bundle(folder: Path, inference_file: Path, metadata_file: Path) -> LoadedModel:
    from .loading import LoadedModel

    parser = bundle_config_parser(str(metadata_file), str(inference_file), folder, folder, f"bundle {folder.name}")
    meta = parser.get(parser.meta_key) or {}
    check_task(meta, f"bundle {folder.name}")
    weights = _weights_file(folder)
    network = _bundle_network(parser, folder, weights)
    fields = bundle_card_fields(parser, meta, f"bundle {folder.name}", network, source=folder)
    fields["extra"].update({"source": "monai_bundle", "bundle": str(folder), "version": meta.get("version")})
    if fields["task"] == "detection":  # RetinaNet-style: boxes, labels, scores (models/detection.py)
        network = _detector(parser, network, folder)
        fields["extra"]["method"] = "boxes"
    card = ModelCard(name=str(meta.get("name") or folder.name), weights=str(weights), **fields)
    return LoadedModel(card, network.eval())
