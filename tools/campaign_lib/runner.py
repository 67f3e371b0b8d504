"""Run the scenarios, print a table per scenario and the JSON summary line."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .common import KDF_ENV, Ctx, Tally, campaign_root

Scenario = Callable[[Ctx, int], Tally]

ORDER = ("link", "crash", "malformed", "hostile_host", "hostile_drive", "quorum")
# Scenarios run only when named with --only: a firmware trial takes some seconds (an update
# restarts the drive three times), which would triple the default run.
EXTRA = ("firmware",)


def scenarios() -> dict[str, Scenario]:
    from . import crash, firmware, hostile_drive, hostile_host, link, malformed, quorum

    return {
        "link": link.run,
        "crash": crash.run,
        "malformed": malformed.run,
        "hostile_host": hostile_host.run,
        "hostile_drive": hostile_drive.run,
        "quorum": quorum.run,
        "firmware": firmware.run,
    }


def table(tally: Tally, out: TextIO) -> None:
    heads = [
        "TRIALS",
        "FAULTS",
        "OK",
        "FAILED CLEANLY",
        "FAILED UNCLEARLY",
        "LOST/ALTERED",
        "SECONDS",
    ]
    row = [
        tally.trials,
        tally.faults,
        tally.ok,
        tally.clean,
        tally.unclear,
        tally.lost,
        f"{tally.seconds:.1f}",
    ]
    widths = [max(len(h), len(str(v))) for h, v in zip(heads, row, strict=True)]
    print(f"== scenario {tally.name}", file=out)
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)), file=out)
    print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)), file=out)
    if tally.errors:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(tally.errors.items()))
        print(f"   clear errors: {kinds}", file=out)
    if tally.half_resets:
        print(
            f"   LOST: {tally.half_resets} interrupted factory reset(s) left the drive owned "
            "with part of its store erased",
            file=out,
        )
    for note in tally.notes:
        print(f"   {note}", file=out)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="campaign",
        description=(
            "Fault, malformed-input and attack campaign against emulated drives and SoftHSM2 "
            "tokens: a table per scenario, then one JSON line with the counts."
        ),
    )
    parser.add_argument("--trials", type=int, default=20, metavar="N", help="trials per scenario")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="random seed")
    parser.add_argument("--json", action="store_true", help="stdout is only the JSON line")
    parser.add_argument(
        "--only",
        action="append",
        choices=ORDER + EXTRA,
        help=f"run only this scenario (repeatable); never run unless named: {', '.join(EXTRA)}",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    # Cheap Argon2id for the custodians this campaign creates (it tests faults, not the KDF).
    os.environ.update(KDF_ENV)
    human = sys.stderr if args.json else sys.stdout
    chosen = [s for s in ORDER + EXTRA if s in args.only] if args.only else list(ORDER)
    print(f"campaign: seed {seed}, {args.trials} trial(s) per scenario", file=human, flush=True)
    runs = scenarios()
    results: dict[str, Tally] = {}
    from .hsmfarm import close_farm

    with campaign_root(args.keep) as root:
        if args.keep:
            print(f"campaign: working folder {root}", file=human)
        rng = random.Random(seed)
        ctx = Ctx(root, rng, seed, lambda text: print(text, file=sys.stderr, flush=True))
        try:
            for name in chosen:
                ctx.rng = random.Random(rng.getrandbits(64))
                started = time.monotonic()
                try:
                    tally = runs[name](ctx, args.trials)
                except Exception as exc:  # the scenario itself broke: unclear
                    tally = Tally(name)
                    tally.unclear_failure(f"scenario aborted: {type(exc).__name__}: {exc}")
                tally.seconds = time.monotonic() - started
                results[name] = tally
                table(tally, human)
        finally:
            close_farm(ctx)
    summary = {
        "seed": seed,
        "trials": args.trials,
        "scenarios": {name: t.summary() for name, t in results.items()},
    }
    print(json.dumps(summary), flush=True)
    bad = any(t.lost or t.unclear for t in results.values())
    return 1 if bad else 0
