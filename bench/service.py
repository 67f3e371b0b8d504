#!/usr/bin/env python3
"""The service against the command line, and the portal's render time, in one run.

Prints:
  - a backup and a restore through the API (request, then the job followed until done),
    each against the same work through the command line (`sealkeep backup`, `sealkeep
    restore`, whole processes) on the same token and drives, alternating, medians of --runs;
    the ratio is API time / CLI time (goal <= 1.05: the service adds at most 5%)
  - the dashboard's render time (GET /, p50 and p99 of --renders requests) with 7 drives
    and --sets sets in the catalogue; each render asks the 7 drives HELLO, as the page shows
    what they answer now

Everything is made in a temporary folder: a SoftHSM2 token with --aes AES-256 keys, 7
emulated drives with a backup domain (cheap Argon2id: this measures backups, not the KDF),
and `sealkeep serve --http` on a free loopback port.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pkcs11 import Attribute, KeyType, ObjectClass
from sealkeep.domain import ENV_KDF_FLOOR, ENV_KDF_MEMORY, ENV_KDF_TIME, DriveGroup, create_domain
from sealkeep.emulator import Emulator
from sealkeep.hsm import Hsm
from sealkeep.pins import Passphrases
from sealkeep.softhsm import SoftHsmFarm

PIN = "bench-user-pin"
SO_PIN = "bench-so-pin"
ADMIN_PASSWORD = "bench admin password 1"
DRIVES = 7
GOALS = {"backup_api_to_cli": "≤ 1.05", "restore_api_to_cli": "≤ 1.05"}


def sealkeep(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise SystemExit(f"sealkeep {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def delete_aes(hsm: Hsm, slot_id: int) -> int:
    with hsm.open(slot_id, PIN) as session:
        gone = 0
        for obj in list(session.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})):
            if str(obj[Attribute.LABEL]).startswith("aes-"):
                obj.destroy()
                gone += 1
        return gone


def follow(client: httpx.Client, job: str) -> dict[str, Any]:
    """The job's end, as the portal's job page learns it: its Server-Sent Events."""
    last: dict[str, Any] = {}
    with client.stream("GET", f"/api/v1/jobs/{job}/events") as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: {}":
                last = json.loads(line.removeprefix("data: "))
    if last.get("state") != "done":
        raise SystemExit(f"job {job} ended {last.get('state')}: {last.get('error')}")
    return last


def run(args: argparse.Namespace, work: Path, figures: dict[str, float]) -> None:
    farm = SoftHsmFarm(work / "softhsm")
    token = farm.init_token("bench", PIN, SO_PIN)
    farm.activate()
    env = {**farm.env, ENV_KDF_MEMORY: "8", ENV_KDF_TIME: "1", ENV_KDF_FLOOR: "m=8,t=1"}
    os.environ.update({ENV_KDF_MEMORY: "8", ENV_KDF_TIME: "1", ENV_KDF_FLOOR: "m=8,t=1"})
    pin_file = work / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    password_file = work / "admin"
    password_file.write_text(ADMIN_PASSWORD + "\n")
    password_file.chmod(0o600)
    hsm = Hsm(farm.module)
    with Emulator(work / "drives", count=DRIVES, heap="96K", backoff_ms=0) as emulator:
        ports = ",".join(emulator.ports)
        with hsm.open(token.slot_id, PIN) as session:
            for i in range(args.aes):
                session.session.generate_key(
                    KeyType.AES,
                    256,
                    label=f"aes-{i:05d}",
                    id=i.to_bytes(4, "big"),
                    store=True,
                    template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True},
                )
            phrases = Passphrases(
                entries={
                    d.serial: f"custodian {d.serial} keeps the lamp lit" for d in emulator.drives
                },
                warn=None,
            )
            with DriveGroup(emulator.ports) as group:
                create_domain(session, group.drives, phrases)

        state = work / "state"
        sealkeep(
            env,
            "serve",
            "init",
            "--state",
            str(state),
            "--admin",
            "bench",
            "--password-file",
            str(password_file),
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sealkeep",
                "serve",
                "--state",
                str(state),
                "--http",
                "--listen",
                "127.0.0.1:0",
                "--drives",
                ports,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip().removeprefix("sealkeep serve: ")
            client = httpx.Client(base_url=url, timeout=600)
            for _ in range(300):
                try:
                    reply = client.post(
                        "/api/v1/login", json={"user": "bench", "password": ADMIN_PASSWORD}
                    )
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            client.headers["X-CSRF-Token"] = reply.json()["csrf"]
            slot = str(token.slot_id)
            cli_backups: list[float] = []
            api_backups: list[float] = []
            cli_restores: list[float] = []
            api_restores: list[float] = []
            set_id = ""
            for _ in range(args.runs):
                start = time.perf_counter()
                made = json.loads(
                    sealkeep(
                        env,
                        "backup",
                        "--slot",
                        slot,
                        "--drives",
                        ports,
                        "--pin-file",
                        str(pin_file),
                        "--json",
                    ).stdout
                )
                cli_backups.append(time.perf_counter() - start)
                start = time.perf_counter()
                job = client.post(
                    "/api/v1/backups",
                    json={"slot": token.slot_id, "so_id": "bench", "password": PIN},
                ).json()["job"]
                set_id = follow(client, job)["result"]["set_id"]
                api_backups.append(time.perf_counter() - start)
                keys = made["keys"]

                delete_aes(hsm, token.slot_id)
                start = time.perf_counter()
                sealkeep(
                    env,
                    "restore",
                    "--set",
                    set_id,
                    "--slot",
                    slot,
                    "--drives",
                    ports,
                    "--pin-file",
                    str(pin_file),
                    "--json",
                )
                cli_restores.append(time.perf_counter() - start)
                delete_aes(hsm, token.slot_id)
                start = time.perf_counter()
                job = client.post(
                    "/api/v1/restores",
                    json={
                        "set_id": set_id,
                        "slot": token.slot_id,
                        "so_id": "bench",
                        "password": PIN,
                    },
                ).json()["job"]
                follow(client, job)
                api_restores.append(time.perf_counter() - start)
            figures["objects_per_set"] = keys
            figures["backup_cli_s"] = statistics.median(cli_backups)
            figures["backup_api_s"] = statistics.median(api_backups)
            figures["backup_api_to_cli"] = figures["backup_api_s"] / figures["backup_cli_s"]
            figures["restore_cli_s"] = statistics.median(cli_restores)
            figures["restore_api_s"] = statistics.median(api_restores)
            figures["restore_api_to_cli"] = figures["restore_api_s"] / figures["restore_cli_s"]

            conn = sqlite3.connect(state / "sealkeep.db")
            now = int(time.time())
            conn.executemany(
                "INSERT OR IGNORE INTO sets (set_id, created, label, slot, token, domain_id, "
                "keys, bytes, drives, verified, seen) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        f"{i:032x}",
                        now - i * 3600,
                        f"nightly-{i}",
                        token.slot_id,
                        "bench",
                        "00" * 16,
                        keys,
                        100_000,
                        json.dumps([d.serial for d in emulator.drives]),
                        json.dumps([d.serial for d in emulator.drives]),
                        time.time(),
                    )
                    for i in range(args.sets)
                ],
            )
            conn.commit()
            conn.close()
            renders: list[float] = []
            for _ in range(args.renders):
                start = time.perf_counter()
                page = client.get("/")
                renders.append(time.perf_counter() - start)
                if page.status_code != 200 or "Latest sets" not in page.text:
                    raise SystemExit(f"the dashboard answered {page.status_code}")
            renders.sort()
            figures["dashboard_p50_ms"] = 1000 * renders[len(renders) // 2]
            figures["dashboard_p99_ms"] = (
                1000 * renders[min(len(renders) - 1, int(len(renders) * 0.99))]
            )
            client.close()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aes", type=int, default=500, help="AES-256 keys in the slot")
    parser.add_argument("--runs", type=int, default=3, help="backups and restores each way")
    parser.add_argument("--sets", type=int, default=1000, help="sets in the catalogue")
    parser.add_argument("--renders", type=int, default=100, help="dashboard renders timed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="sealkeep-bench-service-"))
    try:
        run(args, work, figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"slot: {args.aes} AES-256 keys; {DRIVES} drives; {args.sets} sets catalogued")
        for key, value in figures.items():
            print(f"{key:24} {value:12.3f}  {GOALS.get(key, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
