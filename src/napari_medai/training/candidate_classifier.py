"""Train the second-stage nodule classifier (false-positive reduction).

A high-recall candidate network (e.g. a segmentation model fine-tuned with a per-lesion loss,
which finds most 4-6 mm nodules but also calls a thousand vessel segments per scan nodules)
proposes candidates: the connected components of its nodule probability above 0.5.  Each
candidate centred on a reference nodule is a positive, the rest negatives.  A
small MONAI ``Classifier`` learns from a 16 x 32 x 32 patch (2 x 1 x 1 mm: 32 mm across) of
the CT and of the candidate probability around each one whether it is a nodule or a vessel.

Numpy and torch are seeded and one process runs: for a given seed and thread count an fp32 run
is bit-identical; the default bf16 autocast (on a CPU with native bf16) is not bit for bit.
Writes ``best.pt`` (best validation score), ``history.json`` and ``card.json`` into ``out``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # false positives per scan at which sensitivity is read


@dataclass
class ClassifierTrainConfig:
    data: tuple  # folders of <case>_image / <case>_label NIfTI pairs (phantom label maps)
    out: str
    candidate_model: str = "chest-ct-lung-nodule"  # card giving the candidate network and its geometry
    candidate_weights: str | None = None  # a state dict replacing the card's weights (the high-recall run)
    val_seeds: tuple = (2000, 2012)  # validation phantoms [first, stop): never trained on, never benchmarked
    candidate_threshold: float = 0.5
    # candidates at every local maximum of thickness this far apart (None: one per component)
    candidate_separation_mm: float | None = 5.0
    patch_shape: tuple = (16, 32, 32)
    patch_step_mm: tuple = (2.0, 1.0, 1.0)
    channels: tuple = (16, 32, 64, 64)
    strides: tuple = (2, 2, 2, 2)
    max_negatives: int = 400  # random negatives kept per training scan (all positives are kept)
    epochs: int = 30
    positive_repeat: int = 3  # each positive appears this often per epoch ...
    negative_ratio: int = 6  # ... beside this many negatives per positive
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    threads: int = 2
    bf16: bool = True  # bf16 autocast where the device runs it natively (training.device)
    device: str = "auto"  # CUDA when present, else CPU
    ct_window: tuple = (-1000.0, 400.0)


def check_config(cfg: ClassifierTrainConfig) -> None:
    """Options checked before the candidate network runs over every scan (minutes): an empty
    --val-seeds range, --epochs 0 (no best.pt written) and the like used to fail after it."""
    from ..errors import InputError

    from .checkpoint import check_counts

    # max_negatives None keeps every negative
    check_counts(cfg, ("epochs", "threads", "max_negatives", "batch_size", "positive_repeat"), optional=("max_negatives",))
    if not cfg.lr > 0:
        raise InputError(f"the learning rate must be positive, got {cfg.lr}")
    first, stop = cfg.val_seeds
    if stop <= first:
        raise InputError(f"--val-seeds FIRST STOP needs STOP > FIRST (got {first} {stop})")
    # the inputs too, before --out is made: a mistyped folder or weights file left an empty run folder
    for folder in cfg.data:
        if not Path(folder).is_dir():
            raise InputError(f"data folder {folder} does not exist")
    if cfg.candidate_weights and not Path(cfg.candidate_weights).is_file():
        raise InputError(f"--candidate-weights {cfg.candidate_weights} is not a file")


def make_classifier_card(cfg: ClassifierTrainConfig, name: str = "lung-nodule-classifier"):
    from ..models.card import ModelCard
    from .seg_data import ct_window_card

    lo, hi = cfg.ct_window
    return ModelCard(
        name=name, task="classification", modality="CT",
        description=("Second-stage lung-nodule classifier: scores each candidate of a high-recall "
                     "nodule network from a 32 mm patch of the CT and of the candidate probability"),
        spacing=tuple(cfg.patch_step_mm), roi_size=tuple(cfg.patch_shape), spatial_dims=3,
        in_channels=2, out_channels=1,
        classes=[{"index": 0, "name": "other", "color": "#808080"}, {"index": 1, "name": "nodule", "color": "#ff3030"}],
        intensity=ct_window_card(lo, hi),
        network={"name": "Classifier", "kwargs": {
            "in_shape": [2, *cfg.patch_shape], "classes": 1, "channels": list(cfg.channels),
            "strides": list(cfg.strides), "num_res_units": 1}},
        output="sigmoid",
        extra={"inputs": ["image", "probability"], "candidate_threshold": cfg.candidate_threshold,
               "candidate_separation_mm": cfg.candidate_separation_mm},
    )


def load_candidate_model(cfg: ClassifierTrainConfig):
    """The candidate network: the card's model, with ``candidate_weights`` when given."""
    import torch

    from ..models import load_model

    model = load_model(cfg.candidate_model)
    if cfg.candidate_weights:
        model.network.load_state_dict(torch.load(cfg.candidate_weights, map_location="cpu", weights_only=True))
    return model


