"""Train the box detector :class:`~napari_medai.models.retinanet.NoduleRetinaNet` on phantoms.

The issue let the detector be a MONAI RetinaNet (as in the Model Zoo's lung-nodule bundle)
or segmentation-based; this is the RetinaNet, trained on the same phantom folders as the
segmentation network so the two can be compared on the same benchmark.

* Cases: ``<case>_image`` / ``<case>_label`` pairs (``training.seg_data``), resampled to the
  card's grid; each connected nodule component (label 2 after the chest folding, at least
  ``min_component_voxels``) is one box.
* Batches: ``positive_fraction`` of the crops are centred near a nodule drawn uniformly among
  all nodules (so a 4 mm nodule is as frequent as a 25 mm one), the rest anywhere in the lung
  field, where vessels are the hard negatives; flips along each axis, intensity scale/shift.
* Deterministic (in fp32; see ``RetinaTrainConfig.bf16``): crop ``i`` of step ``s`` draws from
  ``default_rng([seed, s, i])``, the hard-negative sampler's torch generator is re-seeded from
  ``(seed, s)`` at each step, networks are initialised from ``seed``; so resuming from
  ``last.pt`` continues bit for bit.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io.atomic import write_text_atomic
from .checkpoint import check_counts, read_checkpoint, save_atomic, settings_changes
from .device import cpu_state_dict, training_device
from .seg_data import ct_window, ct_window_card, find_pairs, load_case

NODULE = 2
LUNG = 1


@dataclass
class RetinaTrainConfig:
    data: tuple  # folders of image/label pairs
    out: str
    spacing: tuple = (2.0, 1.0, 1.0)
    patch: tuple = (32, 64, 64)
    batch_size: int = 8
    positive_fraction: float = 0.6
    iterations: int = 1400
    lr: float = 1e-2
    warmup: int = 100
    min_component_voxels: int = 4
    skip_cases: tuple = ()  # case names not used for training
    seed: int = 0
    threads: int = 2
    # fp32 by default: in bf16 autocast two identical CPU runs already differed (1e-7) after one
    # step of this network, so a bf16 run cannot be re-trained bit for bit
    bf16: bool = False
    device: str = "auto"
    checkpoint_every: int = 100
    ct_window: tuple = (-1000.0, 400.0)
    network: dict | None = None  # NoduleRetinaNet kwargs beyond the defaults (tests: a tiny one)


@dataclass
class BoxCase:
    name: str
    image: np.ndarray  # float32 in [0, 1], (z, y, x) at the training spacing
    boxes: np.ndarray  # (N, 6) int: lo_z, lo_y, lo_x, hi_z, hi_y, hi_x (hi exclusive)
    lung: np.ndarray  # flat indices of lung voxels (a sample, for negative crop centres)


def nodule_boxes(target: np.ndarray, min_voxels: int = 4) -> np.ndarray:
    """One box per connected nodule component (26-connected), as (lo, hi) voxel edges."""
    comps, _ = ndimage.label(target == NODULE, ndimage.generate_binary_structure(3, 3))
    out = []
    for i, box in enumerate(ndimage.find_objects(comps), start=1):
        if box is None or np.count_nonzero(comps[box] == i) < min_voxels:
            continue
        out.append([s.start for s in box] + [s.stop for s in box])
    return np.asarray(out, dtype=np.int64).reshape(-1, 6)


def load_box_cases(cfg: RetinaTrainConfig, log=print) -> list[BoxCase]:
    window = ct_window(*cfg.ct_window)
    cases = []
    pairs = [p for folder in cfg.data for p in find_pairs(folder)]
    for k, (img, lab) in enumerate(pairs):
        name = img.name.split("_image")[0]
        if name in cfg.skip_cases:
            continue
        case = load_case(img, lab, cfg.spacing, window)
        lung = np.flatnonzero(case.target.ravel() == LUNG)
        rng = np.random.default_rng([cfg.seed, k])
        lung = np.sort(rng.choice(lung, size=min(len(lung), 50_000), replace=False)) if len(lung) else lung
        boxes = nodule_boxes(case.target, cfg.min_component_voxels)
        cases.append(BoxCase(name, case.image.astype(np.float32), boxes, lung))
        log(f"  {name}: {case.image.shape}, {len(boxes)} nodules")
    return cases


def sample_crop(case: BoxCase, patch, rng, positive: bool):
    """A (1, *patch) crop and the boxes of the nodules whose centre lies inside it."""
    shape = np.array(case.image.shape)
    patch = np.array(patch)
    if positive and len(case.boxes):
        b = case.boxes[rng.integers(len(case.boxes))]
        centre = (b[:3] + b[3:]) / 2.0
        # anywhere the whole nodule still fits, up to a quarter of the patch off centre
        slack = np.maximum(0, np.minimum(patch / 4, (patch - (b[3:] - b[:3])) / 2 - 1))
        centre = centre + rng.uniform(-slack, slack)
    elif len(case.lung):
        centre = np.array(np.unravel_index(case.lung[rng.integers(len(case.lung))], shape), float)
    else:
        centre = rng.uniform(0, shape)
    start = np.round(centre - patch / 2).astype(int)
    crop = np.zeros(tuple(patch), np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + patch, shape)
    if np.all(src_hi > src_lo):
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(src_lo, src_hi, start))
        crop[dst] = case.image[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
    boxes = case.boxes.astype(np.float32).copy()
    if len(boxes):
        boxes[:, :3] -= start
        boxes[:, 3:] -= start
        centres = (boxes[:, :3] + boxes[:, 3:]) / 2
        inside = np.all((centres >= 0) & (centres < patch), axis=1)
        boxes = boxes[inside]
        boxes[:, :3] = np.maximum(boxes[:, :3], 0)
        boxes[:, 3:] = np.minimum(boxes[:, 3:], patch)
    for axis in range(3):
        if rng.random() < 0.5:
            crop = np.flip(crop, axis)
            lo_, hi_ = boxes[:, axis].copy(), boxes[:, axis + 3].copy()
            boxes[:, axis], boxes[:, axis + 3] = patch[axis] - hi_, patch[axis] - lo_
    crop = crop * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05)
    return np.ascontiguousarray(crop[None], np.float32), boxes.reshape(-1, 6)


def batch(cases, cfg: RetinaTrainConfig, step: int):
    import torch

    images, targets = [], []
    n_pos = int(round(cfg.batch_size * cfg.positive_fraction))
    for i in range(cfg.batch_size):
        rng = np.random.default_rng([cfg.seed, step, i])
        case = cases[rng.integers(len(cases))]
        crop, boxes = sample_crop(case, cfg.patch, rng, positive=i < n_pos)
        images.append(torch.from_numpy(crop))
        targets.append({"box": torch.from_numpy(boxes), "label": torch.zeros(len(boxes), dtype=torch.long)})
    return torch.stack(images), targets


def network_kwargs(cfg: RetinaTrainConfig) -> dict:
    # roi_size: the sliding window at inference, in the card's grid
    return {"roi_size": [64, 128, 128], **(cfg.network or {})}


def build_detector(cfg: RetinaTrainConfig):
    import torch

    from ..models.retinanet import NoduleRetinaNet

    torch.manual_seed(cfg.seed)
    return NoduleRetinaNet(**network_kwargs(cfg))


def learning_rate(cfg: RetinaTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def check_config(cfg: RetinaTrainConfig) -> None:
    """Options checked before any case loads: --iterations 0 wrote NaN into summary.json (not
    JSON), --batch-size 0 and a learning rate of 0 or less failed after loading."""
    check_counts(cfg, ("iterations", "batch_size", "threads", "checkpoint_every"))
    if not cfg.lr > 0:
        raise InputError(f"--lr must be positive, got {cfg.lr}")
    if cfg.warmup < 0 or not 0 <= cfg.positive_fraction <= 1:
        raise InputError(f"warmup must be 0 or more and positive_fraction in [0, 1], got {cfg.warmup} and "
                         f"{cfg.positive_fraction}")
    if len(cfg.patch) != 3 or min(int(p) for p in cfg.patch) < 1:
        raise InputError(f"--patch must be three sizes of at least 1, got {tuple(cfg.patch)}")


def train_retinanet(cfg: RetinaTrainConfig, log=print, progress=None) -> dict:
    import torch

    check_config(cfg)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    settings = _settings(cfg)  # once, before loading: what a resume is checked against
    previous = _previous_run(out / "last.pt", settings)  # before any loading: a wrong --out is said at once
    where = training_device(cfg.device, cfg.bf16)
    device = where.device
    log(f"training NoduleRetinaNet on {device} (bf16 autocast: {where.bf16}); loading cases")
    t0 = time.time()
    cases = load_box_cases(cfg, log)
    if not any(len(c.boxes) for c in cases):
        raise InputError("no nodules (label 2) in the training data: a nodule detector has nothing to learn")
    # only now, once the device and the cases are read: either failing left an empty run folder
    out.mkdir(parents=True, exist_ok=True)
    log(f"{len(cases)} cases, {sum(len(c.boxes) for c in cases)} nodules, loaded in {time.time() - t0:.0f} s")
    det = build_detector(cfg).to(device)
    det.train()
    opt = torch.optim.SGD(det.network.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=3e-5, nesterov=True)
    start, history = 0, []
    last = out / "last.pt"
    if previous is not None:
        state = previous
        det.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        log(f"resumed at step {start}")
    t_train = time.time()
    for step in range(start, cfg.iterations):
        for g in opt.param_groups:
            g["lr"] = learning_rate(cfg, step)
        images, targets = batch(cases, cfg, step)
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # MONAI's samplers draw from the global generator
        images = images.to(device)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with where.autocast():
            losses = det(images, targets)
        loss = losses["classification"] + losses["box_regression"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append([float(losses["classification"].detach()), float(losses["box_regression"].detach())])
        if (step + 1) % 20 == 0:
            recent = np.mean(history[-20:], axis=0)
            log(f"step {step + 1}/{cfg.iterations}: cls {recent[0]:.4f} box {recent[1]:.4f} "
                f"lr {learning_rate(cfg, step):.4g} ({time.time() - t_train:.0f} s)")
        if progress is not None:
            progress(step + 1, cfg.iterations)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.iterations:
            save_atomic({"model": cpu_state_dict(det), "optimizer": opt.state_dict(), "step": step + 1,
                         "history": history, "settings": settings}, last)
    save_atomic(cpu_state_dict(det), out / "final.pt")
    summary = {"cases": [c.name for c in cases], "nodules": int(sum(len(c.boxes) for c in cases)),
               "iterations": cfg.iterations, "train_seconds": round(time.time() - t_train, 1),
               "final_losses": np.mean(history[-50:], axis=0).round(4).tolist(), "device": str(device),
               "bf16": where.bf16, "config": asdict(cfg)}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=list))
    return summary


# The settings a resumed run must share with the run that wrote last.pt (not threads, device or
# how often it is saved); bf16 is one: its steps differ from fp32's.
_RESUME_KEYS = ("data", "spacing", "patch", "batch_size", "positive_fraction", "iterations", "lr", "warmup",
                "min_component_voxels", "skip_cases", "seed", "bf16", "ct_window", "network")


def _settings(cfg: RetinaTrainConfig) -> dict:
    """``_RESUME_KEYS`` of ``cfg`` as last.pt records them (lists, resolved folders), with each
    folder's pairs and their sha256 (``segmentation._data_fingerprint``)."""
    from .segmentation import _data_fingerprint

    settings = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k in _RESUME_KEYS}, default=list))
    settings["data"] = [str(Path(d).resolve()) for d in cfg.data]
    settings["data_files"] = [_data_fingerprint(d) for d in cfg.data]
    return settings


