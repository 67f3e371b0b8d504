"""``sealkeep domain create | recover | reshare``: the backup domain ceremonies."""

from __future__ import annotations

import argparse
import sys

from .. import ui
from ..domain import (
    KDF_HELP,
    CreateResult,
    DriveGroup,
    Problem,
    check_retention,
    check_set_size,
    check_threshold,
    create_domain,
)
from ..errors import SealkeepError
from ..hsm import Hsm
from ..hsm_caps import PROFILES, profile_named
from ..pins import Passphrases
from ..recovery import RecoverResult, recover_domain
from ..reshare import ReshareResult, reshare_domain
from . import add_drives_option, add_json_option, add_timeout_option
from .slots import add_slot_options, load_module, open_slot

ORDER = 30


def note(text: str) -> None:
    """A progress or warning line for the person at the terminal (stderr)."""
    print(ui.one_line(text), file=sys.stderr, flush=True)


def add_drive_options(parser: argparse.ArgumentParser) -> None:
    """``--drives SPEC`` and ``--timeout SECONDS``."""
    add_drives_option(parser)
    add_timeout_option(parser)


def open_drives(args: argparse.Namespace) -> DriveGroup:
    return DriveGroup.from_spec(args.drives, args.timeout)


def add_passphrases_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrases",
        metavar="FILE",
        help=(
            "custodians' passphrases for automation: `SERIAL PASSPHRASE` lines (keep the file "
            "private); without it each custodian is asked at the terminal"
        ),
    )


def show_problems(title: str, problems: list[Problem]) -> None:
    for problem in problems:
        note(f"{title}: {problem.drive}: {problem.reason}")


