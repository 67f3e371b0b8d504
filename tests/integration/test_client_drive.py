"""The drive client against a real emulated drive: what line noise must not cost."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from conftest import StartDrives
from sealkeep.client import DriveClient, Role
from sealkeep.emulator import EmulatedDrive


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
