"""Drive the real firmware on the MicroPython unix port through pipes, with protocol/ only.

A deliberately small host: it builds frames with ``protocol.framing``, runs a session with
``protocol.transcript`` and the ``spake2`` package, and reads replies, so firmware tests
do not depend on the host package. The firmware's stdin is a pipe whose read end is
non-blocking, as the emulator gives it.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from protocol import cbor, errors, framing, messages, transcript  # noqa: E402

MAIN = REPO / "device" / "main.py"
OWNER = bytes(range(32))
CUSTODIAN = bytes(range(32, 64))
KDF = {"alg": "argon2id", "t": 3, "m": 65536, "p": 1}


def micropython() -> str:
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise RuntimeError("the micropython command is missing")
    return found


class DriveError(Exception):
    def __init__(self, seq: int, fields: dict[int, Any], mac: bool) -> None:
        super().__init__(f"{errors.NAMES.get(fields[1], fields[1])}: {fields.get(2)}")
        self.seq = seq
        self.code = fields[1]
        self.text = fields.get(2)
        self.fields = fields
        self.maced = mac


class Session:
    def __init__(self, role: int, key: bytes, th: bytes) -> None:
        self.role = role
        self.key = key
        self.th = th
        self.h2d = transcript.SessionMac(transcript.derive(key, transcript.SESSION_H2D, th))
        self.d2h = transcript.SessionMac(transcript.derive(key, transcript.SESSION_D2H, th))


class Firmware:
    """One firmware process; start() again after stop() or kill() reboots it."""

    def __init__(
        self,
        flash: Path,
        serial: str = "SK-TEST0001",
        heap: str = "96K",
        **settings: str | int,
    ) -> None:
        self.flash = Path(flash)
        self.serial = serial
        self.heap = heap
        self.settings = {"BACKOFF_MS": 0, **settings}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdin_w = -1
        self.reader = framing.FrameReader(65535)
        self.pending = b""
        self.seq = 0
        self.session: Session | None = None
        self.max_frame = framing.MAX_FRAME
        self.log = self.flash.parent / f"{self.flash.name}.stderr"

    # -- process ---------------------------------------------------------------------------

    def start(self) -> Firmware:
        self.flash.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["MICROPYPATH"] = f"{REPO / 'device'}:{REPO}"
        env["SEALKEEP_FLASH"] = str(self.flash)
        env["SEALKEEP_SERIAL"] = self.serial
        for key, value in self.settings.items():
            env["SEALKEEP_" + key] = str(value)
        r, w = os.pipe()
        fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_NONBLOCK)
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [micropython(), "-X", f"heapsize={self.heap}", str(MAIN)],
                stdin=r,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        os.close(r)
        self.stdin_w = w
        self.reader.reset()
        self.pending = b""
        self.session = None
        return self

    def stop(self) -> int | None:
        """Close stdin (the firmware exits at end of input) and reap the process."""
        if self.proc is None:
            return None
        if self.stdin_w >= 0:
            os.close(self.stdin_w)
            self.stdin_w = -1
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        self.stop()

    def restart(self) -> Firmware:
        self.stop()
        return self.start()

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    # -- bytes -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.stdin_w, view)
            view = view[n:]

    def read_frame(self, timeout: float = 10.0) -> tuple[int, int, int, dict[int, Any], Any]:
        """(msg id, flags, seq, body, (mac, signed)) of the next frame from the drive."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            data = self.pending
            pos = 0
            while pos < len(data):
                pos, result = self.reader.push(data, pos)
                if isinstance(result, memoryview):
                    self.pending = data[pos:]
                    msg_id, flags, seq, body, mac, signed = framing.parse_frame(result)
                    fields = cbor.decode(bytes(body))
                    extra = (bytes(mac) if mac is not None else None, bytes(signed))
                    return msg_id, flags, seq, fields, extra
                assert result is None, f"bad frame from the drive: {result}"
            self.pending = b""
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from the drive; stderr:\n" + self.stderr())
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError("the drive closed its output; stderr:\n" + self.stderr())
                self.pending = chunk

    # -- requests --------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq = self.seq % 0xFFFF + 1
        return self.seq

    def frame(self, msg_id: int, body: dict[int, Any], session: Session | None = None) -> bytes:
        """A request frame (MACed when a session is given, advancing its counter)."""
        seq = self.next_seq()
        raw = cbor.encode(body)
        if session is None:
            return framing.build_frame(msg_id, seq, raw)
        header = bytes([framing.VERSION, msg_id, framing.FLAG_MAC, seq >> 8, seq & 0xFF])
        return framing.build_frame(msg_id, seq, raw, session.h2d.tag(header + raw))

    def reply(self, seq: int | None = None, timeout: float = 10.0) -> tuple[int, dict[int, Any]]:
        """Read a reply, check its MAC against the session, raise DriveError on ERROR."""
        msg_id, _, rseq, fields, (mac, signed) = self.read_frame(timeout)
        if seq is not None and rseq != seq and rseq != 0:
            raise AssertionError(f"reply to sequence {rseq}, expected {seq}")
        session = self.session
        if mac is not None:
            assert session is not None, "a MACed reply outside a session"
            assert mac == session.d2h.tag(signed), "reply MAC does not verify"
        if msg_id == messages.ERROR:
            if mac is None and fields[1] == errors.SESSION_MAC:
                self.session = None
            raise DriveError(rseq, fields, mac is not None)
        if session is not None and msg_id != messages.HELLO_R and msg_id != messages.AUTH_OK:
            assert mac is not None, "an unMACed reply in a session"
        return msg_id, fields

    def call(
        self, msg_id: int, body: dict[int, Any] | None = None, timeout: float = 10.0
    ) -> dict[int, Any]:
        session = self.session
        if msg_id in (messages.HELLO, messages.AUTH_BEGIN):
            session = None
        if msg_id == messages.AUTH_BEGIN:
            self.session = None
        wire = self.frame(msg_id, body or {}, session)
        self.write(wire)
        _, fields = self.reply(self.seq, timeout)
        return fields

    def hello(self) -> dict[int, Any]:
        fields = self.call(messages.HELLO)
        self.max_frame = fields[6]
        return fields

    def enrol(self) -> Session:
        return self.auth(transcript.ROLE_ENROL, transcript.ENROL_PASSWORD)

    def claim(self, retention: int | None = None) -> dict[int, Any]:
        """Claim in an enrol session, the credentials masked with its pads (and the
        retention rule, when given)."""
        sess = self.enrol()
        pad_o = transcript.derive(sess.key, transcript.CLAIM_OWNER, sess.th)
        pad_c = transcript.derive(sess.key, transcript.CLAIM_CUSTODIAN, sess.th)
        body = {
            1: transcript.mask(OWNER, pad_o),
            2: transcript.mask(CUSTODIAN, pad_c),
            3: b"salt" * 4,
            4: KDF,
            5: b"D" * 16,
        }
        if retention is not None:
            body[6] = retention
        try:
            return self.call(messages.CLAIM, body)
        finally:
            self.session = None

    def begin(self, role: int, credential: bytes) -> tuple[Any, bytes, dict[int, Any]]:
        """AUTH_BEGIN: (the SPAKE2 side A, X, the challenge's fields)."""
        import spake2

        exchange = spake2.SPAKE2_A(credential, idA=transcript.HOST_ID, idB=self.serial.encode())
        x_msg = exchange.start()[1:]
        return exchange, x_msg, self.call(messages.AUTH_BEGIN, {1: role, 2: x_msg})

    def auth(self, role: int = 0, credential: bytes | None = None) -> Session:
        """A session. Checks the drive's signature (against its HELLO key); sends its
        confirmation whatever the drive's says, so a wrong credential gets the drive's
        AUTH_FAILED (a DriveError), and checks the drive's confirmation after."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if credential is None:
            credential = OWNER if role == 0 else CUSTODIAN
        identity = bytes(self.hello()[14])
        exchange, x_msg, r = self.begin(role, credential)
        y_msg = bytes(r[1])
        th = transcript.transcript_hash(role, self.serial, x_msg, y_msg, identity)
        Ed25519PublicKey.from_public_bytes(identity).verify(
            bytes(r[3]), transcript.identity_message(th)
        )
        key = exchange.finish(b"B" + y_msg)
        self.call(messages.AUTH_PROVE, {1: transcript.derive(key, transcript.HOST_CONFIRM, th)})
        assert bytes(r[2]) == transcript.derive(key, transcript.DRIVE_CONFIRM, th)
        self.session = Session(role, key, th)
        return self.session

    # -- storage ---------------------------------------------------------------------------

    def put(self, name: str, data: bytes, window: int = 4, start: int | None = None) -> int:
        """PUT_OPEN, PUT_DATA (up to window frames in flight), PUT_COMMIT; the open offset."""
        import hashlib

        digest = hashlib.sha256(data).digest()
        offset = self.call(messages.PUT_OPEN, {1: name, 2: len(data), 3: digest})[1]
        first = offset
        if start is not None:
            assert offset == start, (offset, start)
        room = framing.payload_room(self.max_frame)
        inflight: list[int] = []
        pos = offset
        while pos < len(data) or inflight:
            while pos < len(data) and len(inflight) < window:
                chunk = data[pos : pos + room]
                self.write(self.frame(messages.PUT_DATA, {1: pos, 2: chunk}, self.session))
                inflight.append(self.seq)
                pos += len(chunk)
            seq = inflight.pop(0)
            self.reply(seq)
        done = self.call(messages.PUT_COMMIT, {1: name})
        assert bytes(done[1]) == digest and done[2] == len(data)
        return first

    def get(self, name: str, size: int, window: int = 4) -> bytes:
        room = framing.payload_room(self.max_frame)
        out = bytearray()
        pos = 0
        inflight: list[int] = []
        while pos < size or inflight:
            while pos < size and len(inflight) < window:
                self.write(self.frame(messages.READ, {1: name, 2: pos, 3: room}, self.session))
                inflight.append(self.seq)
                pos += room
            _, fields = self.reply(inflight.pop(0))
            out += fields[1]
        return bytes(out)
