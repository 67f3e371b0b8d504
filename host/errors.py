"""Exceptions of sealkeep.

Every error sealkeep raises on purpose is a :class:`SealkeepError`. Its ``str()`` is a
message for a person: what went wrong, where, and what to do about it. ``exit_code`` says
which family it belongs to, so the command line can exit with a code a script can test:

==  ==========================================================
1   anything else (generic)
3   a drive cannot be reached: port missing, no reply, link damaging data
4   authentication: wrong credential, lockout, session ended, not allowed
5   storage: drive full, no such object, bad name or offset
6   integrity: data or a reply that does not match its digest or MAC
7   protocol: a drive that answers something it should not
==  ==========================================================

Errors a drive reports (ERROR replies) are :class:`DriveError` subclasses chosen by the
drive's numeric code (see :func:`drive_error`); they carry the code, its name and the
drive's own text.
"""

from __future__ import annotations

from typing import ClassVar

from .protocol import errors as codes

__all__ = [
    "AuthenticationFailed",
    "Backoff",
    "BadName",
    "BadOffset",
    "BadRequest",
    "DigestMismatch",
    "DriveError",
    "DriveFull",
    "DriveInternalError",
    "ForgedReply",
    "FrameRejected",
    "ImageRefused",
    "ImpostorDrive",
    "LinkError",
    "LockedOut",
    "NoPutOpen",
    "NotAuthenticated",
    "ObjectExists",
    "ObjectNotFound",
    "OutdatedFirmware",
    "Permission",
    "PresenceRequired",
    "ProtocolError",
    "RetentionKeeps",
    "SealkeepError",
    "SessionLost",
    "UnsupportedRequest",
    "WrongState",
    "drive_error",
]

EXIT_GENERIC = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_STORAGE = 5
EXIT_INTEGRITY = 6
EXIT_PROTOCOL = 7
EXIT_INCOMPLETE = 8
EXIT_INTERRUPTED = 130
"""Done, but not all of it: what was left out is listed (the command's output says what)."""


class SealkeepError(Exception):
    """Root of every sealkeep error; str() is a message for a person."""

    exit_code: ClassVar[int] = EXIT_GENERIC


def where(serial: str | None, port: str | None) -> str:
    """How a message names a drive: ``drive SERIAL at PORT`` with what is known."""
    if serial and port:
        return f"drive {serial} at {port}"
    if serial:
        return f"drive {serial}"
    if port:
        return f"drive at {port}"
    return "the drive"


