"""Jobs: their state, and their progress as Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from .. import jobs
from ..core.users import Role
from ..deps import DbDep, StateDep, require

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[require(*Role)])


@router.get("")
def list_jobs(conn: DbDep) -> list[dict[str, object]]:
    return jobs.list_jobs(conn)


@router.get("/{job_id}")
def get_job(job_id: str, conn: DbDep) -> dict[str, object]:
    return jobs.get_job(conn, job_id)


@router.get("/{job_id}/events")
def job_events(job_id: str, conn: DbDep, state: StateDep) -> StreamingResponse:
    """``event: state`` with the job's JSON now, then at each change; ends when it does."""
    jobs.get_job(conn, job_id)  # 404 before the stream starts
    # The request's transaction (the session's last-seen time) ends now, not with the stream.
    conn.commit()

    def stream() -> Iterator[str]:
        for job in state.runner.events(job_id):
            yield f"event: state\ndata: {json.dumps(job)}\n\n"
        yield "event: end\ndata: {}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
