"""The backup domain: its drives, and the ceremonies that create, recover and re-share it.

A backup domain is a 64-byte secret (an AES wrap key and an HMAC root for the drives' owner
credentials, see :mod:`sealkeep.hsm`) held non-extractable by an HSM slot and split k-of-n
among the domain's drives. Each drive of the domain holds:

- its claim: the owner credential (derived from the domain secret and the drive's serial,
  recomputed by the HSM whenever the host needs an owner session), the custodian credential
  and the Argon2id salt and parameters (from its custodian's passphrase), and the domain id;
- ``share``: its Shamir share and a copy of the domain record, sealed together (AES-GCM)
  under the key derived from the passphrase, with the domain id and serial as additional
  data; recovery takes k and n from these sealed copies only;
- ``domain``: the domain record (domain id, k, the members in share order with the KDF
  parameters and identity key pinned for each, the split id), MACed with the owner root, so
  later commands know which drives make the set (see :mod:`sealkeep.domainrecord`);
- ``set-<id>``: the backup sets (see :mod:`sealkeep.backupset`).

A domain may have a retention rule N, given to each drive in its claim and kept in the
record: a drive then lets the owner drop a set once N sets committed after it are on that
drive. Without one only a custodian (or the drive's button) deletes.

The secret is in host memory only during a ceremony (create, recover, re-share), in a
``bytearray`` overwritten before the ceremony returns, whatever happens (what that does and
does not promise: docs/threat-model.md, "Memory").

Argon2id costs: production defaults (64 MiB, 3 passes); ``SEALKEEP_KDF_MEMORY_KIB`` and
``SEALKEEP_KDF_TIME`` override them for new claims (tests use tiny values). A drive says
which parameters its own claim used, but that HELLO is unauthenticated: costs below the
host's floor (the production defaults unless ``SEALKEEP_KDF_FLOOR=m=KIB,t=PASSES`` lowers
it, which only tests do) are refused before a passphrase is derived with them, and the
parameters of every drive are pinned in the authenticated domain record.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pkcs11 import Mechanism
from pkcs11.exceptions import PKCS11Error

from . import manifest, shamir
from .client import DriveClient, Hello, Role
from .domainrecord import (
    MAX_RETENTION,
    DomainRecord,
    Member,
    RecordError,
    inconsistency,
    new_record,
    pack_sealed_share,
    unpack_sealed_share,
    valid_retention,
)
from .drivespec import DriveAddress, parse_drives
from .errors import (
    EXIT_AUTH,
    EXIT_GENERIC,
    EXIT_INTEGRITY,
    EXIT_STORAGE,
    EXIT_UNREACHABLE,
    AuthenticationFailed,
    Backoff,
    DigestMismatch,
    DriveError,
    ImpostorDrive,
    LinkError,
    LockedOut,
    ObjectNotFound,
    ProtocolError,
    SealkeepError,
    where,
)
from .hsm import (
    OWNER_KEY_INFO,
    DomainError,
    HsmSession,
    domain_id_from_secret,
    new_domain_secret,
    owner_credential_from_secret,
)
from .hsm_caps import PORTABLE, PROFILES, STANDARD, MechanismMissing, Profile
from .kdf import (
    DEFAULT_M_COST_KIB,
    DEFAULT_T_COST,
    PRODUCTION_FLOOR,
    CustodianKeys,
    KdfError,
    KdfFloor,
    KdfParams,
    ShareSealError,
    derive_custodian_keys,
    seal_share,
    unseal_share,
)
from .pins import InputError, Passphrases
from .protocol import messages
from .transport import open_transport

SET_SIZES = (3, 5, 7)
SHARE_OBJECT = "share"
DOMAIN_OBJECT = "domain"
SET_PREFIX = messages.SET_PREFIX
OBJECT_OVERHEAD = 40  # what a drive stores per object besides its data (digest and size)

ENV_KDF_MEMORY = "SEALKEEP_KDF_MEMORY_KIB"
ENV_KDF_TIME = "SEALKEEP_KDF_TIME"
ENV_KDF_FLOOR = "SEALKEEP_KDF_FLOOR"
KDF_HELP = (
    f"Argon2id costs for new passphrases: {DEFAULT_M_COST_KIB} KiB and {DEFAULT_T_COST} passes "
    f"unless ${ENV_KDF_MEMORY} / ${ENV_KDF_TIME} say otherwise; drives announcing less than "
    f"the floor (the same unless ${ENV_KDF_FLOOR}=m=KIB,t=PASSES lowers it) are refused. "
    "Lower them only for tests."
)

Note = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --- errors ---------------------------------------------------------------------------------


class CeremonyError(SealkeepError):
    """A domain ceremony cannot go on (or could not finish); the message says what to do."""


class DriveProblems(SealkeepError):
    """Several drives (or one) cannot be used; every one is named with its reason."""

    def __init__(
        self, headline: str, problems: Sequence[tuple[str, str]], advice: str = ""
    ) -> None:
        self.headline = headline
        self.problems = tuple(problems)
        text = headline
        if self.problems:
            text += ": " + "; ".join(f"{name}: {reason}" for name, reason in self.problems)
        if advice:
            text += f". {advice}"
        super().__init__(text)


class DrivesUnreachable(DriveProblems):
    exit_code = EXIT_UNREACHABLE


class DrivesRefused(DriveProblems):
    exit_code = EXIT_AUTH


class DrivesFull(DriveProblems):
    exit_code = EXIT_STORAGE


class DrivesCorrupt(DriveProblems):
    exit_code = EXIT_INTEGRITY


_BY_CODE: dict[int, type[DriveProblems]] = {
    EXIT_UNREACHABLE: DrivesUnreachable,
    EXIT_AUTH: DrivesRefused,
    EXIT_STORAGE: DrivesFull,
    EXIT_INTEGRITY: DrivesCorrupt,
}
# Which family an error made of several problems belongs to: the most serious one.
_PRIORITY = (EXIT_INTEGRITY, EXIT_AUTH, EXIT_STORAGE, EXIT_UNREACHABLE)


def drive_problems(headline: str, problems: Sequence[Problem], advice: str = "") -> DriveProblems:
    """One error naming every problem; its exit code is the most serious problem's."""
    codes = {p.code for p in problems}
    cls: type[DriveProblems] = DriveProblems
    for code in _PRIORITY:
        if code in codes:
            cls = _BY_CODE[code]
            break
    return cls(headline, [(p.drive, p.reason) for p in problems], advice)


@dataclass(frozen=True)
class Problem:
    """Why one drive cannot be used: its name, the reason, the exit-code family."""

    drive: str
    reason: str
    code: int = EXIT_GENERIC
    foreign: bool = False
    """The drive is blank or of another domain: not this domain's concern (skipped)."""

    def to_json(self) -> dict[str, object]:
        return {"drive": self.drive, "problem": self.reason, "exit_code": self.code}


def explain(exc: BaseException) -> str:
    """A short reason for an error, without the drive's name (the caller gives it)."""
    if isinstance(exc, DriveError):
        text = exc.describe()
        if exc.text:
            text += f" ({exc.text})"
        return text
    if isinstance(exc, LinkError | ProtocolError):
        message = str(exc)
        return message.split(". To fix:")[0]
    return str(exc) or type(exc).__name__


def error_code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, SealkeepError) else EXIT_GENERIC


# --- settings ---------------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"${name} must be a whole number, not {raw!r}") from None


