"""``sealkeep sets``: the backup sets on the connected drives.

Listing a drive needs an owner session, whose credential the HSM derives from the domain
key: the slot holding the drives' domain is found by itself (``--slot`` picks one), and
its PIN is asked as usual.
"""

from __future__ import annotations

import argparse
import time

from .. import ui
from ..backupset import SetListing, list_sets
from ..domain import Drive, DriveGroup, Problem, drive_problems, short
from ..errors import SealkeepError
from ..hsm import DomainError, Hsm, HsmSession, class_name, key_type_name
from ..recovery import choose_domain
from ..restore import fetch_set
from ..service.audit import AuditHead
from . import add_json_option
from .domain import add_drive_options, note, open_drives
from .slots import add_slot_options, find_slot_of, load_module, open_slot

ORDER = 41
SET_SHOWN = 16  # hex digits of a set id in the table (any unique prefix is accepted)


def when(created: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created))


def session_for(hsm: Hsm, args: argparse.Namespace, domain_id: bytes) -> HsmSession | None:
    """A session on the slot that holds ``domain_id`` (``--slot`` if given), or None."""
    slot_id = args.slot if args.slot is not None else find_slot_of(hsm, domain_id)
    if slot_id is None:
        return None
    return open_slot(hsm, slot_id, args)


def domains_of(group: DriveGroup, args: argparse.Namespace, hsm: Hsm) -> list[bytes]:
    """The domains to look at: the given slot's, or every domain of the drives."""
    if args.slot is not None:
        marker = hsm.slot(args.slot).domain_id
        if marker is None:
            raise DomainError(
                f"slot {args.slot} holds no backup domain key: give the slot that holds the "
                "drives' domain, or recover the domain into it first"
            )
        return [marker]
    return [domain for domain, _ in group.domains().most_common()]


def listing_row(listing: SetListing, total: int, retained: bool) -> list[str]:
    """A set's row; DROPPABLE says on how many drives the owner may drop it (``-`` when no
    drive of the domain has a retention rule)."""
    h = listing.header
    notes = []
    if listing.damaged:
        notes.append(f"damaged on {', '.join(listing.damaged)}")
    return [
        h.set_id.hex()[:SET_SHOWN],
        when(h.created),
        h.label or "-",
        f"{h.token.label} (slot {h.token.slot_id})",
        str(h.key_count),
        ui.human_size(listing.size),
        f"{len(listing.present)}/{total}",
        f"{len(listing.verified)}/{total}",
        f"{len(listing.owner_may_drop)}/{total}" if retained else "-",
        "; ".join(notes),
    ]


def retention_of(members: list[Drive]) -> list[int]:
    """The retention rules the domain's drives announce (0: none)."""
    return sorted({d.use()[1].retention for d in members})


def describe_retention(rules: list[int]) -> str:
    if not any(rules):
        return "no retention: only custodians delete sets"
    return (
        "retention "
        + ", ".join(str(n) if n else "none" for n in rules)
        + (": the owner may drop a set once that many newer sets are on a drive")
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sets",
        help="list the backup sets on the connected drives",
        description=(
            "List the backup sets on the drives: date, label, source slot, key count, size, "
            "on how many drives each is present and verified (the drive rehashes its copy), "
            "and on how many the domain's retention rule lets the host alone drop it "
            "(DROPPABLE; `sealkeep prune` then needs no custodian). The slot holding the "
            "drives' domain is found automatically; --slot picks one."
        ),
    )
    p.add_argument(
        "--set",
        metavar="SET",
        help="list this set's objects instead (its id or a unique prefix, `latest`, or a "
        "label): the manifest is read from the first drive whose copy authenticates",
    )
    add_drive_options(p)
    add_slot_options(p, required=False)
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    hsm = load_module(args)
    if args.set is not None:
        return run_one_set(args, hsm)
    found: list[tuple[bytes, list[SetListing], int, list[int]]] = []
    problems: list[Problem] = []
    with open_drives(args) as group:
        problems += [d.problem() for d in group.unreachable]
        blank = [d for d in group.reachable if d.blank]
        domains = domains_of(group, args, hsm)
        if not domains and not blank:
            raise drive_problems("none of the drives can be read", problems)
        for domain_id in domains:
            members = group.of_domain(domain_id)
            session = session_for(hsm, args, domain_id)
            if session is not None and len(domains) > 1:
                note(
                    f"domain {short(domain_id.hex())} ({len(members)} drive(s)): read through "
                    f"{session.where}, which holds it"
                )
            if session is None:
                problems += [
                    Problem(
                        d.name,
                        f"no slot holds its domain {short(domain_id.hex())}: recover the "
                        "domain into a slot to list its sets",
                    )
                    for d in members
                ]
                continue
            with session:
                listings, trouble = list_sets(session, members, domain_id)
            problems += trouble
            found.append((domain_id, listings, len(members), retention_of(members)))
        problems += [
            Problem(d.name, f"belongs to another backup domain ({short(d.domain.hex())})")
            for d in group.reachable
            if d.domain is not None and d.domain not in domains
        ]
    if domains and not found:
        raise drive_problems(
            "no slot of this HSM holds the drives' backup domain, so their sets cannot be read",
            problems,
            "Recover the domain into a slot first (`sealkeep domain recover`).",
        )
    for problem in problems:
        note(f"warning: {problem.drive}: {problem.reason}")
    if args.json:
        ui.print_json(
            {
                "sets": [s.to_json() for _, listings, _, _ in found for s in listings],
                "domains": [
                    {
                        "domain_id": domain_id.hex(),
                        "drives": total,
                        "retention": [n or None for n in rules],
                    }
                    for domain_id, _, total, rules in found
                ],
                "problems": [p.to_json() for p in problems],
            }
        )
        return 0
    for domain_id, listings, total, rules in found:
        print(
            f"backup domain {domain_id.hex()}: {len(listings)} set(s) on {total} drive(s); "
            + describe_retention(rules)
        )
        headers = [
            "SET",
            "CREATED",
            "LABEL",
            "FROM",
            "KEYS",
            "SIZE",
            "PRESENT",
            "VERIFIED",
            "DROPPABLE",
            "",
        ]
        retained = any(rules)
        ui.print_table(headers, [listing_row(s, total, retained) for s in listings])
    if blank:
        print(f"{len(blank)} blank drive(s): {', '.join(d.name for d in blank)}")
    return 0


