"""The drive's object store (device/fw/store.py): the same checks under the MicroPython
unix port, where the firmware runs, and under CPython."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "device"))

import store_checks  # noqa: E402


def test_store_checks_on_unix_port(micropython: str, tmp_path: Path) -> None:
    env = dict(os.environ, MICROPYPATH=f"{REPO / 'device'}:{REPO}")
    proc = subprocess.run(
        [micropython, str(HERE / "store_checks.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ALL OK"), proc.stdout + proc.stderr
    assert proc.stdout.count("\nok ") + proc.stdout.startswith("ok ") == len(store_checks.CHECKS)


@pytest.mark.parametrize("check", store_checks.CHECKS, ids=lambda c: c.__name__)
def test_store_check_on_cpython(check: Callable[[str], None], tmp_path: Path) -> None:
    check(str(tmp_path))
