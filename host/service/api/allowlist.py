"""The IP allowlist (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from ..core import allowlist
from ..core.users import Role
from ..deps import AddressDep, AuditDep, CurrentUser, DbDep, require

router = APIRouter(prefix="/allowlist", tags=["allowlist"], dependencies=[require(Role.ADMIN)])


class Allowlist(BaseModel):
    cidrs: list[str]
    confirm_lockout: bool = False
    """Save even though the list leaves out the address this request comes from."""


@router.get("")
def get_allowlist(conn: DbDep, address: AddressDep) -> dict[str, object]:
    networks = allowlist.load(conn)
    return {"cidrs": [str(n) for n in networks], "your_address": address}


@router.put("")
def put_allowlist(
    body: Allowlist, who: CurrentUser, conn: DbDep, audit: AuditDep, address: AddressDep
) -> dict[str, object]:
    networks = allowlist.replace(
        conn,
        audit,
        body.cidrs,
        actor=who.user.name,
        address=address,
        confirm_lockout=body.confirm_lockout,
    )
    return {"cidrs": [str(n) for n in networks], "your_address": address}
