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
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__, config, ui
from .commands import register_all
from .drivespec import UsageError
from .errors import EXIT_INTERRUPTED, SealkeepError
from .pins import ENV_PIN

__all__ = ["build_parser", "main"]

DEBUG_VAR = "SEALKEEP_DEBUG"


# Options that would put a secret on the command line (shell history, the process list).
SECRET_OPTIONS = ("--pin", "--password", "--passphrase", "--so-pin", "--secret")
_SECRET_WORDS = ("pin", "pass", "secret")
# Options whose value is where a secret is kept, not the secret: their values stay visible.
_SECRET_FILE_OPTIONS = ("--passphrases",)
HIDDEN = "(hidden)"


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (``--pin`` never means ``--pin-file``), whose usage
    errors never echo a value given after a secret-looking option. Subcommands use it too
    (``add_subparsers`` makes its parsers of the class of the parser it is called on)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.given: list[str] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # error() needs the arguments to know which values to hide; a subcommand's parser
        # is handed its own share of them here
        self.given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact(message, self.given)}\n")


def _secret_looking(option: str) -> bool:
    name = option.lower()
    return (
        name.startswith("-")
        and any(word in name for word in _SECRET_WORDS)
        and not name.endswith("-file")
        and name not in _SECRET_FILE_OPTIONS
    )


def secret_values(argv: Sequence[str]) -> list[str]:
    """The values in ``argv`` that may be secrets: each one given to a secret-looking
    option (``--pinx 1234``, ``--pass=1234``), even one starting with a dash."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if not _secret_looking(name):
            continue
        if eq:
            values.append(value)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            values.append(argv[i + 1])
    return [v for v in values if v]


def redact(message: str, argv: Sequence[str]) -> str:
    """``message`` with every value that follows a secret-looking option in ``argv``
    replaced by (hidden), where it stands as a whole argument (as is or as argparse quotes
    it); option names and other values stay as they were."""
    for secret in sorted(set(secret_values(argv)), key=len, reverse=True):
        for form in {secret, repr(secret)[1:-1]}:
            whole = rf"(?<![^\s='\"]){re.escape(form)}(?![^\s'\"])"
            message = re.sub(whole, HIDDEN, message)
    return message


def _ways_to_give(name: str, accepted: set[str]) -> str:
    if "pass" in name:
        files = [f"{o} FILE" for o in ("--passphrases", "--passphrase-file") if o in accepted]
        return f"{' or '.join(files or ['--passphrases FILE'])} or the prompt"
    return f"--pin-file FILE, ${ENV_PIN}, or the prompt"


def _options_of(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The option names of the (sub)command ``argv`` names, as far as it names one."""
    options = set(parser._option_string_actions)
    for arg in argv:
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = commands[0].choices.get(arg) if commands else None
        if isinstance(chosen, argparse.ArgumentParser):
            parser = chosen
            options = set(parser._option_string_actions)
    return options


def refused_secret_option(argv: Sequence[str]) -> str | None:
    """The message for an option that would carry a secret on the command line, or None.
    It names the option, never its value."""
    for arg in argv:
        name = arg.partition("=")[0]
        if name in SECRET_OPTIONS:
            where = _ways_to_give(name, _options_of(build_parser(), argv))
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
            raise UsageError(refusal)
        parser = build_parser()
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
