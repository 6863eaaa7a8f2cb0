"""Choosing how the detector measures its findings (training.detection)."""

import numpy as np


def test_mask_refinement_is_chosen_only_for_a_real_gain_and_then_the_shortest_reach():
    from napari_medai.training.detection import choose_mask_refinement

    assert choose_mask_refinement({None: 1.00, 1.0: 0.95, 1.5: 0.96}) is None
    assert choose_mask_refinement({None: 1.00, 1.0: 0.70, 1.5: 0.55, 2.0: 0.50}) == 1.5
    assert choose_mask_refinement({None: 1.00, 1.0: 0.50, 1.5: 0.55}) == 1.0
    assert choose_mask_refinement({None: float("nan"), 2.0: 0.4}) == 2.0
    assert choose_mask_refinement({None: 0.5}) is None


def test_the_measurement_fit_refines_a_nodule_the_network_draws_too_small():
    from napari_medai.training.detection import DEFAULT_EXTRA, measurement_fit

    spacing = (2.0, 1.0, 1.0)
    z, y, x = np.mgrid[:20, :40, :40]
    r = np.sqrt(((z - 10) * 2.0) ** 2 + (y - 20.0) ** 2 + (x - 20.0) ** 2)
    nodule = r <= 4.0
    hu = np.where(nodule, 30.0, -880.0).astype(np.float32)
    prob = np.where(r <= 2.5, 0.9, 0.0).astype(np.float32)  # the network's nodule: 5 mm of 8
    field = np.ones(hu.shape, bool)
    nodules = [{"center_voxel": [10.0, 20.0, 20.0], "diameter_mm": 8.0}]
    extra = {**DEFAULT_EXTRA, "candidate_threshold": 0.5}
    logs = []
    reach, errors = measurement_fit([(prob, field, hu, spacing, nodule, nodules)], extra, log=logs.append)
    assert errors[None]["n"] == 1 and errors[None]["category_agree"] == 0
    assert reach is not None and errors[reach]["diameter_abs_mm"] < errors[None]["diameter_abs_mm"] - 0.1
    assert errors[reach]["category_agree"] == 1
    assert len(logs) == len(errors)
