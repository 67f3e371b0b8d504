"""A drive's firmware slots, and updating them over the link: the status a drive reports,
sending a signed image, the reboot into it on trial, and the owner's confirmation."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .client import DriveClient, Hello, Role
from .drivespec import UsageError
from .errors import (
    EXIT_GENERIC,
    EXIT_INTEGRITY,
    EXIT_PROTOCOL,
    EXIT_STORAGE,
    LinkError,
    ProtocolError,
    SealkeepError,
    where,
)
from .firmware import FirmwareImage
from .protocol import errors as codes
from .protocol import framing, messages
from .transport import open_transport

__all__ = [
    "CONFIRM_OBJECT",
    "IMAGE_OBJECT",
    "FirmwareRefused",
    "FirmwareStatus",
    "SlotInfo",
    "TrialFailed",
    "UpdateResult",
    "firmware_status",
    "reconnect_after_reboot",
    "status_from_reply",
    "update_drive",
]


STATES = {"0": "confirmed", "2": "trial"}
REBOOT_WAIT = 30.0
# The store objects an image travels as, and an owner confirms one with (device/fw/update.py
# IMAGE and CONFIRM).
IMAGE_OBJECT = "sealkeep-firmware.img"
CONFIRM_OBJECT = "sealkeep-firmware.ok"
PROBE_TIMEOUT = 0.5
# The FIRMWARE data step carries one field more than PUT_DATA: keep a margin under the room.
DATA_MARGIN = 8


@dataclass(frozen=True)
class SlotInfo:
    """What a firmware slot holds."""

    name: str
    version: str | None
    counter: int | None


@dataclass(frozen=True)
class FirmwareStatus:
    """A drive's firmware as it tells it: the running version and counter, the
    active slot (None: the firmware of a source tree, with no slots), the boot state
    (``confirmed``, ``trial``, ...), the lowest counter it accepts, the other slot, and
    the last install's result (code 0: installed)."""

    version: str
    counter: int | None
    active: str | None
    state: str
    floor: int | None
    inactive: SlotInfo | None
    result: tuple[int, str] | None
    vendor_key: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        other = self.inactive
        return {
            "firmware_counter": self.counter,
            "firmware_slot": self.active,
            "boot": self.state,
            "floor": self.floor,
            "inactive_slot": other.name if other else None,
            "inactive_firmware": other.version if other else None,
            "inactive_counter": other.counter if other else None,
            "vendor_key": self.vendor_key.hex() if self.vendor_key else None,
            "last_install": (
                {"code": self.result[0], "text": self.result[1]} if self.result else None
            ),
        }


def _info(name: str, text: object) -> SlotInfo:
    parts = text.split() if isinstance(text, str) else []
    if len(parts) == 2 and parts[1].isdigit():
        return SlotInfo(name, parts[0], int(parts[1]))
    return SlotInfo(name, None, None)


def status_from_reply(fields: dict[int, Any]) -> FirmwareStatus:
    """Parse a FIRMWARE_R body (1 version, 2 counter, 3 boot record, 4 and 5 what slots a
    and b hold, 6 the last install's result); the firmware of a source tree has no slots."""
    record = fields.get(3)
    parts = record.split() if isinstance(record, str) else []
    counter = fields.get(2)
    result = None
    text = fields.get(6)
    if isinstance(text, str) and text:
        code, _, rest = text.partition(" ")
        result = (int(code) if code.isdigit() else -1, rest)
    version = str(fields.get(1))
    counted = counter if isinstance(counter, int) else None
    key = fields.get(7)
    vendor = bytes(key) if isinstance(key, (bytes, bytearray)) else None
    if len(parts) < 4:
        return FirmwareStatus(version, counted, None, "built-in", None, None, result, vendor)
    active = parts[0]
    other = "b" if active == "a" else "a"
    return FirmwareStatus(
        version=version,
        counter=counted,
        active=active,
        state=STATES.get(parts[2], parts[2]),
        floor=int(parts[3]) if parts[3].isdigit() else None,
        inactive=_info(other, fields.get(4 if other == "a" else 5)),
        result=result,
        vendor_key=vendor,
    )


def firmware_status(client: DriveClient) -> FirmwareStatus:
    """Ask a drive its firmware slots (FIRMWARE status: no session needed, and the drive
    answers it without loading its update code)."""
    reply = client.call(messages.FIRMWARE, {1: _step("status")}, messages.FIRMWARE_R)
    return status_from_reply(reply)


