"""``medai train retinanet``: train the RetinaNet box detector on phantom folders."""

from __future__ import annotations

from ._common import add_replace_option


def add_parser(sub) -> None:
    p = sub.add_parser(
        "retinanet",
        help="train a small MONAI RetinaNet lung-nodule detector (boxes) on image/label folders",
        description="Crops are centred on nodules (each nodule equally likely) or anywhere in the lung; "
        "every connected nodule component (label 2 after the chest folding) is one box. Writes last.pt "
        "(resumable: rerun the same command), final.pt and summary.json into --out.",
    )
    p.add_argument("--data", nargs="+", required=True, help="folders of <case>_image/<case>_label NIfTI pairs")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--iterations", type=int, default=1400)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch", type=int, nargs=3, default=(32, 64, 64), metavar=("Z", "Y", "X"))
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--skip-cases", nargs="*", default=(), help="case names left out of training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast where native (faster on such CPUs, but not bit-reproducible)")
    p.add_argument("--install-as", default=None, metavar="NAME",
                   help="after training, install the weights as built-in box detector NAME")
    add_replace_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.retinanet import RetinaTrainConfig, install_builtin, train_retinanet

    from ._common import check_device, check_install_as, check_writable, typed_command

    check_device(args.device)  # before any data is read (it was looked at once every case had loaded)
    check_writable(args.out, "--out", folder=True)  # before any data is read
    check_install_as(args)  # an installed name only with --replace, said before any training
    cfg = RetinaTrainConfig(data=tuple(args.data), out=args.out, iterations=args.iterations,
                            batch_size=args.batch_size, patch=tuple(args.patch), lr=args.lr,
                            skip_cases=tuple(args.skip_cases), seed=args.seed, threads=args.threads,
                            device=args.device, bf16=args.bf16)
    summary = train_retinanet(cfg, log=lambda m: print(m, flush=True))
    if args.install_as:
        command = " ".join(typed_command(args))
        print(f"installed {install_builtin(args.install_as, cfg, summary, command, replace=args.replace)}")
    return 0
