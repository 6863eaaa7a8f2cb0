"""denoise(): shape, dtype, strength, model choice, progress and cancel (tiny models only)."""

import numpy as np
import pytest

from napari_medai.denoising import default_model_name, denoise
from napari_medai.errors import Cancelled, InputError, ModelError
from napari_medai.inference.cancel import CancelToken


@pytest.fixture
def mr_volume(rng):
    vol = np.zeros((3, 30, 28), np.float32)
    vol[:, 5:25, 6:22] = 100.0
    return np.abs(vol + rng.normal(0, 5, vol.shape)).astype(np.float32)  # a magnitude image: not below 0


def test_identity_generator_returns_the_input(tiny_card, mr_volume):
    out = denoise(mr_volume, (2.0, 1.0, 1.0), model=tiny_card, settings={"precision": "fp32"})
    assert out.shape == mr_volume.shape and out.dtype == np.float32
    # Odd sizes are padded to the network's multiple and cropped back; intensity map is inverted.
    np.testing.assert_allclose(out, mr_volume, atol=1e-3)


def test_2_5d_model_sees_neighbours_and_keeps_the_grid(tmp_path, mr_volume):
    from denoise_helpers import make_tiny_card

    identity = make_tiny_card(tmp_path / "a", in_channels=3)
    out = denoise(mr_volume, model=identity, settings={"precision": "fp32"})
    np.testing.assert_allclose(out, mr_volume, atol=1e-3)
    # A fixed CT window, so that editing one slice does not change the intensity scaling.
    changing = make_tiny_card(tmp_path / "b", modality="CT", in_channels=3, head_weight=0.05)
    ct_like = mr_volume - 50.0  # a CT model needs values below 0
    base = denoise(ct_like, model=changing, settings={"precision": "fp32"})
    edited = ct_like.copy()
    edited[0] += 50.0  # a change in slice 0 reaches slice 1 (its neighbour), not slice 2
    moved = denoise(edited, model=changing, settings={"precision": "fp32"})
    assert not np.allclose(moved[1], base[1]) and np.allclose(moved[2], base[2], atol=1e-3)


def test_strength_blends_input_and_output(changing_card, mr_volume):
    settings = {"precision": "fp32"}
    full = denoise(mr_volume, model=changing_card, settings=settings)
    half = denoise(mr_volume, model=changing_card, strength=0.5, settings=settings)
    none = denoise(mr_volume, model=changing_card, strength=0.0)
    assert np.abs(full - mr_volume).max() > 1.0  # this generator does change the image
    np.testing.assert_allclose(half, (full + mr_volume) / 2, atol=1e-3)
    assert np.array_equal(none, mr_volume) and none is not mr_volume


def test_integer_input_keeps_its_dtype_and_2d_slices_work(tmp_path):
    from denoise_helpers import make_tiny_card

    ct_slice = np.full((24, 24), -1000, np.int16)
    ct_slice[4:20, 4:20] = 40
    out = denoise(ct_slice, model=make_tiny_card(tmp_path, modality="CT"), settings={"precision": "fp32"})
    assert out.dtype == np.int16 and out.shape == (24, 24)
    assert np.array_equal(out, ct_slice)


def test_progress_reaches_total_and_cancel_stops(tiny_card, rng):
    vol = rng.normal(100, 10, (9, 16, 16)).astype(np.float32)
    calls = []
    denoise(vol, model=tiny_card, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 9) and calls[-1] == (9, 9)

    token = CancelToken()

    def cancel_after_first(done, total):
        if done > 0:
            token.cancel()

    before = vol.copy()
    with pytest.raises(Cancelled):
        denoise(vol, model=tiny_card, progress=cancel_after_first, cancel=token)
    assert np.array_equal(vol, before)


def test_model_is_chosen_from_modality():
    assert default_model_name("CT") == "ct-lowdose-denoising"
    assert default_model_name("mri") == "mr-denoising"
    with pytest.raises(InputError, match="CT or MR"):
        default_model_name("unknown")
    with pytest.raises(InputError, match="CT or MR"):
        denoise(np.random.rand(2, 16, 16))


