"""Every object of a slot is backed up or reported, by label and id, with why not.

The command line in a subprocess, a real SoftHSM2 token and emulated drives: a data object
travels in the sealed manifest and comes back with its value; an Ed25519 key SoftHSM2 marks
extractable but will not wrap is "no" in ``keys``, listed in the plain backup output and
makes the backup exit 8; restore names the attributes the target did not keep.

The tests of what a token does with an object run on openCryptoki's soft token too (the
``token`` fixture); those of the command's own logic (missing drives, acknowledgements)
only on SoftHSM2.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_runner import SealkeepCli, custodians_file
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from sealkeep.hsm import Hsm

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken, Token

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]

ED25519_PARAMS = bytes.fromhex("06032b6570")  # DER of the OID 1.3.101.112
EXIT_INCOMPLETE = 8


def run(
    farm: SoftHsmFarm, tmp: Path, *args: str, code: int = 0
) -> subprocess.CompletedProcess[str]:
    return SealkeepCli(farm, tmp)(*args, code=code)


def add_data_object(session: Any, label: str, value: bytes) -> None:
    session.session.create_object(
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.LABEL: label,
            Attribute.APPLICATION: "payments-config",
            Attribute.VALUE: value,
        }
    )


def add_ed25519_key(session: Any, label: str) -> None:
    session.session.generate_keypair(
        KeyType.EC_EDWARDS,
        public_template={
            Attribute.EC_PARAMS: ED25519_PARAMS,
            Attribute.LABEL: label,
            Attribute.ID: b"\xed",
            Attribute.TOKEN: True,
            Attribute.VERIFY: True,
        },
        private_template={
            Attribute.LABEL: label,
            Attribute.ID: b"\xed",
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True,
            Attribute.SIGN: True,
        },
        mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
    )


def data_values(session: Any) -> dict[str, bytes]:
    found = session.session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True})
    return {
        obj[Attribute.LABEL]: bytes(obj[Attribute.VALUE])
        for obj in found
        if obj[Attribute.LABEL] != "sealkeep-domain"
    }


def create_domain(
    cli: SealkeepCli, slot: int, emulated_drives: StartDrives, tmp: Path
) -> tuple[str, str]:
    """(slot, drives spec) of ``slot`` once it holds a domain over three emulated drives."""
    emulator = emulated_drives(3)
    custodians = custodians_file(tmp, emulator.drives)
    drives = f"@{emulator.drives_file}"
    cli("domain", "create", "--slot", str(slot), "--drives", drives,
        "--passphrases", str(custodians), "--json")  # fmt: skip
    return str(slot), drives


@pytest.fixture
def domain(
    softhsm: SoftHsmFarm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    tmp_path: Path,
) -> tuple[str, str]:
    """(slot, drives spec) of a SoftHSM2 slot holding a domain over three emulated drives."""
    cli = SealkeepCli(softhsm, tmp_path)
    return create_domain(cli, tokens["source"].slot_id, emulated_drives, tmp_path)


@pytest.fixture
def cli(token: Token, softhsm: SoftHsmFarm, tmp_path: Path) -> SealkeepCli:
    """The command line on the token under test."""
    _, pin = token.source
    return SealkeepCli(softhsm, tmp_path, module=token.hsm.module, pin=pin)


@pytest.fixture
def token_domain(
    token: Token, cli: SealkeepCli, emulated_drives: StartDrives, tmp_path: Path
) -> tuple[str, str]:
    """(slot, drives spec) of the token under test once it holds a domain."""
    return create_domain(cli, token.source[0], emulated_drives, tmp_path)


def test_data_objects_are_backed_up_and_restored_with_their_value(
    token: Token, cli: SealkeepCli, token_domain: tuple[str, str]
) -> None:
    slot, drives = token_domain
    with token.open() as session:
        samples = token.sample_keys(session)  # one of them, aes-local, is not extractable
        add_data_object(session, "routing-table", b"\x00config v7\xff" * 40)
    keys = json.loads(cli("keys", "--slot", slot, "--json").stdout)
    listed = {o["label"]: o for o in keys["objects"]}
    assert listed["routing-table"]["class"] == "data object"
    assert listed["routing-table"]["backup"] is True
    assert listed["sealkeep-domain"]["domain_key"] is True

    made = json.loads(cli("backup", "--slot", slot, "--drives", drives, "--json").stdout)
    assert made["keys"] == len(samples) and made["incomplete"] is False
    with token.open() as session:
        for obj in session.session.get_objects({Attribute.LABEL: "routing-table"}):
            obj.destroy()
        assert "routing-table" not in data_values(session)

    restored = cli("restore", "--set", made["set_id"], "--slot", slot,
                   "--drives", drives, "--key", "routing-table")  # fmt: skip
    assert "routing-table" in restored.stdout and "1 restored and proven" in restored.stdout
    with token.open() as session:
        assert data_values(session) == {"routing-table": b"\x00config v7\xff" * 40}


def test_a_key_the_token_will_not_wrap_is_named_and_the_backup_is_incomplete(
    token: Token, cli: SealkeepCli, request: pytest.FixtureRequest
) -> None:
    if not token.has(Mechanism.EC_EDWARDS_KEY_PAIR_GEN):
        pytest.skip(
            f"{token.kind} lacks CKM_EC_EDWARDS_KEY_PAIR_GEN: it has no Ed25519 key to refuse"
        )
    slot, drives = request.getfixturevalue("token_domain")
    with token.open() as session:
        token.sample_keys(session)
        add_ed25519_key(session, "signer-ed")
    keys = json.loads(cli("keys", "--slot", slot, "--json").stdout)
    private = next(
        o for o in keys["objects"] if o["label"] == "signer-ed" and o["class"] == "private key"
    )
    assert private["backup"] is False and private["refused"] is True
    assert "will not wrap" in private["reason"]
    table = cli("keys", "--slot", slot).stdout
    row = next(line for line in table.splitlines() if "signer-ed" in line and "private" in line)
    assert "yes" not in row.split()

    plain = cli("backup", "--slot", slot, "--drives", drives, code=EXIT_INCOMPLETE)
    listed = [line for line in plain.stdout.splitlines() if "signer-ed" in line]
    assert listed and "will not wrap" in listed[0]
    assert "ed" in listed[0].split()  # the key's id, b"\xed", in its own column
    assert "aes-local" in plain.stdout  # the expected loss is listed too
    assert "incomplete" in plain.stdout and "listed above" not in plain.stdout

    as_json = cli("backup", "--slot", slot, "--drives", drives, "--json", code=EXIT_INCOMPLETE)
    made = json.loads(as_json.stdout)
    refused = {s["label"]: s["refused"] for s in made["skipped"]}
    assert refused == {"signer-ed": True, "aes-local": False} and made["incomplete"] is True


def test_only_expected_losses_exit_zero(
    softhsm: SoftHsmFarm,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    domain: tuple[str, str],
    make_sample_keys: Any,
    tmp_path: Path,
) -> None:
    slot, drives = domain
    token = tokens["source"]
    with hsm.open(token.slot_id, token.pin) as session:
        make_sample_keys(session)  # one of them, aes-local, is not extractable
    plain = run(softhsm, tmp_path, "backup", "--slot", slot, "--drives", drives)
    line = next(line for line in plain.stdout.splitlines() if "aes-local" in line)
    assert "not extractable" in line and "incomplete" not in plain.stdout


def test_restore_names_the_attributes_the_target_did_not_keep(
    token: Token, cli: SealkeepCli, token_domain: tuple[str, str]
) -> None:
    slot, drives = token_domain
    with token.open() as session:
        token.sample_keys(session)
    made = json.loads(cli("backup", "--slot", slot, "--drives", drives, "--json").stdout)
    with token.open() as session:
        for obj in session.session.get_objects({Attribute.LABEL: "aes-data"}):
            obj.destroy()
    restore = ["restore", "--set", made["set_id"], "--slot", slot, "--drives", drives]
    result = json.loads(cli(*restore, "--key", "aes-data", "--json").stdout)
    [outcome] = [o for o in result["keys"] if o["status"] == "restored"]
    # LOCAL is never true for a key that did not begin in this token.
    assert "LOCAL true -> false" in outcome["not_taken"]
    if token.kind == "opencryptoki":
        # openCryptoki 3.8.1 keeps no CHECK_VALUE to lose and keeps VALUE_LEN; a key it
        # unwraps was not sensitive since its creation.
        assert "ALWAYS_SENSITIVE true -> false" in outcome["not_taken"]
        assert not any(n.startswith(("CHECK_VALUE", "VALUE_LEN")) for n in outcome["not_taken"])
        shown = "LOCAL"
    else:
        # SoftHSM2 2.6.1: an unwrapped AES key reads VALUE_LEN 0 and has no CHECK_VALUE.
        assert "CHECK_VALUE" in outcome["not_taken"]
        assert "VALUE_LEN 32 -> 0" in outcome["not_taken"]
        shown = "CHECK_VALUE"
    with token.open() as session:
        for obj in session.session.get_objects({Attribute.LABEL: "aes-data"}):
            obj.destroy()
    plain = cli(*restore, "--key", "aes-data").stdout
    assert "did not keep" in plain and shown in plain


def add_hmac_key(session: Any, label: str) -> None:
    session.session.generate_key(
        KeyType.GENERIC_SECRET,
        256,
        label=label,
        id=b"\x01",
        store=True,
        template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True, Attribute.SIGN: True},
    )


def hmac_of(session: Any, label: str) -> bytes:
    key = session.session.get_key(label=label, key_type=KeyType.GENERIC_SECRET)
    return bytes(key.sign(b"probe", mechanism=Mechanism.SHA256_HMAC))


def test_a_different_key_under_the_same_name_is_not_called_present(
    token: Token, cli: SealkeepCli, token_domain: tuple[str, str]
) -> None:
    slot, drives = token_domain
    with token.open() as session:
        token.sample_keys(session)
        add_hmac_key(session, "hmac1")
        original = hmac_of(session, "hmac1")
    made = json.loads(cli("backup", "--slot", slot, "--drives", drives, "--json").stdout)
    restore = ["restore", "--set", made["set_id"], "--slot", slot, "--drives", drives]

    # The very same keys: present, compared and found the same.
    same = json.loads(cli(*restore, "--json").stdout)
    assert {o["status"] for o in same["keys"]} == {"present"} and same["different"] == 0
    hmac1 = next(o for o in same["keys"] if o["label"] == "hmac1")
    assert "same object" in hmac1["detail"] and "value check" in hmac1["detail"]

    with token.open() as session:
        session.session.get_key(label="hmac1", key_type=KeyType.GENERIC_SECRET).destroy()
        add_hmac_key(session, "hmac1")  # same class, label and id; another value
        impostor = hmac_of(session, "hmac1")
    assert impostor != original
    refused = cli(*restore, "--key", "hmac1", code=EXIT_INCOMPLETE)
    assert "present but different" in refused.stdout and "--replace" in refused.stderr
    assert "1 already present" not in refused.stdout
    with token.open() as session:
        assert hmac_of(session, "hmac1") == impostor  # left alone

    replaced = cli(*restore, "--key", "hmac1", "--replace")
    assert "1 replaced" in replaced.stdout
    with token.open() as session:
        assert hmac_of(session, "hmac1") == original
        keys = session.session.get_objects({Attribute.LABEL: "hmac1"})
        assert len(list(keys)) == 1


def test_a_backup_or_verify_missing_drives_says_so_and_exits_8(
    softhsm: SoftHsmFarm,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    make_sample_keys: Any,
    tmp_path: Path,
) -> None:
    emulator = emulated_drives(3)
    custodians = custodians_file(tmp_path, emulator.drives)
    slot = str(tokens["source"].slot_id)
    every = ",".join(d.port for d in emulator.drives)
    run(softhsm, tmp_path, "domain", "create", "--slot", slot, "--drives", every,
        "--passphrases", str(custodians))  # fmt: skip
    with hsm.open(tokens["source"].slot_id, tokens["source"].pin) as session:
        make_sample_keys(session)
    absent = emulator.drives[2].serial
    two = ",".join(d.port for d in emulator.drives[:2])

    refused = run(softhsm, tmp_path, "backup", "--slot", slot, "--drives", two, code=3)
    assert absent in refused.stderr and "--allow-missing" in refused.stderr

    partial = run(softhsm, tmp_path, "backup", "--slot", slot, "--drives", two,
                  "--allow-missing", "--json", code=EXIT_INCOMPLETE)  # fmt: skip
    made = json.loads(partial.stdout)
    assert made["missing"] == [absent] and made["incomplete"] is True
    assert len(made["drives"]) == 2
    plain = run(softhsm, tmp_path, "backup", "--slot", slot, "--drives", two,
                "--allow-missing", code=EXIT_INCOMPLETE)  # fmt: skip
    assert "incomplete" in plain.stdout and absent in plain.stdout

    checked = run(softhsm, tmp_path, "verify", "--set", made["set_id"], "--drives", two,
                  code=EXIT_INCOMPLETE)  # fmt: skip
    row = next(line for line in checked.stdout.splitlines() if absent in line)
    assert "missing" in row and "incomplete" in checked.stdout
    as_json = json.loads(
        run(
            softhsm,
            tmp_path,
            "verify",
            "--set",
            made["set_id"],
            "--drives",
            two,
            "--json",
            code=EXIT_INCOMPLETE,
        ).stdout
    )
    assert as_json["missing"] == [absent] and as_json["ok"] is True


def test_acknowledged_objects_are_counted_in_one_line_and_new_ones_listed(
    softhsm: SoftHsmFarm,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    domain: tuple[str, str],
    make_sample_keys: Any,
    tmp_path: Path,
) -> None:
    slot, drives = domain
    token = tokens["source"]
    with hsm.open(token.slot_id, token.pin) as session:
        make_sample_keys(session)  # aes-local: not extractable, an expected loss
        add_ed25519_key(session, "signer-ed")  # extractable yet refused: exit 8
    work = tmp_path / "work"
    work.mkdir()
    (work / "sealkeep.toml").write_text(
        'acknowledged = ["aes-local", { label = "signer-ed", id = "ed" }]\n'
    )
    cli = SealkeepCli(softhsm, tmp_path, cwd=work)

    # Both known losses are one line; the refused key still makes the backup exit 8.
    plain = cli("backup", "--slot", slot, "--drives", drives, code=EXIT_INCOMPLETE).stdout
    assert "2 acknowledged object(s) not backed up (sealkeep.toml): see `sealkeep keys`" in plain
    assert "aes-local" not in plain and "signer-ed" not in plain
    assert "not backed up:" not in plain  # no table of objects
    assert "incomplete: the HSM refused 1 object(s)" in plain

    # A new object the operator has not seen is listed in full beside the count.
    with hsm.open(token.slot_id, token.pin) as session:
        session.session.generate_key(
            KeyType.AES, 128, label="fresh-kek", id=b"\x0f", store=True,
            template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
        )  # fmt: skip
    plain = cli("backup", "--slot", slot, "--drives", drives, code=EXIT_INCOMPLETE).stdout
    assert "1 object(s) not backed up:" in plain
    (row,) = [line for line in plain.splitlines() if "fresh-kek" in line]
    assert "0f" in row.split() and "not extractable" in row
    assert "2 acknowledged object(s) not backed up" in plain and "aes-local" not in plain

    # --json lists everything, each with its flag; the exit code is the same.
    made = cli.json("backup", "--slot", slot, "--drives", drives, code=EXIT_INCOMPLETE)
    flags = {s["label"]: s["acknowledged"] for s in made["skipped"]}
    assert flags == {"aes-local": True, "signer-ed": True, "fresh-kek": False}

    # The id narrows an entry to one object: another id under that label is not acknowledged.
    (work / "sealkeep.toml").write_text('acknowledged = [{ label = "signer-ed", id = "01" }]\n')
    made = cli.json("backup", "--slot", slot, "--drives", drives, code=EXIT_INCOMPLETE)
    assert not any(s["acknowledged"] for s in made["skipped"])


def test_a_malformed_acknowledgement_is_refused_naming_it(
    softhsm: SoftHsmFarm, tokens: dict[str, SoftHsmToken], tmp_path: Path
) -> None:
    (tmp_path / "sealkeep.toml").write_text('acknowledged = [{ label = "x", serial = "1" }]\n')
    cli = SealkeepCli(softhsm, tmp_path, cwd=tmp_path)
    refused = cli("backup", "--slot", "source", code=2)
    assert "'acknowledged' entry" in refused.stderr and "serial" in refused.stderr
