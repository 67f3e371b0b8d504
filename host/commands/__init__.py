"""The subcommands of the ``sealkeep`` command line, one module each.

Every module in this package that defines ``register(subparsers)`` is a subcommand:
``register`` adds its parser with ``subparsers.add_parser(NAME, ...)`` and sets the function
that runs it with ``parser.set_defaults(run=FUNCTION)``, where ``FUNCTION(args) -> int``
returns the exit code. A module may set ``ORDER`` (an int, default 100) to place its
command in the help. Errors are raised as :class:`sealkeep.errors.SealkeepError`; the
command line turns them into a one-line ``error: ...`` and their exit code.

Options several commands share are added with the helpers below, so they read the same
everywhere.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

from ..config import DRIVE_TIMEOUT

__all__ = ["Runner", "add_drives_option", "add_json_option", "command_modules"]

Runner = Callable[[argparse.Namespace], int]
DEFAULT_ORDER = 100


def command_modules() -> list[ModuleType]:
    """The modules of this package that define a command, in help order."""
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "register", None)):
            modules.append(module)
    modules.sort(key=lambda m: (getattr(m, "ORDER", DEFAULT_ORDER), m.__name__))
    return modules


class ExamplesFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual and leaves the examples epilog line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


EXAMPLES: dict[str, str] = {
    "slots": "sealkeep slots\nsealkeep slots --module /usr/lib/softhsm/libsofthsm2.so",
    "keys": "sealkeep keys --slot primary\nsealkeep keys --slot 1742931004 --json",
    "drives": "sealkeep drives --drives @drives.json\n"
    "sealkeep drives reset --drives /dev/ttyACM2 --passphrases custodians.txt",
    "domain": "sealkeep domain create --slot primary --drives @drives.json --threshold 3\n"
    "sealkeep domain recover --slot standby --drives /dev/ttyACM0,/dev/ttyACM1,/dev/ttyACM2\n"
    "sealkeep domain reshare --slot primary --drives @new-drives.json",
    "backup": "sealkeep backup --slot primary --label nightly\n"
    "sealkeep backup --slot primary --allow-missing --json",
    "sets": "sealkeep sets\nsealkeep sets --set latest",
    "verify": "sealkeep verify --set latest\nsealkeep verify --set 3f2a9c",
    "audit": "sealkeep audit verify --state /var/lib/sealkeep\n"
    "sealkeep audit export --state /var/lib/sealkeep --out audit.json\n"
    "sealkeep audit verify --bundle audit.json --public-key audit-key.pub.pem",
    "restore": "sealkeep restore --set nightly --slot primary --dry-run\n"
    "sealkeep restore --set 3f2a9c --slot primary --key hmac1 --replace",
    "prune": "sealkeep prune --set 3f2a9c --passphrases custodians.txt",
    "firmware": "sealkeep firmware keygen --out vendor.key --passphrase-file vp\n"
    "sealkeep firmware build --version 1.2.0 --counter 3 --key vendor.key --out fw.img\n"
    "sealkeep firmware update --drives @drives.json fw.img",
    "emulate": "sealkeep emulate --count 5 --dir /tmp/d\nsealkeep emulate --blank --count 1",
    "demo": "sealkeep demo\nsealkeep demo --keep --json\nsealkeep demo --serve",
    "completion": "sealkeep completion bash > ~/.local/share/bash-completion/completions/sealkeep\n"
    "sealkeep completion zsh > ~/.zfunc/_sealkeep   # with fpath+=(~/.zfunc) in ~/.zshrc",
    "serve": "sealkeep serve init --state /var/lib/sealkeep --admin alice\n"
    "sealkeep serve --state /var/lib/sealkeep --drives @drives.json --listen 0.0.0.0:8443",
}
"""A few lines of real use per command, shown at the end of its --help."""


def register_all(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for module in command_modules():
        module.register(subparsers)
    for name, parser in subparsers.choices.items():
        examples = EXAMPLES.get(name)
        if examples:
            parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples.splitlines())
            parser.formatter_class = ExamplesFormatter


def add_drives_option(parser: argparse.ArgumentParser) -> None:
    """``--drives SPEC`` (see :mod:`sealkeep.drivespec`)."""
    parser.add_argument(
        "--drives",
        metavar="SPEC",
        help=(
            "the drives: comma-separated ports or URLs (/dev/ttyACM0, serial:///dev/pts/7), "
            "or @PATH to a drives.json; default: $SEALKEEP_DRIVES, else every USB serial port"
        ),
    )


def add_timeout_option(parser: argparse.ArgumentParser) -> None:
    """``--timeout SECONDS``: one default for every command that talks to drives."""
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"how long to wait for each drive's answer (default {DRIVE_TIMEOUT:g}, or the "
        "timeout in sealkeep.toml)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: print the result as JSON for programs."""
    parser.add_argument("--json", action="store_true", help="print JSON for programs")
