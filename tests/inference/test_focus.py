"""tta="mirror-lesions": mirrored passes only where the plain pass sees a possible lesion."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_medai.errors import Cancelled, InputError, ModelError
from napari_medai.inference import CancelToken, InferenceSettings, run_model
from napari_medai.inference.focus import FOCUS_PROBABILITY, lesion_focus
from tiny_nets import Counting, make_model

OFF, MIRROR, LESIONS = (InferenceSettings(precision="fp32", tta=t) for t in ("off", "mirror", "mirror-lesions"))


class LesionNet(nn.Module):
    """Three classes from a lopsided 3x3x3 convolution (mirroring changes its output), with a
    lesion logit that follows the intensity: bright voxels are lesions, dark ones are not."""

    def __init__(self, dims=3, lesion_gain=12.0, lesion_bias=-6.0):
        super().__init__()
        torch.manual_seed(3)
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv = conv(1, 3, 3, padding=1)
        self.gain, self.bias = lesion_gain, lesion_bias

    def forward(self, x):
        out = self.conv(x)
        return torch.cat([out[:, :2], out[:, 2:] + self.gain * x + self.bias], 1)


def _model(net, **fields):
    fields.setdefault("extra", {"lesions": [2]})
    return make_model(net, out_channels=3, **fields)


def _volume(rng, shape=(16, 48, 48)):
    volume = rng.normal(0, 0.05, size=shape).astype(np.float32)
    volume[4:10, 2:6, 3:7] = 1.0  # the one bright blob: the only place the plain pass sees a lesion
    return volume


def test_exact_full_mirroring_at_the_lesion_and_the_plain_pass_far_from_it(rng):
    volume = _volume(rng)
    net = Counting(LesionNet())
    model = _model(net, roi_size=(16, 16, 16))  # 16 windows a pass
    plain, full = run_model(model, volume, settings=OFF), run_model(model, volume, settings=MIRROR)
    net.calls = net.windows = 0
    focused = run_model(model, volume, settings=LESIONS)
    # the plain pass runs all 16 windows; each mirrored pass the one holding the blob (run twice:
    # a lone window goes with a copy of itself)
    assert net.windows == 16 + 3 * 2
    near = plain[2] >= FOCUS_PROBABILITY
    assert near.any() and (full[2][near] >= 0.5).any()  # a lesion the test can see
    np.testing.assert_allclose(focused[:, near], full[:, near], atol=1e-5)
    # no window that runs in a mirrored pass reaches y or x >= 16, from either side
    np.testing.assert_allclose(focused[:, :, 16:32, 16:32], plain[:, :, 16:32, 16:32], atol=1e-6)
    assert not np.allclose(full[:, :, 16:32, 16:32], plain[:, :, 16:32, 16:32], atol=1e-3)  # mirroring matters there


def test_everything_in_focus_is_full_mirroring_and_nothing_is_the_plain_pass(rng):
    volume = _volume(rng)
    everywhere = _model(LesionNet(lesion_gain=0.0, lesion_bias=0.0), roi_size=(16, 16, 16))  # lesion p ~ 1/3
    np.testing.assert_allclose(run_model(everywhere, volume, settings=LESIONS),
                               run_model(everywhere, volume, settings=MIRROR), atol=1e-5)
    net = Counting(LesionNet(lesion_gain=0.0, lesion_bias=-20.0))  # no lesion anywhere
    nowhere = _model(net, roi_size=(16, 16, 16))
    out = run_model(nowhere, volume, settings=LESIONS)
    assert net.windows == 16  # the plain pass only
    np.testing.assert_allclose(out, run_model(nowhere, volume, settings=OFF), atol=1e-6)


def test_an_image_smaller_than_the_window_counts_only_its_part_inside(rng):
    # MONAI pads it (here along z and y): a window runs only where its part inside the image
    # holds a focus voxel, and a stand-in's padded part is cut away again
    volume = _volume(rng, shape=(12, 14, 48))
    net = Counting(LesionNet(lesion_gain=0.0, lesion_bias=-20.0))  # no lesion anywhere
    nowhere = _model(net, roi_size=(16, 16, 16))
    out = run_model(nowhere, volume, settings=LESIONS)
    assert net.windows == 4  # the plain pass only: 1 x 1 x 4 windows
    np.testing.assert_allclose(out, run_model(nowhere, volume, settings=OFF), atol=1e-6)
    model = _model(LesionNet(), roi_size=(16, 16, 16))
    plain, full = run_model(model, volume, settings=OFF), run_model(model, volume, settings=MIRROR)
    focused = run_model(model, volume, settings=LESIONS)
    near = plain[2] >= FOCUS_PROBABILITY
    assert near.any()
    np.testing.assert_allclose(focused[:, near], full[:, near], atol=1e-5)
    np.testing.assert_allclose(focused[..., 24:], plain[..., 24:], atol=1e-6)  # no window that runs reaches


def test_two_dimensional_model_focuses_slice_by_slice(rng):
    volume = _volume(rng, shape=(10, 48, 48))
    net = Counting(LesionNet(dims=2))
    model = _model(net, spatial_dims=2, roi_size=(16, 16))
    plain, full = run_model(model, volume, settings=OFF), run_model(model, volume, settings=MIRROR)
    net.windows = 0
    focused = run_model(model, volume, settings=LESIONS)
    assert net.windows < 10 * 16 * 2  # far fewer than the plain pass and a full mirrored pass
    near = plain[2] >= FOCUS_PROBABILITY
    np.testing.assert_allclose(focused[:, near], full[:, near], atol=1e-5)
    np.testing.assert_allclose(focused[:, 0], plain[:, 0], atol=1e-6)  # a slice without the blob


def test_progress_shrinks_to_the_windows_that_run_and_ends_full(rng):
    reports = []
    run_model(_model(LesionNet(), roi_size=(16, 16, 16)), _volume(rng), settings=LESIONS,
              progress=lambda d, t: reports.append((d, t)))
    done = [d for d, _ in reports]
    assert done == sorted(done)
    assert reports[0] == (0, 64)  # before the plain pass: as if every pass ran every window
    assert reports[-1] == (19, 19)  # 16 + 3 x 1 windows


def test_cancel_in_a_mirrored_pass_returns_nothing(rng):
    token = CancelToken()
    net = Counting(LesionNet())

    def progress(done, total):
        if done == 17:  # the first mirrored pass's window has run
            token.cancel()

    with pytest.raises(Cancelled):
        run_model(_model(net, roi_size=(16, 16, 16)), _volume(rng), settings=LESIONS, progress=progress,
                  cancel=token)
    assert net.windows == 16 + 2


def test_the_card_can_ask_for_it(rng):
    net = Counting(LesionNet())
    model = _model(net, roi_size=(16, 16, 16), extra={"lesions": [2], "tta": "mirror-lesions"})
    run_model(model, _volume(rng), settings=InferenceSettings(precision="fp32"))
    assert net.windows == 16 + 3 * 2


def test_the_card_and_the_settings_set_the_level_windows_are_mirrored_from(rng):
    # the background's lesion probability is about 0.002: a card level under it mirrors every
    # window (full mirroring); the settings' level overrides the card's
    volume = _volume(rng)
    net = Counting(LesionNet())
    low = _model(net, roi_size=(16, 16, 16), extra={"lesions": [2], "focus_probability": 1e-4})
    plain = run_model(low, volume, settings=OFF)
    assert plain[2].min() > 1e-4 and plain[2].max() > 0.5
    full = run_model(low, volume, settings=MIRROR)
    net.windows = 0
    np.testing.assert_allclose(run_model(low, volume, settings=LESIONS), full, atol=1e-5)
    assert net.windows == 4 * 16
    net.windows = 0
    run_model(low, volume, settings=InferenceSettings(precision="fp32", tta="mirror-lesions", focus_probability=0.05))
    assert net.windows == 16 + 3 * 2  # the card's default level: the blob's window only


def test_a_focus_level_outside_0_to_1_is_refused_before_running(rng):
    net = Counting(LesionNet())
    for bad in (0, 1, 1.5, -0.1, "often", "0.2", True):
        model = _model(net, roi_size=(16, 16, 16), extra={"lesions": [2], "focus_probability": bad})
        with pytest.raises(ModelError, match="focus_probability"):
            run_model(model, _volume(rng), settings=LESIONS)
        with pytest.raises(InputError, match="focus_probability"):
            InferenceSettings(tta="mirror-lesions", focus_probability=bad).validate()
    assert net.calls == 0
    # a numpy number is a number
    InferenceSettings(tta="mirror-lesions", focus_probability=np.float32(0.2)).validate()
    # a card level only matters where lesions are mirrored: off and full mirroring ignore it
    zero = _model(net, roi_size=(16, 16, 16), extra={"lesions": [2], "focus_probability": 0})
    run_model(zero, _volume(rng), settings=OFF)
    assert net.windows == 16
    run_model(zero, _volume(rng), settings=MIRROR)
    assert net.windows == 16 + 4 * 16


def test_a_model_without_a_lesion_probability_is_refused_before_running(rng):
    net = Counting(LesionNet())
    for fields in ({"extra": {}}, {"extra": {"lesions": [5]}}, {"extra": {"lesions": [2]}, "output": "identity"}):
        with pytest.raises(ModelError, match="lesion"):
            run_model(_model(net, **fields), _volume(rng), settings=LESIONS)
    assert net.calls == 0
    with pytest.raises(InputError, match="test-time augmentation"):
        InferenceSettings(tta="lesions").validate()


def test_focus_reads_softmax_and_sigmoid_outputs():
    raw = torch.zeros(1, 3, 2, 2, 2)
    raw[0, 2, 0, 0, 0] = 2.0  # softmax: e^2 / (2 + e^2) = 0.79
    raw[0, 2, 1, 1, 1] = -3.0  # 0.024: below the level
    card = make_model(nn.Identity(), out_channels=3, extra={"lesions": [2]}).card
    focus = lesion_focus(raw, card)
    assert focus.shape == (1, 2, 2, 2) and bool(focus[0, 0, 0, 0]) and not bool(focus[0, 1, 1, 1])
    assert bool(focus[0, 0, 1, 0])  # 1/3
    # a multi-label (sigmoid) card's label k + 1 is channel k: label 3 reads channel 2
    card.output, card.extra = "sigmoid", {"lesions": [3]}
    raw[:, :2] = -10.0
    focus = lesion_focus(raw, card)
    assert bool(focus[0, 0, 0, 0]) and not bool(focus[0, 1, 1, 1]) and bool(focus[0, 0, 1, 0])  # 0.5
    card.extra = {"lesions": [2]}  # channel 1: below the level everywhere
    assert not bool(lesion_focus(raw, card).any())


class SigmoidLesions(nn.Module):
    """Two independent (sigmoid) classes: label 1 = channel 0 (organ), label 2 = channel 1,
    the lesion, bright voxels; a lopsided convolution makes mirroring matter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x):
        out = self.conv(x)
        return torch.cat([out[:, :1], out[:, 1:] + 12.0 * x - 6.0], 1)


