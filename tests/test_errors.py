"""errors.out_of_memory_message: which errors are "out of memory", and how the CLI says it."""

import pytest

from napari_medai.errors import out_of_memory_message


def test_out_of_memory_is_recognised_on_the_gpu_mps_and_cpu_only():
    import torch

    assert out_of_memory_message(torch.OutOfMemoryError("CUDA out of memory")).startswith("the GPU ran out of memory")
    mps = RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)")
    assert out_of_memory_message(mps).startswith("the GPU ran out of memory (MPS backend out of memory")
    assert out_of_memory_message(MemoryError()).startswith("the computer ran out of memory (MemoryError)")
    # torch's own CPU allocator (found by a reviewer): the commonest way to run out without a GPU
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 40000000000000 bytes.")
    said = out_of_memory_message(cpu)
    assert said.startswith("the computer ran out of memory") and "device 'cpu'" not in said
    assert out_of_memory_message(RuntimeError("shape mismatch")) is None
    assert out_of_memory_message(ValueError("out of memory")) is None


def test_the_cli_says_it_in_a_sentence_and_still_shows_a_bug(monkeypatch, capsys, tmp_path):
    import numpy as np

    from napari_medai.cli.main import main
    from napari_medai.io import write_volume

    path = write_volume(np.random.rand(4, 8, 8).astype(np.float32), tmp_path / "x.nii.gz", modality="MR")

    def boom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr("napari_medai.io.read_volume", boom)
    assert main(["info", str(path)]) == 2
    assert "medai info: error: the computer ran out of memory (MemoryError)" in capsys.readouterr().err

    def bug(*args, **kwargs):
        raise RuntimeError("index out of range")

    monkeypatch.setattr("napari_medai.io.read_volume", bug)
    with pytest.raises(RuntimeError, match="index out of range"):
        main(["info", str(path)])


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """`medai info scan | head -1` said "error: [Errno 32] Broken pipe" and exit 2 (found by an audit helper)."""
    from napari_medai.cli.main import main

    def cut(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("napari_medai.io.read_volume", cut)
    assert main(["info", "scan.nii.gz"]) == 141
    assert "Broken pipe" not in capsys.readouterr().err
