"""The protocol constants the firmware uses: message ids, error codes, request schemas.

They come from ``protocol.messages`` and ``protocol.errors``. Firmware modules import
these names from here. Those two are unloaded at once, and this module by ``fw.link`` when
every module has its names: the host-side tables (names, reply schemas) would take heap
the drive needs for data.
"""

import sys

import protocol
from protocol.errors import (  # noqa: F401
    AUTH_FAILED,
    BAD_BODY,
    BAD_NAME,
    BAD_OFFSET,
    DIGEST_MISMATCH,
    EXISTS,
    FRAME_TOO_LARGE,
    FULL,
    INTERNAL,
    MALFORMED_FRAME,
    NO_PUT_OPEN,
    NOT_AUTHENTICATED,
    NOT_FOUND,
    PERMISSION,
    PRESENCE_REQUIRED,
    RETAINED,
    SESSION_MAC,
    UNKNOWN_MESSAGE,
    WRONG_STATE,
)
from protocol.messages import (  # noqa: F401
    AUTH_BEGIN,
    AUTH_CHALLENGE,
    AUTH_OK,
    AUTH_PROVE,
    CLAIM,
    DATA,
    DELETE,
    ERROR,
    FACTORY_RESET,
    HELLO,
    HELLO_R,
    LIST,
    LIST_R,
    OK,
    PUT_ACK,
    PUT_COMMIT,
    PUT_DATA,
    PUT_DONE,
    PUT_OPEN,
    PUT_READY,
    READ,
    REQUESTS,
    SESSION_END,
    SET_PREFIX,
    SPACE,
    SPACE_R,
    STAT,
    STAT_R,
    VERIFY,
    VERIFY_R,
)

# Drop the two protocol modules now, before the rest of the firmware loads: this module
# holds what the firmware needs of them.
del sys.modules["protocol.messages"], sys.modules["protocol.errors"]
del protocol.messages, protocol.errors
