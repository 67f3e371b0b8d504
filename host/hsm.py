"""The HSM side of sealkeep, over PKCS#11 (python-pkcs11).

What lives here: finding the module and the slots; opening a logged-in session; listing a
slot's objects with every attribute that matters and whether each can be backed up; the
backup domain (an AES wrapping key and an HMAC root, imported as non-extractable token
objects, plus a public marker naming the domain); the per-drive owner credential (an HMAC
computed inside the HSM); per-set keys (KEKs); wrapping keys for a set; and restoring a set
into a slot, each restored key proven by use.

Nothing here is specific to one vendor. Where SoftHSM2 needs a workaround it says so.

Speeds measured with SoftHSM2 2.6.1 (file object store) on a 2-core machine, ±30%:
wrapping ~10,000-18,000 AES keys/s and ~2,400-2,900 RSA-2048 keys/s; unwrapping into
session objects ~4,400-10,000 keys/s; unwrapping into token objects only ~55-130 keys/s
(one file written per object), so a large restore is bounded by the HSM. Every
C_GetAttributeValue costs ~25 µs there plus ~1 µs per attribute, and python-pkcs11 spends
four calls and a new Python class on each object it finds, so listing calls the module
directly: one search for every handle, one call per object (~100 µs per object in all,
against ~250 µs), falling back to python-pkcs11 where that does not work. Any search scans
the whole token (~0.2 s in a token of 10,000 objects), so presence checks use one index of
the token built up front, and a session finds the domain keys once, with one search.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import secrets
import struct
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from pkcs11 import (
    DEFAULT,
    Attribute,
    CertificateType,
    KeyType,
    Mechanism,
    MechanismFlag,
    ObjectClass,
    TokenFlag,
)
from pkcs11.attributes import AttributeMapper, handle_bytes, handle_ulong
from pkcs11.exceptions import PKCS11Error

from .errors import SealkeepError
from .manifest import Attributes, AttrValue, KeyEntry, SkippedEntry, TokenInfo

ENV_MODULE = "SEALKEEP_PKCS11_MODULE"
DEFAULT_MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
)

DOMAIN_WRAP_LABEL = "sealkeep-domain-wrap"
DOMAIN_OWNER_LABEL = "sealkeep-domain-owner"
DOMAIN_MARKER_LABEL = "sealkeep-domain"
DOMAIN_APPLICATION = "sealkeep"
DOMAIN_LABELS = frozenset({DOMAIN_WRAP_LABEL, DOMAIN_OWNER_LABEL})

DOMAIN_KEY_LEN = 32
DOMAIN_SECRET_LEN = 2 * DOMAIN_KEY_LEN  # AES wrap key ‖ HMAC owner root
DOMAIN_ID_LEN = 16
OWNER_KEY_INFO = b"sealkeep owner key"
DOMAIN_ID_INFO = b"sealkeep domain id"

WRAP_MECHANISM = Mechanism.AES_KEY_WRAP_PAD
CK_UNAVAILABLE_INFORMATION = 2**64 - 1
GCM_NONCE_LEN = 12
GCM_TAG_BITS = 128

# The classes sealkeep lists and backs up.
BACKUP_CLASSES = (
    ObjectClass.SECRET_KEY,
    ObjectClass.PRIVATE_KEY,
    ObjectClass.PUBLIC_KEY,
    ObjectClass.CERTIFICATE,
)
CLASS_NAMES = {
    ObjectClass.SECRET_KEY: "secret key",
    ObjectClass.PRIVATE_KEY: "private key",
    ObjectClass.PUBLIC_KEY: "public key",
    ObjectClass.CERTIFICATE: "certificate",
}

A = Attribute


def _attrs(names: str) -> tuple[Attribute, ...]:
    """Attribute types from their names (``"CLASS LABEL ID"``)."""
    return tuple(Attribute[name] for name in names.split())


# What is read of each class. Never key material: no VALUE of a secret key and no private
# component of a private key, even when the token would hand them out.
_COMMON = "CLASS TOKEN PRIVATE MODIFIABLE COPYABLE DESTROYABLE LABEL "
_KEY_COMMON = "KEY_TYPE ID START_DATE END_DATE DERIVE LOCAL KEY_GEN_MECHANISM "
CAPTURE: dict[ObjectClass, tuple[Attribute, ...]] = {
    ObjectClass.SECRET_KEY: _attrs(
        _COMMON + _KEY_COMMON + "SENSITIVE ENCRYPT DECRYPT SIGN VERIFY WRAP UNWRAP EXTRACTABLE "
        "ALWAYS_SENSITIVE NEVER_EXTRACTABLE CHECK_VALUE WRAP_WITH_TRUSTED TRUSTED VALUE_LEN"
    ),
    # With the public half, as far as the private object shows it.
    ObjectClass.PRIVATE_KEY: _attrs(
        _COMMON + _KEY_COMMON + "SUBJECT SENSITIVE DECRYPT SIGN SIGN_RECOVER UNWRAP EXTRACTABLE "
        "ALWAYS_SENSITIVE NEVER_EXTRACTABLE WRAP_WITH_TRUSTED ALWAYS_AUTHENTICATE "
        "MODULUS PUBLIC_EXPONENT EC_PARAMS"
    ),
    ObjectClass.PUBLIC_KEY: _attrs(
        _COMMON + _KEY_COMMON + "SUBJECT ENCRYPT VERIFY VERIFY_RECOVER WRAP TRUSTED "
        "MODULUS MODULUS_BITS PUBLIC_EXPONENT EC_PARAMS EC_POINT PRIME SUBPRIME BASE VALUE"
    ),
    ObjectClass.CERTIFICATE: _attrs(
        _COMMON + "ID CERTIFICATE_TYPE CERTIFICATE_CATEGORY TRUSTED CHECK_VALUE SUBJECT ISSUER "
        "SERIAL_NUMBER VALUE URL HASH_OF_SUBJECT_PUBLIC_KEY HASH_OF_ISSUER_PUBLIC_KEY "
        "START_DATE END_DATE"
    ),
}

# What is replayed when an object is recreated (besides CLASS, KEY_TYPE and TOKEN). Read-only
# attributes (LOCAL, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE, KEY_GEN_MECHANISM, CHECK_VALUE,
# VALUE_LEN, MODULUS_BITS) are kept in the manifest for the record but never replayed, nor
# are the public values of a private key (the token takes them from the unwrapped key data;
# SoftHSM2 refuses EC_PARAMS there with AttributeReadOnly).
_DATES = _attrs("START_DATE END_DATE")
REPLAY: dict[ObjectClass, tuple[Attribute, ...]] = {
    ObjectClass.SECRET_KEY: _attrs(
        "LABEL ID PRIVATE SENSITIVE EXTRACTABLE ENCRYPT DECRYPT SIGN VERIFY WRAP UNWRAP DERIVE "
        "WRAP_WITH_TRUSTED START_DATE END_DATE"
    ),
    ObjectClass.PRIVATE_KEY: _attrs(
        "LABEL ID PRIVATE SENSITIVE EXTRACTABLE DECRYPT SIGN SIGN_RECOVER UNWRAP DERIVE SUBJECT "
        "ALWAYS_AUTHENTICATE WRAP_WITH_TRUSTED START_DATE END_DATE"
    ),
    ObjectClass.PUBLIC_KEY: _attrs(
        "LABEL ID PRIVATE SUBJECT ENCRYPT VERIFY VERIFY_RECOVER WRAP DERIVE START_DATE END_DATE "
        "MODULUS PUBLIC_EXPONENT EC_PARAMS EC_POINT PRIME SUBPRIME BASE VALUE"
    ),
    ObjectClass.CERTIFICATE: _attrs(
        "LABEL ID PRIVATE CERTIFICATE_TYPE CERTIFICATE_CATEGORY SUBJECT ISSUER SERIAL_NUMBER "
        "VALUE URL HASH_OF_SUBJECT_PUBLIC_KEY HASH_OF_ISSUER_PUBLIC_KEY START_DATE END_DATE"
    ),
}
# Replayed only when they differ from the PKCS#11 default, so a token that does not know
# them (they arrived in v2.40) is not handed them needlessly. TRUSTED can only be set by the
# security officer; replaying it as a user fails with a clear message for that object.
_REPLAY_IF_FALSE = _attrs("MODIFIABLE COPYABLE DESTROYABLE")
_REPLAY_IF_TRUE = _attrs("TRUSTED")

# Usage flags python-pkcs11's unwrap_key puts into every template; the ones that do not
# apply to a class must be passed as pkcs11.DEFAULT (else RSA/EC private keys fail with
# AttributeTypeInvalid).
_CAPABILITY_FLAGS = _attrs("ENCRYPT DECRYPT WRAP UNWRAP SIGN VERIFY DERIVE")

# Named curves: DER of the EC_PARAMS OID -> (name, field size in bits).
_CURVES: dict[bytes, tuple[str, int]] = {
    bytes.fromhex("06082a8648ce3d030107"): ("P-256", 256),
    bytes.fromhex("06052b81040022"): ("P-384", 384),
    bytes.fromhex("06052b81040023"): ("P-521", 521),
    bytes.fromhex("06052b8104000a"): ("secp256k1", 256),
    bytes.fromhex("06032b6570"): ("Ed25519", 255),
    bytes.fromhex("06032b6571"): ("Ed448", 448),
    b"\x13\x0cedwards25519": ("Ed25519", 255),
    b"\x13\x0aedwards448": ("Ed448", 448),
}
_CRYPTOGRAPHY_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "secp256k1": ec.SECP256K1(),
}


# --- errors -------------------------------------------------------------------------------


class HsmError(SealkeepError):
    """Root of the errors raised on the HSM side."""


class ModuleError(HsmError):
    """The PKCS#11 module cannot be found or loaded."""


