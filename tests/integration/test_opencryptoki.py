"""A token without the standard profile's mechanisms: openCryptoki's soft token, which offers
no CKM_AES_KEY_WRAP_PAD and no CKM_AES_GCM. sealkeep lists its slot and keys, makes domains
of the portable profile there (``test_every_token`` backs up and restores on it), refuses a
standard one before touching a drive, refuses to rebuild a standard domain there saying why
and how to avoid it, and a restore of a standard set into it names the missing mechanism
instead of calling every drive's copy corrupt. The other way, a portable domain cannot be
rebuilt in SoftHSM2 2.6.1, which refuses CKM_AES_CBC_PAD for wrapping: that is named too.

The soft token is one per machine: these tests take it under a file lock (see
``hsm_fixtures.opencryptoki``), one test process at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from sealkeep import domain as ceremonies
from sealkeep.backupset import backup, verify_set
from sealkeep.client import DriveClient
from sealkeep.domain import ENV_KDF_FLOOR, ENV_KDF_MEMORY, ENV_KDF_TIME, DriveGroup, create_domain
from sealkeep.emulator import Emulator
from sealkeep.errors import EXIT_INTEGRITY
from sealkeep.hsm import Hsm, HsmSession, domain_id_from_secret
from sealkeep.hsm_base import (
    DOMAIN_MARKER_LABEL,
    DOMAIN_OWNER_LABEL,
    DOMAIN_SEAL_LABEL,
    DOMAIN_WRAP_LABEL,
    HIERARCHY_PER_PURPOSE,
)
from sealkeep.hsm_caps import PORTABLE, MechanismMissing
from sealkeep.hsm_keys import DomainKeyValues
from sealkeep.pins import Passphrases
from sealkeep.recovery import recover_domain
from sealkeep.restore import restore_set
from sealkeep.transport import open_transport

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import OpenCryptokiToken, SoftHsmFarm, SoftHsmToken

pytestmark = [
    pytest.mark.integration,
    pytest.mark.opencryptoki,
    pytest.mark.usefixtures("cheap_kdf"),
]
pytest_plugins = ["hsm_fixtures"]

A = Attribute
MISSING_WRAP = "CKM_AES_KEY_WRAP_PAD"
MISSING_GCM = "AES-GCM"


class Cli:
    """``python -m sealkeep`` with cheap Argon2id and a file for the openCryptoki PIN."""

    def __init__(self, token: OpenCryptokiToken, farm: SoftHsmFarm, tmp: Path) -> None:
        self.env = {**farm.env, ENV_KDF_MEMORY: "8", ENV_KDF_TIME: "1", ENV_KDF_FLOOR: "m=8,t=1"}
        self.env.pop("SEALKEEP_PIN", None)
        self.env.pop("SEALKEEP_DRIVES", None)
        self.module = token.module
        self.pin_file = tmp / "pin"
        self.pin_file.write_text(token.pin + "\n")
        self.pin_file.chmod(0o600)

    def __call__(
        self, *args: str, code: int = 0, pin: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [*args, "--module", self.module]
        if pin:
            argv += ["--pin-file", str(self.pin_file)]
        done = subprocess.run(
            [sys.executable, "-m", "sealkeep", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        return done


@pytest.fixture
def domain_secrets(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every domain secret a ceremony makes during the test, kept so that the test can put a
    domain into a token by hand."""
    made: list[bytes] = []
    new_secret = ceremonies.new_domain_secret

    def recorded() -> bytearray:
        secret = new_secret()
        made.append(bytes(secret))
        return secret

    monkeypatch.setattr(ceremonies, "new_domain_secret", recorded)
    return made


@pytest.fixture
def cli(opencryptoki: OpenCryptokiToken, softhsm: SoftHsmFarm, tmp_path: Path) -> Cli:
    return Cli(opencryptoki, softhsm, tmp_path)


def passphrase(serial: str) -> str:
    return f"custodian of {serial}: orbit lantern 7"


def passphrase_file(tmp: Path, emulator: Emulator) -> str:
    path = tmp / "custodians"
    path.write_text("".join(f"{d.serial} {passphrase(d.serial)}\n" for d in emulator.drives))
    path.chmod(0o600)
    return str(path)


