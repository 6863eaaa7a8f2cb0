"""Data for segmentation training: folders of NIfTI image/label pairs -> cached, resampled arrays.

A training folder holds pairs named ``<case>_image.nii.gz`` / ``<case>_label.nii.gz`` (what
``medai phantom`` writes) or ``images/<case>.nii.gz`` / ``labels/<case>.nii.gz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError

LUNG, NODULE = 1, 2


# (image name ending, label name ending) pairs of the layouts recognised in one folder
_SUFFIX_PAIRS = (("_image", "_label"), ("_img", "_seg"), ("", "_label"), ("", "_seg"))
# (image folder, label folder) layouts: the plugin's own, and MSD / nnU-Net's
_FOLDER_PAIRS = (("images", "labels"), ("imagesTr", "labelsTr"))


# image name endings taken off to name a case (nnU-Net's channel ending "_0000" too): training
# logs and `medai evaluate` rows call b_img.nii.gz "b", as they call b_image.nii.gz
_IMAGE_ENDS = ("_image", "_img", "_0000")


def case_name(image_path) -> str:
    """The case an image file belongs to: its name without .nii(.gz) and an image ending."""
    from ..io.nifti import nifti_stem

    stem = nifti_stem(image_path)
    end = next((e for e in _IMAGE_ENDS if stem.endswith(e) and len(stem) > len(e)), "")
    return stem[: len(stem) - len(end)]


def check_image_modality(arr: np.ndarray, modality: str, name: str) -> None:
    """Training on images that are not ``modality`` (the run's --modality) is refused before it
    starts, by the rule inference applies (inference.modality.check_modality): the model would
    otherwise train and then refuse its own training images."""
    from types import SimpleNamespace

    from ..errors import ModelError
    from ..inference.modality import check_modality

    try:
        check_modality(SimpleNamespace(name=name, modality=modality), arr)
    except ModelError as exc:
        from ..inference.modality import CT_MIN_HU_RANGE

        lo, hi = float(np.min(arr)), float(np.max(arr))
        other = "MR" if modality == "CT" else "CT"
        if modality == "CT" and lo < 0 and hi - lo < CT_MIN_HU_RANGE:  # below 0, but spanning too little
            why = "they span too little for Hounsfield units (a CT rescaled, e.g. HU/1000, or a normalised MR)"
        elif modality == "CT" and lo < 0:  # the Hounsfield-scale rules (HU x 10, an MR's background): theirs
            why = f"they do not look like Hounsfield units ({str(exc).partition(', but ')[2] or exc})"
        elif modality == "CT":
            why = "no voxel is below 0, as CT in Hounsfield units has (air -1000 HU)"
        else:
            why = "values this low occur only in CT in Hounsfield units"
        raise InputError(f"{name}: the run trains a {modality} model (--modality {modality}), but this image's "
                         f"values run from {lo:g} to {hi:g}: {why}. A model trained on it would refuse it at "
                         f"inference; give the images in HU, or train with --modality {other} if these are "
                         f"{other} images") from None


def _visible_nifti(path: Path) -> bool:
    """A NIfTI file that is not hidden (MSD's archives carry a macOS ``._case.nii.gz`` copy of
    every file, which is no image)."""
    from ..io.nifti import is_nifti_path

    return is_nifti_path(path) and not path.name.startswith(".")


def find_pairs(folder, log=None) -> list[tuple[Path, Path]]:
    """(image, label) NIfTI pairs in ``folder``: ``<case>_image`` with ``<case>_label`` (also
    ``_img``/``_seg``, or ``<case>`` with ``<case>_label``/``_seg``), or ``images/<case>`` with
    ``labels/<case>`` (MSD / nnU-Net ``imagesTr/<case>_0000`` with ``labelsTr/<case>``); a label
    may be .nii or .nii.gz whatever the image is.  Images found without a label are named
    through ``log``, not dropped silently."""
    from ..io.nifti import nifti_stem

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist")

    # per folder, {stem: file}, .nii.gz before .nii: the suffix in any case (the writer accepts
    # case_label.NII.GZ, and such a label used to be missed), the stem as it is written
    stems: dict[Path, dict[str, Path]] = {}

    def label_for(directory: Path, stem: str) -> Path | None:
        if directory not in stems:
            files = sorted((p for p in directory.iterdir() if _visible_nifti(p) and p.is_file()),
                           key=lambda p: (not p.name.lower().endswith(".nii.gz"), p.name))
            stems[directory] = {}
            for p in files:
                stems[directory].setdefault(nifti_stem(p), p)
        return stems[directory].get(stem)

    pairs, unmatched = [], []
    for images, labels in _FOLDER_PAIRS:
        if (folder / images).is_dir() and (folder / labels).is_dir():
            for img in sorted(p for p in (folder / images).iterdir() if _visible_nifti(p)):
                stem = nifti_stem(img)
                lab = label_for(folder / labels, stem) or label_for(folder / labels, stem.removesuffix("_0000"))
                (pairs.append((img, lab)) if lab else unmatched.append(img.name))
            break
    if not pairs:
        files = sorted(p for p in folder.iterdir() if _visible_nifti(p))
        labels_named = {p for p in files for _, lab in _SUFFIX_PAIRS if nifti_stem(p).endswith(lab)}
        for img in files:
            if img in labels_named:
                continue
            stem = nifti_stem(img)
            lab = next((found for image_end, label_end in _SUFFIX_PAIRS if stem.endswith(image_end)
                        for found in [label_for(folder, stem[: len(stem) - len(image_end)] + label_end)]
                        if found is not None), None)
            (pairs.append((img, lab)) if lab else unmatched.append(img.name))
    if not pairs:
        raise InputError(
            f"no image/label pairs in {folder}: expected <case>_image.nii.gz with <case>_label.nii.gz "
            "(or _img/_seg, or <case> with <case>_label), images/<case> with labels/<case>, or "
            "imagesTr/<case>_0000 with labelsTr/<case>"
        )
    if unmatched and log is not None:
        names = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        log(f"warning: {len(unmatched)} image(s) without a label file are left out: {names}")
    return pairs


def chest_targets(labels: np.ndarray) -> np.ndarray:
    """Phantom label map -> the model's classes (0 background, 1 lung, 2 nodule).

    The lung class is the lung field as radiologists outline it: parenchyma plus the
    intrapulmonary vessels and airways it encloses (filled slice by slice), but not the
    trachea or mediastinal vessels.  Classes above 2 that the phantom adds are folded in.
    """
    labels = np.asarray(labels)
    parenchyma = labels == LUNG
    field = np.zeros_like(parenchyma)
    for z in range(labels.shape[0]):
        if parenchyma[z].any():
            field[z] = ndimage.binary_fill_holes(parenchyma[z])
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[field] = LUNG
    out[labels == NODULE] = NODULE
    return out


def resample_array(arr: np.ndarray, spacing, target_spacing, order: int) -> np.ndarray:
    """Resample (z, y, x) data to ``target_spacing`` with the inference engine's resampler,
    so training sees exactly what inference will (order 1 images, 0 labels)."""
    import torch

    from ..inference.resample import resample, working_shape

    shape = working_shape(arr.shape, spacing, target_spacing)
    if tuple(shape) == tuple(arr.shape):
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
    out = resample(t, shape, "linear" if order else "nearest")[0].numpy()
    return out.astype(arr.dtype) if order == 0 else out


def ct_window(lo: float, hi: float):
    """HU -> [0, 1] over the window ``lo``..``hi``, clipped: the cards' ``ct_window`` intensity."""
    return lambda a: np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def ct_window_card(lo: float, hi: float, clip: bool = True) -> dict:
    """The card's ``intensity`` entry for the window ``lo``..``hi`` HU mapped to [0, 1]."""
    return {"kind": "ct_window", "a_min": float(lo), "a_max": float(hi), "b_min": 0.0, "b_max": 1.0, "clip": clip}


def label_values(data, name: str) -> np.ndarray:
    """A label file's voxels as uint8 class indices.  Float labels are rounded (a mask saved as
    0.9999999 is class 1, not 0); values that are not whole, negative or above 255 are refused
    with the file's name (a plain uint8 cast truncated 1.9999998 to 1 and wrapped 256 to 0)."""
    from ..io.dtypes import rounded_whole

    arr = np.asarray(data)
    if np.issubdtype(arr.dtype, np.floating):
        rounded = rounded_whole(arr)
        if rounded is None:
            odd = arr[~np.isfinite(arr) | (np.abs(arr - np.rint(arr)) > 1e-3)].ravel()[:1].tolist()
            raise InputError(f"{name}: label values must be whole numbers (class indices), found e.g. {odd}")
        arr = rounded
    lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
    if lo < 0 or hi > 255:
        raise InputError(f"{name}: label values run from {lo:g} to {hi:g}; class indices must be 0-255")
    return arr.astype(np.uint8)


@dataclass
class Case:
    name: str
    image: np.ndarray  # float32 model intensity, (z, y, x) at model spacing
    target: np.ndarray  # uint8 classes at model spacing
    negative: np.ndarray | None = None  # uint8, 1 on hard negatives (see load_case), model spacing


def load_case(image_path, label_path, target_spacing, intensity_fn, map_labels=True,
              negative_values=(), modality: str | None = None) -> Case:
    """One training pair at the model's spacing.  ``negative_values``: label values of the
    file (before ``chest_targets`` folds them, e.g. phantom vessels 3 and airways 4) whose
    voxels become the case's hard negatives.  ``modality`` ("CT"/"MR"): the image must pass
    inference's modality check for it (``check_image_modality``)."""
    from ..io import read_volume

    img = read_volume(image_path)
    if modality is not None:
        check_image_modality(np.asarray(img.data), modality, Path(image_path).name)
    lab = read_volume(label_path)
    if img.data.shape != lab.data.shape:
        raise InputError(f"{image_path.name} and {label_path.name} differ in shape")
    if not np.allclose(lab.affine, img.affine, atol=1e-3):  # the check medai evaluate makes
        raise InputError(f"{label_path.name}: the labels lie elsewhere in space than {image_path.name} "
                         "(different affine: origin, spacing or axis directions)")
    values = label_values(lab.data, label_path.name)
    target = chest_targets(values) if map_labels else values
    image = resample_array(np.asarray(img.data, np.float32), img.spacing, target_spacing, order=1)
    target = resample_array(target, img.spacing, target_spacing, order=0)
    negative = None
    if negative_values:
        negative = np.isin(values, list(negative_values)).astype(np.uint8)
        negative = resample_array(negative, img.spacing, target_spacing, order=0)
    return Case(case_name(image_path), intensity_fn(image).astype(np.float32), target.astype(np.uint8), negative)


def component_balanced_indices(target: np.ndarray, n_classes: int, per_component: int = 64, seed: int = 0,
                               min_voxels: int = 1):
    """Crop-centre candidates per class in which every connected component counts the same.

    ``ClassesToIndices`` lists every voxel of a class, so a 25 mm nodule (thousands of voxels)
    is drawn hundreds of times more often than a 4 mm one (a few dozen), and the network
    learns the big nodules and never outputs the small ones.  Here each foreground component
    contributes ``per_component`` voxels (drawn with replacement when it is smaller), so
    every nodule is an equally likely crop centre.  Components under ``min_voxels`` (spicule
    fragments) are not centres at all.  Background keeps all its voxels.
    Returns flat indices per class, the layout ``RandCropByLabelClassesd(indices_key=...)`` takes.
    """
    rng = np.random.default_rng(seed)
    target = np.asarray(target)
    out = [np.flatnonzero(target.ravel() == 0)]
    structure = ndimage.generate_binary_structure(3, 3)
    for c in range(1, n_classes):
        comps, n = ndimage.label(target == c, structure)
        if n == 0:
            out.append(np.zeros(0, np.int64))
            continue
        picks = [np.zeros(0, np.int64)]
        for i, box in enumerate(ndimage.find_objects(comps), start=1):
            local = np.nonzero(comps[box] == i)
            if len(local[0]) < min_voxels:
                continue
            members = np.ravel_multi_index(
                tuple(ax + sl.start for ax, sl in zip(local, box)), comps.shape)
            picks.append(rng.choice(members, size=per_component, replace=len(members) < per_component))
        out.append(np.sort(np.concatenate(picks)))
    return out