def card_sha256(model) -> str:
    """The candidate model's weights as its card records them ("" for a card without)."""
    return str(getattr(getattr(model, "card", None), "sha256", "") or "")


def case_candidates(model, card, volume, nodule_mask, spacing, threshold, max_negatives, rng, settings=None,
                    separation_mm=None):
    """Patches (float16) and labels (bool) of the candidates kept, the number of reference
    nodules, how many of them have a candidate centred on them, and the number of candidates."""
    from scipy import ndimage

    from ..inference import run_model
    from ..inference.candidates import extract_patches, find_candidates
    from ..inference.confirm import classifier_input

    channel = int(model.card.extra.get("probability_channel", model.card.out_channels - 1))
    prob = run_model(model, volume, spacing, settings)[channel]
    cands = find_candidates(prob, spacing, threshold, separation_mm=separation_mm)
    n = len(cands)
    # A positive is a candidate centred on a nodule (within a voxel of it), not any component
    # that touches one: a vessel joined to a nodule, centred on the vessel, shows no nodule.
    near = ndimage.binary_dilation(nodule_mask, ndimage.generate_binary_structure(3, 3))
    at = np.clip(np.rint(cands.centres).astype(int), 0, np.array(near.shape) - 1)
    hits = near[tuple(at.T)].reshape(n) if n else np.zeros(0, bool)
    keep = np.arange(n)
    if max_negatives is not None:
        neg = np.flatnonzero(~hits)
        keep = np.concatenate([np.flatnonzero(hits), rng.choice(neg, min(max_negatives, len(neg)), replace=False)])
    patches = extract_patches(classifier_input(card, volume, prob), cands.centres[keep], spacing,
                              shape=card.roi_size, step_mm=card.spacing)
    ref, n_ref = ndimage.label(nodule_mask, ndimage.generate_binary_structure(3, 3))
    ref_near = ndimage.grey_dilation(ref, footprint=ndimage.generate_binary_structure(3, 3))
    found = len(np.setdiff1d(np.unique(ref_near[tuple(at.T)]), [0])) if n else 0  # nodules a candidate is centred on
    return patches.astype(np.float16), hits[keep], n_ref, found, n


def sensitivity_at_fp_rates(scores, labels, n_scans, rates=FP_RATES) -> dict:
    """Fraction of positive candidates scored above the threshold that lets ``rate`` negatives
    per scan through, for each rate (candidate level: what the classifier adds)."""
    scores, labels = np.asarray(scores), np.asarray(labels, bool)
    neg = np.sort(scores[~labels])[::-1]
    out = {}
    for rate in rates:
        k = int(rate * n_scans)
        threshold = neg[k] if k < len(neg) else -np.inf
        out[str(rate)] = float(np.mean(scores[labels] > threshold)) if labels.any() else 0.0
    return out


def _augment(x, rng):
    """Flips on every axis and an in-plane transpose: a nodule has no preferred direction."""
    for dim in (2, 3, 4):
        if rng.random() < 0.5:
            x = x.flip(dim)
    if rng.random() < 0.5:
        x = x.transpose(3, 4)
    return x


