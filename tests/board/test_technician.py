"""A technician at a blank board's serial console, on pytest-embedded: the stock MicroPython
REPL answers what is typed and holds no firmware; `sealkeep firmware install` on that port
makes it a drive that answers its first HELLO with the serial given, and the REPL is gone; a
program waiting for input, interrupted with Ctrl-C, leaves a REPL the install still works on.

By default the board is emulated (``sealkeep emulate --blank``: the unix port behind a pty);
``pytest tests/board --port /dev/ttyACM0`` runs the same tests on a real board, which they
install (a board per test: give it back blank, or run one test with ``-k``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pexpect
import pytest
from sealkeep import firmware as fw
from sealkeep import firmware_update
from sealkeep.client import DriveClient
from sealkeep.install import install_image
from sealkeep.transport import open_transport

if TYPE_CHECKING:
    from conftest import Board

pytestmark = pytest.mark.integration

PROMPT = ">>> "
CTRL_B = b"\x02"  # at the friendly REPL: print the banner again
CTRL_C = b"\x03"


class Repl:
    """The board's REPL through pytest-embedded's serial DUT."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut

    def banner(self) -> str:
        """Press Enter and Ctrl-B as a technician does to see what the board runs."""
        self.dut.write(b"\r" + CTRL_B)
        try:
            found = self.dut.expect(rb"MicroPython (\S+) on [^;]+; ([^\r\n]+)", timeout=5)
        except pexpect.TIMEOUT:
            pytest.fail(
                f"the board on {self.dut.serial.port} shows no MicroPython REPL: it is not "
                "blank (already installed?); these tests need a board as a technician gets it"
            )
        self.dut.expect_exact(PROMPT, timeout=5)
        return found.group(0).decode(errors="replace")

    def run(self, line: str, timeout: float = 5) -> str:
        """Type line at the prompt; what it printed before the next prompt."""
        self.dut.write(line.encode() + b"\r")
        echo = re.escape(line.encode())
        found = self.dut.expect(echo + rb"\r?\n(.*?)\r?\n?" + PROMPT.encode(), timeout=timeout)
        return found.group(1).decode(errors="replace").replace("\r\n", "\n").strip()

    def release(self) -> None:
        """Close the console: the port is the installer's now."""
        self.dut.serial.close()


def hello_of(port: str) -> tuple[str, str, str, firmware_update.FirmwareStatus]:
    client = DriveClient(open_transport(port), timeout=5.0)
    try:
        hello = client.hello()
        return hello.serial, hello.firmware, hello.state, firmware_update.firmware_status(client)
    finally:
        client.close()


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image to install: ``--board-image``, else one signed with a throwaway vendor key."""
    given = request.config.getoption("board_image")
    if given:
        return Path(given)
    d = tmp_path_factory.mktemp("board-image")
    fw.keygen(d / "vendor.key")
    path = d / "v1.img"
    path.write_bytes(fw.build_image("1.0.0", 1, fw.load_signing_key(d / "vendor.key")))
    return path


def test_a_blank_board_is_a_bare_repl_until_the_firmware_is_installed(
    dut: Any, board: Board, image: Path
) -> None:
    repl = Repl(dut)
    assert "MicroPython" in repl.banner()
    assert repl.run("6 * 7") == "42"
    assert "main.py" not in repl.run("import os; os.listdir()")  # nothing boots yet
    repl.release()

    result = install_image(board.port, fw.load_image(image), serial="SK-TECH0101")
    assert (result.serial, result.slot) == ("SK-TECH0101", "a")

    serial, version, state, status = hello_of(board.port)  # the drive's first HELLO
    assert (serial, version, state) == ("SK-TECH0101", result.version, "blank")
    assert (status.active, status.state) == ("a", "confirmed")
    if board.emulator is not None:
        assert board.emulator.drives[0].serial == "SK-TECH0101"
        assert not board.emulator.drives[0].blank


def test_install_on_a_repl_whose_program_was_interrupted(
    dut: Any, board: Board, image: Path
) -> None:
    repl = Repl(dut)
    repl.banner()
    assert repl.run("print('one'); print('two')") == "one\ntwo"
    dut.write(b"answer = input('continue? ')\r")
    dut.expect_exact("continue? ", timeout=5)  # the program waits for the technician
    dut.write(CTRL_C)
    dut.expect_exact("KeyboardInterrupt", timeout=5)
    dut.expect_exact(PROMPT, timeout=5)
    assert repl.run("6 * 7") == "42"
    repl.release()

    result = install_image(board.port, fw.load_image(image), serial="SK-TECH0102")
    assert result.serial == "SK-TECH0102"
    serial, version, _, _ = hello_of(board.port)
    assert (serial, version) == ("SK-TECH0102", result.version)
