"""Proving a restored object is the one backed up, by using it inside the HSM."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from pkcs11 import (
    KeyType,
    Mechanism,
    ObjectClass,
)
from pkcs11.exceptions import PKCS11Error

from .hsm_base import (
    _CRYPTOGRAPHY_CURVES,
    _CURVES,
    A,
    Proof,
    _bool,
    _bytes,
    _error_name,
    _int,
    _read,
)
from .hsm_caps import is_mechanism_error
from .hsm_keys import (
    SetKey,
    Wrapping,
)
from .manifest import Attributes, KeyEntry

# DER of a DigestInfo for SHA-256 before the digest (RFC 8017 section 9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


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


def _rsa_sign(obj: Any, message: bytes) -> bytes:
    """A PKCS#1 v1.5 signature over SHA-256 of ``message``: with CKM_SHA256_RSA_PKCS, or
    where the token lacks it (openCryptoki 3.8), the same signature by CKM_RSA_PKCS over
    the DigestInfo."""
    try:
        return bytes(obj.sign(message, mechanism=Mechanism.SHA256_RSA_PKCS))
    except PKCS11Error as exc:
        if not is_mechanism_error(exc):
            raise _Refused(_error_name(exc)) from None
    digest_info = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    return _use(lambda: obj.sign(digest_info, mechanism=Mechanism.RSA_PKCS))


class _KeyUse:
    """One-part encryption and decryption with one key: by direct calls on its handle where
    the set's keys were made by them (a fraction of python-pkcs11's cost per call)."""

    def __init__(self, obj: Any, direct: Wrapping | None) -> None:
        self.obj = obj
        self.direct = direct

    def encrypt(self, data: bytes, mechanism: Mechanism, iv: bytes | None = None) -> bytes:
        return self._run(True, data, mechanism, iv)

    def decrypt(self, data: bytes, mechanism: Mechanism, iv: bytes | None = None) -> bytes:
        return self._run(False, data, mechanism, iv)

    def _run(self, encrypt: bool, data: bytes, mechanism: Mechanism, iv: bytes | None) -> bytes:
        if self.direct is None:
            call = self.obj.encrypt if encrypt else self.obj.decrypt
            options = {"mechanism_param": iv} if iv is not None else {}
            return _use(lambda: call(data, mechanism=mechanism, **options))
        raw, session, key = self.direct.raw, self.direct.session, int(self.obj.handle)
        direct_call = raw.encrypt if encrypt else raw.decrypt
        return _use(lambda: direct_call(session, int(mechanism), key, data, iv))


def _prove(
    obj: Any,
    entry: KeyEntry,
    kek: SetKey | None,
    public: Attributes | None,
    via: Wrapping | None = None,
) -> Proof:
    """The proof of :meth:`SetContents.prove`; a secret key's calls go through ``via``'s
    session where given (a restore's worker), else the set's."""
    attrs = entry.attributes
    if entry.object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE, ObjectClass.DATA):
        names = [a for a in (A.VALUE, A.MODULUS, A.PUBLIC_EXPONENT, A.EC_POINT) if int(a) in attrs]
        back = _read(obj, names)
        for name in names:
            if back.get(int(name)) != attrs.get(int(name)):
                return Proof(False, "read back", f"its {name.name} differs from the set's")
        return Proof(True, "read back", "its values match the set")

    methods: list[str] = []
    notes: list[str] = []
    try:
        use = _KeyUse(obj, via or (kek.direct if kek is not None else None))
        failure = _prove_by_use(obj, attrs, public, methods, use)
    except _Refused as exc:
        # Not a verdict on the key: the checks below still establish its value.
        notes.append(f"use refused ({exc})")
        failure = None
    if failure is not None:
        return failure
    if kek is not None and entry.wrapped is not None and _bool(attrs, A.EXTRACTABLE):
        try:
            rewrapped = kek.wrap(obj, like=entry.wrapped, via=via)
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
    obj: Any, attrs: Attributes, public: Attributes | None, methods: list[str], use: _KeyUse
) -> Proof | None:
    """Use the key as its flags allow; a failed check is returned, passed ones listed."""
    key_type = _int(attrs, A.KEY_TYPE)
    message = secrets.token_bytes(32)
    if key_type == KeyType.RSA:
        verifier = _verify_rsa(attrs, public)
        if verifier is not None and _bool(attrs, A.SIGN):
            signature = _rsa_sign(obj, message)
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
        # A zero block first under a zero IV: the first CBC block is then E(K, 0^128), whose
        # first bytes are the PKCS#11 check value, so one encryption serves both checks.
        message = bytes(16) + message
        ciphertext = use.encrypt(message, Mechanism.AES_CBC_PAD, bytes(16))
        if use.decrypt(ciphertext, Mechanism.AES_CBC_PAD, bytes(16)) != message:
            return Proof(False, "encrypt/decrypt", "it does not decrypt what it encrypts")
        methods.append("encrypt/decrypt")
        check = _bytes(attrs, A.CHECK_VALUE)
        if check:
            if ciphertext[: len(check)] != check:
                return Proof(False, "check value", "its check value differs from the set's")
            methods.append("check value")
    return None
