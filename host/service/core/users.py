"""Management users, their roles, login sessions, API tokens and login throttling.

Passwords are hashed with Argon2id. A session or API token is a random value the client
holds; the database keeps only its SHA-256, so a copy of the database logs nobody in.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..audit import AuditLog
from .errors import BadInput, Conflict, LoginFailed, NotFound, NotLoggedIn, TooManyAttempts

_hasher = PasswordHasher()  # argon2-cffi's defaults: Argon2id, RFC 9106 low-memory profile
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOUCH_EVERY = 5.0
"""Seconds between writes of a session's last-seen time: a page polling a job writes nothing."""
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
# Hashed when a user name is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class Role(enum.StrEnum):
    """What a management user may do; a user holds one or several."""

    ADMIN = "admin"
    """users, roles, the IP allowlist and settings"""
    OPERATOR = "operator"
    """backups, restores and drives"""
    AUDITOR = "auditor"
    """read and verify the audit log"""


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    roles = set()
    for name in names:
        try:
            roles.add(Role(name))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise BadInput(f"no role {name!r}: the roles are {known}") from None
    if not roles:
        raise BadInput("give a user at least one role")
    return frozenset(roles)


def _roles_text(roles: Iterable[Role]) -> str:
    return ",".join(sorted(r.value for r in roles))


def _roles_of(text: str) -> frozenset[Role]:
    return frozenset(Role(r) for r in text.split(",") if r)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    id: int
    name: str
    roles: frozenset[Role]

    def to_json(self) -> dict[str, object]:
        return {"user": self.name, "roles": sorted(r.value for r in self.roles)}


@dataclass(frozen=True)
class Principal:
    """Who is making a request: the user, the roles this credential carries, and how."""

    user: User
    roles: frozenset[Role]
    via: str  # "session" or "token"
    csrf: str | None = None
    session_hash: str | None = None


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadInput(
            f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters; choose a longer one"
        )


def create_user(
    conn: sqlite3.Connection,
    audit: AuditLog,
    name: str,
    password: str,
    roles: Iterable[str],
    *,
    actor: str | None,
    address: str | None,
) -> User:
    if not USER_NAME.match(name):
        raise BadInput(
            "a user name is 1-64 letters, digits, dots, dashes, underscores or @, "
            "starting with a letter or digit"
        )
    check_password(password)
    chosen = parse_roles(roles)
    try:
        cursor = conn.execute(
            "INSERT INTO users (name, password_hash, roles, created) VALUES (?, ?, ?, ?)",
            (name, _hasher.hash(password), _roles_text(chosen), time.time()),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"a user named {name!r} exists already") from None
    audit.append(
        "user.create",
        actor=actor,
        address=address,
        target=name,
        detail={"roles": sorted(r.value for r in chosen)},
    )
    assert cursor.lastrowid is not None
    return User(cursor.lastrowid, name, chosen)


def list_users(conn: sqlite3.Connection) -> list[User]:
    rows = conn.execute("SELECT id, name, roles FROM users ORDER BY name").fetchall()
    return [User(r["id"], r["name"], _roles_of(r["roles"])) for r in rows]


def get_user(conn: sqlite3.Connection, name: str) -> User:
    row = conn.execute("SELECT id, name, roles FROM users WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no user named {name!r}")
    return User(row["id"], row["name"], _roles_of(row["roles"]))


def set_roles(
    conn: sqlite3.Connection,
    audit: AuditLog,
    name: str,
    roles: Iterable[str],
    *,
    actor: str,
    address: str | None,
) -> User:
    user = get_user(conn, name)
    chosen = parse_roles(roles)
    if Role.ADMIN in user.roles and Role.ADMIN not in chosen and _admins(conn) == 1:
        raise Conflict(f"{name!r} is the last admin: make another admin first")
    conn.execute("UPDATE users SET roles = ? WHERE id = ?", (_roles_text(chosen), user.id))
    conn.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))
    audit.append(
        "user.roles",
        actor=actor,
        address=address,
        target=name,
        detail={"roles": sorted(r.value for r in chosen)},
    )
    return User(user.id, name, chosen)


def delete_user(
    conn: sqlite3.Connection, audit: AuditLog, name: str, *, actor: str, address: str | None
) -> None:
    user = get_user(conn, name)
    if Role.ADMIN in user.roles and _admins(conn) == 1:
        raise Conflict(f"{name!r} is the last admin: make another admin first")
    conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
    audit.append("user.delete", actor=actor, address=address, target=name)


def _admins(conn: sqlite3.Connection) -> int:
    return sum(1 for u in list_users(conn) if Role.ADMIN in u.roles)


# --- logging in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throttle:
    per_user: int
    per_address: int
    window: float


@dataclass(frozen=True)
class NewSession:
    token: str
    csrf: str
    user: User


