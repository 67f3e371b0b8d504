"""Scenario 6, quorum: for n = 3, 5 and 7 drives, every subset of drives at the threshold
rebuilds the domain secret (checked against the domain id) and every non-empty subset below
it fails with a clear error (recovering below the threshold would count as lost).

With ``trials`` at least the number of subsets (129), every subset is tried; fewer trials
try a random sample that still covers each n at and below the threshold."""

from __future__ import annotations

import itertools
from functools import partial

from sealkeep.domain import DriveGroup, create_domain
from sealkeep.emulator import Emulator
from sealkeep.hsm import domain_id_from_secret
from sealkeep.pins import Passphrases
from sealkeep.recovery import gather_shares, rebuild

from . import hsmfarm
from .common import Ctx, Tally, guarded

SIZES = (3, 5, 7)


def run(ctx: Ctx, trials: int) -> Tally:
    tally = Tally("quorum")
    cases: list[tuple[int, tuple[int, ...], bool]] = []
    for n in SIZES:
        k = n // 2 + 1
        cases += [(n, s, True) for s in itertools.combinations(range(n), k)]
        for j in range(1, k):
            cases += [(n, s, False) for s in itertools.combinations(range(n), j)]
    ctx.rng.shuffle(cases)
    if trials < len(cases):
        # One of each kind per n first, then the rest of the shuffled list.
        first: list[tuple[int, tuple[int, ...], bool]] = []
        for n in SIZES:
            for good in (True, False):
                first.append(next(c for c in cases if c[0] == n and c[2] == good))
        rest = [c for c in cases if c not in first]
        cases = (first + rest)[:trials]
    else:
        cases = [cases[i % len(cases)] for i in range(trials)]
    made = hsmfarm.farm(ctx)
    emulators: dict[int, tuple[Emulator, bytes, Passphrases]] = {}
    try:
        for n, subset, good in cases:
            with tally.trial(f"quorum n={n} {subset}"):
                if n not in emulators:
                    emulator = ctx.emulator(f"quorum-{n}", n)
                    phrases = {
                        d.serial: f"keeper {d.serial} amber moor 19" for d in emulator.drives
                    }
                    passes = Passphrases(entries=phrases)
                    emulators[n] = (emulator, b"", passes)
                    with made.open(f"camp-q{n}") as session, DriveGroup(emulator.ports) as group:
                        domain_id = create_domain(session, group.drives, passes).domain_id
                    emulators[n] = (emulator, domain_id, passes)
                emulator, domain_id, passes = emulators[n]
                ports = [emulator.ports[i] for i in subset]
                tally.faults += n - len(subset)  # drives withheld
                outcome = guarded(partial(_recover, ports, passes, domain_id), 120)
                what = f"n={n}, drives {list(subset)}"
                if outcome.unclear is not None:
                    tally.unclear_failure(f"{what}: {outcome.unclear}")
                elif good and outcome.error is not None:
                    tally.unclear_failure(f"{what}: at the threshold but failed: {outcome.error}")
                elif good:
                    tally.ok += 1
                    if outcome.value != domain_id:
                        tally.loss(f"{what}: rebuilt a secret that is not the domain's")
                elif outcome.error is not None:
                    tally.clear_failure(outcome.error)
                else:
                    tally.loss(f"{what}: rebuilt the domain below the threshold")
    finally:
        for emulator, _, _ in emulators.values():
            emulator.stop()
    return tally


def _recover(ports: list[str], passes: Passphrases, domain_id: bytes) -> bytes:
    with DriveGroup(ports, timeout=3.0) as group:
        gathered = gather_shares(group.drives, passes, domain_id)
        rebuilt = rebuild(gathered)
        try:
            return domain_id_from_secret(rebuilt.secret)
        finally:
            rebuilt.wipe()
