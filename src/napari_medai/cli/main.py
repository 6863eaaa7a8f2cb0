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


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # what was typed, for the commands that record it in a model card: the list given here when
    # medai is called from Python (sys.argv then belongs to the caller), else the console's
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except MedaiError as exc:
        print(f"medai {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `medai ... | head`: the reader stopped listening, which is no error of ours
        import io
        import os

        try:  # Python would report the pipe again while flushing stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):  # no file behind stdout (a test's capture)
            pass
        return 141  # 128 + SIGPIPE, as a shell reports a pipe's writer that was cut off
    except OSError as exc:  # a file that cannot be written (a full disk, no permission): no traceback
        print(f"medai {args.command}: error: {exc}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
