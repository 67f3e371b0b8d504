"""Re-sharing a backup domain: a new split of the same secret over a new set of drives, the
old sets carried over, and what it does and does not revoke (see :mod:`sealkeep.domain`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from pkcs11.exceptions import PKCS11Error

from . import manifest, shamir
from .client import Hello, Role
from .domain import (
    _Claim,
    _derive_all,
    _install,
    _roster,
    _undo,
    check_set_size,
    check_threshold,
    new_kdf_params,
    require_drives,
    wipe,
)
from .domainrecord import (
    DomainRecord,
    RecordError,
    new_record,
)
from .drivegroup import (
    DOMAIN_OBJECT,
    OBJECT_OVERHEAD,
    SET_PREFIX,
    CeremonyError,
    Drive,
    Note,
    OwnerKeys,
    Problem,
    _quiet,
    drive_problems,
    error_code,
    explain,
    owner_login,
    short,
)
from .errors import (
    EXIT_STORAGE,
    SealkeepError,
)
from .hsm import (
    DomainError,
    HsmSession,
    domain_id_from_secret,
    new_domain_secret,
    owner_credential_from_secret,
)
from .kdf import (
    CustodianKeys,
)
from .pins import Passphrases
from .recovery import (
    gather_shares,
    rebuild,
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
                    # moved sets take the format a backup makes now (format 1 and 2 upgraded)
                    compressed=new.wrapped_manifest_key is not None,
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
