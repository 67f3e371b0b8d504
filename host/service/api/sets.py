"""The sets the service knows of: its catalogue (no PIN needed to read it)."""

from __future__ import annotations

from fastapi import APIRouter

from .. import actions
from ..core import operations
from ..core.users import Role
from ..deps import CallerDep, DbDep, require
from .models import SlotLogin

router = APIRouter(prefix="/sets", tags=["sets"])


@router.post("/refresh", status_code=202, dependencies=[require(Role.OPERATOR)])
def refresh(body: SlotLogin, caller: CallerDep) -> dict[str, object]:
    """Read the sets of the slot's backup domain from the drives into the catalogue."""
    return {"job": actions.start_refresh(caller, body.login())}


@router.post("/{set_id}/verify", status_code=202, dependencies=[require(Role.OPERATOR)])
def verify(set_id: str, body: SlotLogin, caller: CallerDep) -> dict[str, object]:
    """Check every drive's copy of the set in the HSM (nothing is restored)."""
    return {"job": actions.start_verify(caller, body.login(), set_id)}


@router.get("", dependencies=[require(*Role)])
def list_sets(conn: DbDep) -> list[dict[str, object]]:
    return [e.to_json() for e in operations.catalogue(conn)]
