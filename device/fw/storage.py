"""Storage commands: LIST, STAT, READ, PUT_OPEN/DATA/COMMIT, DELETE, VERIFY, SPACE.

The store logic is in ``fw.store``; here requests are checked, store errors mapped to
protocol errors and replies shaped. Owner and custodian sessions read; the owner adds
objects and never replaces one; the custodian (or the button) deletes (see fw.link). The
owner deletes a set only under the claim's retention rule N, once N sets committed after
it are held.
"""

import board

from fw.ids import (
    BAD_BODY,
    BAD_NAME,
    BAD_OFFSET,
    DATA,
    DIGEST_MISMATCH,
    EXISTS,
    FULL,
    LIST,
    LIST_R,
    NO_PUT_OPEN,
    NOT_FOUND,
    OK,
    PRESENCE_REQUIRED,
    PUT_ACK,
    PUT_COMMIT,
    PUT_DATA,
    PUT_DONE,
    PUT_OPEN,
    PUT_READY,
    READ,
    RETAINED,
    SPACE,
    SPACE_R,
    STAT,
    STAT_R,
    VERIFY,
    VERIFY_R,
)
from fw.store import StoreError, name_ok
from fw.wire import WireError
from protocol import cbor, framing

CODES = {
    "BAD_NAME": BAD_NAME,
    "NOT_FOUND": NOT_FOUND,
    "FULL": FULL,
    "BAD_OFFSET": BAD_OFFSET,
    "BAD_SIZE": BAD_BODY,
    "DIGEST_MISMATCH": DIGEST_MISMATCH,
    "NO_PUT_OPEN": NO_PUT_OPEN,
}


def call(link, msg_id: int, body: dict) -> tuple:
    try:
        return handle(link, msg_id, body)
    except StoreError as exc:
        if exc.expected is None:
            raise WireError(CODES[exc.kind], exc.text) from None
        raise WireError(CODES[exc.kind], exc.text, expected=exc.expected) from None


def handle(link, msg_id: int, body: dict) -> tuple:
    store = link.store
    if msg_id == PUT_DATA:  # the hot path first
        return PUT_ACK, {1: store.put_write(body[1], body[2])}
    if msg_id == SPACE:
        cap, free, _ = store.space()
        failures = link.state.failures
        return SPACE_R, {1: cap, 2: free, 3: failures[0], 4: failures[1]}
    out = link.body_area()  # replies built in place: no copies, no large allocations
    if msg_id == LIST:
        # An entry takes at most 80 bytes (a 64-byte name, a 9-byte size, CBOR heads);
        # a page holds at most 8: the names of a page are held at once, in a heap with
        # little to spare (more pages cost a round trip each, a millisecond).
        limit = max(1, min(8, (link.max_frame - 64) // 80))
        entries, more = store.list(body.get(1) or "", body.get(2) or "", limit)
        out[0] = 0xA2  # {1: [entries], 2: more}
        out[1] = 1
        out[2] = 0x80 | len(entries)
        n = 3
        for entry in entries:
            raw = cbor.encode(entry)
            out[n : n + len(raw)] = raw
            n += len(raw)
        out[n] = 2
        out[n + 1] = 0xF5 if more else 0xF4
        return LIST_R, n + 2
    name = body[1]
    if not name_ok(name):  # the rule of protocol.messages.name_ok
        raise StoreError("BAD_NAME", "names are 1-64 of A-Za-z0-9._- not starting with .")
    if msg_id == READ:
        n = min(body[3], framing.payload_room(link.max_frame))
        return DATA, link.data_reply(store.read(name, body[2], out[5 : 5 + n]))
    if msg_id in (PUT_OPEN, PUT_COMMIT) and not name.startswith("sealkeep-firmware."):
        # A boot consumes the firmware's own objects; every other object stays as written,
        # so a host that holds the owner credential can add backups but never spoil one.
        if store.exists(name):
            raise WireError(EXISTS, "an object of that name exists: objects are never replaced")
    if msg_id == PUT_OPEN:
        return PUT_READY, {1: store.put_open(name, body[2], body[3])}
    if msg_id == PUT_COMMIT:
        digest, size = store.put_commit(name)
        return PUT_DONE, {1: digest, 2: size}
    keep = link.state.get(8)  # the retention rule: None, or N
    if msg_id == STAT:
        size, digest = store.stat(name)
        reply = {1: name, 2: size, 3: digest}
        newer = store.newer(name) if keep else -1
        if newer >= 0:  # a numbered set: how many newer sets vouch for dropping it
            reply[4] = newer
        return STAT_R, reply
    if msg_id == VERIFY:
        digest, size, intact = store.verify(name)
        return VERIFY_R, {1: digest, 2: size, 3: intact}
    sess = link.session
    if sess and not sess.role and not board.presence():  # the owner, nobody at the drive
        if not keep:
            raise WireError(PRESENCE_REQUIRED, "needs the custodian or the button")
        if store.newer(name) < keep:  # -1: not a set, or not numbered
            raise WireError(
                RETAINED, f"retention {keep} keeps it: needs the custodian or the button"
            )
    store.delete(name)
    return OK, {}
