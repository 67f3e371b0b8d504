"""Long work as jobs: a ``jobs`` row is the truth, the work runs on one worker thread.

The row is written in the request's transaction and the work starts only after it commits.
The drives are serial devices, so jobs run one at a time, in order. Progress goes to the
row (so a reopened page sees it) and wakes every listener. No row ever holds a PIN: the
logged-in session is handed to the work in memory and closed with it. At start-up a job
left ``running`` or ``queued`` by a stopped service becomes ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SealkeepError
from . import db
from .audit import AuditLog, ServiceKey
from .core.errors import NotFound

log = logging.getLogger("sealkeep.service")
FINAL = ("done", "failed", "interrupted")
PROGRESS_EVERY = 0.2  # seconds between progress writes to the row


@dataclass(frozen=True)
class JobOutcome:
    """What a job's work returns: its result and the audit record of how it ended."""

    result: dict[str, Any] | None
    audit_action: str
    audit_target: str | None
    audit_result: str = "ok"
    error: dict[str, Any] | None = None
    """Set when the work ran to its end but did not succeed (some keys not restored): the
    job is ``failed`` and keeps its result, so every per-key outcome stays visible."""


def error_json(exc: SealkeepError) -> dict[str, Any]:
    """How a job records an error: as the API answers one."""
    return {"error": type(exc).__name__, "exit_code": exc.exit_code, "message": str(exc)}


class JobContext:
    """Given to a job's work: its connection and audit log, and the progress callback."""

    def __init__(self, runner: JobRunner, job_id: str, conn: sqlite3.Connection) -> None:
        self.runner = runner
        self.job_id = job_id
        self.conn = conn
        self.audit = AuditLog(conn, runner.key)
        self._last = 0.0
        self._progress: dict[str, Any] = {}

    def progress(self, update: dict[str, object]) -> None:
        self._progress.update(update)
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY and update.get("phase") != "done":
            return
        self._last = now
        try:
            self.conn.execute(
                "UPDATE jobs SET progress = ?, updated = ? WHERE id = ?",
                (json.dumps(self._progress), time.time(), self.job_id),
            )
            self.conn.commit()
        except sqlite3.OperationalError:  # a busy database: this update waits for the next
            self.conn.rollback()
            return
        self.runner.changed()


Work = Callable[[JobContext], JobOutcome]


def create_job(conn: sqlite3.Connection, kind: str, user: str, params: dict[str, object]) -> str:
    """A queued job row, in the caller's transaction; start it after the commit."""
    job_id = secrets.token_hex(8)
    now = time.time()
    conn.execute(
        "INSERT INTO jobs (id, kind, state, user, params, created, updated) "
        "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
        (job_id, kind, user, json.dumps(params), now, now),
    )
    return job_id


def job_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "state": row["state"],
        "user": row["user"],
        "params": json.loads(row["params"]),
        "progress": json.loads(row["progress"]),
        "result": json.loads(row["result"]) if row["result"] else None,
        "error": json.loads(row["error"]) if row["error"] else None,
        "created": row["created"],
        "finished": row["finished"],
    }


def get_job(conn: sqlite3.Connection, job_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return job_json(row)


def list_jobs(conn: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
    return [job_json(r) for r in rows]


class JobRunner:
    """One worker thread running queued jobs in order."""

    def __init__(self, db_path: Path, key: ServiceKey) -> None:
        self.db_path = db_path
        self.key = key
        self._queue: queue.Queue[tuple[str, Work, Callable[[], None]] | None] = queue.Queue()
        self._changed = threading.Condition()
        self._version = 0
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sealkeep-jobs", daemon=True)

    def start(self) -> None:
        conn = db.connect(self.db_path)
        try:
            conn.execute(
                "UPDATE jobs SET state = 'interrupted', finished = ?, error = ? "
                "WHERE state IN ('queued', 'running')",
                (
                    time.time(),
                    json.dumps(
                        {
                            "error": "Interrupted",
                            "message": "the service stopped while this job ran: see the "
                            "drives and the sets for what was committed",
                        }
                    ),
                ),
            )
            conn.commit()
        finally:
            conn.close()
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._queue.put(None)
        self.changed()
        self._thread.join(timeout=30)

    def submit(self, job_id: str, work: Work, release: Callable[[], None]) -> None:
        """Run ``work`` for committed job ``job_id``; ``release`` frees what it holds
        (the HSM session) however it ends, even if it never runs."""
        if self.stopping.is_set():
            release()
            raise SealkeepError("the service is stopping: try again when it is back")
        self._queue.put((job_id, work, release))

    def changed(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def wait_change(self, seen: int, timeout: float) -> int:
        with self._changed:
            if self._version == seen:
                self._changed.wait(timeout)
            return self._version

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            job_id, work, release = item
            try:
                if self.stopping.is_set():
                    continue
                self._run_one(job_id, work)
            finally:
                release()
        while True:  # release whatever was still queued at shutdown
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                left[2]()

    def _run_one(self, job_id: str, work: Work) -> None:
        conn = db.connect(self.db_path)
        try:
            conn.execute(
                "UPDATE jobs SET state = 'running', updated = ? WHERE id = ?",
                (time.time(), job_id),
            )
            conn.commit()
            self.changed()
            context = JobContext(self, job_id, conn)
            row = conn.execute("SELECT user, kind FROM jobs WHERE id = ?", (job_id,)).fetchone()
            try:
                outcome = work(context)
            except SealkeepError as exc:
                conn.rollback()
                outcome = JobOutcome(None, row["kind"], job_id, "failed", error_json(exc))
            except Exception as exc:  # a bug: the job fails, the service goes on
                conn.rollback()
                log.exception("job %s (%s) failed with an internal error", job_id, row["kind"])
                internal = {
                    "error": "InternalError",
                    "exit_code": 1,
                    "message": f"internal error ({type(exc).__name__}); the service log "
                    "has the details",
                }
                outcome = JobOutcome(None, row["kind"], job_id, "failed", internal)
            detail: dict[str, object] = {"job": job_id}
            if outcome.error is not None:
                detail.update(error=outcome.error["error"], message=outcome.error["message"])
            context.audit.append(
                outcome.audit_action,
                actor=row["user"],
                address=None,
                target=outcome.audit_target,
                result=outcome.audit_result,
                detail=detail,
            )
            state = "failed" if outcome.error is not None else "done"
            self._finish(conn, job_id, state, outcome.result, outcome.error)
        finally:
            conn.close()

    def _finish(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        state: str,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> None:
        now = time.time()
        conn.execute(
            "UPDATE jobs SET state = ?, result = ?, error = ?, updated = ?, finished = ? "
            "WHERE id = ?",
            (
                state,
                json.dumps(result) if result is not None else None,
                json.dumps(error) if error is not None else None,
                now,
                now,
                job_id,
            ),
        )
        conn.commit()
        self.changed()

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's state now, then each change, until it ends or the service stops."""
        conn = db.connect(self.db_path)
        try:
            seen_version = -1
            last: str | None = None
            while not self.stopping.is_set():
                version = self.wait_change(seen_version, timeout=1.0)
                seen_version = version
                job = get_job(conn, job_id)
                conn.commit()  # end the read transaction, so the next read sees new rows
                text = json.dumps(job, sort_keys=True)
                if text != last:
                    last = text
                    yield job
                if job["state"] in FINAL:
                    return
        finally:
            conn.close()