@pytest.mark.parametrize("bad, message", [(1.5, "between 0"), ("strong", "number")])
def test_bad_strength_is_refused(tiny_card, mr_volume, bad, message):
    with pytest.raises(InputError, match=message):
        denoise(mr_volume, model=tiny_card, strength=bad)


def test_bad_inputs_are_refused(tiny_card):
    with pytest.raises(InputError, match="NaN"):
        denoise(np.full((2, 16, 16), np.nan), model=tiny_card)
    with pytest.raises(InputError, match="too small"):
        denoise(np.random.rand(2, 4, 4), model=tiny_card)
    with pytest.raises(InputError, match="spacing"):
        denoise(np.random.rand(2, 16, 16), spacing=(0, 1, 1), model=tiny_card)


def test_a_segmentation_model_is_refused(tmp_path):
    from napari_medai.models.card import ModelCard
    from napari_medai.models.registry import save_builtin
    from monai.networks.nets import UNet

    card = ModelCard(name="seg", task="segmentation", spatial_dims=2, roi_size=(16, 16),
                     network={"name": "UNet", "kwargs": {"channels": [4, 8], "strides": [2]}})
    path = save_builtin(card, UNet(2, 1, 2, (4, 8), (2,)), folder=tmp_path)
    with pytest.raises(ModelError, match="not a denoising model"):
        denoise(np.random.rand(2, 16, 16), model=path)


def test_a_one_slice_volume_is_accepted(tiny_card, rng):
    one = rng.normal(100, 10, (1, 16, 16)).astype(np.float32)
    out = denoise(one, (3.0, 1.0, 1.0), model=tiny_card, settings={"precision": "fp32"})
    assert out.shape == (1, 16, 16)
    np.testing.assert_allclose(out, one, atol=1e-3)


def test_a_slice_with_a_channel_axis_is_denoised_as_the_slice(changing_card, rng):
    """(1, 1, y, x): one slice with a channel axis, as torch and MONAI hold an image; it used to
    be refused as "too small to process (shape (1, 64, 64))"."""
    one = rng.normal(100, 10, (64, 64)).astype(np.float32)
    settings = {"precision": "fp32"}
    out = denoise(one[None, None], (3.0, 1.0, 1.0), model=changing_card, settings=settings)
    assert out.shape == (1, 1, 64, 64) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], denoise(one, model=changing_card, settings=settings))
    assert not np.allclose(out[0, 0], one)  # the changing card did denoise it
    assert denoise(one[None, None], model=changing_card, strength=0.0).shape == (1, 1, 64, 64)
    with pytest.raises(InputError, match="too small"):  # a (1, y, x, 1) stays refused with a message
        denoise(one[None, ..., None], model=changing_card)


def test_top_level_api_is_the_same_function(changing_card, mr_volume):
    import napari_medai

    settings = {"precision": "fp32"}
    np.testing.assert_array_equal(
        napari_medai.denoise(mr_volume, (2.0, 1.0, 1.0), model=changing_card, settings=settings),
        denoise(mr_volume, (2.0, 1.0, 1.0), model=changing_card, settings=settings),
    )


def test_a_denoiser_refuses_the_other_modality_and_leaves_the_input_alone(tiny_card, mr_volume, tmp_path):
    from denoise_helpers import make_tiny_card

    ct = np.full((3, 24, 24), -1000.0, np.float32)
    ct[:, 4:20, 4:20] = 40.0
    before = ct.copy()
    with pytest.raises(ModelError, match="made for MR.*only CT in Hounsfield units"):
        denoise(ct, model=tiny_card)  # the tiny card is an MR denoiser
    np.testing.assert_array_equal(ct, before)
    with pytest.raises(ModelError, match="reads CT in Hounsfield units"):
        denoise(mr_volume, model=make_tiny_card(tmp_path / "ct", modality="CT"))  # MR magnitudes: nothing below 0


