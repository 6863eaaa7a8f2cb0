"""Where training runs: CUDA when present, else CPU; explicit choices are checked."""

import pytest
import torch

from napari_medai.errors import InputError
from napari_medai.inference.precision import cpu_has_native_bf16
from napari_medai.training.device import TrainingDevice, cpu_state_dict, training_device


def test_auto_picks_cuda_when_present_else_cpu():
    where = training_device("auto")
    assert where.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_uses_bf16_only_where_native_and_never_when_refused():
    assert training_device("cpu").bf16 == cpu_has_native_bf16()
    assert training_device("cpu", bf16=False).bf16 is False


def test_autocast_runs_the_forward_pass_in_the_chosen_precision():
    net = torch.nn.Linear(4, 2)
    x = torch.ones(1, 4)
    with training_device("cpu", bf16=False).autocast():
        assert net(x).dtype == torch.float32
    where = training_device("cpu", bf16=True)
    with where.autocast():
        assert net(x).dtype == (torch.bfloat16 if where.bf16 else torch.float32)
    # both branches on any machine: torch runs CPU bf16 autocast (slowly) without native support
    with TrainingDevice(torch.device("cpu"), True).autocast():
        assert net(x).dtype == torch.bfloat16
    with TrainingDevice(torch.device("cpu"), False).autocast():
        assert net(x).dtype == torch.float32
    assert net(x).dtype == torch.float32  # and only inside the block


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(InputError, match="CUDA"):
        training_device("cuda")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(InputError, match="unknown device"):
        training_device("tpu9")


def test_checkpoint_weights_are_on_the_cpu():
    net = torch.nn.Conv3d(1, 2, 3).to(training_device("auto").device)
    state = cpu_state_dict(net)
    assert set(state) == {"weight", "bias"} and all(v.device.type == "cpu" for v in state.values())
