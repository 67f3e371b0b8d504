"""Scenario 5, a hostile or broken drive among healthy ones.

Three drives hold a domain (2 of 3) and a backup set of a SoftHSM2 slot with sample keys.
Each trial makes one of them lie, in one of these ways:

- by its flash (the drive itself serves what it holds, with good session MACs):
  ``bad-digest`` (set data changed, the recorded digest kept), ``lying-digest`` (set data
  changed and the digest made to match), ``size-lie`` (the recorded size made huge),
  ``foreign-set`` (another domain's set under this set's name), ``foreign-only`` (another
  domain's set under its own name, and that set asked for), ``forged-share`` (an
  insider custodian, who knows only their own passphrase, replaces the drive's share and
  domain record with a self-consistent 1-of-1 split of a secret of their own, sealed with
  their own key), ``swapped-share`` (another drive's sealed share);
- on its line, through a stand-in on a pty of its own between host and drive
  (:class:`LyingLine`), after a random number of honest replies: ``oversized`` (every
  reply becomes a frame far over the maximum), ``endless`` (an unending stream of bytes),
  ``silent`` (no more replies), ``noise`` (an oversized frame before every honest reply),
  ``weak-costs`` (every HELLO announces Argon2id costs below the host's floor, as an
  impostor fishing for a passphrase proof cheap to attack would: the host must name the
  drive and send it nothing derived from the passphrase, so no AUTH_BEGIN may pass);
- ``dead``: the drive loses power in the middle of the operation.

The host then restores the set into the slot (set lies, line lies) or rebuilds the domain
secret (share lies and ``weak-costs``), from all three drives or sometimes from the liar
alone (or the liar and one other for shares). In this scenario the host's Argon2id floor
is one step above the campaign's cheapest costs, which the domain uses, so that a drive
can announce less. It must restore every key exactly, or fail with a clear error that
names the lying drive; it must never restore a key that differs from the original, never
accept a tampered copy, never rebuild a wrong secret. Anything else is counted ``lost``
(keys or secret wrong, tampered copy accepted) or ``unclear`` (traceback, hang, the liar
not named).
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import os
import select
import threading
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from sealkeep import shamir
from sealkeep.backupset import backup, set_object_name
from sealkeep.client import DriveClient
from sealkeep.domain import DOMAIN_OBJECT, SHARE_OBJECT, DriveGroup, create_domain, share_aad
from sealkeep.domainrecord import DomainRecord, Member, pack_sealed_share
from sealkeep.emulator import Emulator
from sealkeep.hsm import HsmSession, domain_id_from_secret, new_domain_secret
from sealkeep.kdf import KdfParams, derive_custodian_keys, seal_share
from sealkeep.pins import Passphrases
from sealkeep.protocol import framing, messages
from sealkeep.recovery import gather_shares, rebuild
from sealkeep.restore import restore_set
from sealkeep.transport import open_transport

from . import hsmfarm
from .common import Ctx, Tally, guarded
from .hostile_host import wire_of

HEADER = 40
TIMEOUT = 1.0
OP_LIMIT = 90.0
FLASH_LIES = (
    "bad-digest",
    "lying-digest",
    "size-lie",
    "foreign-set",
    "foreign-only",
    "forged-share",
    "swapped-share",
)
LINE_LIES = ("oversized", "endless", "silent", "noise", "weak-costs")
KINDS = (*FLASH_LIES, *LINE_LIES, "dead")
SHARE_LIES = ("forged-share", "swapped-share", "weak-costs")
# The domain's Argon2id costs and the host's floor in this scenario; a weak-costs drive
# announces WEAK, under the floor (the smallest memory Argon2id takes is 8 KiB).
DOMAIN_KDF = {"SEALKEEP_KDF_MEMORY_KIB": "16", "SEALKEEP_KDF_TIME": "1"}
FLOOR = "m=16,t=1"
WEAK = {1: 1, 2: 8, 3: 1}


# --- a lying line ---------------------------------------------------------------------------


class LyingLine:
    """A pty of its own that relays to a drive's port and misbehaves after ``honest``
    reply frames: the host opens :attr:`path` instead of the drive's."""

    def __init__(self, target: str, mode: str, honest: int, max_frame: int) -> None:
        self.mode = mode
        self.honest = honest
        self.junk = bytes((i * 37 + 11) % 255 + 1 for i in range(4 * max_frame))  # no 0x00
        self.max_frame = max_frame
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.drive = os.open(target, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.drive)
        os.set_blocking(self.master, False)
        self.replies = 0
        self.to_host = bytearray()
        self.to_drive = bytearray()
        self.partial = bytearray()  # a reply frame not yet complete
        self.asked = bytearray()  # a request frame not yet complete
        self.auth_begins = 0  # AUTH_BEGINs the host sent through this line
        self.stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self._run, name="lying-line", daemon=True)
        self.thread.start()

    @property
    def lying(self) -> bool:
        return self.replies >= self.honest

    def close(self) -> None:
        os.write(self.stop_w, b"x")
        self.thread.join(5)
        for fd in (self.master, self.slave, self.drive, self.stop_r, self.stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _from_host(self, data: bytes) -> None:
        self.to_drive += data
        self.asked += data
        while True:
            end = self.asked.find(b"\x00")
            if end < 0:
                return
            frame = _decoded(bytes(self.asked[:end]))
            del self.asked[: end + 1]
            if frame is not None and frame[1] == messages.AUTH_BEGIN:
                self.auth_begins += 1

    def _from_drive(self, data: bytes) -> None:
        self.partial += data
        while True:
            end = self.partial.find(b"\x00")
            if end < 0:
                return
            frame = bytes(self.partial[: end + 1])
            del self.partial[: end + 1]
            if self.mode == "weak-costs":
                self.to_host += _weakened(frame)
            elif not self.lying:
                self.replies += 1
                self.to_host += frame
            elif self.mode == "oversized":
                self.to_host += self.junk[: 2 * self.max_frame] + b"\x00"
            elif self.mode == "noise":
                self.to_host += self.junk[: self.max_frame + 50] + b"\x00" + frame
            # endless and silent: the honest reply never arrives

    def _run(self) -> None:
        while True:
            if self.mode == "endless" and self.lying and len(self.to_host) < 4 * self.max_frame:
                self.to_host += self.junk
            wlist = [
                fd for fd, buf in ((self.master, self.to_host), (self.drive, self.to_drive)) if buf
            ]
            try:
                readable, writable, _ = select.select(
                    [self.master, self.drive, self.stop_r], wlist, [], 0.5
                )
            except (OSError, ValueError):
                return
            if self.stop_r in readable:
                return
            for fd in readable:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if fd == self.master:
                    self._from_host(data)
                else:
                    self._from_drive(data)
            for fd in writable:
                buf = self.to_host if fd == self.master else self.to_drive
                try:
                    n = os.write(fd, buf[:65536])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    n = len(buf)  # nobody there: forget it
                del buf[:n]


def _decoded(encoded: bytes) -> bytes | None:
    """A frame without its COBS encoding and CRC (header, body, MAC), or None if damaged."""
    try:
        raw = framing.cobs_decode(encoded)
    except Exception:
        return None
    if len(raw) < framing.HEADER_LEN + framing.CRC_LEN:
        return None
    body, crc = raw[: -framing.CRC_LEN], raw[-framing.CRC_LEN :]
    if (binascii.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little") != crc:
        return None
    return body


def _weakened(frame: bytes) -> bytes:
    """A HELLO_R with Argon2id costs under the floor (the CRC made good); others as they are."""
    raw = _decoded(frame[:-1])
    if raw is None or raw[1] != messages.HELLO_R:
        return frame
    fields = cbor2.loads(raw[framing.HEADER_LEN :])
    if isinstance(fields, dict) and isinstance(fields.get(9), dict):
        fields[9] = dict(WEAK)
    return wire_of(raw[: framing.HEADER_LEN] + cbor2.dumps(fields))


# --- the rig --------------------------------------------------------------------------------


@dataclass
class Rig:
    emulator: Emulator
    other: Emulator
    farm: hsmfarm.Farm
    session: HsmSession
    domain_id: bytes
    set_name: str
    reference: dict[str, str]
    passes: Passphrases
    foreign_name: str
    foreign: bytes  # the other domain's set object file, as stored

    def flash(self, i: int) -> Path:
        return self.emulator.drives[i].flash / "obj"


def _phrases(emulator: Emulator, word: str) -> Passphrases:
    return Passphrases(
        entries={d.serial: f"{word} {d.serial} copper lantern 73" for d in emulator.drives}
    )


def _make(ctx: Ctx) -> Rig:
    made = hsmfarm.farm(ctx)
    emulator = ctx.emulator("hostile-drive", 3)
    other = ctx.emulator("hostile-drive-other", 3)
    try:
        with made.open("camp-other") as s2, DriveGroup(other.ports) as group:
            create_domain(s2, group.drives, _phrases(other, "stranger"), threshold=2)
            hsmfarm.make_sample_keys(s2)
            foreign_set = backup(s2, group.drives, label="foreign").set_id
        foreign_name = set_object_name(foreign_set)
        foreign = (other.drives[0].flash / "obj" / foreign_name).read_bytes()
        session = made.open("camp-drive")
        passes = _phrases(emulator, "keeper")
        with DriveGroup(emulator.ports) as group:
            domain_id = create_domain(session, group.drives, passes, threshold=2).domain_id
            hsmfarm.make_sample_keys(session)
            reference = hsmfarm.fingerprints(session)
            set_id = backup(session, group.drives, label="hostile").set_id
    except BaseException:
        emulator.stop()
        other.stop()
        raise
    return Rig(
        emulator,
        other,
        made,
        session,
        domain_id,
        set_object_name(set_id),
        reference,
        passes,
        foreign_name,
        foreign,
    )


@contextlib.contextmanager
def _costs() -> Iterator[None]:
    """The domain's costs and the host's floor of this scenario, the campaign's afterwards."""
    saved = {name: os.environ.get(name) for name in (*DOMAIN_KDF, "SEALKEEP_KDF_FLOOR")}
    os.environ.update(DOMAIN_KDF, SEALKEEP_KDF_FLOOR=FLOOR)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(ctx: Ctx, trials: int) -> Tally:
    with _costs():
        return _run(ctx, trials)


def _run(ctx: Ctx, trials: int) -> Tally:
    tally = Tally("hostile_drive")
    rig = _make(ctx)
    try:
        for t in range(trials):
            kind = KINDS[t] if t < len(KINDS) else ctx.rng.choice(KINDS)
            liar = ctx.rng.randrange(3)
            with tally.trial(f"hostile_drive trial {t} ({kind}, drive {liar})"):
                _trial(ctx, tally, rig, kind, liar)
    finally:
        rig.session.close()
        rig.emulator.stop()
        rig.other.stop()
    return tally


# --- flash lies -----------------------------------------------------------------------------


def _rewrite(path: Path, data: bytes) -> None:
    """Replace a file's bytes in place (a file the firmware holds open sees them)."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


@contextlib.contextmanager
def _tampered(rig: Rig, kind: str, liar: int, ctx: Ctx) -> Iterator[None]:
    """The liar's flash changed for kind, put back afterwards."""
    obj = rig.flash(liar)
    saved: dict[Path, bytes | None] = {}

    def change(path: Path, data: bytes) -> None:
        saved.setdefault(path, path.read_bytes() if path.exists() else None)
        if path.exists():
            _rewrite(path, data)
        else:
            path.write_bytes(data)

    set_path = obj / rig.set_name
    stored = set_path.read_bytes()
    body = bytearray(stored[HEADER:])
    if kind in ("bad-digest", "lying-digest"):
        at = len(body) // 2 + ctx.rng.randrange(len(body) // 2)
        body[at] ^= 1 << ctx.rng.randrange(8)
        digest = hashlib.sha256(body).digest() if kind == "lying-digest" else stored[:32]
        change(set_path, digest + stored[32:HEADER] + bytes(body))
    elif kind == "size-lie":
        change(set_path, stored[:32] + (1 << 40).to_bytes(8, "big") + bytes(body))
    elif kind == "foreign-set":
        change(set_path, rig.foreign)
    elif kind == "foreign-only":
        change(obj / rig.foreign_name, rig.foreign)
    elif kind == "swapped-share":
        donor = rig.flash((liar + 1) % 3) / SHARE_OBJECT
        change(obj / SHARE_OBJECT, donor.read_bytes())
    elif kind == "forged-share":
        share, record = _insider_split(rig, liar)
        change(obj / SHARE_OBJECT, share)
        change(obj / DOMAIN_OBJECT, record)
    try:
        yield
    finally:
        resized = False
        for path, data in saved.items():
            if data is None:
                path.unlink()
            else:
                resized |= path.stat().st_size != len(data)
                _rewrite(path, data)
        if resized:  # the drive may hold the object open for READ, its old size with it
            rig.emulator.restart(liar)


def _stored(data: bytes) -> bytes:
    """An object file as a drive keeps it: SHA-256, size, data."""
    return hashlib.sha256(data).digest() + len(data).to_bytes(8, "big") + data


def _insider_split(rig: Rig, liar: int) -> tuple[bytes, bytes]:
    """The liar's share and domain objects as an insider custodian (who knows only their
    own passphrase) would write them: a self-consistent 1-of-1 split of a secret of their
    own, with a domain record signed by it, sealed with their own key."""
    drive = rig.emulator.drives[liar]
    with DriveClient(open_transport(drive.port), timeout=5.0) as client:
        hello = client.hello()
    assert hello.salt is not None and hello.kdf is not None and hello.domain is not None
    params = KdfParams.from_map(hello.salt, hello.kdf)
    keys = derive_custodian_keys(rig.passes.existing(drive.serial), params)
    own = new_domain_secret()
    (share,) = shamir.split(own, 1, 1)
    record = DomainRecord(
        hello.domain,
        1,
        (Member(hello.serial, params, hello.identity),),
        0,
        share.share_set.set_id,
    ).signed(own)
    aad = share_aad(hello.domain, hello.serial)
    sealed = seal_share(keys, pack_sealed_share(share, record), aad)
    return _stored(sealed), _stored(record.encode())


# --- one trial ------------------------------------------------------------------------------


def _trial(ctx: Ctx, tally: Tally, rig: Rig, kind: str, liar: int) -> None:
    rng = ctx.rng
    ports = list(rig.emulator.ports)
    serial = rig.emulator.drives[liar].serial
    line: LyingLine | None = None
    timer: threading.Timer | None = None
    alone = rng.random() < 0.25
    tally.faults += 1
    with contextlib.ExitStack() as stack:
        if kind in FLASH_LIES:
            stack.enter_context(_tampered(rig, kind, liar, ctx))
        elif kind in LINE_LIES:
            line = LyingLine(ports[liar], kind, rng.randrange(0, 12), framing.MAX_FRAME)
            stack.callback(line.close)
            ports[liar] = line.path
        else:
            timer = threading.Timer(rng.uniform(0.0, 0.25), rig.emulator.kill, (liar,))
            timer.daemon = True
        # The liar first most of the time, so that its lie is what the host meets.
        order = [liar] + [i for i in range(3) if i != liar]
        if rng.random() < 0.3:
            rng.shuffle(order)
        if kind in SHARE_LIES:
            # Alone: the liar and one good drive, exactly the threshold.
            chosen = [i for i in order if i == liar or i == (liar + 1) % 3] if alone else order
            _recover(tally, rig, [ports[i] for i in chosen], kind, serial, ports[liar])
        else:
            chosen = [liar] if alone else order
            if timer is not None:
                timer.start()
            _restore(tally, rig, [ports[i] for i in chosen], kind, serial, ports[liar])
    if line is not None and kind == "weak-costs" and line.auth_begins:
        tally.loss(
            f"drive {serial} announced Argon2id costs under the floor and was still sent "
            f"{line.auth_begins} AUTH_BEGIN(s) derived from its custodian's passphrase"
        )
    if timer is not None:
        timer.cancel()
        timer.join()
        rig.emulator.restart(liar)


def _named(text: str, serial: str, port: str) -> bool:
    return serial in text or port in text


def _restore(tally: Tally, rig: Rig, ports: list[str], kind: str, serial: str, port: str) -> None:
    what = f"restore with drive {serial} {kind}"
    hsmfarm.delete_sample_keys(rig.session)
    reference_id = rig.foreign_name if kind == "foreign-only" else rig.set_name
    set_ref = reference_id.removeprefix("set-")

    def action() -> Any:
        with DriveGroup(ports, timeout=TIMEOUT) as group:
            return restore_set(rig.session, group.drives, set_ref)

    outcome = guarded(action, OP_LIMIT)
    got = hsmfarm.fingerprints(rig.session, rig.reference)
    if outcome.unclear is not None:
        tally.unclear_failure(f"{what}: {outcome.unclear}")
    elif outcome.error is not None:
        tally.clear_failure(outcome.error)
        if len(ports) > 1 and kind != "foreign-only":
            tally.unclear_failure(f"{what}: the good drives were not used: {outcome.error}")
        elif not _named(str(outcome.error), serial, port):
            tally.unclear_failure(f"{what}: the error does not name the drive: {outcome.error}")
    else:
        result = outcome.value
        if kind == "foreign-only":
            tally.loss(f"{what}: another domain's set was restored")
        elif not result.ok:
            tally.loss(f"{what}: restore reported keys that failed: {result.failed}")
        elif result.source == serial and kind in FLASH_LIES:
            tally.loss(f"{what}: the tampered copy on {serial} was accepted")
        else:
            tally.ok += 1
            tried_first = Path(ports[0]).name == Path(port).name
            named = any(_named(p.drive + p.reason, serial, port) for p in result.attempts)
            if tried_first and result.source != serial and not named:
                tally.unclear_failure(f"{what}: restored elsewhere without naming {serial}")
    # Whatever happened, the slot holds the original keys or none of them.
    for key, value in got.items():
        if rig.reference.get(key) != value:
            tally.loss(f"{what}: key {key} in the slot differs from the original ({value})")
    if outcome.succeeded and kind != "foreign-only" and got != rig.reference:
        tally.loss(f"{what}: restore succeeded but the slot holds {sorted(got)}")


def _recover(tally: Tally, rig: Rig, ports: list[str], kind: str, serial: str, port: str) -> None:
    what = f"domain recovery with drive {serial} {kind} ({len(ports)} drives)"

    def action() -> tuple[bytes, list[str]]:
        with DriveGroup(ports, timeout=TIMEOUT) as group:
            gathered = gather_shares(group.drives, rig.passes, rig.domain_id)
            rebuilt = rebuild(gathered)
            try:
                named = [p.drive + " " + p.reason for p in rebuilt.bad + gathered.problems]
                return domain_id_from_secret(rebuilt.secret), named
            finally:
                rebuilt.wipe()

    outcome = guarded(action, OP_LIMIT)
    if outcome.unclear is not None:
        tally.unclear_failure(f"{what}: {outcome.unclear}")
    elif outcome.error is not None:
        tally.clear_failure(outcome.error)
        if len(ports) == 3:
            tally.unclear_failure(f"{what}: two good drives were not enough: {outcome.error}")
        elif not _named(str(outcome.error), serial, port):
            tally.unclear_failure(f"{what}: the error does not name the drive: {outcome.error}")
    else:
        rebuilt_id, named = outcome.value
        if rebuilt_id != rig.domain_id:
            tally.loss(f"{what}: rebuilt a secret that is not the domain's")
        elif len(ports) < 3:
            tally.loss(f"{what}: rebuilt from one good share and a bad one")
        elif not any(_named(n, serial, port) for n in named):
            tally.unclear_failure(f"{what}: recovered without naming {serial}")
        else:
            tally.ok += 1