def test_a_multi_label_model_is_mirrored_at_its_own_lesion_channel(rng):
    volume = _volume(rng)
    model = make_model(SigmoidLesions(), out_channels=2, output="sigmoid", roi_size=(16, 16, 16),
                       extra={"lesions": [2]})
    plain, full = run_model(model, volume, settings=OFF), run_model(model, volume, settings=MIRROR)
    focused = run_model(model, volume, settings=LESIONS)
    near = plain[1] >= FOCUS_PROBABILITY
    assert near.any() and not np.allclose(full[:, near], plain[:, near], atol=1e-3)
    np.testing.assert_allclose(focused[:, near], full[:, near], atol=1e-5)


def test_a_later_stage_that_shrinks_never_moves_the_bar_back(rng):
    from napari_medai.inference.progress import share_progress

    reports = []
    run_model(_model(LesionNet(), roi_size=(16, 16, 16)), _volume(rng), settings=LESIONS,
              progress=share_progress(lambda d, t: reports.append((d, t)), 1, 2))
    # a command-line bar counts what is done: it must only grow, on a total that stays
    done, totals = [d for d, _ in reports], {t for _, t in reports}
    assert done == sorted(done) and len(totals) == 1
    assert done[0] / reports[0][1] == 0.5 and done[-1] == reports[-1][1]


