"""The dashboard: slots, drives, the latest sets, jobs and audit events."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .. import jobs
from ..audit import AuditLog
from ..core import operations
from ..core.users import Role
from ..deps import CurrentUser, DbDep, StateDep, require
from ..fleet import configured_drives, survey_drives
from .pages import render

router = APIRouter(dependencies=[require(*Role)])


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, who: CurrentUser, conn: DbDep, state: StateDep) -> HTMLResponse:
    sets = operations.catalogue(conn)
    records = AuditLog(conn, state.key).records(limit=10) if Role.AUDITOR in who.roles else []
    return render(
        request,
        "dashboard.html",
        who,
        page="dashboard",
        slots=[s.to_json() for s in state.hsm.slots()],
        drives=survey_drives(state),
        drives_problem=configured_drives(state)[1],
        sets=sets[:10],
        set_count=len(sets),
        jobs=jobs.list_jobs(conn, limit=5),
        records=records,
    )


@router.get("/jobs", response_class=HTMLResponse)
def job_list(request: Request, who: CurrentUser, conn: DbDep) -> HTMLResponse:
    return render(request, "jobs/list.html", who, page="jobs", jobs=jobs.list_jobs(conn))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, who: CurrentUser, conn: DbDep) -> HTMLResponse:
    return render(request, "jobs/job.html", who, page="jobs", job=jobs.get_job(conn, job_id))
