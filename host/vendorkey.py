"""The vendor's firmware signing key held in a PKCS#11 token, as vendors keep signing keys.

``token_keygen`` makes an Ed25519 key pair inside the token (``CKM_EC_EDWARDS_KEY_PAIR_GEN``):
the private half sensitive, never extractable, for signing only, neither copyable nor
modifiable; the public half for verifying. ``TokenSigner`` signs with it (``CKM_EDDSA``,
pure Ed25519: the same signature a key file gives, so drives verify it unchanged). The
private key never leaves the token; sealkeep reads only its public point.
"""

from __future__ import annotations

import secrets
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

from .errors import SealkeepError
from .hsm import HsmError, HsmSession

__all__ = ["TokenSigner", "VendorKeyError", "token_keygen"]

ED25519_PARAMS = bytes.fromhex("06032b6570")  # DER of the OID 1.3.101.112 (id-Ed25519)
_NEEDED = (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA)


class VendorKeyError(HsmError):
    """The token cannot make or use the vendor key as asked."""


def _check_mechanisms(session: HsmSession) -> None:
    try:
        offered = set(session.session.token.slot.get_mechanisms())
    except PKCS11Error as exc:
        raise VendorKeyError(f"cannot read the mechanisms of {session.where}: {exc!r}") from None
    missing = [f"CKM_{m.name}" for m in _NEEDED if m not in offered]
    if missing:
        raise VendorKeyError(
            f"{session.where} offers no {' and no '.join(missing)}: it cannot hold an Ed25519 "
            "vendor key. Use a token that can, or a key file (`firmware keygen --out FILE`)."
        )


def _find(session: HsmSession, label: str, object_class: ObjectClass) -> list[Any]:
    query = {Attribute.LABEL: label, Attribute.CLASS: object_class, Attribute.TOKEN: True}
    return list(session.session.get_objects(query))


def _point(public: Any) -> bytes:
    """The raw public key of a token's Ed25519 public key object. CKA_EC_POINT is a DER
    OCTET STRING around the 32 bytes (PKCS#11 3.0); some tokens give the bytes bare."""
    value = bytes(public[Attribute.EC_POINT])
    if len(value) == 34 and value[:2] == b"\x04\x20":
        return value[2:]
    if len(value) == 32:
        return value
    raise VendorKeyError(
        f"the token gives the public key in a form sealkeep does not know: {value.hex()}"
    )


def token_keygen(session: HsmSession, label: str) -> bytes:
    """A new Ed25519 vendor key pair labelled ``label`` in the token; its public key.

    A key already labelled so is never replaced: the call is refused, and nothing changes.
    """
    if not label:
        raise VendorKeyError("a vendor key in a token needs a label (--label)")
    _check_mechanisms(session)
    for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
        if _find(session, label, object_class):
            raise VendorKeyError(
                f"{session.where} already holds a key labelled {label!r}: a vendor key is never "
                "replaced; choose another label."
            )
    key_id = secrets.token_bytes(16)
    try:
        public, _ = session.session.generate_keypair(
            KeyType.EC_EDWARDS,
            public_template={
                Attribute.EC_PARAMS: ED25519_PARAMS,
                Attribute.LABEL: label,
                Attribute.ID: key_id,
                Attribute.TOKEN: True,
                Attribute.VERIFY: True,
                Attribute.ENCRYPT: False,
                Attribute.WRAP: False,
                Attribute.DERIVE: False,
            },
            private_template={
                Attribute.LABEL: label,
                Attribute.ID: key_id,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.DECRYPT: False,
                Attribute.UNWRAP: False,
                Attribute.DERIVE: False,
                Attribute.COPYABLE: False,
                Attribute.MODIFIABLE: False,
            },
            mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        )
    except PKCS11Error as exc:
        raise VendorKeyError(
            f"{session.where} refused to make an Ed25519 key pair: {exc!r}"
        ) from None
    return _point(public)


class TokenSigner:
    """Signs with the vendor key labelled ``label`` in the token of ``session`` (a
    :class:`sealkeep.firmware.Signer`)."""

    def __init__(self, session: HsmSession, label: str) -> None:
        _check_mechanisms(session)
        private = _find(session, label, ObjectClass.PRIVATE_KEY)
        public = _find(session, label, ObjectClass.PUBLIC_KEY)
        if len(private) != 1 or len(public) != 1:
            found = f"{len(private)} private and {len(public)} public"
            raise VendorKeyError(
                f"{session.where} holds {found} key(s) labelled {label!r}, not one pair: "
                "name the vendor key made by `firmware keygen --pkcs11`."
            )
        if public[0][Attribute.KEY_TYPE] != KeyType.EC_EDWARDS:
            raise VendorKeyError(f"the key labelled {label!r} is not an Ed25519 key")
        self._private = private[0]
        self._public = _point(public[0])
        self.where = session.where

    def public_bytes(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        try:
            return bytes(self._private.sign(message, mechanism=Mechanism.EDDSA))
        except PKCS11Error as exc:
            raise SealkeepError(
                f"{self.where} refused to sign with the vendor key: {exc!r}"
            ) from None