def test_the_plain_pass_output_is_gone_before_the_last_resampling(rng, monkeypatch):
    import gc

    from napari_medai.inference import engine
    from napari_medai.inference.focus import FocusedPass

    alive = []
    real = engine.resample

    def watching(x, shape, mode):
        gc.collect()
        alive.append(sum(isinstance(o, FocusedPass) for o in gc.get_objects()))
        return real(x, shape, mode)

    monkeypatch.setattr(engine, "resample", watching)
    run_model(_model(LesionNet(), roi_size=(16, 16, 16)), _volume(rng), settings=LESIONS)
    assert alive == [0, 0]  # into the model's grid, then back to the input's


def test_a_gpu_gathers_one_batch_at_a_time(monkeypatch):
    # on CPU MONAI gathers 8 batches so that the windows that run fill whole ones; on a GPU each
    # gathered window and its output would sit in the GPU's memory
    import monai.inferers

    from napari_medai.inference.sliding_window import FOCUSED_BATCHES, run_sliding_window

    seen = []
    monkeypatch.setattr(monai.inferers, "sliding_window_inference",
                        lambda inputs, roi, per_call, predictor, **kw: seen.append(per_call))
    raw, focus = torch.zeros(1, 3, 16, 16, 16), torch.zeros(1, 16, 16, 16, dtype=torch.bool)
    from napari_medai.inference.focus import FocusedPass

    plan = FocusedPass(raw, focus, (2,), (0, 0, 0))
    for device in ("cpu", "cuda"):
        run_sliding_window(nn.Identity(), torch.zeros(1, 1, 16, 16, 16), (16, 16, 16), device=device,
                           sw_batch_size=4, focused=plan)
    run_sliding_window(nn.Identity(), torch.zeros(1, 1, 16, 16, 16), (16, 16, 16), sw_batch_size=4)
    assert seen == [4 * FOCUSED_BATCHES, 4, 4]
