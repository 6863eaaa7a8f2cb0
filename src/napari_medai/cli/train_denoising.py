"""``medai train denoising --modality CT|MR --out DIR``: deterministic training of a denoiser.

The shipped models were made with the commands recorded in their model cards
(``models/weights/*-denoising.json``, field ``train_command``); see docs/denoising.md.
"""

from __future__ import annotations

import shlex

from ._common import add_training_device


def add_parser(sub) -> None:
    p = sub.add_parser("denoising", help="train the CT low-dose or the MR denoising generator")
    p.add_argument("--modality", required=True, type=str.upper, choices=["CT", "MR"])
    p.add_argument("--out", required=True, help="output folder (checkpoints, weights, model card)")
    p.add_argument("--steps", type=int, default=4000, help="total optimiser steps")
    p.add_argument("--warmup-steps", type=int, default=3000, help="steps of L1+SSIM before the GAN term")
    p.add_argument("--no-adversarial", action="store_true", help="content loss only (no PatchGAN term)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=96,
                   help="patch width in pixels (3D: blocks of patch/2 x patch x patch voxels)")
    p.add_argument("--first-stride", type=int, choices=[1, 2], default=2,
                   help="stride of the generator's first level: 2 (the default, the shipped generators) "
                        "or 1, which keeps a level at full resolution (better, about 4x slower: docs/denoising.md)")
    p.add_argument("--head-channels", type=int, default=0,
                   help="channels of a 3x3 convolution at full resolution before the generator's output, over "
                        "its features and the input (0: none, the default); a cheaper way than --first-stride 1 "
                        "to let the generator read the noise at the image's own grid (docs/denoising.md)")
    p.add_argument("--dims", type=int, choices=[2, 3], default=2,
                   help="2: slice-wise generator (CT 2D, MR 2.5D); 3: a 3D generator (MR only)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; a 2D run (fp32) repeats bit for bit at the same count, a 3D one "
                        "(bf16 where the CPU has it natively) does not")
    p.add_argument("--fp32", action="store_true",
                   help="a 3D run in fp32 even where the CPU has native bf16 (2D runs are always fp32), so that "
                        "it repeats bit for bit")
    add_training_device(p)
    p.add_argument("--resume", default=None,
                   help="another run's last.pt or warmup.pt to start from (same modality and network)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.denoising import train_denoising

    from ..errors import InputError

    from ._common import check_writable, typed_command

    # before any data is read: sizes that cannot train used to write an untrained generator
    # (--steps 0) or fail with a bare ValueError in the first batch
    for option, value in (("--steps", args.steps), ("--batch", args.batch), ("--patch", args.patch)):
        if value < 1:
            raise InputError(f"{option} must be 1 or more, got {value}")
    if args.head_channels < 0:
        raise InputError(f"--head-channels must be 0 (none) or more, got {args.head_channels}")
    check_writable(args.out, "--out", folder=True)
    command = _recorded_command(typed_command(args)[1:], args)
    from ..models import denoising_nets

    default = denoising_nets.GENERATOR_KWARGS["strides"]
    generator = {}
    if args.first_stride != default[0]:
        generator["strides"] = [args.first_stride, *default[1:]]
    if args.head_channels:
        generator["head_channels"] = args.head_channels
    card = train_denoising(
        args.modality, args.out, steps=args.steps, warmup_steps=args.warmup_steps,
        adversarial=not args.no_adversarial, seed=args.seed, batch=args.batch, patch=args.patch,
        threads=args.threads, device=args.device, resume=args.resume, dims=args.dims, generator_kwargs=generator or None,
        fp32=args.fp32,
        train_command=command,
    )
    print(f"wrote {args.out}/{card['name']}.pt and .json ({card['training']['seconds']} s)")
    return 0


# Options that shape the generator.  The card records them even when they were left at their
# defaults: a default that changes later must not change what the recorded command trains.
NETWORK_OPTIONS = ("--dims", "--first-stride", "--head-channels")


def _recorded_command(argv: list[str], args) -> str:
    """The command as typed (quoted so it can be re-run), plus any network option it left out."""
    given = [a.split("=", 1)[0] for a in argv if a.startswith("--") and len(a) > 2]
    # argparse also takes a unique prefix (--head for --head-channels)
    missing = [[option, str(getattr(args, option[2:].replace("-", "_")))]
               for option in NETWORK_OPTIONS if not any(option.startswith(g) for g in given)]
    return " ".join(["medai", *(shlex.quote(a) for a in argv), *(part for pair in missing for part in pair)])
