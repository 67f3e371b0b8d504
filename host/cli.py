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
from typing import Any, NoReturn

from . import __version__, config, ui
from .commands import register_all
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, SealkeepError

__all__ = ["build_parser", "main"]

DEBUG_VAR = "SEALKEEP_DEBUG"


# Options that would put a secret on the command line (shell history, the process list).
SECRET_OPTIONS = ("--pin", "--password", "--passphrase", "--so-pin", "--secret")
_SECRET_WORDS = ("pin", "pass", "secret")


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (``--pin`` never means ``--pin-file``), whose usage
    errors never echo a value given after a secret-looking option. Subcommands use it too."""

    argv: Sequence[str] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact(message, self.argv)}\n")


def redact(message: str, argv: Sequence[str]) -> str:
    """``message`` with every value that follows a secret-looking option replaced."""
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if not name.startswith("-") or not any(w in name.lower() for w in _SECRET_WORDS):
            continue
        secret = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if secret and not secret.startswith("-") and not name.endswith("-file"):
            message = message.replace(secret, "(hidden)")
    return message


def refused_secret_option(argv: Sequence[str]) -> str | None:
    """The message for an option that would carry a secret on the command line, or None."""
    for arg in argv:
        name = arg.partition("=")[0]
        if name in SECRET_OPTIONS:
            where = (
                "--passphrases FILE or the prompt"
                if "pass" in name
                else "--pin-file FILE, $SEALKEEP_PIN, or the prompt"
            )
            return (
                f"sealkeep never takes a PIN or passphrase on the command line ({name}): it "
                f"would stay in the shell's history and the process list. Use {where}."
            )
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=Parser
    )
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
    given = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in given
    try:
        refusal = refused_secret_option(given)
        if refusal is not None:
            ui.error(refusal)
            return EXIT_USAGE
        parser = build_parser()
        Parser.argv = given
        try:
            args = parser.parse_args(given)
        except SystemExit as exc:  # --help, --version, or a usage error (already printed)
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        config.apply(args)
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