def _cache_key(cfg, model) -> str:
    """What ``out/candidates.npz`` was collected from; it reads every pair of the data folders."""
    from ..models.registry import sha256_of
    from .segmentation import _data_fingerprint

    keys = ("data", "candidate_model", "candidate_weights", "val_seeds", "candidate_threshold",
            "candidate_separation_mm", "patch_shape",
            "patch_step_mm", "max_negatives", "seed", "ct_window")
    # the contents too, not only the paths: the cache was reused after cases were added to a folder,
    # labels edited, or the candidate weights retrained under the same name
    contents = {"pairs": [_data_fingerprint(folder) for folder in cfg.data], "candidate_card_sha256": card_sha256(model),
                "candidate_weights_sha256": sha256_of(cfg.candidate_weights) if cfg.candidate_weights else None}
    return json.dumps({**{k: getattr(cfg, k) for k in keys}, **contents}, sort_keys=True, default=list)


def _collect(cfg, model, card, out: Path, key: str, log):
    """Training and validation patches, cached in ``out/candidates.npz`` (``_cache_key``): collecting
    them runs the candidate network over every scan (tens of minutes), training on them takes minutes."""
    from ..io import read_volume
    from .phantom_dataset import phantom_for
    from .seg_data import chest_targets, find_pairs

    from ..io.atomic import replace_atomically

    cache = out / "candidates.npz"
    rng = np.random.default_rng([cfg.seed, 1])  # its own stream: a reused cache leaves training unchanged
    try:
        with np.load(cache) as z:
            if str(z["key"]) == key:
                log(f"reusing the candidates collected in {cache}")
                return z["xt"], z["yt"], z["xv"], z["yv"]
    except Exception:  # noqa: BLE001 - none yet, or unreadable (a cut-off zip, an empty file): collected again
        pass
    train_x, train_y = [], []
    for folder in cfg.data:
        for img, lab in find_pairs(folder):
            v, l = read_volume(img), read_volume(lab)
            x, y, n_ref, found, n = case_candidates(model, card, np.asarray(v.data), chest_targets(l.data) == 2,
                                                    v.spacing, cfg.candidate_threshold, cfg.max_negatives, rng,
                                                    separation_mm=cfg.candidate_separation_mm)
            train_x.append(x), train_y.append(y)
            log(f"{img.name}: {n} candidates, {int(y.sum())} on nodules; {found} of {n_ref} nodules found")
    val_x, val_y = [], []
    for seed in range(*cfg.val_seeds):
        ph = phantom_for(seed)
        x, y, n_ref, found, n = case_candidates(model, card, ph.hu, chest_targets(ph.labels) == 2, ph.spacing,
                                                cfg.candidate_threshold, None, rng,
                                                separation_mm=cfg.candidate_separation_mm)
        val_x.append(x), val_y.append(y)
        log(f"validation phantom {seed}: {n} candidates, {int(y.sum())} on nodules; {found} of {n_ref} nodules found")
    xt, yt, xv, yv = np.concatenate(train_x), np.concatenate(train_y), np.concatenate(val_x), np.concatenate(val_y)
    # whole or not at all (np.savez adds .npz to a name without it)
    replace_atomically(cache, lambda tmp: np.savez(tmp, key=key, xt=xt, yt=yt, xv=xv, yv=yv), suffix=".npz")
    return xt, yt, xv, yv


