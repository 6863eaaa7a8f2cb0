"""Deterministic training of the denoising generators (``medai train denoising``).

Schedule: ``warmup_steps`` of content loss only (L1 + SSIM), then, when ``adversarial``, a small
least-squares PatchGAN term (MONAI ``PatchDiscriminator`` + ``PatchAdversarialLoss``).  The
learning rate follows a cosine from ``lr`` to ``lr/100`` over all ``steps``.

Determinism and resuming: every batch is a pure function of ``(seed, step)``, networks are
initialised from ``seed``, and torch runs on one CPU thread by default; a checkpoint
(``last.pt``, every ``checkpoint_every`` steps, plus ``warmup.pt`` at the end of the warm-up)
holds both networks and optimisers, so a killed run restarted with the same command continues
bit-exactly; it also holds the run's settings, and a restart with other settings is refused.  A run
without the adversarial term can start from another run's ``warmup.pt`` (``resume``): both then
share the warm-up and differ only in the adversarial phase.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..io.atomic import all_or_nothing, pending, replace_atomically, write_text_atomic
from ..models.registry import sha256_of
from .checkpoint import settings_changes

MODEL_NAMES = {"CT": "ct-lowdose-denoising", "MR": "mr-denoising"}
CONTENT_SSIM_WEIGHT = 0.5
SSIM_SLICE_STEP = 4  # 3D runs: the SSIM term looks at every fourth slice of a block (cost)
ADVERSARIAL_WEIGHT = 2e-3
# The settings a run restarted into its folder (last.pt) must share with the run that wrote it; not
# threads, device or checkpoint_every, which change the speed, not what is trained.
# bf16: a run begun in bf16 and resumed with --fp32 was recorded as fp32 (a reviewer's finding); a
# checkpoint written before the key was recorded is not compared on it
_RESUME_KEYS = ("modality", "network", "seed", "steps", "warmup_steps", "adversarial", "batch", "patch", "lr", "bf16")
# What another run's checkpoint (``resume``, e.g. its warmup.pt) must share: its networks must fit.
_START_KEYS = ("modality", "network")
_STATE_KEYS = ("step", "gen", "disc", "opt_g", "opt_d", "history", "elapsed")


def _lr_at(step: int, steps: int, lr: float) -> float:
    return lr / 100 + 0.5 * (lr - lr / 100) * (1 + math.cos(math.pi * min(step, steps) / steps))


def _load_data(modality: str, seed: int, out_dir: Path, log, dims: int = 2, patch: int = 96):
    from . import denoising_data as dd

    if modality == "MR" and dims == 3:
        return dd.mr_source_3d(patch // dd.MR_3D_DEPTH_DIVISOR), dd.mr_batch_3d
    if modality == "MR":
        return dd.mr_source("train"), dd.mr_batch
    # Simulating low dose is the slow part: the pairs are cached, with the seed and recipe that made
    # them (a cache of another seed, or one cut off by a kill, is simulated again).
    cache, recipe = out_dir / "ct_pairs.npz", dd.ct_pairs_recipe(seed)
    try:
        with np.load(cache) as npz:
            if "recipe" in npz.files and str(npz["recipe"]) == recipe:
                count = sum(name.startswith("clean") for name in npz.files)
                return [(npz[f"clean{i}"], npz[f"noisy{i}"]) for i in range(count)], dd.ct_batch
        log(f"{cache} was made with another seed or recipe: simulating the CT pairs again")
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - a cache cut off by a kill: make it again
        log(f"{cache} cannot be read ({type(exc).__name__}): simulating the CT pairs again")
    pairs = dd.ct_pairs(seed, progress=log)
    out_dir.mkdir(parents=True, exist_ok=True)  # the run's folder, made once its data were read
    partial = cache.with_name(f".{cache.name}.partial")
    try:  # through a temporary file: a run killed while writing leaves no cut-off cache
        with open(partial, "wb") as f:
            np.savez(f, recipe=np.array(recipe),
                     **{f"{k}{i}": p[j] for i, p in enumerate(pairs) for j, k in enumerate(("clean", "noisy"))})
        os.replace(partial, cache)
    finally:
        partial.unlink(missing_ok=True)
    return pairs, dd.ct_batch


def _read_checkpoint(path: Path, fix: str) -> dict:
    """The training state in ``path``, read with ``weights_only`` (it may be any file a user named);
    anything but a last.pt or warmup.pt of this version is refused with one sentence ending in ``fix``."""
    import torch

    from ..errors import InputError

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - a card, a cut-off file, a pickle holding code: no traceback
        raise InputError(f"{path} cannot be read as a training checkpoint ({type(exc).__name__}): it is cut off, "
                         f"or no last.pt or warmup.pt of medai train denoising; {fix}") from None
    if not isinstance(state, dict) or not all(k in state for k in _STATE_KEYS):
        raise InputError(f"{path} is not a last.pt or warmup.pt of medai train denoising (weights alone cannot be "
                         f"resumed); {fix}")
    if not isinstance(state.get("settings"), dict):
        raise InputError(f"{path} was written by an older version, which did not record the run's settings; {fix}")
    return state


def _state_to_resume(out_dir: Path, resume, settings: dict):
    """(checkpoint path, state) to continue from, or (None, None).  The folder's own last.pt wins
    over ``resume`` (restarting a killed run continues it) and must hold a run with the same
    settings: it used to be resumed as if it were this run (a new seed changed nothing, yet the
    card recorded it; another modality failed in load_state_dict)."""
    from ..errors import InputError

    last = out_dir / "last.pt"
    if last.exists():
        fix = "choose another --out, or delete its last.pt to start over"
        state = _read_checkpoint(last, fix)
        theirs = state["settings"]
        changed = settings_changes(theirs, settings, [k for k in _RESUME_KEYS if k in theirs or k != "bf16"])
        if changed:
            raise InputError(f"{out_dir} holds a run with other settings ({'; '.join(changed)}); a run resumes "
                             f"only with the same settings: {fix}")
        return last, state
    if not resume:
        return None, None
    fix = "resume from a last.pt or warmup.pt of a run with the same modality and network, or leave out --resume"
    state = _read_checkpoint(Path(resume), fix)
    theirs = state["settings"]
    changed = settings_changes(theirs, settings, _START_KEYS)
    if changed:
        raise InputError(f"{resume} holds networks of another kind ({'; '.join(changed)}); {fix}")
    if state["step"] > settings["steps"]:
        raise InputError(f"{resume} is at step {state['step']}, past --steps {settings['steps']}: "
                         "raise --steps, or resume from an earlier checkpoint")
    return Path(resume), state


def _patch_shape(patch: int, dims: int) -> tuple[int, ...]:
    """The training patch's spatial shape: (patch, patch), or (depth, patch, patch) in 3D."""
    from .denoising_data import MR_3D_DEPTH_DIVISOR

    return (patch, patch) if dims == 2 else (patch // MR_3D_DEPTH_DIVISOR, patch, patch)


def _discriminator_fits(batch: int, patch: int, dims: int = 2) -> bool:
    """Whether the PatchDiscriminator trains on ``batch`` patches of ``patch`` pixels: its
    convolutions need pixels left at the end, and each batch norm more than one value per channel
    (a 16-pixel patch in a batch of 1 failed only after the warm-up, hours into a run)."""
    import torch

    from ..models.denoising_nets import build_discriminator

    disc, counts = build_discriminator(spatial_dims=dims).eval(), []
    for module in disc.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.register_forward_pre_hook(lambda _, args: counts.append(batch * args[0][0, 0].numel()))
    try:
        with torch.no_grad():
            disc(torch.zeros(1, 1, *_patch_shape(patch, dims)))
    except RuntimeError:
        return False
    return all(n > 1 for n in counts)


def _smallest_slice(source):
    """(rows, columns) of the smallest training slice of a CT pair list or an MR source; None for
    a source of another kind (``data`` in tests), whose batch function checks its own sizes."""
    from . import denoising_data as dd

    if isinstance(source, dd.MRSource):
        shapes = [v.shape[-2:] for v in source.volumes]
    elif isinstance(source, list) and source and all(isinstance(p, tuple) for p in source):
        shapes = [p[0].shape[-2:] for p in source]
    else:
        return None
    return min(s[0] for s in shapes), min(s[1] for s in shapes)


def train_denoising(
    modality: str,
    out_dir,
    *,
    steps: int = 6000,
    warmup_steps: int = 3000,
    adversarial: bool = True,
    seed: int = 0,
    batch: int = 8,
    patch: int = 96,
    lr: float = 1e-3,
    threads: int = 1,
    device: str = "auto",
    checkpoint_every: int = 250,
    resume=None,
    dims: int = 2,
    data=None,
    generator_kwargs=None,
    train_command: str = "",
    log=print,
    fp32: bool = False,
) -> dict:
    """Train one generator; writes ``<name>.pt`` + ``<name>.json`` (model card) into ``out_dir``.

    ``data``: optional ``(source, batch_fn)`` to train on something else (tests use tiny arrays);
    ``batch_fn(source, seed, step, batch, patch)`` returns (noisy, clean, per-patch loss weights).
    ``dims`` 3 (MR only) trains a 3D generator on blocks of (patch // 2, patch, patch) voxels in
    bf16 autocast where the CPU or GPU has native bf16 (2D runs stay in fp32, as the shipped 2D
    generators were trained): a 3D step costs ten 2D ones.  Returns the card dict.
    """
    import torch
    from monai.losses import PatchAdversarialLoss, SSIMLoss

    from ..models.denoising_nets import GENERATOR_KWARGS, build_discriminator, build_generator
    from . import denoising_data as dd
    from .device import cpu_state_dict, training_device
    from .checkpoint import save_atomic

    from ..errors import InputError

    modality = modality.upper()
    if modality not in MODEL_NAMES:
        raise ValueError(f"modality must be CT or MR, got {modality!r}")
    # callers other than the CLI too; all before any data is read (these used to fail with a traceback)
    for name, value, least in (("steps", steps, 1), ("batch", batch, 1), ("patch", patch, 1), ("threads", threads, 1),
                               ("seed", seed, 0), ("warmup_steps", warmup_steps, 0)):
        if value < least:
            raise InputError(f"{name} must be {least} or more, got {value}")
    if resume and not Path(resume).is_file():  # it used to be ignored: a run from scratch, unannounced
        raise InputError(f"the checkpoint to resume from, {resume}, is not a file")
    if dims not in (2, 3) or (dims == 3 and modality != "MR"):
        raise InputError(f"dims must be 2, or 3 for MR (CT training data are single slices), got {dims} for {modality}")
    # MR is 2.5D (the slice and its neighbours as channels) or 3D, CT 2D: see docs/denoising.md.
    in_channels = 2 * dd.MR_NEIGHBOURS + 1 if modality == "MR" and dims == 2 else 1
    gen_kwargs = {**GENERATOR_KWARGS, "spatial_dims": dims, "in_channels": in_channels, **(generator_kwargs or {})}
    # the generator halves the patch once per stride, and instance norm needs 2 x 2 pixels at the bottom
    multiple = math.prod(gen_kwargs["strides"])
    step_multiple = multiple * (1 if dims == 2 else dd.MR_3D_DEPTH_DIVISOR)  # a 3D block is half as deep
    if patch % step_multiple or patch < 2 * step_multiple:
        fits = max(2, round(patch / step_multiple)) * step_multiple
        raise InputError(f"the training patch ({patch} pixels) must be a multiple of {step_multiple} and at least "
                         f"{2 * step_multiple} for this generator: use a patch of {fits}")
    gan = adversarial and steps > warmup_steps  # what runs is what the card records
    if gan and not _discriminator_fits(batch, patch, dims):
        raise InputError(f"the adversarial term cannot train on patches of {patch} pixels in batches of {batch} "
                         "(the discriminator's last layers keep too few values): use a larger patch or batch, or "
                         "no adversarial term")
    # 2D: fp32, as the shipped 2D generators were trained (no bf16 run of the GAN was ever compared);
    # 3D: bf16 where native (0.42 against 0.77 s a step on this project's 2-core CPU)
    where = training_device(device, bf16=dims == 3 and not fp32)  # fp32: a 3D run that repeats bit for bit
    settings = {"modality": modality, "network": json.loads(json.dumps(gen_kwargs)), "seed": seed, "steps": steps,
                "warmup_steps": warmup_steps, "adversarial": adversarial, "batch": batch, "patch": patch, "lr": lr,
                "bf16": where.bf16}
    out_dir = Path(out_dir)
    ckpt, state = _state_to_resume(out_dir, resume, settings)
    if adversarial and not gan:
        log(f"no adversarial step runs (steps {steps} <= warmup steps {warmup_steps}): "
            "the card records adversarial false")
    torch.set_num_threads(threads)
    source, batch_fn = data or _load_data(modality, seed, out_dir, log, dims, patch)
    # the slice size is known only now; still before any network is built or step taken
    smallest = _smallest_slice(source)
    if smallest is not None and patch > min(smallest):
        raise InputError(f"the training patch ({patch} pixels) is larger than the smallest training slice "
                         f"({smallest[0]} x {smallest[1]} pixels): use a patch of {min(smallest)} or less")
    # after the data: a training source that is missing (nilearn's MNI152, pydicom-data) left an empty run folder
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    gen = build_generator(**gen_kwargs).to(where.device)
    disc = build_discriminator(spatial_dims=dims).to(where.device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr / 4, betas=(0.5, 0.999))
    ssim_2d = SSIMLoss(spatial_dims=2, data_range=1.0)

    def ssim_loss(out, clean):
        if dims == 2:
            return ssim_2d(out, clean)
        # 3D: 2D SSIM on every SSIM_SLICE_STEP-th slice of each block.  MONAI's 3D SSIM (an 11^3
        # Gaussian) took 3.2 s a step, every slice in 2D 0.7 s, every fourth 0.4 s (bf16, 2 threads).
        pick = slice(None, None, SSIM_SLICE_STEP)
        return ssim_2d(out[:, :, pick].transpose(1, 2).flatten(0, 1), clean[:, :, pick].transpose(1, 2).flatten(0, 1))
    adv_loss = PatchAdversarialLoss(criterion="least_squares")

    start, history, elapsed = 0, [], 0.0
    if state is not None:
        gen.load_state_dict(state["gen"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        start, history, elapsed = state["step"], state["history"], state["elapsed"]
        log(f"resumed from {ckpt} at step {start}")

    def save(path: Path, step: int):
        save_atomic({"step": step, "gen": cpu_state_dict(gen), "disc": cpu_state_dict(disc),
                      "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "history": history,
                      "elapsed": elapsed, "settings": settings}, path)

    t0 = time.perf_counter() - elapsed
    running = []
    for step in range(start, steps):
        for group in opt_g.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        noisy_np, clean_np, weight_np = batch_fn(source, seed, step, batch, patch)
        noisy, clean = torch.from_numpy(noisy_np).to(where.device), torch.from_numpy(clean_np).to(where.device)
        weight = torch.from_numpy(weight_np).to(where.device)
        with where.autocast():
            out = gen(noisy)
        out = out.float()
        # L1 per patch times its weight (MR: inverse noise level, so quiet images count as much as
        # noisy ones), plus SSIM, which is already relative to the local contrast.
        l1 = ((out - clean).abs().flatten(1).mean(1) * weight).mean()
        loss = l1 + CONTENT_SSIM_WEIGHT * ssim_loss(out, clean)
        use_gan = adversarial and step >= warmup_steps
        if use_gan:
            with where.autocast():
                real, fake = disc(clean)[-1].float(), disc(out.detach())[-1].float()
            loss_d = 0.5 * (adv_loss(real, target_is_real=True, for_discriminator=True)
                            + adv_loss(fake, target_is_real=False, for_discriminator=True))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            with where.autocast():
                judged = disc(out)[-1].float()
            loss = loss + ADVERSARIAL_WEIGHT * adv_loss(judged, target_is_real=True, for_discriminator=False)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        running.append(loss.item())
        done = step + 1
        if done % 100 == 0 or done == steps:
            elapsed = time.perf_counter() - t0
            history.append({"step": done, "loss": float(np.mean(running)), "seconds": round(elapsed, 1)})
            running = []
            log(f"step {done}/{steps} loss {history[-1]['loss']:.5f} ({elapsed:.0f} s){' +GAN' if use_gan else ''}")
        if done == warmup_steps:
            elapsed = time.perf_counter() - t0
            save(out_dir / "warmup.pt", done)
        if done % checkpoint_every == 0 or done == steps:
            elapsed = time.perf_counter() - t0
            save(out_dir / "last.pt", done)

    name = MODEL_NAMES[modality]
    weights = out_dir / f"{name}.pt"
    state = cpu_state_dict(gen)
    # each whole or not at all, as the checkpoints, and both or neither (new weights under an earlier
    # run's card failed its sha256)
    with all_or_nothing():
        replace_atomically(weights, lambda tmp: torch.save(state, tmp))
        card = make_card(modality, weights, gen_kwargs, _pinned(train_command, where.name), {
            "seed": seed, "steps": steps, "warmup_steps": warmup_steps, "adversarial": gan,
            "adversarial_weight": ADVERSARIAL_WEIGHT if gan else 0.0,
            "content": f"L1 (weighted per patch, see data) + {CONTENT_SSIM_WEIGHT} SSIM",
            "batch": batch, "patch": patch, "lr": lr, "threads": threads, "device": where.name,
            "precision": "bf16" if where.bf16 else "fp32", "seconds": round(elapsed, 1),
            "history": history[-5:],
        })
        write_text_atomic(out_dir / f"{name}.json", json.dumps(card, indent=2))
    return card


def _pinned(command: str, device: str) -> str:
    """``command`` naming the device the run used: left at --device auto, it trains on a GPU where
    there is one, which does not give the CPU run's bytes (an audit helper's finding)."""
    if not command:
        return command
    words = command.split(" ")
    for i, word in enumerate(words):
        if word.lower() == "--device=auto":
            words[i] = f"--device={device}"
        elif word == "--device" and i + 1 < len(words) and words[i + 1].lower() == "auto":
            words[i + 1] = device  # typed auto: the same ambiguity as leaving it out
    if not any(word == "--device" or word.startswith("--device=") for word in words):
        words += ["--device", device]
    return " ".join(words)


def make_card(modality: str, weights: Path, gen_kwargs: dict, train_command: str, training: dict) -> dict:
    from . import denoising_data as dd
    from .seg_data import ct_window_card

    if modality == "CT":
        lo, hi = dd.CT_HU_RANGE
        intensity = ct_window_card(lo, hi, clip=False)
        data = (f"pydicom-data CT slices {list(dd.PYDICOM_DATA_CT)}, every slice of pyradiomics 3.0.1's lung2 chest CT "
                f"and phantom seeds {list(dd.PHANTOM_SEEDS)} "
                f"with simulate_low_dose at {dd.CT_PHOTONS_RANGE[0]:.0e}-{dd.CT_PHOTONS_RANGE[1]:.0e} photons/ray; never lung1")
    else:
        # Training scaled each volume by its 99th percentile (background is 0, the lower end).
        intensity = {"kind": "percentile", "lower": 0.0, "upper": 99.0, "b_min": 0.0, "b_max": 1.0, "clip": False}
        data = (f"Colin27 T1 axial slices outside {list(dd.COLIN_GUARD)} ({dd.MR_COLIN_SHARE:.0%} of patches) + "
                f"MNI152 2009a T1 (nilearn), Rician noise {dd.MR_NOISE_RANGE[0]:.0%}-{dd.MR_NOISE_RANGE[1]:.0%} of the "
                f"99th percentile (log-uniform), L1 weighted by {dd.MR_REFERENCE_SIGMA:g}/sigma")
    from ..models.card import ModelCard

    dims = int(gen_kwargs.get("spatial_dims", 2))
    if modality == "CT":
        description = "2D residual UNet denoiser for low-dose CT, applied slice by slice on the input grid"
    elif dims == 2:
        description = ("2.5D residual UNet denoiser for MR (Rician noise): a slice and its neighbours in, "
                       "applied slice by slice on the input grid")
    else:
        description = ("3D residual UNet denoiser for MR (Rician noise), applied to the whole volume on its "
                       "own grid (in overlapping blocks when the volume is large)")
    # spatial_dims and in_channels are card fields (the network builder passes them on).
    kwargs = {k: v for k, v in gen_kwargs.items() if k not in ("spatial_dims", "in_channels")}
    card = {
        "name": MODEL_NAMES[modality], "task": "denoising", "modality": modality,
        "description": description,
        # On the input's own grid: no resampling (spacing None); roi_size is the training patch.
        "spacing": None, "roi_size": list(_patch_shape(training.get("patch", 96), dims)), "spatial_dims": dims,
        "in_channels": gen_kwargs.get("in_channels", 1), "out_channels": 1, "classes": [], "intensity": intensity,
        "network": {"name": "napari_medai.models.denoising_nets.ResidualDenoiser", "kwargs": kwargs},
        # The network itself returns input - noise: its output is already the image.
        "output": "identity", "weights": Path(weights).name, "sha256": sha256_of(pending(weights)),
        "train_command": train_command, "training": {**training, "data": data}, "scores": {}, "extra": {},
    }
    ModelCard.from_dict(card)  # fail here, not at load time, if the card is invalid
    return card


def install_weights(run_dir, dest_dir, name: str, suffix: str = "") -> Path:
    """Copy a finished run's ``<name>.pt`` + card to ``dest_dir`` as ``<name><suffix>``.

    The package ships one variant per model (``suffix=""``); the benchmark keeps the other one
    (e.g. ``suffix="-noadv"``) in benchmarks/denoising_variants/.  Returns the card path.
    """
    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    card = json.loads((run_dir / f"{name}.json").read_text())
    weights = dest_dir / f"{name}{suffix}.pt"
    path = dest_dir / f"{name}{suffix}.json"
    # each file whole or not at all (an interrupted copy left cut-off weights under the old card), and
    # both or neither
    with all_or_nothing():
        replace_atomically(weights, lambda tmp: shutil.copy2(run_dir / f"{name}.pt", tmp))
        card.update(name=f"{name}{suffix}", weights=weights.name, sha256=sha256_of(pending(weights)))
        write_text_atomic(path, json.dumps(card, indent=2) + "\n")
    return path
