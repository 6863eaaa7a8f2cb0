"""Scoring segmentation models and detectors on a researcher's own annotated volumes.

After fine-tuning on annotated cases (``medai train segmentation``), the question is whether
the new model beats the built-in one on cases kept out of training.  ``evaluate_segmentation``
segments every image/label pair of a folder (the training command's layout) with each model,
exactly as ``segment()`` does for a user (the card's post-processing included), and scores
each class the model names against the reference labels: Dice and HD95 (``metrics.dice_hd95``,
MONAI), volumes, and for lesion classes how many reference lesions (connected components)
the model touches, since a voxel Dice is dominated by the large ones.  ``evaluate_detection``
runs detectors on the same pairs and scores their findings against the labelled lesions with
the detection benchmark's FROC.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError, MedaiError


def read_pair(image_path, label_path, label_map: str = "none"):
    """(image Volume, reference labels as int array on its grid); the label file must have the
    image's shape and affine, and hold class indices 0-255 as training requires (``label_values``).
    ``label_map="chest"`` folds phantom labels into background / lung / nodule
    (``training.seg_data.chest_targets``)."""
    from .io import read_volume

    image_path, label_path = Path(image_path), Path(label_path)  # str paths too: the messages name the file
    image, labels = read_volume(image_path), read_volume(label_path)
    if labels.data.shape != image.data.shape:
        raise InputError(f"{label_path.name}: labels of shape {labels.data.shape} do not match the image's "
                         f"{image.data.shape}")
    if not np.allclose(labels.affine, image.affine, atol=1e-3):
        raise InputError(f"{label_path.name}: the labels lie elsewhere in space than the image (different affine)")
    from .training.seg_data import label_values

    # training's check: a probability map saved as a label (0.6) is refused, not rounded and scored
    ref = label_values(labels.data, label_path.name).astype(np.int32)
    if label_map == "chest":
        from .training.seg_data import chest_targets

        ref = chest_targets(ref).astype(np.int32)
    elif label_map != "none":
        raise InputError(f"unknown label map {label_map!r}: use 'none' or 'chest'")
    return image, ref


def evaluate_segmentation(pairs, models, *, label_map: str = "none", settings=None,
                          on_case: Callable[[str, str, dict], None] | None = None,
                          on_skip: Callable[[str, str], None] | None = None) -> list[dict]:
    """One row per (case, model, class): ``case``, ``model``, ``class``, ``dice``, ``hd95_mm``,
    ``reference_ml``, ``predicted_ml``, and for lesion classes ``lesions`` (reference components)
    and ``lesions_found``.  ``pairs``: (image path, label path); ``models``: names, paths or
    loaded models.  ``on_case(case, model name, {class: dice})`` after each segmentation.  A pair
    that cannot be used (unreadable, labels off the image's grid, an image a model refuses: NaN
    voxels, another modality) is skipped with ``on_skip(case, reason)`` and the others are scored
    (no model's rows for it: every model is scored on the same cases); without ``on_skip`` it raises."""
    from .api import _model, segment
    from .metrics import components_found, dice_hd95
    from .postprocess.measure import class_volumes

    models = _as_list(models)
    loaded = [_model(m, "segmentation") for m in models]
    names = _model_names(models, loaded)
    rows = []
    for case, image, ref in _usable_pairs(pairs, label_map, on_skip):
        # the reference's class volumes once a case, the prediction's as segment() measured them
        reference = {r["index"]: r["volume_ml"] for r in class_volumes(ref, image.spacing)}
        case_rows, said = [], []  # what on_case says waits until every model ran on the case
        for model, label in zip(loaded, names):
            card = model.card
            result = _per_case(case, on_skip, segment, image.data, image.spacing, model=model, settings=settings)
            if result is None:
                break
            pred, predicted = result.labels, {r["index"]: r["volume_ml"] for r in result.volumes}
            # the classes as segment() named them ("class 1" where the model names none)
            classes = {i: c["name"] for i, c in result.classes.items() if i != 0}
            lesions = {int(i) for i in (card.extra or {}).get("lesions", ())}
            with warnings.catch_warnings():  # MONAI 1.5's own deprecation inside compute_hausdorff_distance
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
                scores = dice_hd95(pred, ref, classes, image.spacing)
            for index, name in classes.items():
                row = {"case": case, "model": label, "class": name, **scores[name],
                       "reference_ml": reference.get(index, 0.0), "predicted_ml": predicted.get(index, 0.0)}
                if index in lesions:
                    found = components_found(pred == index, ref == index, image.spacing)
                    row.update(lesions=len(found), lesions_found=sum(hit for _, hit in found))
                case_rows.append(row)
            said.append((case, label, {n: scores[n]["dice"] for n in classes.values()}))
        else:  # every model scored this case
            rows += case_rows
            for args in said if on_case is not None else ():
                on_case(*args)
    return rows


def _per_case(case, on_skip, call, *args, **kwargs):
    """``call(*args, **kwargs)`` for one case, or None after ``on_skip(case, reason)`` when the
    model refuses that case (one NaN image used to end a run of many, with nothing written);
    raises without ``on_skip``."""
    try:
        return call(*args, **kwargs)
    except MedaiError as exc:
        if on_skip is None:
            raise
        on_skip(case, str(exc))
        return None


def lesion_targets(ref: np.ndarray, lesion: int, spacing) -> tuple[np.ndarray, list[float]]:
    """The reference lesions (26-connected components of ``ref == lesion``) as the detection
    benchmark's targets: a ball of each lesion's equivalent diameter (at least 2 mm in radius)
    around its centroid (``metrics.target_mask``); returns (target mask, diameters mm)."""
    from scipy import ndimage

    from .metrics import target_mask

    comps, n = ndimage.label(ref == lesion, ndimage.generate_binary_structure(3, 3))
    if n == 0:
        return np.zeros(ref.shape, np.int32), []
    centres = ndimage.center_of_mass(np.ones(ref.shape), comps, range(1, n + 1))
    voxels = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    diameters = [float(2.0 * (3.0 * v * np.prod(spacing) / (4.0 * np.pi)) ** (1.0 / 3.0)) for v in voxels]
    return target_mask(ref.shape, spacing, centres, diameters), diameters


def evaluate_detection(pairs, models, *, lesion: int = 2, label_map: str = "none", settings=None,
                       on_case: Callable[[str, str, int, int], None] | None = None,
                       on_skip: Callable[[str, str], None] | None = None,
                       on_note: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Per detector (name -> result): the FROC over the pairs (``metrics.froc``; targets from
    ``lesion_targets``), the sensitivity and false positives per scan at its card's operating
    point (None without one), and per case the lesions and how many a finding hits.  Every
    finding counts (score >= 0, no cap), as in the benchmark.  ``on_case(case, model, hit,
    lesions)`` after each case.  A pair that cannot be used, or that a detector refuses, goes to
    ``on_skip(case, reason)`` (no detector's figures for it), or raises without it."""
    from .api import _model, detect
    from .metrics import at_threshold, froc
    from .models.card import operating_threshold

    models = _as_list(models)
    loaded = [_model(m, "detection") for m in models]
    names = _model_names(models, loaded)
    rows = {name: [] for name in names}
    cases = {name: [] for name in names}
    if isinstance(lesion, bool) or not isinstance(lesion, (int, np.integer)) or lesion < 1:
        raise InputError(f"the lesion label must be a label value of 1 or more (--lesion-label), got {lesion!r}")
    seen, lesions = set(), 0  # the label values of references without a lesion, while none has one
    for case, image, ref in _usable_pairs(pairs, label_map, on_skip):
        targets, diameters = lesion_targets(ref, lesion, image.spacing)
        lesions += len(diameters)
        if not lesions:
            seen |= {int(v) for v in np.unique(ref)}
        case_rows, case_cases, said = {}, {}, []
        for model, name in zip(loaded, names):
            found = _per_case(case, on_skip, detect, image.data, image.spacing, model=model, max_findings=None,
                              settings=settings, refine_masks=False)
            if found is None:
                break
            centres = np.array([f.center_voxel for f in found], dtype=float).reshape(-1, 3)
            case_rows[name] = ([f.score for f in found], centres, targets, [])
            top = np.clip(np.rint(centres).astype(int), 0, np.array(ref.shape) - 1)
            hit = len(set(targets[tuple(top.T)].tolist()) - {0}) if len(top) else 0
            case_cases[name] = {"case": case, "lesions": len(diameters), "lesions_hit": hit, "findings": len(found)}
            said.append((case, name, hit, len(diameters)))
        else:  # every detector ran on this case
            for args in said if on_case is not None else ():
                on_case(*args)
            for name in names:
                rows[name].append(case_rows[name])
                cases[name].append(case_cases[name])
    if seen and not lesions:  # every reference scored, none with a lesion: FROC of nothing (NaN), all findings false
        # a cohort of negative scans is a fair use (false positives per scan), a mistyped label is not:
        # said, not refused (it was refused at first, after every detector had run)
        values = ", ".join(map(str, sorted(seen)))
        note = (f"no reference holds a lesion of label {lesion} (their labels hold {values}): the sensitivities are "
                "not defined and every finding counts as false; if the lesions have another label value, choose it "
                "with --lesion-label (after --label-map)")
        if on_note is not None:
            on_note(note)
        else:
            warnings.warn(note, UserWarning, stacklevel=2)
    out = {}
    for model, name in zip(loaded, names):
        threshold = operating_threshold(model.card)
        out[name] = {"froc": froc(rows[name]), "cases": cases[name],
                     "operating_point": None if threshold is None else at_threshold(rows[name], threshold)}
    return out


def _usable_pairs(pairs, label_map: str, on_skip):
    """(case, image, reference) for each pair in turn; a pair that cannot be used goes to
    ``on_skip(case, reason)`` (one bad label file used to end a run of many cases, after the
    cases before it had been scored, with nothing written), or raises without it."""
    if label_map not in ("none", "chest"):  # the run's mistake, not a case's
        raise InputError(f"unknown label map {label_map!r}: use 'none' or 'chest'")
    for image_path, label_path in pairs:
        case = _case(image_path)
        try:
            image, ref = read_pair(image_path, label_path, label_map)
        except MedaiError as exc:
            if on_skip is None:
                raise
            on_skip(case, str(exc))
            continue
        yield case, image, ref


def _as_list(models) -> list:
    """``models`` as a list: one model given alone (a name, a path, a card, a loaded model) is
    wrapped, since a name was otherwise iterated letter by letter."""
    from .models import LoadedModel, ModelCard

    if isinstance(models, (str, os.PathLike, LoadedModel, ModelCard)):
        return [models]
    return list(models)


def _model_names(given, loaded) -> list[str]:
    """Each model's card name, with what it was given as where two share a name (a model and
    its fine-tuned copy, two bundles that both call themselves "model"): they stay apart."""
    names = [m.card.name for m in loaded]
    out = []
    for k, (name, arg) in enumerate(zip(names, given), start=1):
        if names.count(name) > 1:
            name = f"{name} ({arg if isinstance(arg, (str, bytes)) or hasattr(arg, '__fspath__') else '#' + str(k)})"
        out.append(name if name not in out else f"{name} #{k}")
    return out


def summarise(rows) -> list[dict]:
    """Per model and class: mean ± sd Dice and median HD95 over the cases whose reference holds
    the class (``cases``), the cases where the model labels a class the reference lacks
    (``false_positive_cases``), and lesions found of all reference lesions.  HD95 has no value
    where the model labels none of the class: ``hd95_cases`` says how many cases the median is
    over and ``missed_cases`` how many of ``cases`` the model left empty (the median alone read
    better for a model that missed a class outright)."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for name in dict.fromkeys(r["class"] for r in rows if r["model"] == model):
            mine = [r for r in rows if r["model"] == model and r["class"] == name]
            present = [r for r in mine if r["reference_ml"] > 0]
            dice = [r["dice"] for r in present]
            hd = [r["hd95_mm"] for r in present if not math.isnan(r["hd95_mm"])]
            entry = {"model": model, "class": name, "cases": len(present),
                     "dice_mean": float(np.mean(dice)) if dice else float("nan"),
                     "dice_sd": float(np.std(dice)) if dice else float("nan"),
                     "hd95_median_mm": float(np.median(hd)) if hd else float("nan"), "hd95_cases": len(hd),
                     "missed_cases": sum(1 for r in present if r["predicted_ml"] == 0),
                     "false_positive_cases": sum(1 for r in mine if r["reference_ml"] == 0 and r["predicted_ml"] > 0)}
            if any("lesions" in r for r in mine):
                entry["lesions"] = sum(r.get("lesions", 0) for r in mine)
                entry["lesions_found"] = sum(r.get("lesions_found", 0) for r in mine)
            out.append(entry)
    return out


def _case(path) -> str:
    """The case's name as training logs it (``b_img.nii.gz`` is "b" too, not "b_img")."""
    from .training.seg_data import case_name

    return case_name(path)
