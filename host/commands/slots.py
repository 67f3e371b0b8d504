"""``sealkeep slots``: the HSM's slots, and the HSM options every slot command shares.

``--module PATH`` (or ``$SEALKEEP_PKCS11_MODULE``, else SoftHSM2) picks the PKCS#11 module;
``--slot SLOT`` a slot id as ``sealkeep slots`` lists it, or a token label; the PIN comes from
``--pin-file FILE``, ``$SEALKEEP_PIN`` or a prompt, never from the command line.
"""

from __future__ import annotations

import argparse

from .. import config, ui
from ..errors import EXIT_AUTH, EXIT_USAGE
from ..hsm import ENV_MODULE, Hsm, HsmSession, PinError, PinLockedError, SlotError
from ..pins import ENV_PIN, slot_pin
from . import add_json_option

ORDER = 20
DOMAIN_SHOWN = 16  # hex digits of a domain id in tables


class SlotChoiceError(SlotError):
    """``--slot`` names no slot, or several: a usage error."""

    exit_code = EXIT_USAGE


class PinRefused(PinError):
    """The token refused the PIN (or has locked it)."""

    exit_code = EXIT_AUTH


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
        args.slot = resolve_slot(hsm, slot)
    return hsm


def resolve_slot(hsm: Hsm, text: str) -> int:
    """The slot ``text`` names: a slot id as `sealkeep slots` lists it, or a token label.

    An id and a label naming two different slots, or a label several tokens carry, is
    refused with the candidates named: a command never guesses which slot to log into.
    """
    slots = hsm.slots()
    wanted = text.strip()
    by_id = [s for s in slots if wanted.isdigit() and s.slot_id == int(wanted)]
    by_label = [s for s in slots if s.token_present and s.label == wanted]
    found = {s.slot_id: s for s in by_id + by_label}
    if len(found) == 1:
        return next(iter(found))
    if not found:
        known = ", ".join(
            f"{s.slot_id} ({s.label!r})" if s.label else str(s.slot_id) for s in slots
        )
        raise SlotChoiceError(
            f"no slot has the id or token label {wanted!r}; the slots are: "
            f"{known or 'none'} (see `sealkeep slots`)"
        )
    names = ", ".join(f"slot {i} (token {s.label!r})" for i, s in sorted(found.items()))
    raise SlotChoiceError(f"{wanted!r} names several slots: {names}; give the slot id")


def open_slot(hsm: Hsm, slot_id: int, args: argparse.Namespace) -> HsmSession:
    """A logged-in session on ``slot_id``; the PIN from ``--pin-file``, the environment or a
    prompt. A refused PIN exits with the authentication code."""
    info = hsm.slot(slot_id)
    where = f"slot {slot_id} (token {info.label!r})" if info.label else f"slot {slot_id}"
    if not info.token_present or not info.initialized:
        # Let the HSM layer say what is wrong before anyone types a PIN.
        raise SlotError(
            f"{where} has no initialised token: see `sealkeep slots` for the usable slots"
        )
    pin = slot_pin(where, getattr(args, "pin_file", None))
    try:
        return hsm.open(slot_id, pin)
    except PinLockedError as exc:
        raise PinRefused(f"{exc}: the security officer must unlock it") from None
    except PinError as exc:
        raise PinRefused(f"{exc}. Nothing was changed.") from None


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
        rows.append([str(info.slot_id), info.label, info.serial, info.model, domain])
    print(f"module: {hsm.module}")
    ui.print_table(["SLOT", "TOKEN", "SERIAL", "MODEL", "BACKUP DOMAIN"], rows)
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
