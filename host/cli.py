"""The ``sealkeep`` command line.

``main(argv)`` parses the arguments, runs the subcommand and returns the exit code. The
subcommands live in :mod:`sealkeep.commands`, one module each. Every
:class:`~sealkeep.errors.SealkeepError` becomes one line ``error: ...`` on stderr and the
error's exit code; Ctrl-C exits 130; anything unexpected is reported in one line too (set
``SEALKEEP_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from . import __version__, ui
from .commands import register_all
from .errors import EXIT_INTERRUPTED, SealkeepError

__all__ = ["build_parser", "main"]

DEBUG_VAR = "SEALKEEP_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealkeep",
        description=(
            "Back up every key of a PKCS#11 HSM slot to a set of smart backup drives, and "
            "restore them."
        ),
        epilog=(
            "Exit codes: 0 done, 1 failed, 2 bad usage or input file, 3 a drive is "
            "unreachable, 4 authentication refused, 5 a drive refused to store, 6 integrity "
            "check failed, 7 protocol error, 8 done but incomplete (what was left out is listed), "
            "130 interrupted."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sealkeep {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    register_all(subparsers)
    return parser


def error_document(exc: SealkeepError) -> dict[str, object]:
    """An error as ``--json`` gives it on stdout (the line on stderr says the same)."""
    document: dict[str, object] = {
        "message": str(exc),
        "exit_code": exc.exit_code,
        "kind": type(exc).__name__,
    }
    problems = getattr(exc, "problems", None)
    if isinstance(problems, tuple):
        document["problems"] = [{"drive": name, "problem": reason} for name, reason in problems]
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    wants_json = "--json" in (sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a usage error (already printed)
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        run = getattr(args, "run", None)
        if run is None:
            parser.print_help(sys.stderr)
            return 2
        code: int = run(args)
        return code
    except SealkeepError as exc:
        ui.error(str(exc))
        if wants_json:
            ui.print_json({"error": error_document(exc)})
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. `| head`): say nothing more to it
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as exc:
        if os.environ.get(DEBUG_VAR):
            traceback.print_exc()
        ui.error(
            f"internal error: {type(exc).__name__}: {exc}. This is a bug in sealkeep; "
            f"run again with {DEBUG_VAR}=1 to see where, and report it."
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
