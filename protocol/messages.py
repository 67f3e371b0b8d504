"""Message ids, field keys and body schemas: the one place both sides agree on.

A request id has bit 7 clear; its reply is ``id | 0x80`` (or OK / ERROR). Bodies are CBOR
maps with small integer keys; unknown keys are ignored so either side can be newer.
A schema maps a field key to ``(name, kind, required)``; kinds: "u" unsigned int,
"b" bytes, "t" text, "?" bool, "a" array, "m" map, "b?" bytes or null.
"""

# requests
HELLO = 0x01
CLAIM = 0x02
FACTORY_RESET = 0x03
AUTH_BEGIN = 0x04
AUTH_PROVE = 0x05
SESSION_END = 0x06
LIST = 0x10
STAT = 0x11
READ = 0x12
PUT_OPEN = 0x13
PUT_DATA = 0x14
PUT_COMMIT = 0x15
DELETE = 0x16
VERIFY = 0x17
SPACE = 0x18
# One request for every step of a firmware update, not one each: a drive routes and checks
# each request id through tables that would outgrow their room in its heap.
FIRMWARE = 0x20

# replies
OK = 0x80
HELLO_R = 0x81
AUTH_CHALLENGE = 0x84
AUTH_OK = 0x85
LIST_R = 0x90
STAT_R = 0x91
DATA = 0x92
PUT_READY = 0x93
PUT_ACK = 0x94
PUT_DONE = 0x95
VERIFY_R = 0x97
SPACE_R = 0x98
FIRMWARE_R = 0xA0
ERROR = 0xFF

NAMES = {
    HELLO: "HELLO",
    CLAIM: "CLAIM",
    FACTORY_RESET: "FACTORY_RESET",
    AUTH_BEGIN: "AUTH_BEGIN",
    AUTH_PROVE: "AUTH_PROVE",
    SESSION_END: "SESSION_END",
    LIST: "LIST",
    STAT: "STAT",
    READ: "READ",
    PUT_OPEN: "PUT_OPEN",
    PUT_DATA: "PUT_DATA",
    PUT_COMMIT: "PUT_COMMIT",
    DELETE: "DELETE",
    VERIFY: "VERIFY",
    SPACE: "SPACE",
    FIRMWARE: "FIRMWARE",
    OK: "OK",
    HELLO_R: "HELLO_R",
    AUTH_CHALLENGE: "AUTH_CHALLENGE",
    AUTH_OK: "AUTH_OK",
    LIST_R: "LIST_R",
    STAT_R: "STAT_R",
    DATA: "DATA",
    PUT_READY: "PUT_READY",
    PUT_ACK: "PUT_ACK",
    PUT_DONE: "PUT_DONE",
    VERIFY_R: "VERIFY_R",
    SPACE_R: "SPACE_R",
    FIRMWARE_R: "FIRMWARE_R",
    ERROR: "ERROR",
}

# Object names: 1..64 of [A-Za-z0-9._-], not starting with a dot, so no path can escape.
NAME_MAX = 64
NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

# Objects named with this prefix are backup sets: a drive numbers their commits, and its
# retention rule (CLAIM field 6) lets the owner drop a set once enough newer ones are kept.
SET_PREFIX = "set-"

STATE_BLANK = "blank"
STATE_OWNED = "owned"

# The steps of FIRMWARE (field 1), by number: open answers PUT_READY, data PUT_ACK, status
# FIRMWARE_R, the others OK.
FIRMWARE_STEPS = ("open", "data", "install", "confirm", "reboot", "status")

# Capabilities a drive may announce in HELLO.
CAP_STORAGE = "storage"
CAP_RESUME = "resume"
CAP_PRESENCE = "presence"

REQUESTS = {
    HELLO: {},
    # in an enrol session; 1 and 2 are masked with pads of the session (docs/protocol.md)
    CLAIM: {
        1: ("owner_credential", "b", True),
        2: ("custodian_credential", "b", True),
        3: ("salt", "b", True),
        4: ("kdf", "m", True),
        5: ("domain", "b", True),
        # how many newer sets let the owner drop a set; absent or 0: never (custodians only)
        6: ("retention", "u", False),
    },
    AUTH_BEGIN: {1: ("role", "u", True), 2: ("x", "b", True)},
    AUTH_PROVE: {1: ("confirm", "b", True)},
    LIST: {1: ("after", "t", False), 2: ("prefix", "t", False)},
    STAT: {1: ("name", "t", True)},
    READ: {1: ("name", "t", True), 2: ("offset", "u", True), 3: ("length", "u", True)},
    PUT_OPEN: {1: ("name", "t", True), 2: ("size", "u", True), 3: ("digest", "b", True)},
    PUT_DATA: {1: ("offset", "u", True), 2: ("data", "b", True)},
    # and per step (the drive checks them itself): 2 the image's size (open) or the data's
    # offset (data), 3 the image's SHA-256 (open) or the data (data)
    FIRMWARE: {1: ("step", "u", True)},
}
# Requests with the same body share one schema: a drive keeps this table, and each copy
# would cost it heap.
REQUESTS[FACTORY_RESET] = REQUESTS[SESSION_END] = REQUESTS[SPACE] = REQUESTS[HELLO]
REQUESTS[PUT_COMMIT] = REQUESTS[DELETE] = REQUESTS[VERIFY] = REQUESTS[STAT]

