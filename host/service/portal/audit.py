"""The audit log as the auditor reads it."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ..audit import AuditLog, verify_state
from ..core.users import Role
from ..deps import CurrentUser, DbDep, StateDep, require
from .pages import render

router = APIRouter(dependencies=[require(Role.AUDITOR)])
PAGE = 100


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    who: CurrentUser,
    conn: DbDep,
    state: StateDep,
    before: int | None = Query(default=None, ge=1),
) -> HTMLResponse:
    records = AuditLog(conn, state.key).records(before=before, limit=PAGE)
    older = records[-1].seq if len(records) == PAGE and records[-1].seq > 1 else None
    return render(
        request,
        "audit/list.html",
        who,
        page="audit",
        records=records,
        older=older,
        verification=verify_state(state.settings.state),
    )