def spec(emulator: Emulator) -> str:
    return ",".join(d.port for d in emulator.drives)


def open_token(token: OpenCryptokiToken) -> HsmSession:
    return Hsm(token.module).open(token.slot_id, token.pin)


def every_object(session: HsmSession) -> list[tuple[int, str]]:
    """(class, label) of every object the token holds, token and session objects alike."""
    return sorted((int(o[A.CLASS]), str(o[A.LABEL])) for o in session.session.get_objects())


def hello_states(emulator: Emulator) -> list[str]:
    states = []
    for drive in emulator.drives:
        client = DriveClient(open_transport(drive.port), timeout=2.0)
        try:
            states.append(client.hello().state)
        finally:
            client.close()
    return states


def assert_token_at_fault(stderr: str) -> None:
    assert MISSING_WRAP in stderr
    assert "limit of the token" in stderr and "nothing on the drives is corrupt" in stderr
    assert "does not authenticate" not in stderr and "not authentic" not in stderr


# --- tests ------------------------------------------------------------------------------------


def test_slots_lists_the_opencryptoki_token(cli: Cli, opencryptoki: OpenCryptokiToken) -> None:
    listed = cli("slots", pin=False).stdout
    row = next(line for line in listed.splitlines() if opencryptoki.label in line)
    assert row.split()[0] == str(opencryptoki.slot_id) and "IBM SoftTok" in row
    assert row.split()[-1] == "-"  # no backup domain


def test_keys_lists_what_the_token_holds(cli: Cli, opencryptoki: OpenCryptokiToken) -> None:
    with open_token(opencryptoki) as session:
        made = session.session.generate_key(
            KeyType.AES,
            256,
            label="ock-aes",
            id=b"\x01",
            store=True,
            template={A.EXTRACTABLE: True, A.SENSITIVE: True},
        )
        session.session.generate_keypair(KeyType.RSA, 2048, label="ock-rsa", id=b"\x02", store=True)
    try:
        shown = cli("keys", "--slot", str(opencryptoki.slot_id)).stdout
        assert "ock-aes" in shown and "ock-rsa" in shown
        assert f"token '{opencryptoki.label}'): 3 object(s)" in shown
        by_label = cli("keys", "--slot", opencryptoki.label).stdout
        assert by_label == shown
        listed = json.loads(cli("keys", "--slot", opencryptoki.label, "--json").stdout)
        aes = next(o for o in listed["objects"] if o["label"] == "ock-aes")
        # Wrapped with the portable profile's mechanism, which the token has.
        assert aes["backup"] is True
    finally:
        with open_token(opencryptoki) as session:
            for obj in list(session.session.get_objects({A.TOKEN: True})):
                obj.destroy()
        assert made is not None


def test_domain_create_refuses_before_claiming_a_drive(
    cli: Cli, opencryptoki: OpenCryptokiToken, emulated_drives: StartDrives, tmp_path: Path
) -> None:
    emulator = emulated_drives(3)
    refused = cli(
        "domain",
        "create",
        "--slot",
        str(opencryptoki.slot_id),
        "--profile",
        "standard",
        "--drives",
        spec(emulator),
        "--passphrases",
        passphrase_file(tmp_path, emulator),
        code=1,
    )
    error = refused.stderr
    assert "cannot hold a backup domain of the standard profile" in error
    assert MISSING_WRAP in error and MISSING_GCM in error and "CKM_AES_GCM" in error
    assert "CKM_SHA256_HMAC" not in error  # offered: only what is missing is named
    assert "--profile portable" in error
    assert hello_states(emulator) == ["blank"] * 3
    with open_token(opencryptoki) as session:
        assert every_object(session) == []
    slots = cli("slots", pin=False).stdout
    assert next(line for line in slots.splitlines() if opencryptoki.label in line).endswith("-")


# --- a set made on SoftHSM2, restored into openCryptoki --------------------------------------


