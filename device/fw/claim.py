"""CLAIM (a blank drive takes its credentials and retention rule, once, in an enrol
session) and FACTORY_RESET (back to blank: the custodian's session or the button, never
the owner's)."""

import board

from fw.ids import BAD_BODY, CLAIM, NOT_AUTHENTICATED, OK, PRESENCE_REQUIRED, WRONG_STATE
from fw.wire import WireError
from protocol import cbor, transcript


def call(link, msg_id: int, body: dict) -> tuple:
    st = link.state
    sess = link.session
    if msg_id == CLAIM:
        if not (sess and sess.pads):
            raise WireError(NOT_AUTHENTICATED, "a claim needs an enrol session")
        if not st.blank:
            raise WireError(WRONG_STATE, "drive already claimed")
        if len(body[1]) != 32 or len(body[2]) != 32:
            raise WireError(BAD_BODY, "credentials are 32 bytes")
        if not (0 < len(body[3]) <= 64 and 0 < len(body[5]) <= 64):
            raise WireError(BAD_BODY, "salt and domain are 1 to 64 bytes")
        if len(cbor.encode(body[4])) > 256:
            raise WireError(BAD_BODY, "kdf parameters too large")
        import sys

        from fw import pake

        owner = pake.material(transcript.mask(body[1], sess.pads[0]))
        custodian = pake.material(transcript.mask(body[2], sess.pads[1]))
        for name in ("fw.pake", "fw.ed25519"):
            sys.modules.pop(name, None)
        claim = {3: body[3], 4: body[4], 5: body[5], 6: owner, 7: custodian}
        if body.get(6):  # retention: fixed until a factory reset (no request changes it)
            claim[8] = body[6]
        st.save_claim(claim)
        board.log("drive claimed")
        link.end_session()  # this reply still carries the enrol session's MAC
    else:
        if not (sess and sess.role == 1) and not board.presence():
            raise WireError(PRESENCE_REQUIRED, "needs the custodian's session or the button")
        link.end_session()  # closes the put in progress
        link.store.forget()  # and the object READ holds open
        st.reset()
        board.log("factory reset done")
    return OK, {}