def kdf_floor() -> KdfFloor:
    """The cheapest Argon2id costs this host accepts: a host setting, never a drive's word.

    ``$SEALKEEP_KDF_FLOOR`` (``m=KIB,t=PASSES``, either part optional) replaces the
    production floor; the test suite lowers it to run claims with tiny costs.
    """
    raw = os.environ.get(ENV_KDF_FLOOR, "").strip()
    if not raw:
        return PRODUCTION_FLOOR
    values = {"m": PRODUCTION_FLOOR.m_cost_kib, "t": PRODUCTION_FLOOR.t_cost}
    for part in raw.split(","):
        name, sep, number = part.strip().partition("=")
        if not sep or name.strip() not in values or not number.strip().isdigit():
            raise InputError(
                f"${ENV_KDF_FLOOR} must read like `m=65536,t=3` (KiB and passes), not {raw!r}"
            )
        values[name.strip()] = int(number)
    return KdfFloor(t_cost=values["t"], m_cost_kib=values["m"])


def new_kdf_params() -> KdfParams:
    """Argon2id parameters with a fresh salt, for one new claim (never below the floor)."""
    t_cost = _env_int(ENV_KDF_TIME, DEFAULT_T_COST)
    m_cost = _env_int(ENV_KDF_MEMORY, DEFAULT_M_COST_KIB)
    try:
        params = KdfParams.new(t_cost=t_cost, m_cost_kib=m_cost)
    except KdfError as exc:
        raise InputError(f"{exc} (check ${ENV_KDF_TIME} and ${ENV_KDF_MEMORY})") from None
    shortfall = kdf_floor().shortfall(params)
    if shortfall is not None:
        raise InputError(
            f"${ENV_KDF_TIME} and ${ENV_KDF_MEMORY} ask for {shortfall}: raise them (only "
            f"tests lower ${ENV_KDF_FLOOR} as well)"
        )
    return params


def drive_kdf_params(hello: Hello, floor: KdfFloor | None = None) -> KdfParams:
    """The Argon2id parameters a drive announces, refused when unusable or below the floor.

    HELLO is unauthenticated, so whoever answers on the port chooses these: nothing is
    derived with them (let alone proven to the drive) until they pass the host's floor.
    """
    if hello.salt is None or hello.kdf is None:
        raise KdfError("its claim lacks the KDF salt or parameters")
    try:
        params = KdfParams.from_map(hello.salt, hello.kdf)
    except KdfError as exc:
        raise KdfError(f"its KDF parameters are unusable ({exc})") from None
    shortfall = (floor or kdf_floor()).shortfall(params)
    if shortfall is not None:
        raise KdfError(
            f"it announces {shortfall}: no drive claimed by this host does, so it may be an "
            "impostor fishing for a passphrase proof that is cheap to attack; no passphrase "
            "was tried on it"
        )
    return params


def default_threshold(count: int) -> int:
    """A majority: 2 of 3, 3 of 5, 4 of 7."""
    return count // 2 + 1


def check_set_size(count: int) -> None:
    if count not in SET_SIZES:
        raise InputError(
            f"a backup domain has 3, 5 or 7 drives, and {count} "
            f"{'was' if count == 1 else 'were'} given: list 3, 5 or 7 drives with --drives"
        )


def check_threshold(threshold: int | None, count: int) -> tuple[int, list[str]]:
    """The threshold to use, and warnings about it."""
    k = default_threshold(count) if threshold is None else threshold
    if not 1 <= k <= count:
        raise InputError(
            f"the threshold must be between 1 and the number of drives ({count}), not {k}"
        )
    warnings = []
    if k == 1:
        warnings.append(
            "warning: with a threshold of 1 any single drive and its passphrase rebuild the "
            "domain key: a lost drive plus a guessed passphrase exposes every backup"
        )
    return k, warnings


def check_retention(retention: int | None) -> int | None:
    """The retention rule to give the drives: None (custodians only) or 1 and up."""
    if retention is not None and not valid_retention(retention):
        raise InputError(
            f"retention is how many newer sets must be on a drive before the owner may drop "
            f"a set there: 1 to {MAX_RETENTION}, not {retention} (leave it out to let only "
            "custodians delete sets)"
        )
    return retention


def share_aad(domain_id: bytes, serial: str) -> bytes:
    """What a sealed share is bound to: the domain and the drive."""
    return bytes(domain_id) + serial.encode()


def wipe(buffer: bytearray) -> None:
    for i in range(len(buffer)):
        buffer[i] = 0


# --- drives -----------------------------------------------------------------------------------


Opener = Callable[[str, float], DriveClient]


def open_drive(address: str, timeout: float) -> DriveClient:
    """A connected client for the drive at ``address``."""
    return DriveClient(open_transport(address), timeout=timeout)


@dataclass
class Drive:
    """One drive given on the command line: its client and HELLO, or why it is unreachable.

    ``expected`` is the serial a drives file says is at this address (None if unknown).
    """

    address: str
    client: DriveClient | None = None
    hello: Hello | None = None
    error: SealkeepError | None = None
    expected: str | None = None

    @property
    def serial(self) -> str | None:
        return self.hello.serial if self.hello is not None else self.expected

    @property
    def name(self) -> str:
        return where(self.serial, self.address)

    @property
    def reachable(self) -> bool:
        return self.client is not None and self.hello is not None

    @property
    def domain(self) -> bytes | None:
        return self.hello.domain if self.hello is not None else None

    @property
    def blank(self) -> bool:
        return self.hello is not None and self.hello.blank

    def use(self) -> tuple[DriveClient, Hello]:
        if self.client is None or self.hello is None:
            raise self.error or LinkError(f"{self.name} is not connected", port=self.address)
        return self.client, self.hello

    def problem(self) -> Problem:
        """Why this drive is unreachable."""
        error = self.error or LinkError("not connected")
        return Problem(self.name, explain(error), error_code(error))

    def refresh(self) -> Hello:
        client, _ = self.use()
        self.hello = client.hello()
        return self.hello

    def close(self) -> None:
        if self.client is not None:
            with suppress(Exception):
                self.client.close()
            self.client = None


class DriveGroup:
    """The drives of a command, connected and asked HELLO in parallel; closed on exit."""

    def __init__(
        self,
        addresses: Iterable[str | DriveAddress],
        timeout: float = 5.0,
        opener: Opener | None = None,
    ) -> None:
        self.drives: list[Drive] = []
        for item in addresses:
            port, serial = (item, None) if isinstance(item, str) else (item.port, item.serial)
            if all(d.address != port for d in self.drives):
                self.drives.append(Drive(port, expected=serial))
        self.timeout = timeout
        self._opener = opener or open_drive

    @classmethod
    def from_spec(cls, spec: str | None, timeout: float = 5.0) -> DriveGroup:
        """The drives ``--drives SPEC`` names (see :mod:`sealkeep.drivespec`)."""
        return cls(parse_drives(spec), timeout)

    def __enter__(self) -> DriveGroup:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Drive]:
        return iter(self.drives)

    def __len__(self) -> int:
        return len(self.drives)

    def _connect_one(self, drive: Drive) -> None:
        try:
            drive.client = self._opener(drive.address, self.timeout)
        except SealkeepError as exc:
            drive.error = exc
            return
        try:
            hello = drive.client.hello()
        except SealkeepError as exc:
            drive.error = exc
            drive.close()
            return
        if drive.expected is not None and hello.serial != drive.expected:
            drive.error = InputError(
                f"the drive at {drive.address} is {hello.serial}, not {drive.expected} as the "
                "drives file says: check which drive is on this port"
            )
            drive.close()
            return
        drive.hello = hello

    def connect(self) -> None:
        pending = [d for d in self.drives if d.client is None]
        if len(pending) <= 1:
            for drive in pending:
                self._connect_one(drive)
            return
        with ThreadPoolExecutor(max_workers=min(len(pending), 8)) as pool:
            list(pool.map(self._connect_one, pending))
        serials = Counter(d.serial for d in self.drives if d.serial is not None)
        for serial, count in serials.items():
            if count > 1:
                raise InputError(f"drive {serial} is listed {count} times under two addresses")

    def close(self) -> None:
        for drive in self.drives:
            drive.close()

    @property
    def reachable(self) -> list[Drive]:
        return [d for d in self.drives if d.reachable]

    @property
    def unreachable(self) -> list[Drive]:
        return [d for d in self.drives if not d.reachable]

    def of_domain(self, domain_id: bytes) -> list[Drive]:
        return [d for d in self.reachable if d.domain == domain_id]

    def domains(self) -> Counter[bytes]:
        return Counter(d.domain for d in self.reachable if d.domain is not None)


