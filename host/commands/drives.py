"""``sealkeep drives``: who each drive is, what state it is in and how much room it has."""

from __future__ import annotations

import argparse
import sys

from .. import ui
from ..drivespec import parse_drives
from ..drivestatus import survey
from ..errors import EXIT_UNREACHABLE
from . import add_drives_option, add_json_option, add_timeout_option

ORDER = 10


HEADERS = [
    "SERIAL",
    "PORT",
    "FIRMWARE",
    "STATE",
    "DOMAIN",
    "CAPACITY",
    "FREE",
    "WAIT",
    "ACTIVE",
    "INACTIVE",
]


from ..erase import reset_drives  # noqa: E402
from ..pins import InputError, Passphrases  # noqa: E402
from .domain import add_passphrases_option, note, open_drives  # noqa: E402
from .prune import report, unreachable  # noqa: E402


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "drives",
        help="list the drives: serial, firmware and its slots, state, domain, capacity, free space",
        description=(
            "Ask every drive who it is (HELLO, no credential needed) and show one row per "
            "drive. A drive that cannot be reached shows the reason, and the exit code is "
            f"{EXIT_UNREACHABLE}."
        ),
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["reset"],
        help=(
            "reset: factory reset the drives given (blank again, everything erased), with "
            "each drive's custodian; retires a drive or readies it for another domain"
        ),
    )
    add_drives_option(p)
    add_passphrases_option(p)
    add_json_option(p)
    add_timeout_option(p)
    p.set_defaults(run=run)


def run_reset(args: argparse.Namespace) -> int:
    if not args.drives:
        raise InputError("name the drives to reset with --drives: a reset erases everything")
    passphrases = Passphrases(args.passphrases)
    with open_drives(args) as group:
        result = reset_drives(group.reachable, passphrases, note)
        result.problems.extend(unreachable(group))
    return report(result, args.json)


def run(args: argparse.Namespace) -> int:
    if args.action == "reset":
        return run_reset(args)
    addresses = parse_drives(args.drives)
    statuses = survey(addresses, args.timeout)
    if args.json:
        ui.print_json({"drives": [s.as_json() for s in statuses]})
    else:
        ui.print_table(HEADERS, [s.as_row() for s in statuses])
    bad = [s for s in statuses if not s.ok]
    if bad:
        if not args.json:
            print(
                f"{len(bad)} of {len(statuses)} drive(s) unreachable or not as expected",
                file=sys.stderr,
            )
        return EXIT_UNREACHABLE
    return 0
