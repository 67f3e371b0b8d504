"""Shares from custodians: unlocking each drive's sealed share with its custodian's
passphrase, rebuilding the domain secret from k of them, and recovering the domain into a
slot (see :mod:`sealkeep.domain` for what a domain is)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from . import shamir
from .client import Hello, Role
from .domain import (
    _derive_all,
    drive_kdf_params,
    share_aad,
    wipe,
)
from .domainrecord import (
    DomainRecord,
    Member,
    RecordError,
    inconsistency,
    unpack_sealed_share,
)
from .drivegroup import (
    SHARE_OBJECT,
    Drive,
    DriveProblems,
    Note,
    Problem,
    _quiet,
    classify,
    drive_problems,
    error_code,
    explain,
    short,
)
from .errors import (
    EXIT_AUTH,
    EXIT_INTEGRITY,
    AuthenticationFailed,
    Backoff,
    DigestMismatch,
    ImpostorDrive,
    LockedOut,
    ObjectNotFound,
    SealkeepError,
)
from .hsm import (
    DomainError,
    HsmSession,
    domain_id_from_secret,
)
from .hsm_caps import PORTABLE, PROFILES, STANDARD, MechanismMissing, Profile
from .kdf import (
    CustodianKeys,
    KdfError,
    KdfParams,
    ShareSealError,
    derive_custodian_keys,
    unseal_share,
)
from .pins import InputError, Passphrases

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
