"""``create_app(settings)``: the FastAPI application of `sealkeep serve`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..hsm import Hsm
from . import db, http_errors
from .api import api_router
from .audit import AuditLog, ServiceKey
from .core import allowlist
from .deps import peer_address
from .jobs import JobRunner
from .portal import portal_router
from .portal.pages import refused_page
from .settings import Settings
from .state import ServiceState

log = logging.getLogger("sealkeep.service")
STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": under it a browser sends `Origin: null` with every form, and the
    # login form's same-origin check would refuse every login.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(settings: Settings) -> FastAPI:
    """The app; the database, the signing key, the HSM module and the job worker are made
    when it starts (nothing at import)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.initialise(settings.db_path)
        key = ServiceKey.load_or_create(settings.state)
        runner = JobRunner(settings.db_path, key)
        state = ServiceState(settings, key, Hsm(settings.module), runner)
        app.state.service = state
        runner.start()
        try:
            yield
        finally:
            runner.stop()
            state.expire_drafts(everything=True)

    app = FastAPI(
        title="sealkeep",
        summary="Key backup and restore for PKCS#11 HSMs onto smart backup drives",
        version="1",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        # The interactive docs load scripts from elsewhere, which the CSP and a closed
        # network refuse; the OpenAPI document itself is served.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    http_errors.install(app)

    @app.middleware("http")
    async def allowlist_and_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        state: ServiceState = request.app.state.service
        address = peer_address(request, state.settings.trusted_proxies)
        if not await run_in_threadpool(_allowed, state, address, request):
            if http_errors.wants_html(request):
                response: Response = refused_page(request, address)
            else:
                response = JSONResponse(
                    http_errors.error_body(
                        "AddressRefused",
                        4,
                        f"requests from {address} are not allowed: the service's IP "
                        "allowlist does not include it (an admin can add it)",
                    ),
                    status_code=403,
                )
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    if "*" not in settings.allowed_hosts:
        app.add_middleware(
            TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts), www_redirect=False
        )
    app.include_router(api_router)
    app.include_router(portal_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _allowed(state: ServiceState, address: str, request: Request) -> bool:
    """Whether ``address`` is inside the allowlist; a refusal is audited."""
    conn = db.connect(state.settings.db_path)
    try:
        if allowlist.allows(allowlist.load(conn), address):
            return True
        AuditLog(conn, state.key).append(
            "request.refused",
            actor=None,
            address=address,
            target=f"{request.method} {request.url.path}",
            result="refused",
            detail={"why": "address outside the IP allowlist"},
        )
        conn.commit()
        return False
    finally:
        conn.close()
