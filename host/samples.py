"""Sample keys for demonstrations and tests: what an HSM slot typically holds.

:func:`sample_keys` puts into a slot an AES-256 data key, an AES-256 key that may never
leave the HSM (not extractable, so it cannot be backed up), an RSA-2048 and an EC P-256
signing key pair, and a self-signed certificate for the EC key.
"""

from __future__ import annotations

import datetime
from typing import Any

from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from .hsm import HsmSession

__all__ = ["SAMPLE_LABELS", "sample_keys", "self_signed_certificate"]

SAMPLE_LABELS = {
    "aes": "aes-data",
    "aes_local": "aes-local",
    "rsa": "rsa-sign",
    "ec": "ec-sign",
}
"""The label of each sample key (the EC key's certificate shares the EC key's label)."""


def self_signed_certificate(common_name: str) -> tuple[bytes, bytes, bytes]:
    """(DER certificate, DER subject, DER serial) of a throwaway self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(4242)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    serial_der = bytes([0x02, 0x02]) + (4242).to_bytes(2, "big")
    return cert.public_bytes(serialization.Encoding.DER), name.public_bytes(), serial_der


def sample_keys(
    session: HsmSession, with_ec: bool = True, cert_label: str | None = None
) -> dict[str, Any]:
    """Create the sample keys in ``session``'s slot; returns the python-pkcs11 objects by name
    (``aes``, ``aes_local``, ``rsa``, ``rsa_pub``, ``ec``, ``ec_pub``, ``cert``). Without EC
    (a token with no EC mechanism) the EC pair is left out, and the certificate (id 04)
    takes ``cert_label`` in place of the EC pair's label."""
    raw = session.session
    made: dict[str, Any] = {}
    made["aes"] = raw.generate_key(
        KeyType.AES,
        256,
        label=SAMPLE_LABELS["aes"],
        id=b"\x01",
        store=True,
        template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
    )
    made["aes_local"] = raw.generate_key(
        KeyType.AES,
        256,
        label=SAMPLE_LABELS["aes_local"],
        id=b"\x02",
        store=True,
        template={Attribute.EXTRACTABLE: False},
    )
    made["rsa_pub"], made["rsa"] = raw.generate_keypair(
        KeyType.RSA,
        2048,
        label=SAMPLE_LABELS["rsa"],
        id=b"\x03",
        store=True,
        private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
    )
    if with_ec:
        params = raw.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        made["ec_pub"], made["ec"] = params.generate_keypair(
            label=SAMPLE_LABELS["ec"],
            id=b"\x04",
            store=True,
            private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
        )
    der, subject, serial = self_signed_certificate("sealkeep sample")
    made["cert"] = raw.create_object(
        {
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
            Attribute.TOKEN: True,
            Attribute.LABEL: cert_label or SAMPLE_LABELS["ec"],
            Attribute.ID: b"\x04",
            Attribute.VALUE: der,
            Attribute.SUBJECT: subject,
            Attribute.ISSUER: subject,
            Attribute.SERIAL_NUMBER: serial,
        }
    )
    return made
