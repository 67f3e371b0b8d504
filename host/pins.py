"""Secrets typed by people: the slot PIN and the custodians' passphrases.

Nothing secret is ever taken from the command line (argv is visible to every user of the
machine). The slot PIN comes, in this order, from ``--pin-file FILE`` (its first line),
from the environment variable ``SEALKEEP_PIN``, or from a prompt on the terminal.

Custodian passphrases come from ``--passphrases FILE`` (for automation: one
``SERIAL PASSPHRASE`` line per drive; the passphrase is the rest of the line, inner spaces
included, trailing ones not; blank lines and lines starting with ``#`` are skipped) or
from prompts naming each drive's serial. A new passphrase is asked twice and must pass
the strength check (:func:`sealkeep.kdf.passphrase_weakness`); at the prompt an empty
answer has a passphrase of random words generated, shown once and typed back. One for an
existing drive is asked once (the drive itself says whether it is right).
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from .drivespec import UsageError
from .kdf import generate_passphrase, passphrase_weakness

ENV_PIN = "SEALKEEP_PIN"
MAX_TRIES = 3


class InputError(UsageError):
    """Bad usage or a bad input file (a PIN or passphrase file, a missing secret)."""


Prompt = Callable[[str], str]
"""Reads a secret from the person at the terminal, without echo (``getpass.getpass``)."""

Warn = Callable[[str], None]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _read_secret_file(path: str, what: str, warn: Warn | None) -> str:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"the {what} file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"the {what} file {path} is a directory") from None
    except UnicodeDecodeError:
        raise InputError(f"the {what} file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None
    if warn is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(
            f"warning: the {what} file {path} can be read by other users; "
            f"restrict it with `chmod 600 {path}`"
        )
    return text


def read_pin_file(path: str, warn: Warn | None = _stderr) -> str:
    """The PIN in the first line of ``path`` (its line ending removed)."""
    text = _read_secret_file(path, "PIN", warn)
    lines = text.splitlines()
    pin = lines[0] if lines else ""
    if not pin:
        raise InputError(f"the PIN file {path} is empty: put the slot PIN on its first line")
    return pin


def read_password_file(path: str, warn: Warn | None = _stderr) -> str:
    """A password in the first line of ``path`` (its line ending removed)."""
    lines = _read_secret_file(path, "password", warn).splitlines()
    password = lines[0] if lines else ""
    if not password:
        raise InputError(f"the password file {path} is empty: put the password on its first line")
    return password


def ask_new_password(what: str, prompt: Prompt | None = None) -> str:
    """A new password for ``what``, typed twice at the terminal without echo."""
    if prompt is None:
        if not _interactive():
            raise InputError(f"no password for {what}: give --password-file FILE")
        prompt = getpass.getpass
    ask = _eof_safe(prompt, f"password for {what}")
    first = ask(f"new password for {what}: ")
    if ask(f"the password for {what} again: ") != first:
        raise InputError("the two passwords differ: nothing was changed, run the command again")
    return first


def _eof_safe(prompt: Prompt, what: str) -> Prompt:
    """``prompt``, with Ctrl-D (end of input) at it a clear error naming ``what`` was being
    asked for, rather than an EOFError. Ctrl-C goes on as KeyboardInterrupt (exit 130)."""

    def ask(text: str) -> str:
        try:
            return prompt(text)
        except EOFError:
            raise InputError(f"no {what} given: input ended (Ctrl-D) at the prompt") from None

    return ask


def slot_pin(
    where: str,
    pin_file: str | None = None,
    *,
    prompt: Prompt | None = None,
    environ: dict[str, str] | None = None,
    warn: Warn | None = _stderr,
) -> str:
    """The PIN for ``where`` (a slot's description): file, then ``$SEALKEEP_PIN``, then a prompt.

    ``prompt`` defaults to a no-echo terminal prompt, used only when stdin is a terminal.
    """
    if pin_file:
        return read_pin_file(pin_file, warn)
    env = os.environ if environ is None else environ
    pin = env.get(ENV_PIN)
    if pin:
        return pin
    if prompt is None:
        if not _interactive():
            raise InputError(
                f"no PIN for {where}: give --pin-file FILE or set {ENV_PIN} "
                "(the PIN is never taken from the command line)"
            )
        prompt = getpass.getpass
    pin = _eof_safe(prompt, f"PIN for {where}")(f"PIN for {where}: ")
    if not pin:
        raise InputError(f"no PIN entered for {where}")
    return pin


def parse_passphrases(text: str, source: str = "passphrase file") -> dict[str, str]:
    """``SERIAL PASSPHRASE`` lines -> {serial: passphrase}; bad lines are named."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[1].strip():
            raise InputError(
                f"{source} line {number}: expected `SERIAL PASSPHRASE`, found a serial alone"
            )
        serial, passphrase = parts[0], parts[1].rstrip()
        if serial in result:
            raise InputError(f"{source} line {number}: drive {serial} is listed twice")
        result[serial] = passphrase
    if not result:
        raise InputError(f"{source} holds no `SERIAL PASSPHRASE` line")
    return result


def read_passphrase_file(path: str, warn: Warn | None = _stderr) -> dict[str, str]:
    """The passphrases of a ``--passphrases FILE``."""
    return parse_passphrases(_read_secret_file(path, "passphrase", warn), path)


class Passphrases:
    """Where custodians' passphrases come from: a file, or prompts per drive serial.

    :meth:`existing` returns the passphrase of a drive already claimed (asked once; the
    drive checks it). :meth:`new` returns a passphrase for a drive being claimed: asked
    twice, and refused while it fails the strength check (a file's passphrases are
    checked as well). :meth:`retry` says whether a refused passphrase can be asked again.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        prompt: Prompt | None = None,
        warn: Warn | None = _stderr,
        entries: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self._entries = entries
        if path is not None and entries is None:
            self._entries = read_passphrase_file(path, warn)
        self._prompt = prompt
        self._warn = warn

    @property
    def from_file(self) -> bool:
        return self._entries is not None

    def _ask(self, serial: str) -> Prompt:
        what = f"passphrase for drive {serial}"
        if self._prompt is not None:
            return _eof_safe(self._prompt, what)
        if not _interactive():
            raise InputError(
                "custodian passphrases are needed: give --passphrases FILE with "
                "`SERIAL PASSPHRASE` lines, or run this on a terminal to be asked"
            )
        return _eof_safe(getpass.getpass, what)

    def _listed(self, serial: str) -> str:
        assert self._entries is not None
        try:
            return self._entries[serial]
        except KeyError:
            where = self.path or "the passphrase list"
            raise InputError(f"{where} has no passphrase for drive {serial}") from None

    def has(self, serial: str) -> bool:
        """True when the file lists ``serial`` (always true when prompting)."""
        return self._entries is None or serial in self._entries

    def existing(self, serial: str) -> str:
        """The passphrase of the custodian of drive ``serial``."""
        if self._entries is not None:
            return self._listed(serial)
        passphrase = self._ask(serial)(f"Passphrase of the custodian of drive {serial}: ")
        if not passphrase:
            raise InputError(f"no passphrase entered for drive {serial}")
        return passphrase

    def retry(self) -> bool:
        """Whether asking again can give another answer (a prompt can; a file cannot)."""
        return self._entries is None

    def new(self, serial: str) -> str:
        """A new passphrase for drive ``serial``, twice and strong enough.

        At the prompt an empty answer offers a generated passphrase of random words: it is
        shown (on the terminal only) for the custodian to write down, and typed back.
        """
        if self._entries is not None:
            passphrase = self._listed(serial)
            weakness = passphrase_weakness(passphrase, (serial,))
            if weakness is not None:
                raise InputError(f"the passphrase for drive {serial} in {self.path} is {weakness}")
            return passphrase
        ask = self._ask(serial)
        say = self._warn or _stderr
        for _ in range(MAX_TRIES):
            first = ask(
                f"New passphrase for the custodian of drive {serial} "
                "(or press Enter to have one generated): "
            )
            if not first:
                first = generate_passphrase()
                say(
                    f"Generated passphrase for drive {serial}:\n\n    {first}\n\n"
                    "The custodian writes it down now and keeps it apart from the drive; "
                    "it is not shown again."
                )
                second = ask(f"Type the generated passphrase back, for drive {serial}: ")
            else:
                weakness = passphrase_weakness(first, (serial,))
                if weakness is not None:
                    say(f"That passphrase is {weakness}. Try again.")
                    continue
                second = ask(f"The same passphrase again, for drive {serial}: ")
            if second != first:
                say("The two entries differ. Try again.")
                continue
            return first
        raise InputError(f"no acceptable passphrase for drive {serial} after {MAX_TRIES} tries")