def classify(drives: Sequence[Drive], domain_id: bytes) -> tuple[list[Drive], list[Problem]]:
    """The drives of ``domain_id``, and a named problem for each other drive given."""
    members: list[Drive] = []
    problems: list[Problem] = []
    for drive in drives:
        if not drive.reachable:
            problems.append(drive.problem())
        elif drive.blank:
            problems.append(
                Problem(drive.name, "blank: it belongs to no backup domain", foreign=True)
            )
        elif drive.domain != domain_id:
            other = drive.domain.hex() if drive.domain else "?"
            problems.append(
                Problem(
                    drive.name,
                    f"belongs to another backup domain ({short(other)})",
                    foreign=True,
                )
            )
        else:
            members.append(drive)
    return members, problems


def short(hex_id: str) -> str:
    return hex_id[:16]


class OwnerKeys:
    """Drives' owner credentials, computed in the HSM with the domain's owner key.

    The same value as :meth:`HsmSession.owner_credential`, computed once per drive with the
    owner key the session has found (finding an object scans the whole token, which costs
    ~0.2 s per search in a SoftHSM2 token of 10,000 objects).
    """

    def __init__(self, session: HsmSession) -> None:
        self.session = session
        self._key: object | None = None
        self._cache: dict[str, bytes] = {}

    def _owner_key(self) -> object:
        if self._key is None:
            _, owner = self.session.domain_keys()
            if owner is None:
                self.session.require_domain()
            self._key = owner
        return self._key

    def __call__(self, serial: str) -> bytes:
        credential = self._cache.get(serial)
        if credential is None:
            key: Any = self._owner_key()
            try:
                credential = bytes(
                    key.sign(OWNER_KEY_INFO + serial.encode(), mechanism=Mechanism.SHA256_HMAC)
                )
            except PKCS11Error as exc:
                raise DomainError(
                    f"the domain owner key of {self.session.where} cannot compute an HMAC: {exc!r}"
                ) from None
            self._cache[serial] = credential
        return credential

    def mac(self, message: bytes) -> bytes:
        """``HMAC-SHA256(owner root, message)`` computed by the HSM (checks domain records)."""
        key: Any = self._owner_key()
        try:
            return bytes(key.sign(message, mechanism=Mechanism.SHA256_HMAC))
        except PKCS11Error as exc:
            raise DomainError(
                f"the domain owner key of {self.session.where} cannot compute an HMAC: {exc!r}"
            ) from None


def owner_login(session: HsmSession, drive: Drive, owners: OwnerKeys | None = None) -> DriveClient:
    """An owner session on ``drive`` with the credential the HSM computes for its serial."""
    client, hello = drive.use()
    credential = (owners or OwnerKeys(session))(hello.serial)
    client.authenticate(Role.OWNER, credential)
    return client


def read_record(client: DriveClient, owners: OwnerKeys | None = None) -> DomainRecord:
    """The drive's domain record; with ``owners``, only one whose MAC the HSM confirms."""
    record = DomainRecord.decode(client.get(DOMAIN_OBJECT))
    if owners is not None and not record.verify_with(owners.mac):
        raise RecordError("the domain record's MAC does not verify: it was altered or forged")
    return record


def login_domain_drives(
    session: HsmSession,
    drives: Sequence[Drive],
    domain_id: bytes,
) -> tuple[list[Drive], list[Problem], DomainRecord | None]:
    """Owner sessions on the drives of ``domain_id``; the others named; the domain record."""
    members, problems = classify(drives, domain_id)
    logged: list[Drive] = []
    record: DomainRecord | None = None
    owners = OwnerKeys(session)
    for drive in members:
        try:
            client = owner_login(session, drive, owners)
        except SealkeepError as exc:
            problems.append(Problem(drive.name, explain(exc), error_code(exc)))
            continue
        logged.append(drive)
        if record is None:
            try:
                record = read_record(client, owners)
            except (ObjectNotFound, RecordError):
                record = None  # the next drive's record may do
            except SealkeepError as exc:
                problems.append(Problem(drive.name, explain(exc), error_code(exc)))
                logged.remove(drive)
    return logged, problems, record


# --- create -----------------------------------------------------------------------------------


@dataclass
class CreateResult:
    domain_id: bytes
    threshold: int
    drives: list[tuple[str, str]]  # (serial, address)
    slot_id: int
    token: str
    seconds: float
    warnings: list[str] = field(default_factory=list)
    unenforced: list[str] = field(default_factory=list)
    retention: int | None = None
    profile: Profile = STANDARD

    def to_json(self) -> dict[str, object]:
        return {
            "domain_id": self.domain_id.hex(),
            "threshold": self.threshold,
            "count": len(self.drives),
            "drives": [{"serial": s, "port": a} for s, a in self.drives],
            "slot": self.slot_id,
            "token": self.token,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
            "not_enforced_by_token": self.unenforced,
            "retention": self.retention,
            "profile": self.profile.name,
        }


def _derive_all(passphrases: Sequence[str], params: Sequence[KdfParams]) -> list[CustodianKeys]:
    """Argon2id for every drive, on as many cores as it makes sense to use."""
    workers = max(1, min(len(passphrases), os.cpu_count() or 1, 4))
    if workers == 1:
        return [derive_custodian_keys(p, k) for p, k in zip(passphrases, params, strict=True)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(derive_custodian_keys, passphrases, params))


def _roster(drives: Sequence[Drive], params: Sequence[KdfParams]) -> list[Member]:
    """The members a new record pins: serial, KDF parameters, identity key (if any)."""
    return [
        Member(d.use()[1].serial, p, d.use()[1].identity)
        for d, p in zip(drives, params, strict=True)
    ]


def require_drives(drives: Sequence[Drive], what: str) -> None:
    unreachable = [d.problem() for d in drives if not d.reachable]
    if unreachable:
        raise drive_problems(
            f"cannot {what}: some drives cannot be reached",
            unreachable,
            "Check that they are plugged in (or that the emulator runs) and try again.",
        )


@dataclass
class _Claim:
    """What one drive gets in a ceremony."""

    drive: Drive
    serial: str
    keys: CustodianKeys = field(repr=False)
    params: KdfParams
    share: shamir.Share = field(repr=False)
    extra: list[tuple[str, bytes]] = field(default_factory=list, repr=False)


