"""Users and the IP allowlist, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from ...errors import SealkeepError
from ..core import allowlist, users
from ..core.errors import Conflict
from ..core.users import Role
from ..deps import AddressDep, AuditDep, CurrentUser, DbDep, require
from .pages import render

router = APIRouter(dependencies=[require(Role.ADMIN)])


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, who: CurrentUser, conn: DbDep) -> HTMLResponse:
    return render(request, "admin/users.html", who, page="users", users=users.list_users(conn))


@router.post("/users", response_class=HTMLResponse)
def add_user(
    request: Request,
    who: CurrentUser,
    conn: DbDep,
    audit: AuditDep,
    address: AddressDep,
    user: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=users.MAX_PASSWORD)],
    roles: Annotated[list[str] | None, Form()] = None,
) -> HTMLResponse:
    try:
        made = users.create_user(
            conn, audit, user, password, roles or [], actor=who.user.name, address=address
        )
    except SealkeepError as exc:
        return render(
            request,
            "admin/users.html",
            who,
            status_code=400,
            page="users",
            users=users.list_users(conn),
            message=str(exc),
        )
    return render(
        request,
        "admin/users.html",
        who,
        page="users",
        users=users.list_users(conn),
        done=f"user {made.name!r} added",
    )


@router.get("/allowlist", response_class=HTMLResponse)
def allowlist_page(
    request: Request, who: CurrentUser, conn: DbDep, address: AddressDep
) -> HTMLResponse:
    cidrs = [str(n) for n in allowlist.load(conn)]
    return render(
        request, "admin/allowlist.html", who, page="allowlist", cidrs=cidrs, address=address
    )


@router.post("/allowlist", response_class=HTMLResponse)
def save_allowlist(
    request: Request,
    who: CurrentUser,
    conn: DbDep,
    audit: AuditDep,
    address: AddressDep,
    cidrs: Annotated[str, Form(max_length=8192)],
    confirm_lockout: Annotated[str, Form()] = "",
) -> HTMLResponse:
    wanted = [line.strip() for line in cidrs.splitlines() if line.strip()]
    try:
        saved = allowlist.replace(
            conn,
            audit,
            wanted,
            actor=who.user.name,
            address=address,
            confirm_lockout=confirm_lockout == "yes",
        )
    except SealkeepError as exc:
        return render(
            request,
            "admin/allowlist.html",
            who,
            status_code=409 if isinstance(exc, Conflict) else 400,
            page="allowlist",
            cidrs=wanted,
            address=address,
            message=str(exc),
            ask_confirm=isinstance(exc, Conflict),
        )
    return render(
        request,
        "admin/allowlist.html",
        who,
        page="allowlist",
        cidrs=[str(n) for n in saved],
        address=address,
        done="allowlist saved",
    )
