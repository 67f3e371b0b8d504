"""Restores: a set from the drives back into a slot, as a job."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from .. import actions
from ..core.users import Role
from ..deps import CallerDep, require
from .models import SlotLogin

router = APIRouter(prefix="/restores", tags=["restores"], dependencies=[require(Role.OPERATOR)])


class StartRestore(SlotLogin):
    set_id: str = Field(min_length=4, max_length=64)
    keys: list[str] | None = None
    """Labels of the objects to restore; all of the set's when absent."""


@router.post("", status_code=202)
def start(body: StartRestore, caller: CallerDep) -> dict[str, object]:
    return {"job": actions.start_restore(caller, body.login(), body.set_id, body.keys)}
