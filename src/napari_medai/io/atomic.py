"""Files written whole or not at all: into a temporary file beside the target, then renamed over
it.  A failed write, a full disk or a cancel leaves an earlier result as it was (a re-run that
failed used to leave a cut-off NIfTI, or replace a good findings list with "[]").

Files that belong together (a findings list and its summary, a label map and its probability
map, a screening report) are written inside one ``all_or_nothing()`` block: each is staged in
its temporary file, and they are renamed into place only once every one was written (a full
disk at the second file used to leave the first one new beside an earlier or missing second,
while the command said it had failed)."""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from glob import escape as glob_escape
from pathlib import Path
from typing import Callable

from ..errors import InputError


class _Block:
    """What an ``all_or_nothing`` block has staged: target -> (path as given, its temporary), and
    the paths it removes."""

    def __init__(self):
        self.files: dict[Path, tuple[Path, Path]] = {}
        self.removed: list[Path] = []


# the block open in this thread: a context variable, so that medai batch's worker threads, each
# writing its own case's report, never rename one another's files
_BLOCK: ContextVar[_Block | None] = ContextVar("napari_medai_atomic_block", default=None)


def replace_atomically(path, save: Callable[[Path], None], suffix: str = "") -> None:
    """``save(tmp)`` writes the content to ``tmp`` (a hidden file beside the target, ending in
    ``suffix``), which then replaces ``path``; inside ``all_or_nothing()`` at the block's end.  A
    symlink's target is written (the rename would replace the link and leave the user's real file
    unchanged), a read-only file is refused, and a replaced file keeps its permissions (a private
    0600 scan stays private)."""
    path = Path(path)
    target, mode = _replace_target(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")
    _remove_stale(target, suffix)
    block = _BLOCK.get()
    if block is not None:  # before the write: the block removes a temporary cut off midway too
        block.files[target] = (path, tmp)
    try:
        save(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        if block is None:
            os.replace(tmp, target)
    except BaseException as exc:
        if block is not None:  # a failure caught inside the block must not leave it the cut-off temporary to install
            block.files.pop(target, None)
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {path}: {exc}") from None
        raise
    finally:
        if block is None:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def all_or_nothing():
    """Every file ``replace_atomically`` writes inside the block (``write_text_atomic``,
    ``io.write_volume``, key images) is renamed into place only when the block ends without an
    error, and every ``discard`` is done then; on an error the temporaries are removed and each
    path keeps what it held before.  A block inside another is part of it.  The renames at the end
    are not one step: only a kill between them (microseconds) can still mix two runs' files."""
    if _BLOCK.get() is not None:
        yield
        return
    block = _Block()
    token = _BLOCK.set(block)
    try:
        yield
        for target, (path, tmp) in block.files.items():
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise InputError(f"cannot write {path}: {exc}") from None
        for path in block.removed:
            path.unlink(missing_ok=True)
    finally:
        _BLOCK.reset(token)
        for _, tmp in block.files.values():
            tmp.unlink(missing_ok=True)


def discard(path) -> None:
    """Remove ``path`` (if there) now, or inside ``all_or_nothing()`` with the block's renames:
    an earlier run's file that the new set leaves out stays while that set may still fail."""
    block = _BLOCK.get()
    if block is None:
        Path(path).unlink(missing_ok=True)
    else:
        block.removed.append(Path(path))


def pending(path) -> Path:
    """The file that holds what was last written to ``path``: inside ``all_or_nothing()`` its
    staged temporary (a report's sha256 of a file it is written beside), else ``path``."""
    path = Path(path)
    block = _BLOCK.get()
    staged = block.files.get(path.resolve() if path.is_symlink() else path) if block is not None else None
    return path if staged is None else staged[1]


# a temporary older than this, whose process is gone, is a killed run's: never one being written
# (a screening stages its files for minutes at most), also where another host writes the folder
STALE_S = 3600.0


def _remove_stale(target: Path, suffix: str) -> None:
    """Remove the temporaries of ``target`` that a killed run left (its process gone, the file an
    hour old): a SIGKILL or the out-of-memory killer while a screening staged its NIfTI files left
    hidden files of hundreds of MB that nothing removed (a reviewer's finding).  POSIX only (on
    Windows ``os.kill(pid, 0)`` sends Ctrl+C); a file it cannot judge or remove is left alone."""
    import time

    if os.name != "posix":
        return
    for old in target.parent.glob(f".{glob_escape(target.name)}.*.tmp{glob_escape(suffix)}"):
        try:
            pid = old.name[len(target.name) + 2:].split(".tmp", 1)[0]
            if not (pid.isascii() and pid.isdigit()) or int(pid) == os.getpid():
                continue
            if time.time() - old.stat().st_mtime > STALE_S and not _alive(int(pid)):
                old.unlink(missing_ok=True)
        except (OSError, ValueError, OverflowError):
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def write_text_atomic(path, text: str) -> None:
    """``text`` (UTF-8) into ``path`` by :func:`replace_atomically`, as :func:`as_written` gives it."""
    replace_atomically(path, lambda tmp: tmp.write_text(as_written(text), encoding="utf-8"))


def as_written(text: str) -> str:
    """``text`` as ``write_text_atomic`` writes it, and so as it reads back.  A file name that is
    not UTF-8 (Latin-1 bytes) comes into the text as lone surrogates, which strict UTF-8 refused
    with a traceback after the other outputs were written: they are written as backslash escapes
    (a path read back from a table compares with a path by this form: ``batch.keep_earlier_names``)."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _replace_target(path: Path) -> tuple[Path, int | None]:
    """Where a write to ``path`` lands, and the permission bits to keep: a symlink's target with
    its mode; a read-only file is refused (the rename replaced it regardless of its mode, as root
    everywhere); a new file: ``path`` and None (the umask's mode)."""
    import stat

    if path.is_symlink():
        path = path.resolve()
    if not path.exists():
        return path, None
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & stat.S_IWUSR:
        raise InputError(f"cannot write {path}: the file is read-only; make it writable or choose another name")
    return path, mode