class SlotError(HsmError):
    """No such slot, or no usable token in it."""


class PinError(HsmError):
    """The slot PIN was refused."""


class PinLockedError(PinError):
    """The token has locked the PIN after too many wrong tries."""


class DomainError(HsmError):
    """The slot lacks the backup domain, holds another one, or its domain objects are bad."""


class SetKeyError(HsmError):
    """A set's wrapped KEK does not unwrap with this slot's domain key."""


class UnsealError(HsmError):
    """Data sealed under a set key does not authenticate."""


# --- plumbing -----------------------------------------------------------------------------


def resolve_module(path: str | None = None) -> str:
    """The PKCS#11 module to load: ``path``, else ``$SEALKEEP_PKCS11_MODULE``, else SoftHSM2."""
    chosen = path or os.environ.get(ENV_MODULE)
    if chosen:
        if not Path(chosen).is_file():
            raise ModuleError(f"PKCS#11 module {chosen} does not exist")
        return chosen
    for candidate in DEFAULT_MODULE_PATHS:
        if Path(candidate).is_file():
            return candidate
    raise ModuleError(
        f"no PKCS#11 module given and SoftHSM2 is not installed (looked in "
        f"{', '.join(DEFAULT_MODULE_PATHS)}); pass the module path or set {ENV_MODULE}"
    )


class _Mapper(AttributeMapper):
    """python-pkcs11's mapper, with dates kept as raw ``YYYYMMDD`` bytes.

    python-pkcs11 parses dates with strptime and fails on the empty dates most tokens
    (SoftHSM2 among them) return for keys without validity dates; raw bytes also go straight
    into CBOR. CERTIFICATE_CATEGORY is a CK_ULONG python-pkcs11 does not know, and
    KEY_GEN_MECHANISM is read as a plain number: objects not generated in the token report
    CK_UNAVAILABLE_INFORMATION there, which python-pkcs11's enum conversion rejects.
    """

    def __init__(self) -> None:
        super().__init__()
        for attribute in _DATES:
            self.register_handler(attribute, *handle_bytes)
        self.register_handler(A.CERTIFICATE_CATEGORY, *handle_ulong)
        self.register_handler(A.KEY_GEN_MECHANISM, *handle_ulong)


