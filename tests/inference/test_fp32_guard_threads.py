"""The fp32 guard (``precision.ieee_fp32_convolutions``) switches process-global cuDNN flags:
calls overlapping in several threads must keep TF32 off until the last one leaves, then give
back what the first one found.  The flags are plain switches, so this runs on the CPU too."""

from __future__ import annotations

import threading

import pytest
import torch

from napari_medai.inference import precision
from napari_medai.inference.precision import ieee_fp32_convolutions


@pytest.fixture
def tf32_on():
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32 = before


def _overlapping_calls(work=lambda: None):
    """A enters, B enters, A leaves, B reads the flag and leaves; returns what B read."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with ieee_fp32_convolutions():
            a_in.set()
            assert b_in.wait(10)
            work()
        a_out.set()

    def b():
        assert a_in.wait(10)
        with ieee_fp32_convolutions():
            b_in.set()
            assert a_out.wait(10)
            seen["inside B after A left"] = torch.backends.cudnn.allow_tf32
            seen["users"] = precision._ieee_users
            seen["matmul inside B after A left"] = torch.get_float32_matmul_precision()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return seen


def test_overlapping_calls_keep_tf32_off_until_the_last_leaves_and_then_restore_it(tf32_on):
    seen = _overlapping_calls()
    assert seen["inside B after A left"] is False
    assert seen["users"] == 1
    assert torch.backends.cudnn.allow_tf32 is True  # what the first caller found
    assert precision._ieee_users == 0


def test_tf32_left_off_by_the_user_stays_off(tf32_on):
    torch.backends.cudnn.allow_tf32 = False
    _overlapping_calls()
    with ieee_fp32_convolutions(), ieee_fp32_convolutions():  # nested in one thread too
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is False and precision._ieee_users == 0


def test_a_call_that_raises_still_leaves(tf32_on):
    with pytest.raises(RuntimeError), ieee_fp32_convolutions():
        raise RuntimeError("the network failed")
    assert torch.backends.cudnn.allow_tf32 is True and precision._ieee_users == 0


def test_matmuls_run_in_full_fp32_until_the_last_leaves_and_the_users_choice_comes_back(tf32_on):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # a user's setting that lets matmuls use TF32
    try:
        seen = _overlapping_calls()
        assert seen["matmul inside B after A left"] == "highest"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