def plant_domain(session: HsmSession, secret: bytes) -> None:
    """The domain's keys and marker, put into the token the way it accepts them (no
    CKA_UNWRAP_TEMPLATE, no CKA_COPYABLE, which openCryptoki 3.8.1 refuses): a token that
    held a domain and lost a mechanism, or any domain not checked on the way in."""
    domain_id = domain_id_from_secret(secret)
    locked = {
        A.TOKEN: True,
        A.PRIVATE: True,
        A.ID: domain_id,
        A.SENSITIVE: True,
        A.EXTRACTABLE: False,
        A.ENCRYPT: False,
        A.DECRYPT: False,
        A.VERIFY: False,
        A.DERIVE: False,
    }
    with DomainKeyValues(secret, HIERARCHY_PER_PURPOSE) as values:
        assert values.seal is not None
        for label, key_type, value, uses in (
            (DOMAIN_WRAP_LABEL, KeyType.AES, bytes(values.wrap), {A.WRAP: True, A.UNWRAP: True}),
            (DOMAIN_SEAL_LABEL, KeyType.AES, bytes(values.seal), {A.WRAP: True, A.UNWRAP: True}),
            (DOMAIN_OWNER_LABEL, KeyType.GENERIC_SECRET, bytes(values.owner_root), {A.SIGN: True}),
        ):
            template = {
                A.CLASS: ObjectClass.SECRET_KEY,
                A.KEY_TYPE: key_type,
                A.LABEL: label,
                A.VALUE: value,
                **locked,
                **uses,
                A.MODIFIABLE: False,
            }
            session.session.create_object(template)
    session.session.create_object(
        {
            A.CLASS: ObjectClass.DATA,
            A.TOKEN: True,
            A.PRIVATE: False,
            A.LABEL: DOMAIN_MARKER_LABEL,
            A.VALUE: domain_id + bytes([HIERARCHY_PER_PURPOSE]),
        }
    )
    assert session.domain_id() == domain_id


def test_restore_of_a_softhsm_set_names_the_mechanism_not_corruption(
    cli: Cli,
    opencryptoki: OpenCryptokiToken,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    tmp_path: Path,
    domain_secrets: list[bytes],
) -> None:
    emulator = emulated_drives(3)
    source = tokens["source"]
    with (
        hsm.open(source.slot_id, source.pin) as session,
        DriveGroup([d.port for d in emulator.drives]) as group,
    ):
        passphrases = Passphrases(entries={d.serial: passphrase(d.serial) for d in emulator.drives})
        domain_id = create_domain(session, group.drives, passphrases).domain_id
        session.session.generate_key(
            KeyType.AES, 256, label="kept", store=True, template={A.EXTRACTABLE: True}
        )
        set_id = backup(session, group.drives, label="nightly").set_id.hex()
    (secret,) = domain_secrets

    slot = str(opencryptoki.slot_id)
    # The domain cannot be rebuilt there: the token can hold only portable domains (said
    # before anyone is asked), and the record opened with the shares says standard.
    recover = cli(
        "domain",
        "recover",
        "--slot",
        slot,
        "--drives",
        spec(emulator),
        "--passphrases",
        passphrase_file(tmp_path, emulator),
        code=1,
    )
    warned, _, refused = recover.stderr.partition("error:")
    assert "can hold only domains of the portable profile" in warned
    # Said from the first custodian's share, before the others are asked.
    assert "share says the domain uses the standard profile" in warned
    assert "of the standard profile" in refused and MISSING_WRAP in refused
    assert MISSING_GCM in refused and "nothing on the drives is corrupt" in refused
    assert "--profile portable" in refused and "does not authenticate" not in refused
    with open_token(opencryptoki) as session:
        assert every_object(session) == []
        plant_domain(session, secret)
        session.session.generate_key(
            KeyType.AES, 256, label="ock-aes", store=True, template={A.EXTRACTABLE: True}
        )

    restored = cli("restore", "--set", set_id, "--slot", slot, "--drives", spec(emulator), code=1)
    assert_token_at_fault(restored.stderr)
    assert restored.returncode != EXIT_INTEGRITY
    verified = cli("verify", "--set", set_id, "--drives", spec(emulator), code=1)
    assert_token_at_fault(verified.stderr)
    backed_up = cli("backup", "--slot", slot, "--drives", spec(emulator), code=1)
    assert "cannot back up" in backed_up.stderr and MISSING_WRAP in backed_up.stderr
    assert MISSING_GCM in backed_up.stderr

    # The copies are sound: the SoftHSM2 token that made them opens every one.
    with (
        hsm.open(source.slot_id, source.pin) as session,
        DriveGroup([d.port for d in emulator.drives]) as group,
    ):
        checked = verify_set(session, group.drives, domain_id, set_id)
    assert checked.ok and len(checked.good) == 3


