"""Firmware install and rollback at boot (fw.update.run calls this, from board.init, before
the link takes its buffers, so all of the heap is free).

- STATE 2 at boot (see fw/update.py): the image on trial was never confirmed; the previous
  slot becomes active again, and the drive restarts into it.
- STATE 0 and an image waiting, the store object ``sealkeep-firmware.img`` (``obj/NAME``:
  its SHA-256, its size as 8 bytes big-endian, then the image): it is checked, in order: its
  header and manifest are well formed, the manifest names the vendor key this firmware
  trusts, its security counter is not below the drive's, the Ed25519 signature verifies
  (``fw.ed25519``), and every file's SHA-256 as it is copied into the other slot. Only
  then does one rename of the boot record make the new slot active, on trial (state 2,
  with ``slot/trying`` for its first boot); ``slot/NAME.info`` holds its
  ``VERSION COUNTER``. Whatever happens, ``slot/result``
  says how it went (``CODE TEXT``, 0: installed), the image is removed (an installed one
  just before that rename), and the drive restarts. A power cut before the image is
  removed leaves the drive as it was, with the image, and the install runs again at the
  next boot; one between its removal and the rename leaves the drive as it was, without
  it (the host sends it again).

The image: ``"SKFW" | format 1 | manifest length u16 BE | manifest | signature (64) |
files``; the manifest is a CBOR map {1 version, 2 counter, 3 [[path, size, sha256], ...],
4 vendor key}; the signature is Ed25519 over ``LABEL | SHA-256(manifest)``.
"""

import gc
import hashlib
import os
import sys

import board
from micropython import const

import fw
from fw.state import write_atomic
from fw.version import VERSION
from fw.wire import WireError
from protocol import cbor

# protocol.errors (tests check that these agree)
_DIGEST_MISMATCH = const(24)
_INTERNAL = const(30)
_BAD_IMAGE = const(33)
_BAD_SIGNATURE = const(34)
_WRONG_VENDOR = const(35)
_DOWNGRADE = const(36)

_HEAD = const(40)  # the image file's header: SHA-256 and size
LABEL = b"sealkeep firmware image 1\x00"
PATH_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"


def run() -> None:
    base = board.root() + "/slot/"
    with open(base + "record") as f:
        r = f.read().split()
    if r[2] == "2" and r[1] != "-":
        board.log("slot " + r[0] + " was never confirmed: back to slot " + r[1])
        write_atomic(base + "record", f"{r[1]} - 0 {r[3]}\n".encode())
    elif r[2] == "0" and exists(image()):
        try:
            text = unpack(base, r)
            code = 0
        except WireError as exc:
            code = exc.code
            text = exc.text
        except Exception as exc:  # whatever it was, the firmware that runs must go on
            code = _INTERNAL
            text = repr(exc)
        write_atomic(base + "result", f"{code} {text}".encode())
        try:
            os.remove(image())  # refused: not to be tried again (an installed one is gone)
        except OSError:
            pass
        board.log("install: " + text)
    else:
        return
    board.reboot()