def test_slices_too_small_for_the_networks_halvings_are_refused_with_a_message(tmp_path, rng):
    from denoise_helpers import make_tiny_card

    # the built-ins' three halvings (size multiple 8) on a tiny network: 8x8 ends as one pixel
    deep = make_tiny_card(tmp_path, kwargs={"channels": [2, 2, 2, 2], "strides": [2, 2, 2], "num_res_units": 0,
                                            "features": 2})
    with pytest.raises(InputError, match=r"8x8 pixels are too small for model .* more than 8 pixels along y or x"):
        denoise(rng.normal(100, 10, (2, 8, 8)).astype(np.float32), model=deep)
    for shape in ((2, 9, 9), (2, 8, 9), (9, 8)):  # padded to 16: two pixels deep down
        assert denoise(rng.normal(100, 10, shape).astype(np.float32), model=deep).shape == shape


def test_a_singleton_channel_axis_comes_back_as_given(tiny_card, mr_volume):
    for given in (mr_volume[None], mr_volume[..., None]):
        out = denoise(given, (2.0, 1.0, 1.0), model=tiny_card, settings={"precision": "fp32"})
        assert out.shape == given.shape
        np.testing.assert_allclose(out, given, atol=1e-3)
        assert denoise(given, model=tiny_card, strength=0.0).shape == given.shape


def test_strength_zero_checks_everything_first_and_returns_the_documented_dtype(tiny_card, mr_volume):
    """Strength 0 used to return before the model and input checks, and float64 as float64."""
    out = denoise(mr_volume.astype(np.float64), model=tiny_card, strength=0.0)
    assert out.dtype == np.float32 and np.array_equal(out, mr_volume)
    ints = np.rint(mr_volume).astype(np.int16)
    assert denoise(ints, model=tiny_card, strength=0.0).dtype == np.int16
    with pytest.raises(ModelError, match="no built-in model called"):
        denoise(mr_volume, model="no-such-model", strength=0.0)
    ct = np.full((3, 24, 24), -1000.0, np.float32)
    ct[:, 4:20, 4:20] = 40.0
    with pytest.raises(ModelError, match="made for MR"):
        denoise(ct, model=tiny_card, strength=0.0)  # the tiny card is an MR denoiser


def test_a_slice_takes_its_volumes_spacing_and_two_channels_are_refused_plainly(tiny_card, mr_volume):
    """One axial slice given the volume's 3 spacing values was refused as "spacing must have 2
    values (z, y, x) ... got 3", and a (2, z, y, x) image as "spacing must have 4 values (z, y, x)"."""
    settings = {"precision": "fp32"}
    one = mr_volume[1]
    np.testing.assert_array_equal(denoise(one, (2.0, 1.0, 1.0), model=tiny_card, settings=settings),
                                  denoise(one, (1.0, 1.0), model=tiny_card, settings=settings))
    with pytest.raises(InputError, match=r"a single slice's spacing takes 2 values \(y, x\) in mm, or the 3"):
        denoise(one, (2.0, 1.0, 1.0, 1.0), model=tiny_card)
    with pytest.raises(InputError, match="voxel spacing must be positive"):
        denoise(one, (0.0, 1.0), model=tiny_card)
    with pytest.raises(InputError, match=r"spacing must have 3 values \(z, y, x\)"):  # a volume: 3 values
        denoise(mr_volume, (1.0, 1.0), model=tiny_card)
    with pytest.raises(InputError, match=r"^2 channels are not supported \(shape \(2, 3, 30, 28\)\): pass one image"):
        denoise(np.stack([mr_volume, mr_volume]), (2.0, 1.0, 1.0), model=tiny_card)


def test_a_denoiser_that_returns_nan_is_a_model_error_not_a_nan_volume(tmp_path):
    from denoise_helpers import make_tiny_card

    broken = make_tiny_card(tmp_path, modality="CT", head_weight=float("nan"))  # as float16 overflow gives
    ct = np.full((3, 24, 24), -1000, np.int16)
    ct[:, 4:20, 4:20] = 40
    with pytest.raises(ModelError, match=r"^model 'tiny-ct-denoiser' returned NaN or infinite values \(in fp32"):
        denoise(ct, model=broken, settings={"precision": "fp32"})
    with pytest.raises(ModelError, match="in bfloat16 precision.*--precision fp32"):
        denoise(ct, model=broken, settings={"precision": "bf16"})


