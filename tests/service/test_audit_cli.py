"""``sealkeep audit verify|export`` as a person or a script runs them, and the audit head a
backup set carries, shown by ``sealkeep sets --set``."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from json_schemas import check
from sealkeep import manifest
from sealkeep.backupset import backup
from sealkeep.domain import ENV_KDF_FLOOR, ENV_KDF_MEMORY, ENV_KDF_TIME, DriveGroup, create_domain
from sealkeep.emulator import Emulator, find_micropython
from sealkeep.hsm import Hsm
from sealkeep.pins import Passphrases
from sealkeep.service.audit import AUDIT_SCHEMA, DB_NAME, AuditHead, AuditLog, ServiceKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

if TYPE_CHECKING:
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytest_plugins = ["hsm_fixtures"]


def sealkeep(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    """Run the command line; check its exit code, that no traceback shows, and any JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    if code:
        assert len([line for line in done.stderr.splitlines() if line.startswith("error:")]) == 1
    if "--json" in args:
        return check(args, done.stdout)
    return done


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """A state folder whose log holds six records."""
    folder = tmp_path / "state"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(AUDIT_SCHEMA)
    log = AuditLog(conn, ServiceKey.load_or_create(folder))
    for n in range(6):
        log.append("login", actor=f"user{n}", address="192.0.2.7", result="ok", detail={"try": n})
    conn.commit()
    conn.close()
    yield folder


def tamper(state: Path, *statements: str) -> None:
    conn = sqlite3.connect(state / DB_NAME)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_an_intact_log_verifies(state: Path) -> None:
    done = sealkeep("audit", "verify", "--state", str(state))
    assert "intact, 6 record(s)" in done.stdout and "no head signed in a slot" in done.stdout
    document = sealkeep("audit", "verify", "--state", str(state), "--json")
    assert document["ok"] is True and document["records"] == 6
    assert document["first_bad"] is None and document["head"]["seq"] == 6
    assert "error" not in document


def forged_signature(state: Path) -> str:
    stranger = ServiceKey.load_or_create(state.parent / "stranger")
    conn = sqlite3.connect(state / DB_NAME)
    digest = conn.execute("SELECT hash FROM audit WHERE seq = 5").fetchone()[0]
    conn.close()
    return stranger.sign(AuditHead(5, digest).to_bytes()).hex()


@pytest.mark.parametrize(
    ("edit", "first_bad", "reason"),
    [
        ("UPDATE audit SET detail = '{\"try\":99}' WHERE seq = 2", 2, "changed"),
        ("UPDATE audit SET result = 'refused' WHERE seq = 3", 3, "changed"),
        ("DELETE FROM audit WHERE seq = 4", 4, "removed"),
        ("SWAP 3 4", 3, "reordered"),
        ("FORGE 5", 5, "bad signature"),
    ],
    ids=["detail", "result", "deleted", "swapped", "signature"],
)
def test_a_tampered_log_fails_naming_the_record(
    state: Path, edit: str, first_bad: int, reason: str
) -> None:
    if edit == "SWAP 3 4":
        statements = [
            "UPDATE audit SET seq = -1 WHERE seq = 3",
            "UPDATE audit SET seq = 3 WHERE seq = 4",
            "UPDATE audit SET seq = 4 WHERE seq = -1",
        ]
    elif edit == "FORGE 5":
        statements = [f"UPDATE audit SET signature = '{forged_signature(state)}' WHERE seq = 5"]
    else:
        statements = [edit]
    tamper(state, *statements)
    done = sealkeep("audit", "verify", "--state", str(state), code=6)
    assert f"BROKEN at record {first_bad} ({reason})" in done.stdout
    assert f"record {first_bad}" in done.stderr
    document = sealkeep("audit", "verify", "--state", str(state), "--json", code=6)
    assert (document["ok"], document["first_bad"], document["reason"]) == (
        False,
        first_bad,
        reason,
    )
    assert document["error"]["exit_code"] == 6


