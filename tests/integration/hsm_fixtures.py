"""SoftHSM2 tokens for tests: a private token directory per test session (see
:mod:`sealkeep.softhsm`); subprocesses see them through :attr:`SoftHsmFarm.env`. And
openCryptoki's soft token, one per machine: :func:`opencryptoki`. A test that takes
:func:`token` runs once on each (see :class:`Token`).

Use from a test module with ``pytest_plugins = ["hsm_fixtures"]``.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pkcs11
import pytest
from pkcs11 import Mechanism
from pkcs11.exceptions import PKCS11Error
from sealkeep.hsm import Hsm, HsmSession
from sealkeep.hsm_caps import PORTABLE, STANDARD
from sealkeep.samples import sample_keys
from sealkeep.softhsm import SoftHsmFarm as PrivateSoftHsm
from sealkeep.softhsm import SoftHsmToken

SO_PIN = "so-pin-5678"
USER_PIN = "user-pin-1234"
TOKEN_LABELS = ("source", "target", "spare")


class SoftHsmFarm(PrivateSoftHsm):
    """The farm with the tests' PINs as defaults."""

    def init_token(self, label: str, pin: str = USER_PIN, so_pin: str = SO_PIN) -> SoftHsmToken:
        return super().init_token(label, pin, so_pin)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmFarm]:
    """A SoftHSM2 farm with the tokens of :data:`TOKEN_LABELS`, all created up front."""
    farm = SoftHsmFarm(tmp_path_factory.mktemp("softhsm"))
    for label in TOKEN_LABELS:
        farm.init_token(label)
    farm.activate()
    yield farm
    farm.restore_environment()


@pytest.fixture(scope="session")
def hsm(softhsm: SoftHsmFarm) -> Hsm:
    return Hsm(softhsm.module)


def wipe_token(hsm: Hsm, token: SoftHsmToken) -> None:
    """Destroy every object of a token."""
    with hsm.open(token.slot_id, token.pin) as session:
        for obj in list(session.session.get_objects()):
            obj.destroy()


@pytest.fixture
def tokens(hsm: Hsm, softhsm: SoftHsmFarm) -> dict[str, SoftHsmToken]:
    """The farm's tokens, emptied before the test."""
    for token in softhsm.tokens.values():
        wipe_token(hsm, token)
    return softhsm.tokens


# --- sample keys ----------------------------------------------------------------------------


@pytest.fixture
def make_sample_keys() -> Callable[[HsmSession], dict[str, Any]]:
    """:func:`sample_keys`, as a fixture."""
    return sample_keys


# --- openCryptoki ---------------------------------------------------------------------------
#
# openCryptoki's soft token is one per machine (its state lives in /var/lib/opencryptoki/swtok,
# shared through the daemon pkcsslotd), so every test process that uses it takes the file
# lock below for as long as it uses it, and each test module gets the token re-initialised:
# a fresh label and user PIN, and no objects. Its soft token lacks mechanisms sealkeep needs
# (CKM_AES_KEY_WRAP_PAD, CKM_AES_GCM): it is the tests' token that cannot hold a domain.

OCK_MODULE_GLOB = "/usr/lib/*/opencryptoki/libopencryptoki.so.0"
OCK_DAEMON = "/usr/sbin/pkcsslotd"
OCK_STATE = Path("/var/lib/opencryptoki/swtok")
OCK_PID_FILE = Path("/run/pkcsslotd.pid")
OCK_SOCKET = Path("/run/pkcsslotd.socket")
OCK_TMPFILES = Path("/usr/lib/tmpfiles.d/opencryptoki.conf")
OCK_LOCK_DIR = Path("/run/lock/opencryptoki")
OCK_SLOT = 3  # the soft token's slot in Debian's /etc/opencryptoki/opencryptoki.conf
OCK_SO_PIN = "87654321"  # the soft token's factory SO PIN; PINs are 4 to 8 characters
OCK_LOCK = Path(tempfile.gettempdir()) / "sealkeep-opencryptoki.lock"
OCK_LOCK_WAIT = 90.0


class _TokenInfo(ctypes.Structure):
    """CK_TOKEN_INFO, as far as the session counts."""

    _fields_ = [
        ("label", ctypes.c_char * 32),
        ("manufacturer_id", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16),
        ("serial_number", ctypes.c_char * 16),
        ("flags", ctypes.c_ulong),
        ("max_session_count", ctypes.c_ulong),
        ("session_count", ctypes.c_ulong),
        ("rest", ctypes.c_ulong * 8),
        ("versions", ctypes.c_ubyte * 4),
        ("utc_time", ctypes.c_char * 16),
    ]


