"""Post-processing of model outputs: clean label maps, measure classes, extract findings."""

from .components import clean_segmentation, keep_largest_components, remove_small_components
from .findings import Finding, findings_from_probability, lung_rads_category
from .measure import class_volumes

__all__ = [
    "Finding",
    "class_volumes",
    "clean_segmentation",
    "findings_from_probability",
    "keep_largest_components",
    "lung_rads_category",
    "remove_small_components",
]
