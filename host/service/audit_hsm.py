"""Heads of the audit log signed inside a slot, by a key that never leaves it.

Each slot that the service logs into holds one signing key pair labelled
:data:`AUDIT_KEY_LABEL`: the private half sensitive, never extractable, for signing only.
It is EC P-256 (ECDSA over SHA-256) where the token can make EC keys, else RSA-2048
(PKCS #1 v1.5 over SHA-256, the DigestInfo built here, since openCryptoki's soft token has
no CKM_SHA256_RSA_PKCS and no EC at all). Signatures verify with ``cryptography`` against
the public key read from the token, so an auditor needs no HSM to check them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

from ..hsm import HsmError, HsmSession
from ..hsm_base import AUDIT_KEY_LABEL

__all__ = [
    "AUDIT_KEY_LABEL",
    "ECDSA_P256",
    "RSA_PKCS1_2048",
    "AuditKeyError",
    "SlotSigner",
    "load_public_key",
    "verify_signature",
]

ECDSA_P256 = "ecdsa-p256-sha256"
RSA_PKCS1_2048 = "rsa-pkcs1v15-sha256"
ALGORITHMS = (ECDSA_P256, RSA_PKCS1_2048)

P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # DER of the OID 1.2.840.10045.3.1.7
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
RSA_BITS = 2048
_EC_NEEDS = (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA)
_RSA_NEEDS = (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS)

A = Attribute


class AuditKeyError(HsmError):
    """The slot cannot hold or use the audit signing key as sealkeep requires."""


def _offered(session: HsmSession) -> set[int]:
    try:
        return {int(m) for m in session.session.token.slot.get_mechanisms()}
    except PKCS11Error as exc:
        raise AuditKeyError(f"cannot read the mechanisms of {session.where}: {exc!r}") from None


def choose_algorithm(offered: set[int]) -> str:
    """ECDSA P-256 where the token has it, else RSA-2048; refused when it has neither."""
    if all(int(m) in offered for m in _EC_NEEDS):
        return ECDSA_P256
    if all(int(m) in offered for m in _RSA_NEEDS):
        return RSA_PKCS1_2048
    raise AuditKeyError(
        "the token offers neither EC P-256 signing (CKM_EC_KEY_PAIR_GEN, CKM_ECDSA) nor "
        "RSA signing (CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS): it cannot sign the audit log"
    )


def _find(session: HsmSession, object_class: ObjectClass) -> list[Any]:
    query = {A.LABEL: AUDIT_KEY_LABEL, A.CLASS: object_class, A.TOKEN: True}
    return list(session.session.get_objects(query))


def _public_templates(key_id: bytes) -> dict[Attribute, Any]:
    return {
        A.LABEL: AUDIT_KEY_LABEL,
        A.ID: key_id,
        A.TOKEN: True,
        A.VERIFY: True,
        A.ENCRYPT: False,
        A.WRAP: False,
    }


def _private_template(key_id: bytes) -> dict[Attribute, Any]:
    return {
        A.LABEL: AUDIT_KEY_LABEL,
        A.ID: key_id,
        A.TOKEN: True,
        A.PRIVATE: True,
        A.SENSITIVE: True,
        A.EXTRACTABLE: False,
        A.SIGN: True,
        A.DECRYPT: False,
        A.UNWRAP: False,
        A.DERIVE: False,
    }


def _generate(session: HsmSession, algorithm: str) -> None:
    key_id = secrets.token_bytes(16)
    public = _public_templates(key_id)
    try:
        if algorithm == ECDSA_P256:
            session.session.generate_keypair(
                KeyType.EC,
                public_template={**public, A.EC_PARAMS: P256_PARAMS},
                private_template=_private_template(key_id),
                mechanism=Mechanism.EC_KEY_PAIR_GEN,
            )
        else:
            session.session.generate_keypair(
                KeyType.RSA,
                RSA_BITS,
                public_template={
                    **public,
                    A.MODULUS_BITS: RSA_BITS,
                    A.PUBLIC_EXPONENT: b"\x01\x00\x01",
                },
                private_template=_private_template(key_id),
                mechanism=Mechanism.RSA_PKCS_KEY_PAIR_GEN,
            )
    except PKCS11Error as exc:
        raise AuditKeyError(
            f"{session.where} refused to make the audit signing key: {exc!r}"
        ) from None


def _public_pem(public: Any, algorithm: str) -> str:
    if algorithm == ECDSA_P256:
        point = bytes(public[A.EC_POINT])
        # CKA_EC_POINT is a DER OCTET STRING around the point; some tokens give it bare.
        if len(point) == 67 and point[:2] == b"\x04\x41":
            point = point[2:]
        key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey = (
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        )
    else:
        modulus = int.from_bytes(bytes(public[A.MODULUS]), "big")
        exponent = int.from_bytes(bytes(public[A.PUBLIC_EXPONENT]), "big")
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class SlotSigner:
    """The audit key pair of one slot, found or made: signs heads inside the token."""

    session: HsmSession
    algorithm: str
    public_pem: str
    _private: Any

    @classmethod
    def find_or_make(cls, session: HsmSession, prefer: str | None = None) -> SlotSigner:
        """The slot's audit key (made when absent). ``prefer`` picks the algorithm of a key
        still to be made, if the token has its mechanisms; else the token decides."""
        private = _find(session, ObjectClass.PRIVATE_KEY)
        public = _find(session, ObjectClass.PUBLIC_KEY)
        if not private and not public:
            offered = _offered(session)
            algorithm = choose_algorithm(offered)
            if prefer == RSA_PKCS1_2048 and all(int(m) in offered for m in _RSA_NEEDS):
                algorithm = prefer
            _generate(session, algorithm)
            private = _find(session, ObjectClass.PRIVATE_KEY)
            public = _find(session, ObjectClass.PUBLIC_KEY)
        if len(private) != 1 or len(public) != 1:
            raise AuditKeyError(
                f"{session.where} holds {len(private)} private and {len(public)} public "
                f"key(s) labelled {AUDIT_KEY_LABEL!r}, not one pair: remove the extra ones "
                "so the audit log is signed by one key"
            )
        key_type = private[0][A.KEY_TYPE]
        if key_type == KeyType.EC:
            algorithm = ECDSA_P256
        elif key_type == KeyType.RSA:
            algorithm = RSA_PKCS1_2048
        else:
            raise AuditKeyError(
                f"the key labelled {AUDIT_KEY_LABEL!r} in {session.where} is neither EC nor RSA"
            )
        _require_protected(session, private[0])
        return cls(session, algorithm, _public_pem(public[0], algorithm), private[0])

    def sign(self, message: bytes) -> bytes:
        """The signature of ``message``: raw r‖s for ECDSA, PKCS #1 v1.5 for RSA."""
        digest = hashlib.sha256(message).digest()
        try:
            if self.algorithm == ECDSA_P256:
                return bytes(self._private.sign(digest, mechanism=Mechanism.ECDSA))
            return bytes(
                self._private.sign(SHA256_DIGEST_INFO + digest, mechanism=Mechanism.RSA_PKCS)
            )
        except PKCS11Error as exc:
            raise AuditKeyError(
                f"{self.session.where} refused to sign the audit head: {exc!r}"
            ) from None


