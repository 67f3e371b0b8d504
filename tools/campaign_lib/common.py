"""What every scenario of the campaign shares: the tally, the context, drives and raw links.

A scenario is a function ``run(ctx, trials) -> Tally``. Each trial injects faults (counted
in ``faults``) into some operations and classifies each operation it checks:

- ``ok``: completed and checked byte-exact (or, for an attack, refused with the right code);
- ``clean``: failed with a :class:`SealkeepError` (a clear, typed error with a message);
- ``unclear``: anything else: another exception, a traceback, a hang, a wrong error code,
  a drive that crashed or stopped answering;
- ``lost``: an object or key missing or altered after success was reported, or an attack
  that was accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sealkeep.client import DriveClient, Role
from sealkeep.emulator import Emulator
from sealkeep.errors import SealkeepError
from sealkeep.protocol import framing
from sealkeep.transport import open_transport

T = TypeVar("T")

# Cheap Argon2id for every claim the campaign makes (custodian credentials).
KDF_ENV = {
    "SEALKEEP_KDF_MEMORY_KIB": "8",
    "SEALKEEP_KDF_TIME": "1",
    "SEALKEEP_KDF_FLOOR": "m=8,t=1",
}
CLAIM_KDF = {1: 8, 2: 1, 3: 1}
MAX_NOTES = 8


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Tally:
    """The counts of one scenario."""

    name: str
    trials: int = 0
    faults: int = 0
    ok: int = 0
    clean: int = 0
    unclear: int = 0
    lost: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    half_resets: int = 0

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)

    def clear_failure(self, exc: SealkeepError) -> None:
        self.clean += 1
        kind = type(exc).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def unclear_failure(self, what: str) -> None:
        self.unclear += 1
        self.note(f"unclear: {what}")

    def loss(self, what: str) -> None:
        self.lost += 1
        self.note(f"LOST: {what}")

    def summary(self) -> dict[str, int]:
        return {
            "trials": self.trials,
            "faults": self.faults,
            "ok": self.ok,
            "clean": self.clean,
            "unclear": self.unclear,
            "lost": self.lost,
        }

    @contextlib.contextmanager
    def trial(self, label: str) -> Iterator[None]:
        """One trial: an exception escaping it is unclear (the scenario itself broke)."""
        self.trials += 1
        try:
            yield
        except Exception as exc:
            tb = traceback.format_exc(limit=4).strip().splitlines()
            self.unclear_failure(f"{label}: {type(exc).__name__}: {exc} | {' / '.join(tb[-3:])}")


@dataclass
class Outcome:
    """How one guarded operation ended: its value, a clear error, or something unclear."""

    value: Any = None
    error: SealkeepError | None = None
    unclear: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.unclear is None


def guarded(action: Callable[[], T], limit: float) -> Outcome:
    """Run action in a thread; a SealkeepError is clear, any other exception or not
    finishing within limit seconds is unclear (the thread is left to die with its I/O)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = action()
        except SealkeepError as exc:
            box["error"] = exc
        except BaseException as exc:
            tb = traceback.format_exc(limit=6).strip().splitlines()
            box["unclear"] = f"{type(exc).__name__}: {exc} | {' / '.join(tb[-4:])}"

    thread = threading.Thread(target=body, name="campaign-op", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return Outcome(unclear=f"no answer within {limit:g} s (hang)")
    return Outcome(box.get("value"), box.get("error"), box.get("unclear"))


@dataclass
class Ctx:
    """What a scenario gets: a folder of its own, a seeded random source, the micropython."""

    root: Path
    rng: random.Random
    seed: int
    log: Callable[[str], None]
    micropython: str | None = None
    hsm_farm: Any = None  # a campaign_lib.hsmfarm.Farm, created on first use

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def emulator(self, name: str, count: int, **options: Any) -> Emulator:
        """Start drives (no authentication back-off unless given) in a folder of their own."""
        options.setdefault("backoff_ms", 0)
        emulator = Emulator(
            self.folder(name),
            count,
            micropython=self.micropython,
            seed=self.rng.getrandbits(32),
            **options,
        )
        emulator.start()
        return emulator


@contextlib.contextmanager
def campaign_root(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sealkeep-campaign-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# --- drives -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Creds:
    owner: bytes
    custodian: bytes
    domain: bytes
    salt: bytes


def new_creds(rng: random.Random) -> Creds:
    return Creds(rng.randbytes(32), rng.randbytes(32), rng.randbytes(16), rng.randbytes(16))


def client_for(emulator: Emulator, i: int, timeout: float = 2.0) -> DriveClient:
    drive = emulator.drives[i]
    client = DriveClient(open_transport(drive.port), timeout=timeout, serial_hint=drive.serial)
    client.connect()
    return client


def claim(client: DriveClient, creds: Creds) -> None:
    client.claim(creds.owner, creds.custodian, creds.salt, dict(CLAIM_KDF), creds.domain)


def owner_session(emulator: Emulator, i: int, creds: Creds, timeout: float = 2.0) -> DriveClient:
    """A connected client with an owner session (claims the drive first if it is blank)."""
    client = client_for(emulator, i, timeout)
    try:
        if client.hello().blank:
            claim(client, creds)
        client.authenticate(Role.OWNER, creds.owner)
    except BaseException:
        client.close()
        raise
    return client


def close_quietly(client: DriveClient | None) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.transport.close()


def drive_contents(client: DriveClient) -> dict[str, str]:
    """Every object on the drive (owner or custodian session) with the SHA-256 of its data,
    read back through the client (which checks it against the recorded digest)."""
    out: dict[str, str] = {}
    for info in client.list():
        out[info.name] = sha(client.get(info.name))
    return out


# --- a raw link: frames the client would never send ---------------------------------------


class RawLink:
    """The drive's port without the client: write any bytes, read reply frames."""

    def __init__(self, port: str) -> None:
        self.transport = open_transport(port)
        self.transport.connect()
        self.reader = framing.FrameReader(65535)
        self.buffer = b""

    def close(self) -> None:
        self.transport.close()

    def send(self, data: bytes) -> None:
        self.transport.send(data)

    def frames(self, timeout: float, want: int = 1) -> list[bytes]:
        """Frames (decoded, before parsing) until ``want`` arrived or timeout passed."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < want:
            if self.buffer:
                data, self.buffer = self.buffer, b""
                pos = 0
                while pos < len(data):
                    pos, frame = self.reader.push(data, pos)
                    if frame is not None and not isinstance(frame, int):
                        got.append(bytes(frame))
                        if len(got) >= want:
                            self.buffer = data[pos:]
                            break
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.buffer = self.transport.receive(left)
        return got

    def drain(self, quiet: float = 0.05) -> None:
        """Read and forget whatever arrives until the line is quiet."""
        self.buffer = b""
        while self.transport.receive(quiet):
            pass
        self.reader.reset()


def python_env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **KDF_ENV, **extra}
    env.pop("SEALKEEP_PIN", None)
    env.pop("SEALKEEP_DRIVES", None)
    return env


PYTHON = sys.executable