def test_a_named_model_of_the_other_modality_than_the_one_given_is_refused(tmp_path):
    from denoise_helpers import make_tiny_card

    ct_card = make_tiny_card(tmp_path, modality="CT")
    ct = np.full((3, 24, 24), -1000, np.int16)
    ct[:, 4:20, 4:20] = 40
    with pytest.raises(ModelError, match=r"^model 'tiny-ct-denoiser' is made for CT, but the image is said to be "
                                         r"MR \(modality='MRI'\): .*'mr-denoising'$"):
        denoise(ct, model=ct_card, modality="MRI")  # the modality was ignored when a model was named
    assert denoise(ct, model=ct_card, modality="CT", strength=0.0).dtype == np.int16


def test_a_cancel_during_the_last_pass_still_leaves_nothing(tiny_card, rng):
    """As run_model: Cancel pressed while the last slices ran returned the result (segment and
    detect raise Cancelled)."""
    vol = rng.normal(100, 10, (5, 16, 16)).astype(np.float32)  # two passes of SLICES_PER_PASS = 4
    token = CancelToken()

    def cancel_at_the_end(done, total):
        if done == total:
            token.cancel()

    with pytest.raises(Cancelled):
        denoise(vol, model=tiny_card, progress=cancel_at_the_end, cancel=token)


def test_a_device_this_machine_lacks_is_refused_at_strength_0_too(tiny_card, mr_volume, monkeypatch):
    """strength 0 returned before the device was looked at: "cuda" on a machine without one passed."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for strength in (0.0, 1.0):
        with pytest.raises(InputError, match="a CUDA GPU was requested but none is available"):
            denoise(mr_volume, model=tiny_card, strength=strength, settings={"device": "cuda"})


def test_a_bare_network_file_given_as_a_denoiser_is_told_how_to_bring_one(tmp_path):
    """A TorchScript file alone is read as a segmentation model: the message said only that."""
    import torch

    net = torch.jit.script(torch.nn.Conv3d(1, 1, 3, padding=1))
    net.save(str(tmp_path / "mine.ts"))
    with pytest.raises(ModelError, match=r"not a denoising model; a denoiser of your own is brought as a model "
                                         r"card: mine\.json beside it"):
        noisy = np.random.default_rng(0).normal(-500, 200, (4, 32, 32)).astype(np.float32)
        denoise(noisy, (1.0, 1.0, 1.0), model=str(tmp_path / "mine.ts"))


@pytest.mark.parametrize("fields, message", [
    (dict(in_channels=3, out_channels=3), "3 output channels"),
    (dict(in_channels=2, out_channels=1), "an odd in_channels"),
    (dict(in_channels=3, out_channels=1, spatial_dims=3, roi_size=(16, 16, 16)), "3D denoiser with 3 input channels"),
])
def test_a_denoiser_card_with_channels_a_denoiser_cannot_have_is_refused(fields, message):
    """Channel 0 of a 3-channel output was taken as the image: a 2.5D pass-through came back one
    slice off in z (found by an audit helper); 2 input slices have no centre slice."""
    import torch

    from napari_medai.models.card import ModelCard
    from napari_medai.models.loading import LoadedModel

    card = ModelCard(**{"name": "odd", "task": "denoising", "modality": "MR", "spatial_dims": 2, "roi_size": (16, 16),
                        "output": "identity", "intensity": {"kind": "none"}, **fields})
    with pytest.raises(ModelError, match=message):
        denoise(np.random.rand(4, 16, 16).astype(np.float32) + 1, None, model=LoadedModel(card, torch.nn.Identity()))


def test_a_flipped_view_is_denoised_as_its_copy(changing_card, mr_volume):
    """torch.from_numpy refuses negative strides: a flipped float32 view failed with torch's
    ValueError unless some voxel lay below the input floor and forced a copy (an audit helper)."""
    flipped = mr_volume[:, ::-1]
    out = denoise(flipped, (2.0, 1.0, 1.0), model=changing_card, settings={"precision": "fp32"})
    np.testing.assert_array_equal(out, denoise(flipped.copy(), (2.0, 1.0, 1.0), model=changing_card,
                                                settings={"precision": "fp32"}))
