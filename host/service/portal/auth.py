"""The login page, and logging out."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...errors import SealkeepError
from ..api.auth import set_session_cookie
from ..core import users
from ..core.errors import Forbidden
from ..core.users import Role
from ..deps import SESSION_COOKIE, AddressDep, AuditDep, CurrentUser, DbDep, StateDep, require
from .pages import render

router = APIRouter()


def same_origin(request: Request) -> None:
    """A login form posted from another site is refused (login CSRF)."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise Forbidden("this login did not come from the sealkeep login page")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return render(request, "login.html", None)


@router.post("/login")
def login(
    request: Request,
    user: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=users.MAX_PASSWORD)],
    conn: DbDep,
    audit: AuditDep,
    address: AddressDep,
    state: StateDep,
) -> Response:
    same_origin(request)
    s = state.settings
    try:
        new = users.login(
            conn,
            audit,
            user,
            password,
            address=address,
            throttle=users.Throttle(
                s.login_failures_per_user, s.login_failures_per_address, s.login_window_seconds
            ),
        )
    except SealkeepError as exc:
        return render(request, "login.html", None, status_code=401, message=str(exc), user=user)
    response = RedirectResponse("/", status_code=303)
    set_session_cookie(response, new.token, s.https)
    return response


@router.post("/logout", dependencies=[require(*Role)])
def logout(who: CurrentUser, conn: DbDep, audit: AuditDep, address: AddressDep) -> Response:
    users.logout(conn, audit, who, address)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
