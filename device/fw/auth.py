"""AUTH_BEGIN, AUTH_PROVE, SESSION_END: SPAKE2 sessions signed by the drive's identity.

An attempt counts as a failure in flash before AUTH_BEGIN is answered, and a confirmed
AUTH_PROVE clears it, so an attempt abandoned after the challenge (where a guesser already
learns whether its one guess was right) still counts, and cutting the power costs one too.
From the third failure on the answer waits, doubling each time, at most 10 s for the owner
(a 256-bit credential: slowing it is enough) and 60 s for the custodian. Nothing locks: an
attacker on the line can slow the rightful custodian, never shut them out.
"""

import sys
import time

from micropython import const

from fw.ids import (
    AUTH_BEGIN,
    AUTH_CHALLENGE,
    AUTH_FAILED,
    AUTH_OK,
    BAD_BODY,
    INTERNAL,
    NOT_AUTHENTICATED,
    OK,
    SESSION_END,
    WRONG_STATE,
)
from fw.wire import WireError
from protocol import transcript
from protocol.hmac256 import equal

_ENROL = const(2)
_OWNER_CAP_MS = const(10000)
_CUSTODIAN_CAP_MS = const(60000)


class Session:
    """An authenticated session: its role and each direction's MAC state; an enrol session
    also keeps the pads that mask its claim."""

    def __init__(self, role: int, key: bytes, th: bytes) -> None:
        self.role = role
        derive = transcript.derive
        self.h2d = transcript.SessionMac(derive(key, transcript.SESSION_H2D, th))
        self.d2h = transcript.SessionMac(derive(key, transcript.SESSION_D2H, th))
        self.pads = None
        if role == _ENROL:
            self.pads = (
                derive(key, transcript.CLAIM_OWNER, th),
                derive(key, transcript.CLAIM_CUSTODIAN, th),
            )


def delay_ms(link, role: int) -> int:
    """How long the next attempt for role waits, with the failures on record."""
    failures = link.state.failures[role]
    if failures < 3:
        return 0
    cap = _CUSTODIAN_CAP_MS if role else _OWNER_CAP_MS
    return min(link.backoff_ms << min(failures - 3, 20), cap)


def _challenge(link, role: int, x: bytes) -> tuple:
    st = link.state
    if role == _ENROL:
        material = None
    else:
        material = st.get(6 + role)
    from fw import ed25519, pake  # loaded for this step only: sessions need the heap

    try:
        try:
            y, key = pake.respond(material or pake.ENROL_MATERIAL, x, link.serial.encode())
        except ValueError:
            raise WireError(BAD_BODY, "x is not a valid SPAKE2 message") from None
        ident = st.identity
        th = transcript.transcript_hash(role, link.serial, x, y, ident[32:])
        signature = ed25519.sign(ident[:32], transcript.identity_message(th))
    finally:
        for name in ("fw.pake", "fw.ed25519"):
            sys.modules.pop(name, None)
    link.pending = (role, key, th)
    confirm = transcript.derive(key, transcript.DRIVE_CONFIRM, th)
    return AUTH_CHALLENGE, {1: y, 2: confirm, 3: signature}


def call(link, msg_id: int, body: dict) -> tuple:
    st = link.state
    pending = link.pending
    link.pending = None
    if msg_id == SESSION_END:
        if not link.session:
            raise WireError(NOT_AUTHENTICATED, "no session to end")
        link.end_session()
        return OK, {}
    if msg_id == AUTH_BEGIN:
        role = body[1]
        if role > _ENROL or len(body[2]) != 32:
            raise WireError(BAD_BODY, "role is 0, 1 or 2, x 32 bytes")
        if st.damaged:
            raise WireError(INTERNAL, "drive state damaged")
        if st.blank != (role == _ENROL):
            raise WireError(WRONG_STATE, "drive is blank" if st.blank else "drive is claimed")
        if role != _ENROL:
            delay = delay_ms(link, role)
            st.set_failures(role, st.failures[role] + 1)  # counted before answering
            if delay:
                time.sleep_ms(delay)
        return _challenge(link, role, bytes(body[2]))
    if not pending:
        raise WireError(WRONG_STATE, "AUTH_PROVE without AUTH_BEGIN")
    role, key, th = pending
    if len(body[1]) != 32 or not equal(
        body[1], transcript.derive(key, transcript.HOST_CONFIRM, th)
    ):
        raise WireError(AUTH_FAILED, "wrong credential")
    if role != _ENROL:
        st.set_failures(role, 0)
    link.session = Session(role, key, th)
    return AUTH_OK, {}
