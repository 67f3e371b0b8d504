"""The ``sealkeep`` command line in a subprocess, as the integration tests run it.

``SealkeepCli(farm, tmp)`` runs ``python -m sealkeep`` with the farm's SoftHSM2 tokens (or
another PKCS#11 module and its PIN: ``module=``, ``pin=``), a cheap Argon2id (the floor
lowered to match) and a private PIN file; every run is checked for its exit code and for
the absence of a traceback, and every ``--json`` document against
``docs/json-schema.json``. ``custodians_file`` writes the passphrases of some drives.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from json_schemas import check
from sealkeep.domain import ENV_KDF_FLOOR, ENV_KDF_MEMORY, ENV_KDF_TIME
from sealkeep.hsm_base import ENV_MODULE

if TYPE_CHECKING:
    from hsm_fixtures import SoftHsmFarm
    from sealkeep.emulator import EmulatedDrive

USER_PIN = "user-pin-1234"


def custodian_passphrase(serial: str) -> str:
    return f"custodian of {serial}: orbit lantern 7"


def custodians_file(tmp: Path, drives: Iterable[EmulatedDrive], name: str = "custodians") -> Path:
    """A private passphrases file (`SERIAL PASSPHRASE` lines) for ``drives``."""
    path = tmp / name
    path.write_text("".join(f"{d.serial} {custodian_passphrase(d.serial)}\n" for d in drives))
    path.chmod(0o600)
    return path


class SealkeepCli:
    def __init__(
        self,
        farm: SoftHsmFarm,
        tmp: Path,
        *,
        drives: str | None = None,
        cwd: Path | None = None,
        module: str | None = None,
        pin: str = USER_PIN,
    ) -> None:
        self.env = {**farm.env, ENV_KDF_MEMORY: "8", ENV_KDF_TIME: "1", ENV_KDF_FLOOR: "m=8,t=1"}
        for name in ("SEALKEEP_PIN", "SEALKEEP_DRIVES", "SEALKEEP_CONFIG"):
            self.env.pop(name, None)
        if drives is not None:
            self.env["SEALKEEP_DRIVES"] = drives
        if module is not None:
            self.env[ENV_MODULE] = module
        self.cwd = cwd
        self.pin_file = tmp / "pin"
        self.pin_file.write_text(f"{pin}\n")
        self.pin_file.chmod(0o600)

    def __call__(
        self, *args: str, code: int = 0, pin: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = [*args, *(["--pin-file", str(self.pin_file)] if pin else [])]
        done = subprocess.run(
            [sys.executable, "-m", "sealkeep", *argv],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == code, (argv, done.returncode, done.stdout, done.stderr)
        if "--json" in args:
            check(args, done.stdout)
        return done

    def json(self, *args: str, code: int = 0, pin: bool = True) -> Any:
        """The document ``sealkeep ARGS --json`` prints (checked against the schema)."""
        return check(args, self(*args, "--json", code=code, pin=pin).stdout)