def _install(
    claim: _Claim,
    secret: bytearray,
    domain_id: bytes,
    record: DomainRecord,
    claimed: list[_Claim],
) -> None:
    """Claim a blank drive for the domain and store its share, the record and ``extra``.

    The drive is added to ``claimed`` once it may hold the claim (also when the link broke
    while claiming), so a failure later can undo it.
    """
    client, hello = claim.drive.use()
    owner = owner_credential_from_secret(secret, claim.serial)
    try:
        client.claim(
            owner,
            claim.keys.credential,
            claim.params.salt,
            claim.params.to_map(),
            domain_id,
            identity=hello.identity,
            retention=record.retention or 0,
        )
    except LinkError:
        claimed.append(claim)
        raise
    claimed.append(claim)
    client.authenticate(Role.OWNER, owner)
    sealed = seal_share(
        claim.keys, pack_sealed_share(claim.share, record), share_aad(domain_id, claim.serial)
    )
    objects = [(SHARE_OBJECT, sealed), (DOMAIN_OBJECT, record.encode()), *claim.extra]
    for name, data in objects:
        client.put(name, data)
    # Read back what the drive holds: every digest, rehashed on the drive.
    for name, data in objects:
        check = client.verify(name)
        if not check.intact or check.size != len(data):
            raise DigestMismatch(
                0,
                f"{name} does not read back intact",
                serial=claim.serial,
                port=claim.drive.address,
                summary="what was written does not read back intact",
            )


def _undo(claims: Iterable[_Claim], secret: bytearray) -> tuple[list[str], list[Problem]]:
    """Factory reset drives claimed by this ceremony; (undone, could not).

    A reset needs the custodian's session (an owner cannot erase): the ceremony still holds
    each new custodian's key."""
    undone: list[str] = []
    failed: list[Problem] = []
    for claim in claims:
        try:
            client, _ = claim.drive.use()
            if client.hello().blank:
                undone.append(claim.serial)  # the claim never took hold
                continue
            client.authenticate(Role.CUSTODIAN, claim.keys.credential)
            client.factory_reset()
            undone.append(claim.serial)
        except SealkeepError as exc:
            failed.append(Problem(claim.drive.name, explain(exc), error_code(exc)))
    return undone, failed


def _undo_message(what: str, exc: BaseException, undone: list[str], failed: list[Problem]) -> str:
    text = f"{what}: {exc}"
    if undone:
        text += f" Undone: drive(s) {', '.join(undone)} are blank again."
    if failed:
        text += (
            " Could not undo "
            + "; ".join(f"{p.drive} ({p.reason})" for p in failed)
            + ": factory reset those with their presence button before retrying."
        )
    return text + " Nothing was stored in the slot; fix the problem and run the command again."


def create_domain(
    session: HsmSession,
    drives: Sequence[Drive],
    passphrases: Passphrases,
    threshold: int | None = None,
    note: Note = _quiet,
    retention: int | None = None,
    profile: Profile | None = None,
) -> CreateResult:
    """Create a backup domain over ``drives`` (3, 5 or 7 blank drives) and slot ``session``.

    ``profile`` (the mechanisms its sets use) is chosen from what the token can do unless
    given; a domain that must move between tokens of different makes takes ``portable``.

    ``retention`` N lets the owner drop a set from a drive once N newer sets are on it
    (None: only custodians delete). Nothing changes until every check has passed; if a
    drive fails midway, the drives already claimed are factory reset (their owner
    credentials derive from the secret, still in memory then) and the slot is left
    untouched.
    """
    started = time.monotonic()
    check_set_size(len(drives))
    check_retention(retention)
    k, warnings = check_threshold(threshold, len(drives))
    for text in warnings:
        note(text)
    require_drives(drives, "create the domain")
    not_blank = [
        Problem(d.name, f"not blank: it belongs to backup domain {short((d.domain or b'').hex())}")
        for d in drives
        if not d.blank
    ]
    if not_blank:
        raise drive_problems(
            "the drives of a new domain must be blank",
            not_blank,
            "Choose blank drives, or factory reset these first (which erases them).",
        )
    existing = session.domain_id()
    if existing is not None:
        raise DomainError(
            f"{session.where} already holds backup domain {existing.hex()}: a slot holds one "
            "domain; use another slot, or `sealkeep domain reshare` to change this one"
        )
    # Tried with throwaway objects before any drive is claimed (a full wrap and unwrap with
    # the profile's mechanisms): a token without a mechanism every set needs, or that
    # accepts protections and ignores them, is refused here, and what it lacks is said.
    chosen_profile = session.choose_profile(profile)
    if profile is None and chosen_profile is not STANDARD:
        note(
            f"the token lacks what the standard profile needs, so the domain uses the "
            f"{chosen_profile.name} profile: {chosen_profile.summary}"
        )
    unenforced = session.probe_protections(chosen_profile)
    for text in unenforced:
        note(f"not enforced by the token: {text}")

    serials = [d.use()[1].serial for d in drives]
    chosen = [passphrases.new(serial) for serial in serials]
    params = [new_kdf_params() for _ in serials]
    note(f"deriving custodian keys for {len(serials)} drives (Argon2id)")
    keys = _derive_all(chosen, params)

    secret = new_domain_secret()
    claimed: list[_Claim] = []
    try:
        domain_id = domain_id_from_secret(secret)
        shares = shamir.split(secret, k, len(drives))
        record = new_record(
            domain_id,
            k,
            _roster(drives, params),
            int(time.time()),
            shares[0],
            secret,
            retention,
            chosen_profile.number,
        )
        claims = [
            _Claim(d, s, key, p, share)
            for d, s, key, p, share in zip(drives, serials, keys, params, shares, strict=True)
        ]
        for claim in claims:
            try:
                _install(claim, secret, domain_id, record, claimed)
                claim.drive.refresh()
                note(f"drive {claim.serial}: claimed, share {claim.share.index} stored")
            except BaseException as exc:
                undone, failed = _undo(claimed, secret)
                if not isinstance(exc, SealkeepError):
                    raise
                raise CeremonyError(
                    _undo_message(
                        f"creating the domain failed at {claim.drive.name}", exc, undone, failed
                    )
                ) from exc
        try:
            session.import_domain(secret, profile=chosen_profile)
        except BaseException as exc:
            undone, failed = _undo(claimed, secret)
            if not isinstance(exc, SealkeepError):
                raise
            raise CeremonyError(
                _undo_message(
                    f"the domain key could not be stored in {session.where}", exc, undone, failed
                )
            ) from exc
        return CreateResult(
            domain_id,
            k,
            [(c.serial, c.drive.address) for c in claims],
            session.slot_id,
            session.info.label,
            time.monotonic() - started,
            warnings,
            unenforced,
            retention,
            chosen_profile,
        )
    finally:
        wipe(secret)


# --- shares from custodians -------------------------------------------------------------------


@dataclass
class Unlocked:
    """A drive whose custodian's passphrase opened it, and what it gave."""

    drive: Drive
    serial: str
    passphrase: str = field(repr=False)
    keys: CustodianKeys = field(repr=False)
    share: shamir.Share = field(repr=False)
    sealed: bytes = field(repr=False)
    #: the domain record sealed with the share (authenticated by this custodian's key only)
    record: DomainRecord
    hello: Hello


@dataclass
class Gathered:
    """The shares custodians unlocked, and every drive that gave none (named)."""

    domain_id: bytes
    unlocked: list[Unlocked]
    problems: list[Problem]

    def shares(self) -> dict[str, shamir.Share]:
        return {f"drive {u.serial}": u.share for u in self.unlocked}


