"""The backup set: its manifest, and the container a drive stores.

A set is one file on every drive of the domain::

    "SKSET" ‖ format (1 byte) ‖ header length (u32, big-endian) ‖ header ‖ sealed body

- The **header** is canonical CBOR, readable without the HSM so ``sets`` can list a drive:
  set id, created, label, token, domain id, key count and the wrapped set key (KEK).
- The **body** is the manifest proper (every object's attributes and wrapped value), sealed
  with AES-256-GCM under the set's manifest key. That key lives only in the HSM (unwrapped
  there with the domain's seal key), so sealing and opening happen inside the HSM; the magic,
  length and header bytes are the GCM additional data, so a header edited on a drive fails
  authentication too.

Format 2 (key hierarchy 2) carries two wrapped keys in the header: the KEK, which wraps the
set's keys and does nothing else, and the manifest key, which seals the body and does nothing
else. Format 1 (sets made before) has the KEK alone, which did both; it is still read.
Format 3 is a set of another profile than ``standard`` (``sealkeep.hsm_caps``): its header
names the profile and carries a third wrapped key, the manifest's MAC key; the body is sealed
by the profile's construction (AES-CBC-PAD then HMAC-SHA256 for ``portable``). The header,
profile included, is authenticated with the body either way.
Format 4, what a backup makes now, is format 3 for every profile (its header always names
the profile, ``standard`` included) with the body compressed (zlib, RFC 1950) before it is
sealed: the attributes of a slot's keys repeat from key to key, so a set takes about a third
of the room and of the time on the wire. It is decompressed only once it has authenticated,
and never beyond :data:`MAX_BODY_LEN`.

Nothing here talks to an HSM: sealing goes through a :class:`Sealer` (``sealkeep.hsm``'s set
key is one; :class:`AesGcmSealer` is the same construction with a key held in memory).
"""

from __future__ import annotations

import secrets
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Protocol

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import SealkeepError

MAGIC = b"SKSET"
FORMAT_SHARED_KEK = 1
FORMAT_VERSION = 2
FORMAT_PROFILED = 3
FORMAT_COMPRESSED = 4
FORMATS = (FORMAT_SHARED_KEK, FORMAT_VERSION, FORMAT_PROFILED, FORMAT_COMPRESSED)
STANDARD_PROFILE = 1
PREFIX_LEN = len(MAGIC) + 1 + 4  # magic, format byte, header length
MAX_HEADER_LEN = 64 * 1024
MAX_BODY_LEN = 256 * 1024 * 1024  # a decompressed body; a full drive's sets hold far less
SET_ID_LEN = 16
NONCE_LEN = 12
TAG_LEN = 16

# PKCS#11 attribute types used to describe entries (numeric, so no PKCS#11 import is needed).
CKA_CLASS = 0x000
CKA_LABEL = 0x003
CKA_ID = 0x102
CKA_KEY_TYPE = 0x100

_INT_TYPE = frozenset({int})
_DICT_TYPE = frozenset({dict})
_WRAPPED_TYPES = frozenset({bytes, type(None)})
_VALUE_TYPES = frozenset({bool, int, bytes, str})

AttrValue = bool | int | bytes | str
"""What an attribute value may be: PKCS#11 enums are plain ints, dates raw ``YYYYMMDD`` bytes."""

Attributes = dict[int, AttrValue]
"""PKCS#11 attribute type (CKA_*) -> value."""


class ManifestError(SealkeepError):
    """A set container or manifest is malformed, tampered with, or sealed under another key."""


class Sealer(Protocol):
    """Authenticated encryption under a set's key (AES-GCM inside the HSM, normally).

    ``unseal`` raises a :class:`~sealkeep.errors.SealkeepError` when the data does not
    authenticate.
    """

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unseal(self, sealed: bytes, aad: bytes) -> bytes: ...


class SealerUnavailable(SealkeepError):
    """The sealer cannot work at all (its HSM lacks the mechanism): says nothing of the data,
    so :func:`unseal` passes it on instead of calling the data unauthentic."""


