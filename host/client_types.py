"""What the drive client deals in: the answers of drive commands, the MAC state of an open
session, and a request on its way to a drive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .protocol import messages, transcript

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` in bytes while an object moves."""


class Role(IntEnum):
    """Who a session speaks for."""

    OWNER = transcript.ROLE_OWNER
    CUSTODIAN = transcript.ROLE_CUSTODIAN
    ENROL = transcript.ROLE_ENROL


@dataclass(frozen=True)
class Hello:
    """A drive's HELLO: who it is and what it holds, given to anyone who asks."""

    protocol: int
    firmware: str
    serial: str
    state: str
    domain: bytes | None
    max_frame: int
    capabilities: tuple[str, ...]
    salt: bytes | None
    kdf: dict[Any, Any] | None
    capacity: int
    free: int
    #: how long the drive would wait before answering the next attempt of each role
    owner_delay_ms: int = 0
    custodian_delay_ms: int = 0
    #: the drive's Ed25519 identity public key (protocol 2), pinned in the domain record
    identity: bytes | None = None
    #: newer sets that let the owner drop a set on this drive (its claim's rule); 0: none
    retention: int = 0

    @property
    def blank(self) -> bool:
        return self.state == messages.STATE_BLANK


@dataclass(frozen=True)
class ObjectInfo:
    """An object on a drive; ``digest`` (SHA-256) is None in listings."""

    name: str
    size: int
    digest: bytes | None = None
    #: from STAT, on a drive with a retention rule: how many sets committed after this set
    #: the drive holds (None: not said, e.g. not a set or stored before numbering)
    newer: int | None = None


@dataclass(frozen=True)
class PutResult:
    """A committed put: the drive's digest and size; where it started and how often it
    recovered from a lost session or a silent drive."""

    name: str
    size: int
    digest: bytes
    resumed_from: int
    recoveries: int


@dataclass(frozen=True)
class VerifyResult:
    """The drive rehashed what it stores: ``intact`` when that matches the recorded digest."""

    digest: bytes
    size: int
    intact: bool


@dataclass(frozen=True)
class Space:
    capacity: int
    free: int
    #: exact failed attempts on record per role (said only inside a session)
    owner_failures: int = 0
    custodian_failures: int = 0


class OpenSession:
    """MAC state of an open session (one SessionMac per direction) and its role."""

    __slots__ = ("d2h", "h2d", "role")

    def __init__(self, role: int, key_h2d: bytes, key_d2h: bytes) -> None:
        self.role = role
        self.h2d = transcript.SessionMac(key_h2d)
        self.d2h = transcript.SessionMac(key_d2h)


class PendingRequest:
    """A request on its way: what to resend, what reply it wants, when to give up."""

    __slots__ = (
        "deadline",
        "end",
        "expect",
        "heard",
        "msg_id",
        "resend_due",
        "resend_wire",
        "resends",
        "seq",
        "session",
        "timeout",
    )

    def __init__(
        self, seq: int, msg_id: int, expect: int, timeout: float, session: OpenSession | None
    ) -> None:
        self.seq = seq
        self.msg_id = msg_id
        self.expect = expect
        self.timeout = timeout
        self.session = session
        self.deadline = 0.0
        self.resends = 0
        self.resend_due = 0.0  # when to send resend_wire again (0: nothing to resend)
        self.resend_wire = b""
        self.end = 0  # for transfers: the offset just past this request's data
        self.heard = 0  # bytes received while waiting for this reply