def login(
    conn: sqlite3.Connection,
    audit: AuditLog,
    name: str,
    password: str,
    *,
    address: str,
    throttle: Throttle,
    now: float | None = None,
) -> NewSession:
    """Check a user's password and open a session; every attempt is audited."""
    now = time.time() if now is None else now
    since = now - throttle.window
    conn.execute("DELETE FROM login_failures WHERE at < ?", (since,))
    by_user = conn.execute(
        "SELECT COUNT(*), MIN(at) FROM login_failures WHERE user = ?", (name,)
    ).fetchone()
    by_address = conn.execute(
        "SELECT COUNT(*), MIN(at) FROM login_failures WHERE address = ?", (address,)
    ).fetchone()
    for (count, first), limit, whom in (
        (by_user, throttle.per_user, "this user"),
        (by_address, throttle.per_address, "this address"),
    ):
        if count >= limit:
            wait = max(1, int(first + throttle.window - now) + 1)
            audit.append(
                "login",
                actor=name,
                address=address,
                result="throttled",
                detail={"failures": count},
            )
            raise TooManyAttempts(
                f"too many failed logins for {whom}: try again in {wait} s", retry_after=wait
            )
    row = conn.execute(
        "SELECT id, name, roles, password_hash FROM users WHERE name = ?", (name,)
    ).fetchone()
    try:
        _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password)
        if row is None:
            raise VerificationError
    except (VerificationError, InvalidHashError):
        conn.execute(
            "INSERT INTO login_failures (user, address, at) VALUES (?, ?, ?)",
            (name, address, now),
        )
        audit.append("login", actor=name, address=address, result="failed")
        raise LoginFailed("wrong user name or password") from None
    if _hasher.check_needs_rehash(row["password_hash"]):
        conn.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"])
        )
    conn.execute("DELETE FROM login_failures WHERE user = ? AND address = ?", (name, address))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf, address, created, last_seen) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (_digest(token), row["id"], csrf, address, now, now),
    )
    user = User(row["id"], row["name"], _roles_of(row["roles"]))
    audit.append("login", actor=name, address=address)
    return NewSession(token, csrf, user)


def session_principal(
    conn: sqlite3.Connection,
    token: str,
    *,
    idle: float,
    absolute: float,
    now: float | None = None,
) -> Principal:
    """The user of session ``token``; an idle or too old session ends here."""
    now = time.time() if now is None else now
    digest = _digest(token)
    row = conn.execute(
        "SELECT s.csrf, s.created, s.last_seen, u.id, u.name, u.roles FROM sessions s "
        "JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        (digest,),
    ).fetchone()
    if row is None:
        raise NotLoggedIn("not logged in: log in first")
    if now - row["last_seen"] > idle or now - row["created"] > absolute:
        conn.execute("DELETE FROM sessions WHERE token_hash = ?", (digest,))
        raise NotLoggedIn("the session has expired: log in again")
    if now - row["last_seen"] > min(TOUCH_EVERY, idle / 4):
        conn.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, digest))
    user = User(row["id"], row["name"], _roles_of(row["roles"]))
    return Principal(user, user.roles, "session", csrf=row["csrf"], session_hash=digest)


def logout(conn: sqlite3.Connection, audit: AuditLog, who: Principal, address: str) -> None:
    if who.session_hash is not None:
        conn.execute("DELETE FROM sessions WHERE token_hash = ?", (who.session_hash,))
    audit.append("logout", actor=who.user.name, address=address)


# --- API tokens -------------------------------------------------------------------------------


def create_token(
    conn: sqlite3.Connection,
    audit: AuditLog,
    who: User,
    name: str,
    roles: Iterable[str],
    *,
    address: str | None,
) -> str:
    """A new API token for ``who``, carrying only ``roles`` (each one the user holds)."""
    chosen = parse_roles(roles)
    extra = chosen - who.roles
    if extra:
        raise BadInput(
            "a token carries only roles its user holds; not: "
            + ", ".join(sorted(r.value for r in extra))
        )
    token = "skt_" + secrets.token_urlsafe(32)
    try:
        conn.execute(
            "INSERT INTO api_tokens (token_hash, user_id, name, roles, created) VALUES (?,?,?,?,?)",
            (_digest(token), who.id, name, _roles_text(chosen), time.time()),
        )
    except sqlite3.IntegrityError:
        raise Conflict(
            f"you have a token named {name!r} already: revoke it or pick another"
        ) from None
    audit.append(
        "token.create",
        actor=who.name,
        address=address,
        target=name,
        detail={"roles": sorted(r.value for r in chosen)},
    )
    return token


def list_tokens(conn: sqlite3.Connection, who: User) -> list[dict[str, object]]:
    rows = conn.execute(
        "SELECT name, roles, created FROM api_tokens WHERE user_id = ? ORDER BY name", (who.id,)
    ).fetchall()
    return [
        {"name": r["name"], "roles": sorted(r["roles"].split(",")), "created": r["created"]}
        for r in rows
    ]


def revoke_token(
    conn: sqlite3.Connection, audit: AuditLog, who: User, name: str, *, address: str | None
) -> None:
    gone = conn.execute(
        "DELETE FROM api_tokens WHERE user_id = ? AND name = ?", (who.id, name)
    ).rowcount
    if not gone:
        raise NotFound(f"you have no token named {name!r}")
    audit.append("token.revoke", actor=who.name, address=address, target=name)


def token_principal(conn: sqlite3.Connection, token: str) -> Principal:
    row = conn.execute(
        "SELECT t.roles AS token_roles, u.id, u.name, u.roles FROM api_tokens t "
        "JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
        (_digest(token),),
    ).fetchone()
    if row is None:
        raise NotLoggedIn("unknown API token")
    user = User(row["id"], row["name"], _roles_of(row["roles"]))
    # A token never carries more than its user holds now.
    return Principal(user, _roles_of(row["token_roles"]) & user.roles, "token")
