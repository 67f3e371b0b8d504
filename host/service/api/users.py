"""Management users and their roles (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..core import users
from ..core.users import Role
from ..deps import AddressDep, AuditDep, CurrentUser, DbDep, require

router = APIRouter(prefix="/users", tags=["users"], dependencies=[require(Role.ADMIN)])


class NewUser(BaseModel):
    user: str = Field(max_length=64)
    password: str = Field(max_length=users.MAX_PASSWORD)
    roles: list[str]


class Roles(BaseModel):
    roles: list[str]


@router.get("")
def list_users(conn: DbDep) -> list[dict[str, object]]:
    return [u.to_json() for u in users.list_users(conn)]


@router.post("", status_code=201)
def create_user(
    body: NewUser, who: CurrentUser, conn: DbDep, audit: AuditDep, address: AddressDep
) -> dict[str, object]:
    user = users.create_user(
        conn, audit, body.user, body.password, body.roles, actor=who.user.name, address=address
    )
    return user.to_json()


@router.put("/{name}/roles")
def set_roles(
    name: str, body: Roles, who: CurrentUser, conn: DbDep, audit: AuditDep, address: AddressDep
) -> dict[str, object]:
    return users.set_roles(
        conn, audit, name, body.roles, actor=who.user.name, address=address
    ).to_json()


@router.delete("/{name}")
def delete_user(
    name: str, who: CurrentUser, conn: DbDep, audit: AuditDep, address: AddressDep
) -> dict[str, object]:
    users.delete_user(conn, audit, name, actor=who.user.name, address=address)
    return {"deleted": name}