class FirmwareRefused(SealkeepError):
    """A drive refused an image (signature, vendor key, counter, damage): it runs its
    previous firmware, with its data."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        if self.code == codes.DOWNGRADE:
            return EXIT_STORAGE
        if self.code in (
            codes.BAD_SIGNATURE,
            codes.WRONG_VENDOR,
            codes.BAD_IMAGE,
            codes.DIGEST_MISMATCH,
        ):
            return EXIT_INTEGRITY
        return EXIT_GENERIC


class TrialFailed(SealkeepError):
    """The new firmware booted but failed the self-test; the drive was sent back."""

    exit_code = EXIT_PROTOCOL


@dataclass(frozen=True)
class UpdateResult:
    """One drive's update: from which firmware to which, into which slot; ``resumed_from``
    is where the transfer started (0, or what an earlier, broken transfer left)."""

    serial: str
    port: str
    old_version: str
    version: str
    counter: int
    slot: str
    resumed_from: int
    seconds: float
    already: bool = False
    """The drive already ran this very firmware: nothing was sent."""

    def as_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "port": self.port,
            "already": self.already,
            "from": self.old_version,
            "firmware": self.version,
            "counter": self.counter,
            "firmware_slot": self.slot,
            "resumed_from": self.resumed_from,
            "seconds": round(self.seconds, 3),
        }


CredentialFor = Callable[[Hello], "bytes | None"]
"""The owner credential for a claimed drive, given its HELLO (None for a blank drive)."""


def _open(port: str, timeout: float, serial: str | None) -> DriveClient:
    return DriveClient(open_transport(port), timeout=timeout, serial_hint=serial)


def _session(client: DriveClient, credential_for: CredentialFor) -> Hello:
    """HELLO, then an owner session unless the drive is blank."""
    hello = client.hello()
    if not hello.blank:
        credential = credential_for(hello)
        if credential is None:
            raise UsageError(
                f"{where(hello.serial, client.port)} is claimed: updating it needs an owner "
                "session (give the slot that holds its backup domain)."
            )
        client.authenticate(Role.OWNER, credential)
    return hello


def reconnect_after_reboot(
    port: str, serial: str | None, timeout: float, wait: float
) -> DriveClient:
    """A client on the drive once it answers HELLO again after restarting."""
    deadline = time.monotonic() + wait
    last: SealkeepError | None = None
    time.sleep(0.05)
    while time.monotonic() < deadline:
        try:
            # A short wait per try: a HELLO sent while the drive restarts is lost.
            client = _open(port, min(timeout, PROBE_TIMEOUT), serial)
        except SealkeepError as exc:
            last = exc
            time.sleep(0.2)
            continue
        try:
            client.hello()
            client.timeout = timeout
            return client
        except SealkeepError as exc:
            last = exc
            client.close()
            time.sleep(0.1)
    raise LinkError(
        f"{where(serial, port)} did not come back within {wait:g} s after restarting"
        + (f" ({last})" if last else "")
        + ". It runs its previous firmware unless the new one was confirmed.",
        port=port,
    )


def _step(step: str) -> int:
    return messages.FIRMWARE_STEPS.index(step)


def _ask_reboot(client: DriveClient) -> None:
    """Ask the drive to restart; the session ends with it."""
    client.call(messages.FIRMWARE, {1: _step("reboot")}, messages.OK)
    client.forget_session()


def _refusal(code: int, text: str, serial: str, port: str) -> FirmwareRefused:
    reason = {
        codes.BAD_SIGNATURE: "the image's signature does not verify against its vendor key",
        codes.WRONG_VENDOR: "the image is signed with another vendor's key",
        codes.DOWNGRADE: "the image's security counter is below the drive's (no downgrades)",
        codes.BAD_IMAGE: "the image is damaged or malformed",
        codes.DIGEST_MISMATCH: "the image was damaged in transfer",
    }.get(code, "the drive could not install it")
    name = codes.NAMES.get(code, str(code))
    return FirmwareRefused(
        f"{where(serial, port)} refused the image: {reason} ({name}: {text}). It keeps "
        "running its previous firmware, with its data.",
        code,
    )


def _send_blank(
    client: DriveClient, image: FirmwareImage, progress: Callable[[int, int], None] | None
) -> int:
    """The image to a blank drive (no session, so no PUT): FIRMWARE open and data; where
    the transfer started."""
    size = image.size
    r = client.call(
        messages.FIRMWARE, {1: _step("open"), 2: size, 3: image.sha256}, messages.PUT_READY
    )
    offset: int = r[1]
    if not 0 <= offset <= size:
        raise ProtocolError(f"it offers to resume the image at {offset} of {size} bytes")
    resumed_from = offset
    room = framing.payload_room(client.max_frame) - DATA_MARGIN
    while offset < size:
        chunk = image.data[offset : offset + room]
        r = client.call(
            messages.FIRMWARE, {1: _step("data"), 2: offset, 3: chunk}, messages.PUT_ACK
        )
        if r[1] != offset + len(chunk):
            raise ProtocolError(f"it acknowledged the image up to {r[1]}")
        offset = r[1]
        if progress is not None:
            progress(offset, size)
    return resumed_from


def update_drive(
    port: str,
    image: FirmwareImage,
    credential_for: CredentialFor,
    *,
    serial: str | None = None,
    timeout: float = 5.0,
    reboot_wait: float = REBOOT_WAIT,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
) -> UpdateResult:
    """Update one drive: send it the image (resuming a broken transfer), have it check
    and install the image into its inactive slot and restart on trial, self-test it
    (HELLO with the new version, and an owner session unless blank), and confirm.

    Raises FirmwareRefused when the drive refuses the image and TrialFailed when the new
    firmware fails the self-test (the drive is then sent back to its previous firmware).
    """
    started = time.monotonic()
    client = _open(port, timeout, serial)
    try:
        before = firmware_status(client)
        hello = _session(client, credential_for)
        serial = hello.serial
        if before.vendor_key is None:
            raise FirmwareRefused(
                f"{where(serial, port)} runs firmware {before.version}, a development build of "
                "the source tree that trusts no vendor key: it takes no update, by design (a "
                "drive that accepted an unsigned first image could be given anything). Update "
                "drives that run a signed image (`sealkeep emulate --firmware IMAGE`, or a "
                "board given one by `sealkeep firmware install`).",
                codes.WRONG_STATE,
            )
        if before.state == "trial":
            raise UsageError(
                f"{where(serial, port)} is running firmware {before.version} on trial: wait "
                "until it is confirmed, or restart it to go back, then update again."
            )
        same = (before.version, before.counter, before.vendor_key) == (
            image.version,
            image.counter,
            image.vendor_key,
        )
        if same and not force:
            return UpdateResult(
                serial,
                port,
                before.version,
                image.version,
                image.counter,
                before.active or "-",
                0,
                time.monotonic() - started,
                already=True,
            )
        if hello.blank:  # no session, so no PUT: FIRMWARE open, data and install
            resumed_from = _send_blank(client, image, progress)
            client.call(messages.FIRMWARE, {1: _step("install")}, messages.OK)
        else:  # an owner sends it like any object (resumable, pipelined, digest checked)
            resumed_from = client.put(IMAGE_OBJECT, image.data, progress).resumed_from
            _ask_reboot(client)
    finally:
        client.close()
    # The drive restarts, checks and unpacks the image, and restarts into it on trial.
    client = reconnect_after_reboot(port, serial, timeout, reboot_wait)
    try:
        trial = firmware_status(client)
        if trial.result is not None and trial.result[0] != 0:
            raise _refusal(trial.result[0], trial.result[1], serial, port)
        if trial.version != image.version or trial.state != "trial" or trial.active is None:
            raise TrialFailed(
                f"{where(serial, port)} did not start the new firmware (it runs "
                f"{trial.version}, {trial.state})."
            )
        failed: SealkeepError | None = None
        try:  # the self-test: a session as before
            hello = _session(client, credential_for)
            if hello.blank:
                client.call(messages.FIRMWARE, {1: _step("confirm")}, messages.OK)
            else:  # the drive confirms at its next boot (a session has no heap for more)
                # Not past a restart of the drive: that ends the trial, and the confirmation
                # would be stored on the firmware it went back to, an object nobody uses.
                client.max_recoveries = 0
                client.put(CONFIRM_OBJECT, f"{trial.active} {image.version}".encode())
                _ask_reboot(client)
        except SealkeepError as exc:
            failed = exc
            with contextlib.suppress(SealkeepError):
                _ask_reboot(client)
    finally:
        client.close()
    client = reconnect_after_reboot(port, serial, timeout, reboot_wait)
    try:
        final = firmware_status(client)
    finally:
        client.close()
    confirmed = final.version == image.version and final.state == "confirmed"
    # A self-test that failed after the drive had its confirmation (the link broke before
    # the answer came) ends confirmed all the same: what the drive runs now tells.
    if failed is not None and not confirmed:
        now = (
            f"it runs its previous firmware {final.version} again"
            if final.version != image.version
            else "it goes back to its previous firmware when it restarts"
        )
        raise TrialFailed(
            f"{where(serial, port)}: the new firmware {image.version} failed its "
            f"self-test ({failed}); {now}."
        )
    if not confirmed or final.active is None:
        raise TrialFailed(
            f"{where(serial, port)} runs {final.version} ({final.state}) after the confirmation"
        )
    return UpdateResult(
        serial=serial,
        port=port,
        old_version=before.version,
        version=image.version,
        counter=image.counter,
        slot=final.active,
        resumed_from=resumed_from,
        seconds=time.monotonic() - started,
    )
