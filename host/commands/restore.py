"""``sealkeep restore --set ID --slot M``: restore a backup set into a slot."""

from __future__ import annotations

import argparse

from .. import ui
from ..hsm import class_name, key_type_name
from ..restore import RestoreResult, restore_failure, restore_set, why
from . import add_json_option
from .domain import add_drive_options, note, open_drives
from .slots import add_slot_options, load_module, open_slot

ORDER = 43


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore a backup set (or some of its keys) into a slot holding the domain key",
        description=(
            "Read the set from the first healthy drive (falling back to the next on any "
            "error), open it in the HSM with the domain key, and recreate every key (or those "
            "with the labels given) with its attributes in the slot. An object already there "
            "(same class, label and id) is compared with the set's by the same proofs: the "
            "same is left alone, another is reported as present but different (exit 8) and "
            "--replace puts the set's in its place. Every restored key is proven by use, and "
            "attributes the HSM did not keep are named. The slot must hold the backup domain "
            "key: on a new HSM, run `sealkeep domain recover` first."
        ),
    )
    p.add_argument(
        "--set",
        required=True,
        metavar="SET",
        help="the set: its id (a unique prefix of 4+ hex digits will do), `latest`, or a "
        "label (the newest set with it)",
    )
    add_slot_options(p)
    p.add_argument(
        "--key",
        action="append",
        metavar="LABEL",
        help="restore only the objects with this label (repeat for several)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help=(
            "where the slot holds another object with the same class, label and id (its "
            "material differs from the set's), destroy it and restore the set's in its place"
        ),
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="open and authenticate the set, say what would be restored, replaced or left "
        "alone, and change nothing",
    )
    add_drive_options(p)
    add_json_option(p)
    p.set_defaults(run=run)


def print_result(result: RestoreResult) -> None:
    rows = []
    for o in result.outcomes:
        proof = o.proof.method if o.proof is not None else "-"
        status = o.status if o.ok else f"{o.status}: {why(o)}"
        rows.append(
            [
                class_name(o.object_class),
                key_type_name(o.key_type) if o.key_type is not None else "-",
                o.label or "-",
                o.id.hex() or "-",
                proof if o.status in ("restored", "replaced") else "-",
                status,
            ]
        )
    ui.print_table(["CLASS", "TYPE", "LABEL", "ID", "PROOF", "STATUS"], rows)
    label = f" {result.label!r}" if result.label else ""
    if result.dry_run:
        print(
            f"dry run: set {result.set_id}{label} from drive {result.source}, authenticated; "
            f"into slot {result.slot_id} (token {result.token!r}) "
            f"{result.count('would restore')} would be restored, "
            f"{result.count('would replace')} replaced, "
            f"{result.count('present')} are already present, "
            f"{result.count('different')} present but different (--replace replaces them); "
            "nothing was changed"
        )
        return
    print(
        f"set {result.set_id}{label} from drive {result.source} into slot {result.slot_id} "
        f"(token {result.token!r}): {result.count('restored')} restored and proven, "
        + (f"{result.count('replaced')} replaced, " if result.count("replaced") else "")
        + f"{result.count('present')} already present, "
        + (
            f"{result.count('different')} present but different, "
            if result.count("different")
            else ""
        )
        + f"{sum(1 for o in result.failed if o.status != 'different')} failed; "
        f"{result.seconds:.2f} s"
    )
    changed = [o for o in result.outcomes if o.status == "restored" and o.not_taken]
    if changed:
        print("attributes the target HSM did not keep as the set records them:")
        for o in changed:
            print(
                f"  {o.label or '-'} ({class_name(o.object_class)}, id {o.id.hex() or '-'}): "
                + ", ".join(o.not_taken)
            )
    if result.skipped_at_backup:
        names = ", ".join(f"{s.label or s.id.hex()} ({s.reason})" for s in result.skipped_at_backup)
        print(f"not in the set (left out at backup): {names}")


def run(args: argparse.Namespace) -> int:
    hsm = load_module(args)
    with (
        open_slot(hsm, args.slot, args) as session,
        open_drives(args) as group,
        # A key takes ~10 ms to unwrap and prove on a file-backed token: minutes for a slot.
        ui.Progress("restoring", noun="objects") as progress,
    ):
        result = restore_set(
            session,
            group.drives,
            args.set,
            args.key,
            progress=progress,
            note=note,
            replace=args.replace,
            dry_run=args.dry_run,
        )
    for attempt in result.attempts:
        note(f"warning: {attempt.drive}: {attempt.reason}")
    if args.json:
        ui.print_json(result.to_json())
    else:
        print_result(result)
    if not result.ok:
        raise restore_failure(result)
    return 0
