"""How fast a pty carries bytes, straight or through the emulator's relay: the reference the
emulator's link is measured against (``tests/integration/test_emulator.py``)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import tty

from .emulator import EmulatorError
from .relay import LinkSpec, Relay, parse_link


def pty_echo_throughput(
    *,
    through_relay: bool,
    total: int = 8 << 20,
    frame: int = 4096,
    link: str | LinkSpec = "raw",
) -> float:
    """Bytes per second (each way) of lockstep echo of frame-sized writes through a pty to
    an echo process (``cat``): straight on the pty, or with the relay between them."""
    cat = shutil.which("cat")
    if cat is None:
        raise EmulatorError("the cat command is missing")
    master, slave = os.openpty()
    tty.setraw(slave)
    relay: Relay | None = None
    proc: subprocess.Popen[bytes]
    try:
        if through_relay:
            relay = Relay()
            relay.start()
            port = relay.add_port(master, parse_link(link))
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            proc = subprocess.Popen([cat], stdin=in_r, stdout=out_w)
            os.close(in_r)
            os.close(out_w)
            relay.attach(port, in_w, out_r, probe=False)
        else:
            proc = subprocess.Popen([cat], stdin=master, stdout=master)
        try:
            return _echo(slave, total, frame)
        finally:
            proc.kill()
            proc.wait()
    finally:
        if relay is not None:
            relay.stop()
        os.close(slave)
        os.close(master)


def _echo(fd: int, total: int, frame: int) -> float:
    block = secrets.token_bytes(frame)
    rounds = max(1, total // frame)
    start = time.perf_counter()
    for _ in range(rounds):
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view) :]
        got = 0
        while got < frame:
            got += len(os.read(fd, frame - got))
    elapsed = time.perf_counter() - start
    return rounds * frame / elapsed
