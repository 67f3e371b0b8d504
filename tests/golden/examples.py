"""Example messages behind the golden wire file ``tests/golden/frames.txt``.

Imported by CPython (``tools/make-goldens``, ``tests/unit/test_goldens.py``) and by the
MicroPython unix port (``tests/unit/protocol_checks_mp.py``), so it uses builtins only.
``build()`` takes the protocol modules as arguments: both interpreters run the same
construction code against their own copy of the protocol package.
"""

SERIAL = "SK-E6614103E7"
OWNER_CREDENTIAL = bytes(range(32))
CUSTODIAN_CREDENTIAL = bytes(range(32, 64))
X_MSG = bytes(range(0x40, 0x60))  # SPAKE2 messages, as opaque on the wire as any bytes
Y_MSG = bytes(range(0xA0, 0xC0))
IDENTITY = bytes(range(0x60, 0x80))
SIGNATURE = bytes(range(0x80, 0xC0))
SESSION_KEY = bytes(range(0x10, 0x30))  # the SPAKE2 key of the example session
SALT = bytes(range(0xF0, 0x100))
DOMAIN = b"\x5e\xa1\x4e\xe9" * 4
DIGEST = bytes(range(0xC0, 0xE0))
KDF = {"alg": "argon2id", "t": 3, "m": 65536, "p": 1}
OBJECT = "bdk-2024.sk"
MAX_FRAME = 4096

# (label, message name, sequence number, body). Every id in messages.NAMES has an entry
# labelled with its plain name; the other labels add variants.
PLAIN = [
    ("HELLO", "HELLO", 1, {}),
    (
        "CLAIM",
        "CLAIM",
        2,
        {  # (masked, in an enrol session: the example shows the shape)
            1: OWNER_CREDENTIAL,
            2: CUSTODIAN_CREDENTIAL,
            3: SALT,
            4: KDF,
            5: DOMAIN,
        },
    ),
    ("FACTORY_RESET", "FACTORY_RESET", 3, {}),
    ("AUTH_BEGIN", "AUTH_BEGIN", 4, {1: 0, 2: X_MSG}),
    ("AUTH_BEGIN/enrol", "AUTH_BEGIN", 4, {1: 2, 2: X_MSG}),
    ("SESSION_END", "SESSION_END", 6, {}),
    ("LIST", "LIST", 7, {1: "a", 2: "bdk-"}),
    ("LIST/empty", "LIST", 7, {}),
    ("STAT", "STAT", 8, {1: OBJECT}),
    ("READ", "READ", 9, {1: OBJECT, 2: 4056, 3: 4056}),
    ("PUT_OPEN", "PUT_OPEN", 10, {1: OBJECT, 2: 1 << 20, 3: DIGEST}),
    ("PUT_DATA", "PUT_DATA", 11, {1: 0, 2: b"\x00\x01\x02\x00\xff" * 8}),
    ("PUT_COMMIT", "PUT_COMMIT", 12, {1: OBJECT}),
    ("DELETE", "DELETE", 13, {1: OBJECT}),
    ("VERIFY", "VERIFY", 14, {1: OBJECT}),
    ("SPACE", "SPACE", 15, {}),
    ("OK", "OK", 3, {}),
    (
        "HELLO_R",
        "HELLO_R",
        1,
        {
            1: 2,
            2: "0.1.0",
            3: SERIAL,
            4: "owned",
            5: DOMAIN,
            6: MAX_FRAME,
            7: ["storage", "resume"],
            8: SALT,
            9: KDF,
            10: 1 << 30,
            11: (1 << 30) - 123456,
            14: IDENTITY,
            15: 0,
            16: 2000,
        },
    ),
    (
        "HELLO_R/blank",
        "HELLO_R",
        1,
        {
            1: 2,
            2: "0.1.0",
            3: SERIAL,
            4: "blank",
            5: None,
            6: MAX_FRAME,
            7: ["storage", "resume", "presence"],
            8: None,
            9: None,
            10: 1 << 30,
            11: 1 << 30,
            14: IDENTITY,
            15: 0,
            16: 0,
        },
    ),
    (
        "LIST_R",
        "LIST_R",
        7,
        {1: [["bdk-2024.sk", 1 << 20], ["kek-ops.sk", 618], ["z", 0]], 2: False},
    ),
    ("STAT_R", "STAT_R", 8, {1: OBJECT, 2: 1 << 20, 3: DIGEST}),
    ("DATA", "DATA", 9, {1: b"golden data \x00\x01\xfe\xff"}),
    ("PUT_READY", "PUT_READY", 10, {1: 0}),
    ("PUT_READY/resume", "PUT_READY", 10, {1: 65536}),
    ("PUT_ACK", "PUT_ACK", 11, {1: 40}),
    ("PUT_DONE", "PUT_DONE", 12, {1: DIGEST, 2: 1 << 20}),
    ("VERIFY_R", "VERIFY_R", 14, {1: DIGEST, 2: 1 << 20, 3: True}),
    ("SPACE_R", "SPACE_R", 15, {1: 1 << 30, 2: 0, 3: 0, 4: 4}),
    ("ERROR/exists", "ERROR", 10, {1: 37, 2: "objects are never replaced"}),
    ("ERROR", "ERROR", 0, {1: 2, 2: "CRC mismatch"}),
    ("ERROR/bad_offset", "ERROR", 11, {1: 23, 2: "offset must be 65536", 3: 65536}),
    ("ERROR/backoff", "ERROR", 5, {1: 14, 2: "wait", 4: 1000}),
    ("ERROR/unicode", "ERROR", 13, {1: 21, 2: "no object \u201cb\u00e4r\u201d \U0001f511"}),
    ("FIRMWARE", "FIRMWARE", 30, {1: 0, 2: 28642, 3: DIGEST}),
    ("FIRMWARE/data", "FIRMWARE", 31, {1: 1, 2: 4056, 3: b"SKFW\x01\x05\xd0" * 4}),
    ("FIRMWARE/install", "FIRMWARE", 32, {1: 2}),
    ("FIRMWARE/confirm", "FIRMWARE", 33, {1: 3}),
    ("FIRMWARE/reboot", "FIRMWARE", 34, {1: 4}),
    ("FIRMWARE/status", "FIRMWARE", 35, {1: 5}),
    (
        "FIRMWARE_R",
        "FIRMWARE_R",
        35,
        {
            1: "1.1.0",
            2: 2,
            3: "b a 2 1",
            4: "1.0.0 1",
            5: "1.1.0 2",
            6: "0 firmware 1.1.0 (counter 2) installed in slot b",
            7: DIGEST,
        },
    ),
    ("FIRMWARE_R/built-in", "FIRMWARE_R", 35, {1: "1.0.0", 2: 0, 7: None}),
    ("ERROR/downgrade", "ERROR", 33, {1: 36, 2: "counter 1 is below 2"}),
]