def unpack(base: str, r: list) -> str:
    floor = max(int(r[3]), VERSION[1])
    buf = bytearray(512)
    mv = memoryview(buf)
    with open(image(), "rb") as f:
        want = f.read(_HEAD)
        h = hashlib.sha256()
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
        if h.digest() != want[:32]:
            raise WireError(_DIGEST_MISMATCH, "the image changed since it was received")
        f.seek(_HEAD)
        head = f.read(7)
        if head[:5] != b"SKFW\x01":
            raise WireError(_BAD_IMAGE, "not a firmware image of format 1")
        raw = f.read(int.from_bytes(head[5:7], "big"))
        sig = f.read(64)
        try:
            m: dict = cbor.decode(raw)  # type: ignore[assignment]
            version, counter, files, key = m[1], m[2], m[3], m[4]
            ok = isinstance(version, str) and isinstance(files, list)
            ok = ok and isinstance(counter, int) and len(sig) == 64
        except Exception:  # not CBOR, not a map, fields missing
            ok = False
        if not ok:
            raise WireError(_BAD_IMAGE, "malformed manifest")
        if key != VERSION[2]:
            raise WireError(_WRONG_VENDOR, "signed with another vendor key")
        if counter < floor:
            raise WireError(_DOWNGRADE, f"security counter {counter} is below {floor}")
        if not verify(LABEL + hashlib.sha256(raw).digest(), sig):
            raise WireError(_BAD_SIGNATURE, "the signature does not verify")
        del raw, m
        target = "b" if r[0] == "a" else "a"
        tree = base + target
        rmtree(tree)
        try:
            os.remove(tree + ".info")
        except OSError:
            pass
        os.mkdir(tree)
        for entry in files:
            copy(f, tree, entry, mv)
        if f.read(1):
            raise WireError(_BAD_IMAGE, "bytes after the last file")
    write_atomic(tree + ".info", f"{version} {counter}\n".encode())
    write_atomic(base + "trying", b"")  # its first boot goes on (board.init)
    # The image is used up before the switch: still there after it (a power cut before
    # run() removes it), it would be installed a second time once this one is confirmed,
    # over the previous firmware, and the drive put on trial again.
    os.remove(image())
    # The switch: one rename. Until here the drive boots what it ran.
    write_atomic(base + "record", f"{target} {r[0]} 2 {r[3]}\n".encode())
    return f"firmware {version} (counter {counter}) installed in slot {target}"


def exists(path: str) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def image() -> str:
    """Where the store keeps the image object (fw.update)."""
    return board.root() + "/obj/sealkeep-firmware.img"


def verify(message: bytes, sig: bytes) -> bool:
    """Ed25519 with the trusted key; the verifier is loaded for this and dropped after."""
    gc.collect()
    from fw import ed25519

    try:
        return ed25519.verify(VERSION[2], message, sig)  # type: ignore[arg-type]
    finally:
        del sys.modules["fw.ed25519"], fw.ed25519
        gc.collect()


def rmtree(path: str) -> None:
    try:
        entries = [e[:2] for e in os.ilistdir(path)]
    except OSError:
        return
    for name, kind in entries:
        if kind == 0x4000:
            rmtree(path + "/" + name)
        else:
            os.remove(path + "/" + name)
    os.rmdir(path)


def copy(f, tree: str, entry: object, mv: memoryview) -> None:
    """One file of the image into the slot, its name and SHA-256 checked."""
    if not (isinstance(entry, list) and len(entry) == 3):
        raise WireError(_BAD_IMAGE, "malformed file entry")
    path, n, digest = entry
    raw = path.encode() if isinstance(path, str) else b""
    parts = raw.split(b"/")
    if not 0 < len(parts) <= 2 or not isinstance(n, int) or n < 0:
        raise WireError(_BAD_IMAGE, "bad file entry")
    for i, part in enumerate(parts):
        if i == len(parts) - 1:  # the file: NAME.mpy or NAME.py
            cut = 4 if part.endswith(b".mpy") else 3 if part.endswith(b".py") else len(part)
            part = part[:-cut]
        if not part:
            raise WireError(_BAD_IMAGE, "bad file name")
        for ch in part:
            if PATH_CHARS.find(bytes([ch])) < 0:
                raise WireError(_BAD_IMAGE, "bad file name")
    if len(parts) == 2:
        try:
            os.mkdir(tree + "/" + parts[0].decode())
        except OSError:
            pass
    h = hashlib.sha256()
    left = n
    with open(tree + "/" + path, "wb") as out:
        while left:
            k = f.readinto(mv[: min(left, len(mv))])
            if not k:
                raise WireError(_BAD_IMAGE, "image ends inside " + path)
            h.update(mv[:k])
            out.write(mv[:k])
            left -= k
    if h.digest() != digest:
        raise WireError(_BAD_IMAGE, path + " does not match its SHA-256")
