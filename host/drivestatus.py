"""What each drive says of itself (HELLO and its firmware slots), asked without credentials."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import ui
from .client import DriveClient, Hello
from .config import DRIVE_TIMEOUT
from .drivespec import DriveAddress
from .errors import DriveError, SealkeepError
from .firmware_update import FirmwareStatus, firmware_status
from .transport import open_transport

DOMAIN_SHOWN = 12  # hex digits of the domain id in the table


@dataclass(frozen=True)
class DriveStatus:
    """What one drive answered (``hello``), or why it could not be reached (``error``)."""

    address: DriveAddress
    hello: Hello | None = None
    error: str | None = None
    firmware: FirmwareStatus | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def serial(self) -> str | None:
        return self.hello.serial if self.hello is not None else self.address.serial

    def as_json(self) -> dict[str, Any]:
        h = self.hello
        doc: dict[str, Any] = {
            "serial": self.serial,
            "port": self.address.port,
            "firmware": h.firmware if h else None,
            "state": h.state if h else None,
            "domain": h.domain.hex() if h and h.domain is not None else None,
            "capacity": h.capacity if h else None,
            "free": h.free if h else None,
            "retention": (h.retention or None) if h else None,
            "delay_ms": (
                {"owner": h.owner_delay_ms, "custodian": h.custodian_delay_ms} if h else None
            ),
        }
        fw = self.firmware
        if fw is not None:
            doc.update(fw.as_json())
        if self.error is not None:
            doc["error"] = self.error
        return doc

    def as_row(self) -> list[str]:
        h = self.hello
        head = [self.serial or "?", self.address.port]
        if h is None:
            return [*head, f"unreachable: {self.error}"]
        domain = h.domain.hex()[:DOMAIN_SHOWN] if h.domain is not None else "-"
        row = [
            *head,
            h.firmware,
            h.state,
            domain,
            ui.human_size(h.capacity),
            ui.human_size(h.free),
            wait_column(h),
            *self.slot_columns(),
        ]
        if self.error is not None:
            row.append(self.error)
        return row

    def slot_columns(self) -> list[str]:
        """ACTIVE (slot: counter, boot state) and INACTIVE (slot: version, counter)."""
        fw = self.firmware
        if fw is None:
            return ["?", "?"]
        if fw.active is None:
            return [f"built-in (counter {fw.counter})", "-"]
        active = f"{fw.active}: counter {fw.counter}"
        if fw.state != "confirmed":
            active += f", {fw.state}"
        other = fw.inactive
        if other is None or other.version is None:
            inactive = f"{other.name}: empty" if other else "-"
        else:
            inactive = f"{other.name}: {other.version}, counter {other.counter}"
        return [active, inactive]


def wait_column(hello: Hello) -> str:
    """WAIT: how long the drive delays its next answer to each role, after wrong guesses
    (it never locks; the delay doubles from the third failure, at most 10 s or a minute)."""
    waits = [
        f"{role} {ms / 1000:g} s"
        for role, ms in (("owner", hello.owner_delay_ms), ("custodian", hello.custodian_delay_ms))
        if ms
    ]
    return ", ".join(waits) or "-"


def probe(address: DriveAddress, timeout: float = DRIVE_TIMEOUT) -> DriveStatus:
    """Ask one drive HELLO; never raises for a drive that cannot be reached."""
    try:
        transport = open_transport(address.port)
        with DriveClient(transport, timeout=timeout, serial_hint=address.serial) as client:
            hello = client.hello()
            try:
                firmware: FirmwareStatus | None = firmware_status(client)
            except DriveError:  # older firmware, or no heap for it now: not shown
                firmware = None
    except SealkeepError as exc:
        return DriveStatus(address, error=ui.one_line(str(exc)))
    if address.serial is not None and hello.serial != address.serial:
        return DriveStatus(
            address,
            hello,
            error=(
                f"the drive at {address.port} is {hello.serial}, not {address.serial} as "
                "its drives file says: check which drive is on this port"
            ),
            firmware=firmware,
        )
    return DriveStatus(address, hello, firmware=firmware)


def survey(addresses: list[DriveAddress], timeout: float = DRIVE_TIMEOUT) -> list[DriveStatus]:
    """Every drive's status, asked in parallel, in the order given."""
    if not addresses:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(addresses))) as pool:
        return list(pool.map(lambda a: probe(a, timeout), addresses))
