"""``sealkeep backup --slot N``: back up every key of a slot to the domain's drives."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any, cast

from .. import config, ui
from ..acknowledged import Acknowledgement, is_acknowledged
from ..backupset import BackupResult, backup
from ..errors import EXIT_INCOMPLETE
from ..hsm import ObjectInfo, class_name
from . import add_json_option
from .domain import add_drive_options, note, open_drives
from .slots import add_slot_options, load_module, open_slot

ORDER = 40


class DriveProgress(ui.Progress):
    """The progress line of a parallel write: how far each drive is."""

    def text(self) -> str:
        parts = sorted(self._parts.items())
        done = sum(d for _, (d, _) in parts)
        each = ", ".join(f"{key} {100 * d // t if t else 100}%" for key, (d, t) in parts if key)
        elapsed = max(self.clock() - self._started, 1e-9)
        rate = f", {ui.human_rate(done / elapsed)}" if done and elapsed > 0.2 else ""
        # The slowest drive decides when the write ends.
        fractions = [d / t for key, (d, t) in parts if key and t]
        slowest = min(fractions, default=0.0)
        if rate and 0 < slowest < 1:
            rate += f", {ui.human_duration(elapsed * (1 - slowest) / slowest)} left"
        return f"{self.label}: {each}{rate}"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "backup",
        help="back up every key of a slot to every drive of its backup domain",
        description=(
            "Check the slot and PIN, list what will and will not be backed up, wrap every key "
            "under a fresh set key inside the HSM, seal the manifest (every attribute that "
            "matters), check that the domain's drives are present, of this domain and have "
            "room, write the set to every drive in parallel, read back each drive's digest "
            "and print a summary. Public keys and certificates are included; keys that cannot "
            "be exported are listed, never skipped silently."
        ),
    )
    add_slot_options(p)
    add_drive_options(p)
    p.add_argument("--label", default="", metavar="TEXT", help="a label for the set")
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="write to the drives present even if some drives of the domain are missing",
    )
    add_json_option(p)
    p.set_defaults(run=run)


def report_plan(objects: list[ObjectInfo], human: bool) -> None:
    chosen = [o for o in objects if o.exportable and not o.is_domain_key]
    if human:
        counts = Counter(o.class_name for o in chosen)
        summary = ", ".join(f"{n} {name}{'s' if n > 1 else ''}" for name, n in counts.items())
        print(f"backing up {len(chosen)} object(s): {summary or 'none'}", flush=True)


def print_result(result: BackupResult, acknowledged: list[Acknowledgement]) -> None:
    label = f" {result.label!r}" if result.label else ""
    print(
        f"set {result.set_id.hex()}{label} from slot {result.slot_id} (token {result.token!r}): "
        f"{result.keys} object(s), {ui.human_size(result.size)}, written to "
        f"{len(result.drives)} drive(s) and read back in {result.seconds:.2f} s"
    )
    rows = [
        [d.serial, d.address, str(d.size), d.digest.hex()[:16], "yes" if d.verified else "NO"]
        for d in result.drives
    ]
    ui.print_table(["SERIAL", "PORT", "BYTES", "SHA-256", "VERIFIED"], rows)
    if result.missing:
        print(
            f"incomplete: no copy on drive(s) {', '.join(result.missing)} of the domain (not "
            "connected); back up again with them connected (exit code 8)"
        )
    known = [s for s in result.skipped if is_acknowledged(acknowledged, s.label, s.id)]
    unknown = [s for s in result.skipped if s not in known]
    if unknown:
        print(f"{len(unknown)} object(s) not backed up:")
        ui.print_table(
            ["CLASS", "LABEL", "ID", "WHY"],
            [
                [class_name(s.object_class), s.label or "-", s.id.hex() or "-", s.reason]
                for s in unknown
            ],
        )
    if known:
        print(
            f"{len(known)} acknowledged object(s) not backed up (sealkeep.toml): "
            "see `sealkeep keys`"
        )
    refused = [s for s in result.skipped if s.refused]
    if refused:
        print(
            f"incomplete: the HSM refused {len(refused)} object(s) it marks extractable; "
            "they are not in this set (exit code 8)"
        )


def result_document(result: BackupResult, acknowledged: list[Acknowledgement]) -> dict[str, Any]:
    """The JSON of a backup: every object left out, each marked acknowledged or not."""
    document = result.to_json()
    entries = cast(list[dict[str, object]], document["skipped"])
    for entry, skipped in zip(entries, result.skipped, strict=True):
        entry["acknowledged"] = is_acknowledged(acknowledged, skipped.label, skipped.id)
    return document


def run(args: argparse.Namespace) -> int:
    acknowledged = config.acknowledged()
    hsm = load_module(args)
    with open_slot(hsm, args.slot, args) as session, open_drives(args) as group:
        reachable = [d for d in group.drives if d.reachable]
        with DriveProgress(f"writing to {len(reachable)} drive(s)") as progress:

            def each(serial: str, done: int, total: int) -> None:
                progress.update(serial, done, total)

            result = backup(
                session,
                group.drives,
                label=args.label,
                allow_missing=args.allow_missing,
                on_plan=lambda objects: report_plan(objects, not args.json),
                progress=each,
                note=note,
            )
    sys.stderr.flush()
    if args.json:
        ui.print_json(result_document(result, acknowledged))
    else:
        print_result(result, acknowledged)
    return EXIT_INCOMPLETE if result.incomplete else 0
