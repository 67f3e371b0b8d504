"""The drives of a command (connected and asked HELLO in parallel), owner sessions on the
drives of a domain, and the errors that name what is wrong with each drive."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType

from .client import DriveClient, Hello, Role
from .domainrecord import (
    DomainRecord,
    RecordError,
)
from .drivespec import DriveAddress, parse_drives
from .errors import (
    EXIT_AUTH,
    EXIT_GENERIC,
    EXIT_INTEGRITY,
    EXIT_STORAGE,
    EXIT_UNREACHABLE,
    DriveError,
    LinkError,
    ObjectNotFound,
    ProtocolError,
    SealkeepError,
    where,
)
from .hsm import HsmSession
from .pins import InputError
from .protocol import messages
from .transport import open_transport

SHARE_OBJECT = "share"
DOMAIN_OBJECT = "domain"
SET_PREFIX = messages.SET_PREFIX
OBJECT_OVERHEAD = 40  # what a drive stores per object besides its data (digest and size)

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
        self._cache: dict[str, bytes] = {}

    def __call__(self, serial: str) -> bytes:
        credential = self._cache.get(serial)
        if credential is None:
            credential = self.session.owner_credential(serial)
            self._cache[serial] = credential
        return credential

    def mac(self, message: bytes) -> bytes:
        """``HMAC-SHA256(owner root, message)`` computed by the HSM (checks domain records)."""
        return self.session.owner_hmac(message)


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


def join_all(threads: Sequence[threading.Thread]) -> None:
    """Wait for ``threads`` in short steps, so that Ctrl-C reaches the main thread at once."""
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)


class DomainLogins:
    """Owner sessions on the drives of a domain, opened in parallel in the background.

    The credentials are computed in the HSM when this starts, so the background threads call
    only the drives: the HSM is never called from two threads here (a module may be
    initialised without locking). ``then`` runs on each drive once its session is
    open, in the same thread (what else a command asks every drive, e.g. its free space).
    :meth:`finish` waits, then reads the domain record from the first drive that has a valid
    one, its MAC checked in the HSM.
    """

    def __init__(
        self,
        session: HsmSession,
        drives: Sequence[Drive],
        domain_id: bytes,
        then: Callable[[DriveClient], object] | None = None,
    ) -> None:
        self.session = session
        self.domain_id = domain_id
        self.members, self._problems = classify(drives, domain_id)
        self._owners = OwnerKeys(session)
        self._then = then
        self.results: dict[int, object] = {}
        self._failed: dict[int, Problem] = {}
        self._unexpected: BaseException | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> DomainLogins:
        credentials: list[bytes | Problem] = []
        for drive in self.members:
            try:
                credentials.append(self._owners(drive.use()[1].serial))
            except SealkeepError as exc:
                credentials.append(Problem(drive.name, explain(exc), error_code(exc)))
        for index, credential in enumerate(credentials):
            if isinstance(credential, Problem):
                self._failed[index] = credential
                continue
            # Daemon threads: Ctrl-C ends the process without waiting for a slow drive.
            thread = threading.Thread(target=self._one, args=(index, credential), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def _one(self, index: int, credential: bytes) -> None:
        drive = self.members[index]
        try:
            client, _ = drive.use()
            client.authenticate(Role.OWNER, credential)
            outcome = self._then(client) if self._then is not None else None
        except SealkeepError as exc:
            with self._lock:
                self._failed[index] = Problem(drive.name, explain(exc), error_code(exc))
            return
        except BaseException as exc:  # raised again in the caller's thread by finish()
            with self._lock:
                self._unexpected = exc
            return
        with self._lock:
            self.results[index] = outcome

    def wait(self) -> None:
        """Wait for every drive."""
        join_all(self._threads)

    def finish(self) -> tuple[list[Drive], list[Problem], DomainRecord | None]:
        """The drives with an owner session, a problem for each other drive, and the record."""
        self.wait()
        if self._unexpected is not None:
            raise self._unexpected
        problems = list(self._problems)
        logged: list[Drive] = []
        for index, drive in enumerate(self.members):
            if index in self._failed:
                problems.append(self._failed[index])
            else:
                logged.append(drive)
        record: DomainRecord | None = None
        for drive in list(logged):
            try:
                record = read_record(drive.use()[0], self._owners)
            except (ObjectNotFound, RecordError):
                continue  # the next drive's record may do
            except SealkeepError as exc:
                problems.append(Problem(drive.name, explain(exc), error_code(exc)))
                logged.remove(drive)
                continue
            break
        return logged, problems, record

    def result(self, drive: Drive) -> object:
        """What ``then`` gave on ``drive`` (None for a drive without a session)."""
        for index, member in enumerate(self.members):
            if member is drive:
                return self.results.get(index)
        return None


def login_domain_drives(
    session: HsmSession,
    drives: Sequence[Drive],
    domain_id: bytes,
) -> tuple[list[Drive], list[Problem], DomainRecord | None]:
    """Owner sessions on the drives of ``domain_id`` (opened in parallel); the others named;
    the domain record."""
    return DomainLogins(session, drives, domain_id).start().finish()
