"""Backups: a preview of what a slot's backup will hold, and starting one as a job."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from .. import actions
from ..core.users import Role
from ..deps import AddressDep, AuditDep, CurrentUser, DbDep, StateDep, require
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
def preview(
    body: PreviewBackup, who: CurrentUser, state: StateDep, audit: AuditDep, address: AddressDep
) -> dict[str, object]:
    return actions.preview_backup(
        state,
        audit,
        slot=body.slot,
        so_id=body.so_id,
        password=body.password,
        label=body.label,
        user=who.user.name,
        address=address,
    ).to_json()


@router.post("", status_code=202)
def start(
    body: StartBackup,
    who: CurrentUser,
    state: StateDep,
    conn: DbDep,
    audit: AuditDep,
    address: AddressDep,
) -> dict[str, object]:
    job = actions.start_backup(
        state,
        conn,
        audit,
        user=who.user.name,
        address=address,
        draft=body.draft,
        slot=body.slot,
        so_id=body.so_id,
        password=body.password,
        label=body.label,
    )
    return {"job": job}
