"""A minimal MONAI bundle, written by the test, loads and runs through load_model + run_model."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from napari_medai.inference import InferenceSettings, run_model
from napari_medai.models.bundle import BundleTrustWarning
from napari_medai.models.loading import load_model

NETWORK_DEF = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
               "channels": [4, 8], "strides": [2], "num_res_units": 0}
INFERENCE = {
    "imports": ["$import torch"],
    "bundle_root": "/somewhere/else",
    "output_dir": "$@bundle_root + '/eval'",
    "device": "$torch.device('cpu')",
    "network_def": NETWORK_DEF,
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164,
         "b_min": 0.0, "b_max": 1.0, "clip": True},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [48, 48, 16], "sw_batch_size": 4,
                "overlap": 0.5},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]},
}
METADATA = {
    "name": "Tiny spleen", "version": "0.1.0", "description": "test bundle",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                             "spatial_shape": [96, 96, 96], "dtype": "float32"}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "channel_def": {"0": "background", "1": "spleen"}}},
    },
}


@pytest.fixture
def bundle(tmp_path):
    folder = tmp_path / "tiny_spleen"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(INFERENCE))
    (folder / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    torch.manual_seed(0)
    network = UNet(**{k: v for k, v in NETWORK_DEF.items() if k != "_target_"}).eval()
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    return folder, network


def test_bundle_card_from_configs(bundle):
    folder, _ = bundle
    with pytest.warns(BundleTrustWarning, match="execute Python code"):
        model = load_model(folder)
    card = model.card
    assert card.name == "Tiny spleen" and card.modality == "CT"
    assert card.spacing == (2.0, 1.5, 1.5)  # pixdim (x, y, z) in RAS -> (z, y, x)
    assert card.roi_size == (16, 48, 48)
    assert card.intensity == {"kind": "ct_window", "a_min": -57.0, "a_max": 164.0, "b_min": 0.0,
                              "b_max": 1.0, "clip": True}
    assert card.class_names == {0: "background", 1: "spleen"}
    assert card.output == "softmax" and card.axes == "RAS"
    assert card.in_channels == 1 and card.out_channels == 2


def test_bundle_runs_and_matches_a_hand_written_pipeline(bundle, rng):
    folder, network = bundle
    with pytest.warns(BundleTrustWarning):
        model = load_model(folder)
    # 8 slices of 4 mm and 24 x 24 pixels of 3 mm become exactly one 16 x 48 x 48 window.
    volume = rng.normal(50, 80, size=(8, 24, 24)).astype(np.float32)
    out = run_model(model, volume, spacing=(4.0, 3.0, 3.0), settings=InferenceSettings(precision="fp32"))
    assert out.shape == (2, 8, 24, 24)

    x = F.interpolate(torch.from_numpy(volume)[None, None], size=(16, 48, 48), mode="trilinear")
    x = ((x + 57) / (164 + 57)).clamp(0, 1)
    ras = x.permute(0, 1, 4, 3, 2).flip(2, 3)  # (z, y, x) = S, P, L  ->  (R, A, S)
    with torch.inference_mode():
        prob = torch.softmax(network(ras), dim=1)
    prob = prob.flip(2, 3).permute(0, 1, 4, 3, 2)
    expected = F.interpolate(prob, size=(8, 24, 24), mode="trilinear")[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_bundle_with_missing_weights(bundle):
    from napari_medai.errors import ModelError

    folder, _ = bundle
    (folder / "models" / "model.pt").unlink()
    with pytest.warns(BundleTrustWarning), pytest.raises(ModelError, match="models/model.pt is missing"):
        load_model(folder)


def _bundle_with(tmp_path, bundle, inference=None, metadata=None):
    """The tiny bundle with parts of its configs replaced."""
    folder, network = bundle
    (folder / "configs" / "inference.json").write_text(json.dumps(inference or INFERENCE))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata or METADATA))
    return folder


@pytest.mark.parametrize("pixdim, roi, spacing, roi_zyx", [
    ([1.5, 2.0], [48, 48, 16], (2.0, 2.0, 1.5), (16, 48, 48)),  # MONAI pads pixdim with its last value
    (1.5, 16, (1.5, 1.5, 1.5), (16, 16, 16)),  # one number for every axis
])
@pytest.mark.filterwarnings("ignore::napari_medai.models.bundle.BundleTrustWarning")
def test_bundle_sizes_given_as_monai_reads_them(tmp_path, bundle, pixdim, roi, spacing, roi_zyx):
    import copy

    inference = copy.deepcopy(INFERENCE)
    inference["preprocessing"]["transforms"][3]["pixdim"] = pixdim
    inference["inferer"]["roi_size"] = roi
    card = load_model(_bundle_with(tmp_path, bundle, inference=inference)).card
    assert card.spacing == spacing and card.roi_size == roi_zyx


@pytest.mark.filterwarnings("ignore::napari_medai.models.bundle.BundleTrustWarning")
def test_bundle_metadata_that_cannot_be_read_gives_a_model_error(tmp_path, bundle):
    import copy

    from napari_medai.errors import ModelError

    inference = copy.deepcopy(INFERENCE)
    inference["inferer"]["roi_size"] = [48, 48]  # two sizes for a 3D network
    with pytest.raises(ModelError, match="roi_size has 2 values for a 3D network"):
        load_model(_bundle_with(tmp_path, bundle, inference=inference))
    metadata = copy.deepcopy(METADATA)
    metadata["network_data_format"]["outputs"]["pred"]["channel_def"] = {"background": 0, "spleen": 1}
    with pytest.raises(ModelError, match="channel_def must map channel numbers to names"):
        load_model(_bundle_with(tmp_path, bundle, metadata=metadata))
    metadata = copy.deepcopy(METADATA)
    metadata["network_data_format"]["inputs"] = ["image"]  # not a mapping: read as absent
    assert load_model(_bundle_with(tmp_path, bundle, metadata=metadata)).card.in_channels == 1


def _bundle_inference_by_monai(network, volume, overlap, mode):
    """The bundle's own pipeline by hand (as above) on a volume of several windows, with MONAI's
    sliding_window_inference stepping and blending them."""
    from monai.inferers import sliding_window_inference

    size = tuple(2 * n for n in volume.shape[:1]) + tuple(2 * n for n in volume.shape[1:])
    x = F.interpolate(torch.from_numpy(volume)[None, None], size=size, mode="trilinear")
    x = ((x + 57) / (164 + 57)).clamp(0, 1)
    ras = x.permute(0, 1, 4, 3, 2).flip(2, 3)
    with torch.inference_mode():
        logits = sliding_window_inference(ras, (48, 48, 16), 4, network, overlap=overlap, mode=mode)
        prob = torch.softmax(logits, dim=1)
    prob = prob.flip(2, 3).permute(0, 1, 4, 3, 2)
    return F.interpolate(prob, size=volume.shape, mode="trilinear")[0].numpy()


def test_bundle_windows_overlap_and_blend_as_its_inferer_says(bundle, rng):
    # The inferer says overlap 0.5 and no mode (MONAI's default: "constant"); the card carries both
    # and the engine steps and blends as MONAI does, where its own defaults (0.25, gaussian) differ.
    folder, network = bundle
    with pytest.warns(BundleTrustWarning):
        model = load_model(folder)
    assert model.card.extra["sw_overlap"] == 0.5 and model.card.extra["sw_mode"] == "constant"
    volume = rng.normal(50, 80, size=(16, 40, 40)).astype(np.float32)  # 32 x 80 x 80 on the bundle's grid
    out = run_model(model, volume, spacing=(4.0, 3.0, 3.0), settings=InferenceSettings(precision="fp32"))
    np.testing.assert_allclose(out, _bundle_inference_by_monai(network, volume, 0.5, "constant"), atol=1e-5)
    # the settings still decide when given
    other = run_model(model, volume, spacing=(4.0, 3.0, 3.0),
                      settings=InferenceSettings(precision="fp32", overlap=0.25, mode="gaussian"))
    np.testing.assert_allclose(other, _bundle_inference_by_monai(network, volume, 0.25, "gaussian"), atol=1e-5)
    assert np.abs(other - out).max() > 1e-3


def test_bundle_inferer_values_the_engine_cannot_take(tmp_path, bundle):
    folder, _ = bundle
    config = json.loads((folder / "configs" / "inference.json").read_text())
    config["inferer"].update(overlap=[0.5, 0.25, 0.95], mode="gaussian")
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning) as seen:
        card = load_model(folder).card
    said = " ".join(str(w.message) for w in seen)
    assert "one overlap for every axis" in said and "at most 0.9" in said
    assert card.extra["sw_overlap"] == 0.9 and card.extra["sw_mode"] == "gaussian"


def test_a_card_with_a_bad_window_overlap_is_refused_when_it_runs(bundle, rng):
    from napari_medai.errors import ModelError

    folder, _ = bundle
    with pytest.warns(BundleTrustWarning):
        model = load_model(folder)
    volume = rng.normal(50, 80, size=(8, 24, 24)).astype(np.float32)
    model.card.extra["sw_overlap"] = 1.5
    with pytest.raises(ModelError, match=r"'Tiny spleen': extra.sw_overlap must be from 0 to 0.9"):
        run_model(model, volume, spacing=(4.0, 3.0, 3.0))
    model.card.extra.update(sw_overlap=0.5, sw_mode="median")
    with pytest.raises(ModelError, match="extra.sw_mode must be one of"):
        run_model(model, volume, spacing=(4.0, 3.0, 3.0))


def test_bundle_inferer_settings_the_engine_runs_at_monais_defaults_are_named(bundle):
    folder, _ = bundle
    config = json.loads((folder / "configs" / "inference.json").read_text())
    config["inferer"].update(mode="gaussian", sigma_scale=0.25, padding_mode="reflect")
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=r"sigma_scale.*padding_mode.*MONAI's defaults"):
        load_model(folder)


def test_overlap_as_a_numpy_scalar(bundle, rng):
    folder, _ = bundle
    with pytest.warns(BundleTrustWarning):
        model = load_model(folder)
    volume = rng.normal(50, 80, size=(8, 24, 24)).astype(np.float32)
    same = [run_model(model, volume, spacing=(4.0, 3.0, 3.0), settings=InferenceSettings(precision="fp32", overlap=o))
            for o in (0.5, np.float32(0.5), np.float64(0.5))]
    np.testing.assert_array_equal(same[0], same[1])
    np.testing.assert_array_equal(same[0], same[2])
