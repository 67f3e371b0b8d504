"""The drive client against an in-memory drive built on the protocol package.

``FakeDrive`` answers like the firmware does (framing, sessions and MACs, failure counters,
resumable puts) and can be told to misbehave: damage, alter, replay or hold frames, lose
data, end the session, or restart mid-transfer. ``FakeLink`` is a transport that hands
bytes to it and processes whatever is queued when the client waits for a reply, so
pipelined requests really are in flight together.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import secrets
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sealkeep import errors as E
from sealkeep.client import DriveClient, ObjectInfo, Role
from sealkeep.pake import HostPake, drive_material, drive_respond
from sealkeep.protocol import errors as codes
from sealkeep.protocol import framing, messages, transcript
from sealkeep.protocol.hmac256 import equal
from sealkeep.transport import Transport, open_transport

OWNER = bytes(range(32))
CUSTODIAN = bytes(range(32, 64))
SALT = b"salt-0123456789a"
KDF = {"alg": "argon2id", "t": 3, "m": 65536, "p": 1}
DOMAIN = b"domain-1"


class _Fail(Exception):
    def __init__(self, code: int, text: str, expected: int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.expected = expected


class _DSession:
    def __init__(self, role: int, key: bytes, th: bytes) -> None:
        self.role = role
        self.h2d = transcript.SessionMac(transcript.derive(key, transcript.SESSION_H2D, th))
        self.d2h = transcript.SessionMac(transcript.derive(key, transcript.SESSION_D2H, th))
        self.pads = (
            transcript.derive(key, transcript.CLAIM_OWNER, th),
            transcript.derive(key, transcript.CLAIM_CUSTODIAN, th),
        )


ReplyFilter = Callable[[int, bytes], list[bytes]]


def _frame(msg_id: int, seq: int, body: bytes, mac: bytes | None = None) -> bytes:
    """A decoded frame (header | body | mac | crc), what a filter gets and returns."""
    wire = framing.build_frame(msg_id, seq, body, mac)
    return framing.cobs_decode(wire[:-1])


def _split(frame: bytes) -> tuple[int, int, bytes, bytes | None]:
    msg_id, _, seq, body, mac, _ = framing.parse_frame(memoryview(frame))
    return msg_id, seq, bytes(body), bytes(mac) if mac is not None else None


class FakeDrive:
    """A drive in memory that speaks the protocol like the firmware."""

    def __init__(
        self, serial: str = "SK-FAKE0001", max_frame: int = 4096, capacity: int = 1 << 26
    ) -> None:
        self.serial = serial
        self.max_frame = max_frame
        self.room = framing.payload_room(max_frame)
        self.capacity = capacity
        self.list_limit = 3
        self.wipe()
        self.reader = framing.FrameReader(max_frame)
        self.inbox = bytearray()
        # what happened
        self.requests: list[tuple[int, int, bytes]] = []  # (msg_id, seq, frame)
        self.replies = 0
        self.max_in_flight = 0
        self.data_frames = 0
        self.largest_frame = 0
        # misbehaviour
        self.reply_filter: ReplyFilter | None = None
        self.hold: set[int] = set()  # reply numbers to send only with the next batch
        self.held: list[bytes] = []
        self.lose_data_at: int | None = None  # PUT_DATA offset: lose half of what is held
        self.kill_session_at: set[int] = set()  # PUT_DATA numbers: act as if the MAC failed
        self.restart_at: int | None = None  # PUT_DATA number: the drive restarts
        self.silent = False
        self.bad_drive_proof = False
        self.restarting = False
        self.identity_seed = secrets.token_bytes(32)
        self.identity = (
            Ed25519PrivateKey.from_private_bytes(self.identity_seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )

    def wipe(self) -> None:
        self.blank = True
        self.materials: list[bytes] = []
        self.salt = self.kdf = self.domain = None
        self.failures = [0, 0]
        self.objects: dict[str, tuple[bytes, bytes]] = {}  # name -> (data, digest)
        self.tmp: dict[str, tuple[int, bytes, bytearray]] = {}  # name -> (size, digest, data)
        self.put: str | None = None
        self.session: _DSession | None = None
        self.pending: tuple[int, bytes, bytes] | None = None  # (role, key, th)

    # -- the link --------------------------------------------------------------------

    def process(self) -> bytes:
        """Handle every complete frame received so far; return the reply bytes."""
        data = bytes(self.inbox)
        self.inbox.clear()
        self.max_in_flight = max(self.max_in_flight, data.count(b"\x00"))
        out = bytearray()
        if data and self.held:
            for frame in self.held:
                out += framing.cobs_encode(frame) + b"\x00"
            self.held = []
        pos = 0
        while pos < len(data):
            pos, frame = self.reader.push(data, pos)
            if frame is None:
                continue
            if self.silent:
                continue
            for reply in self.on_frame(frame):
                number = self.replies
                self.replies += 1
                variants = [reply]
                if self.reply_filter is not None:
                    variants = self.reply_filter(number, reply)
                if number in self.hold:
                    self.held.extend(variants)
                    continue
                for variant in variants:
                    out += framing.cobs_encode(variant) + b"\x00"
            if self.restarting:
                self.restarting = False
                self.silent = True  # the rest of what was in flight is lost
        self.silent = False
        return bytes(out)

    def reply(self, msg_id: int, seq: int, body: dict[int, Any], sess: _DSession | None) -> bytes:
        raw = cbor2.dumps(body, canonical=True)
        header = bytes(
            [framing.VERSION, msg_id, framing.FLAG_MAC if sess else 0, seq >> 8, seq & 0xFF]
        )
        mac = sess.d2h.tag(header + raw) if sess is not None else None
        return _frame(msg_id, seq, raw, mac)

    def error(
        self, seq: int, code: int, text: str, sess: _DSession | None = None, **extra: int
    ) -> bytes:
        body: dict[int, Any] = {1: code, 2: text}
        if "expected" in extra:
            body[3] = extra["expected"]
        return self.reply(messages.ERROR, seq, body, sess)

    def end_session(self) -> None:
        self.session = None
        self.pending = None
        self.put = None

    def on_frame(self, frame: memoryview | int) -> list[bytes]:
        if isinstance(frame, int):
            code = codes.FRAME_TOO_LARGE if frame == framing.OVERSIZE else codes.MALFORMED_FRAME
            return [self.error(0, code, "damaged frame")]
        self.largest_frame = max(self.largest_frame, len(frame))
        try:
            msg_id, _, seq, body, mac, signed = framing.parse_frame(frame)
        except framing.FrameError as exc:
            return [self.error(0, exc.code, exc.text)]
        self.requests.append((msg_id, seq, bytes(frame)))
        sess = self.session
        if msg_id == messages.HELLO:
            sess = None
        elif msg_id == messages.AUTH_BEGIN:
            self.end_session()
            sess = None
        elif sess is not None:
            if mac is None or not equal(mac, sess.h2d.peek(signed)):
                self.end_session()
                return [self.error(seq, codes.SESSION_MAC, "missing or wrong session MAC")]
            sess.h2d.counter += 1
        if msg_id == messages.PUT_DATA:
            self.data_frames += 1
            if self.data_frames in self.kill_session_at:
                self.end_session()
                return [self.error(seq, codes.SESSION_MAC, "missing or wrong session MAC")]
            if self.data_frames == self.restart_at:
                self.end_session()
                self.restarting = True
                return []
        try:
            req = cbor2.loads(bytes(body))
            reply_id, reply = self.dispatch(msg_id, req, sess)
        except _Fail as exc:
            extra = {} if exc.expected is None else {"expected": exc.expected}
            return [self.error(seq, exc.code, exc.text, sess, **extra)]
        out = self.reply(reply_id, seq, reply, sess)
        if msg_id in (messages.SESSION_END, messages.FACTORY_RESET):
            self.end_session()
        return [out]

    # -- commands --------------------------------------------------------------------

    def dispatch(
        self, msg_id: int, req: dict[int, Any], sess: _DSession | None
    ) -> tuple[int, dict[int, Any]]:
        if msg_id not in messages.REQUESTS:
            raise _Fail(codes.UNKNOWN_MESSAGE, f"unknown message 0x{msg_id:02x}")
        problem = messages.check(messages.REQUESTS[msg_id], req)
        if problem is not None:
            raise _Fail(codes.BAD_BODY, problem)
        if msg_id == messages.HELLO:
            return messages.HELLO_R, self.hello()
        if msg_id == messages.CLAIM:
            if sess is None or sess.role != 2:
                raise _Fail(codes.NOT_AUTHENTICATED, "a claim needs an enrol session")
            if not self.blank:
                raise _Fail(codes.WRONG_STATE, "drive is already claimed")
            self.blank = False
            self.materials = [
                drive_material(transcript.mask(req[1], sess.pads[0])),
                drive_material(transcript.mask(req[2], sess.pads[1])),
            ]
            self.salt, self.kdf, self.domain = req[3], req[4], req[5]
            return messages.OK, {}
        if msg_id == messages.FACTORY_RESET:
            if sess is None or sess.role != 1:
                raise _Fail(codes.PRESENCE_REQUIRED, "needs the custodian or the button")
            self.wipe()
            return messages.OK, {}
        if msg_id == messages.AUTH_BEGIN:
            return self.auth_begin(req)
        if msg_id == messages.AUTH_PROVE:
            return self.auth_prove(req)
        if msg_id == messages.SESSION_END:
            return messages.OK, {}
        if msg_id == messages.DELETE:
            if sess is None or sess.role != 1:
                raise _Fail(codes.PRESENCE_REQUIRED, "needs the custodian or the button")
        elif sess is None or sess.role > 1:
            raise _Fail(codes.NOT_AUTHENTICATED, "needs an authenticated session")
        if msg_id in (messages.PUT_OPEN, messages.PUT_DATA, messages.PUT_COMMIT):
            if sess.role != 0:
                raise _Fail(codes.PERMISSION, "only the owner adds objects")
        name = req.get(1)
        if msg_id in (
            messages.STAT,
            messages.READ,
            messages.PUT_OPEN,
            messages.PUT_COMMIT,
            messages.DELETE,
            messages.VERIFY,
        ) and not messages.name_ok(name):
            raise _Fail(codes.BAD_NAME, "bad object name")
        if msg_id == messages.SPACE:
            free = self.capacity - self.used()
            return messages.SPACE_R, {1: self.capacity, 2: free, 3: self.failures[0], 4: 0}
        if msg_id == messages.LIST:
            after, prefix = req.get(1, ""), req.get(2, "")
            names = sorted(n for n in self.objects if n > after and n.startswith(prefix))
            page = names[: self.list_limit]
            entries = [[n, len(self.objects[n][0])] for n in page]
            return messages.LIST_R, {1: entries, 2: len(names) > len(page)}
        if msg_id == messages.STAT:
            data, digest = self.lookup(name)
            return messages.STAT_R, {1: name, 2: len(data), 3: digest}
        if msg_id == messages.READ:
            data, _ = self.lookup(name)
            if req[2] > len(data):
                raise _Fail(codes.BAD_OFFSET, "offset past the end", len(data))
            n = min(req[3], self.room)
            return messages.DATA, {1: data[req[2] : req[2] + n]}
        if msg_id == messages.DELETE:
            self.lookup(name)
            del self.objects[name]
            return messages.OK, {}
        if msg_id == messages.VERIFY:
            data, digest = self.lookup(name)
            actual = hashlib.sha256(data).digest()
            return messages.VERIFY_R, {1: actual, 2: len(data), 3: actual == digest}
        if msg_id in (messages.PUT_OPEN, messages.PUT_COMMIT) and name in self.objects:
            raise _Fail(codes.EXISTS, "objects are never replaced")
        if msg_id == messages.PUT_OPEN:
            return messages.PUT_READY, {1: self.put_open(name, req[2], req[3])}
        if msg_id == messages.PUT_DATA:
            return messages.PUT_ACK, {1: self.put_data(req[1], req[2])}
        if msg_id == messages.PUT_COMMIT:
            return messages.PUT_DONE, self.put_commit(name)
        raise _Fail(codes.UNKNOWN_MESSAGE, "unhandled")

    def hello(self) -> dict[int, Any]:
        return {
            1: 2,
            2: "0.1.0-fake",
            3: self.serial,
            4: messages.STATE_BLANK if self.blank else messages.STATE_OWNED,
            5: None if self.blank else self.domain,
            6: self.max_frame,
            7: [messages.CAP_STORAGE, messages.CAP_RESUME],
            8: None if self.blank else self.salt,
            9: None if self.blank else self.kdf,
            10: self.capacity,
            11: self.capacity - self.used(),
            14: self.identity,
            15: 250 if self.failures[0] >= 3 else 0,
            16: 250 if self.failures[1] >= 3 else 0,
        }

    def used(self) -> int:
        held = sum(len(d) for d, _ in self.objects.values())
        return held + sum(size for size, _, _ in self.tmp.values())

    def lookup(self, name: str) -> tuple[bytes, bytes]:
        if name not in self.objects:
            raise _Fail(codes.NOT_FOUND, "no such object")
        return self.objects[name]

    def auth_begin(self, req: dict[int, Any]) -> tuple[int, dict[int, Any]]:
        role = req[1]
        if self.blank != (role == 2):
            raise _Fail(codes.WRONG_STATE, "drive is blank" if self.blank else "drive is claimed")
        if role != 2:
            self.failures[role] += 1  # counted before answering, like the firmware
        material = drive_material(transcript.ENROL_PASSWORD) if role == 2 else self.materials[role]
        y_msg, key = drive_respond(material, req[2], self.serial.encode())
        th = transcript.transcript_hash(role, self.serial, req[2], y_msg, self.identity)
        signature = Ed25519PrivateKey.from_private_bytes(self.identity_seed).sign(
            transcript.identity_message(th)
        )
        confirm = transcript.derive(key, transcript.DRIVE_CONFIRM, th)
        if self.bad_drive_proof:
            signature = bytes(64)
        self.pending = (role, key, th)
        return messages.AUTH_CHALLENGE, {1: y_msg, 2: confirm, 3: signature}

    def auth_prove(self, req: dict[int, Any]) -> tuple[int, dict[int, Any]]:
        pending, self.pending = self.pending, None
        if pending is None:
            raise _Fail(codes.WRONG_STATE, "AUTH_PROVE without AUTH_BEGIN")
        role, key, th = pending
        if not equal(req[1], transcript.derive(key, transcript.HOST_CONFIRM, th)):
            raise _Fail(codes.AUTH_FAILED, "wrong credential")
        if role != 2:
            self.failures[role] = 0
        self.session = _DSession(role, key, th)
        return messages.AUTH_OK, {}

    def put_open(self, name: str, size: int, digest: bytes) -> int:
        held = self.tmp.get(name)
        if held is not None and (held[0], held[1]) == (size, digest):
            self.put = name
            return len(held[2])
        if self.used() - (held[0] if held else 0) + size > self.capacity:
            raise _Fail(codes.FULL, f"no room: {size} bytes needed")
        self.tmp[name] = (size, digest, bytearray())
        self.put = name
        return 0

    def put_data(self, offset: int, data: bytes) -> int:
        if self.put is None:
            raise _Fail(codes.NO_PUT_OPEN, "no put is open")
        size, _, held = self.tmp[self.put]
        if offset == self.lose_data_at:
            self.lose_data_at = None
            del held[len(held) // 2 :]
        if offset != len(held):
            raise _Fail(codes.BAD_OFFSET, f"offset must be {len(held)}", len(held))
        if offset + len(data) > size:
            raise _Fail(codes.BAD_BODY, "data runs past the declared size")
        held += data
        return len(held)

    def put_commit(self, name: str) -> dict[int, Any]:
        if self.put != name:
            raise _Fail(codes.NO_PUT_OPEN, "no put of that name is open")
        size, digest, held = self.tmp.pop(name)
        self.put = None
        if len(held) != size or hashlib.sha256(held).digest() != digest:
            raise _Fail(codes.DIGEST_MISMATCH, "data does not match the declared SHA-256")
        self.objects[name] = (bytes(held), digest)
        return {1: digest, 2: size}


class FakeLink:
    """A Transport to a FakeDrive; can damage what the host sends."""

    def __init__(self, drive: FakeDrive, url: str = "fake://drive-7", mtu: int = 1 << 16):
        self.drive = drive
        self._url = url
        self._mtu = mtu
        self.is_open = False
        self.sends = 0
        self.corrupt_sends: set[int] = set()
        self.writes: list[int] = []
        self.connects = 0
        self.break_after: int | None = None  # receive() calls before the port fails once

    @property
    def url(self) -> str:
        return self._url

    @property
    def mtu(self) -> int:
        return self._mtu

    def connect(self) -> None:
        self.is_open = True
        self.connects += 1

    def close(self) -> None:
        self.is_open = False

    def send(self, data: bytes) -> None:
        assert self.is_open
        if self.sends in self.corrupt_sends:
            data = damage(data)
        self.sends += 1
        self.writes.append(len(data))
        self.drive.inbox += data

    def receive(self, timeout: float) -> bytes:
        assert self.is_open
        if self.break_after is not None:
            self.break_after -= 1
            if self.break_after < 0:
                self.break_after = None
                self.drive.inbox.clear()  # what was in flight is lost with the port
                self.drive.end_session()
                raise E.LinkError(f"lost the link to the drive at {self.url}", port=self.url)
        out = self.drive.process()
        if not out:
            time.sleep(min(max(timeout, 0.0), 0.002))
        return out


def damage(data: bytes) -> bytes:
    """Flip one bit in the middle of some wire bytes, never making a delimiter."""
    buf = bytearray(data)
    i = len(buf) // 2
    while buf[i] in (0, 0x40):
        i += 1
    buf[i] ^= 0x40
    return bytes(buf)


def with_crc(frame: bytes) -> bytes:
    """Recompute the CRC of a decoded frame after editing it."""
    import binascii

    body = frame[:-4]
    return body + (binascii.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little")


@pytest.fixture
def drive() -> FakeDrive:
    return FakeDrive()


@pytest.fixture
def link(drive: FakeDrive) -> FakeLink:
    return FakeLink(drive)


@pytest.fixture
def client(link: FakeLink) -> Iterator[DriveClient]:
    with DriveClient(link, timeout=2.0) as c:
        yield c


@pytest.fixture
def owned(client: DriveClient) -> DriveClient:
    client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
    client.authenticate(Role.OWNER, OWNER)
    return client


def blob(n: int, seed: int = 1) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 32
    return bytes(out[:n])


# -- basics ----------------------------------------------------------------------------


def test_fake_link_is_a_transport(link: FakeLink) -> None:
    assert isinstance(link, Transport)


def test_hello_fields(client: DriveClient, drive: FakeDrive) -> None:
    h = client.hello()
    assert h.serial == drive.serial and h.state == "blank" and h.blank
    assert h.domain is None and h.salt is None and h.kdf is None
    assert h.max_frame == 4096 and "storage" in h.capabilities
    assert h.capacity == drive.capacity and h.free == drive.capacity
    assert (h.owner_delay_ms, h.custodian_delay_ms) == (0, 0)
    assert h.identity == drive.identity
    assert client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN) == drive.identity
    h = client.hello()
    assert (h.state, h.domain, h.salt, h.kdf) == ("owned", DOMAIN, SALT, KDF)
    assert client.serial == drive.serial and client.port == "fake://drive-7"


def test_frames_on_the_wire_are_what_the_protocol_says(client: DriveClient, drive: FakeDrive):
    client.hello()
    msg_id, seq, frame = drive.requests[-1]
    assert msg_id == messages.HELLO
    mid, flags, fseq, body, mac, _ = framing.parse_frame(memoryview(frame))
    assert (mid, flags, fseq, bytes(body), mac) == (messages.HELLO, 0, seq, b"\xa0", None)
    client.hello()
    assert drive.requests[-1][1] == (seq % 0xFFFF) + 1


def test_claim_authenticate_and_session_macs(owned: DriveClient, drive: FakeDrive) -> None:
    assert owned.session_role == Role.OWNER
    assert owned.space().free == drive.capacity
    msg_id, _, frame = drive.requests[-1]
    _, flags, _, _, mac, _ = framing.parse_frame(memoryview(frame))
    assert msg_id == messages.SPACE and flags & framing.FLAG_MAC and mac is not None
    assert drive.session is not None and drive.session.h2d.counter == 1


def test_put_get_round_trip_sizes(owned: DriveClient, drive: FakeDrive) -> None:
    room = framing.payload_room(4096)
    for i, n in enumerate([0, 1, room - 1, room, room + 1, 5 * room + 7]):
        data = blob(n, i)
        name = f"obj-{i}.bin"
        result = owned.put(name, data)
        assert (result.name, result.size, result.resumed_from, result.recoveries) == (
            name,
            n,
            0,
            0,
        )
        assert result.digest == hashlib.sha256(data).digest()
        assert drive.objects[name][0] == data
        assert owned.get(name) == data
        assert owned.stat(name).digest == result.digest


def test_put_from_file_and_get_into(owned: DriveClient) -> None:
    data = blob(30000)
    src = io.BytesIO(b"skip" + data)
    src.seek(4)
    owned.put("file.bin", src)
    sink = io.BytesIO()
    info = owned.get_into("file.bin", sink)
    assert sink.getvalue() == data and info.size == len(data)


def test_progress_is_reported(owned: DriveClient) -> None:
    data = blob(50000)
    seen: list[tuple[int, int]] = []
    owned.put("p.bin", data, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 50000) and seen[-1] == (50000, 50000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    seen.clear()
    owned.get("p.bin", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (50000, 50000)


def test_list_follows_pages_and_prefix(owned: DriveClient, drive: FakeDrive) -> None:
    names = [f"a{i:02d}" for i in range(8)] + ["b1", "b2"]
    for n in names:
        owned.put(n, n.encode())
    listed = owned.list()
    assert [o.name for o in listed] == sorted(names)
    assert all(o.size == len(o.name) and o.digest is None for o in listed)
    assert [o.name for o in owned.list("b")] == ["b1", "b2"]
    assert owned.list("zz") == []


def test_read_stat_delete_verify_space(owned: DriveClient, drive: FakeDrive) -> None:
    data = blob(10000)
    owned.put("x.bin", data)
    assert owned.read("x.bin", 100, 5000) == data[100:5100]
    assert owned.read("x.bin", 9990, 100) == data[9990:]
    assert owned.read("x.bin", 10000, 10) == b""
    v = owned.verify("x.bin")
    assert (v.size, v.intact, v.digest) == (10000, True, hashlib.sha256(data).digest())
    assert owned.space().free == drive.capacity - 10000
    with pytest.raises(E.PresenceRequired):
        owned.delete("x.bin")  # an owner adds, never erases
    with pytest.raises(E.ObjectExists):
        owned.put("x.bin", b"other")  # nor replaces
    owned.authenticate(Role.CUSTODIAN, CUSTODIAN)
    owned.delete("x.bin")
    with pytest.raises(E.ObjectNotFound):
        owned.stat("x.bin")


def test_wire_counters_and_efficiency(owned: DriveClient) -> None:
    data = blob(64 * framing.payload_room(4096))
    s0, r0 = owned.bytes_sent, owned.bytes_received
    owned.put("eff.bin", data)
    s1, r1 = owned.bytes_sent, owned.bytes_received
    assert len(data) / (s1 - s0) >= 0.98
    assert r1 > r0
    owned.get("eff.bin")
    assert len(data) / (owned.bytes_received - r1) >= 0.98


def test_smaller_max_frame_is_respected() -> None:
    drive = FakeDrive(max_frame=512)
    with DriveClient(FakeLink(drive), timeout=2.0) as c:
        c.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        c.authenticate(Role.OWNER, OWNER)
        data = blob(5000)
        c.put("small.bin", data)
        assert drive.largest_frame <= 512
        assert drive.data_frames == -(-5000 // framing.payload_room(512))
        assert c.get("small.bin") == data
        assert c.max_frame == 512


# -- pipelining ------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 4, 8])
def test_put_keeps_window_frames_in_flight(
    owned: DriveClient, drive: FakeDrive, window: int
) -> None:
    data = blob(20 * framing.payload_room(4096))
    owned.put("w.bin", data, window=window)
    assert drive.max_in_flight == window
    assert drive.objects["w.bin"][0] == data


def test_pipelined_writes_are_grouped_up_to_the_mtu(drive: FakeDrive) -> None:
    link = FakeLink(drive, mtu=9000)
    with DriveClient(link, timeout=2.0) as c:
        c.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        c.authenticate(Role.OWNER, OWNER)
        link.writes.clear()
        c.put("g.bin", blob(12 * framing.payload_room(4096)), window=4)
    assert max(link.writes) <= 9000
    assert max(link.writes) > 4200  # two frames went in one write


def test_get_keeps_window_reads_in_flight(owned: DriveClient, drive: FakeDrive) -> None:
    data = blob(10 * framing.payload_room(4096))
    owned.put("r.bin", data)
    drive.max_in_flight = 0
    assert owned.get("r.bin", window=3) == data
    assert drive.max_in_flight == 3


# -- resume and recovery ---------------------------------------------------------------


def test_put_resumes_after_bad_offset(owned: DriveClient, drive: FakeDrive) -> None:
    room = framing.payload_room(4096)
    data = blob(12 * room)
    drive.lose_data_at = 6 * room
    result = owned.put("bo.bin", data)
    assert result.recoveries == 1 and result.resumed_from == 0
    assert drive.objects["bo.bin"][0] == data


def test_put_reauthenticates_after_session_lost(owned: DriveClient, drive: FakeDrive) -> None:
    data = blob(12 * framing.payload_room(4096))
    drive.kill_session_at = {5}
    result = owned.put("sl.bin", data)
    assert result.recoveries == 1
    assert drive.objects["sl.bin"][0] == data
    assert owned.session_role == Role.OWNER
    assert owned.space().capacity == drive.capacity  # the new session works


def test_put_resumes_after_drive_restart(link: FakeLink, drive: FakeDrive) -> None:
    with DriveClient(link, timeout=0.2) as c:
        c.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        c.authenticate(Role.OWNER, OWNER)
        room = framing.payload_room(4096)
        data = blob(12 * room)
        drive.restart_at = 7
        result = c.put("rs.bin", data)
        assert result.recoveries == 1
        assert drive.objects["rs.bin"][0] == data
        assert any(m == messages.HELLO for m, _, _ in drive.requests[-30:])


def test_put_resumes_where_an_earlier_client_stopped(link: FakeLink, drive: FakeDrive) -> None:
    room = framing.payload_room(4096)
    data = blob(12 * room)
    with DriveClient(link, timeout=0.2, max_recoveries=0) as c:
        c.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        c.authenticate(Role.OWNER, OWNER)
        drive.restart_at = 7
        with pytest.raises(E.LinkError) as info:
            c.put("later.bin", data, window=2)
        assert info.value.timed_out
    with DriveClient(link, timeout=2.0) as c:
        c.authenticate(Role.OWNER, OWNER)
        result = c.put("later.bin", data)
        assert result.resumed_from == 6 * room and result.recoveries == 0
    assert drive.objects["later.bin"][0] == data


def test_put_gives_up_after_bounded_recoveries(owned: DriveClient, drive: FakeDrive) -> None:
    drive.kill_session_at = set(range(1, 1000))
    with pytest.raises(E.SessionLost) as info:
        owned.put("never.bin", blob(5 * framing.payload_room(4096)))
    assert info.value.exit_code == 4
    assert "never.bin" not in drive.objects


def test_damaged_request_in_pipeline_recovers(owned: DriveClient, link: FakeLink) -> None:
    data = blob(16 * framing.payload_room(4096))
    link.corrupt_sends = {link.sends + 3}
    result = owned.put("dmg.bin", data)
    assert result.recoveries == 1
    assert owned.get("dmg.bin") == data


def test_lost_reply_in_pipeline_recovers(owned: DriveClient, drive: FakeDrive) -> None:
    data = blob(16 * framing.payload_room(4096))
    target = drive.replies + 4  # a PUT_ACK in the middle

    def lose(number: int, frame: bytes) -> list[bytes]:
        if number == target:
            return [frame[:10] + bytes([frame[10] ^ 1]) + frame[11:]]  # CRC now fails
        return [frame]

    drive.reply_filter = lose
    result = owned.put("lost.bin", data)
    assert result.recoveries == 1
    assert drive.objects["lost.bin"][0] == data


def test_put_reconnects_after_the_port_failed(owned: DriveClient, link: FakeLink) -> None:
    data = blob(16 * framing.payload_room(4096))
    link.break_after = 5
    result = owned.put("rc.bin", data)
    assert result.recoveries == 1 and link.connects == 2
    assert owned.get("rc.bin") == data


def test_get_recovers_a_lost_session(owned: DriveClient, drive: FakeDrive) -> None:
    data = blob(10 * framing.payload_room(4096))
    owned.put("g.bin", data)
    drive.end_session()  # e.g. the drive restarted between commands
    assert owned.get("g.bin") == data
    drive.end_session()
    assert owned.list() == [ObjectInfo("g.bin", len(data))]


# -- CRC retry, timeouts, stale replies -------------------------------------------------


def test_damaged_request_is_sent_again(client: DriveClient, link: FakeLink, drive: FakeDrive):
    link.corrupt_sends = {0}
    assert client.hello().serial == drive.serial
    assert link.sends == 2
    assert [m for m, _, _ in drive.requests] == [messages.HELLO]


def test_damaged_request_in_session_is_sent_again(owned: DriveClient, link: FakeLink) -> None:
    owned.put("c.bin", b"abc")
    link.corrupt_sends = {link.sends}
    assert owned.stat("c.bin").size == 3
    assert owned.session_role == Role.OWNER
    assert owned.space().capacity > 0


def test_resends_are_bounded(client: DriveClient, link: FakeLink) -> None:
    link.corrupt_sends = {0, 1, 2, 3}
    with pytest.raises(E.FrameRejected) as info:
        client.hello()
    err = info.value
    assert link.sends == 4
    assert err.exit_code == 3 and err.code in (codes.CRC, codes.MALFORMED_FRAME)
    assert "fake://drive-7" in str(err) and "cable" in str(err)


def test_timeout_names_the_port(drive: FakeDrive) -> None:
    class Deaf(FakeLink):
        def receive(self, timeout: float) -> bytes:
            time.sleep(min(timeout, 0.01))
            return b""

    deaf = Deaf(drive, url="/dev/ttyFAKE3")
    with DriveClient(deaf, timeout=0.15, serial_hint="SK-HINT") as c:
        start = time.monotonic()
        with pytest.raises(E.LinkError) as info:
            c.hello()
        assert 0.14 <= time.monotonic() - start < 1.0
    err = info.value
    assert err.exit_code == 3 and err.timed_out and err.port == "/dev/ttyFAKE3"
    assert "/dev/ttyFAKE3" in str(err) and "0.15 s" in str(err) and "HELLO" in str(err)
    assert "drive SK-HINT at /dev/ttyFAKE3" in str(err)


def test_damaged_reply_is_ignored_then_times_out(client: DriveClient, drive: FakeDrive):
    drive.reply_filter = lambda n, f: [f[:-1] + bytes([f[-1] ^ 0xFF])]
    client.timeout = 0.1
    with pytest.raises(E.LinkError) as info:
        client.hello()
    assert "damaged" in str(info.value)


def test_stale_duplicate_reply_is_skipped(owned: DriveClient, drive: FakeDrive) -> None:
    target = drive.replies
    drive.reply_filter = lambda n, f: [f, f] if n == target else [f]
    owned.space()  # its reply arrives twice
    assert owned.space().capacity == drive.capacity
    assert owned.hello().serial == drive.serial


def test_late_reply_after_timeout_keeps_counters_in_step(
    owned: DriveClient, drive: FakeDrive
) -> None:
    drive.hold = {drive.replies}
    with pytest.raises(E.LinkError):
        owned.call(messages.SPACE, {}, messages.SPACE_R, timeout=0.05)
    r = owned.call(messages.SPACE, {}, messages.SPACE_R)
    assert r[1] == drive.capacity
    assert owned.session_role == Role.OWNER


# -- MAC checks on replies ---------------------------------------------------------------


def test_altered_reply_is_rejected(owned: DriveClient, drive: FakeDrive) -> None:
    target = drive.replies

    def alter(number: int, frame: bytes) -> list[bytes]:
        if number != target:
            return [frame]
        msg_id, seq, body, mac = _split(frame)
        fields = cbor2.loads(body)
        fields[2] = 0  # free space
        assert mac is not None
        return [_frame(msg_id, seq, cbor2.dumps(fields, canonical=True), mac)]

    drive.reply_filter = alter
    with pytest.raises(E.ForgedReply) as info:
        owned.call(messages.SPACE, {}, messages.SPACE_R)
    assert info.value.exit_code == 6 and "MAC" in str(info.value)
    assert owned.session_role is None


def test_replayed_reply_is_rejected(owned: DriveClient, drive: FakeDrive) -> None:
    captured: list[bytes] = []

    def replay(number: int, frame: bytes) -> list[bytes]:
        if not captured:
            captured.append(frame)  # a genuine SPACE_R of this session
            return [frame]
        # later: that old reply, relabelled with the current sequence number
        _, seq, _, _ = _split(frame)
        old = bytearray(captured[0])
        old[3:5] = seq.to_bytes(2, "big")
        return [with_crc(bytes(old))]

    drive.reply_filter = replay
    owned.space()
    with pytest.raises(E.ForgedReply):
        owned.call(messages.SPACE, {}, messages.SPACE_R)


def test_reply_without_mac_in_session_is_rejected(owned: DriveClient, drive: FakeDrive):
    def strip(number: int, frame: bytes) -> list[bytes]:
        msg_id, seq, body, _ = _split(frame)
        return [_frame(msg_id, seq, body)]

    drive.reply_filter = strip
    with pytest.raises(E.ForgedReply) as info:
        owned.call(messages.SPACE, {}, messages.SPACE_R)
    assert "no session MAC" in str(info.value)


def test_session_mac_error_means_session_lost(owned: DriveClient, drive: FakeDrive) -> None:
    drive.end_session()
    with pytest.raises(E.SessionLost) as info:
        owned.call(messages.SPACE, {}, messages.SPACE_R)
    assert info.value.code == codes.NOT_AUTHENTICATED and owned.session_role is None
    # a request the drive cannot verify gets SESSION_MAC
    owned.authenticate(Role.OWNER, OWNER)
    assert drive.session is not None
    drive.session.h2d.counter += 5
    with pytest.raises(E.SessionLost) as info:
        owned.call(messages.SPACE, {}, messages.SPACE_R)
    assert info.value.code == codes.SESSION_MAC and owned.session_role is None


# -- authentication ------------------------------------------------------------------------


def test_wrong_credential(client: DriveClient, drive: FakeDrive) -> None:
    client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
    with pytest.raises(E.AuthenticationFailed) as info:
        client.authenticate(Role.CUSTODIAN, OWNER)
    err = info.value
    assert err.code == codes.AUTH_FAILED and drive.serial in str(err) and err.exit_code == 4
    assert "custodian" in str(err) and "never locks" in str(err)
    assert client.session_role is None and drive.failures[1] == 1
    for _ in range(12):  # nothing locks: the right passphrase still opens it
        with pytest.raises(E.AuthenticationFailed):
            client.authenticate(Role.CUSTODIAN, OWNER)
    assert client.hello().custodian_delay_ms > 0
    client.authenticate(Role.CUSTODIAN, CUSTODIAN)
    assert client.space().custodian_failures == 0
    client.authenticate(Role.OWNER, OWNER)


def test_an_abandoned_attempt_still_counts(client: DriveClient, drive: FakeDrive) -> None:
    client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
    exchange = HostPake(OWNER, drive.serial.encode())
    client.call(messages.AUTH_BEGIN, {1: 1, 2: exchange.message}, messages.AUTH_CHALLENGE)
    assert drive.failures[1] == 1  # counted before the challenge, not at the proof


def test_drive_that_cannot_prove_itself(client: DriveClient, drive: FakeDrive) -> None:
    client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
    drive.bad_drive_proof = True
    sent = len(drive.requests)
    with pytest.raises(E.ImpostorDrive) as info:
        client.authenticate(Role.OWNER, OWNER)
    text = str(info.value)
    assert "cannot sign" in text and "look-alike" in text and drive.serial in text
    assert client.session_role is None
    assert messages.AUTH_PROVE not in [m for m, _, _ in drive.requests[sent:]]


def test_a_look_alike_is_named_before_anything_is_sent(
    client: DriveClient, drive: FakeDrive
) -> None:
    pinned = drive.identity
    client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
    drive.identity_seed = secrets.token_bytes(32)  # another board with the same serial
    drive.identity = (
        Ed25519PrivateKey.from_private_bytes(drive.identity_seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    client.hello()
    sent = len(drive.requests)
    with pytest.raises(E.ImpostorDrive) as info:
        client.authenticate(Role.CUSTODIAN, CUSTODIAN, identity=pinned)
    assert "another identity key" in str(info.value)
    assert len(drive.requests) == sent  # not even AUTH_BEGIN went out


def test_claim_is_masked_on_the_wire(client: DriveClient, drive: FakeDrive) -> None:
    client.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
    frames = b"".join(frame for _, _, frame in drive.requests)
    assert OWNER not in frames and CUSTODIAN not in frames
    claim = next(frame for m, _, frame in drive.requests if m == messages.CLAIM)
    _, flags, _, _, mac, _ = framing.parse_frame(memoryview(claim))
    assert flags & framing.FLAG_MAC and mac is not None  # bound to the enrol session


def test_unmaced_error_in_a_session_means_only_session_lost(
    owned: DriveClient, drive: FakeDrive
) -> None:
    """Someone on the line answers a session request with an unMACed LOCKED_OUT."""

    def forge(number: int, frame: bytes) -> list[bytes]:
        return [drive.error(_split(frame)[1], codes.LOCKED_OUT, "locked out")]

    drive.reply_filter = forge
    with pytest.raises(E.SessionLost) as info:
        owned.call(messages.SPACE, {}, messages.SPACE_R)
    assert not isinstance(info.value, E.LockedOut)
    assert "reset" not in str(info.value).lower() and "erase" not in str(info.value).lower()


def test_factory_reset(owned: DriveClient, drive: FakeDrive) -> None:
    owned.put("gone.bin", b"x")
    with pytest.raises(E.PresenceRequired):
        owned.factory_reset()  # the owner's session cannot erase
    assert "gone.bin" in drive.objects
    owned.authenticate(Role.CUSTODIAN, CUSTODIAN)
    owned.factory_reset()
    assert owned.session_role is None and drive.blank and not drive.objects
    assert owned.hello().blank
    with pytest.raises(E.PresenceRequired):
        owned.factory_reset()


def test_session_left_open_by_another_client(link: FakeLink, drive: FakeDrive) -> None:
    with DriveClient(link, timeout=1.0) as first:
        first.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        first.authenticate(Role.OWNER, OWNER)
        first._session = None  # it goes away without ending the session
    assert drive.session is not None
    with DriveClient(link, timeout=1.0) as second:
        with pytest.raises(E.NotAuthenticated):
            second.list()
    assert drive.session is None


def test_close_ends_the_session(link: FakeLink, drive: FakeDrive) -> None:
    with DriveClient(link, timeout=1.0) as c:
        c.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        c.authenticate(Role.OWNER, OWNER)
    assert drive.session is None and not link.is_open
    assert drive.requests[-1][0] == messages.SESSION_END


# -- typed errors ----------------------------------------------------------------------------


def test_typed_errors_from_error_replies(owned: DriveClient, drive: FakeDrive) -> None:
    with pytest.raises(E.WrongState):
        owned.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
    with pytest.raises(E.ObjectNotFound) as nf:
        owned.stat("missing")
    assert nf.value.code == codes.NOT_FOUND and nf.value.text == "no such object"
    assert nf.value.exit_code == 5
    with pytest.raises(E.BadName):
        owned.call(messages.STAT, {1: "../etc"}, messages.STAT_R)
    with pytest.raises(E.BadName):
        owned.stat("../etc")  # checked before sending
    with pytest.raises(E.DriveFull) as full:
        owned.put("huge.bin", bytes(drive.capacity + 1))
    assert "nothing was written" in str(full.value).lower() and "huge.bin" not in drive.tmp
    with pytest.raises(E.BadRequest):
        owned.call(messages.STAT, {1: 5}, messages.STAT_R)
    with pytest.raises(E.UnsupportedRequest):
        owned.call(0x7E, {}, messages.OK)


def test_bad_offset_and_digest_mismatch_carry_details(owned: DriveClient) -> None:
    digest = hashlib.sha256(b"hello").digest()
    assert owned.call(messages.PUT_OPEN, {1: "d", 2: 5, 3: digest}, messages.PUT_READY)[1] == 0
    with pytest.raises(E.BadOffset) as bo:
        owned.call(messages.PUT_DATA, {1: 3, 2: b"lo"}, messages.PUT_ACK)
    assert bo.value.expected == 0 and "byte 0" in str(bo.value)
    owned.call(messages.PUT_DATA, {1: 0, 2: b"jello"}, messages.PUT_ACK)
    with pytest.raises(E.DigestMismatch) as dm:
        owned.call(messages.PUT_COMMIT, {1: "d"}, messages.PUT_DONE)
    assert dm.value.exit_code == 6 and dm.value.name == "DIGEST_MISMATCH"


def test_get_checks_the_digest(owned: DriveClient, drive: FakeDrive) -> None:
    owned.put("c.bin", blob(9000))
    data, digest = drive.objects["c.bin"]
    drive.objects["c.bin"] = (data[:100] + b"X" + data[101:], digest)
    with pytest.raises(E.DigestMismatch) as info:
        owned.get("c.bin")
    assert "verify" in str(info.value)
    assert owned.verify("c.bin").intact is False


def test_unexpected_reply_is_a_protocol_error(owned: DriveClient) -> None:
    with pytest.raises(E.ProtocolError) as info:
        owned.call(messages.SPACE, {}, messages.STAT_R)
    assert "SPACE_R" in str(info.value) and info.value.exit_code == 7


def test_drive_error_factory_and_messages() -> None:
    for code, name in codes.NAMES.items():
        err = E.drive_error(code, "because", serial="SK-1", port="/dev/x")
        assert isinstance(err, E.DriveError) and isinstance(err, E.SealkeepError)
        assert (err.code, err.name, err.text) == (code, name, "because")
        text = str(err)
        assert text.startswith("drive SK-1 at /dev/x: ") and name in text and "because" in text
        assert type(err) is not E.DriveError
    unknown = E.drive_error(99, "new")
    assert type(unknown) is E.DriveError and unknown.name == "UNKNOWN_99"
    assert E.drive_error(codes.BACKOFF, "slow", retry_ms=1500).hint().startswith("Wait 1.5 s")
    bad = E.drive_error(codes.BAD_OFFSET, "off", expected=42, port="p")
    back = pickle.loads(pickle.dumps(bad))
    assert type(back) is E.BadOffset and back.expected == 42 and str(back) == str(bad)
    families = {
        E.LinkError("x").exit_code,
        E.AuthenticationFailed(12, "").exit_code,
        E.DriveFull(22, "").exit_code,
        E.DigestMismatch(24, "").exit_code,
        E.ProtocolError("x").exit_code,
        E.SealkeepError("x").exit_code,
    }
    assert families == {1, 3, 4, 5, 6, 7}


# -- over a real pseudo-terminal ----------------------------------------------------------


@pytest.fixture
def pty_drive() -> Iterator[tuple[str, FakeDrive]]:
    """A FakeDrive serving the master side of a pty; yields the slave's path."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    drive = FakeDrive(serial="SK-PTY")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                drive.inbox += os.read(master, 1 << 16)
            except OSError:
                return
            view = memoryview(drive.process())
            while view:
                view = view[os.write(master, view) :]

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield os.ttyname(slave), drive
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)


def test_client_over_a_pty(pty_drive: tuple[str, FakeDrive]) -> None:
    path, drive = pty_drive
    data = blob(1 << 20)
    with DriveClient(open_transport(path), timeout=5.0) as c:
        assert c.hello().serial == "SK-PTY"
        c.claim(OWNER, CUSTODIAN, SALT, KDF, DOMAIN)
        c.authenticate(Role.OWNER, OWNER)
        result = c.put("big.bin", data)
        assert result.size == len(data)
        assert c.get("big.bin") == data
    assert drive.objects["big.bin"][0] == data


@pytest.mark.parametrize("serial", ["SK-1\x1b[2J", "../../etc", "x", "SK-" + "9" * 40])
def test_a_drive_announcing_a_malformed_serial_is_refused(serial: str) -> None:
    with DriveClient(FakeLink(FakeDrive(serial=serial)), timeout=1) as client:
        with pytest.raises(E.ProtocolError, match="malformed serial") as caught:
            client.hello()
    assert "\x1b" not in str(caught.value)
