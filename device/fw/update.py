"""FIRMWARE requests at run time: receive an image, have it installed, confirm it.

The image travels like any object (``fw.store``'s put: resumable, digest checked at the
end), as ``sealkeep-firmware.img``, and the drive installs it at its next boot
(``fw.install``, before the link takes its buffers). The steps (field 1,
``protocol.messages.FIRMWARE_STEPS``): *open* (2 size, 3 SHA-256: answers PUT_READY with
how much of that image the drive holds, so a broken transfer resumes), *data* (2 offset,
3 bytes: PUT_ACK), *install* (the image is whole and matches its digest: the drive
restarts to install it), *confirm* (the firmware on trial stays: the security counter
floor rises to its counter, and the drive restarts with a clean heap), and, answered by
``fw.wire`` without loading this module, *reboot* and *status* (FIRMWARE_R: the running
version and counter, and the files below as they are).

In an owner's session the heap has no room for this module, so an owner sends the image
with PUT and asks for a reboot, and confirms an image on trial by storing the object
``sealkeep-firmware.ok`` ("SLOT VERSION" of it) and asking for a reboot: ``run()`` acts
on both at boot. A blank drive, which has no sessions, takes open, data, install and
confirm.

Under ``slot/`` in the flash root (see also ``fw/install.py``):

- ``record``: the boot record ``ACTIVE PREVIOUS STATE FLOOR``; STATE 0 confirmed, 2 on
  trial (awaiting confirmation); FLOOR is the lowest security counter the drive accepts;
- ``trying``: there from an install until the new image's first boot (board.init): a
  later boot on trial without confirmation goes back to the previous slot;
- ``result``: how the last install went, ``CODE TEXT`` (0: installed);

Open, data and confirm need an owner session, or a blank drive (it holds nothing; the
signature is what protects it); status, installing an image the drive already holds, and
a reboot are anyone's. A firmware built without a vendor key
(the source tree's) accepts no update. The store checks an image's size (FULL).

This module is loaded for FIRMWARE requests while the link holds its buffers, and a drive
keeps every new name and short string it meets for good (a few more past the ones it has,
and its table of names grows by 3.5 KiB): so ids and codes are compile-time constants,
names are ones the drive already has, and string literals are long.
"""

import os

import board
from micropython import const

from fw.state import write_atomic
from fw.store import StoreError
from fw.version import VERSION
from fw.wire import WireError, drop, reboot

# protocol.messages and protocol.errors (tests check that these agree)
_OPEN = const(0)
_DATA = const(1)
_INSTALL = const(2)
_CONFIRM = const(3)
_OK = const(0x80)
_PUT_READY = const(0x93)
_PUT_ACK = const(0x94)
_BAD_BODY = const(5)
_WRONG_STATE = const(10)
_NOT_AUTHENTICATED = const(11)
_FULL = const(22)
_BAD_OFFSET = const(23)
_DIGEST_MISMATCH = const(24)
_NO_PUT_OPEN = const(25)


def read() -> list:
    """The boot record [active, previous, state, floor]; [] without one (the source
    tree's firmware has no slots)."""
    try:
        with open(board.root() + "/slot/record") as f:
            return f.read().split()
    except OSError:
        return []


def run() -> None:
    """At boot (board.init: a later boot on trial, or an image waiting), before the link
    takes the heap: an image on trial whose owner stored the confirmation naming it
    (slot and version) is confirmed, and the drive restarts with a clean heap; the rest
    (a trial never confirmed, an image to install) is fw.install's."""
    r = read()
    root = board.root()
    path = root + "/obj/sealkeep-firmware.ok"  # an owner's confirmation (see above)
    try:
        with open(path, "rb") as f:
            f.seek(40)  # the store's header: SHA-256 and size
            mark = f.read(40).decode()
        os.remove(path)
    except (OSError, ValueError):
        mark = ""
    if int(r[2]) == 2 and mark == f"{r[0]} {VERSION[0]}":
        floor = max(int(r[3]), VERSION[1])
        write_atomic(root + "/slot/record", f"{r[0]} {r[1]} 0 {floor}\n".encode())
        board.reboot()
    from fw import install

    install.run()
    drop()


def call(link, msg_id: int, body: dict) -> tuple:
    # One function, few names and strings: what this module takes of the heap is what
    # the drive has left over in a session.
    step = body[1]  # reboot and status are fw.wire's
    r = read()
    path = board.root() + "/slot/record"
    if step != _INSTALL and not (link.state.blank or (link.session and not link.session.role)):
        # Installing an image the drive holds is anyone's: only an owner (or anyone, on
        # a blank drive) can have sent it, and its vendor must have signed it.
        raise WireError(_NOT_AUTHENTICATED, "needs an owner session")
    if step == _CONFIRM:  # the firmware on trial stays; the floor rises to its counter
        if len(r) != 4 or int(r[2]) not in (0, 2):
            raise WireError(_WRONG_STATE, "no new firmware running to confirm")
        if not int(r[2]):
            return _OK, {}
        write_atomic(path, f"{r[0]} {r[1]} 0 {max(int(r[3]), VERSION[1])}\n".encode())
    else:  # open, data, install
        if VERSION[2] is None or len(r) != 4:
            raise WireError(_WRONG_STATE, "firmware without a vendor key: no updates")
        if int(r[2]):
            raise WireError(_WRONG_STATE, "new firmware on trial: confirm it or reboot")
        store = link.store
        n = body.get(2)
        data = body.get(3)
        if step < _INSTALL and not (isinstance(n, int) and isinstance(data, memoryview)):
            raise WireError(_BAD_BODY, "open and data need field 2 (uint) and 3 (bytes)")
        try:
            if step == _OPEN:
                return _PUT_READY, {1: store.put_open("sealkeep-firmware.img", n, data)}
            if step == _DATA:
                return _PUT_ACK, {1: store.put_write(n, data)}
            if step != _INSTALL:
                raise WireError(_BAD_BODY, f"no firmware step {step}")
            try:
                store.put_commit("sealkeep-firmware.img")  # checks the digest
            except StoreError as exc:
                if exc.kind != "NO_PUT_OPEN":
                    raise
            store.stat("sealkeep-firmware.img")  # from open and data, or an owner's PUT
        except StoreError as exc:
            # the store's kinds as protocol codes (fw.storage maps them likewise)
            kinds = ("BAD_SIZE", "NOT_FOUND", "FULL", "BAD_OFFSET", "DIGEST_MISMATCH")
            codes = (_BAD_BODY, _NO_PUT_OPEN, _FULL, _BAD_OFFSET, _DIGEST_MISMATCH)
            code = codes[kinds.index(exc.kind)] if exc.kind in kinds else _NO_PUT_OPEN
            if exc.expected is None:
                raise WireError(code, exc.text) from None
            raise WireError(code, exc.text, expected=exc.expected) from None
        try:
            os.remove(board.root() + "/slot/result")  # news of the last install is old
        except OSError:
            pass
    reboot()
    return _OK, {}
