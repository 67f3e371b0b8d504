"""The link to the host: read frames, check the session, dispatch, answer.

Every request gets one reply frame. A frame damaged on the line gets an unMACed ERROR with
sequence 0 and advances no counter; a missing or wrong MAC in a session ends the session
with an unMACed ERROR SESSION_MAC; whatever a handler raises becomes an ERROR frame
(``WireError`` with its code, anything else INTERNAL).

Memory: besides a small receive chunk, the only buffers are the frame reader's. Once the
reader hands out a frame its COBS buffer is idle and the request is consumed before the
reply is built, so replies are assembled in the reader's frame buffer and COBS-encoded into
its COBS buffer (a reply is kept a byte under the maximum so its encoding and delimiter
fit). The protocol modules' host-side parts are dropped after import.
"""

import binascii
import gc
import sys
import time

import board

import fw
from protocol import framing

# The big buffers first, while the heap is in one piece: the frame reader's, and a chunk
# of received bytes.
MAX_FRAME = min(max(board.env("SEALKEEP_MAX_FRAME", framing.MAX_FRAME), 256), 65535)
READER = framing.FrameReader(MAX_FRAME)
RX = bytearray(512)  # a frame takes more reads; the heap needs the other 512 bytes
try:  # the host's side of framing
    del framing.FrameWriter, framing.build_frame, framing.cobs_encode, framing.cobs_decode
except AttributeError:
    pass

from fw import auth, claim, hello, storage  # noqa: E402  (each imports fw.ids first)
from fw.ids import (  # noqa: E402
    AUTH_BEGIN,
    AUTH_PROVE,
    BAD_BODY,
    CLAIM,
    DELETE,
    ERROR,
    FACTORY_RESET,
    FRAME_TOO_LARGE,
    HELLO,
    INTERNAL,
    LIST,
    MALFORMED_FRAME,
    NOT_AUTHENTICATED,
    PERMISSION,
    PRESENCE_REQUIRED,
    PUT_COMMIT,
    PUT_DATA,
    PUT_OPEN,
    READ,
    REQUESTS,
    SESSION_END,
    SESSION_MAC,
    SET_PREFIX,
    SPACE,
    STAT,
    UNKNOWN_MESSAGE,
    VERIFY,
)
from fw.state import State  # noqa: E402
from fw.store import Store  # noqa: E402
from fw.wire import WireError, check  # noqa: E402
from protocol import cbor  # noqa: E402
from protocol.hmac256 import equal  # noqa: E402

# message id: (handler, access): 0 anyone (the handler decides), 1 an owner or custodian
# session, 2 an owner session (adds objects), 3 a custodian session or the button (erases),
# or an owner session where the drive's retention rule allows it (fw.storage decides)
ROUTES = {
    HELLO: (hello.call, 0),
    CLAIM: (claim.call, 0),
    FACTORY_RESET: (claim.call, 0),
    AUTH_BEGIN: (auth.call, 0),
    AUTH_PROVE: (auth.call, 0),
    SESSION_END: (auth.call, 0),
    LIST: (storage.call, 1),
    STAT: (storage.call, 1),
    READ: (storage.call, 1),
    VERIFY: (storage.call, 1),
    SPACE: (storage.call, 1),
    PUT_OPEN: (storage.call, 2),
    PUT_DATA: (storage.call, 2),
    PUT_COMMIT: (storage.call, 2),
    DELETE: (storage.call, 3),
}

# Every module has its constants from fw.ids: drop it.
del sys.modules["fw.ids"], fw.ids


