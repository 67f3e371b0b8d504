"""The sets the service knows of: its catalogue (no PIN needed to read it)."""

from __future__ import annotations

from fastapi import APIRouter

from ..core import operations
from ..core.users import Role
from ..deps import DbDep, require

router = APIRouter(prefix="/sets", tags=["sets"], dependencies=[require(*Role)])


@router.get("")
def list_sets(conn: DbDep) -> list[dict[str, object]]:
    return [e.to_json() for e in operations.catalogue(conn)]