REPLIES = {
    OK: {},
    AUTH_OK: {},
    HELLO_R: {
        1: ("protocol", "u", True),
        2: ("firmware", "t", True),
        3: ("serial", "t", True),
        4: ("state", "t", True),
        5: ("domain", "b?", True),
        6: ("max_frame", "u", True),
        7: ("capabilities", "a", True),
        8: ("salt", "b?", True),
        9: ("kdf", "m?", True),
        10: ("capacity", "u", True),
        11: ("free", "u", True),
        # 12, 13: exact failure counts (protocol 1), now only inside a session (SPACE_R)
        # protocol 2 (a drive on older firmware leaves them out; the host then names it)
        14: ("identity", "b", False),
        15: ("owner_delay_ms", "u", False),
        16: ("custodian_delay_ms", "u", False),
        17: ("retention", "u", False),  # the claim's rule, when it has one
    },
    AUTH_CHALLENGE: {
        1: ("y", "b", True),
        2: ("confirm", "b", True),
        3: ("signature", "b", True),
    },
    LIST_R: {1: ("entries", "a", True), 2: ("more", "?", True)},
    STAT_R: {
        1: ("name", "t", True),
        2: ("size", "u", True),
        3: ("digest", "b", True),
        # a set on a drive with retention: the sets committed after it that it still holds
        4: ("newer", "u", False),
    },
    DATA: {1: ("data", "b", True)},
    PUT_READY: {1: ("offset", "u", True)},
    PUT_ACK: {1: ("next", "u", True)},
    PUT_DONE: {1: ("digest", "b", True), 2: ("size", "u", True)},
    VERIFY_R: {1: ("digest", "b", True), 2: ("size", "u", True), 3: ("intact", "?", True)},
    SPACE_R: {
        1: ("capacity", "u", True),
        2: ("free", "u", True),
        3: ("owner_failures", "u", False),
        4: ("custodian_failures", "u", False),
    },
    # FIRMWARE status: the running firmware's version, security counter and the vendor key
    # it trusts (null: none, it takes no update), and the files under slot/ as they are
    # (absent on the firmware of a source tree, which has no slots)
    FIRMWARE_R: {
        1: ("version", "t", True),
        2: ("counter", "u", True),
        3: ("record", "t", False),
        4: ("slot_a", "t", False),
        5: ("slot_b", "t", False),
        6: ("result", "t", False),
        7: ("vendor_key", "b?", True),
    },
    ERROR: {
        1: ("code", "u", True),
        2: ("text", "t", True),
        3: ("expected", "u", False),
        4: ("retry_ms", "u", False),
    },
}


def _kind_ok(kind: str, value: object) -> bool:
    if kind[-1] == "?" and len(kind) == 2 and value is None:
        return True
    k = kind[0]
    if k == "u":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if k == "b":
        return isinstance(value, (bytes, bytearray, memoryview))
    if k == "t":
        return isinstance(value, str)
    if k == "?":
        return isinstance(value, bool)
    if k == "a":
        return isinstance(value, list)
    if k == "m":
        return isinstance(value, dict)
    return False


def check(schema: "dict[int, tuple[str, str, bool]]", body: object) -> "str | None":
    """Return None when body fits schema, else a sentence saying what is wrong."""
    if not isinstance(body, dict):
        return "body must be a map"
    for key, spec in schema.items():
        name, kind, required = spec
        if key not in body:
            if required:
                return f"missing field {key} ({name})"
            continue
        if not _kind_ok(kind, body[key]):
            return f"field {key} ({name}) has the wrong type"
    return None


def name_ok(name: str) -> bool:
    raw = name.encode("utf-8")
    if not raw or len(raw) > NAME_MAX or raw[0] == 0x2E:
        return False
    for ch in raw:
        if NAME_CHARS.find(bytes([ch])) < 0:
            return False
    return True
