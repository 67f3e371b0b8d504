"""Backups and restores through the API: a job per operation, progress, the catalogue, the
SO password used once and never kept, and the audit trail of each step."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from pkcs11 import Attribute
from sealkeep.backupset import set_object_name
from sealkeep.hsm import Hsm
from service_support import USER_PIN, Domain, Service

pytestmark = pytest.mark.integration


def test_backup_then_restore_two_keys_through_the_api(serve, domain: Domain, hsm: Hsm) -> None:
    service: Service = serve("--drives", domain.drives)
    operator = service.add_user("olivia", "operator")

    started = operator.post(
        "/api/v1/backups",
        json={"slot": domain.slot_id, "so_id": "so-17", "password": USER_PIN, "label": "api"},
    )
    assert started.status_code == 202, started.text
    job = service.wait_job(operator, started.json()["job"])
    assert job["state"] == "done", job
    result = job["result"]
    assert result["label"] == "api" and result["keys"] == 6
    assert len(result["drives"]) == 3 and all(d["verified"] for d in result["drives"])
    assert [s["label"] for s in result["skipped"]] == ["aes-local"]
    set_id = result["set_id"]

    sets = operator.get("/api/v1/sets").json()
    assert [s["set_id"] for s in sets] == [set_id]
    assert sets[0]["label"] == "api" and len(sets[0]["verified"]) == 3

    # Two keys are lost from the slot, then come back from the drives.
    with hsm.open(domain.slot_id, USER_PIN) as session:
        for obj in list(session.session.get_objects()):
            if obj[Attribute.LABEL] in ("aes-data", "rsa-sign"):
                obj.destroy()
    started = operator.post(
        "/api/v1/restores",
        json={
            "set_id": set_id,
            "slot": "source",
            "so_id": "so-17",
            "password": USER_PIN,
            "keys": ["aes-data", "rsa-sign"],
        },
    )
    assert started.status_code == 202, started.text
    job = service.wait_job(operator, started.json()["job"])
    assert job["state"] == "done", job
    statuses = {k["label"]: k["status"] for k in job["result"]["keys"]}
    assert set(statuses) == {"aes-data", "rsa-sign"}
    assert set(statuses.values()) == {"restored"}
    assert all(k["proven"] for k in job["result"]["keys"])

    # No row or file of the state folder holds the SO password.
    for path in service.state.rglob("*"):
        if path.is_file():
            assert USER_PIN.encode() not in path.read_bytes(), path
    conn = sqlite3.connect(service.state / "sealkeep.db")
    actions = [r[0] for r in conn.execute("SELECT action FROM audit ORDER BY seq")]
    conn.close()
    assert "backup.start" in actions and "backup" in actions
    assert "restore.start" in actions and "restore" in actions


def test_a_wrong_so_password_is_refused_at_once_and_audited(serve, domain: Domain) -> None:
    service: Service = serve("--drives", domain.drives)
    operator = service.add_user("olivia", "operator")
    refused = operator.post(
        "/api/v1/backups",
        json={"slot": domain.slot_id, "so_id": "so-17", "password": "wrong-pin-0000"},
    )
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["error"] == "PinRefused" and body["exit_code"] == 4
    assert "SO password" in body["message"] and "wrong-pin-0000" not in refused.text
    assert operator.get("/api/v1/jobs").json() == []
    auditor = service.add_user("ada", "auditor")
    records = auditor.get("/api/v1/audit").json()
    refusal = next(r for r in records if r["action"] == "backup")
    assert refusal["result"] == "refused" and refusal["actor"] == "olivia"
    assert refusal["detail"]["so_id"] == "so-17"
    assert "wrong-pin-0000" not in json.dumps(records)


def test_sets_written_elsewhere_join_the_catalogue_on_a_refresh(serve, domain: Domain) -> None:
    made = domain.cli.json(
        "backup", "--slot", "source", "--drives", domain.drives, "--label", "cli"
    )
    service: Service = serve("--drives", domain.drives)
    operator = service.add_user("olivia", "operator")
    assert operator.get("/api/v1/sets").json() == []
    job = operator.post(
        "/api/v1/sets/refresh", json={"slot": "source", "so_id": "so-2", "password": USER_PIN}
    ).json()["job"]
    done = service.wait_job(operator, job)
    assert done["state"] == "done" and done["result"] == {"sets": 1}
    (entry,) = operator.get("/api/v1/sets").json()
    assert entry["set_id"] == made["set_id"] and entry["label"] == "cli"
    assert sorted(entry["verified"]) == sorted(d["serial"] for d in made["drives"])


def test_the_drives_answer_hello_without_any_credential(serve, domain: Domain) -> None:
    service: Service = serve("--drives", domain.drives, env={"SEALKEEP_DRIVE_TIMEOUT": "1"})
    auditor = service.add_user("ada", "auditor")
    drives = auditor.get("/api/v1/drives").json()
    assert len(drives) == 3
    assert {d["port"] for d in drives} == set(domain.drives.split(","))
    assert all(d["reachable"] and d["state"] == "owned" and d["domain"] for d in drives)
    assert len({d["domain"] for d in drives}) == 1
    domain.emulator.kill(0)  # its power cut: the port stays, nothing answers
    after = {d["port"]: d for d in auditor.get("/api/v1/drives").json()}
    lost = after[domain.emulator.drives[0].port]
    assert lost["reachable"] is False and lost["error"]


def test_a_backup_through_the_service_carries_the_audit_head_the_slot_signed(
    serve, domain: Domain
) -> None:
    service: Service = serve("--drives", domain.drives)
    operator = service.add_user("olivia", "operator", "auditor")
    job = operator.post(
        "/api/v1/backups", json={"slot": "source", "so_id": "so-3", "password": USER_PIN}
    ).json()["job"]
    set_id = service.wait_job(operator, job)["result"]["set_id"]
    shown = domain.cli.json("sets", "--drives", domain.drives, "--set", set_id)
    head = shown["set"]["audit_head"]
    assert head
    verified = operator.get("/api/v1/audit/verify").json()
    assert verified["ok"] is True and verified["last_hsm_signed"] is not None
    # the set's head is one the log holds: audit verify accepts it as evidence
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealkeep",
            "audit",
            "verify",
            "--state",
            str(service.state),
            "--head",
            head,
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=service.env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True


def test_verify_checks_every_copy_and_names_a_damaged_one(serve, domain: Domain) -> None:
    service: Service = serve("--drives", domain.drives)
    operator = service.add_user("olivia", "operator", "auditor")
    login = {"slot": "source", "so_id": "so-4", "password": USER_PIN}
    job = operator.post("/api/v1/backups", json=login).json()["job"]
    set_id = service.wait_job(operator, job)["result"]["set_id"]

    job = operator.post(f"/api/v1/sets/{set_id}/verify", json=login).json()["job"]
    done = service.wait_job(operator, job)
    assert done["state"] == "done", done
    assert done["result"]["ok"] is True
    assert [c["status"] for c in done["result"]["copies"]] == ["good"] * 3

    # one drive's copy damaged in its flash: the job fails and names that drive
    damaged = domain.emulator.drives[1]
    blob = damaged.flash / "obj" / set_object_name(bytes.fromhex(set_id))
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.write_bytes(bytes(data))
    job = operator.post(f"/api/v1/sets/{set_id}/verify", json=login).json()["job"]
    failed = service.wait_job(operator, job)
    statuses = {c["serial"]: c["status"] for c in failed["result"]["copies"]}
    assert statuses[damaged.serial] != "good"
    assert sum(1 for s in statuses.values() if s == "good") == 2
    (entry,) = operator.get("/api/v1/sets").json()
    assert damaged.serial not in entry["verified"] and len(entry["verified"]) == 2
    verdicts = [
        r["result"] for r in operator.get("/api/v1/audit").json() if r["action"] == "verify"
    ]
    assert verdicts[0] in ("failed", "incomplete") and verdicts[-1] == "ok"


def test_a_drive_that_stops_answering_is_an_audit_event(serve, domain: Domain) -> None:
    service: Service = serve("--drives", domain.drives, env={"SEALKEEP_DRIVE_TIMEOUT": "1"})
    auditor = service.add_user("ada", "auditor")
    auditor.get("/api/v1/drives")
    domain.emulator.kill(2)
    auditor.get("/api/v1/drives")
    events = [r for r in auditor.get("/api/v1/audit").json() if r["action"] == "drive.event"]
    (event,) = events
    assert event["result"] == "unreachable" and event["detail"]["was"] == "owned"
    assert event["target"] == domain.emulator.drives[2].serial
    domain.emulator.restart(2)
    auditor.get("/api/v1/drives")
    back = [r for r in auditor.get("/api/v1/audit").json() if r["action"] == "drive.event"]
    assert back[0]["result"] == "owned" and back[0]["detail"]["was"] == "unreachable"
