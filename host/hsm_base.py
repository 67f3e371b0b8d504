"""The vocabulary of sealkeep's HSM side: errors, attribute reading, the records of slots,
objects and restores, and the domain secret's layout.

Nothing here opens a session; :mod:`sealkeep.hsm` does, with these pieces.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import (
    Attribute,
    CertificateType,
    KeyType,
    Mechanism,
    ObjectClass,
)
from pkcs11.attributes import AttributeMapper, handle_bytes, handle_ulong
from pkcs11.exceptions import PKCS11Error

from .errors import SealkeepError
from .hsm_raw import HsmCallError
from .manifest import Attributes, AttrValue

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
DOMAIN_SEAL_LABEL = "sealkeep-domain-seal"
DOMAIN_LABELS = frozenset({DOMAIN_WRAP_LABEL, DOMAIN_OWNER_LABEL, DOMAIN_SEAL_LABEL})
AUDIT_KEY_LABEL = "sealkeep-audit"  # the slot's own pair signing the service's audit heads
# The key hierarchy a slot's domain objects follow. 1: one AES key wraps each set's KEK,
# which also seals the manifest (ENCRYPT/DECRYPT), with no unwrap templates: a PIN holder
# can unwrap a KEK as a readable key. 2: one purpose per key, unwrap templates (hsm_keys).
HIERARCHY_SHARED_KEK = 1
HIERARCHY_PER_PURPOSE = 2
HIERARCHY = HIERARCHY_PER_PURPOSE

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
    ObjectClass.DATA,
)
CLASS_NAMES = {
    ObjectClass.SECRET_KEY: "secret key",
    ObjectClass.PRIVATE_KEY: "private key",
    ObjectClass.PUBLIC_KEY: "public key",
    ObjectClass.CERTIFICATE: "certificate",
    ObjectClass.DATA: "data object",
}

A = Attribute


def _attrs(names: str) -> tuple[Attribute, ...]:
    """Attribute types from their names (``"CLASS LABEL ID"``)."""
    return tuple(Attribute[name] for name in names.split())


def _captured(names: str) -> tuple[Attribute, ...]:
    """Attribute types in numeric order: the order of a canonical CBOR map, so a manifest
    encodes what is read as it comes (see ``sealkeep.manifest.Manifest.body``)."""
    return tuple(sorted(_attrs(names), key=int))


# What is read of each class. Never key material: no VALUE of a secret key and no private
# component of a private key, even when the token would hand them out.
_COMMON = "CLASS TOKEN PRIVATE MODIFIABLE COPYABLE DESTROYABLE LABEL "
_KEY_COMMON = "KEY_TYPE ID START_DATE END_DATE DERIVE LOCAL KEY_GEN_MECHANISM "
CAPTURE: dict[ObjectClass, tuple[Attribute, ...]] = {
    ObjectClass.SECRET_KEY: _captured(
        _COMMON + _KEY_COMMON + "SENSITIVE ENCRYPT DECRYPT SIGN VERIFY WRAP UNWRAP EXTRACTABLE "
        "ALWAYS_SENSITIVE NEVER_EXTRACTABLE CHECK_VALUE WRAP_WITH_TRUSTED TRUSTED VALUE_LEN"
    ),
    # With the public half, as far as the private object shows it.
    ObjectClass.PRIVATE_KEY: _captured(
        _COMMON + _KEY_COMMON + "SUBJECT SENSITIVE DECRYPT SIGN SIGN_RECOVER UNWRAP EXTRACTABLE "
        "ALWAYS_SENSITIVE NEVER_EXTRACTABLE WRAP_WITH_TRUSTED ALWAYS_AUTHENTICATE "
        "MODULUS PUBLIC_EXPONENT EC_PARAMS"
    ),
    ObjectClass.PUBLIC_KEY: _captured(
        _COMMON + _KEY_COMMON + "SUBJECT ENCRYPT VERIFY VERIFY_RECOVER WRAP TRUSTED "
        "MODULUS MODULUS_BITS PUBLIC_EXPONENT EC_PARAMS EC_POINT PRIME SUBPRIME BASE VALUE"
    ),
    ObjectClass.CERTIFICATE: _captured(
        _COMMON + "ID CERTIFICATE_TYPE CERTIFICATE_CATEGORY TRUSTED CHECK_VALUE SUBJECT ISSUER "
        "SERIAL_NUMBER VALUE URL HASH_OF_SUBJECT_PUBLIC_KEY HASH_OF_ISSUER_PUBLIC_KEY "
        "START_DATE END_DATE"
    ),
    # A data object's value is no key: it travels inside the sealed manifest.
    ObjectClass.DATA: _captured(_COMMON + "APPLICATION OBJECT_ID VALUE"),
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
    ObjectClass.DATA: _attrs("LABEL PRIVATE APPLICATION OBJECT_ID VALUE"),
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
    with memoryview(secret) as view, open("/dev/urandom", "rb", buffering=0) as source:
        filled = 0
        while filled < DOMAIN_SECRET_LEN:
            got = source.readinto(view[filled:])
            if not got:
                raise DomainError("the system's random source ended early")
            filled += got
    return secret


def split_domain_secret(secret: bytes | bytearray) -> tuple[memoryview, memoryview]:
    """(first half, owner root) of a domain secret: views into it, never copies. The first
    half is the wrap key of hierarchy 1 and the key material of hierarchy 2's domain keys."""
    if len(secret) != DOMAIN_SECRET_LEN:
        raise DomainError(f"a domain secret has {DOMAIN_SECRET_LEN} bytes, not {len(secret)}")
    view = memoryview(secret)
    return view[:DOMAIN_KEY_LEN], view[DOMAIN_KEY_LEN:]


