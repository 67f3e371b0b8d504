"""Secrets never on the command line and never echoed; no abbreviations; Ctrl-D at a prompt
is a clear error. The ``sealkeep`` command line in a subprocess (and a pty for the prompt)."""

from __future__ import annotations

import argparse
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

SECRET = "918273645"


def sealkeep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealkeep", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["slots", "--pin", SECRET],
        ["keys", "--slot", "1", f"--pin={SECRET}"],
        ["backup", "--slot", "1", "--password", SECRET],
        ["domain", "create", "--slot", "1", "--passphrase", SECRET],
        ["keys", "--so-pin", SECRET, "--slot", "1"],
    ],
)
def test_a_secret_on_the_command_line_is_refused_and_not_echoed(argv: list[str]) -> None:
    done = sealkeep(*argv)
    assert done.returncode == 2
    assert SECRET not in done.stdout + done.stderr
    assert "never takes a PIN or passphrase on the command line" in done.stderr
    assert "Traceback" not in done.stderr


def test_options_are_never_abbreviated(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    done = sealkeep("keys", "--slot", "1", "--pin-f", str(pin))
    assert done.returncode == 2 and "unrecognized arguments: --pin-f" in done.stderr
    nested = sealkeep("firmware", "keygen", "--o", str(tmp_path / "k"), "--no-passphrase")
    assert nested.returncode == 2 and not (tmp_path / "k").exists()


def test_a_value_after_a_secret_looking_option_is_not_echoed() -> None:
    done = sealkeep("keys", "--slot", "1", "--pinx", SECRET)
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr
    assert SECRET not in done.stderr and "(hidden)" in done.stderr
    plain = sealkeep("keys", "--slot", "1", "--labelx", "visible-value")
    assert "visible-value" in plain.stderr  # values of other options stay useful


def test_ctrl_d_at_the_pin_prompt_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SEALKEEP_PIN"}
    env["SOFTHSM2_CONF"] = str(tmp_path / "softhsm2.conf")
    (tmp_path / "tokens").mkdir()
    (tmp_path / "softhsm2.conf").write_text(f"directories.tokendir = {tmp_path / 'tokens'}\n")
    init = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "eof", "--so-pin", "1234",
         "--pin", "1234"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    pid, fd = pty.fork()
    if pid == 0:  # the child: sealkeep on the pty, asking for the PIN
        os.execvpe(sys.executable, [sys.executable, "-m", "sealkeep", "keys", "--slot", "eof"], env)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while b"PIN for" not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                out += os.read(fd, 1024)
        assert b"PIN for" in out, out
        os.write(fd, b"\x04")  # Ctrl-D: end of input
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 2, text
    assert "input ended (Ctrl-D)" in text and "EOFError" not in text and "Traceback" not in text


def test_every_command_shows_examples_in_its_help() -> None:
    from sealkeep.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        text = sub.format_help()
        assert "examples:\n  sealkeep " + name in text, name
