"""Command line entry point: `python -m trtopt VERB ...`.

Each verb lives in its own module in this package and exposes
``register(subparsers: argparse._SubParsersAction) -> None``, which adds a subparser whose
``func`` default is ``run(args) -> int``. Verbs are discovered from the package, so the help lists
exactly the verbs that exist. Verb modules import heavy libraries (torch, onnxruntime) inside
``run`` only, keeping ``--help`` fast.

Exit statuses: 0 ok, 1 failure, 2 usage error, 3 benchmark regression, 130 interrupted (Ctrl-C or
SIGTERM: both unwind through the same cleanup, see trtopt.signals).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import shlex
import sys
import traceback
from collections.abc import Sequence

from trtopt import __version__
from trtopt.errors import TrtoptError
from trtopt.progress import set_quiet
from trtopt.signals import Terminated, sigterm_as_interrupt

log = logging.getLogger("trtopt")
NOT_VERBS = {"groups"}  # modules of this package that are not verbs (shared argument groups)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trtopt",
        description="Train, export, calibrate and build fast, verified inference engines.",
        epilog="Exit status: 0 ok, 1 failure, 2 usage error, 3 benchmark regression.",
    )
    parser.add_argument("--version", action="version", version=f"trtopt {__version__}")
    _add_global_flags(parser)
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    subparsers.required = True
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name in NOT_VERBS:
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        module.register(subparsers)
    for verb_parser in subparsers.choices.values():  # `trtopt build -v ...` works as well as `trtopt -v build ...`
        _add_global_flags(verb_parser, default=argparse.SUPPRESS)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser, default: object = None) -> None:
    """-v/-q/--debug; on a verb's parser with SUPPRESS defaults, so a flag given before the verb survives."""
    group = parser.add_argument_group("global options") if default is argparse.SUPPRESS else parser
    group.add_argument("-v", "--verbose", action="count", default=0 if default is None else default,
                       help="more log output (-vv for debug)")
    group.add_argument("-q", "--quiet", action="store_true", default=False if default is None else default,
                       help="only errors; no progress bars")
    group.add_argument("--debug", action="store_true", default=False if default is None else default,
                       help="show the full traceback on errors")


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("trtopt").setLevel(logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # recorded by verbs that write artefacts (the build manifest), so a later load() can say how to rebuild
    args.command_line = "trtopt " + shlex.join(argv)
    _configure_logging(args.verbose, args.quiet)
    set_quiet(args.quiet)
    try:
        with sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except TrtoptError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"trtopt {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `trtopt ... | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (signals.Terminated): cleanup has run
        print(f"trtopt {args.verb}: {exc if isinstance(exc, Terminated) else 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, not a traceback
        if args.debug:
            traceback.print_exc()
        print(
            f"trtopt {args.verb}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
