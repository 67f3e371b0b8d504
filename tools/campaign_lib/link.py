"""Scenario 1, link faults: dropped, corrupted, duplicated and delayed bytes, and the cable
pulled mid-frame, through the emulator's relay, while objects are put and read (each trial
is OPS_PER_TRIAL operations, each under a fault of its own).

Every put or get either completes byte-exact (checked with SHA-256 over a clean link
afterwards) or fails with a SealkeepError. A failed put leaves the old object (or none)
in place, never a mix; a get that reports success returns exactly what was stored. A put
adds a new object (an owner never replaces one); when every name is taken, a custodian
session deletes one first, over a clean link.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from sealkeep.client import Role
from sealkeep.emulator import Emulator
from sealkeep.relay import Direction, Fault, FaultKind, RelayPort

from .common import (
    Ctx,
    Tally,
    client_for,
    close_quietly,
    guarded,
    new_creds,
    owner_session,
    sha,
)

NAMES = [f"obj-{i}" for i in range(6)]
SIZES = [0, 1, 300, 3000, 9000, 24000, 100_000]
OPS_PER_TRIAL = 2
OP_LIMIT = 60.0
TIMEOUT = 1.0


def _damage(stats: dict[str, Any]) -> int:
    return sum(s.dropped + s.corrupted + s.duplicated for s in stats.values())


def _arm(ctx: Ctx, port: RelayPort, size: int) -> tuple[str, list[threading.Timer]]:
    """Arm a random fault; returns its description and timers to cancel afterwards."""
    rng = ctx.rng
    kind = rng.choice(["drop", "corrupt", "duplicate", "delay", "unplug", "mixed"])
    timers: list[threading.Timer] = []
    direction: Direction = rng.choice(["h2d", "d2h", "both"])
    kinds = [kind] if kind != "mixed" else rng.sample(["drop", "corrupt", "duplicate"], 2)
    described: list[str] = []
    for k in kinds:
        if k in ("drop", "corrupt", "duplicate"):
            if rng.random() < 0.5:
                at = rng.randrange(0, max(1, size + 200))
                n = rng.randint(1, 3)
                port.add_fault(direction, _fault(k, None, at, n))
                described.append(f"{k} {n} byte(s) at {at} {direction}")
            else:
                p = rng.choice([1e-4, 5e-4, 2e-3, 1e-2])
                count = rng.randint(1, 6)
                port.add_fault(direction, _fault(k, p, None, 1, count))
                described.append(f"{k} p={p} up to {count} {direction}")
    if kind == "delay":
        seconds = rng.choice([0.01, 0.1, 0.4, 0.9, 1.5])
        port.set_delay(seconds, direction)
        off = threading.Timer(rng.uniform(0.1, 2.0), port.set_delay, (0.0, direction))
        timers.append(off)
        described.append(f"delay {seconds} s {direction}")
    if kind == "unplug":
        when = rng.uniform(0.0, 0.2)
        duration = rng.choice([0.02, 0.2, 0.8, 1.5, 3.0])
        pull = threading.Timer(when, port.unplug, (duration, direction))
        timers.append(pull)
        described.append(f"cable pulled at {when:.3f} s for {duration} s {direction}")
    for timer in timers:
        timer.daemon = True
        timer.start()
    return "; ".join(described), timers


def _fault(kind: str, p: float | None, at: int | None, n: int, count: int | None = None) -> Fault:
    k = cast(FaultKind, kind)
    if at is not None:
        return Fault(k, at=at, length=n)
    return Fault(k, probability=p or 0.0, count=count)


def run(ctx: Ctx, trials: int) -> Tally:
    tally = Tally("link")
    creds = new_creds(ctx.rng)
    emulator = ctx.emulator("link", 1)
    try:
        model: dict[str, bytes] = {}
        for t in range(trials):
            with tally.trial(f"link trial {t}"):
                for _ in range(OPS_PER_TRIAL):
                    _trial(ctx, tally, emulator, creds, model)
    finally:
        emulator.stop()
    return tally


def _make_room(ctx: Ctx, emulator: Emulator, creds: Any, model: dict[str, bytes]) -> str:
    """Delete one stored object in a custodian session; returns its name."""
    name = ctx.rng.choice(sorted(model))
    client = client_for(emulator, 0, 3.0)
    try:
        client.authenticate(Role.CUSTODIAN, creds.custodian)
        client.delete(name)
        client.end_session()
    finally:
        close_quietly(client)
    model.pop(name)
    return name


def _trial(ctx: Ctx, tally: Tally, emulator: Emulator, creds: Any, model: dict[str, bytes]) -> None:
    rng = ctx.rng
    port = emulator.link(0)
    port.clear_faults()
    reading = bool(model) and rng.random() < 0.35
    free = [n for n in NAMES if n not in model]
    if not reading and not free:
        free = [_make_room(ctx, emulator, creds, model)]
    client = owner_session(emulator, 0, creds, TIMEOUT)
    try:
        name = rng.choice(sorted(model)) if reading else rng.choice(free)
        data = model[name] if reading else rng.randbytes(rng.choice(SIZES))
        before = port.stats()
        what, timers = _arm(ctx, port, len(data))
        events = len(timers)
        if reading:
            outcome = guarded(lambda: client.get(name), OP_LIMIT)
        else:
            outcome = guarded(lambda: client.put(name, data), OP_LIMIT)
        for timer in timers:
            timer.cancel()
        port.clear_faults()
        tally.faults += events + _damage(port.stats()) - _damage(before)
    finally:
        close_quietly(client)
    op = f"{'get' if reading else 'put'} {name} ({len(data)} B) under [{what}]"
    if outcome.unclear is not None:
        tally.unclear_failure(f"{op}: {outcome.unclear}")
    elif outcome.error is not None:
        tally.clear_failure(outcome.error)
    else:
        tally.ok += 1
    if reading and outcome.succeeded and sha(outcome.value) != sha(data):
        tally.loss(f"{op}: get returned altered data without an error")
    # What the drive holds now, over a clean link.
    checker = owner_session(emulator, 0, creds, 3.0)
    try:
        held: bytes | None
        if name in {o.name for o in checker.list()}:
            held = checker.get(name)
        else:
            held = None
    finally:
        close_quietly(checker)
    old = model.get(name)
    if reading or not outcome.succeeded:
        if held is None and old is not None:
            tally.loss(f"{op}: the object that was stored is gone")
        elif held is not None and held != old and (reading or held != data):
            tally.loss(f"{op}: the drive holds neither the old nor the new object")
    elif held != data:
        tally.loss(f"{op}: put reported success but the drive holds something else")
    if held is None:
        model.pop(name, None)
    else:
        model[name] = held
