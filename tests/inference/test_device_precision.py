"""Device and precision policy, and bf16 agreement with fp32."""

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from scipy import ndimage

from napari_medai.errors import InputError
from napari_medai.inference import InferenceSettings, autocast, run_model, select_device, select_precision
from napari_medai.inference.precision import cpu_has_native_bf16
from tiny_nets import make_model

NO_CUDA = not torch.cuda.is_available()


def test_auto_device_is_cuda_when_present_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device("CPU").type == "cpu"


@pytest.mark.skipif(not NO_CUDA, reason="checks the message on machines without CUDA")
def test_requesting_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(InputError, match="CUDA"):
        select_device("cuda")


def test_mps_is_refused_for_3d_networks_and_unknown_devices_are_errors():
    with pytest.raises(InputError, match="MPS"):
        select_device("mps", spatial_dims=3)
    with pytest.raises(InputError, match="unknown device"):
        select_device("gpu please")


def test_precision_policy_on_cpu():
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert select_precision("cpu", "auto") == expected
    assert select_precision("cpu", "fp32") == "fp32"
    assert select_precision("cpu", "bf16") == "bf16"
    with pytest.raises(InputError, match="CUDA"):
        select_precision("cpu", "amp")
    with pytest.raises(InputError, match="unknown precision"):
        select_precision("cpu", "fp8")


def test_autocast_runs_convolutions_in_bf16_and_fp32_stays_fp32():
    conv = torch.nn.Conv3d(1, 2, 3).eval()
    x = torch.randn(2, 1, 6, 6, 6)
    with torch.inference_mode():
        with autocast("cpu", "bf16"):
            assert conv(x).dtype == torch.bfloat16
        with autocast("cpu", "fp32"):
            assert conv(x).dtype == torch.float32


def test_bf16_agrees_with_fp32(rng):
    torch.manual_seed(0)
    network = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1)
    model = make_model(network, roi_size=(16, 16, 16))
    volume = ndimage.gaussian_filter(rng.normal(size=(24, 32, 32)), 2).astype(np.float32) * 10
    fp32 = run_model(model, volume, settings=InferenceSettings(precision="fp32"))
    bf16 = run_model(model, volume, settings=InferenceSettings(precision="bf16"))
    assert bf16.dtype == np.float32
    assert np.abs(bf16 - fp32).max() < 0.05
    agreement = (bf16.argmax(0) == fp32.argmax(0)).mean()
    assert agreement > 0.98
    assert not np.array_equal(bf16, fp32)  # it really ran in reduced precision


def test_fp32_on_a_gpu_means_ieee_fp32_convolutions_only_inside_the_call():
    from napari_medai.inference.precision import ieee_fp32_convolutions

    before = torch.backends.cudnn.allow_tf32
    with ieee_fp32_convolutions():
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 == before
