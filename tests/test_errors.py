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


class _ClosedPipe:
    """A stdout whose reader went away after the first line (``| head -1``)."""

    def __init__(self):
        self.lines = 0

    def write(self, text):
        if self.lines >= 1:
            raise BrokenPipeError(32, "Broken pipe")
        self.lines += text.count("\n")
        return len(text)

    def flush(self):
        pass


def test_a_closed_pipe_does_not_stop_the_files_being_written(monkeypatch, tmp_path):
    # `medai phantom ... | head -1` stopped after the first case (and measure, evaluate and batch left
    # their --out unwritten; found by an audit helper): the rest of stdout goes nowhere, the files are
    # written, and the exit is still 141
    import sys

    from napari_medai.cli.main import main

    pipe = _ClosedPipe()
    monkeypatch.setattr(sys, "stdout", pipe)
    assert main(["phantom", "--seed", "1", "--count", "3", "--out", str(tmp_path), "--shape", "8", "32", "32"]) == 141
    assert sorted(p.name for p in tmp_path.glob("*_image.nii.gz")) == [
        "case0001_image.nii.gz", "case0002_image.nii.gz", "case0003_image.nii.gz"]
    assert sys.stdout is pipe  # put back


def test_a_file_name_that_is_not_utf8_is_written_escaped_not_a_traceback(tmp_path):
    import json
    import os

    from napari_medai.io.atomic import write_text_atomic

    name = os.fsdecode(b"caf\xe9.nii.gz")  # a Latin-1 name: a lone surrogate in Python's str
    write_text_atomic(tmp_path / "f.json", json.dumps({"source": name}, ensure_ascii=False))
    assert "caf\\udce9" in (tmp_path / "f.json").read_text(encoding="utf-8")


def test_a_real_pipe_closed_early_exits_141_and_a_refusal_still_counts(tmp_path):
    # stdout to a pipe is block-buffered: the break came at the final flush, after the guard was
    # gone ("Exception ignored", exit 120); a refused point's exit 1 became 141; 2>&1 | head broke
    # on stderr (found by a review helper)
    import os
    import subprocess
    import sys

    import numpy as np

    from napari_medai.io import write_volume

    scan = tmp_path / "scan.nii.gz"
    write_volume(np.full((6, 16, 16), -800, np.int16), scan, modality="CT")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    medai = f"{sys.executable} -m napari_medai.cli.main"

    def piped(command):
        done = subprocess.run(["bash", "-c", f"{command} | true; echo ${{PIPESTATUS[0]}}"], env=env,
                              capture_output=True, text=True, timeout=120)
        return int(done.stdout.split()[-1]), done.stderr

    rc, err = piped(f"{medai} info {scan}")
    assert rc == 141 and "Exception ignored" not in err
    rc, _ = piped(f"{medai} measure {scan} --at 1 1 1 --out {tmp_path / 'm.json'} 2>&1")
    assert rc == 2  # nothing measurable: refused, as without the pipe (not 141)
