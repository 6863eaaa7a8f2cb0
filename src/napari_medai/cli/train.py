"""``medai train <what>``: training commands, one module per model family.

Each module named in TRAINERS exposes ``add_parser(subparsers)`` like the top-level
subcommands; this file only groups them under ``medai train``.
"""

from __future__ import annotations

import importlib

TRAINERS = {
    "segmentation": "napari_medai.cli.train_segmentation",
    "denoising": "napari_medai.cli.train_denoising",
}


def add_parser(sub) -> None:
    parser = sub.add_parser("train", help="train or fine-tune a model")
    inner = parser.add_subparsers(dest="what", metavar="MODEL_FAMILY")
    for name, module_name in TRAINERS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_parser(inner)
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
