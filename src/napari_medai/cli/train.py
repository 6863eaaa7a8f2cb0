"""``medai train <task>``: retrain the shipped models (developer command, needs the training data).

Each task is a module under ``napari_medai.cli`` named in ``TASKS`` exposing
``add_parser(subparsers)`` like the top-level subcommands; add ``"segmentation": "train_segmentation"``
(etc.) here to extend it.
"""

from __future__ import annotations

import importlib

TASKS = {
    "segmentation": "train_segmentation",
    "detection": "train_detection",
    "operating-point": "train_operating_point",
    "lesion-threshold": "train_lesion_threshold",
    "nodule-classifier": "train_classifier",
    "confirm": "train_confirm",
    "retinanet": "train_retinanet",
    "denoising": "train_denoising",
}


def add_parser(sub) -> None:
    parser = sub.add_parser("train", help="train or fine-tune a model")
    tasks = parser.add_subparsers(dest="task", metavar="TASK")
    for module in TASKS.values():
        importlib.import_module(f"napari_medai.cli.{module}").add_parser(tasks)
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
