"""Evaluation metrics (MONAI underneath): Dice, HD95, FROC."""

from .detection import FROC_THRESHOLDS, froc, target_mask
from .segmentation import components_found, dice_hd95

__all__ = ["FROC_THRESHOLDS", "components_found", "dice_hd95", "froc", "target_mask"]
