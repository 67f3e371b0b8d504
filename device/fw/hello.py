"""HELLO: who the drive is, in the clear, whatever the session."""

import board

from fw.ids import HELLO_R
from fw.version import VERSION
from fw.wire import drop


def call(link, msg_id: int, body: dict) -> tuple:
    drop()  # a firmware transfer left unfinished: its code goes
    st = link.state
    cap, free, _ = link.store.space()
    caps = ["storage", "resume"]
    if board.BUTTON:
        caps.append("presence")
    return HELLO_R, {
        1: 1,
        2: VERSION[0],
        3: link.serial,
        4: "blank" if st.blank else "owned",
        5: st.get(5),
        6: link.max_frame,
        7: caps,
        8: st.get(3),
        9: st.get(4),
        10: cap,
        11: free,
        12: st.failures[0],
        13: st.failures[1],
    }