class AesGcmSealer:
    """The :class:`Sealer` construction (``nonce ‖ ciphertext ‖ tag``) with an in-memory key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < NONCE_LEN + TAG_LEN:
            raise ManifestError("sealed data is truncated")
        try:
            return self._aead.decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], aad)
        except InvalidTag:
            raise ManifestError("sealed data does not authenticate") from None


@dataclass(frozen=True)
class TokenInfo:
    """The token a set was taken from."""

    slot_id: int
    label: str
    serial: str
    model: str = ""
    manufacturer: str = ""

    def to_cbor(self) -> dict[str, Any]:
        return {
            "slot": self.slot_id,
            "label": self.label,
            "serial": self.serial,
            "model": self.model,
            "manufacturer": self.manufacturer,
        }

    @classmethod
    def from_cbor(cls, obj: object) -> TokenInfo:
        m = _map(obj, "token")
        return cls(
            slot_id=_int(m, "slot"),
            label=_str(m, "label"),
            serial=_str(m, "serial"),
            model=_str(m, "model", ""),
            manufacturer=_str(m, "manufacturer", ""),
        )


@dataclass(frozen=True)
class KeyEntry:
    """One object of the set: every attribute that matters, and its wrapped value.

    ``wrapped`` is the value wrapped under the set's KEK for secret and private keys, and
    None for public keys and certificates (their attributes carry everything).
    """

    attributes: Attributes
    wrapped: bytes | None = field(default=None, repr=False)

    @property
    def object_class(self) -> int:
        value = self.attributes.get(CKA_CLASS)
        return value if isinstance(value, int) and not isinstance(value, bool) else -1

    @property
    def key_type(self) -> int | None:
        value = self.attributes.get(CKA_KEY_TYPE)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def label(self) -> str:
        value = self.attributes.get(CKA_LABEL)
        return value if isinstance(value, str) else ""

    @property
    def id(self) -> bytes:
        value = self.attributes.get(CKA_ID)
        return value if isinstance(value, bytes) else b""

    def to_cbor(self) -> dict[str, Any]:
        return {"attrs": dict(self.attributes), "wrapped": self.wrapped}

    @classmethod
    def from_cbor(cls, obj: object) -> KeyEntry:
        m = _map(obj, "key entry")
        attrs = m.get("attrs")
        if not isinstance(attrs, dict):
            raise ManifestError("key entry lacks its attributes")
        # Checked by the set of types present (a set of ten thousand entries is opened in a
        # blink); an entry that fails is then looked at key by key to name the culprit.
        if not (
            {type(key) for key in attrs} <= _INT_TYPE
            and {type(value) for value in attrs.values()} <= _VALUE_TYPES
            and (not attrs or min(attrs) >= 0)
        ):
            for key, value in attrs.items():
                if type(key) is not int or key < 0:
                    raise ManifestError(f"key entry has a bad attribute type {key!r}")
                if type(value) not in _VALUE_TYPES:
                    raise ManifestError(f"key entry attribute 0x{key:x} has a bad value")
        checked: Attributes = dict(attrs)
        wrapped = m.get("wrapped")
        if wrapped is not None and not isinstance(wrapped, bytes):
            raise ManifestError("key entry has a bad wrapped value")
        return cls(checked, wrapped)


@dataclass(frozen=True)
class SkippedEntry:
    """An object of the slot that is not in the set, and why (e.g. not extractable)."""

    object_class: int
    label: str
    id: bytes
    reason: str
    refused: bool = False
    """The token refused an object it marks extractable (not a loss its policy explains)."""

    def to_cbor(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "class": self.object_class,
            "label": self.label,
            "id": self.id,
            "why": self.reason,
        }
        if self.refused:
            body["refused"] = True
        return body

    @classmethod
    def from_cbor(cls, obj: object) -> SkippedEntry:
        m = _map(obj, "skipped entry")
        refused = m.get("refused", False)
        if not isinstance(refused, bool):
            raise ManifestError("a skipped entry has a bad refused flag")
        return cls(_int(m, "class"), _str(m, "label"), _bytes(m, "id"), _str(m, "why"), refused)


@dataclass(frozen=True)
class SetHeader:
    """What anyone can read of a set without the HSM."""

    set_id: bytes
    created: int
    label: str
    token: TokenInfo
    domain_id: bytes
    key_count: int
    wrapped_kek: bytes = field(repr=False)
    wrapped_manifest_key: bytes | None = field(default=None, repr=False)
    wrapped_mac_key: bytes | None = field(default=None, repr=False)
    profile: int = STANDARD_PROFILE
    compressed: bool = False
    """The body is compressed before it is sealed (format 4)."""

    @property
    def format_version(self) -> int:
        if self.compressed:
            return FORMAT_COMPRESSED
        if self.profile != STANDARD_PROFILE:
            return FORMAT_PROFILED
        return FORMAT_SHARED_KEK if self.wrapped_manifest_key is None else FORMAT_VERSION

    @property
    def set_id_hex(self) -> str:
        return self.set_id.hex()

    def to_cbor(self) -> dict[str, Any]:
        fields = {
            "set_id": self.set_id,
            "created": self.created,
            "label": self.label,
            "token": self.token.to_cbor(),
            "domain_id": self.domain_id,
            "keys": self.key_count,
            "wrapped_kek": self.wrapped_kek,
        }
        if self.wrapped_manifest_key is not None:
            fields["wrapped_manifest_key"] = self.wrapped_manifest_key
        if self.profile != STANDARD_PROFILE or self.compressed:
            fields["profile"] = self.profile
            if self.wrapped_mac_key is not None:
                fields["wrapped_mac_key"] = self.wrapped_mac_key
        return fields

    def encode(self) -> bytes:
        return bytes(cbor2.dumps(self.to_cbor(), canonical=True))

    @classmethod
    def from_cbor(cls, obj: object, format_version: int = FORMAT_VERSION) -> SetHeader:
        m = _map(obj, "set header")
        set_id = _bytes(m, "set_id")
        if len(set_id) != SET_ID_LEN:
            raise ManifestError(f"set id has {len(set_id)} bytes, not {SET_ID_LEN}")
        compressed = format_version == FORMAT_COMPRESSED
        profiled = format_version == FORMAT_PROFILED or compressed
        profile = _int(m, "profile") if profiled else STANDARD_PROFILE
        if format_version == FORMAT_PROFILED and profile == STANDARD_PROFILE:
            raise ManifestError("a set of format 3 names the standard profile")
        return cls(
            set_id=set_id,
            created=_int(m, "created"),
            label=_str(m, "label"),
            token=TokenInfo.from_cbor(m.get("token")),
            domain_id=_bytes(m, "domain_id"),
            key_count=_int(m, "keys"),
            wrapped_kek=_bytes(m, "wrapped_kek"),
            wrapped_manifest_key=(
                _bytes(m, "wrapped_manifest_key") if format_version != FORMAT_SHARED_KEK else None
            ),
            wrapped_mac_key=_bytes(m, "wrapped_mac_key") if "wrapped_mac_key" in m else None,
            profile=profile,
            compressed=compressed,
        )


@dataclass(frozen=True)
class Manifest:
    """A backup set: where it came from, its wrapped KEK, and every object in it."""

    set_id: bytes
    created: int
    label: str
    token: TokenInfo
    domain_id: bytes
    wrapped_kek: bytes = field(repr=False)
    entries: tuple[KeyEntry, ...] = ()
    audit_head: bytes | None = None
    """The service's audit log head when the set was made, sealed with the body; None in
    sets made without one."""
    skipped: tuple[SkippedEntry, ...] = ()
    wrapped_manifest_key: bytes | None = field(default=None, repr=False)
    wrapped_mac_key: bytes | None = field(default=None, repr=False)
    profile: int = STANDARD_PROFILE
    compressed: bool = False
    """Its body is compressed before it is sealed (format 4)."""

    @classmethod
    def new(
        cls,
        *,
        label: str,
        audit_head: bytes | None = None,
        token: TokenInfo,
        domain_id: bytes,
        wrapped_kek: bytes,
        wrapped_manifest_key: bytes | None = None,
        entries: Sequence[KeyEntry] = (),
        skipped: Sequence[SkippedEntry] = (),
        created: int | None = None,
        wrapped_mac_key: bytes | None = None,
        profile: int = STANDARD_PROFILE,
    ) -> Manifest:
        """A manifest with a fresh random set id, created now unless told otherwise; of
        format 4 (its body compressed) unless it is of the old key hierarchy (format 1)."""
        return cls(
            set_id=secrets.token_bytes(SET_ID_LEN),
            created=int(time.time()) if created is None else created,
            label=label,
            audit_head=audit_head,
            token=token,
            domain_id=domain_id,
            wrapped_kek=wrapped_kek,
            entries=tuple(entries),
            skipped=tuple(skipped),
            wrapped_manifest_key=wrapped_manifest_key,
            wrapped_mac_key=wrapped_mac_key,
            profile=profile,
            compressed=wrapped_manifest_key is not None,
        )

    @property
    def set_id_hex(self) -> str:
        return self.set_id.hex()

    @property
    def header(self) -> SetHeader:
        return SetHeader(
            set_id=self.set_id,
            created=self.created,
            label=self.label,
            token=self.token,
            domain_id=self.domain_id,
            key_count=len(self.entries),
            wrapped_kek=self.wrapped_kek,
            wrapped_manifest_key=self.wrapped_manifest_key,
            wrapped_mac_key=self.wrapped_mac_key,
            profile=self.profile,
            compressed=self.compressed,
        )

    def body(self) -> bytes:
        """The canonical CBOR of what gets sealed.

        The entries, most of a set, are encoded as they stand once each one's attributes are
        in canonical order (numeric, for attribute types); cbor2's canonical mode would sort
        every map again, which takes longer than the encoding itself.
        """
        fields: dict[str, Any] = {
            "set_id": self.set_id,
            "entries": _ENTRIES,
            "skipped": [entry.to_cbor() for entry in self.skipped],
        }
        if self.audit_head is not None:
            fields["audit_head"] = self.audit_head
        parts = [bytes([0xA0 | len(fields)])]  # a map of fewer than 24 pairs
        for key, value in sorted(fields.items(), key=lambda pair: _canonical_order(pair[0])):
            parts.append(cbor2.dumps(key))
            if value is _ENTRIES:
                parts.append(cbor2.dumps(_canonical_entries(self.entries)))
            else:
                parts.append(cbor2.dumps(value, canonical=True))
        return b"".join(parts)


_ENTRIES = object()  # where the entries go among the body's fields


def _canonical_order(key: str) -> tuple[int, bytes]:
    """How canonical CBOR orders a map key: its encoding's length, then its bytes."""
    encoded = bytes(cbor2.dumps(key))
    return len(encoded), encoded


