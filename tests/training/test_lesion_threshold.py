"""Choosing the lesion probability threshold (the fit itself segments full-size phantoms: `medai train lesion-threshold`)."""

import pytest


def test_lesion_threshold_needs_a_real_gain_over_the_argmax():
    from napari_medai.training.lesion_threshold import choose_threshold

    # the fit of 2026-11-25: 0.4 beat the argmax by 0.0005 only
    measured = {0.5: 0.4459, 0.4: 0.4464, 0.3: 0.4434, 0.2: 0.4364, 0.15: 0.4292, 0.1: 0.4176}
    assert choose_threshold(measured) == 0.5
    assert choose_threshold({0.5: 0.40, 0.4: 0.43, 0.3: 0.431, 0.2: 0.42}) == 0.4
    assert choose_threshold({0.5: float("nan"), 0.3: float("nan")}) == 0.5


def test_the_fit_scores_every_threshold_on_scans_with_a_lesion(tmp_path, monkeypatch):
    from fixed_rule_models import install, segmentation_card
    from napari_medai.phantoms import make_chest_ct
    from napari_medai.training import phantom_dataset
    from napari_medai.training.lesion_threshold import REACHES_MM, THRESHOLDS, fit_lesion_threshold

    # small phantoms: seed 1 with two nodules, seed 2 without (skipped: Dice is undefined there)
    monkeypatch.setattr(phantom_dataset, "phantom_for", lambda seed, **_: make_chest_ct(
        seed, n_nodules=2 if seed == 1 else 0, shape=(24, 96, 96), spacing=(2.5, 1.6, 1.6)))
    model = install(segmentation_card("rule-seg", roi_size=(8, 32, 32)), tmp_path)
    logs = []
    fit = fit_lesion_threshold(str(model), [1, 2], log=logs.append, install=False, reaches=REACHES_MM)
    assert set(fit["means"]) == {"off", "mirror-lesions"}  # the mirrored choice tried by default
    for means in fit["means"].values():
        assert set(means) == set(THRESHOLDS) and all(0.0 < m <= 1.0 for m in means.values())
    assert fit["best"] in THRESHOLDS
    # every mirroring choice was also scored with the edges refined at every reach
    for by_reach in fit["refined_means"].values():
        assert set(by_reach) == {None, *REACHES_MM}
        assert all(set(m) == set(THRESHOLDS) for m in by_reach.values())
    assert fit["refine_reach_mm"] in (None, *REACHES_MM)
    # a voxel-wise model scores the same mirrored: four times the time for nothing is not chosen
    assert fit["means"]["off"] == pytest.approx(fit["means"]["mirror-lesions"]) and fit["tta"] == "off"
    assert sum(m.startswith("validation phantom") for m in logs) == 2


def test_mirroring_is_chosen_only_for_a_real_gain():
    from napari_medai.training.lesion_threshold import choose_mirroring

    # the validation phantoms of 2026-11-26 at the argmax: 0.4999 plain, 0.5232 mirrored
    assert choose_mirroring({"off": 0.4999, "mirror": 0.5232}) == "mirror"
    assert choose_mirroring({"off": 0.4999, "mirror": 0.5030}) == "off"
    assert choose_mirroring({"off": 0.5}) == "off"


def test_edge_refinement_is_chosen_only_for_a_real_gain_and_then_the_shortest_reach():
    from napari_medai.training.lesion_threshold import choose_refinement

    assert choose_refinement({None: 0.5232, 1.0: 0.5250, 1.5: 0.5260}) is None
    assert choose_refinement({None: 0.50, 1.0: 0.52, 1.5: 0.531, 2.0: 0.533}) == 1.5
    assert choose_refinement({None: 0.50, 1.0: 0.54, 1.5: 0.531}) == 1.0
    assert choose_refinement({None: float("nan"), 2.0: 0.4}) == 2.0
    assert choose_refinement({None: 0.5}) is None