def _plain(value: object) -> AttrValue:
    """A PKCS#11 attribute value as a plain CBOR-serialisable value."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # enums become plain ints
    if isinstance(value, bytes | str):
        return value
    raise TypeError(f"unexpected attribute value {value!r}")


def _read(obj: Any, attributes: Sequence[Attribute]) -> Attributes:
    """The attributes the object has, as plain values; absent or sensitive ones are left out."""
    try:
        raw = obj.get_attributes(list(attributes))
    except (PKCS11Error, NotImplementedError, ValueError):
        # Some tokens refuse the whole template when one attribute is invalid: go one by one.
        raw = {}
        for attribute in attributes:
            with suppress(PKCS11Error, NotImplementedError, ValueError):
                raw[attribute] = obj[attribute]
    return {
        int(key): _plain(value)
        for key, value in raw.items()
        if not (key == A.KEY_GEN_MECHANISM and value == CK_UNAVAILABLE_INFORMATION)
    }


def _bool(attrs: Attributes, attribute: Attribute) -> bool | None:
    value = attrs.get(int(attribute))
    return value if isinstance(value, bool) else None


def _int(attrs: Attributes, attribute: Attribute) -> int | None:
    value = attrs.get(int(attribute))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bytes(attrs: Attributes, attribute: Attribute) -> bytes | None:
    value = attrs.get(int(attribute))
    return value if isinstance(value, bytes) else None


def _str(attrs: Attributes, attribute: Attribute) -> str:
    value = attrs.get(int(attribute))
    return value if isinstance(value, str) else ""


def class_name(object_class: int) -> str:
    try:
        return CLASS_NAMES.get(ObjectClass(object_class), ObjectClass(object_class).name)
    except ValueError:
        return f"class 0x{object_class:x}"


def key_type_name(key_type: int | None, attrs: Attributes | None = None) -> str:
    """``AES``, ``RSA``, ``EC P-256``, ``X.509`` ... for display."""
    if attrs is not None and _int(attrs, A.CLASS) == ObjectClass.CERTIFICATE:
        cert_type = _int(attrs, A.CERTIFICATE_TYPE)
        if cert_type == CertificateType.X_509:
            return "X.509"
        return f"certificate type 0x{cert_type:x}" if cert_type is not None else "certificate"
    if key_type is None:
        return "?"
    try:
        name = KeyType(key_type).name
    except ValueError:
        return f"key type 0x{key_type:x}"
    if attrs is not None and key_type in (KeyType.EC, KeyType.EC_EDWARDS):
        curve = _CURVES.get(_bytes(attrs, A.EC_PARAMS) or b"")
        if curve is not None:
            return f"{name} {curve[0]}"
    return name


def key_bits(attrs: Attributes) -> int | None:
    """Key size in bits, where the attributes tell it."""
    object_class = _int(attrs, A.CLASS)
    key_type = _int(attrs, A.KEY_TYPE)
    if object_class == ObjectClass.SECRET_KEY:
        # SoftHSM2 reads VALUE_LEN as 0 on unwrapped AES keys: report the size as unknown.
        value_len = _int(attrs, A.VALUE_LEN)
        return value_len * 8 if value_len else None
    if key_type == KeyType.RSA:
        bits = _int(attrs, A.MODULUS_BITS)
        if bits:
            return bits
        modulus = _bytes(attrs, A.MODULUS)
        return len(modulus.lstrip(b"\0")) * 8 if modulus else None
    if key_type in (KeyType.EC, KeyType.EC_EDWARDS):
        curve = _CURVES.get(_bytes(attrs, A.EC_PARAMS) or b"")
        return curve[1] if curve else None
    return None


def _ident(attrs: Attributes) -> tuple[int, str, bytes]:
    """What makes two objects "the same key": class, label and id."""
    return (_int(attrs, A.CLASS) or 0, _str(attrs, A.LABEL), _bytes(attrs, A.ID) or b"")


# --- domain secret ------------------------------------------------------------------------


def new_domain_secret() -> bytearray:
    """A fresh random domain secret: AES-256 wrap key ‖ 32-byte HMAC owner root.

    The random bytes are read straight into the one mutable buffer the ceremony wipes:
    ``secrets.token_bytes`` would leave an immutable copy behind in freed memory.
    """
    secret = bytearray(DOMAIN_SECRET_LEN)
    view = memoryview(secret)
    with open("/dev/urandom", "rb", buffering=0) as source:
        filled = 0
        while filled < DOMAIN_SECRET_LEN:
            got = source.readinto(view[filled:])
            if not got:
                raise DomainError("the system's random source ended early")
            filled += got
    view.release()
    return secret


def split_domain_secret(secret: bytes | bytearray) -> tuple[memoryview, memoryview]:
    """(AES wrap key, HMAC owner root) of a domain secret: views into it, not copies."""
    if len(secret) != DOMAIN_SECRET_LEN:
        raise DomainError(f"a domain secret has {DOMAIN_SECRET_LEN} bytes, not {len(secret)}")
    view = memoryview(secret)
    return view[:DOMAIN_KEY_LEN], view[DOMAIN_KEY_LEN:]


def owner_root_hmac(secret: bytes | bytearray, message: bytes) -> bytes:
    """``HMAC-SHA256(owner root, message)``, what the HSM's owner key computes.

    ``hmac.digest`` hands the key buffer to OpenSSL's one-shot HMAC, which wipes its own
    state; ``hmac.new`` would not copy it either, but its pure-Python fallback pads a copy.
    """
    _, owner_root = split_domain_secret(secret)
    with owner_root:
        return hmac.digest(owner_root, message, "sha256")


def domain_id_from_secret(secret: bytes | bytearray) -> bytes:
    """The domain id, ``HMAC-SHA256(owner root, "sealkeep domain id")[:16]``, computed here.

    The HSM computes the same value with the imported owner root (:meth:`HsmSession.domain_id`).
    """
    return owner_root_hmac(secret, DOMAIN_ID_INFO)[:DOMAIN_ID_LEN]


def owner_credential_from_secret(secret: bytes | bytearray, serial: str) -> bytes:
    """The owner credential of drive ``serial``, computed here (see :meth:`owner_credential`)."""
    return owner_root_hmac(secret, OWNER_KEY_INFO + serial.encode())


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotInfo:
    """A slot as ``sealkeep slots`` shows it.

    ``domain_id`` comes from the domain's public marker object, readable without the PIN;
    :meth:`HsmSession.domain_id` checks the domain keys themselves.
    """

    slot_id: int
    description: str
    token_present: bool
    initialized: bool
    label: str
    serial: str
    model: str
    manufacturer: str
    domain_id: bytes | None

    @property
    def holds_domain(self) -> bool:
        return self.domain_id is not None

    def to_json(self) -> dict[str, object]:
        return {
            "slot": self.slot_id,
            "description": self.description,
            "token_present": self.token_present,
            "initialized": self.initialized,
            "label": self.label,
            "serial": self.serial,
            "model": self.model,
            "manufacturer": self.manufacturer,
            "holds_domain": self.holds_domain,
            "domain_id": self.domain_id.hex() if self.domain_id else None,
        }


@dataclass(frozen=True)
class ObjectInfo:
    """An object of a slot, with every attribute that matters and whether it can be backed up."""

    attributes: Attributes = field(repr=False)
    exportable: bool
    reason: str | None
    handle: Any = field(default=None, repr=False, compare=False)

    @property
    def object_class(self) -> int:
        return _int(self.attributes, A.CLASS) or 0

    @property
    def key_type(self) -> int | None:
        return _int(self.attributes, A.KEY_TYPE)

    @property
    def label(self) -> str:
        return _str(self.attributes, A.LABEL)

    @property
    def id(self) -> bytes:
        return _bytes(self.attributes, A.ID) or b""

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    @property
    def bits(self) -> int | None:
        return key_bits(self.attributes)

    @property
    def class_name(self) -> str:
        return class_name(self.object_class)

    @property
    def type_name(self) -> str:
        return key_type_name(self.key_type, self.attributes)

    @property
    def is_domain_key(self) -> bool:
        """One of the backup domain's own keys (never in a set: the shares keep it)."""
        return self.needs_wrap and self.label in DOMAIN_LABELS

    @property
    def needs_wrap(self) -> bool:
        """Secret and private keys travel wrapped; public keys and certificates do not."""
        return self.object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)

    def to_json(self) -> dict[str, object]:
        return {
            "class": self.class_name,
            "type": self.type_name,
            "bits": self.bits,
            "label": self.label,
            "id": self.id_hex,
            "backup": self.exportable,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Proof:
    """How a restored object was proven, and whether it passed."""

    ok: bool
    method: str
    detail: str = ""


@dataclass(frozen=True)
class RestoreOutcome:
    """What happened to one entry of a set on restore.

    ``status`` is ``"restored"``, ``"present"`` (same class, label and id already in the
    slot; left alone) or ``"failed"`` (``detail`` says why).
    """

    object_class: int
    key_type: int | None
    label: str
    id: bytes
    status: str
    detail: str = ""
    proof: Proof | None = None

    @property
    def ok(self) -> bool:
        if self.status == "present":
            return True
        return self.status == "restored" and self.proof is not None and self.proof.ok

    def to_json(self) -> dict[str, object]:
        return {
            "class": class_name(self.object_class),
            "type": key_type_name(self.key_type),
            "label": self.label,
            "id": self.id.hex(),
            "status": self.status,
            "detail": self.detail,
            "proof": self.proof.method if self.proof else None,
            "proven": self.proof.ok if self.proof else None,
        }


# --- direct calls for listing ---------------------------------------------------------------

_CK_ULONG = ctypes.c_ulong
_CK_UNAVAILABLE = (1 << (8 * ctypes.sizeof(_CK_ULONG))) - 1
_CKR_OK = 0x0
_CKR_ATTRIBUTE_SENSITIVE = 0x11
_CKR_ATTRIBUTE_TYPE_INVALID = 0x12
_CKR_BUFFER_TOO_SMALL = 0x150
_READ_OK = (_CKR_OK, _CKR_ATTRIBUTE_SENSITIVE, _CKR_ATTRIBUTE_TYPE_INVALID)
_VALUE_ROOM = 8192  # bytes per attribute in the one-call read; larger values take two calls
_FIND_BATCH = 4096
# Positions in CK_FUNCTION_LIST (PKCS#11 v2.x, after the version).
_FN_CREATE_OBJECT = 20
_FN_GET_ATTRIBUTE_VALUE = 24
_FN_FIND_OBJECTS_INIT = 26
_FN_FIND_OBJECTS = 27
_FN_FIND_OBJECTS_FINAL = 28
_FN_COUNT = 68


class _CkAttribute(ctypes.Structure):
    _fields_ = (("type", _CK_ULONG), ("pValue", ctypes.c_void_p), ("ulValueLen", _CK_ULONG))


class _CkFunctionList(ctypes.Structure):
    _fields_ = (("version", ctypes.c_ubyte * 2), ("functions", ctypes.c_void_p * _FN_COUNT))


class _RawError(Exception):
    """A direct call failed: the caller goes back to python-pkcs11."""


_ATTRS = ctypes.POINTER(_CkAttribute)
_ULONGS = ctypes.POINTER(_CK_ULONG)


class _Template:
    """A reusable CK_ATTRIBUTE array with a buffer per attribute, for one-call reads.

    C_GetAttributeValue rewrites each entry's length, so the array is reset from a pristine
    copy of its bytes before each call (a memmove, not a Python loop).
    """

    def __init__(self, types: Sequence[int]) -> None:
        self.types = tuple(types)
        count = len(self.types)
        self.array = (_CkAttribute * count)()
        self.buffer = ctypes.create_string_buffer(_VALUE_ROOM * count)
        base = ctypes.addressof(self.buffer)
        self.addresses = [base + i * _VALUE_ROOM for i in range(count)]
        for i, kind in enumerate(self.types):
            self.array[i].type = kind
            self.array[i].pValue = self.addresses[i]
            self.array[i].ulValueLen = _VALUE_ROOM
        self.pristine = bytes(self.array)
        # The entries' lengths, read as one slice of the array seen as CK_ULONGs (type,
        # pointer, length per entry) where pointers are as wide as CK_ULONG.
        self.words: Any = None
        if ctypes.sizeof(_CkAttribute) == 3 * ctypes.sizeof(_CK_ULONG):
            self.words = (_CK_ULONG * (3 * count)).from_buffer(self.array)

    def lengths(self) -> list[int]:
        if self.words is not None:
            return list(self.words[2::3])
        return [entry.ulValueLen for entry in self.array]


class _RawModule:
    """C_FindObjects and C_GetAttributeValue called directly on the module python-pkcs11 loaded.

    Listing a slot through python-pkcs11 costs four C_GetAttributeValue calls per object (two
    to pick the Python class of each object found, two to read its attributes) and the making
    of a Python class per object: ~250 µs per object on SoftHSM2, 2.6 s for a slot of 10,000
    keys. Here one C_FindObjects call returns every handle and one C_GetAttributeValue call
    with buffers already in place reads all the attributes of an object (~60 µs in all).
    The module is the same shared library (the dynamic loader hands out the one already
    loaded and initialised), so the session handles of python-pkcs11 are valid here.
    """

    def __init__(self, module: str) -> None:
        try:
            library = ctypes.CDLL(module)
            get_list = library.C_GetFunctionList
        except (OSError, AttributeError) as exc:
            raise _RawError(str(exc)) from None
        get_list.argtypes = [ctypes.POINTER(ctypes.POINTER(_CkFunctionList))]
        get_list.restype = _CK_ULONG
        table = ctypes.POINTER(_CkFunctionList)()
        if get_list(ctypes.byref(table)) != _CKR_OK or not table:
            raise _RawError("C_GetFunctionList failed")
        functions = table.contents.functions

        def bind(index: int, *argtypes: Any) -> Any:
            address = functions[index]
            if not address:
                raise _RawError(f"function {index} is missing")
            return ctypes.CFUNCTYPE(_CK_ULONG, *argtypes)(address)

        self._library = library  # keeps the module referenced while the functions are bound
        self._get = bind(_FN_GET_ATTRIBUTE_VALUE, _CK_ULONG, _CK_ULONG, _ATTRS, _CK_ULONG)
        self._create = bind(_FN_CREATE_OBJECT, _CK_ULONG, _ATTRS, _CK_ULONG, _ULONGS)
        self._find_init = bind(_FN_FIND_OBJECTS_INIT, _CK_ULONG, _ATTRS, _CK_ULONG)
        self._find = bind(_FN_FIND_OBJECTS, _CK_ULONG, _ULONGS, _CK_ULONG, _ULONGS)
        self._find_final = bind(_FN_FIND_OBJECTS_FINAL, _CK_ULONG)
        self._templates: dict[tuple[int, ...], _Template] = {}
        self._lock = threading.Lock()  # the templates' buffers are shared

    def create_secret(self, session: int, template: dict[int, bytes], value: memoryview) -> int:
        """C_CreateObject whose CKA_VALUE points into ``value`` (a writable buffer we wipe).

        python-pkcs11 packs every attribute into a new ``bytes`` and a malloc'd copy, both
        freed without being wiped; this hands the module our own buffer instead.
        """
        array = (_CkAttribute * (len(template) + 1))()
        values = [ctypes.create_string_buffer(v, len(v)) for v in template.values()]
        for i, (kind, packed) in enumerate(zip(template, values, strict=True)):
            array[i].type = kind
            array[i].pValue = ctypes.addressof(packed)
            array[i].ulValueLen = len(template[kind])
        buffer_type = ctypes.c_char * len(value)
        # A caller holding the secret in immutable bytes has copies we cannot wipe anyway.
        secret = (
            buffer_type.from_buffer_copy(value)
            if value.readonly
            else buffer_type.from_buffer(value)
        )
        try:
            array[len(template)].type = int(Attribute.VALUE)
            array[len(template)].pValue = ctypes.addressof(secret)
            array[len(template)].ulValueLen = len(value)
            handle = _CK_ULONG()
            rv = self._create(session, array, len(template) + 1, ctypes.byref(handle))
        finally:
            del secret  # releases the export of ``value``
        if rv != _CKR_OK:
            raise pkcs11.exceptions.PKCS11Error(f"C_CreateObject: 0x{rv:x}")
        return int(handle.value)

    def find(self, session: int, template: dict[int, bytes]) -> list[int]:
        """The handles of the objects matching ``template`` (values packed already)."""
        array = (_CkAttribute * max(1, len(template)))()
        values = [ctypes.create_string_buffer(v, len(v)) for v in template.values()]
        for i, (kind, value) in enumerate(zip(template, values, strict=True)):
            array[i].type = kind
            array[i].pValue = ctypes.addressof(value)
            array[i].ulValueLen = len(template[kind])
        rv = self._find_init(session, array, len(template))
        if rv != _CKR_OK:
            raise _RawError(f"C_FindObjectsInit: 0x{rv:x}")
        handles: list[int] = []
        batch = (_CK_ULONG * _FIND_BATCH)()
        count = _CK_ULONG()
        try:
            while True:
                rv = self._find(session, batch, _FIND_BATCH, ctypes.byref(count))
                if rv != _CKR_OK:
                    raise _RawError(f"C_FindObjects: 0x{rv:x}")
                if count.value == 0:
                    return handles
                handles.extend(batch[: count.value])
        finally:
            self._find_final(session)

    def read(self, session: int, handle: int, types: tuple[int, ...]) -> dict[int, bytes]:
        """The raw values of the attributes the object has among ``types``; one call as a rule."""
        with self._lock:
            template = self._templates.get(types)
            if template is None:
                template = self._templates[types] = _Template(types)
            array = template.array
            ctypes.memmove(array, template.pristine, len(template.pristine))
            rv = self._get(session, handle, array, len(types))
            lengths = template.lengths()
            # A token that refuses the template may leave entries untouched (still showing
            # the room): those are read one by one below, never taken for values.
            if rv == _CKR_OK or (rv in _READ_OK and _VALUE_ROOM not in lengths):
                return {
                    kind: ctypes.string_at(address, length)
                    for kind, address, length in zip(
                        types, template.addresses, lengths, strict=True
                    )
                    if length != _CK_UNAVAILABLE
                }
        if rv == _CKR_BUFFER_TOO_SMALL:
            return self._read_sized(session, handle, types)
        # Some tokens refuse a whole template for one attribute they do not know: one by one.
        found: dict[int, bytes] = {}
        for kind in types:
            with suppress(_RawError):
                found.update(self._read_sized(session, handle, (kind,)))
        return found

    def _read_sized(self, session: int, handle: int, types: Sequence[int]) -> dict[int, bytes]:
        """Ask the lengths first, then the values (for values larger than the usual room)."""
        array = (_CkAttribute * len(types))()
        for i, kind in enumerate(types):
            array[i].type = kind
            array[i].ulValueLen = _CK_UNAVAILABLE  # what an entry the token skips must read as
        rv = self._get(session, handle, array, len(types))
        if rv not in _READ_OK:
            raise _RawError(f"C_GetAttributeValue: 0x{rv:x}")
        wanted = [
            (kind, array[i].ulValueLen)
            for i, kind in enumerate(types)
            if array[i].ulValueLen != _CK_UNAVAILABLE
        ]
        if not wanted:
            return {}
        second = (_CkAttribute * len(wanted))()
        buffers = [ctypes.create_string_buffer(max(1, length)) for _, length in wanted]
        for i, (kind, length) in enumerate(wanted):
            second[i].type = kind
            second[i].pValue = ctypes.addressof(buffers[i])
            second[i].ulValueLen = length
        rv = self._get(session, handle, second, len(wanted))
        if rv != _CKR_OK:
            raise _RawError(f"C_GetAttributeValue: 0x{rv:x}")
        return {
            kind: buffers[i].raw[: second[i].ulValueLen]
            for i, (kind, _) in enumerate(wanted)
            if second[i].ulValueLen != _CK_UNAVAILABLE
        }


class _ListedObject(pkcs11.types.Key):
    """An object found by the direct listing, known by its handle.

    python-pkcs11 makes its objects only from its own searches, so this stands in for one:
    wrapping needs only the handle; anything else (destroy, reading an attribute, using the
    key) finds python-pkcs11's object for the same handle first, with one search.
    """

    def __init__(self, session: Any, handle: int, template: dict[Attribute, Any]) -> None:
        self._session = session
        self._handle = handle
        self._template = template
        self._object: Any = None

    @property
    def session(self) -> Any:
        return self._session

    @property
    def handle(self) -> int:
        return self._handle

    def _resolve(self) -> Any:
        if self._object is None:
            # The whole search is taken, so it is finished before anything else runs.
            for candidate in list(self._session.get_objects(self._template)):
                if candidate.handle == self._handle:
                    self._object = candidate
                    break
            else:
                raise pkcs11.exceptions.ObjectHandleInvalid()
        return self._object

    def __getitem__(self, key: Attribute) -> Any:
        return self._resolve()[key]

    def __setitem__(self, key: Attribute, value: Any) -> None:
        self._resolve()[key] = value

    def get_attributes(self, keys: list[Attribute]) -> dict[Attribute, Any]:
        return dict(self._resolve().get_attributes(keys))

    def copy(self, attrs: dict[Attribute, Any]) -> Any:
        return self._resolve().copy(attrs)

    def destroy(self) -> None:
        self._resolve().destroy()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._resolve(), name)

    def _identity(self) -> tuple[Any, ...]:
        return ("listed object", self._handle)

    def __repr__(self) -> str:
        return f"<listed object {self._handle}>"


