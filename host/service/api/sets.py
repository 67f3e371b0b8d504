"""The sets the service knows of: its catalogue (no PIN needed to read it)."""

from __future__ import annotations

from fastapi import APIRouter

from .. import actions
from ..core import operations
from ..core.users import Role
from ..deps import AddressDep, AuditDep, CurrentUser, DbDep, StateDep, require
from .models import SlotLogin

router = APIRouter(prefix="/sets", tags=["sets"])


@router.post("/refresh", status_code=202, dependencies=[require(Role.OPERATOR)])
def refresh(
    body: SlotLogin,
    who: CurrentUser,
    state: StateDep,
    conn: DbDep,
    audit: AuditDep,
    address: AddressDep,
) -> dict[str, object]:
    """Read the sets of the slot's backup domain from the drives into the catalogue."""
    job = actions.start_refresh(
        state,
        conn,
        audit,
        user=who.user.name,
        address=address,
        slot=body.slot,
        so_id=body.so_id,
        password=body.password,
    )
    return {"job": job}


@router.post("/{set_id}/verify", status_code=202, dependencies=[require(Role.OPERATOR)])
def verify(
    set_id: str,
    body: SlotLogin,
    who: CurrentUser,
    state: StateDep,
    conn: DbDep,
    audit: AuditDep,
    address: AddressDep,
) -> dict[str, object]:
    """Check every drive's copy of the set in the HSM (nothing is restored)."""
    job = actions.start_verify(
        state,
        conn,
        audit,
        user=who.user.name,
        address=address,
        set_id=set_id,
        slot=body.slot,
        so_id=body.so_id,
        password=body.password,
    )
    return {"job": job}


@router.get("", dependencies=[require(*Role)])
def list_sets(conn: DbDep) -> list[dict[str, object]]:
    return [e.to_json() for e in operations.catalogue(conn)]
