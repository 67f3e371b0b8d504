"""Stable numeric error codes carried by ERROR replies. A code is never reused."""

# framing and encoding
MALFORMED_FRAME = 1
CRC = 2
FRAME_TOO_LARGE = 3
UNKNOWN_MESSAGE = 4
BAD_BODY = 5
UNSUPPORTED_VERSION = 6
# state and authentication
WRONG_STATE = 10
NOT_AUTHENTICATED = 11
AUTH_FAILED = 12
LOCKED_OUT = 13  # protocol 1 only: drives no longer lock
BACKOFF = 14
SESSION_MAC = 15
# storage
BAD_NAME = 20
NOT_FOUND = 21
FULL = 22
BAD_OFFSET = 23
DIGEST_MISMATCH = 24
NO_PUT_OPEN = 25
# everything else
INTERNAL = 30
PERMISSION = 31
PRESENCE_REQUIRED = 32

NAMES = {
    MALFORMED_FRAME: "MALFORMED_FRAME",
    CRC: "CRC",
    FRAME_TOO_LARGE: "FRAME_TOO_LARGE",
    UNKNOWN_MESSAGE: "UNKNOWN_MESSAGE",
    BAD_BODY: "BAD_BODY",
    UNSUPPORTED_VERSION: "UNSUPPORTED_VERSION",
    WRONG_STATE: "WRONG_STATE",
    NOT_AUTHENTICATED: "NOT_AUTHENTICATED",
    AUTH_FAILED: "AUTH_FAILED",
    LOCKED_OUT: "LOCKED_OUT",
    BACKOFF: "BACKOFF",
    SESSION_MAC: "SESSION_MAC",
    BAD_NAME: "BAD_NAME",
    NOT_FOUND: "NOT_FOUND",
    FULL: "FULL",
    BAD_OFFSET: "BAD_OFFSET",
    DIGEST_MISMATCH: "DIGEST_MISMATCH",
    NO_PUT_OPEN: "NO_PUT_OPEN",
    INTERNAL: "INTERNAL",
    PERMISSION: "PERMISSION",
    PRESENCE_REQUIRED: "PRESENCE_REQUIRED",
}

# firmware images: set from a table, as protocol.messages does its firmware requests (a
# drive loads this module and keeps every name it assigns)
BAD_IMAGE: int
BAD_SIGNATURE: int
WRONG_VENDOR: int
DOWNGRADE: int
EXISTS: int  # an owner may add objects, never replace one
RETAINED: int  # an owner's delete the drive's retention rule does not allow
for name, value in (
    ("BAD_IMAGE", 33),
    ("BAD_SIGNATURE", 34),
    ("WRONG_VENDOR", 35),
    ("DOWNGRADE", 36),
    ("EXISTS", 37),
    ("RETAINED", 38),
):
    globals()[name] = value
    NAMES[value] = name
del name, value