def _threshold(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the threshold is a whole number, not {text!r}") from None


def _retention(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"retention is a whole number of sets, not {text!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "domain",
        help="create, recover or re-share the backup domain (custodian ceremonies)",
        description=(
            "The backup domain key lives non-extractable in an HSM slot and is split k-of-n "
            "among 3, 5 or 7 drives, each share sealed under its custodian's passphrase."
        ),
    )
    sub = p.add_subparsers(title="ceremonies", dest="ceremony", metavar="CEREMONY")
    p.set_defaults(run=lambda args: _no_ceremony(p))

    create = sub.add_parser(
        "create",
        help="claim 3, 5 or 7 blank drives and give the slot a new backup domain key",
        description=(
            "Generate a backup domain key, split it k-of-n with a check value per share, seal "
            "each share under its custodian's passphrase (asked per drive serial, twice, with "
            "a strength check) and write it to its drive, claim the drives (owner key derived "
            "from the domain key, custodian key from the passphrase), and store the domain key "
            "non-extractable in the slot. The drives must be blank. " + KDF_HELP
        ),
    )
    add_slot_options(create)
    add_drive_options(create)
    create.add_argument(
        "--threshold",
        type=_threshold,
        metavar="K",
        help="drives needed to rebuild the domain (default: a majority: 2/3, 3/5, 4/7)",
    )
    create.add_argument(
        "--retention",
        type=_retention,
        metavar="N",
        help=(
            "let the host alone (the owner) drop a set from a drive once N newer sets are "
            "committed on it, so `sealkeep prune` needs no custodian for old sets; each drive "
            "keeps the rule until a factory reset. Default: none, only custodians delete. "
            "A host with the slot PIN can then erase older sets by writing N new ones"
        ),
    )
    create.add_argument(
        "--profile",
        choices=[p.name for p in PROFILES.values()],
        help=(
            "the mechanisms the domain's sets use. standard: AES key wrap with padding and "
            "AES-GCM; portable: AES-CBC-PAD under wrap-only keys and HMAC-SHA256, which more "
            "tokens offer (openCryptoki's soft token among them). Default: standard where the "
            "token offers it, else portable. A domain recovered into another make of token "
            "needs a profile both offer: choose portable for one that may move"
        ),
    )
    add_passphrases_option(create)
    create.add_argument("--yes", action="store_true", help="do not ask before claiming")
    add_json_option(create)
    create.set_defaults(run=run_create)

    recover = sub.add_parser(
        "recover",
        help="rebuild the backup domain key into a slot from k drives and their custodians",
        description=(
            "Each custodian unlocks their drive with their passphrase; the shares are checked "
            "(a wrong passphrase, a corrupt or forged share and a drive of another domain are "
            "named), combined, and the domain key is stored in the slot (a fresh token of any "
            "HSM). With fewer than k good shares nothing is stored and the message says how "
            "many more drives are needed."
        ),
    )
    add_slot_options(recover)
    add_drive_options(recover)
    add_passphrases_option(recover)
    add_json_option(recover)
    recover.set_defaults(run=run_recover)

    reshare = sub.add_parser(
        "reshare",
        help="move the domain to a new set of drives (replace a lost one, change k or n)",
        description=(
            "SPEC is the new set (3, 5 or 7 drives): drives of the current domain, at least k "
            "of them, and blank drives. Every drive of the current domain in the set is opened "
            "by its custodian (its new share is sealed for them), so leave out a drive whose "
            "custodian cannot come. A new domain key replaces "
            "the slot's; every backup set found on the current drives is re-wrapped for it "
            "inside the HSM and written to every drive of the new set. What it revokes: the "
            "old key in this slot, so old shares no longer match it, and every set made from "
            "now on is under the new key only. What it cannot revoke: k old shares with their "
            "custodians still rebuild the old domain and so open the sets made before (that "
            "is the nature of a backup); a drive left out keeps its share and its sets until "
            "`sealkeep drives reset` erases it. Other slots that held the old domain are "
            "listed: they no longer match the drives. At a terminal it asks before replacing "
            "anything (--yes does not ask). " + KDF_HELP
        ),
    )
    add_slot_options(reshare)
    add_drive_options(reshare)
    reshare.add_argument(
        "--threshold",
        type=_threshold,
        metavar="K",
        help="drives needed to rebuild the new domain (default: a majority of the new set)",
    )
    add_passphrases_option(reshare)
    reshare.add_argument("--yes", action="store_true", help="do not ask before replacing")
    add_json_option(reshare)
    reshare.set_defaults(run=run_reshare)


def _no_ceremony(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def drive_rows(drives: list[tuple[str, str]]) -> list[list[str]]:
    return [[serial, address, str(i)] for i, (serial, address) in enumerate(drives, 1)]


def print_created(result: CreateResult) -> None:
    n = len(result.drives)
    print(
        f"backup domain {result.domain_id.hex()} created: any {result.threshold} of these "
        f"{n} drives, with their custodians' passphrases, rebuild it"
    )
    print(
        f"slot {result.slot_id} (token {result.token!r}) holds the domain key "
        f"(not extractable); {result.seconds:.2f} s"
    )
    ui.print_table(["SERIAL", "PORT", "SHARE"], drive_rows(result.drives))
    if result.retention is None:
        print("Retention: none; only a drive's custodian (or its button) deletes a set.")
    else:
        print(
            f"Retention: {result.retention}; the owner may drop a set from a drive once "
            f"{result.retention} newer set(s) are on it."
        )
    print(f"Profile: {result.profile.describe()}.")
    for text in result.unenforced:
        print(f"Not enforced by this token: {text}.")
    print("Give each drive to its custodian; the passphrases are not stored anywhere.")


def run_create(args: argparse.Namespace) -> int:
    check_retention(args.retention)  # before a PIN or a passphrase is asked
    passphrases = Passphrases(args.passphrases)
    hsm = load_module(args)
    with open_drives(args) as group, open_slot(hsm, args.slot, args) as session:
        claimed = [f"{d.serial or '?'} at {d.address}" for d in group.drives if d.reachable]
        check_set_size(len(group.drives))  # refused before anyone is asked to confirm
        k, _ = check_threshold(args.threshold, len(group.drives))
        confirm(
            f"Claim {len(claimed)} drive(s) for a new backup domain of {session.where}, any "
            f"{k} of them to rebuild it: {'; '.join(claimed)}?",
            args,
            passphrases,
        )
        wanted = profile_named(args.profile) if args.profile else None
        result = create_domain(
            session, group.drives, passphrases, args.threshold, note, args.retention, wanted
        )
    if args.json:
        ui.print_json(result.to_json())
    else:
        print_created(result)
    return 0


def print_recovered(result: RecoverResult) -> None:
    if result.already:
        print(
            f"slot {result.slot_id} (token {result.token!r}) already holds backup domain "
            f"{result.domain_id.hex()}: nothing to do"
        )
        return
    print(
        f"backup domain {result.domain_id.hex()} rebuilt into slot {result.slot_id} "
        f"(token {result.token!r}) from drives {', '.join(result.used)} "
        f"({result.threshold} of {result.count} needed); {result.seconds:.2f} s"
    )
    if result.problems:
        print(f"{len(result.problems)} drive(s) gave no usable share (see above)")


def run_recover(args: argparse.Namespace) -> int:
    passphrases = Passphrases(args.passphrases)
    hsm = load_module(args)
    with open_drives(args) as group, open_slot(hsm, args.slot, args) as session:
        result = recover_domain(session, group.drives, passphrases, note)
    show_problems("warning", result.problems)
    if args.json:
        ui.print_json(result.to_json())
    else:
        print_recovered(result)
    return 0


def print_reshared(result: ReshareResult) -> None:
    print(
        f"backup domain moved to {result.domain_id.hex()} (was {result.old_domain_id.hex()}): "
        f"any {result.threshold} of these {len(result.drives)} drives rebuild it; "
        f"{result.seconds:.2f} s"
    )
    print(f"custodians who opened the current domain: {', '.join(result.proven_by)}")
    rows = [[s, a, str(i), role] for i, (s, a, role) in enumerate(result.drives, 1)]
    ui.print_table(["SERIAL", "PORT", "SHARE", "DRIVE"], rows)
    print(f"{len(result.sets)} backup set(s) re-wrapped and written to every drive")
    for warning in result.warnings:
        print(f"warning: {warning}")


class Cancelled(SealkeepError):
    """The operator answered no: nothing was changed."""


def confirm(question: str, args: argparse.Namespace, passphrases: Passphrases) -> None:
    """Ask ``question`` at a terminal; anything but yes cancels. No question is asked with
    --yes, with a passphrases file, or without a terminal (scripts decide by their flags)."""
    if getattr(args, "yes", False) or passphrases.from_file or not sys.stdin.isatty():
        return
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Cancelled("cancelled: nothing was changed")


def left_on(hsm: Hsm, domain_id: bytes, but: int) -> list[str]:
    """Other slots whose token still holds ``domain_id`` (by its public marker)."""
    return [
        f"slot {s.slot_id} (token {s.label!r}) still holds the old domain "
        f"{domain_id.hex()[:16]}: it no longer matches the drives; recover the new domain "
        "into it (`sealkeep domain recover`) or remove it"
        for s in hsm.slots()
        if s.domain_id == domain_id and s.slot_id != but
    ]


def run_reshare(args: argparse.Namespace) -> int:
    passphrases = Passphrases(args.passphrases)
    hsm = load_module(args)
    with open_drives(args) as group, open_slot(hsm, args.slot, args) as session:
        old = session.require_domain()
        kept = [d.name for d in group.drives if d.reachable and d.domain == old]
        blank = [d.name for d in group.drives if d.reachable and d.blank]
        confirm(
            f"Re-share domain {old.hex()[:16]} of {session.where} onto {len(group.drives)} "
            f"drive(s) ({len(kept)} of the domain, {len(blank)} blank)? The slot's domain key "
            "is replaced; drives of the domain left out keep their old share until reset.",
            args,
            passphrases,
        )
        result = reshare_domain(session, group.drives, passphrases, args.threshold, note)
    result.warnings += left_on(hsm, result.old_domain_id, result.slot_id)
    if args.json:
        ui.print_json(result.to_json())
    else:
        print_reshared(result)
    return 0
