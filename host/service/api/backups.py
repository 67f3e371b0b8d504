"""Backups: a preview of what a slot's backup will hold, and starting one as a job."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from .. import actions
from ..core.users import Role
from ..deps import CallerDep, require
from .models import SlotLogin

router = APIRouter(prefix="/backups", tags=["backups"], dependencies=[require(Role.OPERATOR)])


class PreviewBackup(SlotLogin):
    label: str = Field(default="", max_length=64)


class StartBackup(BaseModel):
    """Either a preview's ``draft``, or the slot and SO credentials to back up at once."""

    draft: str | None = None
    slot: int | str | None = None
    so_id: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, max_length=256)
    label: str = Field(default="", max_length=64)


@router.post("/preview")
def preview(body: PreviewBackup, caller: CallerDep) -> dict[str, object]:
    return actions.preview_backup(caller, body.login(), body.label).to_json()


@router.post("", status_code=202)
def start(body: StartBackup, caller: CallerDep) -> dict[str, object]:
    login = None
    if body.slot is not None and body.so_id is not None and body.password is not None:
        login = actions.SlotLogin(body.slot, body.so_id, body.password)
    job = actions.start_backup(caller, draft=body.draft, slot=login, label=body.label)
    return {"job": job}