def choose_domain(group: Sequence[Drive]) -> bytes:
    """The domain most of the given drives belong to."""
    counts = Counter(d.domain for d in group if d.reachable and d.domain is not None)
    if not counts:
        problems = [
            d.problem() if not d.reachable else Problem(d.name, "blank: it holds no share")
            for d in group
        ]
        raise drive_problems("none of the drives belongs to a backup domain", problems)
    ranked = counts.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        names = ", ".join(f"{short(d.hex())} ({n} drives)" for d, n in ranked)
        raise InputError(
            f"the drives belong to several backup domains equally ({names}): give only the "
            "drives of the domain to rebuild"
        )
    return ranked[0][0]


def _kdf_params(hello: Hello) -> KdfParams | None:
    try:
        return drive_kdf_params(hello)
    except KdfError:
        return None  # _unlock names the drive


def _unlock(
    drive: Drive,
    passphrases: Passphrases,
    domain_id: bytes,
    note: Note,
    prepared: CustodianKeys | None = None,
) -> Unlocked | Problem:
    client, hello = drive.use()
    serial = hello.serial
    name = drive.name
    try:
        params = drive_kdf_params(hello)
    except KdfError as exc:
        return Problem(name, str(exc), EXIT_INTEGRITY)
    keys: CustodianKeys | None = None
    passphrase = ""
    tries = 0
    while keys is None:
        tries += 1
        try:
            passphrase = passphrases.existing(serial)
        except InputError as exc:
            note(f"drive {serial}: {exc}; this drive is left out")
            return Problem(name, str(exc), exc.exit_code)
        if prepared is not None and tries == 1:
            candidate = prepared
        else:
            candidate = derive_custodian_keys(passphrase, params)
        if tries == 1 and hello.custodian_delay_ms:
            note(
                f"drive {serial}: after earlier wrong passphrases it answers only after "
                f"{hello.custodian_delay_ms / 1000:.1f} s; waiting for it"
            )
        try:
            client.authenticate(Role.CUSTODIAN, candidate.credential)
        except ImpostorDrive as exc:
            return Problem(name, explain(exc), EXIT_AUTH)
        except AuthenticationFailed:
            if passphrases.retry() and tries < 3:
                note(
                    f"drive {serial}: wrong passphrase, try again (from the third wrong one "
                    "on, the drive waits longer before each answer, at most a minute)"
                )
                continue
            return Problem(name, "wrong passphrase (the drive refused it)", EXIT_AUTH)
        except LockedOut as exc:
            return Problem(name, explain(exc), EXIT_AUTH)
        except Backoff as exc:
            return Problem(name, f"slowing down attempts: {exc.hint()}", EXIT_AUTH)
        except SealkeepError as exc:
            return Problem(name, explain(exc), error_code(exc))
        keys = candidate
    try:
        sealed = client.get(SHARE_OBJECT)
    except ObjectNotFound:
        return Problem(name, "holds no share", EXIT_INTEGRITY)
    except DigestMismatch:
        return Problem(
            name, "corrupt share: it does not match its digest on the drive", EXIT_INTEGRITY
        )
    except SealkeepError as exc:
        return Problem(name, explain(exc), error_code(exc))
    finally:
        with suppress(SealkeepError):
            client.end_session()
    try:
        raw = unseal_share(keys, sealed, share_aad(domain_id, serial))
        share, record = unpack_sealed_share(raw)
    except ShareSealError:
        return Problem(
            name,
            "corrupt share: its sealed share does not open although the passphrase is right",
            EXIT_INTEGRITY,
        )
    except RecordError as exc:
        return Problem(name, f"corrupt share: {exc}", EXIT_INTEGRITY)
    reason = inconsistency(share, record, serial, domain_id)
    if reason is not None:
        return Problem(name, f"forged share: {reason}", EXIT_INTEGRITY)
    return Unlocked(drive, serial, passphrase, keys, share, sealed, record, hello)


def gather_shares(
    drives: Sequence[Drive],
    passphrases: Passphrases,
    domain_id: bytes | None = None,
    note: Note = _quiet,
    pinned: DomainRecord | None = None,
    doubt: Callable[[DomainRecord], str | None] | None = None,
) -> Gathered:
    """Unlock every drive of the domain with its custodian's passphrase and open its share.

    Drives that are unreachable, blank or of another domain, a wrong passphrase, a locked
    drive and a share that does not open are all named in ``problems``. ``pinned`` is a
    domain record already authenticated (by the slot's owner key): a drive announcing other
    KDF parameters or another identity than it pins for it is refused before any passphrase
    is derived or proven for it. ``doubt`` tells, from the first share's record, what will
    stop the ceremony anyway (said at once, before more custodians are asked).
    """
    chosen = domain_id if domain_id is not None else choose_domain(drives)
    members, problems = classify(drives, chosen)
    unlocked: list[Unlocked] = []
    ready = [d for d in members if passphrases.has(d.use()[1].serial)]
    problems += [
        Problem(d.name, f"{passphrases.path} has no passphrase for it", InputError.exit_code)
        for d in members
        if d not in ready
    ]
    if pinned is not None:
        for drive in list(ready):
            member = pinned.member(drive.use()[1].serial)
            reason = None if member is None else _announces_other(drive.use()[1], member)
            if reason is not None:
                ready.remove(drive)
                problems.append(Problem(drive.name, reason, EXIT_INTEGRITY))
    prepared: dict[str, CustodianKeys] = {}
    if passphrases.from_file:
        # Every passphrase is known: run the Argon2id derivations side by side.
        jobs = [(d.use()[1], _kdf_params(d.use()[1])) for d in ready]
        known = [(h.serial, p) for h, p in jobs if p is not None]
        keys = _derive_all(
            [passphrases.existing(serial) for serial, _ in known], [p for _, p in known]
        )
        prepared = {serial: k for (serial, _), k in zip(known, keys, strict=True)}
    warned = False
    for drive in ready:
        serial = drive.use()[1].serial
        outcome = _unlock(drive, passphrases, chosen, note, prepared.get(serial))
        if isinstance(outcome, Problem):
            problems.append(outcome)
            continue
        unlocked.append(outcome)
        # Said as soon as a share tells k, before more custodians are asked. Only said: the
        # record is one custodian's word, and an insider's must not stop the others.
        needed = outcome.record.threshold
        doubted = doubt(outcome.record) if doubt is not None and len(unlocked) == 1 else None
        if doubted is not None:
            note(
                f"warning: drive {serial}'s share says {doubted} (Ctrl-C stops now; nothing "
                "has changed)"
            )
        if not warned and len(ready) < needed:
            warned = True
            note(
                f"warning: drive {serial}'s share says {needed} drives are needed and only "
                f"{len(ready)} of the domain can be asked here: connect {needed - len(ready)} "
                "more (Ctrl-C stops now; nothing has changed)"
            )
    return Gathered(chosen, unlocked, problems)


def _shortfall(
    gathered: Gathered,
    exc: shamir.NotEnoughSharesError | None,
    refused: Sequence[Problem] = (),
) -> DriveProblems:
    problems = [*gathered.problems, *refused]
    if exc is not None:
        named = {p.drive for p in problems}
        for bad in exc.bad:
            if bad.name not in named:
                problems.append(Problem(bad.name, bad.reason, EXIT_INTEGRITY))
        need = exc.needed
        have = exc.distinct
        headline = (
            f"only {have} good share(s) of the {exc.threshold} needed: {need} more "
            f"drive(s) of domain {short(gathered.domain_id.hex())} with their custodians "
            "are needed"
        )
    else:
        headline = f"no drive of domain {short(gathered.domain_id.hex())} gave a good share"
    return drive_problems(headline, problems)


