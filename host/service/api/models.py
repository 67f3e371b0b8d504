"""Request bodies several routers share."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .. import actions


class SlotLogin(BaseModel):
    """A slot (its id, or its token's label) and the SO ID and password for one operation."""

    slot: int | str
    so_id: str = Field(max_length=64)
    password: str = Field(max_length=256)

    def login(self) -> actions.SlotLogin:
        return actions.SlotLogin(self.slot, self.so_id, self.password)
