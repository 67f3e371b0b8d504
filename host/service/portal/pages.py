"""Rendering portal pages: one Jinja2 environment (autoescaped), the layout's context."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from ...ui import human_size
from ..core.users import Principal, Role

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")


def _when(seconds: float | int | None) -> str:
    if not seconds:
        return "-"
    moment = datetime.datetime.fromtimestamp(float(seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.env.filters["when"] = _when
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
    return render(request, "error.html", None, status_code=status, status=status, message=message)


def refused_page(request: Request, address: str) -> HTMLResponse:
    return render(request, "refused.html", None, status_code=403, address=address)