def _canonical_entries(entries: Sequence[KeyEntry]) -> list[dict[str, Any]]:
    """The entries as maps whose canonical order is their order: ``"attrs"`` before
    ``"wrapped"``, and attribute types ascending (for non-negative integers the canonical
    order). Attributes are reordered only where they are not in that order already; an
    entry with any other kind of key goes through cbor2's canonical mode on its own."""
    orders: dict[tuple[Any, ...], tuple[int, ...] | None] = {}
    result: list[dict[str, Any]] = []
    for entry in entries:
        attrs = entry.attributes
        kinds = tuple(attrs)
        try:
            order = orders[kinds]
        except KeyError:
            if not all(type(kind) is int and kind >= 0 for kind in kinds):
                result.append(cbor2.loads(cbor2.dumps(entry.to_cbor(), canonical=True)))
                continue
            ascending = tuple(sorted(kinds))
            order = orders[kinds] = None if ascending == kinds else ascending
        if order is not None:
            attrs = {kind: attrs[kind] for kind in order}
        result.append({"attrs": attrs, "wrapped": entry.wrapped})
    return result


# --- container ----------------------------------------------------------------------------


def _prefix(header: SetHeader) -> bytes:
    header_bytes = header.encode()
    version = bytes([header.format_version])
    return MAGIC + version + struct.pack(">I", len(header_bytes)) + header_bytes