def _require_protected(session: HsmSession, private: Any) -> None:
    """A key under the audit label that could ever leave the token is refused, not used."""
    wanted = {A.SENSITIVE: True, A.EXTRACTABLE: False, A.SIGN: True}
    wrong = []
    for attribute, value in wanted.items():
        try:
            if bool(private[attribute]) != value:
                wrong.append(f"{attribute.name} {not value}")
        except PKCS11Error:
            wrong.append(f"{attribute.name} unreadable")
    for attribute in (A.ALWAYS_SENSITIVE, A.NEVER_EXTRACTABLE):
        try:
            if not private[attribute]:
                wrong.append(f"{attribute.name} false")
        except PKCS11Error:
            pass  # tokens without these attributes still enforce the two above
    if wrong:
        raise AuditKeyError(
            f"the key labelled {AUDIT_KEY_LABEL!r} in {session.where} could leave the token "
            f"({', '.join(wrong)}): it is not used; remove it and a proper one is made"
        )


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise AuditKeyError("a stored audit public key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise AuditKeyError("a stored audit public key is neither EC nor RSA")
    return key


def verify_signature(algorithm: str, public_pem: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` by the slot key ``public_pem`` covers ``message``."""
    try:
        key = load_public_key(public_pem)
    except AuditKeyError:
        return False
    try:
        if algorithm == ECDSA_P256 and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
            return True
        if algorithm == RSA_PKCS1_2048 and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return True
    except InvalidSignature:
        return False
    return False