# --- module and session -------------------------------------------------------------------


class Hsm:
    """A loaded PKCS#11 module.

    python-pkcs11 keeps one library object per module path for the whole process, and the
    module reads its token list when it is first initialised (SoftHSM2 does not see tokens
    created afterwards by another process).
    """

    def __init__(self, module: str | None = None) -> None:
        self.module = resolve_module(module)
        try:
            self._lib = pkcs11.lib(self.module)
        except PKCS11Error as exc:
            raise ModuleError(f"cannot load PKCS#11 module {self.module}: {exc}") from None
        # Per slot: a digest of the PIN we logged in with and how many sessions are open.
        # PKCS#11 logs in per token and process, so a second session cannot check a PIN.
        self._pin_key = secrets.token_bytes(32)
        self._logins: dict[int, tuple[bytes, int]] = {}
        self._raw: _RawModule | None = None
        self._raw_failed = False

    def raw(self) -> _RawModule | None:
        """Direct calls into the module for fast listing, or None where they do not work."""
        if self._raw is None and not self._raw_failed:
            try:
                self._raw = _RawModule(self.module)
            except _RawError:
                self._raw_failed = True
        return self._raw

    def _slots(self) -> list[Any]:
        try:
            return list(self._lib.get_slots(token_present=False))
        except PKCS11Error as exc:
            raise ModuleError(f"cannot list the slots of {self.module}: {exc!r}") from None

    def slots(self) -> list[SlotInfo]:
        """Every slot of the module, with its token and whether it holds a backup domain."""
        result = []
        for slot in self._slots():
            result.append(self._slot_info(slot))
        return result

    def slot(self, slot_id: int) -> SlotInfo:
        return self._slot_info(self._find_slot(slot_id))

    def _find_slot(self, slot_id: int) -> Any:
        slots = self._slots()
        for slot in slots:
            if slot.slot_id == slot_id:
                return slot
        known = ", ".join(str(s.slot_id) for s in slots) or "none"
        raise SlotError(f"there is no slot {slot_id} in {self.module} (slots: {known})")

    def _slot_info(self, slot: Any) -> SlotInfo:
        present = bool(slot.flags & pkcs11.SlotFlag.TOKEN_PRESENT)
        label = serial = model = manufacturer = ""
        initialized = False
        domain_id = None
        if present:
            try:
                token = slot.get_token()
                label = token.label
                serial = _text(token.serial)
                model = token.model
                manufacturer = token.manufacturer_id
                initialized = bool(token.flags & TokenFlag.TOKEN_INITIALIZED)
                if initialized:
                    domain_id = _read_marker(token)
            except PKCS11Error:
                pass
        return SlotInfo(
            slot_id=slot.slot_id,
            description=slot.slot_description,
            token_present=present,
            initialized=initialized,
            label=label,
            serial=serial,
            model=model,
            manufacturer=manufacturer,
            domain_id=domain_id,
        )

    def open(self, slot_id: int, pin: str) -> HsmSession:
        """A read/write session on ``slot_id``, logged in as the user with ``pin``."""
        slot = self._find_slot(slot_id)
        info = self._slot_info(slot)
        where = f"slot {slot_id}"
        if not info.token_present:
            raise SlotError(f"{where} has no token")
        if not info.initialized:
            raise SlotError(f"the token in {where} is not initialised")
        where = f"slot {slot_id} (token {info.label!r})"
        token = slot.get_token()
        digest = hmac.new(self._pin_key, pin.encode(), hashlib.sha256).digest()
        mapper = _Mapper()
        try:
            session = token.open(rw=True, user_pin=pin, attribute_mapper=mapper)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            # Another session of this process is logged in to the token already; a second
            # login is refused by PKCS#11, so the PIN is checked against the first one's.
            known = self._logins.get(slot_id)
            if known is not None and not hmac.compare_digest(known[0], digest):
                raise PinError(f"wrong PIN for {where}") from None
            session = token.open(rw=True, attribute_mapper=mapper)
        except (
            pkcs11.exceptions.PinIncorrect,
            pkcs11.exceptions.PinInvalid,
            pkcs11.exceptions.PinLenRange,
        ):
            raise PinError(f"wrong PIN for {where}") from None
        except pkcs11.exceptions.PinLocked:
            raise PinLockedError(
                f"the PIN of {where} is locked after too many wrong tries"
            ) from None
        except pkcs11.exceptions.UserPinNotInitialized:
            raise SlotError(f"the user PIN of {where} has not been set") from None
        except PKCS11Error as exc:
            raise SlotError(f"cannot open a session on {where}: {exc!r}") from None
        _, count = self._logins.get(slot_id, (digest, 0))
        self._logins[slot_id] = (digest, count + 1)
        return HsmSession(self, slot_id, info, session)

    def _closed(self, slot_id: int) -> None:
        known = self._logins.get(slot_id)
        if known is None:
            return
        if known[1] <= 1:
            del self._logins[slot_id]
        else:
            self._logins[slot_id] = (known[0], known[1] - 1)


