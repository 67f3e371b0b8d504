"""Logging into a slot for one operation with the SO ID and password a user just gave.

The password is the slot's user PIN; it is used for this login and dropped. The SO ID is
recorded in the audit (who at the HSM side answered for the operation), never the PIN.
"""

from __future__ import annotations

import re

from ...hsm import Hsm, HsmSession
from ..audit import AuditLog
from .errors import BadInput
from .slots import PinRefused, describe_slot, login, resolve_slot

SO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@ -]{0,63}$")


def open_for_operation(
    hsm: Hsm,
    audit: AuditLog,
    *,
    action: str,
    slot: int | str,
    so_id: str,
    password: str,
    actor: str,
    address: str | None,
) -> HsmSession:
    """A session on ``slot`` logged in with ``password``; a refusal is audited and raised."""
    if not SO_ID.match(so_id):
        raise BadInput("the SO ID is 1-64 letters, digits, spaces, dots, dashes, underscores or @")
    if not password:
        raise BadInput("give the SO password (the slot's PIN)")
    slot_id = resolve_slot(hsm, str(slot))
    where = describe_slot(hsm, slot_id)
    try:
        return login(hsm, slot_id, password)
    except PinRefused as exc:
        audit.append(
            action,
            actor=actor,
            address=address,
            target=where,
            result="refused",
            detail={"so_id": so_id, "why": "the HSM refused the SO password"},
        )
        raise PinRefused(f"{where}: the HSM refused the SO password. {exc}") from None