@dataclass
class Rebuilt:
    """A rebuilt domain secret (wipe it!), the record it verified, how it was obtained."""

    secret: bytearray = field(repr=False)
    domain_id: bytes
    threshold: int
    count: int
    used: tuple[str, ...]
    bad: list[Problem]
    gathered: Gathered
    record: DomainRecord

    def wipe(self) -> None:
        wipe(self.secret)


def _share_name(unlocked: Unlocked) -> str:
    return f"drive {unlocked.serial}"


def _announces_other(hello: Hello, member: Member) -> str | None:
    """Why a drive's HELLO does not match what the domain record pins for it, or None."""
    announced = _kdf_params(hello)
    if announced != member.kdf:
        what = (
            "unusable"
            if announced is None
            else (f"{announced.t_cost} pass(es), {announced.m_cost_kib} KiB")
        )
        return (
            f"it announces Argon2id salt or costs ({what}) other than the ones the domain "
            f"record pins for it ({member.kdf.t_cost} pass(es), {member.kdf.m_cost_kib} KiB): "
            "no passphrase was tried on it"
        )
    if member.identity is not None and hello.identity != member.identity:
        return "it presents another identity key than the one the domain record pins for it"
    return None


def _pin_problem(unlocked: Unlocked, record: DomainRecord) -> str | None:
    """Why a drive does not announce what ``record`` pins for it, or None."""
    member = record.member(unlocked.serial)
    if member is None:
        return f"the domain record ({record.describe()}) does not list this drive"
    return _announces_other(unlocked.hello, member)


def _statements(gathered: Gathered) -> list[list[Unlocked]]:
    """The unlocked drives grouped by the domain record sealed with their share.

    Honest custodians' copies are identical, so the group most drives state comes first;
    among equals, the record that lists more of the drives that gave a share (a forged
    record rarely knows the others), then the higher threshold (the cautious reading).
    """
    groups: dict[bytes, list[Unlocked]] = {}
    for unlocked in gathered.unlocked:
        groups.setdefault(unlocked.record.encode(), []).append(unlocked)
    serials = {u.serial for u in gathered.unlocked}

    def rank(group: list[Unlocked]) -> tuple[int, int, int]:
        record = group[0].record
        return (len(group), len(serials & set(record.members)), record.threshold)

    return sorted(groups.values(), key=rank, reverse=True)


def rebuild(gathered: Gathered) -> Rebuilt:
    """Combine the gathered shares; bad ones are named, too few is an error saying how many.

    k and n come only from the domain records sealed with the shares (each authenticated by
    its custodian's key). Shares whose sealed records differ are never combined together;
    a group that reaches its own threshold must rebuild a secret whose domain id is the
    domain's and that verifies the record's MAC, or its drives are named as forged. The
    drives of every other record are named as well.
    """
    if not gathered.unlocked:
        raise _shortfall(gathered, None)
    forged: list[Problem] = []
    short_of: list[tuple[list[Unlocked], shamir.NotEnoughSharesError]] = []
    for group in _statements(gathered):
        record = group[0].record
        shares = {_share_name(u): u.share for u in group}
        try:
            result = shamir.recover(shares)
        except shamir.NotEnoughSharesError as exc:
            short_of.append((group, exc))
            continue
        if (
            domain_id_from_secret(result.secret) != gathered.domain_id
            or record.domain_id != gathered.domain_id
            or not record.verify_secret(result.secret)
        ):
            result.wipe()
            forged += [
                Problem(
                    _share_name(u),
                    f"forged share: its sealed record says {record.threshold} of "
                    f"{record.count}, and its shares rebuild a key that is not domain "
                    f"{short(gathered.domain_id.hex())}",
                    EXIT_INTEGRITY,
                )
                for u in group
            ]
            continue
        bad = [Problem(b.name, b.reason, EXIT_INTEGRITY) for b in result.bad]
        for other in gathered.unlocked:
            if other.record is record or other.record == record:
                reason = _pin_problem(other, record)
            else:
                reason = (
                    f"forged or stale share: its sealed record ({other.record.describe()}) "
                    f"is not the domain's verified record ({record.describe()})"
                )
            named = _share_name(other)
            if reason is not None and all(p.drive != named for p in [*bad, *forged]):
                bad.append(Problem(named, reason, EXIT_INTEGRITY))
        return Rebuilt(
            result.secret,
            gathered.domain_id,
            record.threshold,
            record.count,
            result.used,
            forged + bad,
            gathered,
            record,
        )
    if not short_of:
        raise drive_problems(
            f"no shares of domain {short(gathered.domain_id.hex())} could be combined",
            [*gathered.problems, *forged],
        )
    # Nothing verified: the record most drives state speaks for the shortfall; drives that
    # sealed another record are named, since their shares cannot count towards it.
    main_group, main_exc = short_of[0]
    main = main_group[0].record
    holders = ", ".join(_share_name(u) for u in main_group)
    disagreeing = [
        Problem(
            _share_name(u),
            f"its sealed record ({u.record.describe()}) differs from the one {holders} "
            f"sealed ({main.describe()}); fewer than k shares agree on either",
            EXIT_INTEGRITY,
        )
        for group, _ in short_of[1:]
        for u in group
    ]
    raise _shortfall(gathered, main_exc, [*forged, *disagreeing])


@dataclass
class RecoverResult:
    domain_id: bytes
    threshold: int
    count: int
    used: list[str]
    problems: list[Problem]
    slot_id: int
    token: str
    seconds: float
    already: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "domain_id": self.domain_id.hex(),
            "threshold": self.threshold,
            "count": self.count,
            "used": self.used,
            "problems": [p.to_json() for p in self.problems],
            "slot": self.slot_id,
            "token": self.token,
            "seconds": round(self.seconds, 3),
            "already_present": self.already,
        }


def _recorded_profile(session: HsmSession, number: int) -> Profile:
    """The profile a domain record names, once this token is known to do it."""
    profile = PROFILES.get(number)
    if profile is None:
        raise DomainError(
            f"the domain uses profile {number}, which this sealkeep does not know: nothing on "
            "the drives is corrupt; recover it with a newer sealkeep"
        )
    try:
        session.require_capabilities(profile)
    except MechanismMissing as exc:
        advice = (
            f" The domain was created with the {profile.name} profile, which {session.where} "
            "cannot do: nothing on the drives is corrupt. Recover it into a token that offers "
            "these mechanisms (its sets open there); domains meant to move between tokens of "
            f"different makes are created with `domain create --profile {PORTABLE.name}`."
            if profile is STANDARD
            else ""
        )
        raise MechanismMissing(f"{exc}.{advice}") from None
    return profile


