"""Files written whole or not at all: into a temporary file beside the target, then renamed over
it.  A failed write, a full disk or a cancel leaves an earlier result as it was (a re-run that
failed used to leave a cut-off NIfTI, or replace a good findings list with "[]")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import InputError


def replace_atomically(path, save: Callable[[Path], None], suffix: str = "") -> None:
    """``save(tmp)`` writes the content to ``tmp`` (a hidden file beside the target, ending in
    ``suffix``), which then replaces ``path``.  A symlink's target is written (the rename would
    replace the link and leave the user's real file unchanged), a read-only file is refused, and
    a replaced file keeps its permissions (a private 0600 scan stays private)."""
    path = Path(path)
    target, mode = _replace_target(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")
    try:
        save(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> None:
    """``text`` (UTF-8) into ``path`` by :func:`replace_atomically`.  A file name that is not UTF-8
    (Latin-1 bytes) comes into the text as lone surrogates, which strict UTF-8 refused with a
    traceback after the other outputs were written: they are written as backslash escapes."""
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8", errors="backslashreplace"))


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
