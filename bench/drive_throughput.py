#!/usr/bin/env python3
"""Drive appliance throughput, as ratios to references measured in the same run.

Prints:
  - raw pty echo of 4 KiB frames (reference)
  - put and get of an 8 MiB object to one emulated drive, ratio to the reference (goal >= 0.25)
  - the same object with `mpremote cp` to a blank unix-port REPL on a pty (goal: >= 20x slower)
  - wire efficiency (payload / bytes on the wire) at the maximum frame (goal >= 0.98)
  - with --link usb-fs, throughput as a fraction of the link rate (goal >= 0.8)
  - aggregate throughput to 5 drives at once, ratio to one drive
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

import serial
from sealkeep.client import DriveClient
from sealkeep.emulator import Emulator
from sealkeep.relay import USB_FS
from sealkeep.transport import open_transport

MIB = 1 << 20
USB_FS_RATE_BPS = USB_FS.rate or 1.0
FRAME = 4096


def pty_echo_reference(total: int) -> float:
    """Bytes/s of lockstep 4 KiB writes echoed back through a pty (pyserial on the slave)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                data = os.read(master, 65536)
                view = memoryview(data)
                while view:
                    view = view[os.write(master, view) :]

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    port = serial.Serial(os.ttyname(slave), timeout=5)
    block = secrets.token_bytes(FRAME)
    start = time.perf_counter()
    moved = 0
    while moved < total:
        port.write(block)
        got = 0
        while got < FRAME:
            got += len(port.read(FRAME - got))
        moved += FRAME
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    port.close()
    os.close(master)
    os.close(slave)
    return total / elapsed


def owned_client(port: str) -> DriveClient:
    client = DriveClient(open_transport(port), timeout=30)
    client.__enter__()
    owner = secrets.token_bytes(32)
    client.claim(owner, secrets.token_bytes(32), secrets.token_bytes(16), {1: 1}, b"bench")
    client.authenticate(0, owner)
    return client


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


class Transfer:
    """Speed and wire bytes (each direction) of one put and one get."""

    def __init__(self, client: DriveClient, data: bytes, name: str) -> None:
        s0, r0 = client.bytes_sent, client.bytes_received
        self.put_bps = len(data) / timed(lambda: client.put(name, data))
        s1, r1 = client.bytes_sent, client.bytes_received
        got: list[bytes] = []
        self.get_bps = len(data) / timed(lambda: got.append(client.get(name)))
        s2, r2 = client.bytes_sent, client.bytes_received
        if hashlib.sha256(got[0]).digest() != hashlib.sha256(data).digest():
            raise SystemExit("read back differs from what was written")
        size = len(data)
        # Payload over the bytes of the direction that carries it, and over both directions.
        self.put_eff = size / (s1 - s0)
        self.put_eff_both = size / (s1 - s0 + r1 - r0)
        self.get_eff = size / (r2 - r1)
        self.get_eff_both = size / (s2 - s1 + r2 - r1)


def mpremote_cp(data: bytes, workdir: Path) -> float:
    """Bytes/s of `mpremote cp` to a blank unix-port REPL behind a pty."""
    devdir = workdir / "repl"
    devdir.mkdir()
    blob = workdir / "blob.bin"
    blob.write_bytes(data)
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    proc = subprocess.Popen(
        ["micropython", "-i"], stdin=master, stdout=master, stderr=subprocess.DEVNULL, cwd=devdir
    )
    try:
        start = time.perf_counter()
        subprocess.run(
            ["mpremote", "connect", os.ttyname(slave), "resume", "cp", str(blob), ":blob.bin"],
            check=True,
            capture_output=True,
        )
        elapsed = time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)
    if (devdir / "blob.bin").read_bytes() != data:
        raise SystemExit("mpremote copy differs")
    return len(data) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8 * MIB, help="object size in bytes")
    parser.add_argument("--usb-size", type=int, default=2 * MIB, help="object size over usb-fs")
    parser.add_argument("--skip-mpremote", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = secrets.token_bytes(args.size)
    figures: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="sealkeep-bench-"))
    try:
        ref = pty_echo_reference(args.size)
        figures["pty_echo_MiBps"] = ref / MIB

        with Emulator(work / "one", count=1, heap="96K") as emu:
            client = owned_client(emu.drives[0].port)
            one = Transfer(client, data, "bench.bin")
            put_bps = one.put_bps
            figures["put_MiBps"] = one.put_bps / MIB
            figures["get_MiBps"] = one.get_bps / MIB
            figures["put_ratio"] = one.put_bps / ref
            figures["get_ratio"] = one.get_bps / ref
            figures["wire_efficiency_put"] = one.put_eff
            figures["wire_efficiency_get"] = one.get_eff
            figures["wire_efficiency_put_with_acks"] = one.put_eff_both
            figures["wire_efficiency_get_with_requests"] = one.get_eff_both
            client.close()

        if not args.skip_mpremote:
            mp_bps = mpremote_cp(data, work)
            figures["mpremote_MiBps"] = mp_bps / MIB
            figures["speedup_vs_mpremote"] = put_bps / mp_bps

        usb = args.usb_size
        with Emulator(work / "usb", count=1, heap="96K", link="usb-fs") as emu:
            client = owned_client(emu.drives[0].port)
            over_usb = Transfer(client, data[:usb], "usb.bin")
            figures["usb_fs_put_fraction"] = over_usb.put_bps / USB_FS_RATE_BPS
            figures["usb_fs_get_fraction"] = over_usb.get_bps / USB_FS_RATE_BPS
            client.close()

        with Emulator(work / "five", count=5, heap="96K") as emu:
            clients = [owned_client(d.port) for d in emu.drives]
            results: list[float] = []

            def one(c: DriveClient) -> None:
                c.put("agg.bin", data)

            threads = [threading.Thread(target=one, args=(c,)) for c in clients]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            results.append(5 * len(data) / elapsed)
            figures["five_drives_MiBps"] = results[0] / MIB
            figures["five_drives_ratio_to_one"] = results[0] / put_bps
            for c in clients:
                c.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        goals = {
            "put_ratio": "≥ 0.25",
            "get_ratio": "≥ 0.25",
            "speedup_vs_mpremote": "≥ 20",
            "wire_efficiency_put": "≥ 0.98",
            "wire_efficiency_get": "≥ 0.98",
            "usb_fs_put_fraction": "≥ 0.8",
            "usb_fs_get_fraction": "≥ 0.8",
        }
        for key, value in figures.items():
            print(f"{key:34} {value:10.3f}  {goals.get(key, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