def train_classifier(cfg: ClassifierTrainConfig, log=print, progress=None) -> dict:
    import torch
    from monai.metrics import compute_roc_auc

    from ..models.networks import build_network
    from .device import cpu_state_dict, training_device

    check_config(cfg)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    card = make_classifier_card(cfg)
    # what the run reads first, before --out is made (a mistyped --data or weights file, or data that
    # cannot be read, left an empty run folder): the candidate model and its weights, every pair
    model = load_candidate_model(cfg)
    key = _cache_key(cfg, model)
    out.mkdir(parents=True, exist_ok=True)

    xt, yt, xv, yv = _collect(cfg, model, card, out, key, log)
    xt, xv = torch.from_numpy(xt), torch.from_numpy(xv)
    n_val_scans = cfg.val_seeds[1] - cfg.val_seeds[0]
    if not yv.any():  # no sensitivity to pick an epoch by (torch.cat of nothing, or 0 every epoch)
        from ..errors import InputError

        raise InputError(f"the validation phantoms {cfg.val_seeds[0]}-{cfg.val_seeds[1] - 1} give {len(yv)} "
                         "candidate(s), none on a nodule, so no epoch can be scored: choose more --val-seeds")
    log(f"training candidates {len(yt)} ({int(yt.sum())} positive); validation {len(yv)} ({int(yv.sum())} positive)")

    where = training_device(cfg.device, cfg.bf16)
    net = build_network(card).to(where.device)
    opt = torch.optim.AdamW(net.parameters(), cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    pos, neg = np.flatnonzero(yt), np.flatnonzero(~yt)
    if not len(pos):
        from ..errors import InputError

        raise InputError("the candidate model found no reference nodule in the training data: nothing to learn")
    history, best = [], (-1.0, -1.0)
    for epoch in range(cfg.epochs):
        net.train()
        order = np.concatenate([np.repeat(pos, cfg.positive_repeat),
                                rng.choice(neg, min(len(neg), cfg.negative_ratio * len(pos)), replace=False)])
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            j = order[start:start + cfg.batch_size]
            x = _augment(xt[j].float(), rng).to(where.device)
            with where.autocast():
                logits = net(x)[:, 0].float()
            target = torch.from_numpy(yt[j].astype(np.float32)).to(where.device)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        net.eval()
        with torch.no_grad(), where.autocast():
            s = torch.cat([net(xv[i:i + 512].float().to(where.device))[:, 0].float().cpu()
                           for i in range(0, len(xv), 512)]).numpy()
        sens = sensitivity_at_fp_rates(s, yv, n_val_scans)
        auc = float(compute_roc_auc(torch.from_numpy(s), torch.from_numpy(yv.astype(np.float32)))) \
            if 0 < yv.sum() < len(yv) else float("nan")
        mean_sens = float(np.mean(list(sens.values())))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_auc": auc,
                        "val_sensitivity": sens, "val_mean_sensitivity": mean_sens})
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.4f} val AUC {auc:.4f} "
            f"mean sensitivity {mean_sens:.3f} {sens}")
        if (mean_sens, auc) > best:
            best = (mean_sens, auc)
            torch.save(cpu_state_dict(net), out / "best.pt")
        if progress:
            progress(epoch + 1, cfg.epochs)
    summary = {"config": asdict(cfg), "history": history, "best_val_mean_sensitivity": best[0],
               "best_val_auc": best[1], "time_s": round(time.time() - t0), "bf16": where.bf16,
               "device": where.name,
               "training_candidates": int(len(yt)), "training_positives": int(yt.sum()),
               "validation_candidates": int(len(yv)), "validation_positives": int(yv.sum())}
    (out / "history.json").write_text(json.dumps(summary, indent=1))
    (out / "card.json").write_text(card.to_json())
    return summary


def install_classifier(out: str, name: str = "lung-nodule-classifier", train_command: str = "", folder=None,
                       replace: bool = False) -> Path:
    """Copy ``out/best.pt`` into the built-in weights with its card (sha256, command, scores);
    ``replace``: weights another card shares may be written over (``registry.save_builtin``)."""
    import torch

    from ..models.card import load_card
    from ..models.networks import build_network
    from ..models.registry import save_builtin

    out = Path(out)
    summary = json.loads((out / "history.json").read_text())
    card = load_card(out / "card.json")
    card.name = name
    card.train_command = train_command
    card.training = {k: summary.get(k, "cpu" if k == "device" else None) for k in ("time_s", "bf16", "device", "training_candidates", "training_positives",
                                             "validation_candidates", "validation_positives")}
    card.training["config"] = summary["config"]
    card.scores = {"validation_mean_sensitivity": summary["best_val_mean_sensitivity"],
                   "validation_auc": summary["best_val_auc"]}
    net = build_network(card)
    net.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True))
    return save_builtin(card, net, folder=folder, replace=replace)
