"""Rendering portal pages: one Jinja2 environment (autoescaped), the layout's context."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from ...errors import SealkeepError
from ...ui import human_duration, human_size
from .. import db
from ..core.users import Principal, Role, session_principal
from ..deps import SESSION_COOKIE

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")


def _when(moment: float | int | str | None, short: bool = False) -> str:
    """A time as people read it, in UTC: seconds since the epoch or an ISO 8601 text."""
    if not moment:
        return "-"
    if isinstance(moment, str):
        try:
            parsed = datetime.datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return moment
        utc = parsed.astimezone(datetime.UTC)
    else:
        utc = datetime.datetime.fromtimestamp(float(moment), datetime.UTC)
    return utc.strftime("%Y-%m-%d %H:%M UTC" if short else "%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["duration"] = lambda s: "about " + human_duration(float(s))
TEMPLATES.env.filters["size"] = lambda n: human_size(int(n)) if n is not None else "-"


def render(
    request: Request,
    template: str,
    who: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    roles = {r.value for r in who.roles} if who else set()
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "who": who,
            "roles": roles,
            "csrf": who.csrf if who else None,
            "Role": Role,
            **context,
        },
        status_code=status_code,
    )


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """The error, inside the portal's frame when the browser holds a live session."""
    return render(
        request, "error.html", _viewer(request), status_code=status, status=status, message=message
    )


def _viewer(request: Request) -> Principal | None:
    """Who the session cookie names, if it still does; nothing is written or refused here
    (the request has already been answered with an error)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    state = getattr(request.app.state, "service", None)
    if not cookie or state is None:
        return None
    conn = db.connect(state.settings.db_path)
    try:
        return session_principal(
            conn,
            cookie,
            idle=state.settings.session_idle_seconds,
            absolute=state.settings.session_absolute_seconds,
        )
    except SealkeepError:
        return None
    finally:
        conn.rollback()
        conn.close()


def refused_page(request: Request, address: str) -> HTMLResponse:
    return render(request, "refused.html", None, status_code=403, address=address)
