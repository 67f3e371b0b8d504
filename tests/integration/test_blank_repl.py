"""A technician at a blank drive's serial console (`sealkeep emulate --blank`): the stock
MicroPython REPL answers what they type, holds no files, and after `sealkeep firmware
install` on that port it is gone and the port answers HELLO as a drive with the serial
given; a program waiting for input, interrupted with Ctrl-C, leaves a REPL the install still
works on. (A busy program on the unix port stops on SIGINT only, not on a typed Ctrl-C.) The
console is a terminal on the drive's pty, read with pexpect's expect."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest
from pexpect import fdpexpect
from sealkeep import cli
from sealkeep import firmware as fw
from sealkeep.client import DriveClient, Hello
from sealkeep.emulator import Emulator
from sealkeep.install import install_image
from sealkeep.transport import open_transport

pytestmark = pytest.mark.integration

StartDrives = Callable[..., Emulator]
PROMPT = ">>> "
CTRL_C = "\x03"
# Long enough for a REPL on the unix port to answer (it takes milliseconds).
QUIET = 1.0


class Console:
    """A terminal on a drive's serial port: what is typed goes to the board, and
    :meth:`expect` reads what it prints."""

    def __init__(self, port: str, timeout: float = 5.0) -> None:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        try:
            self.term = fdpexpect.fdspawn(
                fd, timeout=timeout, encoding="utf-8", codec_errors="replace"
            )
        except BaseException:
            os.close(fd)
            raise

    def type(self, text: str) -> None:
        self.term.send(text)

    def expect(self, pattern: str, timeout: float | None = None) -> None:
        self.term.expect(pattern, timeout=-1 if timeout is None else timeout)

    def expect_exact(self, text: str, timeout: float | None = None) -> None:
        self.term.expect_exact(text, timeout=-1 if timeout is None else timeout)

    def prompt(self) -> None:
        """Press Enter and wait for the REPL's prompt."""
        self.type("\r")
        self.expect_exact(PROMPT)

    def run(self, line: str) -> str:
        """Type line at the prompt; what it printed before the next prompt."""
        self.type(line + "\r")
        self.expect_exact(line + "\r\n")  # its echo: whatever came before it is passed
        self.expect_exact(PROMPT)
        before = self.term.before
        assert isinstance(before, str)
        return before.replace("\r\n", "\n").strip()

    def is_repl(self) -> bool:
        """Press Enter and Ctrl-C as at a REPL: whether a prompt (friendly or raw) comes."""
        self.type("\r" + CTRL_C + CTRL_C + "\r")
        found = self.term.expect([PROMPT, "raw REPL", pexpect.TIMEOUT], timeout=QUIET)
        return found != 2

    def close(self) -> None:
        self.term.close()  # closes the port; a second call does nothing


@pytest.fixture
def console() -> Iterator[Callable[[str], Console]]:
    """``console(port)``: a terminal on port, closed after the test if it is still open."""
    opened: list[Console] = []

    def open_console(port: str) -> Console:
        terminal = Console(port)
        opened.append(terminal)
        return terminal

    yield open_console
    for terminal in opened:
        terminal.close()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("repl-image")
    fw.keygen(d / "vendor.key")
    path = d / "v1.img"
    path.write_bytes(fw.build_image("1.0.0", 1, fw.load_signing_key(d / "vendor.key")))
    return path


def hello_of(port: str) -> Hello:
    client = DriveClient(open_transport(port), timeout=3.0)
    try:
        return client.hello()
    finally:
        client.close()


def test_a_blank_drive_is_a_bare_repl_until_the_firmware_is_installed(
    image: Path,
    emulated_drives: StartDrives,
    console: Callable[[str], Console],
    capsys: pytest.CaptureFixture[str],
) -> None:
    emu = emulated_drives(1, blank=True)
    drive = emu.drives[0]
    assert drive.blank

    term = console(drive.port)
    term.expect(r"MicroPython \S+ on \S+; linux")  # the banner it printed at power-up
    term.expect_exact(PROMPT)
    assert term.run("6 * 7") == "42"
    assert term.run("import os; os.listdir()") == "[]"
    assert term.is_repl()
    term.close()  # the port is the installer's now

    argv = ["firmware", "install", "--port", drive.port, str(image), "--serial", "SK-TECH0101"]
    assert cli.main(argv) == 0
    assert "SK-TECH0101: firmware 1.0.0 (counter 1) installed" in capsys.readouterr().out

    term = console(drive.port)
    assert not term.is_repl()  # what is typed now goes to the firmware, which says nothing
    term.close()
    hello = hello_of(drive.port)  # and the keystrokes did not upset it
    assert (hello.serial, hello.firmware, hello.state) == ("SK-TECH0101", "1.0.0", "blank")
    assert not emu.drives[0].blank
    assert emu.drives[0].serial == "SK-TECH0101"


def test_install_on_a_repl_whose_program_was_interrupted(
    image: Path, emulated_drives: StartDrives, console: Callable[[str], Console]
) -> None:
    emu = emulated_drives(1, blank=True)
    port = emu.drives[0].port

    term = console(port)
    term.prompt()
    assert term.run("print('one'); print('two')") == "one\ntwo"
    line = "answer = input('continue? ')"
    term.type(line + "\r")
    term.expect_exact(line + "\r\n")
    term.expect_exact("continue? ")  # the program waits for the technician
    term.type(CTRL_C)
    term.expect_exact("KeyboardInterrupt")
    term.expect_exact(PROMPT)
    assert term.run("6 * 7") == "42"
    term.close()

    result = install_image(port, fw.load_image(image), serial="SK-TECH0102")
    assert (result.serial, result.version, result.slot) == ("SK-TECH0102", "1.0.0", "a")
    hello = hello_of(port)
    assert (hello.serial, hello.firmware) == ("SK-TECH0102", "1.0.0")
    assert not emu.drives[0].blank
