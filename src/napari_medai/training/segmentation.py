"""Train or fine-tune a 3D segmentation network on NIfTI image/label pairs.

Data order, crops and augmentation all draw from MONAI's seeded generators, and the data loader
runs in the main process: for a given seed, thread count and device, an fp32 run (``bf16=False``,
``--fp32``, or a CPU without native bf16) is bit-identical.  The default bf16 autocast on a CPU
with native bf16 is not: two such runs agree to about 1e-3 in the weights.  Runs
on CUDA when present (``device``), else on the CPU; see ``training.device``.
Writes ``best.pt`` (weights with the best validation Dice), ``last.pt`` (resumable
state) and ``training.json`` (settings and per-epoch scores) into the output folder;
``install_builtin`` (``--install-as``) makes a built-in model of it, weights and card.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, MedaiError
from .checkpoint import check_counts, read_checkpoint, save_atomic, settings_changes
from .device import cpu_state_dict, training_device
from .losses import HardNegativeLoss, PerLesionLoss
from .seg_data import (Case, case_name, component_balanced_indices, ct_window, ct_window_card, find_pairs,
                       load_case)


@dataclass
class SegTrainConfig:
    data: str
    out: str
    init: str | None = None  # built-in model name, card/bundle path, or a .pt state dict
    label_map: str = "none"  # "chest": fold phantom classes into 0 bg / 1 lung / 2 nodule
    spacing: tuple = (2.0, 1.0, 1.0)
    roi: tuple = (48, 96, 96)
    channels: tuple = (16, 32, 64, 128)
    strides: tuple = (2, 2, 2)
    num_res_units: int = 2
    class_names: tuple = ("background", "lung", "nodule")
    class_ratios: tuple = (1, 1, 3)  # crop centre sampling per class: nodules are rare
    # classes whose connected components are equally likely crop centres (lesions of any size);
    # the others draw centres from all their voxels, which favours the large components
    balance_components: tuple = ()
    epochs: int = 20
    iters_per_epoch: int = 60
    batch_size: int = 2
    lr: float = 2e-3
    val_cases: int = 3
    seed: int = 0
    threads: int = 2  # CPU threads (also on a GPU run, for data augmentation)
    bf16: bool = True  # bf16 autocast where the device runs it natively (training.device)
    device: str = "auto"  # CUDA when present, else CPU; "cpu" reproduces the shipped weights
    # Dice per crop (each crop's lesions count the same) instead of over the whole batch, where a
    # 25 mm nodule's thousands of voxels drown a 4 mm nodule's twenty in the other crop
    dice_per_crop: bool = False
    # classes (e.g. (2,) for nodules) that also get a Dice + CE per connected lesion (training.losses
    # .PerLesionLoss), weighted by component_loss_weight: every nodule counts the same
    component_loss: tuple = ()
    component_loss_weight: float = 1.0
    component_ce_weight: float = 1.0  # the per-lesion CE inside that term
    # components smaller than this (spicule fragments cut off on the model grid) are neither
    # balanced crop centres nor scored by the per-lesion loss; 1 keeps every component
    min_component_voxels: int = 1
    # label values of the training files (before the chest folding: phantom vessels 3, airways 4)
    # whose voxels get their own cross-entropy against the lesion classes (training.losses
    # .HardNegativeLoss), weighted by hard_negative_weight: vessels must not be called nodules
    hard_negatives: tuple = ()
    hard_negative_weight: float = 1.0
    ct_window: tuple = (-1000.0, 400.0)
    # how intensities reach the network, as the card tells inference: "ct_window" (HU in
    # ct_window to 0..1, for CT), "percentile" (each image's 0.5-99.5 percentiles to 0..1, for MR
    # and other images without a fixed scale) or "zscore"
    intensity: str = "ct_window"
    modality: str = "CT"
    extra: dict = field(default_factory=dict)


INTENSITIES = ("ct_window", "percentile", "zscore")


def intensity_card(cfg: SegTrainConfig) -> dict:
    """The card's ``intensity`` entry for ``cfg``: inference maps each image the same way."""
    if cfg.intensity == "ct_window":
        return ct_window_card(*cfg.ct_window)
    if cfg.intensity == "percentile":
        return {"kind": "percentile", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0, "clip": False}
    if cfg.intensity == "zscore":
        return {"kind": "zscore"}
    raise InputError(f"intensity must be one of {INTENSITIES}, got {cfg.intensity!r}")