_UNAVAILABLE = ctypes.c_ulong(-1).value


def open_sessions(module: str, slot_id: int) -> int | None:
    """How many sessions the token in ``slot_id`` has open (all processes), or None when the
    module does not say (SoftHSM2). The module must be loaded and initialised already."""
    info = _TokenInfo()
    if ctypes.CDLL(module).C_GetTokenInfo(ctypes.c_ulong(slot_id), ctypes.byref(info)) != 0:
        return None
    return None if info.session_count == _UNAVAILABLE else int(info.session_count)


def close_every_session(module: str, slot_id: int) -> None:
    """C_CloseAllSessions: what this process left open on the token (python-pkcs11 leaves a
    session open for every failed login) must not keep the next module from re-initialising
    the machine's one openCryptoki token."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(module).C_CloseAllSessions(ctypes.c_ulong(slot_id))


@dataclass
class OpenCryptokiToken:
    """The soft token, initialised for one test module."""

    module: str
    slot_id: int
    label: str
    pin: str
    so_pin: str


def _daemon_pid() -> int | None:
    """The pid of a running pkcsslotd, if one runs (its pid file first, then /proc)."""
    candidates: list[int] = []
    with suppress(OSError, ValueError):
        candidates.append(int(OCK_PID_FILE.read_text().strip()))
    candidates += [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    for pid in candidates:
        with suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "pkcsslotd":
                return pid
    return None


def _daemon_listening(since: float) -> bool:
    """Whether pkcsslotd's socket was made at ``since`` or later (not one left behind)."""
    try:
        return OCK_SOCKET.stat().st_mtime >= since
    except OSError:
        return False