def recover_domain(
    session: HsmSession,
    drives: Sequence[Drive],
    passphrases: Passphrases,
    note: Note = _quiet,
) -> RecoverResult:
    """Rebuild the domain of ``drives`` from their custodians' shares into ``session``'s slot."""
    started = time.monotonic()
    domain_id = choose_domain(drives)
    existing = session.domain_id()
    if existing is not None:
        if existing == domain_id:
            return RecoverResult(
                domain_id,
                0,
                0,
                [],
                [],
                session.slot_id,
                session.info.label,
                time.monotonic() - started,
                already=True,
            )
        raise DomainError(
            f"{session.where} already holds another backup domain ({existing.hex()}): "
            "recover into a slot without one"
        )
    # Before any custodian is asked for a passphrase: a token that cannot use a domain of any
    # profile, or cannot hold its keys as the hierarchy needs, is no place to rebuild it.
    # Which profile the domain has is sealed with the shares; a token that can do only the
    # portable one is said to be so before anyone is asked.
    able = session.choose_profile()
    possible = session.possible_profiles()
    if len(possible) < len(PROFILES):
        names = " and ".join(p.name for p in possible)
        note(
            f"warning: {session.where} can hold only domains of the {names} profile; a domain "
            "of another cannot be rebuilt here, which the first custodian's share tells"
        )
    for text in session.probe_protections(able):
        note(f"not enforced by the token: {text}")

    def doubt(record: DomainRecord) -> str | None:
        if record.profile in {p.number for p in possible}:
            return None
        known = PROFILES.get(record.profile)
        name = known.name if known is not None else f"number {record.profile}"
        return (
            f"the domain uses the {name} profile, which {session.where} cannot do: the "
            "recovery will stop before anything is stored"
        )

    gathered = gather_shares(drives, passphrases, domain_id, note, doubt=doubt)
    rebuilt = rebuild(gathered)
    try:
        profile = _recorded_profile(session, rebuilt.record.profile)
        session.import_domain(rebuilt.secret, profile=profile)
    finally:
        rebuilt.wipe()
    return RecoverResult(
        domain_id,
        rebuilt.threshold,
        rebuilt.count,
        [name.removeprefix("drive ") for name in rebuilt.used],
        gathered.problems + rebuilt.bad,
        session.slot_id,
        session.info.label,
        time.monotonic() - started,
    )


# --- re-share ---------------------------------------------------------------------------------


@dataclass
class ReshareResult:
    old_domain_id: bytes
    domain_id: bytes
    threshold: int
    drives: list[tuple[str, str, str]]  # (serial, address, "kept" | "new")
    sets: list[str]
    proven_by: list[str]
    retired: list[str]
    slot_id: int
    token: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "old_domain_id": self.old_domain_id.hex(),
            "domain_id": self.domain_id.hex(),
            "threshold": self.threshold,
            "count": len(self.drives),
            "drives": [{"serial": s, "port": a, "role": r} for s, a, r in self.drives],
            "sets": self.sets,
            "custodians": self.proven_by,
            "retired": self.retired,
            "slot": self.slot_id,
            "token": self.token,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }


@dataclass
class _Snapshot:
    """Everything an old drive held, to put it back if the re-share cannot finish."""

    drive: Drive
    hello: Hello
    objects: dict[str, bytes] = field(repr=False)


def _snapshot(session: HsmSession, drive: Drive, owners: OwnerKeys) -> _Snapshot:
    client = owner_login(session, drive, owners)
    hello = client.hello()
    objects = {info.name: client.get(info.name) for info in client.list()}
    client.end_session()
    return _Snapshot(drive, hello, objects)


def _authentic_sets(
    session: HsmSession, snapshots: Sequence[_Snapshot], note: Note
) -> dict[str, bytes]:
    """One authentic copy of every set found on the old drives, by object name."""
    chosen: dict[str, bytes] = {}
    refused: dict[str, list[str]] = {}
    for snap in snapshots:
        for name, data in sorted(snap.objects.items()):
            if not name.startswith(SET_PREFIX) or name in chosen:
                continue
            try:
                header = manifest.read_header(data)
                kek = session.open_set(header)
                try:
                    manifest.unseal(data, kek)
                finally:
                    kek.destroy()
            except SealkeepError as exc:
                refused.setdefault(name, []).append(f"{snap.drive.name}: {exc}")
                continue
            chosen[name] = data
    for name, reasons in refused.items():
        if name not in chosen:
            note(
                f"warning: set {name.removeprefix(SET_PREFIX)} has no authentic copy on the "
                f"drives given and is not carried over ({'; '.join(reasons)})"
            )
    return chosen