class LinkError(SealkeepError):
    """A drive cannot be reached: its port is missing or cannot be opened, or it is silent.

    ``port`` names the port; ``timed_out`` is true when the drive merely did not answer in
    time (it may answer again later), false when the port itself failed.
    """

    exit_code = EXIT_UNREACHABLE

    def __init__(self, message: str, port: str | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.port = port
        self.timed_out = timed_out


class ProtocolError(SealkeepError):
    """A drive answered with something malformed or something it should not have sent."""

    exit_code = EXIT_PROTOCOL

    def __init__(self, message: str, port: str | None = None, serial: str | None = None) -> None:
        super().__init__(message)
        self.port = port
        self.serial = serial


class ForgedReply(ProtocolError):
    """A reply in a secure session failed its MAC check: altered, replayed or injected.

    The session is over; nothing from that reply was used.
    """

    exit_code = EXIT_INTEGRITY


class DriveError(SealkeepError):
    """An ERROR reply from a drive: its numeric ``code``, the code's ``name`` and ``text``.

    ``serial`` and ``port`` say which drive; ``expected`` (BAD_OFFSET: where the drive
    stands) and ``retry_ms`` (BACKOFF) are set when the drive sent them. ``summary`` and
    ``advice`` default to the class's; sealkeep sets them when it raises one of these
    itself (for instance after checking a digest or a drive's proof on the host).
    """

    summary: ClassVar[str] = "the drive refused the request"
    advice: ClassVar[str] = "If this persists, check the drive with `sealkeep drives`."

    def __init__(
        self,
        code: int,
        text: str,
        serial: str | None = None,
        port: str | None = None,
        expected: int | None = None,
        retry_ms: int | None = None,
        summary: str | None = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(code, text)
        self.code = code
        self.name = codes.NAMES.get(code, f"UNKNOWN_{code}")
        self.text = text
        self.serial = serial
        self.port = port
        self.expected = expected
        self.retry_ms = retry_ms
        self._summary = summary
        self._advice = advice

    def describe(self) -> str:
        """What went wrong, without where and without advice."""
        return self._summary if self._summary is not None else type(self).summary

    def hint(self) -> str:
        """What to do about it."""
        return self._advice if self._advice is not None else type(self).advice

    def __str__(self) -> str:
        said = f"{self.name}, code {self.code}"
        if self.text:
            said += f": {self.text}"
        message = f"{where(self.serial, self.port)}: {self.describe()} ({said})."
        hint = self.hint()
        return f"{message} {hint}" if hint else message


class FrameRejected(DriveError):
    """The drive kept receiving our frames damaged (CRC, COBS, length), even after resends."""

    exit_code = EXIT_UNREACHABLE
    summary = "the drive could not read our request intact"
    advice = "The link is damaging data: check the cable or connection, then try again."


class UnsupportedRequest(DriveError):
    """The drive does not know the message or the protocol version."""

    summary = "the drive does not understand this request"
    advice = (
        "Its firmware and this sealkeep speak different protocol versions: "
        "update one of them so they match."
    )


class BadRequest(DriveError):
    """The drive found the request body malformed or out of range."""

    exit_code = EXIT_PROTOCOL
    summary = "the drive rejected the request as malformed"
    advice = "Check the values given; if they are right, report this with the message."


class WrongState(DriveError):
    """The drive is not in a state that allows this (for instance claiming an owned drive)."""

    summary = "the drive is not in the right state for this"
    advice = (
        "Check its state with `sealkeep drives`: a blank drive must be claimed first, and "
        "an owned drive must be factory reset before it can be claimed again."
    )


class NotAuthenticated(DriveError):
    """The request needs an authenticated session and there is none."""

    exit_code = EXIT_AUTH
    summary = "this needs an authenticated session"
    advice = "Authenticate with the owner or custodian credential first."


class AuthenticationFailed(DriveError):
    """A proof did not match: the drive rejected the credential, or the drive's proof failed."""

    exit_code = EXIT_AUTH
    summary = "the drive rejected the credential"
    advice = (
        "Check the passphrase or key. Each failure is counted on the drive, and from the "
        "third on the drive waits longer before each answer (at most a minute); it never "
        "locks."
    )


class ImpostorDrive(AuthenticationFailed):
    """The drive on this port cannot prove the identity key it is known by."""

    summary = "the drive is not the one this domain knows: a look-alike, or another drive"
    advice = (
        "Nothing was sent to it. Check which drive is on this port; a drive that really "
        "is a member but was given a new board is replaced by a re-share."
    )


class LockedOut(DriveError):
    """A protocol 1 drive's lockout. Drives on current firmware never lock, and the reply
    carries no MAC: it is a drive on old firmware, or a forgery on the line."""

    exit_code = EXIT_AUTH
    summary = "the drive says it is locked (drives on current firmware never lock)"
    advice = (
        "Do not erase it on this word alone: anyone on the line can send this reply. Check "
        "its firmware with `sealkeep drives` and the cable."
    )


class Backoff(DriveError):
    """The drive is slowing down authentication attempts; ``retry_ms`` says for how long."""

    exit_code = EXIT_AUTH
    summary = "the drive is slowing down attempts after failed authentications"

    def hint(self) -> str:
        if self._advice is not None:
            return self._advice
        if self.retry_ms is not None:
            return f"Wait {self.retry_ms / 1000:g} s, then try again with the right credential."
        return "Wait a while, then try again with the right credential."


class SessionLost(DriveError):
    """The secure session ended: a frame failed its MAC, the link broke, or the drive restarted."""

    exit_code = EXIT_AUTH
    summary = "the secure session with the drive ended"
    advice = (
        "The link dropped or altered a frame, or the drive restarted: authenticate again and retry."
    )


class Permission(DriveError):
    """The session's role may not do this (a custodian session is read-only)."""

    exit_code = EXIT_AUTH
    summary = "this session is not allowed to do that"
    advice = "A custodian session is read-only: authenticate with the owner credential to write."


class PresenceRequired(DriveError):
    """Erasing wants the drive's custodian or a press of its presence button."""

    exit_code = EXIT_AUTH
    summary = "erasing needs the drive's custodian or someone at the drive"
    advice = (
        "Give the custodian's passphrase, or press the drive's button while retrying; the "
        "owner credential alone never erases."
    )


class RetentionKeeps(PresenceRequired):
    """An owner asked to delete a set the drive's retention rule still keeps."""

    summary = "the drive's retention rule keeps this set: too few newer sets are on it"
    advice = (
        "Give the custodian's passphrase, or press the drive's button while retrying, or "
        "wait until enough newer backups are on the drive."
    )


class BadName(DriveError):
    """The object name is not acceptable."""

    exit_code = EXIT_STORAGE
    summary = "the object name is not valid"
    advice = "Names are 1 to 64 characters of A-Z a-z 0-9 . _ - and do not start with a dot."


class ObjectNotFound(DriveError):
    """The drive holds no object of that name."""

    exit_code = EXIT_STORAGE
    summary = "the drive holds no object of that name"
    advice = "List the drive's objects to check the name."


class DriveFull(DriveError):
    """The object does not fit; nothing was written."""

    exit_code = EXIT_STORAGE
    summary = "the drive has no room for this object"
    advice = "Nothing was written. Delete objects no longer needed, or use a larger drive."


class BadOffset(DriveError):
    """Data sent at the wrong offset; ``expected`` is where the drive stands."""

    exit_code = EXIT_STORAGE
    summary = "the drive expected data at another offset"

    def hint(self) -> str:
        if self._advice is not None:
            return self._advice
        at = f" (it stands at byte {self.expected})" if self.expected is not None else ""
        return f"Retry the transfer: it resumes where the drive stands{at}."


class NoPutOpen(DriveError):
    """Data or a commit arrived with no upload of that object open."""

    exit_code = EXIT_STORAGE
    summary = "the drive has no upload of this object open"
    advice = "Start the upload again: it resumes where the drive stands."


class DigestMismatch(DriveError):
    """Data does not match its SHA-256 (at commit on the drive, or read back on the host)."""

    exit_code = EXIT_INTEGRITY
    summary = "the data does not match its SHA-256 digest"
    advice = (
        "The data changed or was damaged during the transfer and the drive discarded it; "
        "nothing stored was replaced. Check the source and retry."
    )


class DriveInternalError(DriveError):
    """The drive failed inside (flash error, out of memory, damaged state)."""

    summary = "the drive hit an internal error"
    advice = "Retry; if it persists, check the drive's flash and firmware (see its log)."


class ObjectExists(DriveError):
    """The drive keeps every object as written: an owner cannot replace one."""

    exit_code = EXIT_STORAGE
    summary = "the drive already holds an object of that name, and objects are never replaced"
    advice = "Store it under a new name; deleting an object needs its custodian or the button."


class OutdatedFirmware(DriveError):
    """The drive speaks an older protocol than this host."""

    exit_code = EXIT_PROTOCOL
    advice = (
        "Install current firmware on it: `sealkeep firmware install` on a blank board, or "
        "`sealkeep firmware update` on a drive of a domain."
    )


class ImageRefused(DriveError):
    """The drive refused a firmware image: damaged, signed by another vendor or not at all,
    or older than its security counter allows."""

    exit_code = EXIT_INTEGRITY
    summary = "the drive refused the firmware image"
    advice = "It keeps its firmware. Check the image with `sealkeep firmware inspect`."


_BY_CODE: dict[int, type[DriveError]] = {
    codes.MALFORMED_FRAME: FrameRejected,
    codes.CRC: FrameRejected,
    codes.FRAME_TOO_LARGE: FrameRejected,
    codes.UNKNOWN_MESSAGE: UnsupportedRequest,
    codes.BAD_BODY: BadRequest,
    codes.UNSUPPORTED_VERSION: UnsupportedRequest,
    codes.WRONG_STATE: WrongState,
    codes.NOT_AUTHENTICATED: NotAuthenticated,
    codes.AUTH_FAILED: AuthenticationFailed,
    codes.LOCKED_OUT: LockedOut,
    codes.BACKOFF: Backoff,
    codes.SESSION_MAC: SessionLost,
    codes.BAD_NAME: BadName,
    codes.NOT_FOUND: ObjectNotFound,
    codes.FULL: DriveFull,
    codes.BAD_OFFSET: BadOffset,
    codes.DIGEST_MISMATCH: DigestMismatch,
    codes.NO_PUT_OPEN: NoPutOpen,
    codes.INTERNAL: DriveInternalError,
    codes.PERMISSION: Permission,
    codes.PRESENCE_REQUIRED: PresenceRequired,
    codes.BAD_IMAGE: ImageRefused,
    codes.BAD_SIGNATURE: ImageRefused,
    codes.WRONG_VENDOR: ImageRefused,
    codes.DOWNGRADE: ImageRefused,
    codes.EXISTS: ObjectExists,
    codes.RETAINED: RetentionKeeps,
}


def error_class(code: int) -> type[DriveError]:
    """The DriveError subclass for a drive error code (DriveError itself when unknown)."""
    return _BY_CODE.get(code, DriveError)


def drive_error(
    code: int,
    text: str,
    *,
    serial: str | None = None,
    port: str | None = None,
    expected: int | None = None,
    retry_ms: int | None = None,
    summary: str | None = None,
    advice: str | None = None,
) -> DriveError:
    """The typed exception for an ERROR reply with this code and text."""
    return error_class(code)(
        code,
        text,
        serial=serial,
        port=port,
        expected=expected,
        retry_ms=retry_ms,
        summary=summary,
        advice=advice,
    )
