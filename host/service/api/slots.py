"""The HSM's slots, and which hold a backup domain (no PIN needed)."""

from __future__ import annotations

from fastapi import APIRouter

from ..core.users import Role
from ..deps import StateDep, require

router = APIRouter(prefix="/slots", tags=["slots"], dependencies=[require(*Role)])


@router.get("")
def list_slots(state: StateDep) -> list[dict[str, object]]:
    return [s.to_json() for s in state.hsm.slots()]