def test_a_portable_domain_names_what_softhsm_lacks_to_rebuild_it(
    cli: Cli,
    opencryptoki: OpenCryptokiToken,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    tmp_path: Path,
) -> None:
    with open_token(opencryptoki) as session:  # the module's token, emptied
        for obj in list(session.session.get_objects()):
            obj.destroy()
    emulator = emulated_drives(3)
    slot = str(opencryptoki.slot_id)
    custodians = passphrase_file(tmp_path, emulator)
    created = cli(
        "domain", "create", "--slot", slot, "--drives", spec(emulator), "--passphrases", custodians
    )
    assert "Profile: portable" in created.stdout
    with open_token(opencryptoki) as session:
        session.session.generate_key(
            KeyType.AES, 256, label="ock-aes", store=True, template={A.EXTRACTABLE: True}
        )
    cli("backup", "--slot", slot, "--drives", spec(emulator), "--label", "from-ock")
    with open_token(opencryptoki) as session:
        for obj in list(session.session.get_objects({A.LABEL: "ock-aes"})):
            obj.destroy()
    restored = cli(
        "restore", "--set", "latest", "--slot", slot, "--drives", spec(emulator), "--json"
    )
    outcomes = json.loads(restored.stdout)["keys"]
    assert [(o["label"], o["status"]) for o in outcomes] == [("ock-aes", "restored")]
    with open_token(opencryptoki) as session:
        assert len(list(session.session.get_objects({A.LABEL: "ock-aes"}))) == 1

    target = tokens["target"]
    with (
        hsm.open(target.slot_id, target.pin) as session,
        DriveGroup([d.port for d in emulator.drives]) as group,
    ):
        passphrases = Passphrases(entries={d.serial: passphrase(d.serial) for d in emulator.drives})
        with pytest.raises(MechanismMissing) as refused:
            recover_domain(session, group.drives, passphrases)
        message = str(refused.value)
        assert "of the portable profile" in message and "CKM_AES_CBC_PAD" in message
        assert session.domain_id() is None
    with open_token(opencryptoki) as session:
        for obj in list(session.session.get_objects()):
            obj.destroy()


def test_restore_of_a_portable_set_into_softhsm_names_the_mechanism_not_corruption(
    opencryptoki: OpenCryptokiToken,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    domain_secrets: list[bytes],
) -> None:
    """SoftHSM2 2.6.1 lists CKM_AES_CBC_PAD but will not unwrap with it: a portable domain
    put into it by hand (as a token that lost a mechanism would hold one) opens no set, and
    restore says which mechanism, not that any copy is corrupt."""
    emulator = emulated_drives(3)
    with open_token(opencryptoki) as session:
        for obj in list(session.session.get_objects()):
            obj.destroy()
    ports = [d.port for d in emulator.drives]
    passphrases = Passphrases(entries={d.serial: passphrase(d.serial) for d in emulator.drives})
    with open_token(opencryptoki) as session, DriveGroup(ports) as group:
        create_domain(session, group.drives, passphrases)
        session.session.generate_key(
            KeyType.AES, 256, label="ock-aes", store=True, template={A.EXTRACTABLE: True}
        )
        set_id = backup(session, group.drives, label="portable").set_id.hex()
    (secret,) = domain_secrets
    target = tokens["target"]
    with hsm.open(target.slot_id, target.pin) as session, DriveGroup(ports) as group:
        session.import_domain(secret, profile=PORTABLE)
        with pytest.raises(MechanismMissing) as refused:
            restore_set(session, group.drives, set_id)
        message = str(refused.value)
        assert "CKM_AES_CBC_PAD" in message and "nothing on the drives is corrupt" in message
        assert "CKM_AES_KEY_GEN" not in message and refused.value.exit_code != EXIT_INTEGRITY
    with open_token(opencryptoki) as session:
        for obj in list(session.session.get_objects()):
            obj.destroy()
