"""SoftHSM2 tokens for tests: a private token directory per test session.

SoftHSM2 reads its token list when the module is initialised, so every token is created
with ``softhsm2-util`` before sealkeep loads the module in this process; if python-pkcs11
had loaded it already (it keeps one library object per path), the module is re-initialised
(C_Finalize + C_Initialize), which re-reads ``SOFTHSM2_CONF``. Subprocesses get the same
configuration through :attr:`SoftHsmFarm.env`.

Use from a test module with ``pytest_plugins = ["hsm_fixtures"]``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters
from sealkeep.hsm import Hsm, HsmSession, resolve_module

SO_PIN = "so-pin-5678"
USER_PIN = "user-pin-1234"
TOKEN_LABELS = ("source", "target", "spare")


@dataclass
class SoftHsmToken:
    label: str
    serial: str
    pin: str = USER_PIN
    so_pin: str = SO_PIN
    slot_id: int = -1


class SoftHsmFarm:
    """A SoftHSM2 configuration with its own token directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tokendir = root / "tokens"
        self.tokendir.mkdir(parents=True, exist_ok=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.tokendir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
        )
        self.module = resolve_module(None)
        self.tokens: dict[str, SoftHsmToken] = {}
        self._saved_conf: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment for a subprocess that should see these tokens."""
        return {
            **os.environ,
            "SOFTHSM2_CONF": str(self.conf),
            "SEALKEEP_PKCS11_MODULE": self.module,
        }

    def init_token(self, label: str, pin: str = USER_PIN, so_pin: str = SO_PIN) -> SoftHsmToken:
        """Create a token; call :meth:`activate` afterwards so this process sees it."""
        util = shutil.which("softhsm2-util")
        if util is None:
            pytest.fail("softhsm2-util is missing: install the softhsm2 package")
        subprocess.run(
            [util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
            check=True,
            capture_output=True,
            timeout=30,
        )
        token = SoftHsmToken(label, "", pin, so_pin)
        self.tokens[label] = token
        return token

    def activate(self) -> None:
        """Point this process at the farm and (re)load the module so it sees every token."""
        if self._saved_conf is None:
            self._saved_conf = os.environ.get("SOFTHSM2_CONF", "")
        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        lib = pkcs11.lib(self.module)  # cached per path by python-pkcs11
        lib.reinitialize()
        for slot in lib.get_slots(token_present=True):
            token = slot.get_token()
            if token.label in self.tokens:
                entry = self.tokens[token.label]
                entry.slot_id = slot.slot_id
                entry.serial = token.serial.decode("ascii").strip()

    def restore_environment(self) -> None:
        if self._saved_conf is not None:
            if self._saved_conf:
                os.environ["SOFTHSM2_CONF"] = self._saved_conf
            else:
                os.environ.pop("SOFTHSM2_CONF", None)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmFarm]:
    """A SoftHSM2 farm with the tokens of :data:`TOKEN_LABELS`, all created up front."""
    farm = SoftHsmFarm(tmp_path_factory.mktemp("softhsm"))
    for label in TOKEN_LABELS:
        farm.init_token(label)
    farm.activate()
    yield farm
    farm.restore_environment()


@pytest.fixture(scope="session")
def hsm(softhsm: SoftHsmFarm) -> Hsm:
    return Hsm(softhsm.module)


def wipe_token(hsm: Hsm, token: SoftHsmToken) -> None:
    """Destroy every object of a token."""
    with hsm.open(token.slot_id, token.pin) as session:
        for obj in list(session.session.get_objects()):
            obj.destroy()


@pytest.fixture
def tokens(hsm: Hsm, softhsm: SoftHsmFarm) -> dict[str, SoftHsmToken]:
    """The farm's tokens, emptied before the test."""
    for token in softhsm.tokens.values():
        wipe_token(hsm, token)
    return softhsm.tokens


# --- sample keys ----------------------------------------------------------------------------


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


def sample_keys(session: HsmSession) -> dict[str, Any]:
    """AES-256, RSA-2048 and EC P-256 keys (one AES key not extractable) and a certificate.

    Returns the python-pkcs11 objects by name.
    """
    raw = session.session
    made: dict[str, Any] = {}
    made["aes"] = raw.generate_key(
        KeyType.AES,
        256,
        label="aes-data",
        id=b"\x01",
        store=True,
        template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
    )
    made["aes_local"] = raw.generate_key(
        KeyType.AES,
        256,
        label="aes-local",
        id=b"\x02",
        store=True,
        template={Attribute.EXTRACTABLE: False},
    )
    made["rsa_pub"], made["rsa"] = raw.generate_keypair(
        KeyType.RSA,
        2048,
        label="rsa-sign",
        id=b"\x03",
        store=True,
        private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
    )
    params = session.session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
    )
    made["ec_pub"], made["ec"] = params.generate_keypair(
        label="ec-sign",
        id=b"\x04",
        store=True,
        private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
    )
    der, subject, serial = self_signed_certificate("sealkeep test")
    made["cert"] = raw.create_object(
        {
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
            Attribute.TOKEN: True,
            Attribute.LABEL: "ec-sign",
            Attribute.ID: b"\x04",
            Attribute.VALUE: der,
            Attribute.SUBJECT: subject,
            Attribute.ISSUER: subject,
            Attribute.SERIAL_NUMBER: serial,
        }
    )
    return made


@pytest.fixture
def make_sample_keys() -> Callable[[HsmSession], dict[str, Any]]:
    """:func:`sample_keys`, as a fixture."""
    return sample_keys
