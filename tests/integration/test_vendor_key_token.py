"""The vendor's firmware signing key held in a PKCS#11 token (SoftHSM2): made there, never
extractable, never replaced, and signing images that verify exactly as a key file's do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pkcs11 import Attribute, ObjectClass
from sealkeep import firmware as fw
from sealkeep.hsm import Hsm

if TYPE_CHECKING:
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]


def sealkeep(
    farm: SoftHsmFarm,
    tmp: Path,
    *args: str,
    code: int = 0,
    pin_file: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    pin = tmp / "pin"
    pin.write_text("user-pin-1234\n")
    pin.chmod(0o600)
    env = {**farm.env}
    for name in ("SEALKEEP_PIN", "SEALKEEP_CONFIG"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", *args, *(["--pin-file", str(pin)] if pin_file else [])],
        cwd=cwd or tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def test_a_vendor_key_made_in_a_token_signs_images_the_drives_accept(
    softhsm: SoftHsmFarm, hsm: Hsm, tokens: dict[str, SoftHsmToken], tmp_path: Path
) -> None:
    token = tokens["source"]
    keygen = ["firmware", "keygen", "--pkcs11", "--slot", "source", "--label", "vendor-2026"]
    made = json.loads(sealkeep(softhsm, tmp_path, *keygen, "--json").stdout)
    public = bytes.fromhex(made["public_key"])
    assert len(public) == 32 and made["label"] == "vendor-2026"

    with hsm.open(token.slot_id, token.pin) as session:
        (private,) = session.session.get_objects(
            {Attribute.LABEL: "vendor-2026", Attribute.CLASS: ObjectClass.PRIVATE_KEY}
        )
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.SIGN] is True and private[Attribute.DECRYPT] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            private[Attribute.VALUE]

    # Never replaced: a second keygen under the label is refused and the key stays.
    again = sealkeep(softhsm, tmp_path, *keygen, code=1)
    assert "already holds a key labelled 'vendor-2026'" in again.stderr
    with hsm.open(token.slot_id, token.pin) as session:
        assert len(list(session.session.get_objects({Attribute.LABEL: "vendor-2026"}))) == 2

    image_path = tmp_path / "fw-1.0.0.img"
    build = ["firmware", "build", "--version", "1.0.0", "--counter", "1", "--out", str(image_path)]
    sealkeep(softhsm, tmp_path, *build, "--pkcs11", "--slot", "source", "--label", "vendor-2026")
    image = fw.load_image(image_path)
    assert image.vendor_key == public
    # Pure Ed25519 over the very message a key file signs: what a drive checks.
    Ed25519PublicKey.from_public_bytes(public).verify(
        image.signature, fw.signed_message(image.manifest)
    )
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
