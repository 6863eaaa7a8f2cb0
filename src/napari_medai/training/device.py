"""Where training runs: CUDA when present, else CPU, and how it stays reproducible there.

Training uses bf16 autocast where the hardware runs it natively (CUDA GPUs from Ampere on,
CPUs with AVX-512 BF16 / AMX) and fp32 elsewhere.  float16 is never used for training: it
would need a gradient scaler, bf16 does not.

On CUDA, reproducibility needs more than a seed: cuDNN must pick deterministic kernels and
cuBLAS needs a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``), which has to be set before the
first matrix product.  ``training_device`` sets both; an op that has no deterministic CUDA
kernel then warns instead of failing, so a run says when it cannot be bit-exact.

A run on a GPU does not reproduce the bytes of a run on a CPU (different kernels, different
rounding); the shipped weights were trained on CPU, so re-training them byte for byte takes
``--device cpu`` on a machine that has a GPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingDevice:
    device: object  # torch.device
    bf16: bool  # autocast to bf16 in forward passes

    @property
    def name(self) -> str:
        return str(self.device)

    def autocast(self):
        import torch

        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def native_bf16(device) -> bool:
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        from ..inference.precision import cpu_has_native_bf16

        return cpu_has_native_bf16()
    return False


def training_device(preference: str = "auto", bf16: bool = True) -> TrainingDevice:
    """Resolve ``preference`` ("auto", "cpu", "cuda", "cuda:N") and prepare it for a
    reproducible run.  ``bf16=False`` forces fp32."""
    import torch

    from ..inference.device import select_device

    device = select_device(preference)
    if device.type == "mps":  # select_device gives MPS only to 2D networks on "auto"
        device = torch.device("cpu")
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # process-wide: later GPU work in this process keeps the deterministic kernels too
        torch.use_deterministic_algorithms(True, warn_only=True)
    return TrainingDevice(device, bf16 and native_bf16(device))


def cpu_state_dict(net) -> dict:
    """Weights on the CPU, so a checkpoint written on a GPU loads anywhere."""
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}