def _python_class(obj: Any) -> ObjectClass | None:
    """The class of a python-pkcs11 object, when it is one sealkeep backs up."""
    for python_class, object_class in (
        (pkcs11.SecretKey, ObjectClass.SECRET_KEY),
        (pkcs11.PrivateKey, ObjectClass.PRIVATE_KEY),
        (pkcs11.PublicKey, ObjectClass.PUBLIC_KEY),
        (pkcs11.Certificate, ObjectClass.CERTIFICATE),
    ):
        if isinstance(obj, python_class):
            return object_class
    return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    return str(value).strip()


def _read_marker(token: Any) -> bytes | None:
    """The domain id from the public marker object, without logging in."""
    with token.open() as session:
        for obj in session.get_objects({A.CLASS: ObjectClass.DATA, A.LABEL: DOMAIN_MARKER_LABEL}):
            value = obj[A.VALUE]
            if isinstance(value, bytes) and len(value) == DOMAIN_ID_LEN:
                return value
    return None


class SetKey:
    """A backup set's KEK: a session object in the HSM, and its value wrapped by the domain key.

    It also seals the set manifest with AES-GCM, inside the HSM (it is a :class:`Sealer`).
    The KEK holds WRAP/UNWRAP and ENCRYPT/DECRYPT; it is never a token object, exists only
    in this process's session, and the domain key that wraps it can only wrap and unwrap.
    """

    def __init__(self, handle: Any, wrapped: bytes) -> None:
        self.handle = handle
        self.wrapped = wrapped

    def wrap(self, obj: Any) -> bytes:
        return bytes(self.handle.wrap_key(obj, mechanism=WRAP_MECHANISM))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM in the HSM: ``nonce ‖ ciphertext ‖ tag``.

        The nonce is chosen here (a KEK seals one manifest, so a random 96-bit nonce is
        safe) and passed in CK_GCM_PARAMS, which SoftHSM2 honours; the output is standard
        GCM, the same as ``cryptography``'s AESGCM with the same key.
        """
        nonce = secrets.token_bytes(GCM_NONCE_LEN)
        params = pkcs11.GCMParams(nonce, aad, GCM_TAG_BITS)
        try:
            sealed = self.handle.encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params
            )
        except PKCS11Error as exc:
            raise HsmError(f"the HSM cannot seal with AES-GCM: {exc!r}") from None
        return nonce + bytes(sealed)

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        """Open what :meth:`seal` made; raises :class:`UnsealError` if it does not authenticate."""
        if len(sealed) < GCM_NONCE_LEN + GCM_TAG_BITS // 8:
            raise UnsealError("sealed data is truncated")
        params = pkcs11.GCMParams(sealed[:GCM_NONCE_LEN], aad, GCM_TAG_BITS)
        try:
            return bytes(
                self.handle.decrypt(
                    sealed[GCM_NONCE_LEN:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
        except PKCS11Error:
            # SoftHSM2 reports a failed GCM tag check as a bare GeneralError.
            raise UnsealError("sealed data does not authenticate") from None

    def destroy(self) -> None:
        with suppress(PKCS11Error):
            self.handle.destroy()


class HsmSession:
    """A logged-in read/write session on one slot."""

    def __init__(self, hsm: Hsm, slot_id: int, info: SlotInfo, session: Any) -> None:
        self.hsm = hsm
        self.slot_id = slot_id
        self.info = info
        self.session = session
        self._closed = False
        self._domain_keys: tuple[Any | None, Any | None] | None = None
        self._mapper = _Mapper()
        self._decoded: dict[tuple[int, bytes], AttrValue | None] = {}

    def __enter__(self) -> HsmSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with suppress(PKCS11Error):
                self.session.close()
            self.hsm._closed(self.slot_id)

    def __repr__(self) -> str:
        return f"<HsmSession slot {self.slot_id} token {self.info.label!r}>"

    @property
    def where(self) -> str:
        return f"slot {self.slot_id} (token {self.info.label!r})"

    def token_info(self) -> TokenInfo:
        return TokenInfo(
            slot_id=self.slot_id,
            label=self.info.label,
            serial=self.info.serial,
            model=self.info.model,
            manufacturer=self.info.manufacturer,
        )

    # -- objects ---------------------------------------------------------------------------

    def _token_objects(self, template: dict[Attribute, Any] | None = None) -> Iterator[Any]:
        query: dict[Attribute, Any] = {A.TOKEN: True}
        if template:
            query.update(template)
        yield from self.session.get_objects(query)

    def _raw_objects(self, first: tuple[Attribute, ...]) -> Iterator[tuple[int, Attributes]]:
        """(handle, attributes among ``first``) of every token object, by direct calls.

        Raises :class:`_RawError` before yielding anything when direct calls do not work.
        """
        raw = self.hsm.raw()
        if raw is None:
            raise _RawError("no direct access to the module")
        handle = int(self.session.handle)
        token_true = self._mapper.pack_attribute(A.TOKEN, True)
        found = raw.find(handle, {int(A.TOKEN): token_true})
        types = tuple(int(a) for a in first)

        def objects() -> Iterator[tuple[int, Attributes]]:
            for obj in found:
                yield obj, self._decode(raw.read(handle, obj, types))

        return objects()

    def _decode(self, values: dict[int, bytes]) -> Attributes:
        """Raw attribute values as :func:`_read` gives them (python-pkcs11's conversions).

        A value python-pkcs11 cannot convert is left out, as :func:`_read` leaves it out.
        Flags and numbers take few distinct values, so their conversions are remembered.
        """
        result: Attributes = {}
        known = self._decoded
        for kind, raw in values.items():
            key = (kind, raw)
            try:
                value = known[key]
            except KeyError:
                value = self._convert(kind, raw)
                if len(raw) <= 8:
                    known[key] = value
            if value is not None:
                result[kind] = value
        return result

    def _convert(self, kind: int, raw: bytes) -> AttrValue | None:
        try:
            unpack = self._mapper._handler(Attribute(kind))[1]
            value = _plain(unpack(raw))
        except (NotImplementedError, ValueError, TypeError, struct.error):
            return None
        if kind == A.KEY_GEN_MECHANISM and value == CK_UNAVAILABLE_INFORMATION:
            return None
        return value

    def _listed(self, handle: int, attrs: Attributes) -> _ListedObject:
        template = {
            A.TOKEN: True,
            A.CLASS: _int(attrs, A.CLASS) or 0,
            A.LABEL: _str(attrs, A.LABEL),
            A.ID: _bytes(attrs, A.ID) or b"",
        }
        return _ListedObject(self.session, handle, template)

    def objects(self) -> list[ObjectInfo]:
        """The secret, private and public keys and certificates of the slot."""
        try:
            result = self._objects_direct()
        except _RawError:
            result = self._objects_pkcs11()
        result.sort(key=lambda o: (o.label, o.id, o.object_class))
        return result

    def _objects_direct(self) -> list[ObjectInfo]:
        # Most objects of a slot are secret keys: read their attributes (CLASS among them) at
        # once, and read again only the few objects of another class. The secret-key set holds
        # no key material of any class, so reading it from any object reveals nothing.
        result = []
        handle = int(self.session.handle)
        raw = self.hsm.raw()
        if raw is None:
            raise _RawError("no direct access to the module")
        secret = CAPTURE[ObjectClass.SECRET_KEY]
        for obj, attrs in self._raw_objects(secret):
            value = _int(attrs, A.CLASS)
            try:
                object_class = ObjectClass(value) if value is not None else None
            except ValueError:
                continue
            if object_class not in CAPTURE:
                continue
            if object_class != ObjectClass.SECRET_KEY:
                types = tuple(int(a) for a in CAPTURE[object_class])
                attrs = self._decode(raw.read(handle, obj, types))
            exportable, reason = _exportability(attrs)
            result.append(ObjectInfo(attrs, exportable, reason, self._listed(obj, attrs)))
        return result

    def _objects_pkcs11(self) -> list[ObjectInfo]:
        result = []
        for obj in self._token_objects():
            # python-pkcs11 already read CLASS to pick the object's Python class; asking the
            # token again costs a call (~35 µs on SoftHSM2's file store, per object).
            object_class = _python_class(obj)
            if object_class is None:
                continue
            attrs = _read(obj, CAPTURE[object_class])
            exportable, reason = _exportability(attrs)
            result.append(ObjectInfo(attrs, exportable, reason, obj))
        return result

    def present_keys(self) -> set[tuple[int, str, bytes]]:
        """(class, label, id) of every token object: one scan, for cheap presence checks."""
        wanted = (A.CLASS, A.LABEL, A.ID)
        try:
            return {_ident(attrs) for _, attrs in self._raw_objects(wanted)}
        except _RawError:
            return {_ident(_read(obj, wanted)) for obj in self._token_objects()}

    # -- backup domain ---------------------------------------------------------------------

    # Every domain key is made by :meth:`import_domain` with these attributes; few user keys
    # share them all, so one search finds the domain keys among a handful of objects. Each
    # search scans the whole token (~0.2 s in a SoftHSM2 token of 10,000 objects).
    _DOMAIN_KEY_SEARCH = {
        A.CLASS: ObjectClass.SECRET_KEY,
        A.EXTRACTABLE: False,
        A.MODIFIABLE: False,
        A.ENCRYPT: False,
        A.DECRYPT: False,
        A.VERIFY: False,
        A.DERIVE: False,
    }

    def _find_domain_keys(self) -> tuple[Any | None, Any | None]:
        found: dict[str, list[Any]] = {DOMAIN_WRAP_LABEL: [], DOMAIN_OWNER_LABEL: []}
        for obj in self._token_objects(self._DOMAIN_KEY_SEARCH):
            with suppress(PKCS11Error):
                label = obj[A.LABEL]
                if label in found:
                    found[label].append(obj)
        for label, objects in found.items():
            if len(objects) > 1:
                raise DomainError(f"{self.where} holds {len(objects)} objects labelled {label!r}")
        wrap, owner = found[DOMAIN_WRAP_LABEL], found[DOMAIN_OWNER_LABEL]
        return (wrap[0] if wrap else None, owner[0] if owner else None)

    def _find_one(self, object_class: ObjectClass, label: str) -> Any | None:
        found = list(self._token_objects({A.CLASS: object_class, A.LABEL: label}))
        if len(found) > 1:
            raise DomainError(f"{self.where} holds {len(found)} objects labelled {label!r}")
        return found[0] if found else None

    def _domain_objects(self) -> tuple[Any | None, Any | None, Any | None]:
        """The domain's wrap key, owner key and marker, each searched for by its label."""
        self._domain_keys = None
        return (
            self._find_one(ObjectClass.SECRET_KEY, DOMAIN_WRAP_LABEL),
            self._find_one(ObjectClass.SECRET_KEY, DOMAIN_OWNER_LABEL),
            self._find_one(ObjectClass.DATA, DOMAIN_MARKER_LABEL),
        )

    def domain_keys(self) -> tuple[Any | None, Any | None]:
        """The domain's wrap key and owner key (None where absent).

        Once both are found, the session keeps them: handles stay valid while the session
        lasts, and this session's own import and removal of a domain refresh them. An
        absent domain is looked for again each time (another process may recover one).
        """
        if self._domain_keys is not None:
            return self._domain_keys
        keys = self._find_domain_keys()
        if keys[0] is not None and keys[1] is not None:
            self._domain_keys = keys
        return keys

    def domain_id(self) -> bytes | None:
        """The id of the backup domain this slot holds (computed in the HSM), or None."""
        wrap_key, owner_key = self.domain_keys()
        if wrap_key is None or owner_key is None:
            return None
        return self._hmac(owner_key, DOMAIN_ID_INFO)[:DOMAIN_ID_LEN]

    def require_domain(self) -> bytes:
        """The domain id; raises :class:`DomainError` when the slot holds no domain."""
        domain = self.domain_id()
        if domain is None:
            raise DomainError(
                f"{self.where} holds no backup domain key: create a domain there, or "
                "recover one into it from the custodians' drives"
            )
        return domain

    def create_secret_key(self, template: dict[Attribute, Any], value: memoryview) -> Any:
        """A secret key object with CKA_VALUE ``value``, copied by the module alone.

        Where direct calls work, the module reads the value from our buffer (see
        :meth:`_RawModule.create_secret`); otherwise python-pkcs11 makes copies that are
        freed unwiped (docs/threat-model.md, "Memory").
        """
        raw = self.hsm.raw()
        if raw is None:
            return self.session.create_object({**template, A.VALUE: value})
        packed = {int(k): self._mapper.pack_attribute(k, v) for k, v in template.items()}
        handle = raw.create_secret(int(self.session.handle), packed, value)
        found: dict[Attribute, Any] = {
            k: template[k] for k in (A.CLASS, A.LABEL, A.ID) if k in template
        }
        return _ListedObject(self.session, handle, found)

    def _hmac(self, owner_key: Any, message: bytes) -> bytes:
        try:
            return bytes(owner_key.sign(message, mechanism=Mechanism.SHA256_HMAC))
        except PKCS11Error as exc:
            raise DomainError(
                f"the domain owner key of {self.where} cannot compute an HMAC: {exc!r}"
            ) from None

    def import_domain(self, secret: bytes | bytearray) -> bytes:
        """Store the domain secret as non-extractable token objects; returns the domain id.

        Refuses a slot that already holds a domain (:class:`DomainError`). Nothing is left
        behind if any step fails.
        """
        wrap_value, owner_value = split_domain_secret(secret)
        expected = domain_id_from_secret(secret)
        existing = self.domain_id()
        if existing is not None:
            same = " (the same domain)" if existing == expected else ""
            raise DomainError(f"{self.where} already holds backup domain {existing.hex()}{same}")
        # Leftovers of an interrupted import (a marker or one key alone) are cleared first.
        self.remove_domain()
        base = {
            A.CLASS: ObjectClass.SECRET_KEY,
            A.TOKEN: True,
            A.PRIVATE: True,
            A.SENSITIVE: True,
            A.EXTRACTABLE: False,
            A.MODIFIABLE: False,
            A.ID: expected,
            A.ENCRYPT: False,
            A.DECRYPT: False,
            A.SIGN: False,
            A.VERIFY: False,
            A.WRAP: False,
            A.UNWRAP: False,
            A.DERIVE: False,
        }
        created: list[Any] = []
        try:
            created.append(
                self.create_secret_key(
                    {
                        **base,
                        A.KEY_TYPE: KeyType.AES,
                        A.LABEL: DOMAIN_WRAP_LABEL,
                        A.WRAP: True,
                        A.UNWRAP: True,
                    },
                    wrap_value,
                )
            )
            owner_key = self.create_secret_key(
                {
                    **base,
                    A.KEY_TYPE: KeyType.GENERIC_SECRET,
                    A.LABEL: DOMAIN_OWNER_LABEL,
                    A.SIGN: True,
                },
                owner_value,
            )
            created.append(owner_key)
            computed = self._hmac(owner_key, DOMAIN_ID_INFO)[:DOMAIN_ID_LEN]
            if computed != expected:
                raise DomainError(
                    f"{self.where} computes HMAC-SHA256 differently from the standard: "
                    "the domain cannot be used there"
                )
            created.append(
                self.session.create_object(
                    {
                        A.CLASS: ObjectClass.DATA,
                        A.TOKEN: True,
                        A.PRIVATE: False,
                        A.LABEL: DOMAIN_MARKER_LABEL,
                        A.APPLICATION: DOMAIN_APPLICATION,
                        A.VALUE: expected,
                    }
                )
            )
        except PKCS11Error as exc:
            for obj in created:
                with suppress(PKCS11Error):
                    obj.destroy()
            raise DomainError(f"cannot store the domain key in {self.where}: {exc!r}") from None
        except BaseException:
            for obj in created:
                with suppress(PKCS11Error):
                    obj.destroy()
            raise
        self._domain_keys = (created[0], owner_key)
        return expected

    def remove_domain(self) -> None:
        """Destroy the domain objects of this slot (for re-import or tests)."""
        for obj in self._domain_objects():
            if obj is not None:
                try:
                    obj.destroy()
                except PKCS11Error as exc:
                    raise DomainError(
                        f"cannot remove the domain objects of {self.where}: {exc!r}"
                    ) from None
        self._domain_keys = None

    def owner_credential(self, serial: str) -> bytes:
        """``HMAC-SHA256(owner root, "sealkeep owner key" ‖ serial)``, computed in the HSM."""
        return self._hmac(self._owner_key(), OWNER_KEY_INFO + serial.encode())

    def _owner_key(self) -> Any:
        wrap_key, owner_key = self.domain_keys()
        if wrap_key is None or owner_key is None:
            self.require_domain()
        return owner_key

    def _wrap_key(self) -> Any:
        wrap_key, owner_key = self.domain_keys()
        if wrap_key is None or owner_key is None:
            self.require_domain()
        return wrap_key

    # -- set keys --------------------------------------------------------------------------

    _KEK_CAPABILITIES = (
        MechanismFlag.WRAP | MechanismFlag.UNWRAP | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
    )

    def new_set_key(self) -> SetKey:
        """A fresh AES-256 KEK (session object), and its value wrapped by the domain key."""
        wrap_key = self._wrap_key()
        try:
            kek = self.session.generate_key(
                KeyType.AES,
                256,
                store=False,
                capabilities=self._KEK_CAPABILITIES,
                template={A.SENSITIVE: True, A.EXTRACTABLE: True, A.PRIVATE: True},
            )
            wrapped = bytes(wrap_key.wrap_key(kek, mechanism=WRAP_MECHANISM))
        except PKCS11Error as exc:
            raise HsmError(f"cannot make a set key in {self.where}: {exc!r}") from None
        return SetKey(kek, wrapped)

    def open_set_key(self, wrapped: bytes) -> SetKey:
        """Unwrap a set's KEK with this slot's domain key (as a session object)."""
        wrap_key = self._wrap_key()
        try:
            kek = wrap_key.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                wrapped,
                mechanism=WRAP_MECHANISM,
                store=False,
                capabilities=self._KEK_CAPABILITIES,
                template={A.SENSITIVE: True, A.EXTRACTABLE: False, A.PRIVATE: True},
            )
        except PKCS11Error:
            # SoftHSM2 reports a failed integrity check of AES key wrap as GeneralError.
            raise SetKeyError(
                f"the set key does not unwrap with the domain key of {self.where}: the set "
                "belongs to another backup domain, or its wrapped key is corrupt"
            ) from None
        return SetKey(kek, bytes(wrapped))

    # -- backup ----------------------------------------------------------------------------

    def backup_entries(
        self,
        kek: SetKey,
        objects: Iterable[ObjectInfo] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[KeyEntry], list[SkippedEntry]]:
        """Wrap every exportable key under ``kek``: the manifest entries, and what was skipped.

        Public keys and certificates are entries without a wrapped value. Nothing is skipped
        silently: every object left out is a :class:`SkippedEntry` with its reason, except the
        backup domain's own keys, which the custodians' shares keep.
        """
        items = list(self.objects() if objects is None else objects)
        entries: list[KeyEntry] = []
        skipped: list[SkippedEntry] = []
        for done, item in enumerate(items, 1):
            if item.is_domain_key:
                pass
            elif not item.exportable:
                skipped.append(
                    SkippedEntry(item.object_class, item.label, item.id, item.reason or "")
                )
            elif item.needs_wrap:
                try:
                    entries.append(KeyEntry(item.attributes, kek.wrap(item.handle)))
                except PKCS11Error as exc:
                    skipped.append(
                        SkippedEntry(
                            item.object_class,
                            item.label,
                            item.id,
                            f"the HSM refused to wrap it ({_error_name(exc)})",
                        )
                    )
            else:
                entries.append(KeyEntry(item.attributes, None))
            if progress is not None:
                progress(done, len(items))
        return entries, skipped

    # -- restore ---------------------------------------------------------------------------

    def restore(
        self,
        kek: SetKey,
        entries: Sequence[KeyEntry],
        *,
        labels: Collection[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[RestoreOutcome]:
        """Recreate the entries (or those whose label is in ``labels``) in this slot.

        Secret and private keys are unwrapped with their attributes replayed; public keys and
        certificates are recreated from their attributes. An object whose class, label and
        id are already present is reported as ``"present"`` and not duplicated. Each
        restored object is proven by use (see :meth:`prove`).
        """
        present = self.present_keys()
        publics = {
            (entry.key_type, entry.id): entry.attributes
            for entry in entries
            if entry.object_class == ObjectClass.PUBLIC_KEY
        }
        chosen = [e for e in entries if labels is None or e.label in labels]
        # Keys first, then the public objects that go with them.
        chosen.sort(
            key=lambda e: e.object_class not in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
        )
        outcomes = []
        for done, entry in enumerate(chosen, 1):
            outcomes.append(self._restore_one(kek, entry, present, publics))
            if progress is not None:
                progress(done, len(chosen))
        return outcomes

    def _restore_one(
        self,
        kek: SetKey,
        entry: KeyEntry,
        present: set[tuple[int, str, bytes]],
        publics: dict[tuple[int | None, bytes], Attributes],
    ) -> RestoreOutcome:
        def outcome(status: str, detail: str = "", proof: Proof | None = None) -> RestoreOutcome:
            return RestoreOutcome(
                entry.object_class, entry.key_type, entry.label, entry.id, status, detail, proof
            )

        ident = _ident(entry.attributes)
        if ident in present:
            return outcome("present", "an object of that class, label and id is in the slot")
        try:
            obj = self._recreate(kek, entry)
        except (PKCS11Error, ValueError) as exc:
            return outcome("failed", f"the HSM refused to recreate it ({_error_name(exc)})")
        present.add(ident)
        public = publics.get((entry.key_type, entry.id))
        return outcome("restored", proof=self.prove(obj, entry, kek, public))

    def _recreate(self, kek: SetKey, entry: KeyEntry) -> Any:
        object_class = ObjectClass(entry.object_class)
        template = replay_template(entry.attributes)
        if object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
            if entry.wrapped is None or entry.key_type is None:
                raise ValueError("the set holds no wrapped value or key type for it")
            key_type = KeyType(entry.key_type)
            for flag in _CAPABILITY_FLAGS:
                template.setdefault(flag, DEFAULT)
            return kek.handle.unwrap_key(
                object_class,
                key_type,
                entry.wrapped,
                mechanism=WRAP_MECHANISM,
                store=True,
                capabilities=0,
                template=template,
            )
        return self.session.create_object(template)

    def prove(
        self,
        obj: Any,
        entry: KeyEntry,
        kek: SetKey | None = None,
        public: Attributes | None = None,
    ) -> Proof:
        """Prove a restored object is the one backed up, by using it where it allows.

        - RSA / EC / Ed25519 private keys: sign in the HSM, verify here against the public
          half from the set (RSA decrypt-only keys: encrypt here, decrypt in the HSM);
        - AES keys: encrypt/decrypt in the HSM, and the key check value where one was kept;
        - every secret or private key: wrapped again under the set's KEK, which must give the
          very bytes stored in the set (AES key wrap is deterministic): a check value of the
          whole key, for keys that allow no operation sealkeep can check;
        - public keys and certificates: their values read back from the token.
        """
        try:
            return _prove(obj, entry, kek, public)
        except PKCS11Error as exc:
            return Proof(False, "error", f"the HSM failed while proving it ({_error_name(exc)})")


# --- helpers for backup and restore -------------------------------------------------------


def _exportability(attrs: Attributes) -> tuple[bool, str | None]:
    object_class = _int(attrs, A.CLASS)
    if object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
        return True, None
    if _str(attrs, A.LABEL) in DOMAIN_LABELS:
        return False, "backup domain key (kept by the custodians' shares, not in sets)"
    if _bool(attrs, A.EXTRACTABLE) is not True:
        return False, "not extractable"
    if _bool(attrs, A.WRAP_WITH_TRUSTED):
        return False, "can only be wrapped by a trusted key"
    if _int(attrs, A.KEY_TYPE) is None:
        return False, "key type unknown"
    return True, None


def replay_template(attrs: Attributes) -> dict[Attribute, Any]:
    """The creation template that recreates an object from its captured attributes."""
    raw_class = _int(attrs, A.CLASS)
    if raw_class is None:
        raise ValueError("the entry has no object class")
    object_class = ObjectClass(raw_class)
    template: dict[Attribute, Any] = {A.CLASS: object_class, A.TOKEN: True}
    key_type = _int(attrs, A.KEY_TYPE)
    if key_type is not None and object_class != ObjectClass.CERTIFICATE:
        template[A.KEY_TYPE] = key_type
    for attribute in REPLAY.get(object_class, ()):
        value = attrs.get(int(attribute))
        if value is None:
            continue
        if attribute in _DATES and (not value or value == b"0" * 8):
            continue
        template[attribute] = value
    for attribute in _REPLAY_IF_FALSE:
        if attrs.get(int(attribute)) is False:
            template[attribute] = False
    for attribute in _REPLAY_IF_TRUE:
        if attrs.get(int(attribute)) is True:
            template[attribute] = True
    return template


def _error_name(exc: Exception) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _ec_point(attrs: Attributes, bits: int) -> bytes | None:
    """The raw EC point from EC_POINT, which tokens give DER-wrapped (or, some, raw)."""
    value = _bytes(attrs, A.EC_POINT)
    if not value:
        return None
    size = (bits + 7) // 8
    raw_lengths = (1 + 2 * size, 1 + size, size)  # uncompressed, compressed, Edwards
    if len(value) in raw_lengths and value[0] != 0x04:
        return value
    if len(value) >= 2 and value[0] == 0x04:
        if value[1] < 0x80:
            inner, start = value[1], 2
        else:
            count = value[1] & 0x7F
            inner = int.from_bytes(value[2 : 2 + count], "big")
            start = 2 + count
        if start + inner == len(value) and inner in raw_lengths:
            return value[start:]
    return value if len(value) in raw_lengths else None


def _verify_rsa(attrs: Attributes, public: Attributes | None) -> rsa.RSAPublicKey | None:
    for source in (attrs, public or {}):
        modulus = _bytes(source, A.MODULUS)
        exponent = _bytes(source, A.PUBLIC_EXPONENT)
        if modulus and exponent:
            return rsa.RSAPublicNumbers(
                int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
            ).public_key()
    return None


class _Refused(Exception):
    """The token does not allow this use of the key (its flags or mechanisms)."""


def _use(operation: Callable[[], Any]) -> bytes:
    """Run one HSM operation for a proof; a refusal becomes :class:`_Refused`."""
    try:
        return bytes(operation())
    except PKCS11Error as exc:
        raise _Refused(_error_name(exc)) from None


def _prove(obj: Any, entry: KeyEntry, kek: SetKey | None, public: Attributes | None) -> Proof:
    attrs = entry.attributes
    if entry.object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
        names = [a for a in (A.VALUE, A.MODULUS, A.PUBLIC_EXPONENT, A.EC_POINT) if int(a) in attrs]
        back = _read(obj, names)
        for name in names:
            if back.get(int(name)) != attrs.get(int(name)):
                return Proof(False, "read back", f"its {name.name} differs from the set's")
        return Proof(True, "read back", "its values match the set")

    methods: list[str] = []
    notes: list[str] = []
    try:
        failure = _prove_by_use(obj, attrs, public, methods)
    except _Refused as exc:
        # Not a verdict on the key: the checks below still establish its value.
        notes.append(f"use refused ({exc})")
        failure = None
    if failure is not None:
        return failure
    if kek is not None and entry.wrapped is not None and _bool(attrs, A.EXTRACTABLE):
        try:
            rewrapped = kek.wrap(obj)
        except PKCS11Error as exc:
            notes.append(f"value check refused ({_error_name(exc)})")
        else:
            if rewrapped != entry.wrapped:
                return Proof(False, "value check", "its value differs from the one in the set")
            methods.append("value check")
    if not methods:
        return Proof(False, "none", "; ".join(notes) or "it allows no operation sealkeep can check")
    return Proof(True, " + ".join(methods), "; ".join(notes))


def _prove_by_use(
    obj: Any, attrs: Attributes, public: Attributes | None, methods: list[str]
) -> Proof | None:
    """Use the key as its flags allow; a failed check is returned, passed ones listed."""
    key_type = _int(attrs, A.KEY_TYPE)
    message = secrets.token_bytes(32)
    if key_type == KeyType.RSA:
        verifier = _verify_rsa(attrs, public)
        if verifier is not None and _bool(attrs, A.SIGN):
            signature = _use(lambda: obj.sign(message, mechanism=Mechanism.SHA256_RSA_PKCS))
            try:
                verifier.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return Proof(False, "sign/verify", "its signature does not verify")
            methods.append("sign/verify")
        elif verifier is not None and _bool(attrs, A.DECRYPT):
            ciphertext = verifier.encrypt(message, padding.PKCS1v15())
            if _use(lambda: obj.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS)) != message:
                return Proof(False, "encrypt/decrypt", "it does not decrypt for its public half")
            methods.append("encrypt/decrypt")
    elif key_type == KeyType.EC and public is not None and _bool(attrs, A.SIGN):
        curve = _CURVES.get(_bytes(attrs, A.EC_PARAMS) or _bytes(public, A.EC_PARAMS) or b"")
        point = _ec_point(public, curve[1]) if curve else None
        if curve and point and curve[0] in _CRYPTOGRAPHY_CURVES:
            verifier_ec = ec.EllipticCurvePublicKey.from_encoded_point(
                _CRYPTOGRAPHY_CURVES[curve[0]], point
            )
            # CKM_ECDSA signs a digest and returns raw r ‖ s.
            digest = hashlib.sha256(message).digest()
            raw = _use(lambda: obj.sign(digest, mechanism=Mechanism.ECDSA))
            half = len(raw) // 2
            der = utils.encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
            try:
                verifier_ec.verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            except InvalidSignature:
                return Proof(False, "sign/verify", "its signature does not verify")
            methods.append("sign/verify")
    elif key_type == KeyType.EC_EDWARDS and public is not None and _bool(attrs, A.SIGN):
        point = _ec_point(public, 256)
        if point is not None and len(point) == 32:
            raw = _use(lambda: obj.sign(message, mechanism=Mechanism.EDDSA))
            try:
                ed25519.Ed25519PublicKey.from_public_bytes(point).verify(raw, message)
            except InvalidSignature:
                return Proof(False, "sign/verify", "its signature does not verify")
            methods.append("sign/verify")
    elif key_type == KeyType.AES and _bool(attrs, A.ENCRYPT) and _bool(attrs, A.DECRYPT):
        iv = secrets.token_bytes(16)
        aes_cbc = Mechanism.AES_CBC_PAD
        ciphertext = _use(lambda: obj.encrypt(message, mechanism=aes_cbc, mechanism_param=iv))
        plain = _use(lambda: obj.decrypt(ciphertext, mechanism=aes_cbc, mechanism_param=iv))
        if plain != message:
            return Proof(False, "encrypt/decrypt", "it does not decrypt what it encrypts")
        methods.append("encrypt/decrypt")
        check = _bytes(attrs, A.CHECK_VALUE)
        if check:
            # The PKCS#11 check value of an AES key: the first bytes of E(K, 0^128).
            block = _use(lambda: obj.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))
            if block[: len(check)] != check:
                return Proof(False, "check value", "its check value differs from the set's")
            methods.append("check value")
    return None
