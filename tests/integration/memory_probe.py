"""Run by test_memory.py in a process of its own: create a domain, recover it into a second
slot, then wait while the test reads this process's memory.

argv: slot to create in, slot to recover into, the PIN, the drive ports (comma separated).
The domain secret is reported on fd $PROBE_FD XORed with a mask from $PROBE_MASK, so the report
itself never puts the secret's bytes into this process's memory. A canary, reported the
same way and kept alive, proves the reader sees the Python heap. After "ready", stdin
receives SHA-256 digests of the values to look for; every live bytes-like object of their
sizes is hashed and the matches are reported ("live N"). The process ends when stdin closes.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys

from sealkeep import domain, hsm
from sealkeep.domain import DriveGroup, create_domain
from sealkeep.pins import Passphrases, parse_passphrases
from sealkeep.recovery import recover_domain


def report(fd: int, value: bytearray, mask: bytes) -> None:
    """Send ``value`` XOR ``mask``: the masked bytes are made one int at a time."""
    os.write(fd, bytes(v ^ m for v, m in zip(value, mask, strict=True)))


def main() -> None:
    source_slot, target_slot, pin, ports_arg = sys.argv[1:5]
    ports = ports_arg.split(",")
    mask = bytes.fromhex(os.environ["PROBE_MASK"])
    out = int(os.environ["PROBE_FD"])

    canary = hsm.new_domain_secret()  # kept alive on purpose
    report(out, canary, mask)

    original = domain.new_domain_secret

    def recorded() -> bytearray:
        secret = original()
        report(out, secret, mask)
        return secret

    domain.new_domain_secret = recorded
    passphrases = Passphrases(entries=parse_passphrases(os.environ["PROBE_PASSPHRASES"]))
    module = hsm.Hsm()
    with module.open(int(source_slot), pin) as session, DriveGroup(ports) as group:
        create_domain(session, group.drives, passphrases)
    with module.open(int(target_slot), pin) as session, DriveGroup(ports[1:]) as group:
        recover_domain(session, group.drives, passphrases)
    domain.new_domain_secret = original
    gc.collect()
    print(f"ready {os.getpid()}", flush=True)

    wanted: dict[bytes, str] = {}
    for line in sys.stdin:
        if not line.strip():
            break
        name, digest = line.split()
        wanted[bytes.fromhex(digest)] = name
    sizes = {32, 64}
    live = []
    for obj in gc.get_objects():
        for inner in [obj, *gc.get_referents(obj)]:
            if inner is canary or not isinstance(inner, bytes | bytearray | memoryview):
                continue
            try:
                if len(inner) not in sizes:
                    continue
                found = wanted.get(hashlib.sha256(inner).digest())
            except ValueError:  # a released memoryview
                continue
            if found is not None:
                live.append(f"{found}:{type(inner).__name__}")
    print("live " + " ".join(sorted(set(live))), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
