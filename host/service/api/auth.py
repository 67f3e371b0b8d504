"""Logging in and out, and API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from ..core import users
from ..core.users import Role
from ..deps import (
    SESSION_COOKIE,
    AddressDep,
    AuditDep,
    CurrentUser,
    DbDep,
    StateDep,
    require,
)

router = APIRouter(tags=["auth"])


class LoginBody(BaseModel):
    user: str = Field(max_length=64)
    password: str = Field(max_length=users.MAX_PASSWORD)


class TokenBody(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    roles: list[str]


def set_session_cookie(response: Response, token: str, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
    )


@router.post("/login")
def login(
    body: LoginBody,
    response: Response,
    conn: DbDep,
    audit: AuditDep,
    address: AddressDep,
    state: StateDep,
) -> dict[str, object]:
    s = state.settings
    new = users.login(
        conn,
        audit,
        body.user,
        body.password,
        address=address,
        throttle=users.Throttle(
            s.login_failures_per_user, s.login_failures_per_address, s.login_window_seconds
        ),
    )
    set_session_cookie(response, new.token, s.https)
    return {"csrf": new.csrf, **new.user.to_json()}


@router.post("/logout", dependencies=[require(*Role)])
def logout(
    response: Response, who: CurrentUser, conn: DbDep, audit: AuditDep, address: AddressDep
) -> dict[str, object]:
    users.logout(conn, audit, who, address)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"logged_out": who.user.name}


@router.get("/me", dependencies=[require(*Role)])
def me(who: CurrentUser) -> dict[str, object]:
    return {**who.user.to_json(), "via": who.via, "csrf": who.csrf}


@router.post("/tokens", dependencies=[require(*Role)])
def create_token(
    body: TokenBody, who: CurrentUser, conn: DbDep, audit: AuditDep, address: AddressDep
) -> dict[str, object]:
    token = users.create_token(conn, audit, who.user, body.name, body.roles, address=address)
    return {"token": token, "name": body.name, "roles": sorted(body.roles)}


@router.get("/tokens", dependencies=[require(*Role)])
def list_tokens(who: CurrentUser, conn: DbDep) -> list[dict[str, object]]:
    """The caller's own API tokens (names and roles; a token's value is shown only once)."""
    return users.list_tokens(conn, who.user)


@router.delete("/tokens/{name}", dependencies=[require(*Role)])
def revoke_token(
    name: str, who: CurrentUser, conn: DbDep, audit: AuditDep, address: AddressDep
) -> dict[str, object]:
    users.revoke_token(conn, audit, who.user, name, address=address)
    return {"revoked": name}
