"""Scenario 2, crashes: power cuts of the drive at random points of put (open, data,
commit), delete, claim and factory reset, and the host killed mid-backup and mid-restore.
A put adds a new object in an owner session (an owner never replaces one); a delete and a
factory reset run in a custodian session, the only one allowed to erase.

After each drive crash the store must be consistent (every listed object verifies on the
drive and reads back byte-exact, no half object is visible, nothing else changed), a
reported success must be reflected, and the operation must complete when repeated. After
each host kill, the drives hold only whole sets and a restore returns every key, exactly.
A factory reset cut short leaves the drive owned with every object, or blank and empty.

Power cuts during a firmware update are the firmware scenario's (campaign_lib/firmware.py).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sealkeep.backupset import backup
from sealkeep.client import DriveClient, Role
from sealkeep.domain import DriveGroup, create_domain
from sealkeep.emulator import Emulator
from sealkeep.errors import ObjectExists, ObjectNotFound, SealkeepError
from sealkeep.pins import Passphrases
from sealkeep.restore import restore_set

from . import hsmfarm
from .common import (
    PYTHON,
    Creds,
    Ctx,
    Outcome,
    Tally,
    claim,
    client_for,
    close_quietly,
    guarded,
    new_creds,
    python_env,
)

NAMES = [f"crash-{i}" for i in range(4)]
TIMEOUT = 1.0
OP_LIMIT = 60.0
HOST_EVERY = 8  # every 8th trial kills the host instead of a drive


@dataclass
class DriveState:
    creds: Creds
    owned: bool = False
    objects: dict[str, bytes] = field(default_factory=dict)


def run(ctx: Ctx, trials: int) -> Tally:
    tally = Tally("crash")
    emulator = ctx.emulator("crash", 1)
    host: HostRig | None = None
    try:
        state = DriveState(new_creds(ctx.rng))
        for t in range(trials):
            if t % HOST_EVERY == 1:  # trial 1 already, so that a short run kills a host too
                with tally.trial(f"crash trial {t} (host)"):
                    if host is None:
                        host = HostRig.make(ctx)
                    host.trial(ctx, tally, backup_kill=(t // HOST_EVERY) % 2 == 0)
                continue
            with tally.trial(f"crash trial {t}"):
                _drive_trial(ctx, tally, emulator, state)
    finally:
        emulator.stop()
        if host is not None:
            host.emulator.stop()
    return tally


# --- drive crashes ----------------------------------------------------------------------------


def _session(emulator: Emulator, state: DriveState, timeout: float = TIMEOUT) -> DriveClient:
    client = client_for(emulator, 0, timeout)
    try:
        client.authenticate(Role.OWNER, state.creds.owner)
    except BaseException:
        close_quietly(client)
        raise
    return client


def _drive_trial(ctx: Ctx, tally: Tally, emulator: Emulator, state: DriveState) -> None:
    rng = ctx.rng
    if not state.owned:
        op = "claim"
    else:
        op = rng.choices(["put", "put-large", "delete", "reset"], [4, 3, 2, 1])[0]
        free = [n for n in NAMES if n not in state.objects]
        if op == "delete" and not state.objects:
            op = "put"
        elif op.startswith("put") and not free:
            op = "delete"  # an owner adds objects, never replaces one: make room
    # A put adds a new object; only a custodian session deletes or resets.
    name = rng.choice([n for n in NAMES if n not in state.objects] or NAMES)
    size = rng.choice([0, 500, 5000]) if op == "put" else rng.randrange(30_000, 300_000)
    data = rng.randbytes(size)
    client = client_for(emulator, 0, TIMEOUT)
    action: Callable[[], Any]
    if op == "claim":
        window = 0.0015

        def action() -> None:
            claim(client, state.creds)
    else:
        if op.startswith("put"):
            client.authenticate(Role.OWNER, state.creds.owner)
        else:
            client.authenticate(Role.CUSTODIAN, state.creds.custodian)
        if op.startswith("put"):
            window = 0.002 if op == "put" else 0.012

            def action() -> None:
                client.put(name, data)
        elif op == "delete":
            name = rng.choice(sorted(state.objects))
            window = 0.0015

            def action() -> None:
                client.delete(name)
        else:
            window = 0.0015
            action = client.factory_reset
    delay = rng.uniform(0.0, window)

    def cut() -> None:
        time.sleep(delay)
        emulator.kill(0, restart=True)

    killer = threading.Thread(target=cut)
    killer.daemon = True
    killer.start()
    outcome = guarded(action, OP_LIMIT)
    killer.join(30)
    close_quietly(client)
    tally.faults += 1
    what = f"{op} {name} with the power cut after {delay * 1000:.0f} ms"
    _count(tally, outcome, what)
    if killer.is_alive():
        tally.unclear_failure(f"{what}: the drive did not come back")
        return
    _check_after(tally, emulator, state, op, name, data, outcome.succeeded, what)
    _repeat(tally, emulator, state, op, name, data, what)


def _count(tally: Tally, outcome: Outcome, what: str) -> None:
    if outcome.unclear is not None:
        tally.unclear_failure(f"{what}: {outcome.unclear}")
    elif outcome.error is not None:
        tally.clear_failure(outcome.error)
    else:
        tally.ok += 1


def _store(tally: Tally, client: DriveClient, what: str) -> dict[str, bytes]:
    """Every listed object, verified on the drive and read back."""
    held: dict[str, bytes] = {}
    for info in client.list():
        check = client.verify(info.name)
        data = client.get(info.name)
        if not check.intact or check.size != len(data) or check.size != info.size:
            tally.loss(f"{what}: {info.name} is listed but does not verify (half object)")
        held[info.name] = data
    return held


def _check_after(
    tally: Tally,
    emulator: Emulator,
    state: DriveState,
    op: str,
    name: str,
    data: bytes,
    succeeded: bool,
    what: str,
) -> None:
    client = client_for(emulator, 0, 3.0)
    try:
        hello = client.hello()
        if op in ("claim", "reset"):
            if op == "claim" and succeeded and hello.blank:
                tally.loss(f"{what}: claim reported success, the drive is blank")
            if op == "reset" and succeeded and not hello.blank:
                tally.loss(f"{what}: factory reset reported success, the drive is still owned")
            if hello.blank:
                state.owned = False
                state.objects = {}
                return
            if op == "claim":
                state.owned = True
                state.objects = {}
        elif hello.blank:
            tally.loss(f"{what}: the drive came back blank")
            state.owned = False
            state.objects = {}
            return
        try:
            client.authenticate(Role.OWNER, state.creds.owner)
        except SealkeepError as exc:
            tally.loss(f"{what}: the owner can no longer log in ({exc})")
            return
        held = _store(tally, client, what)
    finally:
        close_quietly(client)
    expected = dict(state.objects)
    allowed: dict[str, list[bytes | None]] = {n: [d] for n, d in expected.items()}
    if op.startswith("put"):
        allowed[name] = [data] if succeeded else [expected.get(name), data]
    elif op == "delete":
        allowed[name] = [None] if succeeded else [expected.get(name), None]
    elif op == "reset" and set(held) != set(expected):
        # A reset cut short must leave the drive untouched or blank, never owned with
        # part of its store erased (the drive marks the reset first and finishes at boot).
        tally.half_resets += 1
    for n in set(allowed) | set(held):
        got = held.get(n)
        if got not in allowed.get(n, [None]):
            tally.loss(f"{what}: {n} is {'missing' if got is None else 'altered'} afterwards")
    state.objects = held


def _repeat(
    tally: Tally,
    emulator: Emulator,
    state: DriveState,
    op: str,
    name: str,
    data: bytes,
    what: str,
) -> None:
    """The interrupted operation, repeated over a healthy link, must complete."""
    for _ in range(3):
        try:
            client = client_for(emulator, 0, 3.0)
            try:
                if op == "claim":
                    if client.hello().blank:
                        claim(client, state.creds)
                    state.owned = True
                    state.objects = {}
                    return
                if op == "reset" and client.hello().blank:
                    state.owned = False
                    state.objects = {}
                    return
                if op.startswith("put"):
                    client.authenticate(Role.OWNER, state.creds.owner)
                    try:
                        client.put(name, data)
                    except ObjectExists:
                        pass  # committed before the cut: the check below reads it back
                    if client.get(name) != data:
                        tally.loss(f"{what}: repeated put reads back altered")
                    state.objects[name] = data
                elif op == "delete":
                    client.authenticate(Role.CUSTODIAN, state.creds.custodian)
                    try:
                        client.delete(name)
                    except ObjectNotFound:
                        pass
                    state.objects.pop(name, None)
                else:
                    client.authenticate(Role.CUSTODIAN, state.creds.custodian)
                    client.factory_reset()
                    state.owned = False
                    state.objects = {}
                return
            finally:
                close_quietly(client)
        except SealkeepError as exc:
            last = exc
    tally.unclear_failure(f"{what}: repeating it failed three times ({last})")


# --- host kills -------------------------------------------------------------------------------


@dataclass
class HostRig:
    """Three drives of a domain held by a SoftHSM2 slot with sample keys, one set on them."""

    emulator: Emulator
    farm: hsmfarm.Farm
    label: str
    set_id: str
    reference: dict[str, str]
    durations: dict[str, float] = field(default_factory=dict)

    @classmethod
    def make(cls, ctx: Ctx) -> HostRig:
        made = hsmfarm.farm(ctx)
        label = "camp-crash"
        emulator = ctx.emulator("crash-domain", 3)
        try:
            phrases = {d.serial: f"custodian {d.serial} quiet harbour 42" for d in emulator.drives}
            passes = Passphrases(entries=phrases)
            with made.open(label) as session, DriveGroup(emulator.ports) as group:
                create_domain(session, group.drives, passes)
                hsmfarm.make_sample_keys(session)
                reference = hsmfarm.fingerprints(session)
                result = backup(session, group.drives, label="base")
        except BaseException:
            emulator.stop()
            raise
        return cls(emulator, made, label, result.set_id.hex(), reference)

    def cli(self, *args: str) -> list[str]:
        drives = ",".join(self.emulator.ports)
        slot = str(self.farm.slots[self.label])
        pin = str(self.farm.pin_file())
        return [
            PYTHON,
            "-m",
            "sealkeep",
            *args,
            "--slot",
            slot,
            "--drives",
            drives,
            "--pin-file",
            pin,
            "--timeout",
            "3",
        ]

    def trial(self, ctx: Ctx, tally: Tally, backup_kill: bool) -> None:
        rng = ctx.rng
        if backup_kill:
            cmd = self.cli("backup", "--label", "campaign")
        else:
            with self.farm.open(self.label) as session:
                hsmfarm.delete_sample_keys(session)
            cmd = self.cli("restore", "--set", self.set_id)
        kind = "backup" if backup_kill else "restore"
        if kind not in self.durations:
            # One run unkilled first: how long the command takes, to kill it within that.
            started = time.monotonic()
            done = subprocess.run(
                cmd, env=python_env(self.farm.env), capture_output=True, timeout=120, check=False
            )
            self.durations[kind] = time.monotonic() - started
            if done.returncode != 0:
                tally.unclear_failure(f"{kind} fails without faults: {done.stderr[-300:]!r}")
            if not backup_kill:
                with self.farm.open(self.label) as session:
                    hsmfarm.delete_sample_keys(session)
        delay = rng.uniform(0.0, self.durations[kind] * 1.1)
        what = f"{'backup' if backup_kill else 'restore'} killed after {delay:.2f} s"
        proc = subprocess.Popen(
            cmd,
            env=python_env(self.farm.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            proc.wait(delay)
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            finished = False
        _, err = proc.communicate(timeout=30)
        tally.faults += 0 if finished else 1
        if finished and proc.returncode != 0:
            text = err.decode(errors="replace")
            if "Traceback" in text:
                tally.unclear_failure(f"{what}: the command failed with a traceback: {text[-300:]}")
            else:
                tally.clean += 1
        elif finished:
            tally.ok += 1
        else:
            tally.clean += 1  # it was killed: the check below says whether that cost anything
        self.check(tally, what)

    def check(self, tally: Tally, what: str) -> None:
        with self.farm.open(self.label) as session, DriveGroup(self.emulator.ports) as group:
            # Every set a drive lists is whole: it verifies on the drive.
            for drive in group.drives:
                client, hello = drive.use()
                client.authenticate(Role.OWNER, session.owner_credential(hello.serial))
                for info in client.list("set-"):
                    if not client.verify(info.name).intact:
                        tally.loss(f"{what}: drive {hello.serial} lists a half set {info.name}")
                client.end_session()
            hsmfarm.delete_sample_keys(session)
            result = restore_set(session, group.drives, self.set_id)
            got = hsmfarm.fingerprints(session, self.reference)
            if not result.ok or got != self.reference:
                tally.loss(f"{what}: the restore afterwards gave {got} (ok={result.ok})")
