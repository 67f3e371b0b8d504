"""Technician tests on pytest-embedded: the same tests against an emulated blank board (the
MicroPython unix port behind a pty, the default) or a real board (``--port /dev/ttyACM0``).

The plugin is registered here only: installed, it loads into every pytest run through its
entry point and makes each one dearer, so the project's pytest options block it
(``-p no:pytest_embedded``) and this folder's conftest registers its module under its own
name. Run these tests as ``pytest tests/board`` (``tools/test`` does, after the rest).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sealkeep.emulator import Emulator, find_micropython

pytest_plugins = ["pytest_embedded.plugin"]


@dataclass
class Board:
    """The board under test: its serial port, and the emulator behind it when emulated."""

    port: str
    emulator: Emulator | None

    @property
    def emulated(self) -> bool:
        return self.emulator is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--board-image",
        metavar="IMAGE",
        help="the signed firmware image to install (default: one signed with a throwaway key)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # the boards speak over a serial port: pytest-embedded's serial service, unless told
    if not config.getoption("embedded_services", None):
        config.option.embedded_services = "serial"
    # the plugin records each DUT's attributes in the JUnit report through this fixture
    config.addinivalue_line("filterwarnings", "ignore::pytest.PytestExperimentalApiWarning")


@pytest.fixture
def board(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Board]:
    """A blank board: the one on ``--port``, else an emulated one started for the test."""
    given = request.config.getoption("port", None)
    if given:
        yield Board(given, None)
        return
    emulator = Emulator(tmp_path / "boards", 1, blank=True, micropython=find_micropython())
    emulator.start()
    try:
        yield Board(emulator.drives[0].port, emulator)
    finally:
        emulator.stop()


@pytest.fixture
def port(board: Board) -> str:
    """pytest-embedded's port: the board's (the plugin's own reads --port only)."""
    return board.port
