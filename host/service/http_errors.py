"""sealkeep errors as HTTP answers: one table from exit-code family to status.

The body is ``{"error": NAME, "exit_code": N, "message": TEXT}``; the portal shows the
same message on a page. Anything else is a 500 whose body says nothing of the cause.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ..errors import (
    EXIT_AUTH,
    EXIT_GENERIC,
    EXIT_INCOMPLETE,
    EXIT_INTEGRITY,
    EXIT_PROTOCOL,
    EXIT_STORAGE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    SealkeepError,
)
from .core.errors import LoginFailed, NotFound, NotLoggedIn, TooManyAttempts
from .portal.pages import error_page

log = logging.getLogger("sealkeep.service")

STATUS_BY_EXIT = {
    EXIT_USAGE: 400,
    EXIT_UNREACHABLE: 503,
    EXIT_AUTH: 403,
    EXIT_STORAGE: 409,
    EXIT_INTEGRITY: 502,
    EXIT_PROTOCOL: 502,
    EXIT_INCOMPLETE: 409,
    EXIT_GENERIC: 409,
}


def status_of(exc: SealkeepError) -> int:
    if isinstance(exc, LoginFailed | NotLoggedIn):
        return 401
    if isinstance(exc, TooManyAttempts):
        return 429
    if isinstance(exc, NotFound):
        return 404
    return STATUS_BY_EXIT.get(exc.exit_code, 409)


def error_body(name: str, exit_code: int, message: str) -> dict[str, object]:
    return {"error": name, "exit_code": exit_code, "message": message}


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def install(app: FastAPI) -> None:
    @app.exception_handler(SealkeepError)
    async def sealkeep_error(request: Request, exc: SealkeepError) -> Response:
        status = status_of(exc)
        if wants_html(request):
            if status == 401:
                return RedirectResponse("/login", status_code=303)
            return error_page(request, status, str(exc))
        headers = {}
        if isinstance(exc, TooManyAttempts):
            headers["Retry-After"] = str(exc.retry_after)
        return JSONResponse(
            error_body(type(exc).__name__, exc.exit_code, str(exc)),
            status_code=status,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        message = f"the request is not as expected: {problems}"
        if wants_html(request):
            return error_page(request, 400, message)
        return JSONResponse(error_body("BadInput", EXIT_USAGE, message), status_code=400)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("InternalError", EXIT_GENERIC, "internal error: the service log has it"),
            status_code=500,
        )
