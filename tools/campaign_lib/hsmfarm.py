"""SoftHSM2 tokens of the campaign's own (a token folder in its working folder), sample keys
and their fingerprints (to tell a restored key from an altered one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import OctetString, encode_named_curve_parameters
from sealkeep.hsm import Hsm, HsmSession, reload_module, resolve_module

from .common import Ctx

PIN = "campaign-pin-1234"
SO_PIN = "campaign-so-5678"
LABELS = ("camp-crash", "camp-drive", "camp-other", "camp-q3", "camp-q5", "camp-q7")
SAMPLE = ("aes-data", "ec-sign")
PROBE = bytes(range(16))


@dataclass
class Farm:
    root: Path
    conf: Path
    module: str
    hsm: Hsm
    slots: dict[str, int]
    saved_conf: str | None

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf), "SEALKEEP_PKCS11_MODULE": self.module}

    def open(self, label: str) -> HsmSession:
        return self.hsm.open(self.slots[label], PIN)

    def pin_file(self) -> Path:
        path = self.root / "pin"
        if not path.exists():
            path.write_text(PIN + "\n")
            path.chmod(0o600)
        return path


def farm(ctx: Ctx) -> Farm:
    """The campaign's tokens, created on first use."""
    if ctx.hsm_farm is not None:
        existing: Farm = ctx.hsm_farm
        return existing
    root = ctx.folder("softhsm")
    tokens = root / "tokens"
    tokens.mkdir(exist_ok=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    util = shutil.which("softhsm2-util")
    if util is None:
        raise RuntimeError("softhsm2-util is missing: install the softhsm2 package")
    for label in LABELS:
        subprocess.run(
            [util, "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", PIN],
            env={**os.environ, "SOFTHSM2_CONF": str(conf)},
            check=True,
            capture_output=True,
            timeout=30,
        )
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    module = resolve_module(None)
    lib = reload_module(module)
    slots: dict[str, int] = {}
    for slot in lib.get_slots(token_present=True):
        label = slot.get_token().label
        if label in LABELS:
            slots[label] = slot.slot_id
    made = Farm(root, conf, module, Hsm(module), slots, saved)
    ctx.hsm_farm = made
    return made


def close_farm(ctx: Ctx) -> None:
    made: Farm | None = ctx.hsm_farm
    if made is None:
        return
    ctx.hsm_farm = None
    if made.saved_conf is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = made.saved_conf


def make_sample_keys(session: HsmSession) -> None:
    raw = session.session
    raw.generate_key(
        KeyType.AES,
        256,
        label="aes-data",
        id=b"\x01",
        store=True,
        template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
    )
    params = raw.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
    )
    params.generate_keypair(
        label="ec-sign",
        id=b"\x04",
        store=True,
        private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
    )


def delete_sample_keys(session: HsmSession) -> None:
    for obj in session.objects():
        if obj.label in SAMPLE:
            obj.handle.destroy()


def _one(session: HsmSession, cls: ObjectClass, label: str) -> Any:
    found = list(session.session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label}))
    if len(found) != 1:
        return None
    return found[0]


def fingerprints(session: HsmSession, reference: dict[str, str] | None = None) -> dict[str, str]:
    """What the sample keys do: the AES key's encryption of a fixed block, the EC public
    point, and whether the EC private key signs for that point of ``reference`` (when
    given). A missing key is absent from the result."""
    out: dict[str, str] = {}
    aes = _one(session, ObjectClass.SECRET_KEY, "aes-data")
    if aes is not None:
        out["aes-data"] = bytes(aes.encrypt(PROBE, mechanism=Mechanism.AES_ECB)).hex()
    pub = _one(session, ObjectClass.PUBLIC_KEY, "ec-sign")
    if pub is not None:
        out["ec-sign.pub"] = bytes(pub[Attribute.EC_POINT]).hex()
    priv = _one(session, ObjectClass.PRIVATE_KEY, "ec-sign")
    point_hex = (reference or out).get("ec-sign.pub")
    if priv is not None and point_hex:
        digest = hashes.Hash(hashes.SHA256())
        digest.update(b"campaign")
        value = digest.finalize()
        sig = bytes(priv.sign(value, mechanism=Mechanism.ECDSA))
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        point = bytes(OctetString.load(bytes.fromhex(point_hex)).native)
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        try:
            key.verify(
                utils.encode_dss_signature(r, s), value, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
            )
            out["ec-sign.priv"] = "signs"
        except InvalidSignature:
            out["ec-sign.priv"] = "wrong key"
    return out
