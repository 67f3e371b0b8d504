"""Which drives a command talks to: ``--drives SPEC``.

SPEC is a comma-separated list whose items are each

- a port path or URL: ``/dev/ttyACM0``, ``/dev/pts/7``, ``serial:///dev/ttyACM0``,
  ``COM3``, or any pyserial URL (``socket://host:port``, ``rfc2217://...``);
- ``@PATH``: a ``drives.json`` as the emulator writes it,
  ``{"drives": [{"serial": "SK-...", "port": "/dev/pts/7"}, ...]}``; the serial is what
  the drive on that port is expected to answer.

Without ``--drives`` the environment variable ``SEALKEEP_DRIVES`` (same syntax) is used;
without either, drives are discovered: every serial port pyserial lists with a USB vendor
and product id (USB CDC boards such as RP2040 or ESP32-S3 in MicroPython), which is
plausible rather than certain: other USB serial adapters are listed too, and asking them
HELLO tells which are sealkeep drives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EXIT_UNREACHABLE, EXIT_USAGE, SealkeepError

__all__ = [
    "ENV_VAR",
    "DriveAddress",
    "DrivesFileError",
    "NoDrivesFound",
    "UsageError",
    "discover_usb",
    "load_drives_file",
    "parse_drives",
]

ENV_VAR = "SEALKEEP_DRIVES"


class UsageError(SealkeepError):
    """The command line or an input file is not usable as given."""

    exit_code = EXIT_USAGE


class DrivesFileError(UsageError):
    """A drives.json is missing, unreadable or not a list of drives; ``path`` names it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class NoDrivesFound(SealkeepError):
    """No drive was given and none was found connected."""

    exit_code = EXIT_UNREACHABLE


@dataclass(frozen=True)
class DriveAddress:
    """Where to reach a drive (``port``: a path or URL for the transport) and, when the
    address came from a drives file, the serial the drive there should answer with."""

    port: str
    serial: str | None = None

    def __str__(self) -> str:
        return f"{self.serial} at {self.port}" if self.serial else self.port


def parse_drives(
    spec: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    discover: Callable[[], list[DriveAddress]] | None = None,
    base: Path | None = None,
) -> list[DriveAddress]:
    """The drives SPEC names; from ``SEALKEEP_DRIVES`` when spec is None or blank, else
    from discovery. Relative ``@PATH`` items are relative to base (the working directory).
    Duplicated ports are listed once. Raises UsageError / NoDrivesFound."""
    env = os.environ if environ is None else environ
    source = "--drives"
    if spec is None or not spec.strip():
        spec = env.get(ENV_VAR, "")
        source = ENV_VAR
    if not spec.strip():
        found = (discover or discover_usb)()
        if not found:
            raise NoDrivesFound(
                "no drives given and no USB serial port found. To fix: connect the drives, "
                f"or name them with --drives PORT,PORT or --drives @drives.json (or set "
                f"{ENV_VAR})."
            )
        return found
    addresses: list[DriveAddress] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item.startswith("@"):
            if not item[1:].strip():
                raise UsageError(
                    f"{source}: '@' must be followed by the path of a drives.json "
                    "(e.g. @/tmp/d/drives.json)."
                )
            path = Path(item[1:].strip()).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            addresses += load_drives_file(path)
        else:
            plain = Path(item).expanduser()
            if (
                "://" not in item
                and (base / plain if base and not plain.is_absolute() else plain).is_file()
            ):
                raise UsageError(
                    f"{source}: {item} is a file, not a port: did you mean @{item}? (a "
                    "drives.json is given as @PATH)"
                )
            addresses.append(DriveAddress(item))
    if not addresses:
        raise UsageError(f"{source} names no drives: give ports (a,b,...) or @drives.json.")
    return _unique(addresses)


def _unique(addresses: Iterable[DriveAddress]) -> list[DriveAddress]:
    seen: dict[str, int] = {}
    out: list[DriveAddress] = []
    for address in addresses:
        at = seen.get(address.port)
        if at is None:
            seen[address.port] = len(out)
            out.append(address)
        elif out[at].serial is None and address.serial is not None:
            out[at] = address
    return out


def load_drives_file(path: Path | str) -> list[DriveAddress]:
    """The drives a drives.json lists; DrivesFileError says what is wrong with it."""
    path = Path(path)
    emulate = f"sealkeep emulate --count N --dir {path.parent}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DrivesFileError(
            f"drives file {path} does not exist. To fix: start the emulator with "
            f"`{emulate}`, which writes it, or name the ports with --drives PORT,PORT.",
            path,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DrivesFileError(
            f"cannot read drives file {path}: {reason}. To fix: check the path and its "
            "permissions.",
            path,
        ) from None
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DrivesFileError(
            f"drives file {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}). To fix: delete it and run `{emulate}` again, or repair it.",
            path,
        ) from None
    shape = '{"drives": [{"serial": "...", "port": "..."}, ...]}'
    entries = doc.get("drives") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise DrivesFileError(
            f"drives file {path} does not hold a drives list (expected {shape}). To fix: "
            f"delete it and run `{emulate}` again, or repair it.",
            path,
        )
    if not entries:
        raise DrivesFileError(
            f"drives file {path} lists no drives. To fix: run `{emulate}` with --count 1 or more.",
            path,
        )
    stopped = isinstance(doc, dict) and doc.get("running") is False
    addresses: list[DriveAddress] = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise DrivesFileError(
                f"drives file {path}: entry {number} is not an object (expected {shape}). "
                "To fix: repair or delete the file.",
                path,
            )
        port = entry.get("port")
        serial = entry.get("serial")
        if serial is not None and not isinstance(serial, str):
            raise DrivesFileError(
                f"drives file {path}: entry {number} has a serial that is not a string. "
                "To fix: repair or delete the file.",
                path,
            )
        if port is None and stopped:
            raise DrivesFileError(
                f"the emulator that wrote {path} has stopped, so its drives have no port. "
                f"To fix: start it again with `{emulate}`.",
                path,
            )
        if not isinstance(port, str) or not port.strip():
            raise DrivesFileError(
                f"drives file {path}: entry {number} has no port. To fix: repair or delete "
                "the file.",
                path,
            )
        addresses.append(DriveAddress(port.strip(), serial or None))
    return addresses


def discover_usb() -> list[DriveAddress]:
    """Serial ports with a USB vendor and product id, sorted by device name."""
    try:
        from serial.tools import list_ports
    except ImportError:  # pragma: no cover - pyserial is a dependency
        return []
    try:
        ports = list_ports.comports()
    except OSError:
        return []
    found = sorted(p.device for p in ports if p.vid is not None and p.pid is not None)
    return [DriveAddress(device) for device in found]
