"""Output locations that cannot be written are refused before a scan is read or a model loads
(a run used to end, after the model, with "[Errno 17] File exists")."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medai.cli.main import main
from napari_medai.io import write_volume


@pytest.fixture
def blocked(tmp_path):
    """(a CT, a path under a file): no folder can be made there."""
    ct = write_volume(np.random.default_rng(0).normal(-500, 100, (8, 16, 16)).astype(np.float32),
                      tmp_path / "ct.nii.gz", modality="CT")
    (tmp_path / "a_file").write_text("not a folder")
    return ct, tmp_path / "a_file" / "sub"


@pytest.mark.parametrize("command", [
    ["denoise", "{ct}", "{out}/d.nii.gz", "--model", "no-such"],
    ["measure", "{ct}", "--at", "4", "8", "8", "--out", "{out}/m.json"],
    ["screen", "{ct}", "--out-dir", "{out}", "--detector", "no-such"],
    ["batch", "{ct}", "--out-dir", "{out}", "--detector", "no-such"],
    ["phantom", "--seed", "1", "--out", "{out}"],
    ["evaluate", "--data", "{data}", "--out", "{out}/e.csv", "--model", "no-such"],
    ["train", "segmentation", "--data", "{data}", "--out", "{out}"],
    ["train", "denoising", "--modality", "CT", "--out", "{out}", "--steps", "1"],
    ["train", "retinanet", "--data", "{data}", "--out", "{out}", "--iterations", "1"],
    ["train", "nodule-classifier", "--data", "{data}", "--out", "{out}", "--epochs", "1"],
])
def test_a_location_under_a_file_is_refused_first(blocked, command, capsys):
    ct, out = blocked
    args = [a.format(ct=ct, out=out, data=ct.parent) for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{out.parent} is a file, not a folder" in err and "Traceback" not in err
