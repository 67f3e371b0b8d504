"""The service's SQLite database in the state folder.

One connection per request or job; the caller commits once at the end (service code never
commits), so an action and its audit record land together or not at all.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .audit import AUDIT_SCHEMA

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    address TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    roles TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_name ON api_tokens(user_id, name);
CREATE TABLE IF NOT EXISTS login_failures (
    user TEXT NOT NULL,
    address TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures(at);
CREATE TABLE IF NOT EXISTS allowlist (
    cidr TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    user TEXT NOT NULL,
    params TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS sets (
    set_id TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    label TEXT NOT NULL,
    slot INTEGER NOT NULL,
    token TEXT NOT NULL,
    domain_id TEXT NOT NULL,
    keys INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    drives TEXT NOT NULL,
    verified TEXT NOT NULL,
    seen REAL NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection with WAL, foreign keys and a busy timeout; rows readable by name."""
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def initialise(path: Path) -> None:
    """Create the database (0600) and every table that is missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    conn = connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA + AUDIT_SCHEMA)
        conn.commit()
    finally:
        conn.close()
