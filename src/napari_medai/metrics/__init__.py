"""Evaluation metrics (MONAI underneath): Dice, HD95, FROC; how found lesions are measured."""

from .detection import (FROC_THRESHOLDS, at_threshold, fp_tp_scores, froc, measurement_errors, measurement_rows,
                        operating_point, target_mask)
from .segmentation import components_found, dice_hd95

__all__ = ["FROC_THRESHOLDS", "at_threshold", "components_found", "dice_hd95", "fp_tp_scores", "froc",
           "measurement_errors", "measurement_rows", "operating_point", "target_mask"]
