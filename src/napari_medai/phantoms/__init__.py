"""Procedural chest-CT phantom with ground truth, and low-dose CT simulation.

``make_chest_ct(seed, ...)`` builds a chest CT (HU, labels, nodule list) from a seed;
``simulate_low_dose(hu, photons, ...)`` adds projection-domain low-dose noise to any CT
slice or volume (phantom or real).  See docs/phantom.md.
"""

from .chest import ChestPhantom, make_chest_ct
from .lowdose import low_dose_pair, simulate_low_dose
from .tissues import LABEL_NAMES

__all__ = ["ChestPhantom", "LABEL_NAMES", "low_dose_pair", "make_chest_ct", "simulate_low_dose"]
