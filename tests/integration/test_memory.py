"""After a ceremony, no copy of the domain secret is left in the host process's memory.

A child process creates a domain over emulated drives in one SoftHSM2 slot and recovers it
into another; then this test reads every writable mapping of the child through
/proc/PID/mem (heap, pymalloc arenas, thread stacks, libraries' data) looking for the
secret and its halves (the wrap key and the owner root), and asks the child to hash every
live bytes-like object of their sizes. What this can and cannot promise is in
docs/threat-model.md, "Memory".
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sealkeep.domain import ENV_KDF_FLOOR, ENV_KDF_MEMORY, ENV_KDF_TIME
from sealkeep.hsm_keys import MANIFEST_KEY_WRAP_INFO, SET_KEY_WRAP_INFO

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]

PROBE = Path(__file__).with_name("memory_probe.py")
SECRET_LEN = 64
CHUNK = 1 << 20


def writable_regions(pid: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, name) of every readable and writable mapping of ``pid``."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        perms = fields[1]
        name = fields[5] if len(fields) > 5 else "[anonymous]"
        if perms[0] != "r" or perms[1] != "w" or name in ("[vvar]", "[vsyscall]"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        yield start, end, name


def scan(pid: int, needles: dict[str, bytes]) -> tuple[int, dict[str, list[str]]]:
    """Bytes read, and where each needle was found (region name and offset)."""
    found: dict[str, list[str]] = {name: [] for name in needles}
    overlap = max(len(n) for n in needles.values()) - 1
    total = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, region in writable_regions(pid):
            tail = b""
            position = start
            while position < end:
                size = min(CHUNK, end - position)
                try:
                    mem.seek(position)
                    data = mem.read(size)
                except OSError:
                    break  # a guard page or a mapping that went away
                total += len(data)
                window = tail + data
                for name, needle in needles.items():
                    for match in re.finditer(re.escape(needle), window):
                        found[name].append(
                            f"{region}+0x{position - len(tail) - start + match.start():x}"
                        )
                tail = window[-overlap:]
                position += size
    return total, found


def derived(first_half: bytes, info: bytes) -> bytes:
    """A hierarchy-2 domain key's value, derived here as the HSM side derives it."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(first_half)


def unmask(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=True))


def test_no_copy_of_the_domain_secret_is_left_after_create_and_recover(
    softhsm: SoftHsmFarm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
) -> None:
    emulator = emulated_drives(3)
    phrases = "\n".join(
        f"{d.serial} custodian of {d.serial}: orbit lantern 7" for d in emulator.drives
    )
    mask = secrets.token_bytes(SECRET_LEN)
    source, target = tokens["source"], tokens["target"]
    assert source.pin == target.pin
    read_end, write_end = os.pipe()
    env = {
        **os.environ,
        **softhsm.env,
        ENV_KDF_MEMORY: "8",
        ENV_KDF_TIME: "1",
        ENV_KDF_FLOOR: "m=8,t=1",
        "PROBE_MASK": mask.hex(),
        "PROBE_FD": str(write_end),
        "PROBE_PASSPHRASES": phrases,
    }
    child = subprocess.Popen(
        [
            sys.executable,
            str(PROBE),
            str(source.slot_id),
            str(target.slot_id),
            source.pin,
            ",".join(d.port for d in emulator.drives),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    try:
        assert child.stdout is not None and child.stdin is not None
        ready = child.stdout.readline()
        if not ready.startswith("ready"):
            child.kill()
            raise AssertionError(f"the probe failed: {ready}{child.communicate()[1][-3000:]}")
        reported = b""
        with os.fdopen(read_end, "rb") as reports:
            reported = reports.read(2 * SECRET_LEN)
        canary = unmask(reported[:SECRET_LEN], mask)
        secret = unmask(reported[SECRET_LEN:], mask)
        needles = {
            "canary": canary,
            "secret": secret,
            "first half": secret[:32],
            "owner root": secret[32:],
            "domain wrap key": derived(secret[:32], SET_KEY_WRAP_INFO),
            "domain seal key": derived(secret[:32], MANIFEST_KEY_WRAP_INFO),
        }
        scanned, found = scan(child.pid, needles)
        for name, value in needles.items():
            child.stdin.write(f"{name.replace(' ', '-')} {hashlib.sha256(value).hexdigest()}\n")
        child.stdin.write("\n")
        child.stdin.flush()
        live = child.stdout.readline().split()[1:]
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)
    # The scan sees the Python heap: the canary, alive on purpose, is found.
    assert found["canary"], f"the scan of {scanned} bytes missed the live canary"
    assert scanned > 8 << 20
    leftovers = {name: places for name, places in found.items() if name != "canary" and places}
    assert leftovers == {}, f"copies of the domain secret in {scanned} bytes: {leftovers}"
    assert live == [], f"live objects hold the domain secret: {live}"
