"""The vendor's firmware signing key held in a PKCS#11 token (SoftHSM2): made there, never
extractable, never replaced, and signing images that verify exactly as a key file's do."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pkcs11
import pytest
from cli_runner import SealkeepCli
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pkcs11 import Attribute, ObjectClass
from sealkeep import firmware as fw
from sealkeep.errors import EXIT_AUTH, EXIT_USAGE
from sealkeep.hsm import Hsm, HsmSession

if TYPE_CHECKING:
    from hsm_fixtures import OpenCryptokiToken, SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]
A = Attribute

DRIVE_ED25519 = Path(__file__).resolve().parents[2] / "device" / "fw" / "ed25519.py"


def drive_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    """The drive's own strict Ed25519 check (device/fw/ed25519.py, run here under CPython)."""
    spec = importlib.util.spec_from_file_location("drive_ed25519", DRIVE_ED25519)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    accepted: bool = module.verify(public, message, signature)
    return accepted


def key_pair(session: HsmSession, label: str) -> tuple[Any, Any]:
    """The private and public key objects labelled ``label`` (exactly one of each)."""
    (private,) = session.session.get_objects(
        {Attribute.LABEL: label, Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    )
    (public,) = session.session.get_objects(
        {Attribute.LABEL: label, Attribute.CLASS: ObjectClass.PUBLIC_KEY}
    )
    return private, public


def sealkeep(
    farm: SoftHsmFarm,
    tmp: Path,
    *args: str,
    code: int = 0,
    pin_file: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return SealkeepCli(farm, tmp, cwd=cwd or tmp)(*args, code=code, pin=pin_file)


def test_a_vendor_key_made_in_a_token_signs_images_the_drives_accept(
    softhsm: SoftHsmFarm, hsm: Hsm, tokens: dict[str, SoftHsmToken], tmp_path: Path
) -> None:
    token = tokens["source"]
    keygen = ["firmware", "keygen", "--pkcs11", "--slot", "source", "--label", "vendor-2026"]
    made = json.loads(sealkeep(softhsm, tmp_path, *keygen, "--json").stdout)
    public = bytes.fromhex(made["public_key"])
    assert len(public) == 32 and made["label"] == "vendor-2026"

    with hsm.open(token.slot_id, token.pin) as session:
        private, public_object = key_pair(session, "vendor-2026")
        # Made in the token and never out of it: sensitive, never extractable, since birth.
        for attribute in (A.TOKEN, A.PRIVATE, A.SENSITIVE, A.ALWAYS_SENSITIVE,
                          A.NEVER_EXTRACTABLE, A.SIGN):  # fmt: skip
            assert private[attribute] is True, attribute
        for attribute in (A.EXTRACTABLE, A.DECRYPT, A.UNWRAP, A.DERIVE):
            assert private[attribute] is False, attribute
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            private[A.VALUE]
        assert public_object[A.VERIFY] is True
        assert public_object[A.ENCRYPT] is False and public_object[A.WRAP] is False
        # One pair under one fresh id; CKA_EC_POINT is the DER OCTET STRING of the point.
        key_id = bytes(private[A.ID])
        assert len(key_id) >= 8 and bytes(public_object[A.ID]) == key_id
        assert bytes(public_object[A.EC_POINT]) == b"\x04\x20" + public

    # Never replaced: a second keygen under the label is refused and the pair stays as it was.
    again = sealkeep(softhsm, tmp_path, *keygen, code=1)
    assert "already holds a key labelled 'vendor-2026'" in again.stderr
    assert "public key" not in again.stdout
    with hsm.open(token.slot_id, token.pin) as session:
        assert len(list(session.session.get_objects({A.LABEL: "vendor-2026"}))) == 2
        private, public_object = key_pair(session, "vendor-2026")
        assert bytes(private[A.ID]) == key_id and bytes(public_object[A.ID]) == key_id
        assert bytes(public_object[A.EC_POINT]) == b"\x04\x20" + public

    # Another label gets a key of its own, under an id of its own.
    other = sealkeep(softhsm, tmp_path, *keygen[:-1], "vendor-2027")
    assert f"public key: {public.hex()}" not in other.stdout
    with hsm.open(token.slot_id, token.pin) as session:
        assert bytes(key_pair(session, "vendor-2027")[0][A.ID]) != key_id

    image_path = tmp_path / "fw-1.0.0.img"
    build = ["firmware", "build", "--version", "1.0.0", "--counter", "1", "--out", str(image_path)]
    sealkeep(softhsm, tmp_path, *build, "--pkcs11", "--slot", "source", "--label", "vendor-2026")
    image = fw.load_image(image_path)
    assert image.vendor_key == public
    # Pure Ed25519 over the very message a key file signs: what a drive checks.
    Ed25519PublicKey.from_public_bytes(public).verify(
        image.signature, fw.signed_message(image.manifest)
    )
    assert drive_accepts(public, fw.signed_message(image.manifest), image.signature)
    checked = json.loads(
        sealkeep(
            softhsm,
            tmp_path,
            "firmware",
            "inspect",
            str(image_path),
            "--key",
            public.hex(),
            "--json",
            pin_file=False,
        ).stdout
    )
    assert checked["signature_valid"] is True


def test_token_options_are_checked(
    softhsm: SoftHsmFarm, tokens: dict[str, SoftHsmToken], tmp_path: Path
) -> None:
    both = sealkeep(softhsm, tmp_path, "firmware", "build", "--version", "1.0.0",
                    "--counter", "1", "--out", str(tmp_path / "x.img"), "--pkcs11",
                    "--key", str(tmp_path / "k"), code=2)  # fmt: skip
    assert "not allowed with argument" in both.stderr
    no_label = sealkeep(softhsm, tmp_path, "firmware", "keygen", "--pkcs11", "--slot",
                        "source", code=2)  # fmt: skip
    assert "--pkcs11 needs --label" in no_label.stderr
    stray = sealkeep(softhsm, tmp_path, "firmware", "keygen", "--out", str(tmp_path / "v.key"),
                     "--no-passphrase", "--label", "x", code=2)  # fmt: skip
    assert "--label go with --pkcs11" in stray.stderr
    assert not (tmp_path / "v.key").exists()
    keygen_both = sealkeep(softhsm, tmp_path, "firmware", "keygen", "--pkcs11", "--out",
                           str(tmp_path / "v.key"), "--slot", "source", "--label", "x",
                           code=2)  # fmt: skip
    assert "not allowed with argument" in keygen_both.stderr
    no_slot = sealkeep(softhsm, tmp_path, "firmware", "keygen", "--pkcs11", "--label", "x",
                       code=EXIT_USAGE)  # fmt: skip
    assert "--pkcs11 needs --slot" in no_slot.stderr
    stray_slot = sealkeep(softhsm, tmp_path, "firmware", "build", "--version", "1.0.0",
                          "--counter", "1", "--out", str(tmp_path / "x.img"), "--key",
                          str(tmp_path / "k"), "--slot", "source", code=2)  # fmt: skip
    assert "--slot go with --pkcs11, not with --key" in stray_slot.stderr
    assert not (tmp_path / "v.key").exists() and not (tmp_path / "x.img").exists()


def test_a_wrong_pin_makes_no_key(
    softhsm: SoftHsmFarm, hsm: Hsm, tokens: dict[str, SoftHsmToken], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("not-the-pin\n")
    refused = sealkeep(softhsm, tmp_path, "firmware", "keygen", "--pkcs11", "--slot", "source",
                       "--label", "v", "--pin-file", str(wrong), code=EXIT_AUTH,
                       pin_file=False)  # fmt: skip
    assert "not-the-pin" not in refused.stderr + refused.stdout
    token = tokens["source"]
    with hsm.open(token.slot_id, token.pin) as session:
        assert not list(session.session.get_objects({A.LABEL: "v"}))


@pytest.mark.opencryptoki
def test_a_token_without_ed25519_is_named(
    opencryptoki: OpenCryptokiToken, softhsm: SoftHsmFarm, tmp_path: Path
) -> None:
    """openCryptoki's soft token (3.8) has no Ed25519: keygen and build name what it lacks."""
    pin = tmp_path / "ock-pin"
    pin.write_text(opencryptoki.pin + "\n")
    pin.chmod(0o600)
    token = ["--pkcs11", "--module", opencryptoki.module, "--slot", str(opencryptoki.slot_id),
             "--label", "vendor", "--pin-file", str(pin)]  # fmt: skip
    refused = sealkeep(softhsm, tmp_path, "firmware", "keygen", *token, code=1, pin_file=False)
    assert "CKM_EC_EDWARDS_KEY_PAIR_GEN" in refused.stderr
    assert "CKM_EDDSA" in refused.stderr
    assert "firmware keygen --out FILE" in refused.stderr
    build = sealkeep(softhsm, tmp_path, "firmware", "build", "--version", "1.0.0", "--counter",
                     "1", "--out", str(tmp_path / "x.img"), *token, code=1,
                     pin_file=False)  # fmt: skip
    assert "CKM_EDDSA" in build.stderr
    assert not (tmp_path / "x.img").exists()


def test_a_configured_slot_does_not_stop_a_key_file(
    softhsm: SoftHsmFarm, tokens: dict[str, SoftHsmToken], tmp_path: Path
) -> None:
    """sealkeep.toml names the slot every HSM command uses; a vendor key file is still made
    and used as before, and --pkcs11 takes that slot when --slot is not given."""
    (tmp_path / "sealkeep.toml").write_text('slot = "source"\n')
    key = tmp_path / "vendor.key"
    made = sealkeep(softhsm, tmp_path, "firmware", "keygen", "--out", str(key),
                    "--no-passphrase", pin_file=False)  # fmt: skip
    assert key.is_file() and "public key: " in made.stdout
    image_path = tmp_path / "fw.img"
    sealkeep(softhsm, tmp_path, "firmware", "build", "--version", "1.0.0", "--counter", "1",
             "--key", str(key), "--out", str(image_path), pin_file=False)  # fmt: skip
    assert fw.load_image(image_path).signature_ok(fw.public_key_of(fw.load_signing_key(key)))

    in_token = sealkeep(softhsm, tmp_path, "firmware", "keygen", "--pkcs11",
                        "--label", "vendor-configured")  # fmt: skip
    assert "made in slot " in in_token.stdout and "(token 'source')" in in_token.stdout