def _oldest_first(objects: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Objects in the order to store them: others first, then sets oldest first. A drive
    numbers sets in the order they arrive, and its retention rule lets the owner drop the
    ones it numbered first."""

    def order(item: tuple[str, bytes]) -> tuple[bool, int, str]:
        name, data = item
        if not name.startswith(SET_PREFIX):
            return False, 0, name
        try:
            return True, manifest.read_header(data).created, name
        except manifest.ManifestError:
            return True, 0, name

    return sorted(objects, key=order)


def _rewrap_sets(
    session: HsmSession,
    sets: dict[str, bytes],
    old_secret: bytearray,
    new_secret: bytearray,
    new_id: bytes,
) -> dict[str, bytes]:
    """Every set re-sealed for the new domain, under the current key hierarchy, in the HSM.

    The slot's domain keys open each set's manifest; :meth:`HsmSession.set_carrier` moves
    its KEK to the new domain wrap key and gives it a new manifest key. Sets of the old key
    hierarchy come out in the current one. No set key leaves the HSM.
    """
    carrier = session.set_carrier(old_secret, new_secret)
    result: dict[str, bytes] = {}
    try:
        for name, data in sets.items():
            header = manifest.read_header(data)
            old = session.open_set(header)
            try:
                opened = manifest.unseal(data, old)
            finally:
                old.destroy()
            try:
                new = carrier.carry(header.wrapped_kek)
            except PKCS11Error as exc:
                raise DomainError(
                    f"the HSM cannot re-wrap the key of set {header.set_id_hex}: {exc!r}"
                ) from None
            try:
                moved = dataclasses.replace(
                    opened,
                    domain_id=new_id,
                    wrapped_kek=new.wrapped,
                    wrapped_manifest_key=new.wrapped_manifest_key,
                    wrapped_mac_key=new.wrapped_mac_key,
                    profile=new.profile.number,
                )
                result[name] = manifest.seal(moved, new)
            finally:
                new.destroy()
    finally:
        carrier.close()
    return result


def _restore_old(
    snap: _Snapshot,
    old_secret: bytearray,
    old_keys: CustodianKeys,
    new_keys: CustodianKeys,
) -> None:
    """Put an old drive back exactly as it was (claim, share, record, sets)."""
    client, _ = snap.drive.use()
    hello = client.hello()
    serial = snap.hello.serial
    if not hello.blank:
        if hello.domain == snap.hello.domain:
            # Still (or again) the old claim: only its objects may be missing.
            client.authenticate(Role.OWNER, owner_credential_from_secret(old_secret, serial))
        else:
            client.authenticate(Role.CUSTODIAN, new_keys.credential)
            client.factory_reset()
            hello = client.hello()
    if hello.blank:
        assert snap.hello.salt is not None and snap.hello.kdf is not None
        assert snap.hello.domain is not None
        owner = owner_credential_from_secret(old_secret, serial)
        client.claim(
            owner,
            old_keys.credential,
            snap.hello.salt,
            snap.hello.kdf,
            snap.hello.domain,
            identity=snap.hello.identity,
            retention=snap.hello.retention,
        )
        client.authenticate(Role.OWNER, owner)
    held = {info.name for info in client.list()}
    for name, data in _oldest_first(snap.objects.items()):
        if name not in held:
            client.put(name, data)


def reshare_domain(
    session: HsmSession,
    drives: Sequence[Drive],
    passphrases: Passphrases,
    threshold: int | None = None,
    note: Note = _quiet,
) -> ReshareResult:
    """Move the domain of ``session``'s slot to a new secret, split over ``drives``.

    ``drives`` is the new set (3, 5 or 7): drives of the current domain, which need at
    least k of them opened by their custodians (the quorum, proven by rebuilding the current
    secret from their shares), and blank drives. Every set found on the old drives is
    re-wrapped for the new domain and written to every drive; the slot's domain key is
    replaced. Old shares, and drives left out, no longer open anything the slot holds.
    """
    started = time.monotonic()
    old_id = session.require_domain()
    profile = session.domain_profile()  # the new domain keeps it, and so do its sets
    check_set_size(len(drives))
    k, warnings = check_threshold(threshold, len(drives))
    for text in warnings:
        note(text)
    require_drives(drives, "re-share the domain")
    old_drives = [d for d in drives if d.domain == old_id]
    foreign = [
        Problem(d.name, f"belongs to another backup domain ({short((d.domain or b'').hex())})")
        for d in drives
        if not d.blank and d.domain != old_id
    ]
    if foreign:
        raise drive_problems(
            "a new set is made of drives of this domain and blank drives",
            foreign,
            "Factory reset those drives first, or leave them out.",
        )
    if not old_drives:
        raise CeremonyError(
            f"none of the drives belongs to domain {short(old_id.hex())}: a re-share needs k "
            "of its drives with their custodians"
        )

    # Everything the old drives hold, before anything changes.
    owners = OwnerKeys(session)
    snapshots: list[_Snapshot] = []
    problems: list[Problem] = []
    record: DomainRecord | None = None
    for drive in old_drives:
        try:
            snap = _snapshot(session, drive, owners)
        except SealkeepError as exc:
            problems.append(Problem(drive.name, explain(exc), error_code(exc)))
            continue
        snapshots.append(snap)
        if record is None and DOMAIN_OBJECT in snap.objects:
            with suppress(RecordError):
                candidate = DomainRecord.decode(snap.objects[DOMAIN_OBJECT])
                # Only a record the slot's owner key confirms says who must be present.
                if candidate.verify_with(owners.mac) and candidate.domain_id == old_id:
                    record = candidate
    if problems:
        raise drive_problems("the drives of the current domain cannot be read", problems)
    if record is not None and len(old_drives) < record.threshold:
        raise CeremonyError(
            f"a re-share needs {record.threshold} drives of the current domain with their "
            f"custodians, and {len(old_drives)} {'is' if len(old_drives) == 1 else 'are'} "
            f"given: add {record.threshold - len(old_drives)} more"
        )

    # The quorum: k custodians open their shares, which must rebuild the current secret.
    gathered = gather_shares(old_drives, passphrases, old_id, note, pinned=record)
    if gathered.problems:
        raise drive_problems(
            "every drive of the current domain in the new set must be opened by its custodian",
            gathered.problems,
            "Leave out a drive whose custodian cannot open it (a blank drive can take its "
            "place), and run the re-share again.",
        )
    rebuilt = rebuild(gathered)
    old_secret = rebuilt.secret
    new_secret = new_domain_secret()
    try:
        if rebuilt.bad:
            raise drive_problems("some shares of the current domain are bad", rebuilt.bad)
        unlocked = {u.serial: u for u in gathered.unlocked}
        sets = _authentic_sets(session, snapshots, note)
        serials = [d.use()[1].serial for d in drives]
        chosen = [unlocked[s].passphrase if s in unlocked else passphrases.new(s) for s in serials]
        sizes = sum(len(v) + OBJECT_OVERHEAD for v in sets.values()) + 4096
        short_of_room = [
            Problem(d.name, f"full: {d.use()[1].capacity} bytes, {sizes} needed", EXIT_STORAGE)
            for d in drives
            if (d.use()[1].capacity if d.domain == old_id else d.use()[1].free) < sizes
        ]
        if short_of_room:
            raise drive_problems(
                "the new set's drives have no room", short_of_room, "Nothing was changed."
            )
        params = [new_kdf_params() for _ in serials]
        note(f"deriving custodian keys for {len(serials)} drives (Argon2id)")
        keys = _derive_all(chosen, params)
        old_keys = {snap.hello.serial: unlocked[snap.hello.serial].keys for snap in snapshots}

        new_id = domain_id_from_secret(new_secret)
        moved = _rewrap_sets(session, sets, old_secret, new_secret, new_id)
        shares = shamir.split(new_secret, k, len(drives))
        record_of_new = new_record(
            new_id,
            k,
            _roster(drives, params),
            int(time.time()),
            shares[0],
            new_secret,
            rebuilt.record.retention,  # the domain's rule goes with it to every drive
            profile.number,  # and its profile: the carried sets use it
        )
        in_order = _oldest_first(moved.items())
        claims = [
            _Claim(d, s, key, p, share, in_order)
            for d, s, key, p, share in zip(drives, serials, keys, params, shares, strict=True)
        ]
        by_serial = {snap.hello.serial: snap for snap in snapshots}
        touched: list[_Claim] = []

        def roll_back(what: str, exc: BaseException) -> CeremonyError:
            failed: list[Problem] = []
            for claim in touched:
                try:
                    snap_of = by_serial.get(claim.serial)
                    if snap_of is None:
                        failed += _undo([claim], new_secret)[1]
                    else:
                        _restore_old(snap_of, old_secret, old_keys[claim.serial], claim.keys)
                except SealkeepError as undo_exc:
                    failed.append(Problem(claim.drive.name, explain(undo_exc), 1))
            text = f"{what}: {exc} The drives were put back as they were"
            if failed:
                text += (
                    ", except "
                    + "; ".join(f"{p.drive} ({p.reason})" for p in failed)
                    + ": run the re-share again once they work"
                )
            return CeremonyError(text + "; the slot keeps the current domain.")

        for claim in claims:
            touched.append(claim)
            try:
                if claim.serial in by_serial:
                    # Its custodian opened it for the quorum: that session may erase it.
                    client, _ = claim.drive.use()
                    client.authenticate(Role.CUSTODIAN, old_keys[claim.serial].credential)
                    client.factory_reset()
                    claim.drive.refresh()
                _install(claim, new_secret, new_id, record_of_new, [])
                claim.drive.refresh()
            except BaseException as exc:
                error = roll_back(f"the re-share failed at {claim.drive.name}", exc)
                if not isinstance(exc, SealkeepError):
                    raise
                raise error from exc
            note(f"drive {claim.serial}: share {claim.share.index} and {len(moved)} set(s) stored")
        try:
            session.remove_domain()
            session.import_domain(new_secret, profile=profile)
        except SealkeepError as exc:
            with suppress(SealkeepError):
                session.remove_domain()
            with suppress(SealkeepError):
                session.import_domain(old_secret, profile=profile)
            raise roll_back(
                f"the new domain key could not be stored in {session.where}", exc
            ) from exc
        retired = [s for s in rebuilt.record.members if s not in serials]
        if retired:
            warnings.append(
                f"drive(s) {', '.join(retired)} of the old set were left out: their "
                "shares and copies belong to the old domain, which the slot no longer holds; "
                "factory reset them when they turn up"
            )
            note(f"warning: {warnings[-1]}")
        return ReshareResult(
            old_id,
            new_id,
            k,
            [
                (s, d.address, "kept" if s in by_serial else "new")
                for s, d in zip(serials, drives, strict=True)
            ],
            [n.removeprefix(SET_PREFIX) for n in sorted(moved)],
            sorted(unlocked),
            retired,
            session.slot_id,
            session.info.label,
            time.monotonic() - started,
            warnings,
        )
    finally:
        wipe(old_secret)
        wipe(new_secret)
