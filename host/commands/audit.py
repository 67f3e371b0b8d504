"""``sealkeep audit verify|export``: check the service's audit log offline, or write a
bundle an auditor checks elsewhere with the service's public key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import ui
from ..drivespec import UsageError
from ..errors import EXIT_INTEGRITY
from ..service.audit import (
    AuditHead,
    AuditVerification,
    BundleError,
    export_bundle,
    verify_bundle,
    verify_state,
)
from . import add_json_option

ORDER = 60


def _head(text: str) -> AuditHead:
    try:
        return AuditHead.from_bytes(bytes.fromhex(text))
    except (ValueError, BundleError):
        raise argparse.ArgumentTypeError(
            "an audit head is the 96 hex digits `sealkeep sets --set SET` shows as its audit "
            f"head, not {text[:100]!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "audit",
        help="check the service's audit log offline, or export it for an auditor",
        description=(
            "The service's audit log is a hash chain of records, each head signed by the "
            "service's key and, at every operation that logs into a slot, by a key that never "
            "leaves that slot. No HSM and no running service are needed to check it."
        ),
    )
    sub = p.add_subparsers(title="actions", dest="action", metavar="ACTION")
    p.set_defaults(run=lambda args: _no_action(p))

    verify = sub.add_parser(
        "verify",
        help="check the chain and its signatures; exit 6 naming the first bad record",
        description=(
            "Check every record's hash and the service's signature of every head, and every "
            "head signed in a slot. Names the first record that was changed, removed or "
            "reordered (exit code 6), and the last head a slot signed: records cut after it "
            "show only against a head a backup set carries (--head)."
        ),
    )
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--state", type=Path, metavar="DIR", help="the service's state folder")
    source.add_argument(
        "--bundle", type=Path, metavar="FILE", help="a bundle written by `sealkeep audit export`"
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM",
        help="with --bundle: the service's public key (audit-key.pub.pem) obtained apart from "
        "the bundle; without it the bundle is checked only against the key it carries",
    )
    verify.add_argument(
        "--head",
        type=_head,
        action="append",
        default=[],
        metavar="HEX",
        help="an audit head a backup set carries (`sealkeep sets --set SET`): the log must "
        "hold it (repeatable)",
    )
    add_json_option(verify)
    verify.set_defaults(run=run_verify)

    export = sub.add_parser(
        "export",
        help="write the log as one JSON bundle (0600) that verifies elsewhere",
        description=(
            "Write every record with its signature, the service's public key, and the heads "
            "signed in slots with their public keys, as stored (a broken chain is exported "
            "broken). Check it elsewhere with `sealkeep audit verify --bundle FILE "
            "--public-key audit-key.pub.pem`."
        ),
    )
    export.add_argument(
        "--state", type=Path, metavar="DIR", required=True, help="the service's state folder"
    )
    export.add_argument("--out", type=Path, metavar="FILE", required=True, help="the bundle")
    add_json_option(export)
    export.set_defaults(run=run_export)


def _no_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_verify(args: argparse.Namespace) -> int:
    if args.public_key is not None and args.bundle is None:
        raise UsageError("--public-key goes with --bundle: a state folder has its own key")
    if args.bundle is not None:
        result = verify_bundle(args.bundle, args.public_key, args.head)
        what = f"audit bundle {args.bundle}"
    else:
        result = verify_state(args.state, args.head)
        what = f"audit log in {args.state}"
    failure = f"{what} does not hold: {result.message}"
    if args.json:
        document = result.to_json()
        if not result.ok:
            # A failed command's document carries `error`, as every command's does.
            document["error"] = {
                "message": failure,
                "exit_code": EXIT_INTEGRITY,
                "kind": "AuditChainBroken",
            }
        ui.print_json(document)
    else:
        print_verification(what, result)
    if not result.ok:
        ui.error(failure)
        return EXIT_INTEGRITY
    return 0


def print_verification(what: str, result: AuditVerification) -> None:
    if result.ok:
        print(f"{what}: intact, {result.records} record(s)")
    else:
        print(f"{what}: BROKEN at record {result.first_bad} ({result.reason})")
    print(f"  {result.message}")
    last = result.last_hsm_signature
    if last is not None:
        print(
            f"  last head signed in a slot: record {last.seq}, {last.where()}, {last.at} "
            f"({last.algorithm})"
        )
    else:
        print("  no head signed in a slot")
    for head in result.heads_checked:
        print(f"  head given: record {head.seq} {head.hash[:16]}…")
    if result.key_source == "bundle":
        print(
            "  checked against the key the bundle carries: give --public-key to check it "
            "against the service's key"
        )


def run_export(args: argparse.Namespace) -> int:
    export_bundle(args.state, args.out)
    result = verify_bundle(args.out, None)
    if args.json:
        ui.print_json(
            {
                "bundle": str(args.out),
                "records": result.records,
                "hsm_heads": result.hsm_heads,
                "ok": result.ok,
                "first_bad": result.first_bad,
                "reason": result.reason,
            }
        )
    else:
        print(
            f"wrote {args.out}: {result.records} record(s), "
            f"{result.hsm_heads} head(s) signed in slots"
        )
        print(
            "check it elsewhere with: sealkeep audit verify --bundle FILE --public-key "
            f"{args.state / 'audit-key.pub.pem'}"
        )
    if not result.ok:
        ui.warn(f"the log was exported as stored, and it does not hold: {result.message}")
    return 0
