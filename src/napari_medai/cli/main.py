"""Entry point of the ``medai`` console script.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the parser it
creates sets ``func(args) -> int``.  Modules import torch/MONAI only inside ``func`` so that
``medai --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import MedaiError, out_of_memory_message

SUBCOMMANDS = ["info", "phantom", "segment", "detect", "measure", "screen", "batch", "evaluate", "denoise", "train"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medai", description="napari-medai command line tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"napari_medai.cli.{name}")
        except ModuleNotFoundError as exc:  # subcommand not built yet
            if exc.name != f"napari_medai.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


class _PipeGuard:
    """stdout (or stderr) that survives its reader going away (``medai measure ... --out f.json |
    head -1``): the first BrokenPipeError sends the rest to devnull, and the command goes on to
    write its files.  Ending the command there left --out unwritten and a batch half screened
    (found by an audit helper)."""

    def __init__(self, stream):
        self.stream, self.broken = stream, False

    def write(self, text):
        if not self.broken:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._to_devnull()
        return len(text)

    def flush(self):
        if not self.broken:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._to_devnull()

    def _to_devnull(self):
        self.broken = True
        _to_devnull(self.stream)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _to_devnull(stream) -> None:
    """Point ``stream``'s file at devnull: Python would report the broken pipe again while flushing
    it at exit."""
    import io
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no file behind it (a capture)
        pass


def _flush(guards) -> None:
    for guard in guards:
        if guard is not None:
            guard.flush()


def _printable_stdio() -> None:
    """Paths from file names that are not UTF-8 (lone surrogates) print as backslash escapes,
    not as a UnicodeEncodeError traceback on a strict UTF-8 terminal."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # not a TextIOWrapper (a test's capture)
            pass


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # what was typed, for the commands that record it in a model card: the list given here when
    # medai is called from Python (sys.argv then belongs to the caller), else the console's
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    _printable_stdio()
    saved = sys.stdout, sys.stderr
    # stdout and stderr both (`2>&1 | head`); none where a stream is closed (`>&-`: sys.stdout is None)
    guards = [None if stream is None else _PipeGuard(stream) for stream in saved]
    sys.stdout, sys.stderr = (guard or stream for guard, stream in zip(guards, saved))
    try:
        rc = int(args.func(args) or 0)
        _flush(guards)  # stdout to a pipe is block-buffered: what is left breaks here, guarded, not at exit
        # a command's own failure (1: cases or points skipped) stays; else 128 + SIGPIPE, as a shell
        # reports a pipe's writer that was cut off
        return rc or (141 if any(g is not None and g.broken for g in guards) else 0)
    except MedaiError as exc:
        print(f"medai {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `medai ... | head`: the reader stopped listening, which is no error of ours
        _to_devnull(sys.stdout)
        return 141  # 128 + SIGPIPE, as a shell reports a pipe's writer that was cut off
    except OSError as exc:  # a file that cannot be written (a full disk, no permission): no traceback
        print(f"medai {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except UnicodeError as exc:  # text no encoding takes (the file names are written escaped): one line
        print(f"medai {args.command}: error: text that cannot be encoded or decoded "
              f"({getattr(exc, 'reason', exc)})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medai {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:  # out of memory gets a sentence; anything else is a bug
        said = out_of_memory_message(exc)
        if said is None:
            raise
        print(f"medai {args.command}: error: {said}", file=sys.stderr)
        return 2
    finally:
        _flush(guards)
        sys.stdout, sys.stderr = saved


if __name__ == "__main__":
    sys.exit(main())
