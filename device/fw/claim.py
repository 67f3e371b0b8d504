"""CLAIM (a blank drive takes its credentials, once) and FACTORY_RESET (back to blank)."""

import board

from fw.ids import BAD_BODY, CLAIM, OK, PRESENCE_REQUIRED, WRONG_STATE
from fw.wire import WireError
from protocol import cbor


def call(link, msg_id: int, body: dict) -> tuple:
    st = link.state
    if msg_id == CLAIM:
        if not st.blank:
            raise WireError(WRONG_STATE, "drive already claimed")
        if len(body[1]) != 32 or len(body[2]) != 32:
            raise WireError(BAD_BODY, "credentials are 32 bytes")
        if not (0 < len(body[3]) <= 64 and 0 < len(body[5]) <= 64):
            raise WireError(BAD_BODY, "salt and domain are 1 to 64 bytes")
        if len(cbor.encode(body[4])) > 256:
            raise WireError(BAD_BODY, "kdf parameters too large")
        st.save_claim({1: body[1], 2: body[2], 3: body[3], 4: body[4], 5: body[5]})
        board.log("drive claimed")
    else:
        sess = link.session
        if not (sess and sess.role == 0) and not board.presence():
            raise WireError(PRESENCE_REQUIRED, "needs an owner session or the button")
        link.end_session()  # closes the put in progress
        link.store.forget()  # and the object READ holds open
        st.reset()
        board.log("factory reset done")
    return OK, {}
