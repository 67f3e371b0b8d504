"""Naming slots and sets as an operator does: a slot by its id or its token's label, a set by
its id, `latest` or its label; `sets --set` lists what a set holds; `restore --dry-run`
changes nothing. The command line in a subprocess, SoftHSM2 and emulated drives."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_runner import SealkeepCli, custodians_file
from pkcs11 import Attribute
from sealkeep.hsm import Hsm

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]


class Cli(SealkeepCli):
    def __init__(self, farm: SoftHsmFarm, tmp: Path, drives: str) -> None:
        super().__init__(farm, tmp, drives=drives)


@pytest.fixture
def cli(
    softhsm: SoftHsmFarm,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    make_sample_keys: Any,
    tmp_path: Path,
) -> Cli:
    """A domain on the token labelled "source" over three drives, with sample keys."""
    emulator = emulated_drives(3)
    custodians = custodians_file(tmp_path, emulator.drives)
    cli = Cli(softhsm, tmp_path, f"@{emulator.drives_file}")
    cli("domain", "create", "--slot", "source", "--passphrases", str(custodians))
    with hsm.open(tokens["source"].slot_id, tokens["source"].pin) as session:
        make_sample_keys(session)
    return cli


def test_a_slot_is_named_by_its_id_or_its_token_label(
    cli: Cli, tokens: dict[str, SoftHsmToken]
) -> None:
    by_label = cli.json("keys", "--slot", "source")
    by_id = cli.json("keys", "--slot", str(tokens["source"].slot_id))
    assert by_label == by_id and by_label["slot"] == tokens["source"].slot_id
    unknown = cli("keys", "--slot", "no-such-token", code=2)
    assert "no slot has the id or token label 'no-such-token'" in unknown.stderr
    assert "'source'" in unknown.stderr  # the slots there are, by label


def test_a_set_is_named_by_id_latest_or_label(cli: Cli) -> None:
    weekly = cli.json("backup", "--slot", "source", "--label", "weekly")["set_id"]
    time.sleep(1.1)  # creation times are in seconds
    nightly = cli.json("backup", "--slot", "source", "--label", "nightly")["set_id"]
    assert cli.json("verify", "--set", "latest")["set_id"] == nightly
    assert cli.json("verify", "--set", "weekly")["set_id"] == weekly
    assert cli.json("verify", "--set", weekly[:6])["set_id"] == weekly
    unknown = cli("verify", "--set", "monthly", code=2)
    assert "no set has the id or label 'monthly'" in unknown.stderr

    listed = cli.json("sets", "--set", "weekly")["set"]
    assert listed["set_id"] == weekly and listed["label"] == "weekly"
    labels = {o["label"] for o in listed["objects"]}
    assert {"aes-data", "rsa-sign", "ec-sign"} <= labels
    assert [s["label"] for s in listed["skipped"]] == ["aes-local"]
    plain = cli("sets", "--set", "latest").stdout
    assert nightly in plain and "rsa-sign" in plain and "aes-local" in plain


def test_restore_dry_run_says_what_it_would_do_and_changes_nothing(
    cli: Cli, hsm: Hsm, tokens: dict[str, SoftHsmToken]
) -> None:
    cli("backup", "--slot", "source", "--label", "nightly")
    token = tokens["source"]
    with hsm.open(token.slot_id, token.pin) as session:
        session.session.get_key(label="aes-data").destroy()
        before = sorted((o.object_class, o.label) for o in session.objects())
    planned = cli.json("restore", "--set", "latest", "--slot", "source", "--dry-run")
    statuses = {o["label"]: o["status"] for o in planned["keys"]}
    assert statuses["aes-data"] == "would restore"
    assert statuses["rsa-sign"] == "present"
    assert planned["dry_run"] is True
    plain = cli("restore", "--set", "latest", "--slot", "source", "--dry-run").stdout
    assert "dry run" in plain and "1 would be restored" in plain and "nothing was changed" in plain
    with hsm.open(token.slot_id, token.pin) as session:
        after = sorted((o.object_class, o.label) for o in session.objects())
        assert after == before
        assert not list(session.session.get_objects({Attribute.LABEL: "aes-data"}))


def test_errors_come_as_json_under_json(cli: Cli) -> None:
    bad_slot = cli.json("keys", "--slot", "no-such-token", code=2)["error"]
    assert bad_slot["exit_code"] == 2 and "no-such-token" in bad_slot["message"]
    assert bad_slot["kind"] == "SlotChoiceError"
    missing = cli.json("verify", "--set", "monthly", "--slot", "source", code=2)["error"]
    assert "no set has the id or label 'monthly'" in missing["message"]
    unreachable = cli.json("backup", "--slot", "source", "--drives", "/dev/no-such-port", code=3)[
        "error"
    ]
    assert unreachable["problems"] and unreachable["problems"][0]["drive"].endswith(
        "/dev/no-such-port"
    )


def test_restore_of_one_key_reports_only_that_key(cli: Cli) -> None:
    cli("backup", "--slot", "source", "--label", "nightly")
    restore = ("restore", "--set", "latest", "--slot", "source", "--dry-run")
    one = cli.json(*restore, "--key", "aes-data")
    assert [k["label"] for k in one["keys"]] == ["aes-data"] and one["not_in_set"] == []
    everything = cli.json(*restore)
    assert [s["label"] for s in everything["not_in_set"]] == ["aes-local"]
    left_out = cli(*restore, "--key", "aes-local", code=2)
    assert "'aes-local': left out at backup (not extractable)" in left_out.stderr
