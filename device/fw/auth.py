"""AUTH_BEGIN, AUTH_PROVE, SESSION_END: mutual challenge-response and sessions.

A proof counts as a failure in flash before it is checked, so cutting the power mid-check
still costs an attempt. With 3 or more failures on record the answer waits
base x 2^(failures-3) ms (at most 30 s); at 10 the role is locked out until a factory
reset. A success clears the role's count.
"""

import os
import time

from fw.ids import (
    AUTH_BEGIN,
    AUTH_CHALLENGE,
    AUTH_FAILED,
    AUTH_OK,
    BAD_BODY,
    INTERNAL,
    LOCKED_OUT,
    OK,
    SESSION_END,
    WRONG_STATE,
)
from fw.state import LOCKOUT
from fw.wire import WireError
from protocol import transcript
from protocol.hmac256 import equal


class Session:
    """An authenticated session: its role and each direction's MAC state."""

    def __init__(self, role: int, credential: bytes, tr: bytes) -> None:
        self.role = role
        derive = transcript.derive
        self.h2d = transcript.SessionMac(derive(credential, transcript.SESSION_H2D, tr))
        self.d2h = transcript.SessionMac(derive(credential, transcript.SESSION_D2H, tr))


def backoff_ms(link, failures: int) -> int:
    """How long to wait before answering a proof with that many failures on record."""
    return 0 if failures < 3 else min(link.backoff_ms << min(failures - 3, 20), 30000)


def call(link, msg_id: int, body: dict) -> tuple:
    st = link.state
    pending = link.pending
    link.pending = None
    if msg_id == SESSION_END:
        link.end_session()
        return OK, {}
    if msg_id == AUTH_BEGIN:
        if st.blank:
            raise WireError(WRONG_STATE, "drive is blank")
        role = body[1]
        if role > 1 or len(body[2]) != 32:
            raise WireError(BAD_BODY, "role is 0 or 1, nonce 32 bytes")
    else:
        if not pending:
            raise WireError(WRONG_STATE, "AUTH_PROVE without AUTH_BEGIN")
        role = pending[0]
    if st.failures[role] >= LOCKOUT:
        raise WireError(LOCKED_OUT, "locked out: factory reset needed")
    if st.damaged:
        raise WireError(INTERNAL, "drive state damaged: factory reset needed")
    if msg_id == AUTH_BEGIN:
        nonce = os.urandom(32)
        link.pending = (role, bytes(body[2]), nonce)
        return AUTH_CHALLENGE, {1: nonce}
    proof = body[1]
    if len(proof) != 32:
        raise WireError(BAD_BODY, "proof is 32 bytes")
    failures = st.failures[role]
    st.set_failures(role, failures + 1)  # counted before checking
    delay = backoff_ms(link, failures)
    if delay:
        time.sleep_ms(delay)
    cred = st.get(1 + role)
    tr = transcript.transcript(link.serial, role, pending[1], pending[2])
    if not equal(proof, transcript.derive(cred, transcript.HOST_PROOF, tr)):
        raise WireError(AUTH_FAILED, f"wrong credential ({failures + 1} of {LOCKOUT})")
    st.set_failures(role, 0)
    link.session = Session(role, cred, tr)
    return AUTH_OK, {1: transcript.derive(cred, transcript.DRIVE_PROOF, tr)}
