"""Choosing the lesion probability threshold (the fit itself segments full-size phantoms: `medai train lesion-threshold`)."""


def test_lesion_threshold_needs_a_real_gain_over_the_argmax():
    from napari_medai.training.lesion_threshold import choose_threshold

    # the fit of 2026-11-25: 0.4 beat the argmax by 0.0005 only
    measured = {0.5: 0.4459, 0.4: 0.4464, 0.3: 0.4434, 0.2: 0.4364, 0.15: 0.4292, 0.1: 0.4176}
    assert choose_threshold(measured) == 0.5
    assert choose_threshold({0.5: 0.40, 0.4: 0.43, 0.3: 0.431, 0.2: 0.42}) == 0.4
    assert choose_threshold({0.5: float("nan"), 0.3: float("nan")}) == 0.5
