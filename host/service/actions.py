"""What the API and the portal both do for backups and restores: log into the slot with
the SO password given for this operation, record the job and its audit, queue the work.

The routers only parse and shape; the rules live here and below, so they hold once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass

from ..hsm import HsmSession, ObjectInfo
from .audit import AuditLog
from .core.access import open_for_operation
from .core.errors import BadInput
from .jobs import Work, create_job
from .state import DRAFT_SECONDS, Draft, ServiceState
from .work import backup_work, refresh_work, restore_work, verify_work


@dataclass(frozen=True)
class Preview:
    draft: str
    slot: int
    token: str
    label: str
    objects: list[ObjectInfo]
    left_out: list[ObjectInfo]

    def to_json(self) -> dict[str, object]:
        return {
            "draft": self.draft,
            "expires_in": int(DRAFT_SECONDS),
            "slot": self.slot,
            "token": self.token,
            "label": self.label,
            "objects": [o.to_json() for o in self.objects],
            "not_backed_up": [{**o.to_json(), "why": o.reason} for o in self.left_out],
        }


def preview_backup(
    state: ServiceState,
    audit: AuditLog,
    *,
    slot: int | str,
    so_id: str,
    password: str,
    label: str,
    user: str,
    address: str,
) -> Preview:
    """Log into the slot and list what a backup would hold and what not, and why; the
    logged-in session waits in memory (never on disk) for the start, for a short while."""
    session = open_for_operation(
        state.hsm,
        audit,
        action="backup.preview",
        slot=slot,
        so_id=so_id,
        password=password,
        actor=user,
        address=address,
    )
    try:
        audit.sign_head_in_slot(session)
        objects = session.check_wrapping(session.objects())
        if session.domain_id() is None:
            raise BadInput(
                f"{session.where} holds no backup domain: create one with `sealkeep domain "
                "create` (custodians and blank drives) first"
            )
    except BaseException:
        session.close()
        raise
    draft = state.keep_draft(
        Draft(user, session.slot_id, so_id, label, session, time.monotonic() + DRAFT_SECONDS)
    )
    return Preview(
        draft,
        session.slot_id,
        session.info.label,
        label,
        [o for o in objects if o.exportable and not o.is_domain_key],
        [o for o in objects if not o.exportable and not o.is_domain_key],
    )


def start_backup(
    state: ServiceState,
    conn: sqlite3.Connection,
    audit: AuditLog,
    *,
    user: str,
    address: str,
    draft: str | None = None,
    slot: int | str | None = None,
    so_id: str | None = None,
    password: str | None = None,
    label: str = "",
) -> str:
    """Start a backup from a preview's ``draft``, or log in now; returns the job id."""
    if draft is not None:
        taken = state.take_draft(draft, user)
        session, so_id, label = taken.session, taken.so_id, taken.label
    else:
        if slot is None or so_id is None or password is None:
            raise BadInput("give `slot`, `so_id` and `password` (or a preview's `draft`)")
        session = open_for_operation(
            state.hsm,
            audit,
            action="backup",
            slot=slot,
            so_id=so_id,
            password=password,
            actor=user,
            address=address,
        )
    params = {"slot": session.slot_id, "token": session.info.label, "label": label}
    return _submit(
        state,
        conn,
        audit,
        session,
        "backup",
        user,
        address,
        {**params, "so_id": so_id},
        backup_work(state, session, label, so_id),
    )


def start_restore(
    state: ServiceState,
    conn: sqlite3.Connection,
    audit: AuditLog,
    *,
    user: str,
    address: str,
    set_id: str,
    slot: int | str,
    so_id: str,
    password: str,
    keys: Collection[str] | None,
) -> str:
    """Start restoring ``set_id`` (or its objects labelled ``keys``) into ``slot``."""
    chosen = sorted({k.strip() for k in keys or () if k.strip()}) or None
    session = open_for_operation(
        state.hsm,
        audit,
        action="restore",
        slot=slot,
        so_id=so_id,
        password=password,
        actor=user,
        address=address,
    )
    params = {
        "set_id": set_id,
        "slot": session.slot_id,
        "token": session.info.label,
        "keys": chosen,
        "so_id": so_id,
    }
    return _submit(
        state,
        conn,
        audit,
        session,
        "restore",
        user,
        address,
        params,
        restore_work(state, session, set_id, chosen, so_id),
    )


def start_refresh(
    state: ServiceState,
    conn: sqlite3.Connection,
    audit: AuditLog,
    *,
    user: str,
    address: str,
    slot: int | str,
    so_id: str,
    password: str,
) -> str:
    """Read the sets of the slot's domain from the drives into the catalogue (a job: an
    owner session on each drive needs the slot's PIN)."""
    session = open_for_operation(
        state.hsm,
        audit,
        action="sets.refresh",
        slot=slot,
        so_id=so_id,
        password=password,
        actor=user,
        address=address,
    )
    params = {"slot": session.slot_id, "token": session.info.label, "so_id": so_id}
    return _submit(
        state, conn, audit, session, "refresh", user, address, params, refresh_work(state, session)
    )


def start_verify(
    state: ServiceState,
    conn: sqlite3.Connection,
    audit: AuditLog,
    *,
    user: str,
    address: str,
    set_id: str,
    slot: int | str,
    so_id: str,
    password: str,
) -> str:
    """Check every drive's copy of ``set_id`` with the domain key of ``slot`` (a job)."""
    session = open_for_operation(
        state.hsm,
        audit,
        action="verify",
        slot=slot,
        so_id=so_id,
        password=password,
        actor=user,
        address=address,
    )
    params = {"set_id": set_id, "slot": session.slot_id, "token": session.info.label}
    return _submit(
        state,
        conn,
        audit,
        session,
        "verify",
        user,
        address,
        {**params, "so_id": so_id},
        verify_work(state, session, set_id),
    )


def _submit(
    state: ServiceState,
    conn: sqlite3.Connection,
    audit: AuditLog,
    session: HsmSession,
    kind: str,
    user: str,
    address: str,
    params: dict[str, object],
    work: Work,
) -> str:
    """The job row and its audit record, committed; then the work is queued. The session
    is closed however this ends."""
    try:
        job = create_job(conn, kind, user, params)
        audit.append(
            f"{kind}.start",
            actor=user,
            address=address,
            target=session.where,
            detail={"job": job, **params},
        )
        conn.commit()
    except BaseException:
        session.close()
        raise
    state.runner.submit(job, work, session.close)
    return job
