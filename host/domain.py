"""The backup domain, and the ceremony that creates it.

Its drives and owner sessions are in :mod:`sealkeep.drivegroup` (re-exported here);
recovering it from the custodians' shares is :mod:`sealkeep.recovery`, re-sharing it
:mod:`sealkeep.reshare`.

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

import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import shamir
from .client import Hello, Role
from .domainrecord import (
    MAX_RETENTION,
    DomainRecord,
    Member,
    new_record,
    pack_sealed_share,
    valid_retention,
)
from .drivegroup import (
    _BY_CODE as _BY_CODE,
)
from .drivegroup import (
    _PRIORITY as _PRIORITY,
)
from .drivegroup import (
    DOMAIN_OBJECT as DOMAIN_OBJECT,
)
from .drivegroup import (
    OBJECT_OVERHEAD as OBJECT_OVERHEAD,
)
from .drivegroup import (
    SET_PREFIX as SET_PREFIX,
)
from .drivegroup import (
    SHARE_OBJECT as SHARE_OBJECT,
)
from .drivegroup import (
    CeremonyError as CeremonyError,
)
from .drivegroup import (
    Drive as Drive,
)
from .drivegroup import (
    DriveGroup as DriveGroup,
)
from .drivegroup import (
    DriveProblems as DriveProblems,
)
from .drivegroup import (
    DrivesCorrupt as DrivesCorrupt,
)
from .drivegroup import (
    DrivesFull as DrivesFull,
)
from .drivegroup import (
    DrivesRefused as DrivesRefused,
)
from .drivegroup import (
    DrivesUnreachable as DrivesUnreachable,
)
from .drivegroup import (
    Note as Note,
)
from .drivegroup import (
    Opener as Opener,
)
from .drivegroup import (
    OwnerKeys as OwnerKeys,
)
from .drivegroup import (
    Problem as Problem,
)
from .drivegroup import (
    _quiet as _quiet,
)
from .drivegroup import (
    classify as classify,
)
from .drivegroup import (
    drive_problems as drive_problems,
)
from .drivegroup import (
    error_code as error_code,
)
from .drivegroup import (
    explain as explain,
)
from .drivegroup import (
    login_domain_drives as login_domain_drives,
)
from .drivegroup import (
    open_drive as open_drive,
)
from .drivegroup import (
    owner_login as owner_login,
)
from .drivegroup import (
    read_record as read_record,
)
from .drivegroup import (
    short as short,
)
from .errors import (
    DigestMismatch,
    LinkError,
    SealkeepError,
)
from .hsm import (
    DomainError,
    HsmSession,
    domain_id_from_secret,
    new_domain_secret,
    owner_credential_from_secret,
)
from .hsm_caps import STANDARD, Profile
from .kdf import (
    DEFAULT_M_COST_KIB,
    DEFAULT_T_COST,
    PRODUCTION_FLOOR,
    CustodianKeys,
    KdfError,
    KdfFloor,
    KdfParams,
    derive_custodian_keys,
    seal_share,
)
from .pins import InputError, Passphrases

SET_SIZES = (3, 5, 7)

ENV_KDF_MEMORY = "SEALKEEP_KDF_MEMORY_KIB"
ENV_KDF_TIME = "SEALKEEP_KDF_TIME"
ENV_KDF_FLOOR = "SEALKEEP_KDF_FLOOR"
KDF_HELP = (
    f"Argon2id costs for new passphrases: {DEFAULT_M_COST_KIB} KiB and {DEFAULT_T_COST} passes "
    f"unless ${ENV_KDF_MEMORY} / ${ENV_KDF_TIME} say otherwise; drives announcing less than "
    f"the floor (the same unless ${ENV_KDF_FLOOR}=m=KIB,t=PASSES lowers it) are refused. "
    "Lower them only for tests."
)


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