class Link:
    """The drive as handlers see it: ``state`` (claim, counters), ``store``, ``session``,
    ``pending`` (an AUTH_BEGIN awaiting its confirmation), ``serial``, ``max_frame``,
    ``backoff_ms``."""

    def __init__(self) -> None:
        root = board.root()
        self.serial = board.serial()
        self.max_frame = MAX_FRAME
        self.state = State(root, board.device_key())
        self.store = Store(root, board.env("SEALKEEP_CAPACITY") or None, READER.rawmv, SET_PREFIX)
        self.backoff_ms = board.env("SEALKEEP_BACKOFF_MS", 250)
        self.session: auth.Session | None = None
        self.pending: tuple | None = None  # (role, SPAKE2 key, transcript hash)

    def end_session(self) -> None:
        self.session = None
        self.pending = None
        self.store.put_abort()

    def body_area(self) -> memoryview:
        """Where a handler may build its reply body in place (then it returns its length):
        after the header, short of the MAC, the CRC and a spare byte."""
        return READER.outmv[5 : MAX_FRAME - 21]

    def data_reply(self, n: int) -> int:
        """Make the DATA body {1: data} around n bytes put at body_area()[5:]; its length.
        (At most framing.payload_room(max_frame) bytes fit there.)"""
        tx = READER.out
        tx[5] = 0xA1
        tx[6] = 1
        if n < 24:
            tx[7] = 0x40 | n
            tx[8 : 8 + n] = bytes(tx[10 : 10 + n])
            return 3 + n
        if n < 256:
            tx[7] = 0x58
            tx[8] = n
            tx[9 : 9 + n] = bytes(tx[10 : 10 + n])
            return 4 + n
        tx[7] = 0x59
        tx[8] = n >> 8
        tx[9] = n & 0xFF
        return 5 + n

    # -- replies -------------------------------------------------------------------------

    def send(self, msg_id: int, seq: int, body: object, session: "auth.Session | None") -> None:
        """Reply with body: a dict to encode, or the length of a body built in body_area()."""
        tx = READER.out
        mv = READER.outmv
        if isinstance(body, int):
            n = 5 + body
        else:
            raw = cbor.encode(body)
            n = 5 + len(raw)
            if n > MAX_FRAME - 21:
                raise WireError(INTERNAL, "reply too large")
            tx[5:n] = raw
        tx[0] = framing.VERSION
        tx[1] = msg_id
        tx[2] = framing.FLAG_MAC if session else 0
        tx[3] = seq >> 8
        tx[4] = seq & 0xFF
        if session:
            tx[n : n + 16] = session.d2h.tag(mv[:n])
            n += 16
        tx[n : n + 4] = (binascii.crc32(mv[:n]) & 0xFFFFFFFF).to_bytes(4, "little")
        n = framing.cobs_encode_into(tx, n + 4, READER.raw)
        READER.raw[n] = 0
        board.write_all(READER.rawmv[: n + 1])

    def error(
        self, seq: int, code: int, text: str, session: "auth.Session | None" = None, extra=None
    ) -> None:
        """An ERROR reply; extra holds further fields by name (only ``expected`` so far)."""
        body = {1: code, 2: text[:100]}
        if extra and "expected" in extra:
            body[3] = extra["expected"]
        self.send(ERROR, seq, body, session)

    # -- requests ------------------------------------------------------------------------

    def on_frame(self, frame: "memoryview | int") -> None:
        if isinstance(frame, int):
            if frame == framing.OVERSIZE:
                self.error(0, FRAME_TOO_LARGE, f"frame over {MAX_FRAME} bytes")
            else:
                self.error(0, MALFORMED_FRAME, "bad COBS encoding")
            return
        try:
            msg_id, _, seq, body, mac, signed = framing.parse_frame(frame)
        except framing.FrameError as exc:
            self.error(0, exc.code, exc.text)
            return
        sess = self.session
        if msg_id == HELLO:
            sess = None  # answered in the clear, never touches a session
        elif msg_id == AUTH_BEGIN:
            self.end_session()
            sess = None
        elif sess:
            if mac is None or not equal(mac, sess.h2d.peek(signed)):
                self.end_session()
                self.error(seq, SESSION_MAC, "bad session MAC: session ended")
                return
            sess.h2d.counter += 1
        try:
            route = ROUTES.get(msg_id)
            if route is None:
                raise WireError(UNKNOWN_MESSAGE, f"unknown message {msg_id}")
            need = route[1]
            if need:
                role = sess.role if sess else -1
                if need == 3:
                    if role not in (0, 1) and not board.presence():
                        raise WireError(PRESENCE_REQUIRED, "needs the custodian or the button")
                elif role < 0 or role > 1:  # an enrol session only claims
                    raise WireError(NOT_AUTHENTICATED, "needs a session")
                elif need == 2 and role:
                    raise WireError(PERMISSION, "only the owner adds objects")
            try:
                req = cbor.decode(body, True)
            except ValueError as exc:
                raise WireError(BAD_BODY, str(exc)) from None
            problem = check(REQUESTS[msg_id], req)
            if problem:
                raise WireError(BAD_BODY, problem)
            reply_id, reply = route[0](self, msg_id, req)  # type: ignore[arg-type]
            self.send(reply_id, seq, reply, sess)
        except WireError as exc:
            self.error(seq, exc.code, exc.text, sess, exc.extra)
        except Exception as exc:
            sys.print_exception(exc, sys.stderr)  # type: ignore[arg-type]
            gc.collect()
            self.error(seq, INTERNAL, "internal error (see the drive's log)", sess)

    def run(self) -> None:
        """Serve until the host side of the channel closes."""
        rx = RX
        push = READER.push
        failing = False
        while True:
            try:
                n = board.read_into(rx, 1000)
            except OSError as exc:  # no host on the line (a pty without its other end)
                if not failing:
                    board.log(repr(exc))
                failing = True
                time.sleep_ms(100)
                continue
            failing = False
            if n is None:
                gc.collect()  # idle: tidy up now rather than in the middle of a transfer
                continue
            if not n:
                return
            pos = 0
            while pos < n:
                pos, frame = push(rx, pos, n)
                if frame is not None:
                    try:
                        self.on_frame(frame)
                    except Exception as exc:  # even the ERROR reply failed
                        board.log(repr(exc))
                    # What a request leaves behind goes now: every allocation of the next
                    # one then starts low in the heap, which keeps it from fragmenting.
                    gc.collect()


def main() -> None:
    link = Link()
    gc.threshold(-1)  # main.py collected often while loading, to pack the heap
    gc.collect()
    board.log(f"{link.serial} ready, {gc.mem_free()} bytes free")
    link.run()
