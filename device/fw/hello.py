"""HELLO: who the drive is, in the clear, whatever the session.

It says how long the next attempt of each role would wait, never how many failures are on
record: exact counts are for a session (SPACE)."""

import board

from fw.auth import delay_ms
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
    blank = st.blank
    return HELLO_R, {
        1: 2,
        2: VERSION[0],
        3: link.serial,
        4: "blank" if blank else "owned",
        5: st.get(5),
        6: link.max_frame,
        7: caps,
        8: st.get(3),
        9: st.get(4),
        10: cap,
        11: free,
        14: st.identity[32:],
        15: 0 if blank else delay_ms(link, 0),
        16: 0 if blank else delay_ms(link, 1),
        17: st.get(8) or 0,  # the claim's retention rule; 0: none
    }
