"""The drive client: one request/reply primitive and a method for every drive command.

Everything goes through :meth:`DriveClient.call` (or, for the pipelined transfers, the
same send and wait halves it is made of): build the frame (CBOR body, session MAC once a
session is open, CRC, COBS), send it, read frames until the reply with the same sequence
number arrives, check it (CRC, MAC and counter, schema) and return its body as a dict, or
raise the typed error it carries.

Rules the client keeps:

- A reply whose sequence number belongs to no outstanding request is stale (a duplicate, or
  the late answer to a request that timed out) and is skipped; if it carries a valid MAC
  for the current counter it is consumed so the counters stay in step.
- ``ERROR CRC``/``MALFORMED_FRAME``/``FRAME_TOO_LARGE`` (sequence 0, no MAC) mean the drive
  could not read the request: the same frame is sent again, up to three times.
- In a session every reply must carry a valid MAC. An unMACed ``ERROR SESSION_MAC`` or
  ``NOT_AUTHENTICATED`` means the drive has no session any more (:class:`SessionLost`);
  a reply whose MAC fails is rejected (:class:`ForgedReply`) and ends the session.
- Transfers (:meth:`DriveClient.put`, :meth:`DriveClient.get`) are pipelined and resume
  after a lost session: see :mod:`sealkeep.client_storage`, where the storage commands are.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .client_storage import StorageCommands
from .client_types import (
    Hello,
    ObjectInfo,
    OpenSession,
    PendingRequest,
    Progress,
    PutResult,
    Role,
    Space,
    VerifyResult,
)
from .errors import (
    AuthenticationFailed,
    BadOffset,
    DriveError,
    ForgedReply,
    ImpostorDrive,
    LinkError,
    NoPutOpen,
    OutdatedFirmware,
    ProtocolError,
    SealkeepError,
    SessionLost,
    drive_error,
    where,
)
from .pake import HostPake, PakeError
from .protocol import errors as codes
from .protocol import framing, messages, transcript
from .protocol.serials import serial_ok
from .transport import Transport

__all__ = [
    "DriveClient",
    "Hello",
    "ObjectInfo",
    "Progress",
    "PutResult",
    "Role",
    "Space",
    "VerifyResult",
]

T = TypeVar("T")
MAX_RESENDS = 3
# How long to wait for the reply to a request after the drive reported an unreadable frame.
LINE_ERROR_GRACE = 0.15
MAX_RECOVERIES = 3
# Extra seconds for AUTH_PROVE when failures are on record: the drive delays its answer.
BACKOFF_ALLOWANCE = 61.0
# The drive delays its answer to a proof once this many failures are on record.
BACKOFF_FROM = 3
# A drive given extra time (backing off, hashing) says nothing until it answers: a damaged
# frame, or this many maximum frames' worth of bytes that make no reply, mean it is
# babbling, not busy, and the request gets only the ordinary timeout from then on.
BABBLE_FRAMES = 4
MIN_MAX_FRAME = 128
# A board without the firmware answers a frame as its REPL does (the frame's 0x01 is
# Ctrl-A: raw REPL).
REPL_TAIL = 128
REPL_SIGNS = (b"raw REPL; CTRL-B to exit", b"\r\n>>> ", b"MicroPython ")
_LINE_CODES = frozenset({codes.MALFORMED_FRAME, codes.CRC, codes.FRAME_TOO_LARGE})


class DriveClient(StorageCommands):
    """Talks to one drive over a transport.

    ``timeout`` is how long to wait for each reply. ``serial_hint`` names the drive in
    messages until it has said who it is. Use it as a context manager (connects and, on
    exit, ends the session and closes the transport) or call :meth:`connect` and
    :meth:`close`.
    """

    def __init__(
        self,
        transport: Transport,
        timeout: float = 5.0,
        serial_hint: str | None = None,
        *,
        max_recoveries: int = MAX_RECOVERIES,
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self.serial_hint = serial_hint
        self.max_recoveries = max_recoveries
        self.bytes_sent = 0
        self.bytes_received = 0
        self.info: Hello | None = None
        self._max_frame = framing.MAX_FRAME
        self._reader = framing.FrameReader(self._max_frame)
        self._writer = framing.FrameWriter(self._max_frame)
        self._rx: bytes = b""
        self._rx_pos = 0
        self._damaged = 0
        self._tail = b""  # the last bytes heard: what a port that is no drive says
        self._seq = secrets.randbelow(0xFFFF) + 1
        self._session: OpenSession | None = None
        self._auth: tuple[int, bytes, bytes | None] | None = None
        self._failed_since_hello = [0, 0]  # our refused proofs per role, since the last HELLO

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> DriveClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DriveClient({where(self.serial, self.port)})"

    def connect(self) -> None:
        self.transport.connect()

    def forget_session(self) -> None:
        """The drive restarted (it was asked to): its session ended with it, so closing
        does not wait for it to end one."""
        self._session = None
        self._auth = None

    def close(self) -> None:
        """End the session (best effort, briefly) and close the transport."""
        if self._session is not None:
            try:
                self.call(messages.SESSION_END, {}, messages.OK, timeout=min(self.timeout, 1.0))
            except SealkeepError:
                pass
        self._session = None
        self._auth = None
        self.transport.close()

    # -- what the client knows -----------------------------------------------------------

    @property
    def port(self) -> str:
        return self.transport.url

    @property
    def serial(self) -> str | None:
        """The drive's serial once it answered HELLO, else the hint."""
        return self.info.serial if self.info is not None else self.serial_hint

    @property
    def max_frame(self) -> int:
        """Largest frame the drive takes (its HELLO), the protocol default before that."""
        return self._max_frame

    @property
    def session_role(self) -> int | None:
        """The role of the open session, None without one."""
        return self._session.role if self._session is not None else None

    def _where(self) -> str:
        return where(self.serial, self.port)

    def _error(self, code: int, text: str, **extra: Any) -> DriveError:
        return drive_error(code, text, serial=self.serial, port=self.port, **extra)

    def _protocol(self, what: str) -> ProtocolError:
        return ProtocolError(
            f"{self._where()}: {what}. To fix: check that this is a sealkeep drive with "
            "matching firmware; update the firmware or sealkeep if they differ.",
            port=self.port,
            serial=self.serial,
        )

    def _forged(self, what: str) -> ForgedReply:
        return ForgedReply(
            f"{self._where()}: {what}; the secure session is over and the reply was not "
            "used. Something on the link altered, replayed or injected a frame: check the "
            "connection, then authenticate again.",
            port=self.port,
            serial=self.serial,
        )

    # -- frames out ----------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq + 1 if seq < 0xFFFF else 1
        return seq

    def _prepare(
        self, msg_id: int, body: dict[int, Any], expect: int, timeout: float | None
    ) -> tuple[PendingRequest, bytes]:
        """Build the frame for a request (tagging it in the session) without sending it."""
        payload = cbor2.dumps(body, canonical=True)
        # HELLO never touches a session; AUTH_BEGIN ends it.
        session = None if msg_id in (messages.HELLO, messages.AUTH_BEGIN) else self._session
        size = framing.HEADER_LEN + len(payload) + framing.CRC_LEN
        if session is not None:
            size += framing.MAC_LEN
        if size > self._max_frame:
            raise SealkeepError(
                f"{self._where()}: a {messages.NAMES.get(msg_id, msg_id)} request of "
                f"{size} bytes exceeds the drive's frame size of {self._max_frame} bytes. "
                "To fix: use shorter names or values."
            )
        seq = self._next_seq()
        writer = self._writer
        frame = writer.begin(msg_id, seq, framing.FLAG_MAC if session is not None else 0)
        frame += payload
        mac = session.h2d.tag(frame) if session is not None else None
        wire = bytes(writer.finish(frame, mac))
        pending = PendingRequest(
            seq, msg_id, expect, self.timeout if timeout is None else timeout, session
        )
        return pending, wire

    def _transmit(self, wire: bytes) -> None:
        self.transport.send(wire)
        self.bytes_sent += len(wire)

    def _send(
        self, msg_id: int, body: dict[int, Any], expect: int, timeout: float | None = None
    ) -> tuple[PendingRequest, bytes]:
        pending, wire = self._prepare(msg_id, body, expect, timeout)
        self._transmit(wire)
        pending.deadline = time.monotonic() + pending.timeout
        return pending, wire

    # -- frames in -----------------------------------------------------------------------

    def _next_frame(
        self, head: PendingRequest
    ) -> tuple[int, int, memoryview, memoryview | None, memoryview]:
        """The next intact frame, parsed; its views are valid until the next call."""
        while True:
            if self._rx_pos < len(self._rx):
                self._rx_pos, result = self._reader.push(self._rx, self._rx_pos)
                if result is None:
                    continue
                if isinstance(result, int):
                    self._damaged += 1
                    self._babbling(head)
                    continue
                try:
                    msg_id, _flags, seq, body, mac, signed = framing.parse_frame(result)
                except framing.FrameError as exc:
                    if exc.code == codes.UNSUPPORTED_VERSION:
                        raise self._protocol(
                            f"it speaks another protocol ({exc.text}); this sealkeep speaks "
                            f"version {framing.VERSION}"
                        ) from None
                    self._damaged += 1
                    self._babbling(head)
                    continue
                return msg_id, seq, body, mac, signed
            now = time.monotonic()
            if head.resend_due and now >= head.resend_due:
                head.resend_due = 0.0
                self._transmit(head.resend_wire)
                head.deadline = time.monotonic() + head.timeout
                continue
            remaining = head.deadline - now
            if remaining <= 0:
                raise self._timed_out(head)
            if head.resend_due:
                remaining = min(remaining, head.resend_due - now)
            data = self.transport.receive(remaining)
            if data:
                self.bytes_received += len(data)
                self._tail = (self._tail + data[-REPL_TAIL:])[-REPL_TAIL:]
                self._rx = data
                self._rx_pos = 0
                head.heard += len(data)
                if head.heard > BABBLE_FRAMES * self._max_frame:
                    self._babbling(head)

    def _babbling(self, head: PendingRequest) -> None:
        """The drive sends what makes no reply (damaged or oversized frames, a stream of
        bytes): it is not quietly busy, so a request given extra time gets the ordinary
        timeout from now."""
        if head.timeout > self.timeout:
            head.deadline = min(head.deadline, time.monotonic() + self.timeout)

    def _timed_out(self, head: PendingRequest) -> LinkError:
        name = messages.NAMES.get(head.msg_id, str(head.msg_id))
        if any(sign in self._tail for sign in REPL_SIGNS):
            return LinkError(
                f"{self._where()} answers as a MicroPython REPL, not as a sealkeep drive: a "
                "board without the firmware. To fix: install it with `sealkeep firmware "
                f"install --port {self.port} IMAGE`.",
                port=self.port,
                timed_out=True,
            )
        damaged = ""
        if self._damaged:
            damaged = f" ({self._damaged} damaged frames arrived meanwhile)"
            self._damaged = 0
        return LinkError(
            f"no reply from {self._where()} within {head.timeout:g} s to {name}{damaged}. "
            "To fix: check that the drive is connected and running (for emulated drives, "
            "that the emulator is up), then try again.",
            port=self.port,
            timed_out=True,
        )

    def _decode(self, body: memoryview, what: str) -> dict[int, Any]:
        try:
            value = cbor2.loads(body)
        except Exception as exc:  # cbor2 raises several types for bad input
            raise self._protocol(f"its {what} reply has a malformed CBOR body ({exc})") from None
        if not isinstance(value, dict):
            raise self._protocol(f"its {what} reply body is not a map")
        return value

    def _raise_error_reply(self, fields: dict[int, Any], session_gone: bool = False) -> None:
        """Raise the typed error of an ERROR reply body.

        ``session_gone``: the drive answered a session request without MAC, so it holds no
        session; SESSION_MAC and NOT_AUTHENTICATED then both mean the session was lost.
        """
        problem = messages.check(messages.REPLIES[messages.ERROR], fields)
        if problem is not None:
            raise self._protocol(f"its ERROR reply is malformed: {problem}")
        code: int = fields[1]
        text: str = fields[2]
        expected = fields.get(3)
        retry_ms = fields.get(4)
        if code == codes.SESSION_MAC:
            self._session = None
        if session_gone:
            # Inside a session only a MACed reply is the drive's word: an unMACed error is
            # a lost session or a forgery, whatever code it names.
            raise SessionLost(
                code,
                text,
                serial=self.serial,
                port=self.port,
                summary="the drive no longer has the secure session (its reply carried no MAC)",
            )
        raise self._error(code, text, expected=expected, retry_ms=retry_ms)

    def _drop_session(self, session: OpenSession | None) -> None:
        if session is not None and self._session is session:
            self._session = None

    def _await(self, pending: deque[PendingRequest], wires: dict[int, bytes]) -> dict[int, Any]:
        """Wait for the reply to pending[0], pop it and return its checked body.

        ``wires`` maps a sequence number to the frame to send again after a line error.
        """
        head = pending[0]
        while True:
            msg_id, seq, body, mac, signed = self._next_frame(head)
            if seq == head.seq:
                pending.popleft()
                wires.pop(head.seq, None)
                return self._accept(head, msg_id, body, mac, signed)
            if seq == 0 and msg_id == messages.ERROR and mac is None:
                self._line_error(pending, wires, body)
                continue
            if any(p.seq == seq for p in pending):
                # The reply to an earlier request in flight went missing on the line.
                self._drop_session(head.session)
                raise self._error(
                    codes.SESSION_MAC,
                    "a reply was lost on the link while several requests were in flight",
                    summary="the secure session cannot continue",
                )
            self._skip_stale(mac, signed)

    def _skip_stale(self, mac: memoryview | None, signed: memoryview) -> None:
        """A frame for no outstanding request: consume its MAC if it is the next one."""
        session = self._session
        if mac is not None and session is not None:
            if hmac.compare_digest(mac, session.d2h.peek(signed)):
                session.d2h.counter += 1

    def _line_error(
        self, pending: deque[PendingRequest], wires: dict[int, bytes], body: memoryview
    ) -> None:
        """An unMACed sequence-0 ERROR: the drive could not read a frame."""
        try:
            fields = cbor2.loads(body)
        except Exception:
            self._damaged += 1
            return
        if not isinstance(fields, dict) or messages.check(messages.REPLIES[messages.ERROR], fields):
            self._damaged += 1
            return
        code: int = fields[1]
        text: str = fields[2]
        head = pending[0]
        if code not in _LINE_CODES:
            self._raise_error_reply(fields, session_gone=head.session is not None)
        if len(pending) > 1 and head.session is not None:
            # The frames behind it carry later MAC counters: the drive will refuse them.
            self._drop_session(head.session)
            raise self._error(
                codes.SESSION_MAC,
                f"a frame was damaged on the link while several were in flight ({text})",
                summary="the secure session cannot continue",
            )
        if head.resend_due:
            return  # a resend is already due
        wire = wires.get(head.seq)
        if wire is None or head.resends >= MAX_RESENDS:
            raise self._error(code, f"{text} (after {head.resends} resends)")
        # The damaged frame may have been line noise rather than this request: wait a moment
        # for the real reply before resending, or a resent AUTH_BEGIN would get a new nonce.
        head.resends += 1
        head.resend_wire = wire
        head.resend_due = time.monotonic() + LINE_ERROR_GRACE

    def _accept(
        self,
        head: PendingRequest,
        msg_id: int,
        body: memoryview,
        mac: memoryview | None,
        signed: memoryview,
    ) -> dict[int, Any]:
        name = messages.NAMES.get(head.msg_id, str(head.msg_id))
        session = head.session
        if session is not None:
            if mac is None:
                if msg_id == messages.ERROR:
                    # The drive answers without MAC only when it holds no session (any more);
                    # anyone on the line can send one too, so it means no more than that.
                    self._drop_session(session)
                    self._raise_error_reply(self._decode(body, "ERROR"), session_gone=True)
                self._drop_session(session)
                raise self._forged(f"its reply to {name} carries no session MAC")
            if not hmac.compare_digest(mac, session.d2h.peek(signed)):
                self._drop_session(session)
                raise self._forged(f"its reply to {name} failed the session MAC check")
            session.d2h.counter += 1
        elif mac is not None:
            raise self._protocol(f"it sent a MAC on its reply to {name} outside a session")
        fields = self._decode(body, messages.NAMES.get(msg_id, "unknown"))
        if msg_id == messages.ERROR:
            self._raise_error_reply(fields)
        if msg_id != head.expect:
            got = messages.NAMES.get(msg_id, f"message 0x{msg_id:02x}")
            want = messages.NAMES.get(head.expect, str(head.expect))
            raise self._protocol(f"it answered {name} with {got} instead of {want}")
        problem = messages.check(messages.REPLIES[head.expect], fields)
        if problem is not None:
            raise self._protocol(f"its {messages.NAMES[head.expect]} reply is malformed: {problem}")
        return fields

    # -- the primitive -------------------------------------------------------------------

    def call(
        self,
        msg_id: int,
        body: dict[int, Any],
        expect: int,
        *,
        timeout: float | None = None,
    ) -> dict[int, Any]:
        """Send one request and return the body of its reply, which must be ``expect``.

        Raises the typed :class:`DriveError` of an ERROR reply, :class:`ProtocolError` for
        any other unexpected reply, :class:`LinkError` when no reply comes in time.
        """
        pending, wire = self._send(msg_id, body, expect, timeout)
        try:
            return self._await(deque((pending,)), {pending.seq: wire})
        except SessionLost as exc:
            if pending.session is not None or exc.code != codes.SESSION_MAC:
                raise
        # A request sent without MAC met a session left open on the drive (by a client that
        # went away); the drive has ended that session without acting on it: ask again.
        pending, wire = self._send(msg_id, body, expect, timeout)
        return self._await(deque((pending,)), {pending.seq: wire})

    # -- recovery ------------------------------------------------------------------------

    def _can_recover(self, exc: SealkeepError) -> bool:
        if isinstance(exc, (BadOffset, NoPutOpen)):
            return True
        if isinstance(exc, (SessionLost, LinkError)):
            return self._auth is not None
        return False

    def _recover(self, exc: SealkeepError) -> None:
        """Bring back a session after exc: reopen the link if it broke, HELLO, authenticate."""
        if isinstance(exc, (BadOffset, NoPutOpen)) and self._session is not None:
            return  # the session is fine; the caller reopens the put
        if self._auth is None:
            raise exc
        if isinstance(exc, LinkError) and not exc.timed_out:
            self.transport.close()
            self.transport.connect()
            self._reader.reset()
            self._rx = b""
            self._rx_pos = 0
        self.hello()
        role, credential, identity = self._auth
        self.authenticate(role, credential, identity)

    def _retrying(self, action: Callable[[], T]) -> T:
        """Run an idempotent action, recovering the session a bounded number of times."""
        recoveries = 0
        while True:
            try:
                return action()
            except (SessionLost, LinkError) as exc:
                if recoveries >= self.max_recoveries or not self._can_recover(exc):
                    raise
                recoveries += 1
                self._recover(exc)

    # -- commands: drive and session -----------------------------------------------------

    def hello(self) -> Hello:
        """Ask the drive who it is (no session needed, none disturbed)."""
        r = self.call(messages.HELLO, {}, messages.HELLO_R)
        caps = r[7]
        kdf = r[9]
        info = Hello(
            protocol=r[1],
            firmware=r[2],
            serial=r[3],
            state=r[4],
            domain=bytes(r[5]) if r[5] is not None else None,
            max_frame=r[6],
            capabilities=tuple(c for c in caps if isinstance(c, str)),
            salt=bytes(r[8]) if r[8] is not None else None,
            kdf=dict(kdf) if isinstance(kdf, dict) else None,
            capacity=r[10],
            free=r[11],
            owner_delay_ms=r.get(15, 0),
            custodian_delay_ms=r.get(16, 0),
            identity=bytes(r[14]) if isinstance(r.get(14), bytes) else None,
            retention=r.get(17, 0),
        )
        self._failed_since_hello = [0, 0]
        if not serial_ok(info.serial):
            # Its serial lands in messages and file names: no terminal codes, no paths.
            raise self._protocol(f"it announces a malformed serial {ascii(info.serial)[:40]}")
        if info.max_frame < MIN_MAX_FRAME:
            raise self._protocol(f"it announces a maximum frame of {info.max_frame} bytes")
        self.info = info
        if info.max_frame != self._max_frame:
            self._max_frame = info.max_frame
            self._reader = framing.FrameReader(info.max_frame)
            self._writer = framing.FrameWriter(info.max_frame)
        return info

    def _hello_once(self) -> Hello:
        return self.info if self.info is not None else self.hello()

    def claim(
        self,
        owner_credential: bytes,
        custodian_credential: bytes,
        salt: bytes,
        kdf: dict[Any, Any],
        domain: bytes,
        identity: bytes | None = None,
        retention: int = 0,
    ) -> bytes:
        """Register a blank drive: its owner and custodian credentials, KDF salt and
        parameters, domain id and retention rule (0: none, only a custodian or the button
        deletes). Refused (WrongState) once claimed.

        The claim travels in an enrol session: the drive proves its identity key (the one
        ``identity`` pins, else the one its HELLO announced) and the credentials go masked
        with pads of that session, so a tap on the line learns nothing. Returns the
        drive's identity key, for the domain record to pin.
        """
        for label, cred in (("owner", owner_credential), ("custodian", custodian_credential)):
            if len(cred) != transcript.CREDENTIAL_LEN:
                raise ValueError(f"the {label} credential must be 32 bytes")
        if not self.hello().blank:  # asked before an enrol attempt ends a session we hold
            raise self._error(codes.WRONG_STATE, "drive already claimed")
        key, th, proven = self._establish(Role.ENROL, transcript.ENROL_PASSWORD, identity)
        body: dict[int, Any] = {
            1: transcript.mask(
                owner_credential, transcript.derive(key, transcript.CLAIM_OWNER, th)
            ),
            2: transcript.mask(
                custodian_credential, transcript.derive(key, transcript.CLAIM_CUSTODIAN, th)
            ),
            3: bytes(salt),
            4: kdf,
            5: bytes(domain),
        }
        if retention:
            body[6] = retention
        try:
            self.call(messages.CLAIM, body, messages.OK)
        finally:
            self._session = None  # the drive ends the enrol session with its answer
            self.info = None
        return proven

    def factory_reset(self) -> None:
        """Wipe the drive back to blank (needs a custodian session or the presence button)."""
        try:
            self.call(messages.FACTORY_RESET, {}, messages.OK)
        except LinkError:
            self._session = None  # it may or may not have happened: no session either way
            raise
        self._session = None
        self._auth = None
        self.info = None

    def authenticate(self, role: int, credential: bytes, identity: bytes | None = None) -> None:
        """Open a secure session as owner (0) or custodian (1).

        SPAKE2 with the credential as the password: a drive (or anyone on the line) learns
        nothing it could test guesses against offline, and the drive signs the exchange
        with its identity key: the pinned ``identity`` when given (a drive that cannot
        sign with it is a look-alike, and nothing more is sent to it), else the key its
        HELLO announced.
        """
        if role not in (Role.OWNER, Role.CUSTODIAN):
            raise ValueError("role must be 0 (owner) or 1 (custodian)")
        if len(credential) != transcript.CREDENTIAL_LEN:
            raise ValueError(f"the credential must be {transcript.CREDENTIAL_LEN} bytes")
        self._establish(int(role), bytes(credential), identity)
        self._auth = (int(role), bytes(credential), identity)

    def _establish(
        self, role: int, password: bytes, identity: bytes | None
    ) -> tuple[bytes, bytes, bytes]:
        """Run AUTH_BEGIN / AUTH_PROVE; returns (SPAKE2 key, transcript hash, identity)."""
        info = self._hello_once()
        if info.protocol < transcript.PROTOCOL or info.identity is None:
            raise OutdatedFirmware(
                codes.UNSUPPORTED_VERSION,
                f"protocol {info.protocol}",
                serial=self.serial,
                port=self.port,
                summary=(
                    f"the drive runs firmware {info.firmware} (protocol {info.protocol}); "
                    f"this host needs protocol {transcript.PROTOCOL}"
                ),
            )
        expected = identity if identity is not None else info.identity
        if expected != info.identity:
            raise self._impostor("it announces another identity key than the one pinned")
        self._session = None
        exchange = HostPake(password, info.serial.encode("utf-8"))
        x_msg = exchange.message
        # After failures the drive waits before it answers (at most a minute): wait for it,
        # but only then, so that a drive that stopped answering is not waited for so long.
        delay = info.owner_delay_ms if role == Role.OWNER else info.custodian_delay_ms
        slowed = role != Role.ENROL and (delay or self._failed_since_hello[role])
        wait = self.timeout + (BACKOFF_ALLOWANCE if slowed else 0.0)
        r = self.call(
            messages.AUTH_BEGIN, {1: role, 2: x_msg}, messages.AUTH_CHALLENGE, timeout=wait
        )
        y_msg, confirm, signature = bytes(r[1]), bytes(r[2]), bytes(r[3])
        if len(y_msg) != transcript.ELEMENT_LEN or len(signature) != transcript.SIGNATURE_LEN:
            raise self._protocol("its AUTH_CHALLENGE has fields of the wrong size")
        th = transcript.transcript_hash(role, info.serial, x_msg, y_msg, expected)
        try:
            Ed25519PublicKey.from_public_bytes(expected).verify(
                signature, transcript.identity_message(th)
            )
        except (InvalidSignature, ValueError):
            raise self._impostor("it cannot sign with the identity key it is known by") from None
        try:
            key = exchange.finish(y_msg)
        except PakeError:
            raise self._protocol("its SPAKE2 message is not a valid group element") from None
        if not hmac.compare_digest(confirm, transcript.derive(key, transcript.DRIVE_CONFIRM, th)):
            # The drive counted this attempt; the wrong party is us or the drive: which,
            # nothing unauthenticated can tell, so no advice rests on it.
            if role != Role.ENROL:
                self._failed_since_hello[role] += 1
            who = {Role.OWNER: "owner", Role.CUSTODIAN: "custodian"}.get(Role(role), "enrol")
            raise AuthenticationFailed(
                codes.AUTH_FAILED,
                "the session keys do not agree",
                serial=self.serial,
                port=self.port,
                summary=f"the drive did not accept the {who} credential",
            )
        self.call(
            messages.AUTH_PROVE,
            {1: transcript.derive(key, transcript.HOST_CONFIRM, th)},
            messages.AUTH_OK,
        )
        self._session = OpenSession(
            role,
            transcript.derive(key, transcript.SESSION_H2D, th),
            transcript.derive(key, transcript.SESSION_D2H, th),
        )
        return key, th, expected

    def _impostor(self, what: str) -> ImpostorDrive:
        return ImpostorDrive(
            codes.AUTH_FAILED,
            what,
            serial=self.serial,
            port=self.port,
        )

    def end_session(self) -> None:
        """Close the secure session on the drive and forget the credential."""
        try:
            if self._session is not None:
                self.call(messages.SESSION_END, {}, messages.OK)
        finally:
            self._session = None
            self._auth = None