def seal(manifest: Manifest, sealer: Sealer) -> bytes:
    """The container for ``manifest``, its body sealed by ``sealer`` (the set's manifest key)."""
    prefix = _prefix(manifest.header)
    body = manifest.body()
    if manifest.compressed:
        body = zlib.compress(body)
    return prefix + sealer.seal(body, prefix)


def header_length(data: bytes) -> int:
    """How many leading bytes of a container hold its header (needs :data:`PREFIX_LEN`)."""
    if len(data) < PREFIX_LEN:
        raise ManifestError(f"set data is truncated ({len(data)} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise ManifestError("not a sealkeep backup set (bad magic)")
    version = data[len(MAGIC)]
    if version not in FORMATS:
        raise ManifestError(f"backup set format {version} is not supported")
    length = int.from_bytes(data[len(MAGIC) + 1 : PREFIX_LEN], "big")
    if length > MAX_HEADER_LEN:
        raise ManifestError(f"backup set header claims {length} bytes")
    return PREFIX_LEN + length


def read_header(data: bytes) -> SetHeader:
    """The unsealed header of a container (the whole container or just its first bytes).

    Not authenticated on its own: :func:`unseal` checks it along with the body.
    """
    end = header_length(data)
    if len(data) < end:
        raise ManifestError("backup set header is truncated")
    try:
        obj = cbor2.loads(data[PREFIX_LEN:end])
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ManifestError(f"backup set header is not valid CBOR ({exc})") from None
    return SetHeader.from_cbor(obj, data[len(MAGIC)])


def unseal(data: bytes, sealer: Sealer) -> Manifest:
    """Authenticate and decode a container; raises :class:`ManifestError` when tampered."""
    header = read_header(data)
    end = header_length(data)
    try:
        body = sealer.unseal(data[end:], data[:end])
    except SealerUnavailable:
        raise
    except SealkeepError as exc:
        raise ManifestError(
            f"backup set {header.set_id_hex} does not authenticate: it was altered, is "
            "corrupt, or was sealed under another key"
        ) from exc
    if header.compressed:
        body = _decompressed(body)
    try:
        obj = cbor2.loads(body)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ManifestError(f"backup set body is not valid CBOR ({exc})") from None
    m = _map(obj, "manifest body")
    if _bytes(m, "set_id") != header.set_id:
        raise ManifestError("backup set body belongs to another set")
    entries = m.get("entries")
    skipped = m.get("skipped", [])
    if not isinstance(entries, list) or not isinstance(skipped, list):
        raise ManifestError("backup set body lacks its entry lists")
    audit_head = m.get("audit_head")
    if audit_head is not None and not isinstance(audit_head, bytes):
        raise ManifestError("backup set body's audit head is not bytes")
    manifest = Manifest(
        set_id=header.set_id,
        created=header.created,
        label=header.label,
        audit_head=audit_head,
        token=header.token,
        domain_id=header.domain_id,
        wrapped_kek=header.wrapped_kek,
        entries=_key_entries(entries),
        skipped=tuple(SkippedEntry.from_cbor(e) for e in skipped),
        wrapped_manifest_key=header.wrapped_manifest_key,
        wrapped_mac_key=header.wrapped_mac_key,
        profile=header.profile,
        compressed=header.compressed,
    )
    if len(manifest.entries) != header.key_count:
        raise ManifestError(
            f"backup set header says {header.key_count} keys, body holds {len(manifest.entries)}"
        )
    return manifest


def _key_entries(items: list[Any]) -> tuple[KeyEntry, ...]:
    """The entries of a body, checked as :meth:`KeyEntry.from_cbor` checks one, but across
    all of them at once (a set of ten thousand keys opens in a blink); when any check fails
    they are read one by one, which names the culprit."""
    try:
        attrs = [item["attrs"] for item in items]
        wrapped = [item.get("wrapped") for item in items]
    except (TypeError, KeyError, AttributeError):
        attrs = wrapped = []
    if (
        len(attrs) == len(items)
        and {type(item) for item in items} <= _DICT_TYPE
        and set(map(type, attrs)) <= _DICT_TYPE
        and set(map(type, chain.from_iterable(attrs))) <= _INT_TYPE
        and set(map(type, chain.from_iterable(map(dict.values, attrs)))) <= _VALUE_TYPES
        and min(chain.from_iterable(attrs), default=0) >= 0
        and set(map(type, wrapped)) <= _WRAPPED_TYPES
    ):
        return tuple(map(KeyEntry, attrs, wrapped))
    return tuple(KeyEntry.from_cbor(item) for item in items)


def _decompressed(body: bytes) -> bytes:
    """An authenticated body of format 4, decompressed (at most :data:`MAX_BODY_LEN`)."""
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(body, MAX_BODY_LEN)
    except zlib.error as exc:
        raise ManifestError(f"backup set body does not decompress ({exc})") from None
    if inflater.unconsumed_tail:
        raise ManifestError(f"backup set body decompresses past {MAX_BODY_LEN} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ManifestError("backup set body is not one whole compressed stream")
    return plain


# --- CBOR field helpers -------------------------------------------------------------------


def _map(obj: object, what: str) -> Mapping[Any, Any]:
    if not isinstance(obj, dict):
        raise ManifestError(f"{what} is not a CBOR map")
    return obj


def _int(m: Mapping[Any, Any], key: str) -> int:
    value = m.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"field {key!r} is missing or not an integer")
    return value


def _str(m: Mapping[Any, Any], key: str, default: str | None = None) -> str:
    value = m.get(key, default)
    if not isinstance(value, str):
        raise ManifestError(f"field {key!r} is missing or not text")
    return value


def _bytes(m: Mapping[Any, Any], key: str) -> bytes:
    value = m.get(key)
    if not isinstance(value, bytes):
        raise ManifestError(f"field {key!r} is missing or not bytes")
    return value
