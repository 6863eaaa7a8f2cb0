"""Model cards: everything the engine and the widgets need to know about a model.

A card is a small JSON file that lives next to the weights.  Geometry is written in the
project's array order (z, y, x) in millimetres; 2D models (``spatial_dims == 2``) are
applied slice by slice over z and give ``spacing``/``roi_size`` as (y, x).  A null entry
follows the input on that axis: its own spacing, a window as long as the image (what MONAI
bundles mean by a pixdim or roi_size <= 0).

Example (see docs/inference.md for every field)::

    {"name": "lung_seg", "task": "segmentation", "modality": "CT",
     "spacing": [2.0, 1.5, 1.5], "roi_size": [64, 96, 96], "spatial_dims": 3,
     "in_channels": 1, "out_channels": 3,
     "classes": [{"index": 0, "name": "background", "color": "#000000"}, ...],
     "intensity": {"kind": "ct_window", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1, "clip": true},
     "network": {"name": "UNet", "kwargs": {"channels": [16, 32, 64], "strides": [2, 2]}},
     "output": "softmax", "weights": "lung_seg.pt", "sha256": "..."}
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ModelError

TASKS = ("segmentation", "detection", "denoising", "classification")  # classification: a second-stage patch classifier
MODALITIES = ("CT", "MR", "any")
OUTPUTS = ("softmax", "sigmoid", "residual", "identity")
# Required keys of each intensity preprocessing kind (values are numbers).
INTENSITY_KINDS = {
    "ct_window": ("a_min", "a_max", "b_min", "b_max"),
    "percentile": ("lower", "upper"),
    "zscore": (),  # optional fixed "subtrahend"/"divisor" (MONAI NormalizeIntensity)
    "minmax": (),  # the image's min..max to b_min..b_max (MONAI ScaleIntensity)
    "chain": (),  # "steps": several of the above, applied in order (a bundle's preprocessing)
    "none": (),
}
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")
# Array layouts a network may expect, as three anatomical axis codes (see inference/layout.py).
DEFAULT_AXES = "SPL"


def _whole_number(value) -> bool:
    """A label value as cards write it: 2, 2.0 or "2" (read with int()), 0 or more."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value.strip().isdigit()
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, float) and value.is_integer() and value >= 0


