"""The work of backup and restore jobs: what runs on the job thread, holding the drives."""

from __future__ import annotations

from collections.abc import Collection

from ..backupset import verify_failure
from ..hsm import HsmSession
from ..restore import restore_failure
from .core import operations
from .jobs import JobContext, JobOutcome, Work, error_json
from .state import ServiceState


def backup_work(state: ServiceState, session: HsmSession, label: str, so_id: str) -> Work:
    def work(ctx: JobContext) -> JobOutcome:
        with state.drives_lock:
            # The slot signs the log's head, and the set carries it: the drives hold evidence
            # of the log as it was, beyond the service's reach.
            signed = ctx.audit.sign_head_in_slot(session)
            ctx.conn.commit()
            result, warnings = operations.run_backup(
                session,
                state.settings.drives,
                timeout=state.settings.drive_timeout,
                label=label,
                progress=ctx.progress,
                audit_head=signed.head.to_bytes(),
            )
        operations.record_backup(ctx.conn, result, session.require_domain())
        return JobOutcome(
            {**result.to_json(), "incomplete": result.incomplete, "warnings": warnings},
            "backup",
            result.set_id.hex(),
            "incomplete" if result.incomplete else "ok",
        )

    return work


def restore_work(
    state: ServiceState,
    session: HsmSession,
    set_id: str,
    keys: Collection[str] | None,
    so_id: str,
) -> Work:
    def work(ctx: JobContext) -> JobOutcome:
        with state.drives_lock:
            ctx.audit.sign_head_in_slot(session)
            ctx.conn.commit()
            result, warnings = operations.run_restore(
                session,
                state.settings.drives,
                timeout=state.settings.drive_timeout,
                set_id=set_id,
                keys=keys,
                progress=ctx.progress,
            )
        body = {**result.to_json(), "warnings": warnings}
        if result.ok:
            return JobOutcome(body, "restore", set_id)
        return JobOutcome(body, "restore", set_id, "failed", error_json(restore_failure(result)))

    return work


def refresh_work(state: ServiceState, session: HsmSession) -> Work:
    def work(ctx: JobContext) -> JobOutcome:
        with state.drives_lock:
            ctx.audit.sign_head_in_slot(session)
            ctx.progress({"phase": "reading the sets from the drives"})
            count = operations.refresh_catalogue(
                ctx.conn, session, state.settings.drives, state.settings.drive_timeout
            )
        ctx.progress({"phase": "done"})
        return JobOutcome({"sets": count}, "sets.refresh", session.where)

    return work


def verify_work(state: ServiceState, session: HsmSession, set_id: str) -> Work:
    def work(ctx: JobContext) -> JobOutcome:
        with state.drives_lock:
            ctx.audit.sign_head_in_slot(session)
            ctx.conn.commit()
            result = operations.run_verify(
                session,
                state.settings.drives,
                timeout=state.settings.drive_timeout,
                set_id=set_id,
                progress=ctx.progress,
            )
        operations.record_verification(ctx.conn, result)
        body = result.to_json()
        if result.ok:
            verdict = "incomplete" if result.incomplete else "ok"
            return JobOutcome(body, "verify", result.set_id, verdict)
        failure = error_json(verify_failure(result))
        return JobOutcome(body, "verify", result.set_id, "failed", failure)

    return work
