"""Scenario 4, a hostile host on the drive's line.

The attacker sees every frame of a legitimate session (it is on the cable) and sends its
own. Each trial runs some of these attacks against one drive holding canary objects (and a
second drive, kept blank, for claims):

- ``replay``: a DELETE the custodian sent (only a custodian session may erase) is sent again,
  in the same session or in a later one, after the owner put the canary back;
- ``reorder``: two MACed custodian DELETEs of one session arrive in the wrong order;
- ``alter``: a MACed STAT with its message id, name, sequence or MAC changed (the CRC
  recomputed, as anyone can);
- ``stolen``: the custodian's client goes away without ending its session and the attacker
  sends DELETEs without MAC, with a random MAC, or with keys of its own, and replays the
  recorded AUTH_PROVE against a new SPAKE2 exchange;
- ``guess``: many wrong owner or custodian credentials (sometimes split by a power cycle):
  each is refused, the drive's announced delay grows (the campaign's back-off base is one
  millisecond), and the drive never locks: the right credential then gets in;
- ``claim``: CLAIM of the owned drive with the attacker's credentials, then a login with them;
- ``nosession``: storage commands and a factory reset without a session, and the write
  commands in a custodian session;
- ``owner_erase``: an owner session (a compromised host holds the owner credential) tries
  DELETE, FACTORY_RESET and a PUT over an existing canary: all refused (PRESENCE_REQUIRED,
  EXISTS), the canaries intact;
- ``tap_claim``: a plain CLAIM of the blank drive is refused, then every byte of a real
  claim of it is recorded on the line and neither credential may appear in it (nor in any
  decoded frame); the new owner then logs in, and the custodian resets the drive to blank;
- ``forged_error``: inside an owner session the attacker answers for the drive with an
  unMACed ERROR LOCKED_OUT; the client must raise SessionLost and advise no reset or erase.

A refusal with the expected error code is ``ok``; another code, a damaged reply or no reply
is ``unclear``; an attack the drive carried out (a canary deleted or changed, a login or a
claim accepted, the right credential refused after guesses, a credential seen on the line,
a forged error believed) is ``lost``.
"""

from __future__ import annotations

import binascii
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import cbor2
from sealkeep.client import DriveClient, Role
from sealkeep.emulator import Emulator
from sealkeep.errors import SealkeepError, SessionLost
from sealkeep.pake import HostPake
from sealkeep.protocol import errors as codes
from sealkeep.protocol import framing, messages, transcript
from sealkeep.transport import open_transport

from .common import (
    Creds,
    Ctx,
    RawLink,
    Tally,
    claim,
    close_quietly,
    new_creds,
    owner_session,
)

GUESSES = 12
BACKOFF_MS = 1  # the drives' back-off base: delays show after a few guesses, stay short
REPLY_WAIT = 3.0
CANARIES = ("keep-a", "keep-b", "temp")
ATTACKS = (
    "replay",
    "reorder",
    "alter",
    "stolen",
    "guess",
    "claim",
    "nosession",
    "owner_erase",
    "tap_claim",
    "forged_error",
)
WEIGHTS = (3, 2, 3, 2, 1, 1, 2, 2, 1, 2)
BLANK = 1  # the drive kept blank for claims


class NoReply(Exception):
    """The drive did not answer in time, or answered with a damaged frame."""


@dataclass
class Reply:
    msg_id: int
    fields: dict[int, Any]
    maced: bool

    @property
    def code(self) -> int | None:
        return self.fields.get(1) if self.msg_id == messages.ERROR else None

    def describe(self) -> str:
        if self.msg_id == messages.ERROR:
            return f"ERROR {codes.NAMES.get(self.fields.get(1, -1), self.fields.get(1))}"
        return messages.NAMES.get(self.msg_id, hex(self.msg_id))


class Keys:
    """One direction pair of session MACs."""

    def __init__(self, key: bytes, th: bytes) -> None:
        self.h2d = transcript.SessionMac(transcript.derive(key, transcript.SESSION_H2D, th))
        self.d2h = transcript.SessionMac(transcript.derive(key, transcript.SESSION_D2H, th))