@dataclass
class ModelCard:
    name: str
    task: str = "segmentation"
    modality: str = "any"
    description: str = ""
    # (z, y, x) mm; None = run on the input's grid, None on one axis = the input's spacing there
    spacing: tuple[float | None, ...] | None = None
    roi_size: tuple[int | None, ...] = (96, 96, 96)  # None on an axis: the whole image there
    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 2
    classes: list[dict[str, Any]] = field(default_factory=list)
    intensity: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    network: dict[str, Any] = field(default_factory=dict)
    # None: "sigmoid" for one output channel (a softmax over one channel is 1 everywhere and labelled
    # every voxel), else "softmax"; resolved in validate() for cards from JSON and from code alike
    output: str | None = None
    weights: str = ""
    sha256: str = ""
    train_command: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # Folder the card was read from: weights are resolved relative to it.  Not serialised.
    source_dir: Path | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def _fail(self, problem: str):
        raise ModelError(f"model card '{self.name}': {problem}")

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ModelError("a model card needs a non-empty 'name'")
        if self.task not in TASKS:
            self._fail(f"task must be one of {TASKS}, got {self.task!r}")
        if self.modality not in MODALITIES:
            self._fail(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.spatial_dims not in (2, 3):
            self._fail(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        # the free-form sections are read with .get() and the file names with Path(): a card
        # with "extra": null or "sha256": 123 ended in a Python error where it is first used
        # (null stands for the field's default, as hand-written cards use it)
        for key in ("extra", "training", "scores"):
            if getattr(self, key) is None:
                setattr(self, key, {})
            if not isinstance(getattr(self, key), dict):
                self._fail(f"{key} must be an object {{...}}, got {getattr(self, key)!r}")
        for key in ("weights", "sha256", "train_command", "description"):
            if getattr(self, key, "") is None:
                setattr(self, key, "")
            if not isinstance(getattr(self, key, ""), str):
                self._fail(f"{key} must be text, got {getattr(self, key)!r}")
        # None on an axis is resolved from the input when the model runs on a grid; a
        # classifier's patches (inference/candidates.py) need every size up front.
        open_axes = self.task != "classification"
        self.roi_size = self._positive_tuple("roi_size", self.roi_size, int, open_axes)
        if self.spacing is not None:
            self.spacing = self._positive_tuple("spacing", self.spacing, float, open_axes)
            if all(v is None for v in self.spacing):
                self.spacing = None  # the input's spacing on every axis: one way to say "no resampling"
        for key in ("in_channels", "out_channels"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                self._fail(f"{key} must be a positive integer, got {value!r}")
        if self.output is None:
            self.output = "sigmoid" if self.out_channels == 1 else "softmax"
        if self.output not in OUTPUTS:
            self._fail(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.task == "classification" and self.out_channels != 1:
            # a patch classifier's score is the sigmoid of its one logit: a two-logit (softmax) one was
            # scored by its "not lesion" logit, its scores inverted
            self._fail(f"a classification model gives one logit per patch (out_channels 1), got {self.out_channels}")
        self._validate_intensity()
        self._validate_classes()
        if (not isinstance(self.network, dict) or not isinstance(self.network.get("name", ""), str)
                or not isinstance(self.network.get("kwargs", {}), dict)):
            self._fail(f"network must be an object {{'name': text, 'kwargs': {{...}}}}, got {self.network!r}")
        axes = self.extra.get("axes", DEFAULT_AXES)
        if not isinstance(axes, str) or len(axes) != 3:
            self._fail(f"extra.axes must be a 3-letter orientation code such as 'RAS', got {axes!r}")
        if self.spatial_dims == 2 and axes.upper()[0] != "S":
            # the engine runs a 2D network slice by slice: only the two in-plane axes can turn
            self._fail(f"extra.axes of a 2D network must start with 'S' (its slices are the batch), then its two "
                       f"in-plane codes, e.g. 'SPL' (ours) or 'SRA', got {axes!r}")
        k = self.extra.get("divisible_k")
        if k is not None:
            values = [k] if isinstance(k, int) and not isinstance(k, bool) else k
            if (not isinstance(values, (list, tuple)) or len(values) not in (1, self.spatial_dims)
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)):
                self._fail(f"extra.divisible_k must be a whole number >= 1, or one per axis, got {k!r}")
            self.extra["divisible_k"] = list(values) * (self.spatial_dims if len(values) == 1 else 1)

    def _positive_tuple(self, key, values, kind, open_axes: bool = False) -> tuple:
        """``values`` as a tuple of positive, finite ``kind``; with ``open_axes`` an entry may be
        None.  A text ("96" read as (9, 6)), a fraction of a voxel for a window (16.7 cut to 16),
        NaN or infinity (a spacing of infinity resampled the scan to one slice, silently) are refused."""
        try:
            if isinstance(values, (str, bytes)):
                raise TypeError
            numbers = tuple(None if v is None and open_axes else float(v) for v in values)
            if any(v is not None and not math.isfinite(v) for v in numbers):
                raise ValueError
        except (TypeError, ValueError):
            self._fail(f"{key} must be a list of finite numbers, got {values!r}")
        if kind is int and any(v is not None and v != int(v) for v in numbers):
            self._fail(f"{key} must be whole numbers of voxels, got {values!r}")
        out = tuple(None if v is None else kind(v) for v in numbers)
        if len(out) != self.spatial_dims:
            order = "(z, y, x)" if self.spatial_dims == 3 else "(y, x)"
            self._fail(f"{key} needs {self.spatial_dims} values {order}, got {len(out)}: {out}")
        if any(v is not None and v <= 0 for v in out):
            either = " (or null to follow the input on that axis)" if open_axes else ""
            self._fail(f"{key} values must be positive{either}, got {out}")
        return out

    def _validate_intensity(self, spec=None):
        spec = self.intensity if spec is None else spec
        if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str) or spec.get("kind") not in INTENSITY_KINDS:
            self._fail(f"intensity.kind must be one of {tuple(INTENSITY_KINDS)}, got {spec!r}")
        for key in INTENSITY_KINDS[spec["kind"]]:
            if not isinstance(spec.get(key), (int, float)) or isinstance(spec.get(key), bool):
                self._fail(f"intensity '{spec['kind']}' needs a number for '{key}', got {spec.get(key)!r}")
        for key in ("nonzero", "channel_wise"):  # zscore options, as MONAI's NormalizeIntensity
            if key in spec and not isinstance(spec[key], bool):
                self._fail(f"intensity '{key}' must be true or false, got {spec[key]!r}")
        if spec["kind"] == "ct_window" and spec["a_max"] <= spec["a_min"]:
            self._fail(f"intensity window needs a_max > a_min, got {spec['a_min']}..{spec['a_max']}")
        if spec["kind"] == "percentile" and not 0 <= spec["lower"] < spec["upper"] <= 100:
            self._fail(f"percentiles need 0 <= lower < upper <= 100, got {spec['lower']}, {spec['upper']}")
        if spec["kind"] in ("ct_window", "percentile", "minmax") and spec.get("b_min", 0.0) == spec.get("b_max", 1.0):
            # every value would map to one number, and an image output's inversion divides by zero
            self._fail(f"intensity '{spec['kind']}' needs b_max different from b_min, got {spec.get('b_min')} for both")
        for key in ("subtrahend", "divisor"):  # zscore: fixed values, one or one per channel
            value = spec.get(key)
            numbers = value if isinstance(value, list) else [value]
            if value is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
                self._fail(f"intensity '{key}' must be a number or a list of numbers, got {value!r}")
        if spec["kind"] == "chain":  # each step is a kind of its own (no chains inside chains)
            steps = spec.get("steps")
            if not isinstance(steps, list) or not steps:
                self._fail(f"intensity 'chain' needs a non-empty list of 'steps', got {steps!r}")
            for step in steps:
                if isinstance(step, dict) and step.get("kind") == "chain":
                    self._fail("intensity 'chain' steps cannot be chains")
                self._validate_intensity(step)

    def _validate_classes(self):
        if not isinstance(self.classes, list):
            self._fail("classes must be a list of {'index', 'name', 'color'}")
        seen = set()
        for entry in self.classes:
            if not isinstance(entry, dict) or not {"index", "name"} <= set(entry):
                self._fail(f"each class needs 'index' and 'name', got {entry!r}")
            index = entry["index"]  # a label value: "lung" failed only after the whole inference
            if not _whole_number(index):
                self._fail(f"class '{entry['name']}' index must be a whole number 0 or more, got {index!r}")
            if entry["index"] in seen:
                self._fail(f"class index {entry['index']} appears twice")
            seen.add(entry["index"])
            color = entry.get("color")
            if color is not None and not (isinstance(color, str) and _HEX_COLOR.match(color)):
                self._fail(f"class '{entry['name']}' colour must be hex like '#ff0000', got {color!r}")
        if self.task == "segmentation" and seen:
            # label k comes from channel k (softmax) or k - 1 (sigmoid): a class past the last channel is
            # never drawn, and a channel it should have named came out as "class k" (an audit helper)
            top = self.out_channels - (0 if is_multilabel(self, self.out_channels) else 1)
            beyond = sorted(int(i) for i in seen if int(i) > top)
            if beyond:
                self._fail(f"class index(es) {beyond} lie beyond the labels its {self.out_channels} {self.output} "
                           f"output channel(s) can give (0 to {top}): give each class the index of its channel")

    # -- convenience ------------------------------------------------------------------------
    @property
    def class_names(self) -> dict[int, str]:
        return {int(c["index"]): str(c["name"]) for c in self.classes}

    @property
    def draws_boxes(self) -> bool:
        """A detector that returns boxes (RetinaNet-style), not a probability map that the
        findings are read from (``extra["method"]``, default "segmentation")."""
        return (self.extra or {}).get("method", "segmentation") != "segmentation"

    @property
    def axes(self) -> str:
        """Anatomical order of the network's array axes; 'SPL' is the project's (z, y, x)."""
        return str(self.extra.get("axes", DEFAULT_AXES)).upper()

    def weights_path(self) -> Path | None:
        if not self.weights:
            return None
        path = Path(self.weights)
        if not path.is_absolute() and self.source_dir is not None:
            path = Path(self.source_dir) / path
        return path

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source_dir")
        for key in ("spacing", "roi_size"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source_dir=None) -> "ModelCard":
        if not isinstance(data, dict):
            raise ModelError(f"a model card must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"source_dir"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(
                f"model card '{data.get('name', '?')}' has unknown field(s) {unknown}; "
                "put extra information under 'extra'"
            )
        if "name" not in data:
            raise ModelError("a model card needs a 'name'")
        return cls(**data, source_dir=Path(source_dir) if source_dir is not None else None)

    @classmethod
    def from_json(cls, text: str, source_dir=None, default_name: str | None = None) -> "ModelCard":
        """``default_name``: the name of a card that gives none (a card file's own name; the docs'
        lists of the fields a card of your own needs left ``name`` out, and such a card was refused)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"the model card is not valid JSON: {exc}") from None
        if default_name and isinstance(data, dict) and "name" not in data:
            data = {**data, "name": default_name}
        return cls.from_dict(data, source_dir=source_dir)


def load_card(path) -> ModelCard:
    """Read a card from a .json file; its weights are resolved relative to the file, and a card
    without a ``name`` is named after the file (``my_denoiser.json``: "my_denoiser")."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model card {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read model card {path.name}: {exc}") from None
    return ModelCard.from_json(text, source_dir=path.parent, default_name=path.stem)


def save_card(card: ModelCard, path) -> Path:
    """Write ``card`` to ``path`` whole or not at all (a temporary file renamed over it): written
    in place, a kill or a full disk mid-write left a cut-off card that no longer loaded, the
    shipped card of a re-fit included."""
    from ..io.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, card.to_json() + "\n")
    return path