def test_export_verifies_elsewhere_and_an_edited_bundle_fails(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle.json"
    made = sealkeep("audit", "export", "--state", str(state), "--out", str(out), "--json")
    assert made == {
        "bundle": str(out),
        "records": 6,
        "hsm_heads": 0,
        "ok": True,
        "first_bad": None,
        "reason": None,
    }
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    shutil.copy(out, auditor / "bundle.json")
    shutil.copy(state / "audit-key.pub.pem", auditor / "service.pem")
    shutil.rmtree(state)
    args = ["audit", "verify", "--bundle", str(auditor / "bundle.json")]
    key = ["--public-key", str(auditor / "service.pem")]
    document = sealkeep(*args, *key, "--json")
    assert document["ok"] and document["records"] == 6 and document["key_source"] == "given"
    assert "checked against the key the bundle carries" in sealkeep(*args).stdout

    edited = json.loads((auditor / "bundle.json").read_text())
    edited["records"][3]["address"] = "198.51.100.1"
    (auditor / "bundle.json").write_text(json.dumps(edited))
    document = sealkeep(*args, *key, "--json", code=6)
    assert (document["first_bad"], document["reason"]) == (4, "changed")

    del edited["records"][2]
    (auditor / "bundle.json").write_text(json.dumps(edited))
    document = sealkeep(*args, *key, "--json", code=6)
    assert (document["first_bad"], document["reason"]) == (3, "removed")

    (auditor / "bundle.json").write_text("[]")
    refused = sealkeep(*args, *key, code=6)
    assert "not a sealkeep audit bundle" in refused.stderr


def test_usage_mistakes_are_one_line(tmp_path: Path) -> None:
    missing = sealkeep("audit", "verify", "--state", str(tmp_path / "nowhere"), code=2)
    assert "not a folder" in missing.stderr
    empty = sealkeep("audit", "verify", "--state", str(tmp_path), code=2)
    assert "audit-key" in empty.stderr
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", "audit", "verify", "--state", ".", "--head", "xyz"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "96 hex digits" in done.stderr


def test_a_manifest_carries_the_head_and_old_sets_still_open() -> None:
    sealer = manifest.AesGcmSealer(bytes(32))
    token = manifest.TokenInfo(slot_id=1, label="t", serial="s", model="m", manufacturer="x")
    head = AuditHead(7, "ab" * 32).to_bytes()
    made = manifest.Manifest.new(
        label="l", token=token, domain_id=bytes(16), wrapped_kek=b"k", audit_head=head
    )
    assert manifest.unseal(manifest.seal(made, sealer), sealer).audit_head == head
    old = manifest.Manifest.new(label="l", token=token, domain_id=bytes(16), wrapped_kek=b"k")
    assert b"audit_head" not in old.body()
    assert manifest.unseal(manifest.seal(old, sealer), sealer).audit_head is None


# --- a backup set carries the head ------------------------------------------------------------


@pytest.fixture
def drives(tmp_path: Path) -> Iterator[Emulator]:
    emulator = Emulator(tmp_path / "drives", 3, micropython=find_micropython(), backoff_ms=0)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.mark.integration
def test_a_set_carries_the_head_of_its_moment(
    state: Path,
    drives: Emulator,
    hsm: Hsm,
    softhsm: SoftHsmFarm,
    tokens: dict[str, SoftHsmToken],
    make_sample_keys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ((ENV_KDF_MEMORY, "8"), (ENV_KDF_TIME, "1"), (ENV_KDF_FLOOR, "m=8,t=1")):
        monkeypatch.setenv(name, value)
    token = tokens["source"]
    ports = [d.port for d in drives.drives]
    passphrases = Passphrases(
        entries={d.serial: f"custodian of {d.serial}: orbit lantern 7" for d in drives.drives}
    )
    conn = sqlite3.connect(state / DB_NAME)
    log = AuditLog(conn, ServiceKey.load_or_create(state))
    with hsm.open(token.slot_id, token.pin) as session, DriveGroup(ports) as group:
        create_domain(session, group.drives, passphrases)
        make_sample_keys(session)
        log.append("backup", actor="op", address="192.0.2.7", target=f"slot {token.slot_id}")
        log.sign_head_in_slot(session)
        conn.commit()
        head = log.head()
        assert head is not None
        made = backup(session, group.drives, label="nightly", audit_head=head.to_bytes())
        plain = backup(session, group.drives, label="plain")
    log.append("backup", actor="op", address="192.0.2.7", result="ok")
    conn.commit()
    conn.close()

    pin = state.parent / "pin"
    pin.write_text(f"{token.pin}\n")
    pin.chmod(0o600)
    env = {**softhsm.env, ENV_KDF_MEMORY: "8", ENV_KDF_TIME: "1", ENV_KDF_FLOOR: "m=8,t=1"}
    common = ["--drives", ",".join(ports), "--slot", str(token.slot_id), "--pin-file", str(pin)]
    shown = sealkeep("sets", "--set", made.set_id.hex(), *common, "--json", env=env)
    carried = shown["set"]["audit_head"]
    assert carried == head.to_bytes().hex()
    table = sealkeep("sets", "--set", made.set_id.hex(), *common, env=env).stdout
    assert f"audit head: record {head.seq}, {carried}" in table
    without = sealkeep("sets", "--set", plain.set_id.hex(), *common, "--json", env=env)
    assert without["set"]["audit_head"] is None

    document = sealkeep("audit", "verify", "--state", str(state), "--head", carried, "--json")
    assert document["ok"] and document["last_hsm_signed"] == head.seq
    assert document["heads_checked"] == [{"seq": head.seq, "hash": head.hash}]
    # a cut after the slot-signed head: invisible alone, shown against the set's copy
    tamper(state, f"DELETE FROM audit WHERE seq >= {head.seq}")
    shown_by_slot = sealkeep("audit", "verify", "--state", str(state), "--json", code=6)
    assert (shown_by_slot["first_bad"], shown_by_slot["reason"]) == (head.seq, "removed")
    conn = sqlite3.connect(state / DB_NAME)
    conn.execute("DROP TRIGGER IF EXISTS audit_hsm_heads_no_delete")
    conn.execute("DELETE FROM audit_hsm_heads")
    conn.commit()
    conn.close()
    assert sealkeep("audit", "verify", "--state", str(state), "--json")["ok"] is True
    cut = sealkeep("audit", "verify", "--state", str(state), "--head", carried, "--json", code=6)
    assert (cut["first_bad"], cut["reason"]) == (head.seq, "removed")
