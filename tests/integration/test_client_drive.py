"""The drive client against a real emulated drive: what line noise must not cost."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from sealkeep.client import DriveClient, Role
from sealkeep.emulator import EmulatedDrive

if TYPE_CHECKING:
    from conftest import StartDrives


def test_line_noise_before_auth_counts_no_failure(
    emulated_drives: StartDrives, connect: Callable[..., DriveClient]
) -> None:
    emulator = emulated_drives(1)
    drive: EmulatedDrive = emulator.drives[0]
    client = connect(drive)
    owner = secrets.token_bytes(32)
    client.claim(owner, secrets.token_bytes(32), secrets.token_bytes(16), {1: 1}, b"domain-1")
    # Garbage that decodes as a damaged frame: the drive answers ERROR CRC with sequence 0,
    # just before the reply to the real AUTH_BEGIN.
    client.hello()
    client.transport.send(b"\x05\x01\x02\x03\x04\x00")
    client.authenticate(Role.OWNER, owner)
    space = client.space()
    assert space.capacity > 0 and space.owner_failures == 0


def test_drives_shows_the_wait_wrong_guesses_cost(
    emulated_drives: StartDrives, connect: Callable[..., DriveClient]
) -> None:
    import json
    import subprocess
    import sys

    from sealkeep.errors import AuthenticationFailed

    emulator = emulated_drives(1, backoff_ms=40)
    drive: EmulatedDrive = emulator.drives[0]
    client = connect(drive)
    client.claim(
        secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(16), {1: 1}, b"d-1"
    )
    client.close()  # one user of the port at a time

    def drives(*extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "sealkeep", "drives", "--drives", drive.port, *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    assert json.loads(drives("--json"))["drives"][0]["delay_ms"] == {"owner": 0, "custodian": 0}
    table = drives().splitlines()
    column = table[0].index("WAIT")
    assert table[1][column:].split()[0] == "-"
    client = connect(drive)
    for _ in range(4):
        client.hello()
        try:
            client.authenticate(Role.CUSTODIAN, secrets.token_bytes(32))
        except AuthenticationFailed:
            pass
    client.close()
    shown = json.loads(drives("--json"))["drives"][0]["delay_ms"]
    assert shown == {"owner": 0, "custodian": 80}  # 40 ms, doubled once
    assert "custodian 0.08 s" in drives()
