"""The admin portal: server-rendered pages over the same service layer as the API."""

from __future__ import annotations

from fastapi import APIRouter

from . import admin, audit, auth, dashboard, operations

portal_router = APIRouter(include_in_schema=False)
for module in (auth, dashboard, operations, audit, admin):
    portal_router.include_router(module.router)
