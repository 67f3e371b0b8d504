"""``sealkeep prune``: delete a set from its drives, with their custodians."""

from __future__ import annotations

import argparse
import sys

from .. import ui
from ..domain import DriveGroup, Problem
from ..erase import EraseResult, prune_set
from ..errors import EXIT_UNREACHABLE
from ..pins import Passphrases
from . import add_json_option
from .domain import add_drive_options, add_passphrases_option, note, open_drives

ORDER = 75


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "prune",
        help="delete a backup set from its drives (needs each drive's custodian)",
        description=(
            "Delete a backup set from every drive given that holds it, to reclaim space. "
            "The host alone cannot: a drive lets its owner add sets, never delete one, so "
            "each drive's custodian opens it with their passphrase."
        ),
        epilog="example: sealkeep prune --set 3f2a --drives @/tmp/d/drives.json",
    )
    p.add_argument("--set", required=True, metavar="ID", help="the set id `sealkeep sets` shows")
    add_drive_options(p)
    add_passphrases_option(p)
    add_json_option(p)
    p.set_defaults(run=run)


def unreachable(group: DriveGroup) -> list[Problem]:
    return [Problem(d.name, "unreachable", EXIT_UNREACHABLE) for d in group.unreachable]


def report(result: EraseResult, as_json: bool) -> int:
    """Print what was erased; non-zero when a drive could not be."""
    if as_json:
        ui.print_json(result.to_json())
    else:
        print(f"{result.what} erased on {len(result.done)} drive(s)")
        for problem in result.problems:
            print(f"  {problem.drive}: {problem.reason}", file=sys.stderr)
        if result.problems:
            print(
                f"error: {result.what} not erased on {len(result.problems)} drive(s) "
                "(listed above)",
                file=sys.stderr,
            )
    return max((p.code for p in result.problems), default=0)


def run(args: argparse.Namespace) -> int:
    passphrases = Passphrases(args.passphrases)
    with open_drives(args) as group:
        result = prune_set(group.reachable, args.set, passphrases, note)
        result.problems.extend(unreachable(group))
    return report(result, args.json)
