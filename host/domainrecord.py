"""The domain record: who makes a backup domain, authenticated two ways.

A record states the domain id, the threshold k, the members in share order (serial,
Argon2id salt and costs, and the drive's identity public key where it has one, so n is the
number of members), the id of the Shamir split it goes with and, when the domain has one,
its retention rule (each drive lets the owner drop a set once that many newer sets are
committed on it; records without it, and those of older sealkeep, mean custodians only),
and the domain's profile (the mechanisms its sets use, ``sealkeep.hsm_caps``) when it is
not ``standard``, so a recovery knows what the new token must offer.
It is MACed with ``HMAC-SHA256(owner root, "sealkeep domain record" ‖ body)``: the host
checks it with a rebuilt secret after combining shares, and the HSM that holds the domain
checks it with its owner key at any time.

Each custodian's sealed share (AES-GCM under a key only that custodian's passphrase gives)
carries its own copy of the record next to the share, so an insider who controls one drive
can rewrite the copy on that drive, never the copies sealed to the other custodians.
Recovery takes k and n from these sealed copies only (see :mod:`sealkeep.domain`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cbor2

from .errors import SealkeepError
from .hsm import owner_root_hmac
from .kdf import KdfError, KdfParams
from .manifest import STANDARD_PROFILE
from .shamir import SET_ID_LEN, Share, ShareFormatError

RECORD_FORMAT = 2  # 1 had no MAC, no KDF pins and no split id
SEALED_SHARE_FORMAT = 2  # 1 sealed the share alone
RECORD_MAC_LABEL = b"sealkeep domain record"
MAC_LEN = 32
MAX_RETENTION = 1000  # more sets than a drive's flash holds: a larger rule means never


class RecordError(SealkeepError):
    """A domain record or sealed share payload is malformed."""


@dataclass(frozen=True)
class Member:
    """One drive of the domain as the record pins it."""

    serial: str
    kdf: KdfParams
    identity: bytes | None = None

    def to_cbor(self) -> dict[str, object]:
        return {
            "serial": self.serial,
            "salt": self.kdf.salt,
            "kdf": self.kdf.to_map(),
            "identity": self.identity,
        }

    @classmethod
    def from_cbor(cls, obj: object) -> Member:
        if not isinstance(obj, dict):
            raise RecordError("a member of the domain record is not a map")
        serial, salt, kdf, identity = (obj.get(k) for k in ("serial", "salt", "kdf", "identity"))
        if not isinstance(serial, str) or not isinstance(salt, bytes) or not isinstance(kdf, dict):
            raise RecordError("a member of the domain record lacks its serial or KDF pins")
        if identity is not None and not isinstance(identity, bytes):
            raise RecordError(f"member {serial} of the domain record has a malformed identity")
        try:
            params = KdfParams.from_map(salt, kdf)
        except KdfError as exc:
            raise RecordError(f"member {serial} of the domain record: {exc}") from None
        return cls(serial, params, identity)


@dataclass(frozen=True)
class DomainRecord:
    """The ``domain`` object of every drive, and the record sealed with every share."""

    domain_id: bytes
    threshold: int
    roster: tuple[Member, ...]
    created: int
    set_id: bytes
    mac: bytes = field(default=b"", repr=False)
    #: newer sets on a drive that let the owner drop a set there; None: custodians only
    retention: int | None = None
    #: the domain's profile number (1: standard)
    profile: int = STANDARD_PROFILE

    @property
    def members(self) -> tuple[str, ...]:
        """The members' serials, in share order (share i belongs to member i)."""
        return tuple(m.serial for m in self.roster)

    @property
    def count(self) -> int:
        return len(self.roster)

    def member(self, serial: str) -> Member | None:
        return next((m for m in self.roster if m.serial == serial), None)

    def share_index(self, serial: str) -> int | None:
        """The index (1..n) of the share sealed to ``serial``."""
        return next((i for i, m in enumerate(self.roster, 1) if m.serial == serial), None)

    def body(self) -> bytes:
        """The bytes the MAC covers: everything but the MAC. The retention rule is a
        seventh field, there only when the domain has one (or a profile follows), so records
        without it read (and verify) as they always did; a profile other than ``standard`` is
        the eighth."""
        fields: list[object] = [
            RECORD_FORMAT,
            self.domain_id,
            self.threshold,
            [m.to_cbor() for m in self.roster],
            self.created,
            self.set_id,
        ]
        if self.retention is not None or self.profile != STANDARD_PROFILE:
            fields.append(self.retention)
        if self.profile != STANDARD_PROFILE:
            fields.append(self.profile)
        return bytes(cbor2.dumps(fields, canonical=True))

    def mac_input(self) -> bytes:
        """What the owner root's HMAC is computed over (the HSM computes the same)."""
        return RECORD_MAC_LABEL + self.body()

    def signed(self, secret: bytearray) -> DomainRecord:
        """This record with its MAC, computed from the domain secret."""
        return replace(self, mac=owner_root_hmac(secret, self.mac_input()))

    def verify_secret(self, secret: bytearray) -> bool:
        """True when the domain secret ``secret`` made this record's MAC."""
        return hmac.compare_digest(owner_root_hmac(secret, self.mac_input()), self.mac)

    def verify_with(self, owner_hmac: Callable[[bytes], bytes]) -> bool:
        """True when ``owner_hmac`` (the HSM's owner key) computes this record's MAC."""
        return hmac.compare_digest(owner_hmac(self.mac_input()), self.mac)

    def encode(self) -> bytes:
        return bytes(cbor2.dumps({"record": self.body(), "mac": self.mac}, canonical=True))

    @classmethod
    def decode(cls, data: bytes) -> DomainRecord:
        try:
            outer = cbor2.loads(data)
            if not isinstance(outer, dict):
                raise RecordError("the domain record is not a CBOR map")
            if outer.get("format") == 1:
                raise RecordError(
                    "the domain record was written by an older sealkeep, without a MAC"
                )
            body, mac = outer.get("record"), outer.get("mac")
            if not isinstance(body, bytes) or not isinstance(mac, bytes) or len(mac) != MAC_LEN:
                raise RecordError("the domain record lacks its body or MAC")
            fields = cbor2.loads(body)
        except RecordError:
            raise
        except Exception as exc:  # cbor2 raises several types on garbage
            raise RecordError(f"the domain record is not valid CBOR ({exc})") from None
        if (
            not isinstance(fields, list)
            or len(fields) not in (6, 7, 8)
            or fields[0] != RECORD_FORMAT
        ):
            raise RecordError("the domain record has an unknown format")
        _, domain_id, threshold, roster, created, set_id = fields[:6]
        retention = fields[6] if len(fields) >= 7 else None
        if retention is not None and not valid_retention(retention):
            raise RecordError("the domain record has a malformed retention rule")
        profile = fields[7] if len(fields) == 8 else STANDARD_PROFILE
        if not isinstance(profile, int) or isinstance(profile, bool) or profile < 1:
            raise RecordError("the domain record has a malformed profile")
        if (
            not isinstance(domain_id, bytes)
            or not isinstance(threshold, int)
            or isinstance(threshold, bool)
            or not isinstance(created, int)
            or not isinstance(roster, list)
            or not isinstance(set_id, bytes)
            or len(set_id) != SET_ID_LEN
            or not 1 <= threshold <= len(roster)
        ):
            raise RecordError("the domain record is malformed")
        members = tuple(Member.from_cbor(m) for m in roster)
        if len({m.serial for m in members}) != len(members):
            raise RecordError("the domain record lists a drive twice")
        record = cls(domain_id, threshold, members, created, set_id, mac, retention, profile)
        if record.body() != body:
            raise RecordError("the domain record is not in canonical form")
        return record

    def describe(self) -> str:
        return f"{self.threshold} of {self.count}: {', '.join(self.members)}"

    def to_json(self) -> dict[str, object]:
        return {
            "domain_id": self.domain_id.hex(),
            "threshold": self.threshold,
            "count": self.count,
            "drives": list(self.members),
            "created": self.created,
            "retention": self.retention,
        }