def owner_root_hmac(secret: bytes | bytearray, message: bytes) -> bytes:
    """``HMAC-SHA256(owner root, message)``, what the HSM's owner key computes, keyed by a
    view into the secret (``hmac.digest`` hands it to OpenSSL's one-shot HMAC: no copy)."""
    if len(secret) != DOMAIN_SECRET_LEN:
        raise DomainError(f"a domain secret has {DOMAIN_SECRET_LEN} bytes, not {len(secret)}")
    with memoryview(secret) as view:
        return hmac.digest(view[DOMAIN_KEY_LEN:], message, "sha256")


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
    domain_hierarchy: int | None = None
    domain_profile: int | None = None
    """The number of the mechanism profile its domain follows (see :mod:`sealkeep.hsm_caps`)."""

    @property
    def profile_name(self) -> str | None:
        """``standard``, ``portable``, or a number this version does not know."""
        if self.domain_profile is None:
            return None
        from .hsm_caps import profile_label  # hsm_caps builds on this module

        return profile_label(self.domain_profile)

    @property
    def holds_domain(self) -> bool:
        return self.domain_id is not None

    @property
    def old_hierarchy(self) -> bool:
        """The domain predates key hierarchy :data:`HIERARCHY`: a re-share upgrades it."""
        return self.holds_domain and (self.domain_hierarchy or 0) < HIERARCHY

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
            "key_hierarchy": self.domain_hierarchy,
            "profile": self.profile_name if self.holds_domain else None,
            "old_key_hierarchy": self.old_hierarchy,
        }


