"""``sealkeep.toml``: the defaults an operator would otherwise repeat on every command.

Looked for in ``$SEALKEEP_CONFIG``, then ``./sealkeep.toml``, then
``~/.config/sealkeep/sealkeep.toml`` (the first that exists). What it may say::

    module = "/usr/lib/softhsm/libsofthsm2.so"   # the PKCS#11 module
    slot = "primary"                              # a slot id or a token label
    drives = "@/etc/sealkeep/drives.json"         # as --drives takes them
    timeout = 5                                   # seconds to wait for a drive's answer
    pin_file = "/etc/sealkeep/pin"                # a file holding the PIN (never the PIN)
    acknowledged = ["root-ca-key"]                # left out of backups, known: one line each run

The command line wins over the environment (``SEALKEEP_DRIVES``, ``SEALKEEP_PKCS11_MODULE``),
which wins over the file. A key the file does not know, or a value of the wrong type, is an
error naming the file and the key: a typo never passes silently. The file holds no secret:
a ``pin`` key is refused.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from . import acknowledged as acknowledged_objects
from .drivespec import ENV_VAR as ENV_DRIVES
from .drivespec import UsageError
from .hsm import ENV_MODULE

__all__ = ["DRIVE_TIMEOUT", "ENV_CONFIG", "ConfigError", "apply", "find", "load"]

ENV_CONFIG = "SEALKEEP_CONFIG"
DRIVE_TIMEOUT = 5.0
"""Seconds to wait for a drive's answer, in every command, unless told otherwise."""

_KEYS: dict[str, tuple[type, ...]] = {
    "module": (str,),
    "slot": (str, int),
    "drives": (str,),
    "timeout": (int, float),
    "pin_file": (str,),
    "acknowledged": (list,),
}
# Where the environment already gives a default, it wins over the file.
_ENVIRONMENT = {"drives": ENV_DRIVES, "module": ENV_MODULE}


class ConfigError(UsageError):
    """The configuration file cannot be used as it is."""


def find() -> Path | None:
    """The configuration file in effect, or None."""
    named = os.environ.get(ENV_CONFIG)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"${ENV_CONFIG} names {path}, which is not a file")
        return path
    for candidate in (Path("sealkeep.toml"), Path("~/.config/sealkeep/sealkeep.toml")):
        path = candidate.expanduser()
        if path.is_file():
            return path
    return None


@cache
def load() -> dict[str, Any]:
    """The settings of the configuration file (empty without one), checked."""
    path = find()
    if path is None:
        return {}
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for key, value in settings.items():
        if key in ("pin", "password", "passphrase"):
            raise ConfigError(
                f"{path}: {key!r} does not belong in a configuration file; name a file that "
                "holds it with pin_file, or let sealkeep ask"
            )
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"{path}: unknown setting {key!r} (known: {known})")
        if isinstance(value, bool) or not isinstance(value, _KEYS[key]):
            raise ConfigError(f"{path}: {key!r} has a value of the wrong kind ({value!r})")
    if "acknowledged" in settings:
        try:
            acknowledged_objects.parse(settings["acknowledged"], str(path))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if "timeout" in settings and not 0 < float(settings["timeout"]) <= 600:
        raise ConfigError(f"{path}: 'timeout' is {settings['timeout']} s; give 0 to 600")
    return dict(settings)


def has(key: str) -> bool:
    """Whether the file gives ``key`` (so that an option need not be required)."""
    return key in load()


def acknowledged() -> list[acknowledged_objects.Acknowledgement]:
    """The objects the file acknowledges will not be backed up (see
    :mod:`sealkeep.acknowledged`)."""
    path = find()
    return acknowledged_objects.parse(load().get("acknowledged", []), str(path))


def apply(args: argparse.Namespace) -> None:
    """Fill the options the command line left unset from the file, then the built-in
    defaults; the environment keeps its place between the two."""
    settings = load()
    for key, value in settings.items():
        if not hasattr(args, key) or getattr(args, key) is not None:
            continue
        env = _ENVIRONMENT.get(key)
        if env is not None and os.environ.get(env):
            continue
        setattr(args, key, str(value) if key == "slot" else value)
    if hasattr(args, "timeout") and args.timeout is None:
        args.timeout = DRIVE_TIMEOUT