def valid_retention(value: object) -> bool:
    """A retention rule is a whole number of sets, at least 1."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_RETENTION


def new_record(
    domain_id: bytes,
    threshold: int,
    roster: Sequence[Member],
    created: int,
    share: Share,
    secret: bytearray,
    retention: int | None = None,
    profile: int = STANDARD_PROFILE,
) -> DomainRecord:
    """The signed record of a split whose shares carry ``share``'s split id."""
    record = DomainRecord(
        domain_id,
        threshold,
        tuple(roster),
        created,
        share.share_set.set_id,
        retention=retention,
        profile=profile,
    )
    return record.signed(secret)


# --- what a custodian's sealed share holds ------------------------------------------------------


def pack_sealed_share(share: Share, record: DomainRecord) -> bytes:
    """The plaintext sealed to a custodian: the share and the domain record, together."""
    return bytes(
        cbor2.dumps(
            {"format": SEALED_SHARE_FORMAT, "share": share.encode(), "record": record.encode()},
            canonical=True,
        )
    )


def unpack_sealed_share(data: bytes) -> tuple[Share, DomainRecord]:
    """The share and record of an unsealed payload; malformed ones raise :class:`RecordError`."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise RecordError(f"the sealed share is not valid CBOR ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != SEALED_SHARE_FORMAT:
        raise RecordError(
            "the sealed share has no domain record (sealed by an older sealkeep, or forged)"
        )
    share_bytes, record_bytes = obj.get("share"), obj.get("record")
    if not isinstance(share_bytes, bytes) or not isinstance(record_bytes, bytes):
        raise RecordError("the sealed share lacks its share or its domain record")
    try:
        share = Share.decode(share_bytes)
    except ShareFormatError as exc:
        raise RecordError(str(exc)) from None
    return share, DomainRecord.decode(record_bytes)


def inconsistency(share: Share, record: DomainRecord, serial: str, domain_id: bytes) -> str | None:
    """Why a sealed share and its own record disagree (with each other or the drive)."""
    if record.domain_id != domain_id:
        return f"its sealed record is of another domain ({record.domain_id.hex()[:16]})"
    index = record.share_index(serial)
    if index is None:
        return "its sealed record does not list this drive"
    if share.index != index:
        return f"it holds share {share.index}, and its sealed record gives it share {index}"
    if share.share_set.set_id != record.set_id:
        return "its share is of another split than its sealed record"
    if share.threshold != record.threshold or share.count != record.count:
        return (
            f"its share says {share.threshold} of {share.count}, its sealed record "
            f"{record.threshold} of {record.count}"
        )
    return None