def _previous_run(last: Path, settings: dict):
    """The state in ``last`` to resume from, or None.  A run with other settings or data is
    refused: it used to be resumed as if it were this one, and its summary named the new settings."""
    if not last.exists():
        return None
    state = read_checkpoint(last, needs="model")
    theirs = state.get("settings")
    if theirs is None:
        raise InputError(f"{last.parent} holds a run from an older version, whose settings are not recorded: "
                         "choose another --out (or delete its last.pt to start over)")
    changed = settings_changes(theirs, settings, _RESUME_KEYS)
    if changed:
        raise InputError(f"{last.parent} holds a run with other settings ({'; '.join(changed)}); a run resumes only "
                         "with the same settings: choose another --out, or delete its last.pt to start over")
    if theirs.get("data_files") != settings["data_files"]:
        raise InputError(f"the pairs in {', '.join(settings['data'])} changed since the run in {last.parent} started; "
                         "a run resumes only on the data it started with: choose another --out, or delete its "
                         "last.pt to start over")
    return state


def make_card(cfg: RetinaTrainConfig, name: str):
    """A built-in card for the detector: task detection, boxes, the training grid and window."""
    from ..models.card import ModelCard

    lo, hi = cfg.ct_window
    return ModelCard(
        name=name, task="detection", modality="CT", spacing=tuple(cfg.spacing),
        roi_size=tuple(network_kwargs(cfg)["roi_size"]),
        spatial_dims=3, in_channels=1, out_channels=1,
        classes=[{"index": 0, "name": "nodule", "color": "#ff3030"}],
        intensity=ct_window_card(lo, hi),
        network={"name": "napari_medai.models.retinanet.NoduleRetinaNet", "kwargs": network_kwargs(cfg)},
        output="identity",
        extra={"method": "boxes", "box_mode": "xyzxyz"},
    )


def install_builtin(name: str, cfg: RetinaTrainConfig, summary: dict, command: str, folder=None,
                    replace: bool = False):
    """``replace``: weights another card shares may be written over (``registry.save_builtin``)."""
    import torch

    from ..models.registry import save_builtin

    det = build_detector(cfg)
    det.load_state_dict(torch.load(Path(cfg.out) / "final.pt", map_location="cpu", weights_only=True))
    card = make_card(cfg, name)
    card.description = ("Lung-nodule box detector: a small MONAI RetinaNet (ResNet-FPN, ATSS matcher, "
                        "hard-negative sampler) trained on phantoms; boxes, not masks")
    card.train_command = command
    card.training = {k: summary[k] for k in ("nodules", "iterations", "train_seconds", "final_losses",
                                             "device", "bf16")}
    card.training["cases"] = len(summary["cases"])
    return save_builtin(card, det, folder, replace=replace)
