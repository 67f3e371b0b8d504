"""A private SoftHSM2 configuration: its own token directory and tokens, for demonstrations
and tests, leaving the machine's own SoftHSM2 tokens alone.

SoftHSM2 reads its token list when the module is initialised, so tokens are created with
``softhsm2-util`` and then :meth:`SoftHsmFarm.activate` points this process at the
configuration; if python-pkcs11 had loaded the module already (it keeps one library object
per path), the module is re-initialised (C_Finalize + C_Initialize), which re-reads
``SOFTHSM2_CONF``. Subprocesses get the same configuration through :attr:`SoftHsmFarm.env`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .hsm import ModuleError, reload_module, resolve_module

__all__ = ["SoftHsmFarm", "SoftHsmToken"]

CONF_VAR = "SOFTHSM2_CONF"


@dataclass
class SoftHsmToken:
    """A token of the farm; ``slot_id`` and ``serial`` are known after :meth:`activate`."""

    label: str
    serial: str
    pin: str
    so_pin: str
    slot_id: int = -1


class SoftHsmFarm:
    """A SoftHSM2 configuration file with its own token directory under ``root``."""

    def __init__(self, root: Path, module: str | None = None) -> None:
        self.root = root
        self.tokendir = root / "tokens"
        self.tokendir.mkdir(parents=True, exist_ok=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.tokendir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
        )
        self.module = resolve_module(module)
        self.tokens: dict[str, SoftHsmToken] = {}
        self._saved_conf: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment for a subprocess that should see these tokens."""
        return {**os.environ, CONF_VAR: str(self.conf), "SEALKEEP_PKCS11_MODULE": self.module}

    def init_token(self, label: str, pin: str, so_pin: str) -> SoftHsmToken:
        """Create a token in a free slot; call :meth:`activate` afterwards so this process
        sees it."""
        util = shutil.which("softhsm2-util")
        if util is None:
            raise ModuleError("softhsm2-util is missing: install the softhsm2 package")
        done = subprocess.run(
            [util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
            env={**os.environ, CONF_VAR: str(self.conf)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            raise ModuleError(f"softhsm2-util could not create token {label!r}: {why}")
        token = SoftHsmToken(label, "", pin, so_pin)
        self.tokens[label] = token
        return token

    def activate(self) -> None:
        """Point this process at the farm and (re)load the module so it sees every token."""
        if self._saved_conf is None:
            self._saved_conf = os.environ.get(CONF_VAR, "")
        os.environ[CONF_VAR] = str(self.conf)
        lib = reload_module(self.module)
        for slot in lib.get_slots(token_present=True):
            token = slot.get_token()
            if token.label in self.tokens:
                entry = self.tokens[token.label]
                entry.slot_id = slot.slot_id
                entry.serial = token.serial.decode("ascii").strip()

    def restore_environment(self) -> None:
        """Give this process back the SoftHSM2 configuration it had before :meth:`activate`."""
        if self._saved_conf is not None:
            if self._saved_conf:
                os.environ[CONF_VAR] = self._saved_conf
            else:
                os.environ.pop(CONF_VAR, None)
