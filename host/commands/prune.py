"""``sealkeep prune``: delete a set from its drives, with their custodians, or with the host
alone where the domain's retention rule lets the owner drop it."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

from .. import ui
from ..domain import DriveGroup, Problem, short
from ..erase import EraseResult, prune_set
from ..errors import EXIT_UNREACHABLE
from ..hsm import HsmSession
from ..pins import Passphrases
from . import add_json_option
from .domain import add_drive_options, add_passphrases_option, note, open_drives
from .slots import add_slot_options, find_slot_of, load_module, open_slot

ORDER = 75


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "prune",
        help="delete a backup set from its drives (its custodians, or retention)",
        description=(
            "Delete a backup set from every drive given that holds it, to reclaim space. "
            "A drive lets its owner (the host) add sets, never delete one, so each drive's "
            "custodian opens it with their passphrase. In a domain created with --retention "
            "N the drives are asked first with the owner credential (the slot PIN, no "
            "passphrases): a drive with N newer sets on it lets the owner drop the set, and "
            "custodians are needed only for the drives that keep it."
        ),
    )
    p.add_argument("--set", required=True, metavar="ID", help="the set id `sealkeep sets` shows")
    add_drive_options(p)
    add_passphrases_option(p)
    add_slot_options(p, required=False)
    add_json_option(p)
    p.set_defaults(run=run)


def unreachable(group: DriveGroup) -> list[Problem]:
    return [Problem(d.name, "unreachable", EXIT_UNREACHABLE) for d in group.unreachable]


def report(result: EraseResult, as_json: bool) -> int:
    """Print what was erased; non-zero when a drive could not be."""
    if as_json:
        ui.print_json(result.to_json())
    else:
        how = f" ({len(result.by_owner)} by the owner, under retention)" if result.by_owner else ""
        print(f"{result.what} erased on {len(result.done)} drive(s){how}")
        for problem in result.problems:
            print(f"  {problem.drive}: {problem.reason}", file=sys.stderr)
        if result.problems:
            print(
                f"error: {result.what} not erased on {len(result.problems)} drive(s) "
                "(listed above)",
                file=sys.stderr,
            )
    return max((p.code for p in result.problems), default=0)


def owner_session(group: DriveGroup, args: argparse.Namespace) -> HsmSession | None:
    """A session on the slot holding the domain of the drives that have a retention rule,
    or None when none has one (custodians only, and no PIN is asked) or no slot holds it."""
    retained = [d for d in group.reachable if d.use()[1].retention and d.domain is not None]
    if not retained:
        return None
    domains = sorted({d.domain for d in retained if d.domain is not None})
    domain_id = max(domains, key=lambda dom: sum(d.domain == dom for d in retained))
    hsm = load_module(args)
    slot_id = args.slot if args.slot is not None else find_slot_of(hsm, domain_id)
    if slot_id is None:
        note(
            f"no slot of this HSM holds domain {short(domain_id.hex())}: its retention rule "
            "cannot be used, and each drive's custodian deletes the set"
        )
        return None
    return open_slot(hsm, slot_id, args)


def run(args: argparse.Namespace) -> int:
    passphrases = Passphrases(args.passphrases)
    with open_drives(args) as group, ExitStack() as stack:
        session = owner_session(group, args)
        if session is not None:
            stack.enter_context(session)
        result = prune_set(group.reachable, args.set, passphrases, note, session)
        result.problems.extend(unreachable(group))
    return report(result, args.json)
