"""``sealkeep verify --set ID``: check every drive's copy of a set without restoring it."""

from __future__ import annotations

import argparse

from .. import ui
from ..backupset import verify_failure, verify_set
from ..errors import EXIT_INCOMPLETE
from . import add_json_option
from .domain import add_drive_options, note, open_drives
from .sets import domain_session
from .slots import add_slot_options, load_module

ORDER = 42


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check every drive's copy of a set: digest on the drive, authenticity in the HSM",
        description=(
            "For every drive of the domain: the drive rehashes its copy of the set and the "
            "digest must match the one recorded at commit; then the copy is read and opened "
            "in the HSM (set key unwrapped with the domain key, manifest authenticated). "
            "Nothing is restored. Bad copies are named and the exit code is 6; drives of "
            "the domain that are not connected are named and the exit code is 8."
        ),
    )
    p.add_argument(
        "--set",
        required=True,
        metavar="SET",
        help="the set: its id (a unique prefix of 4+ hex digits will do), `latest`, or a "
        "label (the newest set with it)",
    )
    add_drive_options(p)
    add_slot_options(p, required=False)
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    hsm = load_module(args)
    with open_drives(args) as group:
        domain_id, session = domain_session(hsm, args, group, "verifying")
        with session:
            result = verify_set(session, group.drives, domain_id, args.set)
    for problem in result.problems:
        note(f"warning: {problem.drive}: {problem.reason}")
    if args.json:
        ui.print_json(result.to_json())
    else:
        header = result.header
        what = f" {header.label!r}, {header.key_count} object(s)" if header else ""
        print(f"set {result.set_id}{what}")
        rows = [[c.serial, c.address, c.status, c.detail] for c in result.copies]
        rows += [
            [serial, "-", "missing", "not connected: not checked"] for serial in result.missing
        ]
        ui.print_table(["SERIAL", "PORT", "COPY", "DETAIL"], rows)
        if result.ok and result.missing:
            print(
                f"incomplete: {len(result.missing)} drive(s) of the domain not checked "
                f"({', '.join(result.missing)}); connect them and verify again (exit code 8)"
            )
    if not result.ok:
        raise verify_failure(result)
    return EXIT_INCOMPLETE if result.incomplete else 0
