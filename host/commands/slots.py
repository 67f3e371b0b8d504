"""``sealkeep slots``: the HSM's slots, and the HSM options every slot command shares.

``--module PATH`` (or ``$SEALKEEP_PKCS11_MODULE``, else SoftHSM2) picks the PKCS#11 module;
``--slot SLOT`` a slot id as ``sealkeep slots`` lists it, or a token label; the PIN comes from
``--pin-file FILE``, ``$SEALKEEP_PIN`` or a prompt, never from the command line.
"""

from __future__ import annotations

import argparse

from .. import config, ui
from ..hsm import ENV_MODULE, Hsm, HsmSession
from ..pins import ENV_PIN, slot_pin
from ..service.core.slots import SlotChoiceError, describe_slot, login, resolve_slot
from . import add_json_option

ORDER = 20
DOMAIN_SHOWN = 16  # hex digits of a domain id in tables


def add_module_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--module",
        metavar="PATH",
        help=f"the PKCS#11 module (default: ${ENV_MODULE}, else SoftHSM2)",
    )


def add_slot_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--slot SLOT``, ``--pin-file FILE`` and ``--module PATH``."""
    parser.add_argument(
        "--slot",
        required=required and not config.has("slot"),
        metavar="SLOT",
        help="the slot: its id as `sealkeep slots` lists it, or its token's label",
    )
    parser.add_argument(
        "--pin-file",
        metavar="FILE",
        help=f"read the slot PIN from the first line of FILE (else ${ENV_PIN}, else a prompt)",
    )
    add_module_option(parser)


def load_module(args: argparse.Namespace) -> Hsm:
    """The PKCS#11 module of ``--module``; a ``--slot`` given as text becomes its slot id."""
    hsm = Hsm(getattr(args, "module", None))
    slot = getattr(args, "slot", None)
    if isinstance(slot, str):
        try:
            args.slot = resolve_slot(hsm, slot)
        except SlotChoiceError as exc:
            raise SlotChoiceError(f"{exc} (see `sealkeep slots`)") from None
    return hsm


def open_slot(hsm: Hsm, slot_id: int, args: argparse.Namespace) -> HsmSession:
    """A logged-in session on ``slot_id``; the PIN from ``--pin-file``, the environment or a
    prompt. A refused PIN exits with the authentication code."""
    where = describe_slot(hsm, slot_id)
    pin = slot_pin(where, getattr(args, "pin_file", None))
    return login(hsm, slot_id, pin)


def find_slot_of(hsm: Hsm, domain_id: bytes) -> int | None:
    """The first slot whose token holds ``domain_id`` (by its public marker; no PIN)."""
    for info in hsm.slots():
        if info.domain_id == domain_id:
            return info.slot_id
    return None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "slots",
        help="list the HSM's slots and which of them hold a backup domain key",
        description=(
            "List every slot of the PKCS#11 module with its token's label, serial and model, "
            "and whether the slot holds a backup domain key (read from a public marker "
            "object: no PIN needed)."
        ),
    )
    add_module_option(p)
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    hsm = load_module(args)
    slots = hsm.slots()
    if args.json:
        ui.print_json({"module": hsm.module, "slots": [s.to_json() for s in slots]})
        return 0
    rows = []
    for info in slots:
        if not info.token_present:
            rows.append([str(info.slot_id), "(no token)"])
            continue
        if not info.initialized:
            rows.append([str(info.slot_id), "(token not initialised)"])
            continue
        domain = info.domain_id.hex()[:DOMAIN_SHOWN] if info.domain_id else "-"
        profile = (info.profile_name or "-") if info.holds_domain else "-"
        rows.append([str(info.slot_id), info.label, info.serial, info.model, domain, profile])
    print(f"module: {hsm.module}")
    ui.print_table(["SLOT", "TOKEN", "SERIAL", "MODEL", "BACKUP DOMAIN", "PROFILE"], rows)
    for info in slots:
        if info.old_hierarchy:
            print(
                f"slot {info.slot_id}: old key hierarchy: a PIN holder can read the keys of "
                f"its backup sets. Re-share to upgrade: `sealkeep domain reshare --slot "
                f"{info.slot_id} --drives ...` (no upgrade works without the drives: the "
                "domain key cannot be read out of the HSM to be stored again under the "
                "current templates)"
            )
    return 0