def test_install_as_writes_a_new_card_for_the_same_weights_and_leaves_the_model_alone(tmp_path, monkeypatch):
    from fixed_rule_models import install, segmentation_card
    from napari_medai.models import load_model, registry
    from napari_medai.phantoms import make_chest_ct
    from napari_medai.training import phantom_dataset
    from napari_medai.training.lesion_threshold import REACHES_MM, fit_lesion_threshold

    monkeypatch.setattr(phantom_dataset, "phantom_for", lambda seed, **_: make_chest_ct(
        seed, n_nodules=2, shape=(24, 96, 96), spacing=(2.5, 1.6, 1.6)))
    card = segmentation_card("rule-seg", roi_size=(8, 32, 32))
    card.scores = {"benchmark": {"nodule_dice": 0.5}, "benchmark_mirror_lesions": {"nodule_dice": 0.6}}
    model = install(card, tmp_path)
    before = model.read_text()
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    fit = fit_lesion_threshold(str(model), [1], log=lambda _: None, reaches=REACHES_MM, install_as="rule-seg-edges",
                               mirroring=("off",))
    assert model.read_text() == before
    variant = load_model(str(tmp_path / "rule-seg-edges.json")).card
    original = load_model(str(model)).card
    assert variant.name == "rule-seg-edges" and variant.weights == original.weights
    assert variant.sha256 == original.sha256
    assert not [k for k in variant.scores if k.startswith("benchmark")]  # the model's figures are not the variant's
    chosen = variant.scores["lesion_threshold_fit"]["chosen"]
    assert chosen["lesion_refine_reach_mm"] == fit["refine_reach_mm"]
    assert variant.extra.get("lesion_refine", {}).get("reach_mm") == fit["refine_reach_mm"]
    assert variant.extra["lesion_threshold"] == fit["best"]
    assert variant.extra["variant_of"] == str(model)  # widgets list the model itself first


def test_the_cheapest_mirroring_within_the_margin_of_the_best_is_chosen():
    from napari_medai.training.lesion_threshold import choose_mirroring

    # limited to lesions, mirroring costs about half of full mirroring on a chest CT
    assert choose_mirroring({"off": 0.4999, "mirror-lesions": 0.5230, "mirror": 0.5232}) == "mirror-lesions"
    assert choose_mirroring({"off": 0.4999, "mirror-lesions": 0.5150, "mirror": 0.5232}) == "mirror"
    assert choose_mirroring({"off": 0.5200, "mirror-lesions": 0.5230, "mirror": 0.5232}) == "off"
    assert choose_mirroring({"mirror-lesions": 0.5, "mirror": float("nan")}) == "mirror-lesions"