def domain_session(
    hsm: Hsm, args: argparse.Namespace, group: DriveGroup, needing: str
) -> tuple[bytes, HsmSession]:
    """The domain to work on (``--slot``'s, else the one most drives belong to) and a
    session on the slot holding it; ``needing`` says what for, when no slot holds it."""
    domain_id = domains_of(group, args, hsm)[0] if args.slot is not None else None
    if domain_id is None:
        domain_id = choose_domain(group.drives)
    session = session_for(hsm, args, domain_id)
    if session is None:
        raise DomainError(
            f"no slot holds backup domain {short(domain_id.hex())}: {needing} needs the "
            "domain key; recover it into a slot with `sealkeep domain recover` first"
        )
    return domain_id, session


def describe_audit_head(head: bytes | None) -> str:
    """The audit head a set carries, as `audit verify --head` takes it."""
    if head is None:
        return "none (the set was made outside the service)"
    try:
        record = f"record {AuditHead.from_bytes(head).seq}"
    except SealkeepError:
        record = "not one this sealkeep reads"
    return f"{record}, {head.hex()} (check it with `sealkeep audit verify --head`)"


def run_one_set(args: argparse.Namespace, hsm: Hsm) -> int:
    """``sets --set SET``: what one set holds, from its authenticated manifest."""
    with open_drives(args) as group:
        domain_id, session = domain_session(hsm, args, group, "reading a set")
        with session:
            fetched = fetch_set(session, group.of_domain(domain_id), args.set, note)
            fetched.kek.destroy()
    opened = fetched.manifest
    if args.json:
        ui.print_json(
            {
                "set": {
                    "set_id": opened.set_id_hex,
                    "label": opened.label,
                    "source": fetched.serial,
                    "audit_head": opened.audit_head.hex() if opened.audit_head else None,
                    "objects": [
                        {
                            "class": class_name(e.object_class),
                            "type": key_type_name(e.key_type, e.attributes),
                            "label": e.label,
                            "id": e.id.hex(),
                        }
                        for e in opened.entries
                    ],
                    "skipped": [
                        {
                            "class": class_name(s.object_class),
                            "label": s.label,
                            "id": s.id.hex(),
                            "reason": s.reason,
                        }
                        for s in opened.skipped
                    ],
                }
            }
        )
        return 0
    label = f" {opened.label!r}" if opened.label else ""
    print(
        f"set {opened.set_id_hex}{label}: {len(opened.entries)} object(s), read from drive "
        f"{fetched.serial} and authenticated"
    )
    print(f"audit head: {describe_audit_head(opened.audit_head)}")
    ui.print_table(
        ["CLASS", "TYPE", "LABEL", "ID"],
        [
            [
                class_name(e.object_class),
                key_type_name(e.key_type, e.attributes),
                e.label or "-",
                e.id.hex() or "-",
            ]
            for e in opened.entries
        ],
    )
    if opened.skipped:
        print(f"{len(opened.skipped)} object(s) of the slot left out at backup:")
        ui.print_table(
            ["CLASS", "LABEL", "ID", "WHY"],
            [
                [class_name(s.object_class), s.label or "-", s.id.hex() or "-", s.reason]
                for s in opened.skipped
            ],
        )
    return 0
