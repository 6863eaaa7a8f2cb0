"""io.atomic: a file is replaced whole or not at all, through a symlink to its target, keeping
its permissions; a read-only file is refused and left as it is."""

from __future__ import annotations

import hashlib
import os

import pytest

from napari_medai.errors import InputError
from napari_medai.io.atomic import all_or_nothing, replace_atomically, write_text_atomic


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


def test_files_written_together_are_renamed_only_when_every_one_was_written(tmp_path):
    from napari_medai.io.atomic import all_or_nothing

    first, second = tmp_path / "findings.json", tmp_path / "findings.md"
    first.write_text("[1]")

    def disk_full(tmp):
        tmp.write_text("# cut")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match=f"cannot write {second}: .*No space left on device"):
        with all_or_nothing():
            write_text_atomic(first, "[1, 2]")
            replace_atomically(second, disk_full)
    # the earlier result as it was, no second file and no temporary
    assert first.read_text() == "[1]" and sorted(p.name for p in tmp_path.iterdir()) == ["findings.json"]
    with all_or_nothing():
        write_text_atomic(first, "[1, 2]")
        write_text_atomic(second, "# two")
        assert first.read_text() == "[1]" and not second.exists()  # staged until the block ends
    assert first.read_text() == "[1, 2]" and second.read_text() == "# two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.json", "findings.md"]


def test_an_error_of_any_kind_in_the_block_leaves_the_files_and_removes_the_temporaries(tmp_path):
    from napari_medai.io.atomic import all_or_nothing, discard

    kept, old = tmp_path / "labels.nii.gz", tmp_path / "old.png"
    kept.write_bytes(b"earlier")
    old.write_bytes(b"earlier image")
    with pytest.raises(KeyboardInterrupt):
        with all_or_nothing():
            write_text_atomic(kept, "new")
            discard(old)  # removed with the renames only
            raise KeyboardInterrupt
    assert kept.read_bytes() == b"earlier" and old.read_bytes() == b"earlier image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz", "old.png"]
    with all_or_nothing():
        discard(old)
        assert old.exists()
    assert not old.exists()


def test_inside_a_block_links_modes_and_read_only_files_are_treated_as_one_by_one(tmp_path):
    from napari_medai.io.atomic import all_or_nothing, pending
    from napari_medai.models.registry import sha256_of

    real, link, locked = tmp_path / "real.csv", tmp_path / "link.csv", tmp_path / "locked.md"
    real.write_text("old")
    os.chmod(real, 0o600)
    link.symlink_to(real)
    locked.write_text("kept")
    os.chmod(locked, 0o444)
    with pytest.raises(InputError, match="read-only"):
        with all_or_nothing():
            write_text_atomic(link, "new")
            write_text_atomic(locked, "replaced")
    assert real.read_text() == "old" and locked.read_text() == "kept"
    with all_or_nothing():
        write_text_atomic(link, "new")
        # the content as written, before its rename (a report lists the sha256 of the files beside it)
        assert pending(link) != link and sha256_of(pending(link)) == hashlib.sha256(b"new").hexdigest()
    assert link.is_symlink() and real.read_text() == "new" and (real.stat().st_mode & 0o777) == 0o600
    assert pending(link) == link


def test_a_failure_caught_inside_a_block_does_not_install_the_cut_off_file(tmp_path):
    """The block kept the failed write's temporary and renamed it over the earlier file when a
    caller caught the error and went on (a reviewer's finding)."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("good earlier")

    def cut_off(tmp):
        tmp.write_text("cut of")
        raise OSError(28, "No space left on device")

    with all_or_nothing():
        with pytest.raises(InputError, match="cannot write .*a.json"):
            replace_atomically(a, cut_off)
        write_text_atomic(b, "new")
    assert a.read_text() == "good earlier" and b.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporary left


def test_a_killed_runs_temporary_is_removed_and_a_running_ones_kept(tmp_path):
    """A SIGKILL while a screening staged its NIfTI files left hidden temporaries of hundreds of MB
    that nothing removed (a reviewer's finding).  Only an hour-old one of a process that is gone
    goes; odd names are left alone and do not stop the write."""
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{pid}"))
    old = os.path.getmtime(tmp_path) - 7200  # two hours ago

    def leftover(name, age=old):
        path = tmp_path / name
        path.write_bytes(b"partial")
        os.utime(path, (age, age))
        return path

    stale = leftover(f".seg.nii.gz.{dead}.tmp.nii.gz")
    running = leftover(f".seg.nii.gz.{os.getppid()}.tmp.nii.gz")  # another run, still going
    recent = leftover(f".seg.nii.gz.{dead + 1}.tmp.nii.gz", age=os.path.getmtime(tmp_path))  # maybe another host's
    other = leftover(f".seg.nii.gz.1.{dead}.tmp.nii.gz")  # another file's ("seg.nii.gz.1"), though the glob matches it
    odd = [leftover(f".seg.nii.gz.{pid}.tmp.nii.gz") for pid in ("99999999999999999999", "²")]
    replace_atomically(tmp_path / "seg.nii.gz", lambda tmp: tmp.write_bytes(b"whole"), suffix=".nii.gz")
    assert (tmp_path / "seg.nii.gz").read_bytes() == b"whole"
    assert not stale.exists() and running.exists() and recent.exists() and other.exists()
    assert all(path.exists() for path in odd)  # an OverflowError and a ValueError before