# MACed frames of an owner session: (label, name, seq, direction, counter, body).
SESSION = [
    ("LIST/mac", "LIST", 20, "h2d", 0, {}),
    ("LIST_R/mac", "LIST_R", 20, "d2h", 0, {1: [], 2: False}),
    ("PUT_DATA/mac", "PUT_DATA", 21, "h2d", 1, {1: 65536, 2: b"\x00" * 16}),
    ("PUT_ACK/mac", "PUT_ACK", 21, "d2h", 1, {1: 65552}),
    ("READ/mac", "READ", 0xFFFF, "h2d", (1 << 32) + 5, {1: OBJECT, 2: 0, 3: 100}),
    ("ERROR/mac", "ERROR", 0xFFFF, "d2h", (1 << 32) + 5, {1: 21, 2: "not found"}),
]


def session_keys(transcript):
    """(owner transcript hash, host→drive key, drive→host key) of the example session."""
    th = transcript.transcript_hash(transcript.ROLE_OWNER, SERIAL, X_MSG, Y_MSG, IDENTITY)
    k_h2d = transcript.derive(SESSION_KEY, transcript.SESSION_H2D, th)
    k_d2h = transcript.derive(SESSION_KEY, transcript.SESSION_D2H, th)
    return th, k_h2d, k_d2h


def max_data(framing):
    """The payload of the largest DATA reply a MAX_FRAME drive sends in a session."""
    room = framing.payload_room(MAX_FRAME)
    return bytes((i * 7 + 3) & 0xFF for i in range(room))


def bodies(transcript, framing):
    """Every example as (label, name, seq, direction or None, counter, body)."""
    th, _, _ = session_keys(transcript)
    out = [(label, name, seq, None, 0, body) for label, name, seq, body in PLAIN]
    drive_confirm = transcript.derive(SESSION_KEY, transcript.DRIVE_CONFIRM, th)
    host_confirm = transcript.derive(SESSION_KEY, transcript.HOST_CONFIRM, th)
    challenge = {1: Y_MSG, 2: drive_confirm, 3: SIGNATURE}
    out.append(("AUTH_CHALLENGE", "AUTH_CHALLENGE", 4, None, 0, challenge))
    out.append(("AUTH_PROVE", "AUTH_PROVE", 5, None, 0, {1: host_confirm}))
    out.append(("AUTH_OK", "AUTH_OK", 5, None, 0, {}))
    for label, name, seq, direction, counter, body in SESSION:
        out.append((label, name, seq, direction, counter, body))
    out.append(("DATA/max+mac", "DATA", 22, "d2h", 2, {1: max_data(framing)}))
    return out


def build(messages, cbor, framing, transcript):
    """Build every golden frame: a list of (label, wire bytes including the delimiter)."""
    _, k_h2d, k_d2h = session_keys(transcript)
    writer = framing.FrameWriter(MAX_FRAME)
    frames = []
    for label, name, seq, direction, counter, body in bodies(transcript, framing):
        msg_id = getattr(messages, name)
        if direction is None:
            wire = framing.build_frame(msg_id, seq, cbor.encode(body))
        else:
            mac = transcript.SessionMac(k_h2d if direction == "h2d" else k_d2h)
            mac.counter = counter
            frame = writer.begin(msg_id, seq, framing.FLAG_MAC)
            cbor.encode_into(body, frame)
            wire = bytes(writer.finish(frame, mac.tag(frame)))
        frames.append((label, wire))
    return frames


def read_golden(path):
    """Parse frames.txt into a list of (label, wire bytes)."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] == "#":
                continue
            label, hexed = line.split()
            out.append((label, bytes.fromhex(hexed)))
    return out