class OpenCryptokiService:
    """openCryptoki on this machine: the module, the daemon (started when it was not running,
    and then stopped at the end) and the lock that keeps one test process on the token."""

    def __init__(self, module: str, pkcs11_tool: str) -> None:
        self.module = module
        self.pkcs11_tool = pkcs11_tool
        self.started: subprocess.Popen[bytes] | None = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        with OCK_LOCK.open("a") as lock:
            deadline = time.monotonic() + OCK_LOCK_WAIT
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        pytest.fail(
                            f"another test process has held the openCryptoki token for "
                            f"{OCK_LOCK_WAIT:.0f} s (lock {OCK_LOCK})"
                        )
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ensure_running(self) -> None:
        """Start pkcsslotd unless it runs (call with the lock held)."""
        if _daemon_pid() is not None:
            return
        if (
            not OCK_LOCK_DIR.is_dir()
            and OCK_TMPFILES.is_file()
            and shutil.which("systemd-tmpfiles")
        ):
            # /run is emptied at boot and only systemd recreates the daemon's lock folders.
            subprocess.run(
                ["systemd-tmpfiles", "--create", str(OCK_TMPFILES)], check=False, timeout=30
            )
        since = time.time() - 1  # the socket's mtime has a coarser clock than time.time
        self.started = subprocess.Popen(
            [OCK_DAEMON, "-f"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _daemon_listening(since):
            if self.started.poll() is not None:
                code = self.started.returncode
                self.started = None
                pytest.fail(f"pkcsslotd exited at once with status {code}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail("pkcsslotd did not come up within 10 s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the daemon if this process started it."""
        if self.started is None:
            return
        # pkcsslotd waits some 10 s for a process still connected to it: disconnect first.
        with suppress(PKCS11Error):
            pkcs11.lib(self.module).finalize()
        self.started.terminate()
        try:
            self.started.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.started.kill()
            self.started.wait(timeout=10)
        self.started = None

    def init_token(self, label: str, pin: str) -> OpenCryptokiToken:
        """Re-initialise the soft token (which destroys its objects) with ``label`` and
        ``pin``. PKCS#11 refuses while any process has a session open on it."""
        base = [self.pkcs11_tool, "--module", self.module, "--slot", str(OCK_SLOT)]
        steps = (
            ["--init-token", "--label", label, "--so-pin", OCK_SO_PIN],
            ["--login", "--login-type", "so", "--so-pin", OCK_SO_PIN, "--init-pin", "--pin", pin],
        )
        for step in steps:
            done = subprocess.run(
                base + step, capture_output=True, text=True, timeout=30, check=False
            )
            if done.returncode != 0:
                pytest.fail(f"pkcs11-tool {step[0]} failed: {(done.stderr or done.stdout).strip()}")
        return OpenCryptokiToken(self.module, OCK_SLOT, label, pin, OCK_SO_PIN)


@pytest.fixture(scope="session")
def opencryptoki_service() -> Iterator[OpenCryptokiService]:
    """openCryptoki, or a skip saying what is missing."""
    modules = sorted(glob.glob(OCK_MODULE_GLOB))
    tool = shutil.which("pkcs11-tool")
    if not modules or not Path(OCK_DAEMON).is_file():
        pytest.skip("openCryptoki is not installed (tools/setup installs package opencryptoki)")
    if tool is None:
        pytest.skip("pkcs11-tool is not installed (tools/setup installs package opensc)")
    if not os.access(OCK_STATE, os.R_OK | os.W_OK | os.X_OK):
        pytest.skip(f"openCryptoki's soft token needs root or group pkcs11 ({OCK_STATE})")
    service = OpenCryptokiService(modules[0], tool)
    yield service
    if service.started is not None:
        with service.locked():
            service.stop()


@pytest.fixture(scope="module")
def opencryptoki(opencryptoki_service: OpenCryptokiService) -> Iterator[OpenCryptokiToken]:
    """openCryptoki's soft token, re-initialised for this module (fresh label and user PIN,
    no objects) and held by this process, under a file lock, until the module ends."""
    with opencryptoki_service.locked():
        opencryptoki_service.ensure_running()
        label = f"sk-{secrets.token_hex(4)}"
        pin = secrets.token_hex(4)  # 8 characters, the soft token's longest
        token = opencryptoki_service.init_token(label, pin)
        yield token
        close_every_session(token.module, token.slot_id)


# --- every token ----------------------------------------------------------------------------


@dataclass
class Token:
    """A token under test: where a domain is made, and where it is recovered to.

    On SoftHSM2 the two are the farm's tokens "source" and "target"; openCryptoki has one
    soft token per machine, so there both are that token, and a test that moves to the
    "target" empties it first (:meth:`wipe`): the HSM is lost and replaced.
    """

    kind: str
    hsm: Hsm
    source: tuple[int, str]
    target: tuple[int, str]
    profile: str
    mechanisms: frozenset[int] = field(default=frozenset(), repr=False)
    sample_cert: ClassVar[str] = "sample-cert"

    def __post_init__(self) -> None:
        # Read once: a second session opened while a first is logged in costs openCryptoki
        # a session that is never closed (see test_a_refused_login_leaves_no_session_open).
        with self.open() as session:
            listed = session.session.token.slot.get_mechanisms()
            self.mechanisms = frozenset(int(m) for m in listed)

    @property
    def one_token(self) -> bool:
        return self.source == self.target

    def open(self, which: str = "source") -> HsmSession:
        slot_id, pin = self.source if which == "source" else self.target
        return self.hsm.open(slot_id, pin)

    def open_sessions(self) -> int | None:
        """The sessions open on the source token, where the module counts them."""
        return open_sessions(self.hsm.module, self.source[0])

    def has(self, mechanism: Mechanism) -> bool:
        return int(mechanism) in self.mechanisms

    @property
    def has_ec(self) -> bool:
        return self.has(Mechanism.EC_KEY_PAIR_GEN)

    def open_target(self) -> HsmSession:
        """The token a domain is recovered into: on openCryptoki the one token, emptied first
        (the HSM lost and replaced)."""
        if self.one_token:
            self.wipe("target")
        return self.open("target")

    def wipe(self, which: str) -> None:
        with self.open(which) as session:
            for obj in list(session.session.get_objects()):
                with suppress(PKCS11Error):
                    obj.destroy()

    def sample_keys(self, session: HsmSession) -> dict[str, Any]:
        """:func:`sealkeep.samples.sample_keys` on a token with EC keys; on one without
        (openCryptoki), the same but the EC pair, and the certificate under a label of its
        own, :attr:`sample_cert` (id 04)."""
        if self.has_ec:
            return sample_keys(session)
        return sample_keys(session, with_ec=False, cert_label=self.sample_cert)


@pytest.fixture(params=["softhsm", pytest.param("opencryptoki", marks=pytest.mark.opencryptoki)])
def token(
    request: pytest.FixtureRequest, hsm: Hsm, tokens: dict[str, SoftHsmToken]
) -> Iterator[Token]:
    """Each PKCS#11 implementation the suite has, emptied before and after the test."""
    if request.param == "softhsm":
        source, target = tokens["source"], tokens["target"]
        yield Token(
            "softhsm",
            hsm,
            (source.slot_id, source.pin),
            (target.slot_id, target.pin),
            STANDARD.name,
        )
        return
    ock = request.getfixturevalue("opencryptoki")
    under_test = Token(
        "opencryptoki",
        Hsm(ock.module),
        (ock.slot_id, ock.pin),
        (ock.slot_id, ock.pin),
        PORTABLE.name,
    )
    under_test.wipe("source")
    yield under_test
    under_test.wipe("source")
