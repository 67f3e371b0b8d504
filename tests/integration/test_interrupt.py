"""Ctrl-C during a backup on a slow link: an immediate answer, a stop at the next frame, and
the truth about where the set was committed; a second Ctrl-C abandons at once. Never a
traceback."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_runner import SealkeepCli, custodians_file
from pkcs11 import Attribute, ObjectClass
from sealkeep.emulator import Emulator
from sealkeep.hsm import Hsm

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]

SLOW_LINK = "uart:57600"  # 5,760 bytes/s: the set below takes some 8 s to write
BULK = 48_000


@pytest.fixture
def slow_domain(
    softhsm: SoftHsmFarm,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    make_sample_keys: Any,
    tmp_path: Path,
) -> tuple[Emulator, list[str], dict[str, str]]:
    """Three drives on a slow link holding a domain of the "source" slot, which holds keys
    and a large data object; the backup command line to run, and its environment."""
    emulator = emulated_drives(3, link=SLOW_LINK)
    cli = SealkeepCli(softhsm, tmp_path)
    custodians = custodians_file(tmp_path, emulator.drives)
    slot = str(tokens["source"].slot_id)
    drives = ",".join(d.port for d in emulator.drives)
    common = ["--slot", slot, "--drives", drives, "--pin-file", str(cli.pin_file)]
    cli("domain", "create", *common, "--passphrases", str(custodians), pin=False)
    with hsm.open(tokens["source"].slot_id, tokens["source"].pin) as session:
        make_sample_keys(session)
        session.session.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.LABEL: "bulk",
                Attribute.VALUE: os.urandom(BULK),
            }
        )
    return emulator, [sys.executable, "-m", "sealkeep", "backup", *common], cli.env


def start_backup(env: dict[str, str], argv: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    # The plan line comes before the write begins.
    ready, _, _ = select.select([process.stdout], [], [], 60)
    assert ready, "the backup printed no plan"
    assert process.stdout.readline().startswith("backing up")
    time.sleep(1.5)  # well inside the write
    return process


def committed_sets(emulator: Emulator) -> list[list[str]]:
    return [
        sorted(p.name for p in (d.flash / "obj").iterdir() if p.name.startswith("set-"))
        for d in emulator.drives
    ]


def test_ctrl_c_stops_at_the_next_frame_and_tells_the_truth(
    slow_domain: tuple[Emulator, list[str], dict[str, str]],
) -> None:
    emulator, argv, env = slow_domain
    process = start_backup(env, argv)
    try:
        asked = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        took = time.monotonic() - asked
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert "stopping at the next frame; Ctrl-C again" in err
    assert "backup interrupted: no drive committed set" in err and "nothing was kept" in err
    assert took < 5, f"the backup took {took:.1f} s to stop"
    assert committed_sets(emulator) == [[], [], []]


def test_a_second_ctrl_c_abandons_at_once(
    slow_domain: tuple[Emulator, list[str], dict[str, str]],
) -> None:
    emulator, argv, env = slow_domain
    process = start_backup(env, argv)
    try:
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err and "Exception ignored" not in err
    assert "backup abandoned: no drive committed set" in err or "backup interrupted" in err
    assert committed_sets(emulator) == [[], [], []]