def wire_of(frame: bytes | bytearray) -> bytes:
    """A decoded frame (header, body, MAC) with a fresh CRC, COBS-encoded and delimited."""
    crc = (binascii.crc32(frame) & 0xFFFFFFFF).to_bytes(4, "little")
    return framing.cobs_encode(bytes(frame) + crc) + b"\x00"


class Wire:
    """The raw line to a drive, speaking the protocol by hand: what the owner's frames
    look like (to record them) and what an attacker can send."""

    def __init__(self, port: str, serial: str) -> None:
        self.link = RawLink(port)
        self.serial = serial
        self.seq = secrets.randbelow(0xFFF0) + 1
        self.keys: Keys | None = None
        self.hello: dict[int, Any] = {}  # the last HELLO_R fields

    def close(self) -> None:
        self.link.close()

    def frame(self, msg_id: int, body: dict[int, Any], keys: Keys | None = None) -> bytes:
        """The decoded frame (header | body | MAC), without CRC; MACed with keys."""
        self.seq = self.seq % 0xFFFF + 1
        raw = cbor2.dumps(body)
        flags = framing.FLAG_MAC if keys is not None else 0
        header = bytes([framing.VERSION, msg_id, flags, self.seq >> 8, self.seq & 0xFF])
        mac = keys.h2d.tag(header + raw) if keys is not None else b""
        return header + raw + mac

    def send(self, frame: bytes) -> int:
        """Send a decoded frame; returns its sequence number."""
        self.link.send(wire_of(frame))
        return (frame[3] << 8) | frame[4]

    def reply(self, seq: int) -> Reply:
        """The reply to seq (or a sequence-0 line error), MAC checked when it has one."""
        while True:
            got = self.link.frames(REPLY_WAIT, want=1)
            if not got:
                raise NoReply("no reply")
            try:
                msg_id, _f, rseq, body, mac, signed = framing.parse_frame(memoryview(got[0]))
                fields = cbor2.loads(bytes(body))
            except Exception as exc:
                raise NoReply(f"a damaged reply ({exc})") from None
            if rseq not in (seq, 0):
                continue  # a late answer to something earlier
            if mac is not None:
                keys = self.keys
                if keys is None or bytes(mac) != keys.d2h.tag(bytes(signed)):
                    raise NoReply("a reply whose MAC does not verify")
            return Reply(msg_id, fields if isinstance(fields, dict) else {}, mac is not None)

    def call(self, msg_id: int, body: dict[int, Any], maced: bool = True) -> Reply:
        frame = self.frame(msg_id, body, self.keys if maced else None)
        return self.reply(self.send(frame))

    def login(self, role: int, credential: bytes) -> tuple[bytes, Reply]:
        """A full SPAKE2 handshake, its confirmation sent whatever the drive's says (so a
        wrong credential gets the drive's own refusal); returns the AUTH_PROVE frame sent
        and the final reply."""
        self.keys = None
        self.hello = self.call(messages.HELLO, {}, maced=False).fields
        identity = bytes(self.hello.get(14) or b"")
        exchange = HostPake(credential, self.serial.encode())
        r = self.call(messages.AUTH_BEGIN, {1: role, 2: exchange.message}, maced=False)
        if r.msg_id != messages.AUTH_CHALLENGE:
            return b"", r
        y_msg = bytes(r.fields[1])
        th = transcript.transcript_hash(role, self.serial, exchange.message, y_msg, identity)
        key = exchange.finish(y_msg)
        confirm = transcript.derive(key, transcript.HOST_CONFIRM, th)
        frame = self.frame(messages.AUTH_PROVE, {1: confirm})
        r = self.reply(self.send(frame))
        if r.msg_id == messages.AUTH_OK:
            self.keys = Keys(key, th)
        return frame, r

    def put(self, name: str, data: bytes) -> None:
        digest = hashlib.sha256(data).digest()
        for msg_id, body, want in (
            (messages.PUT_OPEN, {1: name, 2: len(data), 3: digest}, messages.PUT_READY),
            (messages.PUT_DATA, {1: 0, 2: data}, messages.PUT_ACK),
            (messages.PUT_COMMIT, {1: name}, messages.PUT_DONE),
        ):
            r = self.call(msg_id, body)
            if r.msg_id != want:
                raise NoReply(f"the owner's own {messages.NAMES[msg_id]} got {r.describe()}")


