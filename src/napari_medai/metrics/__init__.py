"""Evaluation metrics (MONAI underneath): Dice, HD95, FROC; how found lesions are measured."""

from .detection import FROC_THRESHOLDS, froc, measurement_errors, measurement_rows, target_mask
from .segmentation import components_found, dice_hd95

__all__ = ["FROC_THRESHOLDS", "components_found", "dice_hd95", "froc", "measurement_errors", "measurement_rows",
           "target_mask"]
