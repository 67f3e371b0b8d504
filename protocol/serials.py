"""Drive serials: one rule for the host and the drive.

A serial is what the firmware makes of the chip's unique id (SK- and hex) or what a
technician provisions, often the manufacturer's plain hex or decimal serial. It is bound
into every authentication transcript and names the drive's folders, so it stays plain:
SERIAL_RULE. A module of its own, so the drive loads only this for it.
"""

SERIAL_MIN = 4
SERIAL_MAX = 32
SERIAL_RULE = "4 to 32 letters, digits and dashes, starting with a letter or digit"


def _alnum(ch: int) -> bool:
    return 0x30 <= ch <= 0x39 or 0x41 <= ch <= 0x5A or 0x61 <= ch <= 0x7A


def serial_problem(serial: object) -> "str | None":
    """None for a good drive serial, else what is wrong with it (to follow "bad serial")."""
    if not isinstance(serial, str):
        return "it is not text"
    raw = serial.encode("utf-8")
    if len(raw) < SERIAL_MIN:
        return "it is shorter than 4 characters"
    if len(raw) > SERIAL_MAX:
        return "it is longer than 32 characters"
    if not _alnum(raw[0]):
        return "it must start with a letter or digit"
    for ch in raw:
        if ch != 0x2D and not _alnum(ch):
            return "it may hold only letters, digits and dashes"
    return None


def serial_ok(serial: object) -> bool:
    """Whether serial is a drive serial (SERIAL_RULE); the host and the drive both check it."""
    return serial_problem(serial) is None