@dataclass(frozen=True)
class ObjectInfo:
    """An object of a slot, with every attribute that matters and whether it can be backed up."""

    attributes: Attributes = field(repr=False)
    exportable: bool
    reason: str | None
    handle: Any = field(default=None, repr=False, compare=False)
    refused: bool = False
    """Marked extractable, yet the token will not wrap it: a loss no policy explains."""

    @cached_property  # asked for every object, often several times
    def object_class(self) -> int:
        return _int(self.attributes, A.CLASS) or 0

    @property
    def key_type(self) -> int | None:
        return _int(self.attributes, A.KEY_TYPE)

    @cached_property
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

    @cached_property
    def is_domain_key(self) -> bool:
        """One of the backup domain's own objects (never in a set: the shares keep the keys,
        and the marker names the domain the slot holds), or the slot's audit key pair."""
        if self.object_class == ObjectClass.DATA:
            return self.label == DOMAIN_MARKER_LABEL
        if self.label == AUDIT_KEY_LABEL:
            return self.object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
        return self.needs_wrap and self.label in DOMAIN_LABELS

    @cached_property
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
            "refused": self.refused,
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

    ``status`` is ``"restored"``, ``"present"`` (the same object already in the slot, or
    one nothing can tell from it; left alone), ``"different"`` (another object with the same
    class, label and id; left alone), ``"replaced"`` (that other object destroyed, the set's
    restored) or ``"failed"``; ``detail`` says why.
    """

    object_class: int
    key_type: int | None
    label: str
    id: bytes
    status: str
    detail: str = ""
    proof: Proof | None = None
    not_taken: tuple[str, ...] = ()
    """Attributes the set records that the restored object does not have as recorded
    (``"CHECK_VALUE"``, ``"VALUE_LEN 32 -> 0"``): the target HSM did not keep them."""

    @property
    def ok(self) -> bool:
        if self.status in ("present", "would restore", "would replace"):
            return True
        return self.status in ("restored", "replaced") and self.proof is not None and self.proof.ok

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
            "not_taken": list(self.not_taken),
        }


# --- objects found by direct calls ---------------------------------------------------------


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


def _python_class(obj: Any) -> ObjectClass | None:
    """The class of a python-pkcs11 object, when it is one sealkeep backs up (python-pkcs11
    has no class of its own for data objects: such a plain ``Object`` is asked its class)."""
    for python_class, object_class in (
        (pkcs11.SecretKey, ObjectClass.SECRET_KEY),
        (pkcs11.PrivateKey, ObjectClass.PRIVATE_KEY),
        (pkcs11.PublicKey, ObjectClass.PUBLIC_KEY),
        (pkcs11.Certificate, ObjectClass.CERTIFICATE),
    ):
        if isinstance(obj, python_class):
            return object_class
    try:
        if obj[A.CLASS] == ObjectClass.DATA:
            return ObjectClass.DATA
    except (PKCS11Error, KeyError, ValueError):
        pass
    return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    return str(value).strip()


# --- helpers for backup and restore -------------------------------------------------------


def _exportability(attrs: Attributes) -> tuple[bool, str | None]:
    object_class = _int(attrs, A.CLASS)
    if _str(attrs, A.LABEL) == AUDIT_KEY_LABEL and object_class in (
        ObjectClass.PRIVATE_KEY,
        ObjectClass.PUBLIC_KEY,
    ):
        return False, "the slot's audit signing key (each slot makes its own, not in sets)"
    if object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
        return True, None
    if object_class == ObjectClass.DATA:
        if _str(attrs, A.LABEL) == DOMAIN_MARKER_LABEL:
            return False, "backup domain marker (names the domain this slot holds)"
        return True, None
    if object_class not in CAPTURE:
        return False, f"sealkeep does not back up {class_name(object_class or 0)} objects"
    if _str(attrs, A.LABEL) in DOMAIN_LABELS:
        return False, "backup domain key (kept by the custodians' shares, not in sets)"
    if _bool(attrs, A.EXTRACTABLE) is not True:
        return False, "not extractable"
    if _bool(attrs, A.WRAP_WITH_TRUSTED):
        return False, "can only be wrapped by a trusted key"
    if _int(attrs, A.KEY_TYPE) is None:
        return False, "key type unknown"
    return True, None


def attributes_not_taken(recorded: Attributes, now: Attributes) -> tuple[str, ...]:
    """What of ``recorded`` (a set's entry) the restored object (``now``) does not hold as
    recorded: absent ones by name, changed ones as ``NAME old -> new`` (flags and numbers)."""
    missing = []
    for kind, value in recorded.items():
        if kind == A.CLASS or now.get(kind) == value:
            continue
        try:
            name = Attribute(kind).name
        except ValueError:
            name = f"0x{kind:x}"
        if now.get(kind) in (None, b"", ""):
            missing.append(name)
        elif isinstance(value, bool | int) and isinstance(now[kind], bool | int):
            missing.append(f"{name} {_shown(value)} -> {_shown(now[kind])}")
        else:
            missing.append(f"{name} (another value)")
    return tuple(missing)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
    if isinstance(exc, HsmCallError):
        return text  # the call and its return value: "C_UnwrapKey: CKR_WRAPPED_KEY_INVALID"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
