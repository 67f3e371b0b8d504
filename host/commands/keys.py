"""``sealkeep keys --slot N``: the objects of a slot and whether each can be backed up.

"yes" is the token's answer, not a guess from the flags: one key of each class and type is
test-wrapped under a throwaway key (see ``HsmSession.check_wrapping``).
"""

from __future__ import annotations

import argparse

from .. import ui
from ..hsm import ObjectInfo
from . import add_json_option
from .slots import add_slot_options, load_module, open_slot

ORDER = 21
HEADERS = ["CLASS", "TYPE", "BITS", "LABEL", "ID", "BACKUP"]


def backup_cell(obj: ObjectInfo) -> str:
    if obj.is_domain_key:
        return "domain key (kept by the custodians' shares)"
    if obj.exportable:
        return "yes"
    return f"no: {obj.reason}"


def object_row(obj: ObjectInfo) -> list[str]:
    return [
        obj.class_name,
        obj.type_name,
        str(obj.bits) if obj.bits else "-",
        obj.label or "-",
        obj.id_hex or "-",
        backup_cell(obj),
    ]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "keys",
        help="list a slot's keys and certificates, and whether each can be backed up",
        description=(
            "List the secret, private and public keys and the certificates of a slot with "
            "class, type, size, label and id, and whether each can be backed up (and why "
            "not: for example a key that is not extractable)."
        ),
    )
    add_slot_options(p)
    add_json_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    hsm = load_module(args)
    with open_slot(hsm, args.slot, args) as session:
        objects = session.check_wrapping(session.objects())
        domain = session.domain_id()
        if args.json:
            ui.print_json(
                {
                    "slot": session.slot_id,
                    "token": session.info.label,
                    "domain_id": domain.hex() if domain else None,
                    "objects": [{**o.to_json(), "domain_key": o.is_domain_key} for o in objects],
                }
            )
            return 0
        print(f"{session.where}: {len(objects)} object(s)")
        ui.print_table(HEADERS, [object_row(o) for o in objects])
        blocked = [o for o in objects if not o.exportable and not o.is_domain_key]
        if blocked:
            print(f"{len(blocked)} object(s) cannot be backed up (see BACKUP)")
    return 0
