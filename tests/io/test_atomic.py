"""io.atomic: a file is replaced whole or not at all, through a symlink to its target, keeping
its permissions; a read-only file is refused and left as it is."""

from __future__ import annotations

import os

import pytest

from napari_medai.errors import InputError
from napari_medai.io.atomic import replace_atomically, write_text_atomic


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary(tmp_path):
    path = tmp_path / "findings.json"
    path.write_text("[1]")

    def fails(tmp):
        tmp.write_text("[")  # cut off midway
        raise OSError("disk full")

    with pytest.raises(InputError, match="cannot write .*disk full"):
        replace_atomically(path, fails)
    assert path.read_text() == "[1]" and sorted(p.name for p in tmp_path.iterdir()) == ["findings.json"]


def test_a_link_writes_its_target_with_the_targets_mode(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old")
    os.chmod(real, 0o600)
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new" and (real.stat().st_mode & 0o777) == 0o600


def test_a_read_only_file_is_refused_and_kept(tmp_path):
    path = tmp_path / "kept.md"
    path.write_text("kept")
    os.chmod(path, 0o444)
    with pytest.raises(InputError, match="read-only"):
        write_text_atomic(path, "replaced")
    assert path.read_text() == "kept"
