"""What every route depends on: the database connection, the caller's address, who they are
and what roles allow them in. Routes declare ``dependencies=[require(Role.X)]``."""

from __future__ import annotations

import hmac
import ipaddress
import sqlite3
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request

from ..errors import SealkeepError
from . import db
from .actions import Caller
from .audit import AuditLog
from .core.errors import Forbidden, NotLoggedIn
from .core.users import Principal, Role, session_principal, token_principal
from .state import ServiceState

SESSION_COOKIE = "sealkeep_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(service_state)]


def get_db(state: StateDep) -> Iterator[sqlite3.Connection]:
    """One connection per request, committed at the end. A :class:`SealkeepError` is an
    answer, not a crash: it commits too, so the audit record of a refusal is kept (service
    code records before it raises and changes nothing else on the way to an error)."""
    conn = db.connect(state.settings.db_path)
    try:
        yield conn
        conn.commit()
    except SealkeepError:
        conn.commit()
        raise
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


# "function": the commit happens before the response is sent, so a client's next request
# (after a login, say) always sees what this one wrote.
DbDep = Annotated[sqlite3.Connection, Depends(get_db, scope="function")]


def peer_address(request: Request, trusted_proxies: tuple[str, ...]) -> str:
    """The socket's peer; ``X-Forwarded-For`` counts only when that peer is a configured
    proxy, and then its last address that is not itself a trusted proxy."""
    peer = request.client.host if request.client else ""
    if peer not in trusted_proxies:
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if hop not in trusted_proxies:
            return hop
    return peer


def client_address(request: Request, state: StateDep) -> str:
    return peer_address(request, state.settings.trusted_proxies)


AddressDep = Annotated[str, Depends(client_address)]


def get_audit(conn: DbDep, state: StateDep) -> AuditLog:
    return AuditLog(conn, state.key)


AuditDep = Annotated[AuditLog, Depends(get_audit)]


async def current_principal(
    request: Request, conn: DbDep, state: StateDep, audit: AuditDep, address: AddressDep
) -> Principal:
    """The caller: an API token (``Authorization: Bearer``) or a session cookie. A session
    sending anything but GET must prove it is the page's own (the CSRF token, as the
    ``X-CSRF-Token`` header or a form's ``csrf`` field)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return token_principal(conn, auth[7:].strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise NotLoggedIn("not logged in: log in first")
    settings = state.settings
    who = session_principal(
        conn,
        cookie,
        idle=settings.session_idle_seconds,
        absolute=settings.session_absolute_seconds,
    )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if sent is None or who.csrf is None or not hmac.compare_digest(sent, who.csrf):
            audit.append(
                "request.refused",
                actor=who.user.name,
                address=address,
                target=f"{request.method} {request.url.path}",
                result="refused",
                detail={"why": "missing or wrong CSRF token"},
            )
            raise Forbidden(
                "this request did not come from a sealkeep page (missing or wrong CSRF "
                "token): reload the page and try again"
            )
    return who


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require(*roles: Role) -> Any:
    """A dependency admitting callers holding any of ``roles``; refusals are audited.
    Use it as ``dependencies=[require(Role.X)]`` on a router or a route."""

    async def check(
        request: Request, who: CurrentUser, audit: AuditDep, address: AddressDep
    ) -> Principal:
        if who.roles & set(roles):
            return who
        audit.append(
            "request.refused",
            actor=who.user.name,
            address=address,
            target=f"{request.method} {request.url.path}",
            result="refused",
            detail={"needs": sorted(r.value for r in roles)},
        )
        names = " or ".join(r.value for r in roles)
        raise Forbidden(f"this needs the {names} role, which {who.user.name!r} does not hold")

    check.roles = frozenset(roles)  # type: ignore[attr-defined]
    return Depends(check)


def current_caller(
    who: CurrentUser, state: StateDep, conn: DbDep, audit: AuditDep, address: AddressDep
) -> Caller:
    """The caller, as the service's actions take it."""
    return Caller(state, conn, audit, who.user.name, address)


CallerDep = Annotated[Caller, Depends(current_caller)]
