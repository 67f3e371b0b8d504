"""The service's settings: flags of `sealkeep serve`, else ``SEALKEEP_*`` environment variables.

Built once by the command and handed to ``create_app``; nothing is read at import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..config import DRIVE_TIMEOUT

DB_NAME = "sealkeep.db"


class Settings(BaseSettings):
    """Everything `sealkeep serve` is configured with; the state folder holds the rest."""

    model_config = SettingsConfigDict(env_prefix="SEALKEEP_", frozen=True)

    state: Path
    module: str | None = None
    """The PKCS#11 module (None: ``$SEALKEEP_PKCS11_MODULE``, else SoftHSM2)."""
    drives: str | None = None
    """The drives, as ``--drives`` takes them (ports, ``@drives.json``)."""
    drive_timeout: float = DRIVE_TIMEOUT
    https: bool = True
    session_idle_seconds: float = Field(default=15 * 60, gt=0)
    session_absolute_seconds: float = Field(default=8 * 3600, gt=0)
    login_failures_per_user: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_window_seconds: float = Field(default=15 * 60, gt=0)
    allowed_hosts: tuple[str, ...] = ("*",)
    """Host names requests may name (the ``Host`` header): a page of another site that
    rebinds its name to this machine's address is refused. `serve` on a loopback address
    allows only loopback names unless told otherwise."""
    trusted_proxies: tuple[str, ...] = ()
    """Peers whose ``X-Forwarded-For`` names the client; every other peer is the client."""

    @property
    def db_path(self) -> Path:
        return self.state / DB_NAME
