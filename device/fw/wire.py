"""Errors a handler raises to answer with an ERROR frame, request body checks, and the
dispatch of firmware requests."""

import gc
import sys

import board

import fw


class WireError(Exception):
    """An error reply: a protocol error code, a short text and optional extra fields,
    by name: ``expected`` (ERROR field 3), ``retry_ms`` (field 4)."""

    def __init__(self, code: int, text: str, **extra: int) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.extra = extra


_TYPES = {"u": int, "b": memoryview, "t": str, "?": bool, "a": list, "m": dict}


def check(schema: dict, body: object) -> "str | None":
    """``protocol.messages.check`` for bodies decoded with byte strings as views: None if
    body fits schema, else what is wrong (the same words)."""
    if not isinstance(body, dict):
        return "body must be a map"
    for key, spec in schema.items():
        if key not in body:
            if spec[2]:
                return f"missing field {key} ({spec[0]})"
            continue
        value = body[key]
        kind = spec[1]
        if value is None and len(kind) == 2 and kind.endswith("?"):
            continue
        t = _TYPES[kind[0]]
        bad = not isinstance(value, t)
        if t is int and not bad:
            bad = isinstance(value, bool) or value < 0
        if bad:
            return f"field {key} ({spec[0]}) has the wrong type"
    return None


def call(link, msg_id: int, body: dict) -> tuple:
    """FIRMWARE (routed here by main.py). Its reboot and status steps are anyone's (what
    pulling the plug does, and what HELLO says; a reboot on trial is the owner's) and
    answered here: an owner asks for them
    in a session, where the heap has no room for more code. The other steps load
    ``fw.update``, which stays while an image arrives (loading it for every frame would
    fragment the heap); the next HELLO drops it (``drop()``) if the drive has not
    restarted by then."""
    step = body.get(1)
    if step == 4:  # protocol.messages.FIRMWARE_STEPS: reboot
        # A reboot on trial sends the drive back to its old firmware: only its owner (or
        # anyone, on a blank drive) may choose that; pulling the plug stays everyone's.
        sess = link.session
        if not (link.state.blank or (sess and sess.role == 0)):
            try:
                with open(board.root() + "/slot/record") as f:
                    trial = f.read(200).split()[2] == "2"
            except (OSError, IndexError):
                trial = False
            if trial:
                raise WireError(11, "new firmware on trial: only its owner may restart it")
        reboot()
        return 0x80, {}  # OK
    if step == 5:  # status: FIRMWARE_R, the running firmware and the files of fw.update
        from fw.version import VERSION

        root = board.root()  # it stats every folder of the path: once
        reply = {1: VERSION[0], 2: VERSION[1], 7: VERSION[2]}
        for i, path in enumerate("/slot/record /slot/a.info /slot/b.info /slot/result".split()):
            try:
                with open(root + path) as f:
                    reply[3 + i] = f.read(200).strip()
            except OSError:
                pass
        return 0xA0, reply
    from fw import update

    return update.call(link, msg_id, body)


def reboot() -> None:
    """Restart once the reply is written (the link writes a reply with one write_all):
    into a new image, to install one, or with a clean heap."""
    send = board.write_all

    def write_all(data: memoryview) -> None:
        send(data)
        board.reboot()

    board.write_all = write_all


def drop() -> None:
    """Unload ``fw.update``, if loaded: a drive that is not being updated keeps that heap
    for data."""
    if "fw.update" in sys.modules:
        del sys.modules["fw.update"], fw.update
        gc.collect()
