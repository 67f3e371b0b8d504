"""The Backup and Restore modules: forms, the backup preview, then the job page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...errors import SealkeepError
from .. import actions
from ..core import operations
from ..core.users import Role
from ..deps import CallerDep, CurrentUser, DbDep, StateDep, require
from .pages import render

router = APIRouter(dependencies=[require(Role.OPERATOR)])
Text = Annotated[str, Form(max_length=256)]


@router.get("/backup", response_class=HTMLResponse)
def backup_form(request: Request, who: CurrentUser, state: StateDep) -> HTMLResponse:
    slots = [s.to_json() for s in state.hsm.slots()]
    return render(request, "backup/form.html", who, page="backup", slots=slots, form={})


@router.post("/backup/preview", response_class=HTMLResponse)
def backup_preview(
    request: Request,
    who: CurrentUser,
    state: StateDep,
    caller: CallerDep,
    slot: Text,
    so_id: Text,
    password: Text,
    label: Annotated[str, Form(max_length=64)] = "",
) -> HTMLResponse:
    try:
        preview = actions.preview_backup(caller, actions.SlotLogin(slot, so_id, password), label)
    except SealkeepError as exc:
        slots = [s.to_json() for s in state.hsm.slots()]
        form = {"slot": slot, "so_id": so_id, "label": label}
        return render(
            request,
            "backup/form.html",
            who,
            status_code=400,
            page="backup",
            slots=slots,
            form=form,
            message=str(exc),
        )
    return render(request, "backup/preview.html", who, page="backup", preview=preview)


@router.post("/backup/start")
def backup_start(caller: CallerDep, draft: Text) -> Response:
    job = actions.start_backup(caller, draft=draft)
    return RedirectResponse(f"/jobs/{job}", status_code=303)


@router.get("/restore", response_class=HTMLResponse)
def restore_form(request: Request, who: CurrentUser, state: StateDep, conn: DbDep) -> HTMLResponse:
    return render(
        request,
        "restore/form.html",
        who,
        page="restore",
        slots=[s.to_json() for s in state.hsm.slots()],
        sets=operations.catalogue(conn),
        form={},
    )


@router.post("/restore")
def restore_start(
    request: Request,
    who: CurrentUser,
    state: StateDep,
    conn: DbDep,
    caller: CallerDep,
    set_id: Text,
    slot: Text,
    so_id: Text,
    password: Text,
    keys: Annotated[str, Form(max_length=4096)] = "",
) -> Response:
    try:
        login = actions.SlotLogin(slot, so_id, password)
        job = actions.start_restore(caller, login, set_id, keys.split(","))
    except SealkeepError as exc:
        form = {"set_id": set_id, "slot": slot, "so_id": so_id, "keys": keys}
        return render(
            request,
            "restore/form.html",
            who,
            status_code=400,
            page="restore",
            slots=[s.to_json() for s in state.hsm.slots()],
            sets=operations.catalogue(conn),
            form=form,
            message=str(exc),
        )
    return RedirectResponse(f"/jobs/{job}", status_code=303)