class Judge:
    """Classifies each attack's answers into the tally."""

    def __init__(self, tally: Tally, what: str) -> None:
        self.tally = tally
        self.what = what

    def refused(self, label: str, attempt: Callable[[], Reply], allowed: set[int]) -> Reply | None:
        """attempt() -> Reply must be an ERROR with a code in allowed."""
        self.tally.faults += 1
        try:
            r = attempt()
        except NoReply as exc:
            self.tally.unclear_failure(f"{self.what}: {label}: {exc}")
            return None
        if r.msg_id != messages.ERROR:
            self.tally.loss(f"{self.what}: {label} was accepted ({r.describe()})")
        elif r.code not in allowed:
            names = "/".join(codes.NAMES[c] for c in sorted(allowed))
            self.tally.unclear_failure(f"{self.what}: {label}: {r.describe()} instead of {names}")
        else:
            self.tally.ok += 1
        return r


def run(ctx: Ctx, trials: int) -> Tally:
    tally = Tally("hostile_host")
    creds = new_creds(ctx.rng)
    emulator = ctx.emulator("hostile-host", 2, backoff_ms=BACKOFF_MS)
    try:
        model = _setup(ctx, emulator, creds)
        for t in range(trials):
            kinds = ctx.rng.choices(ATTACKS, WEIGHTS, k=2)
            if t < len(ATTACKS):  # the first trials try every kind once
                kinds[0] = ATTACKS[t]
            with tally.trial(f"hostile_host trial {t} ({', '.join(kinds)})"):
                for kind in kinds:
                    _ATTACK[kind](ctx, tally, emulator, creds, model)
                    model = _check(ctx, tally, emulator, creds, model, kind)
    finally:
        emulator.stop()
    return tally


def _setup(ctx: Ctx, emulator: Emulator, creds: Creds) -> dict[str, bytes]:
    client = owner_session(emulator, 0, creds)
    try:
        model = {name: ctx.rng.randbytes(ctx.rng.randrange(1, 2000)) for name in CANARIES}
        for name, data in model.items():
            client.put(name, data)
        client.end_session()
    finally:
        close_quietly(client)
    return model


def _check(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes], kind: str
) -> dict[str, bytes]:
    """Every canary still there and unchanged (put back if not); the owner can log in."""
    client = owner_session(emulator, 0, creds)
    try:
        held = {o.name for o in client.list()}
        for name, data in model.items():
            got = client.get(name) if name in held else None
            if got != data:
                what = "deleted" if got is None else "altered"
                tally.loss(f"after {kind}: canary {name} was {what}")
                client.put(name, data)
        client.end_session()
    finally:
        close_quietly(client)
    return model


def _wire(emulator: Emulator, i: int = 0) -> Wire:
    drive = emulator.drives[i]
    return Wire(drive.port, drive.serial)


def _owner(emulator: Emulator, creds: Creds) -> Wire:
    """The legitimate session whose DELETEs the attacker records: the custodian's, since
    erasing is theirs alone (an owner's DELETE is refused outright)."""
    wire = _wire(emulator)
    _, r = wire.login(1, creds.custodian)
    if r.msg_id != messages.AUTH_OK:
        wire.close()
        raise NoReply(f"the custodian's own login got {r.describe()}")
    return wire


# Refusals of a frame whose session is gone (a DELETE outside any session is refused for
# want of the custodian or the button before anything else).
MAC_GONE = {codes.SESSION_MAC, codes.NOT_AUTHENTICATED, codes.PRESENCE_REQUIRED}


