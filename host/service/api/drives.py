"""The drives: who each is and its state, asked with HELLO (no credential)."""

from __future__ import annotations

from fastapi import APIRouter

from ..core.users import Role
from ..deps import StateDep, require
from ..fleet import survey_drives

router = APIRouter(prefix="/drives", tags=["drives"], dependencies=[require(*Role)])


@router.get("")
def list_drives(state: StateDep) -> list[dict[str, object]]:
    return survey_drives(state)
