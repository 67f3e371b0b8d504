"""What the API and the portal both do for operations on a slot: log in with the SO
password given for this operation alone, record the job and its audit, queue the work.

The routers only parse and shape; the rules live here and below, so they hold once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ..hsm import HsmSession, ObjectInfo
from .audit import AuditLog
from .core.access import open_for_operation
from .core.errors import BadInput
from .jobs import Work, create_job
from .state import DRAFT_SECONDS, Draft, ServiceState
from .work import backup_work, refresh_work, restore_work, verify_work


@dataclass(frozen=True)
class Caller:
    """Who asks, from where, and what the request holds: the service, its database
    connection (committed by the request) and the audit log on it."""

    state: ServiceState
    conn: sqlite3.Connection
    audit: AuditLog
    user: str
    address: str


@dataclass(frozen=True)
class SlotLogin:
    """A slot (its id or token label) and the SO ID and password for one operation."""

    slot: int | str
    so_id: str
    password: str


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


def login(caller: Caller, action: str, slot: SlotLogin) -> HsmSession:
    """A session on the slot, logged in with the SO password; a refusal is audited."""
    return open_for_operation(
        caller.state.hsm,
        caller.audit,
        action=action,
        slot=slot.slot,
        so_id=slot.so_id,
        password=slot.password,
        actor=caller.user,
        address=caller.address,
    )


def preview_backup(caller: Caller, slot: SlotLogin, label: str) -> Preview:
    """Log into the slot and list what a backup would hold and what not, and why; the
    logged-in session waits in memory (never on disk) for the start, for a short while."""
    session = login(caller, "backup.preview", slot)
    try:
        caller.audit.sign_head_in_slot(session)
        objects = session.check_wrapping(session.objects())
        if session.domain_id() is None:
            raise BadInput(
                f"{session.where} holds no backup domain: create one with `sealkeep domain "
                "create` (custodians and blank drives) first"
            )
    except BaseException:
        session.close()
        raise
    draft = caller.state.keep_draft(
        Draft(
            caller.user,
            session.slot_id,
            slot.so_id,
            label,
            session,
            time.monotonic() + DRAFT_SECONDS,
        )
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
    caller: Caller, *, draft: str | None = None, slot: SlotLogin | None = None, label: str = ""
) -> str:
    """Start a backup from a preview's ``draft``, or log in now; returns the job id."""
    if draft is not None:
        taken = caller.state.take_draft(draft, caller.user)
        session, so_id, label = taken.session, taken.so_id, taken.label
    elif slot is not None:
        session, so_id = login(caller, "backup", slot), slot.so_id
    else:
        raise BadInput("give `slot`, `so_id` and `password` (or a preview's `draft`)")
    return _submit(
        caller,
        session,
        "backup",
        {"label": label, "so_id": so_id},
        lambda s: backup_work(caller.state, s, label, so_id),
    )


def start_restore(
    caller: Caller, slot: SlotLogin, set_id: str, keys: Collection[str] | None
) -> str:
    """Start restoring ``set_id`` (or its objects labelled ``keys``) into the slot."""
    chosen = sorted({k.strip() for k in keys or () if k.strip()}) or None
    return _submit(
        caller,
        login(caller, "restore", slot),
        "restore",
        {"set_id": set_id, "keys": chosen, "so_id": slot.so_id},
        lambda s: restore_work(caller.state, s, set_id, chosen, slot.so_id),
    )


def start_refresh(caller: Caller, slot: SlotLogin) -> str:
    """Read the sets of the slot's domain from the drives into the catalogue (a job: an
    owner session on each drive needs the slot's PIN)."""
    return _submit(
        caller,
        login(caller, "sets.refresh", slot),
        "refresh",
        {"so_id": slot.so_id},
        lambda s: refresh_work(caller.state, s),
    )


def start_verify(caller: Caller, slot: SlotLogin, set_id: str) -> str:
    """Check every drive's copy of ``set_id`` with the domain key of the slot (a job)."""
    return _submit(
        caller,
        login(caller, "verify", slot),
        "verify",
        {"set_id": set_id, "so_id": slot.so_id},
        lambda s: verify_work(caller.state, s, set_id),
    )


def _submit(
    caller: Caller,
    session: HsmSession,
    kind: str,
    params: dict[str, object],
    make_work: Callable[[HsmSession], Work],
) -> str:
    """The job row and its audit record, committed; then the work is queued. The session
    is closed however this ends."""
    try:
        full = {"slot": session.slot_id, "token": session.info.label, **params}
        job = create_job(caller.conn, kind, caller.user, full)
        caller.audit.append(
            f"{kind}.start",
            actor=caller.user,
            address=caller.address,
            target=session.where,
            detail={"job": job, **full},
        )
        caller.conn.commit()
        work = make_work(session)
    except BaseException:
        session.close()
        raise
    caller.state.runner.submit(job, work, session.close)
    return job