def _replay(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    judge = Judge(tally, "replay")
    wire = _owner(emulator, creds)
    try:
        recorded = wire.frame(messages.DELETE, {1: "temp"}, wire.keys)
        r = wire.reply(wire.send(recorded))
        if r.msg_id != messages.OK:
            raise NoReply(f"the custodian's own DELETE got {r.describe()}")
        later = ctx.rng.random() < 0.5
        if later:  # the custodian ends the session; the owner puts the canary back
            wire.call(messages.SESSION_END, {})
            _restore(wire, creds, "temp", model["temp"])
        where = "a later session" if later else "the same session"
        judge.refused(
            f"DELETE replayed in {where}", lambda: wire.reply(wire.send(recorded)), MAC_GONE
        )
        # The session is over: even the rightful holder's next honest frame is refused.
        judge.refused(
            "the next honest frame after the replay",
            lambda: wire.call(messages.STAT, {1: "keep-a"}),
            MAC_GONE,
        )
        if not later:
            _restore(wire, creds, "temp", model["temp"])
    finally:
        wire.close()


def _restore(wire: Wire, creds: Creds, name: str, data: bytes) -> None:
    """Put a canary the custodian deleted back, in an owner session on the same line."""
    _, r = wire.login(0, creds.owner)
    if r.msg_id != messages.AUTH_OK:
        raise NoReply(f"the owner's own login got {r.describe()}")
    wire.put(name, data)


def _reorder(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    judge = Judge(tally, "reorder")
    wire = _owner(emulator, creds)
    try:
        first = wire.frame(messages.DELETE, {1: "keep-a"}, wire.keys)
        second = wire.frame(messages.DELETE, {1: "keep-b"}, wire.keys)
        judge.refused("the second DELETE first", lambda: wire.reply(wire.send(second)), MAC_GONE)
        judge.refused("then the first DELETE", lambda: wire.reply(wire.send(first)), MAC_GONE)
    finally:
        wire.close()


def _alter(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    judge = Judge(tally, "alter")
    wire = _owner(emulator, creds)
    try:
        frame = bytearray(wire.frame(messages.STAT, {1: "keep-a"}, wire.keys))
        how = ctx.rng.choice(["message id", "name", "sequence", "MAC", "MAC flag"])
        if how == "message id":
            frame[1] = messages.DELETE
        elif how == "name":
            at = bytes(frame).index(b"keep-a") + 5
            frame[at] = ord("b")
        elif how == "sequence":
            frame[4] ^= 0x01
        elif how == "MAC":
            frame[-1 - ctx.rng.randrange(16)] ^= 1 << ctx.rng.randrange(8)
        else:  # drop the MAC and its flag: a plain frame in a session
            frame[2] = 0
            del frame[-16:]
            frame[1] = messages.DELETE
        altered = bytes(frame)
        judge.refused(
            f"STAT with its {how} altered", lambda: wire.reply(wire.send(altered)), MAC_GONE
        )
    finally:
        wire.close()


def _stolen(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    judge = Judge(tally, "stolen session")
    owner = _wire(emulator)
    proof, r = owner.login(1, creds.custodian)
    owner.close()  # gone without SESSION_END: the drive still holds the session
    if r.msg_id != messages.AUTH_OK:
        raise NoReply(f"the custodian's own login got {r.describe()}")
    attacker = _wire(emulator)
    try:
        how = ctx.rng.choice(["no MAC", "random MAC", "guessed key"])
        if how == "no MAC":
            frame = attacker.frame(messages.DELETE, {1: "keep-a"})
        elif how == "random MAC":
            plain = attacker.frame(messages.DELETE, {1: "keep-a"})
            frame = plain[:2] + bytes([framing.FLAG_MAC]) + plain[3:] + secrets.token_bytes(16)
        else:
            fake = Keys(secrets.token_bytes(32), secrets.token_bytes(40))
            frame = attacker.frame(messages.DELETE, {1: "keep-a"}, fake)
        judge.refused(f"DELETE with {how}", lambda: attacker.reply(attacker.send(frame)), MAC_GONE)
        # The recorded confirmation against a fresh exchange.
        fresh = HostPake(secrets.token_bytes(32), attacker.serial.encode()).message
        attacker.call(messages.AUTH_BEGIN, {1: 1, 2: fresh}, maced=False)
        judge.refused(
            "the owner's AUTH_PROVE replayed",
            lambda: attacker.reply(attacker.send(proof)),
            {codes.AUTH_FAILED},
        )
        judge.refused(
            "DELETE after the failed proof",
            lambda: attacker.call(messages.DELETE, {1: "keep-a"}, maced=False),
            {codes.NOT_AUTHENTICATED, codes.PRESENCE_REQUIRED},
        )
    finally:
        attacker.close()


def _delay(emulator: Emulator, role: int) -> int:
    """The delay (ms) the drive announces in HELLO for role's next attempt."""
    wire = _wire(emulator)
    try:
        return int(wire.call(messages.HELLO, {}, maced=False).fields.get(15 + role) or 0)
    finally:
        wire.close()


def _guess(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    """Wrong credentials, many: each refused, the delay grows, and the drive never locks the
    rightful holder out (a lockout would let anyone on the line make a recovery impossible)."""
    role = ctx.rng.choice([0, 1])
    right = creds.owner if role == 0 else creds.custodian
    who = "owner" if role == 0 else "custodian"
    split = ctx.rng.choice([None, ctx.rng.randrange(1, GUESSES)])
    before = _delay(emulator, role)
    for attempt in range(GUESSES):
        if split is not None and attempt == split:
            emulator.kill(0, restart=True)  # the count is in flash
        wire = _wire(emulator)
        try:
            _, r = wire.login(role, secrets.token_bytes(32))
        except NoReply as exc:
            tally.unclear_failure(f"guess {attempt + 1}: {exc}")
            return
        finally:
            wire.close()
        tally.faults += 1
        if r.code == codes.AUTH_FAILED:
            tally.ok += 1
            continue
        if r.msg_id == messages.AUTH_OK:
            tally.loss(f"a random {who} credential was accepted")
        else:
            tally.unclear_failure(f"guess {attempt + 1}: {r.describe()}")
        return
    after = _delay(emulator, role)
    tally.faults += 1
    if after > before:
        tally.ok += 1
    else:
        tally.unclear_failure(
            f"after {GUESSES} wrong {who} guesses the delay is {after} ms (was {before} ms)"
        )
    wire = _wire(emulator)
    try:
        tally.faults += 1
        r = wire.login(role, right)[1]
        if r.msg_id == messages.AUTH_OK:
            tally.ok += 1
        else:
            tally.loss(
                f"after {GUESSES} wrong guesses the right {who} credential got {r.describe()}"
            )
    finally:
        wire.close()


def _claim(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    judge = Judge(tally, "claiming an owned drive")
    thief = new_creds(ctx.rng)
    wire = _wire(emulator)
    try:
        body = {1: thief.owner, 2: thief.custodian, 3: thief.salt, 4: {1: 8}, 5: thief.domain}
        judge.refused(  # a claim travels only in an enrol session, which a claimed drive refuses
            "CLAIM",
            lambda: wire.call(messages.CLAIM, body, maced=False),
            {codes.NOT_AUTHENTICATED, codes.WRONG_STATE, codes.SESSION_MAC},
        )
        judge.refused(
            "login with the claimer's credential",
            lambda: wire.login(0, thief.owner)[1],
            {codes.AUTH_FAILED},
        )
        hello = wire.call(messages.HELLO, {}, maced=False)
        if hello.fields.get(5) != creds.domain:
            tally.loss("the drive's domain changed after a refused claim")
    finally:
        wire.close()


STORAGE: list[tuple[int, dict[int, Any]]] = [
    (messages.LIST, {}),
    (messages.STAT, {1: "keep-a"}),
    (messages.READ, {1: "keep-a", 2: 0, 3: 64}),
    (messages.VERIFY, {1: "keep-a"}),
    (messages.SPACE, {}),
    (messages.PUT_OPEN, {1: "keep-a", 2: 3, 3: b"\x00" * 32}),
    (messages.PUT_DATA, {1: 0, 2: b"abc"}),
    (messages.PUT_COMMIT, {1: "keep-a"}),
    (messages.DELETE, {1: "keep-a"}),
]
WRITES = STORAGE[5:8]  # PUT_OPEN, PUT_DATA, PUT_COMMIT: the owner's only


def _nosession(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    judge = Judge(tally, "without a session")
    wire = _wire(emulator)
    try:
        wire.call(messages.SESSION_END, {}, maced=False)  # whatever a previous client left
        for msg_id, body in ctx.rng.sample(STORAGE, 4):
            name = messages.NAMES[msg_id]
            allowed = {codes.NOT_AUTHENTICATED}
            if msg_id == messages.DELETE:  # the button would allow it: asked for first
                allowed.add(codes.PRESENCE_REQUIRED)
            judge.refused(name, partial(wire.call, msg_id, body, False), allowed)
        judge.refused(
            "FACTORY_RESET",
            lambda: wire.call(messages.FACTORY_RESET, {}, maced=False),
            {codes.PRESENCE_REQUIRED},
        )
        _, r = wire.login(1, creds.custodian)
        if r.msg_id != messages.AUTH_OK:
            raise NoReply(f"the custodian's own login got {r.describe()}")
        judge = Judge(tally, "in a custodian session")
        for msg_id, body in ctx.rng.sample(WRITES, 2):
            judge.refused(
                messages.NAMES[msg_id],
                partial(wire.call, msg_id, body),
                {codes.PERMISSION},
            )
    finally:
        wire.close()


def _owner_erase(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    """The owner (a compromised host holds its credential) adds, never erases nor replaces."""
    judge = Judge(tally, "in an owner session")
    wire = _wire(emulator)
    try:
        _, r = wire.login(0, creds.owner)
        if r.msg_id != messages.AUTH_OK:
            raise NoReply(f"the owner's own login got {r.describe()}")
        name = ctx.rng.choice(CANARIES)
        attempts: list[tuple[str, int, dict[int, Any], int]] = [
            ("DELETE", messages.DELETE, {1: name}, codes.PRESENCE_REQUIRED),
            ("FACTORY_RESET", messages.FACTORY_RESET, {}, codes.PRESENCE_REQUIRED),
        ]
        for data in (b"", b"overwritten", ctx.rng.randbytes(64)):
            body = {1: name, 2: len(data), 3: hashlib.sha256(data).digest()}
            attempts.append((f"PUT_OPEN over {name}", messages.PUT_OPEN, body, codes.EXISTS))
        ctx.rng.shuffle(attempts)
        for label, msg_id, body, code in attempts:
            judge.refused(label, partial(wire.call, msg_id, body), {code})
        # The session survives each refusal: the canary is still there to read.
        judge.refused(
            "PUT_COMMIT over a canary never opened",
            lambda: wire.call(messages.PUT_COMMIT, {1: name}),
            {codes.NO_PUT_OPEN, codes.EXISTS},
        )
    finally:
        wire.close()


class Tap:
    """A transport that records every byte each way (a tap on the cable) and, once armed,
    answers the client's next request itself with ``forged`` (the drive never sees it)."""

    def __init__(self, port: str) -> None:
        self.inner = open_transport(port)
        self.sent = bytearray()
        self.heard = bytearray()
        self.forge: Callable[[int], bytes] | None = None
        self.queued = b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def connect(self) -> None:
        self.inner.connect()

    def close(self) -> None:
        self.inner.close()

    def send(self, data: bytes) -> None:
        self.sent += data
        if self.forge is not None:
            raw = framing.cobs_decode(bytes(data).rstrip(b"\x00"))
            self.queued += self.forge((raw[3] << 8) | raw[4])
            self.forge = None
            return
        self.inner.send(data)

    def receive(self, timeout: float) -> bytes:
        if self.queued:
            data, self.queued = self.queued, b""
        else:
            data = self.inner.receive(timeout)
        self.heard += data
        return data

    def frames(self) -> list[bytes]:
        """Every frame each way, decoded (header, body, MAC, CRC)."""
        out = []
        for stream in (self.sent, self.heard):
            for chunk in bytes(stream).split(b"\x00"):
                if chunk:
                    try:
                        out.append(framing.cobs_decode(chunk))
                    except Exception:
                        continue
        return out


def _tap_claim(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    """A claim on a tapped line: the credentials never cross it in the clear."""
    judge = Judge(tally, "claiming the blank drive")
    mine = new_creds(ctx.rng)
    wire = _wire(emulator, BLANK)
    try:
        if wire.call(messages.HELLO, {}, maced=False).fields.get(4) != messages.STATE_BLANK:
            raise NoReply("the drive kept for claims is not blank")
        body = {1: mine.owner, 2: mine.custodian, 3: mine.salt, 4: {1: 8}, 5: mine.domain}
        judge.refused(
            "a plain CLAIM outside an enrol session",
            lambda: wire.call(messages.CLAIM, body, maced=False),
            {codes.NOT_AUTHENTICATED},
        )
        if wire.call(messages.HELLO, {}, maced=False).fields.get(4) != messages.STATE_BLANK:
            tally.loss("a plain CLAIM outside an enrol session claimed the drive")
            return
    finally:
        wire.close()
    drive = emulator.drives[BLANK]
    tap = Tap(drive.port)
    client = DriveClient(tap, timeout=2.0, serial_hint=drive.serial)
    try:
        client.connect()
        claim(client, mine)
        tally.faults += 1
        seen = bytes(tap.sent) + bytes(tap.heard)
        decoded = b"".join(tap.frames())
        leaked = [
            who
            for who, cred in (("owner", mine.owner), ("custodian", mine.custodian))
            if cred in seen or cred in decoded
        ]
        if leaked:
            tally.loss(f"the {' and '.join(leaked)} credential crossed the line in a claim")
        elif mine.salt not in decoded or mine.domain not in decoded:
            tally.unclear_failure("the tap did not record the claim (no salt or domain seen)")
        else:
            tally.ok += 1
        # The claim took: the owner gets in; the custodian puts the drive back to blank.
        client.authenticate(Role.OWNER, mine.owner)
        client.authenticate(Role.CUSTODIAN, mine.custodian)
        client.factory_reset()
    except SealkeepError as exc:
        raise NoReply(f"the claim on a tapped line failed: {exc}") from None
    finally:
        close_quietly(client)


FORGED_TEXT = "locked out"
BAD_ADVICE = ("reset", "erase", "wipe", "factory", "locked")


def _forged_error(
    ctx: Ctx, tally: Tally, emulator: Emulator, creds: Creds, model: dict[str, bytes]
) -> None:
    """An unMACed ERROR LOCKED_OUT answers for the drive inside an owner session."""
    drive = emulator.drives[0]
    tap = Tap(drive.port)
    client = DriveClient(tap, timeout=2.0, serial_hint=drive.serial, max_recoveries=0)
    code = codes.LOCKED_OUT

    def forge(seq: int) -> bytes:
        header = bytes([framing.VERSION, messages.ERROR, 0, seq >> 8, seq & 0xFF])
        return wire_of(header + cbor2.dumps({1: code, 2: FORGED_TEXT}))

    try:
        client.connect()
        client.authenticate(Role.OWNER, creds.owner)
        tap.forge = forge
        request = ctx.rng.choice(["stat", "list", "get", "space"])
        action: dict[str, Callable[[], Any]] = {
            "stat": lambda: client.stat("keep-a"),
            "list": client.list,
            "get": lambda: client.get("keep-b"),
            "space": client.space,
        }
        tally.faults += 1
        try:
            action[request]()
        except SessionLost as exc:
            told = f"{exc.describe()} {exc.hint()}".lower()
            bad = [word for word in BAD_ADVICE if word in told]
            if bad:
                tally.loss(f"a forged LOCKED_OUT to {request} made the client say: {told}")
            elif exc.code != code:
                tally.unclear_failure(f"the forged error never reached the client: {exc}")
            else:
                tally.ok += 1
        except SealkeepError as exc:
            told = f"{exc.describe()} {exc.hint()}".lower()
            if any(word in told for word in BAD_ADVICE):
                tally.loss(f"a forged LOCKED_OUT to {request} was believed: {exc}")
            else:
                tally.unclear_failure(
                    f"a forged LOCKED_OUT to {request}: {type(exc).__name__} instead of "
                    f"SessionLost: {exc}"
                )
        else:
            tally.loss(f"a forged LOCKED_OUT to {request} was not noticed")
    finally:
        close_quietly(client)


_ATTACK = {
    "replay": _replay,
    "reorder": _reorder,
    "alter": _alter,
    "stolen": _stolen,
    "guess": _guess,
    "claim": _claim,
    "nosession": _nosession,
    "owner_erase": _owner_erase,
    "tap_claim": _tap_claim,
    "forged_error": _forged_error,
}