def test_unknown_mirroring_choices_are_refused_before_any_phantom(monkeypatch):
    from napari_medai.errors import InputError
    from napari_medai.training import phantom_dataset
    from napari_medai.training.lesion_threshold import fit_lesion_threshold

    monkeypatch.setattr(phantom_dataset, "phantom_for", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    for mirroring in (("off", "auto"), ()):
        with pytest.raises(InputError, match="mirroring choices"):
            fit_lesion_threshold("chest-ct-lung-nodule", [2000], install=False, mirroring=mirroring)


def test_the_highest_confidence_level_within_the_margin_is_chosen():
    from napari_medai.training.lesion_threshold import choose_confidence

    assert choose_confidence({None: 0.5477, 0.9: 0.5600, 0.99: 0.5590}) == 0.99
    assert choose_confidence({None: 0.5477, 0.9: 0.5600, 0.99: 0.5500}) == 0.9
    assert choose_confidence({None: 0.5700, 0.9: 0.5600, 0.99: 0.5500}) is None
    assert choose_confidence({None: 0.5, 0.9: 0.5}) == 0.9  # as good: the stricter rule
    assert choose_confidence({None: float("nan")}) is None


def test_the_fit_scores_confidence_levels_when_asked(tmp_path, monkeypatch):
    from fixed_rule_models import install, segmentation_card
    from napari_medai.phantoms import make_chest_ct
    from napari_medai.training import phantom_dataset
    from napari_medai.training.lesion_threshold import THRESHOLDS, fit_lesion_threshold

    monkeypatch.setattr(phantom_dataset, "phantom_for", lambda seed, **_: make_chest_ct(
        seed, n_nodules=2, shape=(24, 96, 96), spacing=(2.5, 1.6, 1.6)))
    model = install(segmentation_card("rule-seg", roi_size=(8, 32, 32)), tmp_path)
    fit = fit_lesion_threshold(str(model), [1], log=lambda _: None, install=False, mirroring=("off",),
                               reaches=(1.0,), confidences=(0.9,))
    by_gate = fit["confident_means"]["off"]
    assert set(by_gate) == {None, 0.9}
    assert all(set(by_reach) == {None, 1.0} and all(set(m) == set(THRESHOLDS) for m in by_reach.values())
               for by_reach in by_gate.values())


def test_the_cards_command_repeats_the_options_of_the_fit():
    from napari_medai.training.lesion_threshold import CONFIDENCES, REACHES_MM, THRESHOLDS, fit_command

    assert fit_command("m", ("off", "mirror-lesions"), REACHES_MM, (), THRESHOLDS, "m-edges") == (
        "medai train lesion-threshold --model m --try-refinement --install-as m-edges")
    assert fit_command("m", ("mirror-lesions",), REACHES_MM, CONFIDENCES, (0.5,)) == (
        "medai train lesion-threshold --model m --mirroring mirror-lesions --thresholds 0.5 --try-refinement "
        "--try-confidence")


@pytest.mark.parametrize("thresholds", [(), (0.6,), (0.0,), (0.5, -0.1)])
def test_thresholds_outside_zero_to_one_half_are_refused_before_any_phantom(thresholds, tmp_path, monkeypatch):
    from fixed_rule_models import install, segmentation_card
    from napari_medai.errors import InputError
    from napari_medai.training import phantom_dataset
    from napari_medai.training.lesion_threshold import fit_lesion_threshold

    def no_phantom(*_, **__):
        raise AssertionError("a phantom was made")

    monkeypatch.setattr(phantom_dataset, "phantom_for", no_phantom)
    model = install(segmentation_card("rule-seg", roi_size=(8, 32, 32)), tmp_path)
    with pytest.raises(InputError, match=r"\(0, 0.5\]"):
        fit_lesion_threshold(str(model), [1], log=lambda _: None, install=False, thresholds=thresholds)


def test_a_card_given_by_path_is_written_back_there_not_over_a_built_in_of_its_name(tmp_path, monkeypatch):
    """A run's best.json is named after its --out folder; fitted, it used to be written into the
    weights folder under that name (a shipped card replaced without --replace, pointing at best.pt)."""
    import shutil

    from fixed_rule_models import install, segmentation_card
    from napari_medai.errors import InputError
    from napari_medai.models import registry
    from napari_medai.phantoms import make_chest_ct
    from napari_medai.training import phantom_dataset
    from napari_medai.training.lesion_threshold import fit_lesion_threshold

    made = []
    monkeypatch.setattr(phantom_dataset, "phantom_for", lambda seed, **_: made.append(seed) or make_chest_ct(
        seed, n_nodules=2, shape=(24, 96, 96), spacing=(2.5, 1.6, 1.6)))
    weights = tmp_path / "weights"
    shipped = install(segmentation_card("rule-seg", roi_size=(8, 32, 32)), weights)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", weights)
    run = tmp_path / "runs" / "rule-seg"
    run.mkdir(parents=True)
    shutil.copy(weights / "rule-seg.pt", run / "best.pt")
    card = registry.load_card(shipped)
    card.weights = "best.pt"
    registry.save_card(card, run / "best.json")
    before = shipped.read_text()
    # a built-in card cannot name a run's weights: refused before any phantom
    with pytest.raises(InputError, match="not a built-in model's"):
        fit_lesion_threshold(str(run / "best.json"), [1], log=lambda _: None, install_as="rule-seg-v2")
    assert made == [] and not (weights / "rule-seg-v2.json").exists()
    fit = fit_lesion_threshold(str(run / "best.json"), [1], log=lambda _: None, mirroring=("off",))
    assert shipped.read_text() == before and sorted(p.name for p in weights.iterdir()) == ["rule-seg.json",
                                                                                          "rule-seg.pt"]
    fitted = registry.load_card(run / "best.json")
    assert fitted.weights == "best.pt" and fitted.extra["lesion_threshold"] == fit["best"]