def operating_threshold(card) -> float | None:
    """A detector card's fitted default score threshold (``extra.operating_point``, written by
    ``medai train operating-point``), or None where it has none (or ``card`` is no card)."""
    op = (getattr(card, "extra", None) or {}).get("operating_point")
    if not isinstance(op, dict) or "score_threshold" not in op:
        return None
    return float(op["score_threshold"])


def card_for_path(path) -> ModelCard | None:
    """The card a model file stands for: a card .json itself, or ``<name>.pt`` beside a
    ``<name>.json`` whose weights are that file.  None for any other file (a TorchScript file with no card beside it, a
    .json beside it that is not its card).  A card that cannot be read raises ``ModelError``."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    if path.suffix.lower() == ".json":
        return load_card(path)
    sibling_card = path.with_suffix(".json")
    if not sibling_card.is_file():
        return None
    card = load_card(sibling_card)
    weights = card.weights_path()
    return card if weights is not None and weights.resolve() == path.resolve() else None


def is_multilabel(card, channels: int) -> bool:
    """Sigmoid channels are independent (multi-label); one channel can only be foreground."""
    return card.output == "sigmoid" or channels == 1


def sigmoid_offset(card) -> int:
    """Label of channel k is k + this: 1, except for a card whose class table names channel 0
    "background" (one class per channel), where channel k is label k and channel 0 draws
    nothing (``bundle.sigmoid_classes`` leaves such a table as it is)."""
    names = {int(c["index"]): str(c["name"]).lower() for c in card.classes}
    return 0 if names.get(0) == "background" and len(names) == card.out_channels else 1


def label_channel(card, label: int) -> int:
    """The output channel that label ``label`` of ``card``'s label map is read from: the same
    number for a softmax model, ``label - sigmoid_offset`` for a multi-label one."""
    if is_multilabel(card, card.out_channels):
        return max(int(label) - sigmoid_offset(card), 0)
    return int(label)
