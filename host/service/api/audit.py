"""The audit log (auditor)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from ..audit import verify_state
from ..core.users import Role
from ..deps import AuditDep, DbDep, StateDep, require

router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[require(Role.AUDITOR)])


@router.get("")
def list_records(
    audit: AuditDep,
    before: int | None = Query(default=None, ge=1),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[dict[str, object]]:
    """Records, newest first; ``before`` pages back."""
    return [r.to_json() for r in audit.records(before=before, limit=limit)]


@router.get("/verify")
def verify(state: StateDep, conn: DbDep) -> dict[str, object]:
    """The whole chain checked as `sealkeep audit verify` checks it: ``ok``, the first bad
    record and why, and the last head a slot signed."""
    conn.commit()  # the check reads the database on its own connection
    return verify_state(state.settings.state).to_json()