def _intensity(cfg: SegTrainConfig) -> Callable[[np.ndarray], np.ndarray]:
    """The map training applies to each image: the one inference applies (for a CT window the
    numpy form the shipped weights were trained with; else the engine's own, inference.intensity)."""
    import torch

    from ..inference.intensity import fit_intensity

    if cfg.intensity == "ct_window":
        return ct_window(*cfg.ct_window)
    spec = intensity_card(cfg)

    def apply(image: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return fit_intensity(spec, t).apply(t).numpy()

    return apply


def check_config(cfg: SegTrainConfig) -> None:
    """Every option a run needs, checked before any data loads (a bad one used to surface as a
    scheduler's or a crop transform's traceback after minutes of loading)."""
    check_counts(cfg, ("epochs", "iters_per_epoch", "batch_size", "threads"))
    if not cfg.lr > 0:
        raise InputError(f"--lr must be positive, got {cfg.lr}")
    if len(cfg.spacing) != 3 or not all(float(v) > 0 for v in cfg.spacing):
        raise InputError(f"--spacing must be three positive sizes in mm, got {tuple(cfg.spacing)}")
    if len(cfg.channels) < 2 or len(cfg.strides) != len(cfg.channels) - 1:
        raise InputError(f"--strides needs one value fewer than --channels (a stride between each two levels), "
                         f"got channels {tuple(cfg.channels)} and strides {tuple(cfg.strides)}")
    if min(cfg.channels) < 1 or int(cfg.num_res_units) < 0:
        raise InputError(f"--channels must be at least 1 and --res-units at least 0, got "
                         f"{tuple(cfg.channels)} and {cfg.num_res_units}")
    if any(int(v) not in (1, 2) for v in cfg.strides):  # MONAI's 3-voxel kernels: larger strides fail mid-run
        raise InputError(f"--strides must each be 1 (keep the grid) or 2 (halve it), got {tuple(cfg.strides)}")
    factor = int(np.prod(cfg.strides)) if cfg.strides else 1
    if any(int(r) < factor or int(r) % factor for r in cfg.roi):
        raise InputError(f"--roi {tuple(cfg.roi)}: each size must be a multiple of {factor} (the UNet halves "
                         f"it {sum(int(v) == 2 for v in cfg.strides)} times), e.g. {tuple(max(factor, int(r) // factor * factor) for r in cfg.roi)}")
    # instance norm needs more than one voxel per channel: a bottom level of one voxel (--roi 8 8 8
    # halved three times) passed and failed in the first training step, after loading
    if all(int(r) == factor for r in cfg.roi):
        raise InputError(f"--roi {tuple(cfg.roi)}: the UNet halves it to one voxel at its bottom level, where "
                         f"instance norm fails: make at least one size {2 * factor} or more")
    if len(cfg.class_names) < 2:
        raise InputError(f"--classes needs background and at least one class, got {cfg.class_names}")
    ratios = [float(r) for r in cfg.class_ratios]  # crop centre weights (RandCropByLabelClassesd failed mid-run)
    if len(ratios) != len(cfg.class_names) or min(ratios) < 0 or not sum(ratios) > 0:
        raise InputError(f"--class-ratios needs one weight of 0 or more per class ({len(cfg.class_names)}), "
                         f"not all 0, got {tuple(cfg.class_ratios)}")
    intensity_card(cfg)
    if cfg.intensity == "ct_window" and not cfg.ct_window[0] < cfg.ct_window[1]:
        raise InputError(f"--ct-window must be LOW HIGH with LOW < HIGH, got {tuple(cfg.ct_window)}")
    if not (Path(cfg.out) / "last.pt").exists():  # a resumed or finished run never loads --init again
        _check_init(cfg.init)
    if not run_name(cfg.out).strip():  # the card of best.pt is named after it: said now, not after epoch 1
        raise InputError(f"--out {cfg.out} has no folder name to name the run's model after: choose a named "
                         "folder, e.g. --out runs/my-model")


def _check_init(spec) -> None:
    """``--init`` names a file, a folder or a built-in model that is there (a missing one used to
    be found only after every case had loaded)."""
    if not spec:
        return
    path = Path(spec).expanduser()
    if path.exists():
        return
    if "/" in spec or "\\" in spec or path.suffix:
        raise InputError(f"--init {spec} does not exist")
    from ..models.registry import get_card

    try:
        get_card(spec)
    except MedaiError as exc:
        raise InputError(f"--init {spec}: {exc}") from None


def run_name(out) -> str:
    """The name of the run's model card (best.json): its --out folder's name, resolved, so that
    --out . names it after the current folder (Path('.').name is '')."""
    return Path(os.path.abspath(out)).name  # not resolve(): a symlinked --out runs/latest is "latest"


CLASS_COLORS = ("#000000", "#4aa3ff", "#ff3030", "#30d060", "#ffd000", "#c040ff", "#ff8000", "#00d0d0")


def make_card(cfg: SegTrainConfig, name: str = "segmentation-model", modality: str | None = None):
    """The model card describing what this configuration trains (network, geometry, classes)."""
    from ..models.card import ModelCard

    return ModelCard(
        name=name,
        task="segmentation",
        modality=modality or cfg.modality,
        spacing=tuple(cfg.spacing),
        roi_size=tuple(cfg.roi),
        spatial_dims=3,
        in_channels=1,
        out_channels=len(cfg.class_names),
        classes=[
            {"index": i, "name": n, "color": CLASS_COLORS[i % len(CLASS_COLORS)]} for i, n in enumerate(cfg.class_names)
        ],
        intensity=intensity_card(cfg),
        network={
            "name": "UNet",
            "kwargs": {"channels": list(cfg.channels), "strides": list(cfg.strides),
                       "num_res_units": cfg.num_res_units, "norm": "instance"},
        },
        output="softmax",
    )


def build_unet(cfg: SegTrainConfig):
    from ..models.networks import build_network

    return build_network(make_card(cfg))


def _train_transforms(cfg: SegTrainConfig):
    from monai import transforms as T

    # the hard-negative mask is cropped and warped with the label (nearest neighbour)
    k = ["image", "label"] + (["negative"] if cfg.hard_negatives else [])
    modes = ("bilinear",) + ("nearest",) * (len(k) - 1)
    return T.Compose(
        [
            T.RandCropByLabelClassesd(
                keys=k, label_key="label", spatial_size=cfg.roi, ratios=list(cfg.class_ratios),
                num_classes=len(cfg.class_names), num_samples=cfg.batch_size, indices_key="indices",
                allow_smaller=True, warn=False,
            ),
            T.SpatialPadd(keys=k, spatial_size=cfg.roi),
            T.RandFlipd(keys=k, prob=0.5, spatial_axis=2),
            T.RandRotate90d(keys=k, prob=0.0, spatial_axes=(1, 2)),
            T.RandAffined(
                keys=k, prob=0.3, rotate_range=(0.15, 0.05, 0.05), scale_range=(0.15, 0.15, 0.15),
                mode=modes, padding_mode="border",
            ),
            # Scanner variety: contrast, blur (thick slices, soft kernels) and noise (low dose).
            T.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            T.RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
            T.RandGaussianSmoothd(keys="image", sigma_x=(0.0, 0.6), sigma_y=(0.0, 1.0), sigma_z=(0.0, 1.0), prob=0.3),
            T.RandGaussianNoised(keys="image", std=0.03, prob=0.5),
            T.RandAdjustContrastd(keys="image", gamma=(0.8, 1.25), prob=0.3),
            T.ToTensord(keys=k),
        ]
    )


def _load_cases(cfg: SegTrainConfig, log) -> list[Case]:
    pairs = find_pairs(cfg.data, log)
    cases = []
    for img, lab in pairs:
        # modality: a CT run on MR images (or the reverse) used to train, and the model then refused
        # its own training images at inference; refused here, before any training
        cases.append(load_case(img, lab, cfg.spacing, _intensity(cfg), map_labels=cfg.label_map == "chest",
                               negative_values=cfg.hard_negatives, modality=cfg.modality))
        log(f"loaded {cases[-1].name}: {cases[-1].image.shape}")
    n_classes = len(cfg.class_names)
    values = {c.name: np.unique(c.target) for c in cases}  # one pass a case, sorted
    tops = {name: int(v[-1]) for name, v in values.items()}
    worst = max(tops, key=tops.get)
    if tops[worst] >= n_classes:
        raise InputError(f"{worst}'s labels go up to {tops[worst]} but the model has {n_classes} classes "
                         f"{cfg.class_names}: give --classes a name for each label value")
    seen = set().union(*(v.tolist() for v in values.values()))
    missing = [name for k, name in enumerate(cfg.class_names) if k and k not in seen]
    if missing:  # it would train to never predict them and score 0 Dice on them
        log(f"warning: no training label holds class(es) {missing}; check --classes ({cfg.class_names})")
    return cases


def _split(cases: list[Case], cfg: SegTrainConfig, log) -> tuple[list[Case], list[Case]]:
    """(validation, training) cases.  Validation takes the first cases (in file order, so runs
    stay deterministic) whose labels hold foreground: an all-background case has no Dice, and
    when it came first every epoch scored 0 and best.pt stayed at epoch 1.  One case with
    foreground always stays in training; all-background cases validate only where too few others
    do.  The log names the validation cases."""
    n_val = min(cfg.val_cases, max(1, len(cases) // 5)) if len(cases) > 1 else 0
    if not n_val:
        return [], cases
    labelled = [i for i, c in enumerate(cases) if c.target.any()]
    picks = labelled[: min(n_val, max(0, len(labelled) - 1))]
    picks += [i for i in range(len(cases)) if i not in labelled][: n_val - len(picks)]
    val = [cases[i] for i in sorted(picks)]
    log(f"validation case(s): {', '.join(c.name for c in val)}")
    passed = [cases[i].name for i in range(max(picks)) if i not in labelled and i not in picks]
    if passed:
        log(f"  not used for validation, their labels are all background: {', '.join(passed)}")
    present = set().union(*(np.unique(c.target).tolist() for c in val)) - {0}
    if not present:
        log("warning: no validation case holds a foreground label, so there is no Dice: the checkpoint "
            "score is the validation loss")
    elif len(present) < len(cfg.class_names) - 1:
        absent = [n for k, n in enumerate(cfg.class_names) if k and k not in present]
        log(f"class(es) {absent} are in no validation case: the checkpoint score leaves them out")
    return val, [c for i, c in enumerate(cases) if i not in picks]


def _validate(net, cases, cfg, where) -> tuple[dict, dict, float]:
    """Validation Dice per foreground class present in at least one validation case, per balanced
    class the fraction of its reference components found (the Dice alone barely moves when a
    4 mm nodule is missed), and the mean validation loss (Dice + CE): the score when no
    validation case holds foreground.  A class in no validation case has no Dice and is left out:
    MONAI's mean over its all-NaN (empty) cases is 0, which pulled every epoch's score down."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric

    from ..metrics import components_found

    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    n = len(cfg.class_names)
    found = {c: [] for c in cfg.balance_components}  # per class: hit flag of each reference component
    present, losses = set(), []
    net.eval()
    with torch.inference_mode():
        for case in cases:
            x = torch.from_numpy(case.image)[None, None].to(where.device)
            with where.autocast():
                logits = sliding_window_inference(x, cfg.roi, 4, net, overlap=0.25, mode="gaussian").float()
            labels = logits.argmax(1).cpu()
            target = torch.from_numpy(case.target.astype(np.int64))[None]
            losses.append(float(loss_fn(logits.cpu(), target[:, None])))
            present.update(torch.unique(target).tolist())
            pred = torch.nn.functional.one_hot(labels, n).permute(0, 4, 1, 2, 3)
            ref = torch.nn.functional.one_hot(target, n)
            metric(pred, ref.permute(0, 4, 1, 2, 3))
            for c, hits in found.items():
                hits += [h for _, h in components_found(labels[0].numpy() == c, case.target == c)]
    dice = metric.aggregate().cpu().numpy()
    net.train()
    recall = {cfg.class_names[c]: float(np.mean(hits)) for c, hits in found.items() if hits}
    dice = {name: float(d) for k, (name, d) in enumerate(zip(cfg.class_names[1:], dice), start=1) if k in present}
    return dice, recall, float(np.mean(losses)) if losses else float("nan")


def train_segmentation(cfg: SegTrainConfig, log=print, progress=None) -> dict:
    """Run the training; returns a summary with the best validation Dice per class."""
    import torch
    from monai.data import DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    check_config(cfg)
    torch.set_num_threads(cfg.threads)
    set_determinism(seed=cfg.seed)
    _source_model.cache_clear()  # a model re-installed under the same name since is read anew
    out = Path(cfg.out)
    # once, before loading: the data the run starts with is what a resume is checked against
    settings = _settings(cfg)
    previous = _previous_run(out, cfg, settings)  # before any loading: a wrong --out is said at once
    if previous is not None and previous["epoch"] + 1 >= cfg.epochs:
        return _complete_run(out, cfg, previous, log)
    t0 = time.time()
    cases = _load_cases(cfg, log)
    val, train = _split(cases, cfg, log)
    items = [{"image": c.image[None], "label": c.target[None], "indices": _crop_centres(c, i, cfg)}
             for i, c in enumerate(train)]
    if cfg.hard_negatives:
        for item, c in zip(items, train):
            item["negative"] = c.negative[None]
    log(f"{len(train)} training and {len(val)} validation cases at spacing {cfg.spacing} mm")

    net = build_unet(cfg)
    if cfg.init and previous is None:
        load_matching(net, _init_weights(cfg.init), cfg.init, log)
    where = training_device(cfg.device, cfg.bf16)
    net.to(where.device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    total_iters = cfg.epochs * cfg.iters_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_iters, pct_start=0.1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=not cfg.dice_per_crop)
    lesion_loss = PerLesionLoss(cfg.component_loss, cfg.component_ce_weight, cfg.min_component_voxels) \
        if cfg.component_loss else None
    lesion_classes = cfg.component_loss or cfg.balance_components or (len(cfg.class_names) - 1,)
    negative_loss = HardNegativeLoss(lesion_classes) if cfg.hard_negatives else None

    # -inf: the first epoch is always kept (a loss-based score without validation cases is
    # negative, and DiceCE is often above 1)
    start_epoch, best, history = 0, -float("inf"), []
    if previous is not None:  # resume a killed run with the same settings
        state = previous
        net.load_state_dict(state["net"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed after epoch {state['epoch'] + 1} of {cfg.epochs}")

    def run_so_far() -> dict:  # the summary so far: at the end, and for best.json whenever best.pt is written
        return {"config": asdict(cfg), "history": history, "best_score": best, "time_s": time.time() - t0,
                "bf16": where.bf16, "device": where.name, "n_train": len(train), "n_val": len(val)}

    # only now, once the cases, --init and the device are read: a case, weights file or device that
    # failed left an empty run folder
    out.mkdir(parents=True, exist_ok=True)
    ds = Dataset(items, transform=_train_transforms(cfg))
    net.train()
    for epoch in range(start_epoch, cfg.epochs):
        set_determinism(seed=cfg.seed + epoch)  # each epoch reproducible even after a resume
        loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=0)
        losses, it = [], 0
        while it < cfg.iters_per_epoch:
            for batch in loader:
                x, y = batch["image"].float().to(where.device), batch["label"].long().to(where.device)
                with where.autocast():
                    logits = net(x)
                loss = loss_fn(logits.float(), y)
                if lesion_loss is not None:
                    loss = loss + cfg.component_loss_weight * lesion_loss(logits.float(), y)
                if negative_loss is not None:
                    loss = loss + cfg.hard_negative_weight * negative_loss(
                        logits.float(), batch["negative"].to(where.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                it += 1
                if progress:
                    progress(epoch * cfg.iters_per_epoch + it, total_iters)
                if it >= cfg.iters_per_epoch:
                    break
        dice, recall, val_loss = _validate(net, val, cfg, where) if val else ({}, {}, None)
        if dice:
            score = _score(dice, recall)
        else:  # no foreground in validation: the validation loss; no validation case: the training loss
            score = -(val_loss if val else float(np.mean(losses)))
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": dice,
                 "val_component_recall": recall, "score": score, "time_s": time.time() - t0}
        history.append(entry if not val else {**entry, "val_loss": val_loss})
        if score > best:
            best = score
            save_atomic(cpu_state_dict(net), out / "best.pt")
            # its card beside it at once: after Ctrl+C the run's best.pt runs as it is
            write_run_card(cfg, run_so_far())
        save_atomic(
            {"net": cpu_state_dict(net), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
             "best": best, "history": history, "torch_rng": torch.get_rng_state(), "settings": settings,
             **{k: v for k, v in run_so_far().items() if k in RUN_FACTS}},
            out / "last.pt",
        )
        found = f"component recall {recall} " if recall else ""
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.4f} val dice {dice} {found}"
            f"best {best:.4f} ({time.time() - t0:.0f} s)")
    summary = run_so_far()
    _write_summary(out, summary)
    write_run_card(cfg, summary)
    return summary


# The settings a resumed run must share with the run that wrote last.pt (not threads or device,
# which change the speed; bf16 is one: its steps differ from fp32's).
_RESUME_KEYS = ("data", "init", "label_map", "spacing", "roi", "channels", "strides", "num_res_units",
                "class_names", "class_ratios", "balance_components", "epochs", "iters_per_epoch", "batch_size",
                "lr", "val_cases", "seed", "dice_per_crop", "component_loss", "component_loss_weight",
                "component_ce_weight", "min_component_voxels", "hard_negatives", "hard_negative_weight",
                "ct_window", "intensity", "bf16")


def _settings(cfg: SegTrainConfig, fingerprint: bool = True) -> dict:
    """``fingerprint=False``: without the pairs' sha256 (``data_files`` None, not compared), for a
    check made before --data is complete (``run_files``)."""
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k in _RESUME_KEYS}
    if settings["data"]:  # runs/x, runs/x/ and its absolute path are one folder, made yet or not
        settings["data"] = str(Path(settings["data"]).resolve())
    if settings["init"] and Path(settings["init"]).exists():  # a path, not a built-in model's name
        settings["init"] = str(Path(settings["init"]).resolve())
    settings["data_files"] = _data_fingerprint(cfg.data) if fingerprint else None
    return settings


def run_files(out, cfg: SegTrainConfig) -> list[str] | None:
    """The image files (relative to --data) that the run in ``out`` started on, once its settings
    are found to match ``cfg`` (an InputError as a resume would give, if not); None when ``out``
    holds no run, or one from before the files were recorded.  For a command that is about to add
    files to --data (``medai train segmentation --phantoms``): it asks first, so that a resume the
    new files would block is refused before they are written."""
    state = _previous_run(Path(out), cfg, _settings(cfg, fingerprint=False))
    files = None if state is None else state["settings"].get("data_files")
    return None if files is None else sorted(files)


def _data_fingerprint(data) -> dict:
    """{image file (relative to ``data``): [its sha256, its label file's name and sha256]} for
    each pair: the same --data path with an annotation added or corrected is other data, and a
    run started on the old data must not resume on it.  The contents, not the modification
    times: a copy of the same data (cp, rsync, a checkout, a cluster's scratch) resumes."""
    from ..models.registry import sha256_of

    folder = Path(data)
    return {image.relative_to(folder).as_posix(): [sha256_of(image), label.relative_to(folder).as_posix(),
                                                   sha256_of(label)]
            for image, label in find_pairs(folder)}


def _previous_run(out: Path, cfg: SegTrainConfig, mine: dict | None = None):
    """The state in ``out/last.pt`` to resume from, or None when there is none.  A run with other
    settings or other data there is refused: it used to be resumed as if it were this one (a new
    --data, or new annotations in the same one, trained nothing and reported the old score; more
    --epochs crashed the LR schedule).  A complete run comes back too (``_complete_run``).
    ``mine``: ``_settings(cfg)``."""
    last = out / "last.pt"
    if not last.exists():
        return None
    state = read_checkpoint(last)
    mine, theirs = mine if mine is not None else _settings(cfg), state.get("settings")
    if theirs is None:
        raise InputError(f"{out} holds a run from an older version, whose settings are not recorded: "
                         "choose another --out (or delete its last.pt to start over)")
    # a last.pt from before the precision was recorded resumes as it did
    changed = settings_changes(theirs, mine, [k for k in _RESUME_KEYS if k in theirs or k != "bf16"])
    if changed:
        raise InputError(f"{out} holds a run with other settings ({'; '.join(changed)}); a run resumes only "
                         "with the same settings: choose another --out, or delete its last.pt to start over")
    # a last.pt written before the data was recorded has no fingerprint: nothing to compare
    before, now = theirs.get("data_files"), mine["data_files"]
    if before is not None and now is not None and before != now:
        added = [case_name(k) for k in now if k not in before]
        removed = [case_name(k) for k in before if k not in now]
        edited = [case_name(k) for k in now if k in before and now[k] != before[k]]
        what = "; ".join(f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                         for label, names in (("added", added), ("removed", removed), ("changed", edited)) if names)
        raise InputError(f"the pairs in {cfg.data} changed since the run in {out} started ({what}); a run resumes "
                         "only on the data it started with: choose another --out to train on the new data, or "
                         "delete its last.pt to start over")
    return state


def _complete_run(out: Path, cfg: SegTrainConfig, state: dict, log) -> dict:
    """The summary of a run in ``out`` that already trained all its epochs, with the same settings
    and data: nothing is trained again (it used to "resume", train nothing and rewrite its card
    with the case counts of the moment), and the summary comes back so that the same command
    with --install-as still installs it, and a pipeline re-run after a later stage's failure
    goes on past it.  training.json is written when a kill came between last.pt and it."""
    log(f"{out} holds this run complete (all {cfg.epochs} epoch(s) trained, best score {state['best']:.4f}): "
        f"nothing to train; its model is {out / 'best.pt'}")
    done = out / "training.json"
    if done.is_file():
        return json.loads(done.read_text())
    # what the summary says beyond the history: in last.pt since it was found missing (a run killed
    # here could never be finished: KeyError 'time_s'); a last.pt from before lacks it (.get() below)
    summary = {"config": asdict(cfg), "history": state["history"], "best_score": state["best"],
               **{k: state[k] for k in RUN_FACTS if k in state}}
    _write_summary(out, summary)
    write_run_card(cfg, summary)
    return summary


# what run_so_far() adds to the history: last.pt keeps them, so a complete run's summary can be rebuilt
RUN_FACTS = ("time_s", "bf16", "device", "n_train", "n_val")


def _write_summary(out: Path, summary: dict) -> None:
    """``out/training.json``, whole or not at all (it marks the run as finished)."""
    from ..io.atomic import write_text_atomic

    write_text_atomic(out / "training.json", json.dumps(summary, indent=2, default=list))



def _score(dice: dict, recall: dict) -> float:
    """Checkpoint score: mean validation Dice, with each balanced class's component recall
    counted as one more term (so a checkpoint that finds more small lesions can win)."""
    return float(np.mean(list(dice.values()) + list(recall.values())))


def _crop_centres(case: Case, index: int, cfg: SegTrainConfig):
    """Candidate crop centres per class (flat voxel indices) for one training case."""
    from monai.transforms import ClassesToIndices

    n = len(cfg.class_names)
    per_voxel = ClassesToIndices(num_classes=n)(case.target[None])
    if not cfg.balance_components:
        return per_voxel
    balanced = component_balanced_indices(case.target, n, seed=cfg.seed * 100003 + index,
                                          min_voxels=cfg.min_component_voxels)
    return [balanced[c] if c in cfg.balance_components else per_voxel[c] for c in range(n)]


def _init_weights(spec: str):
    """State dict to fine-tune from: a .pt file (weights in any wrapping
    ``registry.unwrap_state_dict`` knows, or a run's last.pt), a model card (.json), a MONAI
    bundle folder, or a built-in model's name.  The global random state is left as it was, so
    the run that follows is the same whatever was loaded."""
    import torch

    path = Path(spec).expanduser()
    if path.suffix == ".pt" and path.is_file():
        try:  # weights only: a checkpoint from elsewhere cannot run code as it loads
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:  # noqa: BLE001 - a run's last.pt holds its RNG state too
            state = _own_last_checkpoint(path)
        return state["net"] if isinstance(state, dict) and "net" in state and "opt" in state else state
    try:
        return _source_model(spec).network.state_dict()
    except (MedaiError, ValueError) as exc:
        raise InputError(f"--init {spec}: {exc}") from None


@functools.lru_cache(maxsize=1)
def _source_model(spec: str):
    """The --init model (card, bundle or name), loaded once a run: its weights start the run,
    and its card's class rules go into the run's card at the end (``_inherited_extra``).  The
    global random state is left as it was (building a network draws from it)."""
    import torch

    from ..models import load_model

    with torch.random.fork_rng():
        return load_model(spec)


def _own_last_checkpoint(path: Path):
    """A last.pt this trainer wrote (it records its settings), loaded in full; any other file
    that needs more than weights-only loading is refused."""
    import torch

    state = torch.load(path, weights_only=False, map_location="cpu")
    if not (isinstance(state, dict) and "settings" in state and "net" in state):
        raise InputError(f"--init {path.name}: it holds more than weights and is no training run's last.pt, "
                         "so it is not loaded (a pickled file can run code)")
    return state


def load_matching(net, state: dict, source: str, log) -> None:
    """Load every tensor of ``state`` whose name and shape match ``net``'s; the rest (an output
    layer for other classes) keep their fresh initialisation, and the log says which.  Nothing
    in common: an InputError (another architecture)."""
    from ..models.registry import unwrap_state_dict

    own = net.state_dict()
    state = unwrap_state_dict(state, own.keys())
    if not isinstance(state, dict):
        raise InputError(f"--init {source} holds no state dict")
    matching = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matching:
        raise InputError(f"--init {source}: none of its weights fit this network (another architecture? "
                         "the channels, strides and residual units must match)")
    net.load_state_dict(matching, strict=False)
    fresh = [k for k in own if k not in matching]
    if fresh:
        log(f"initialised from {source}; {len(fresh)} of {len(own)} tensor(s) differ in shape or are new and "
            f"start fresh (e.g. {fresh[0]}); for a new class table that is the output layer")
    else:
        log(f"initialised from {source}")


CHECKPOINTS = ("best", "last")


def install_builtin(name: str, cfg: SegTrainConfig, summary: dict, command: str, description: str = "",
                    checkpoint: str = "best", replace: bool = False):
    """Copy the run's weights into the package's built-in models with a complete model card.

    ``checkpoint``: "best" (``best.pt``, the epoch with the best validation score) or "last"
    (the final epoch, from ``last.pt``): the per-epoch score is read on a few validation
    cases, so a larger validation set may prefer the fully annealed final epoch.
    ``replace``: weights another card shares may be written over (``registry.save_builtin``).
    """
    from ..models.registry import save_builtin

    card, net = run_card(name, cfg, summary, command, description, checkpoint)
    return save_builtin(card, net, replace=replace)


def write_run_card(cfg: SegTrainConfig, summary: dict) -> Path | None:
    """``OUT/best.json``: a model card for ``OUT/best.pt``, so the run's weights run at once with
    ``medai segment --model OUT/best.pt`` (or the .json), the widget and ``medai evaluate``,
    without installing them into the package.  None when no epoch was kept.  Written through a
    temporary file each time best.pt is, so an interrupted run's best.pt has its card."""
    from ..models.card import save_card
    from ..models.registry import sha256_of

    out = Path(cfg.out)
    if not (out / "best.pt").is_file():
        return None
    card, _ = run_card(run_name(out), cfg, summary, "", checkpoint="best", build=False)
    card.weights, card.sha256 = "best.pt", sha256_of(out / "best.pt")
    return save_card(card, out / "best.json")  # atomic (save_card)


def run_card(name: str, cfg: SegTrainConfig, summary: dict, command: str, description: str = "",
             checkpoint: str = "best", build: bool = True):
    """(card, network with the chosen checkpoint's weights, or None unless ``build``) for a run."""
    import torch

    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    card = make_card(cfg, name)
    card.description = description or (
        f"MONAI 3D UNet segmenting {', '.join(cfg.class_names[1:])}; trained by napari-medai's own command"
    )
    card.train_command = command
    if cfg.label_map == "chest":  # post-processing rules the API applies (see api.segment)
        card.extra = {"organs": {"1": 2}, "lesions": [2], "min_lesion_mm3": 10.0, "lesion_hosts": [1],
                      "inside_body": [1, 2], "extrapulmonary_air": {"organ": 1},
                      "label_table": "0 background, 1 lung field (with its vessels and airways), 2 nodule"}
    else:
        card.extra = _inherited_extra(cfg)
    card.training = {
        "data": cfg.data, "epochs": cfg.epochs, "iters_per_epoch": cfg.iters_per_epoch,
        "batch_size": cfg.batch_size, "seed": cfg.seed, "threads": cfg.threads, "bf16": summary.get("bf16"),
        "device": summary.get("device", "cpu"),
        "lr": cfg.lr, "init": cfg.init, "class_ratios": list(cfg.class_ratios),
        "balance_components": list(cfg.balance_components), "dice_per_crop": cfg.dice_per_crop,
        "component_loss": list(cfg.component_loss), "component_loss_weight": cfg.component_loss_weight,
        "component_ce_weight": cfg.component_ce_weight, "min_component_voxels": cfg.min_component_voxels,
        # None: a run finished from a last.pt that did not record them yet
        "time_s": round(summary["time_s"]) if summary.get("time_s") is not None else None,
        "n_train": summary.get("n_train"), "n_val": summary.get("n_val"),
    }
    # report the Dice of the epoch whose weights are shipped
    # the epochs scored on validation cases (by their Dice, or their validation loss where no
    # validation case held foreground); "score" is what training kept best.pt by
    scored = [h for h in summary["history"] if h["val_dice"] or "val_loss" in h]
    if checkpoint == "best":
        shipped = max(scored, key=lambda h: h["score"] if "score" in h else _score(
            h["val_dice"], h.get("val_component_recall", {})), default=None)
    else:
        shipped = scored[-1] if scored else None
    card.scores = {"val_dice": shipped["val_dice"] if shipped else {},
                   "best_epoch" if checkpoint == "best" else "epoch": shipped["epoch"] + 1 if shipped else None,
                   "checkpoint": checkpoint,
                   "val_component_recall": shipped.get("val_component_recall", {}) if shipped else {},
                   "best_val_score": summary["best_score"]}
    if not build:
        return card, None
    if checkpoint == "best":
        state = torch.load(Path(cfg.out) / "best.pt", weights_only=True)
    else:
        state = torch.load(Path(cfg.out) / "last.pt", weights_only=False, map_location="cpu")["net"]
    net = build_unet(cfg)
    net.load_state_dict(state)
    return card, net


# The post-processing rules that describe the classes, not the weights: a fine-tuned model keeps
# them.  Thresholds, edge refinement and the mirroring choice were fitted to the source weights
# on validation phantoms, so they are not carried over (fit them again: medai train lesion-threshold).
STRUCTURAL_EXTRA = ("organs", "lesions", "lesion_hosts", "inside_body", "extrapulmonary_air", "label_table",
                    "min_lesion_mm3")


def _inherited_extra(cfg: SegTrainConfig) -> dict:
    """The class-describing post-processing (``STRUCTURAL_EXTRA``) of the model fine-tuned from
    (``--init`` a card, bundle or built-in name, or a .pt with its card: ``_init_card``) when the
    class table is the same: a model fine-tuned from chest-ct-lung-nodule keeps its lung clean-up
    and lesion rules.  Otherwise nothing."""
    if not cfg.init:
        return {}
    try:
        source = _init_card(cfg.init)
    except Exception:  # noqa: BLE001 - the run already loaded it; a card that no longer loads gives nothing
        return {}
    if source is None:
        return {}
    names = tuple(c["name"] for c in sorted(source.classes, key=lambda c: c["index"]))
    if names != tuple(cfg.class_names):
        return {}
    return {k: v for k, v in (source.extra or {}).items() if k in STRUCTURAL_EXTRA}


def _init_card(spec: str):
    """The card of the --init model, or None.  A .pt file is bare weights, but a run's best.pt
    has its card beside it (best.json), and a run's last.pt that run's best.json (the same
    network and classes): without them, fine-tuning from a run's .pt dropped its class rules."""
    from ..models.card import card_for_path

    path = Path(spec).expanduser()
    if path.suffix != ".pt":
        return _source_model(spec).card
    card = card_for_path(path)
    if card is None and path.name == "last.pt":
        card = card_for_path(path.with_name("best.json"))
    return card
