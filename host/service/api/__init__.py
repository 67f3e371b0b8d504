"""The JSON API under ``/api/v1``: one router per resource, thin over the service layer."""

from __future__ import annotations

from fastapi import APIRouter

from . import allowlist, audit, auth, backups, drives, jobs, restores, sets, slots, users

api_router = APIRouter(prefix="/api/v1")
for module in (auth, users, allowlist, slots, drives, sets, backups, restores, jobs, audit):
    api_router.include_router(module.router)
