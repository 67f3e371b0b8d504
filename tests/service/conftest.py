"""Fixtures for the service: `sealkeep serve` in a subprocess on a free loopback port, with a
fresh state folder per test, SoftHSM2 tokens and, where a test needs them, emulated drives
holding a backup domain. The server is stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

INTEGRATION = Path(__file__).parent.parent / "integration"
sys.path.insert(0, str(INTEGRATION))

import hsm_fixtures  # noqa: E402
from cli_runner import SealkeepCli, custodians_file  # noqa: E402
from hsm_fixtures import USER_PIN, SoftHsmFarm  # noqa: E402
from sealkeep.hsm import Hsm  # noqa: E402
from sealkeep.samples import sample_keys  # noqa: E402

_spec = importlib.util.spec_from_file_location("integration_conftest", INTEGRATION / "conftest.py")
assert _spec is not None and _spec.loader is not None
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)
# The integration tests' fixtures, shared: a conftest below the top may not name plugins.
for _name in ("emulated_drives", "micropython_command"):
    globals()[_name] = getattr(_integration, _name)
for _name in ("softhsm", "hsm", "tokens"):
    globals()[_name] = getattr(hsm_fixtures, _name)

ADMIN = "root-admin"
ADMIN_PASSWORD = "correct horse battery staple"
STARTUP_SECONDS = 30.0


@dataclass
class Service:
    """A running `sealkeep serve`: its URL, state folder and process."""

    url: str
    state: Path
    process: subprocess.Popen[str]
    env: dict[str, str]
    verify: Any = False
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **options: Any) -> httpx.Client:
        client = httpx.Client(base_url=self.url, verify=self.verify, timeout=60, **options)
        self.clients.append(client)
        return client

    def login(
        self, user: str = ADMIN, password: str = ADMIN_PASSWORD, **options: Any
    ) -> httpx.Client:
        """A client logged in as ``user``, sending its CSRF token with every request."""
        client = self.client(**options)
        reply = client.post("/api/v1/login", json={"user": user, "password": password})
        assert reply.status_code == 200, reply.text
        client.headers["X-CSRF-Token"] = reply.json()["csrf"]
        return client

    def add_user(self, name: str, *roles: str, password: str = ADMIN_PASSWORD) -> httpx.Client:
        admin = self.login()
        made = admin.post(
            "/api/v1/users", json={"user": name, "password": password, "roles": list(roles)}
        )
        assert made.status_code == 201, made.text
        return self.login(name, password)

    def wait_job(self, client: httpx.Client, job: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state: dict[str, Any] = client.get(f"/api/v1/jobs/{job}").json()
            if state["state"] in ("done", "failed", "interrupted"):
                return state
            time.sleep(0.2)
        raise AssertionError(f"job {job} did not end in {timeout} s")


def run_sealkeep(
    env: dict[str, str], *args: str, code: int = 0
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def init_state(tmp: Path, env: dict[str, str], *allow: str) -> Path:
    state = tmp / "state"
    password_file = tmp / "admin-password"
    password_file.write_text(ADMIN_PASSWORD + "\n")
    password_file.chmod(0o600)
    extra = [a for cidr in allow for a in ("--allow", cidr)]
    run_sealkeep(
        env,
        "serve",
        "init",
        "--state",
        str(state),
        "--admin",
        ADMIN,
        "--password-file",
        str(password_file),
        *extra,
    )
    return state


def start_service(state: Path, env: dict[str, str], *args: str, https: bool = False) -> Service:
    argv = [sys.executable, "-m", "sealkeep", "serve", "--state", str(state)]
    argv += ["--listen", "127.0.0.1:0", *args] + ([] if https else ["--http"])
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("sealkeep serve: "):
        process.kill()
        _, err = process.communicate(timeout=10)
        raise AssertionError(f"serve did not start: {line!r} {err}")
    url = line.removeprefix("sealkeep serve: ")
    verify: Any = False
    if https:
        process.stdout.readline()  # the certificate's fingerprint
        import ssl

        verify = ssl.create_default_context(cafile=str(state / "tls-cert.pem"))
    service = Service(url, state, process, env, verify)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            if service.client().get("/api/v1/openapi.json").status_code == 200:
                return service
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_service(service)
            raise AssertionError("serve did not answer in time")
        time.sleep(0.1)


def stop_service(service: Service) -> str:
    """Stop the server; returns what it wrote on stderr."""
    for client in service.clients:
        client.close()
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(timeout=10)
    _, err = service.process.communicate(timeout=10)
    return err


@pytest.fixture
def service_env(softhsm: SoftHsmFarm) -> dict[str, str]:
    env = {**softhsm.env}
    for name in ("SEALKEEP_PIN", "SEALKEEP_DRIVES", "SEALKEEP_CONFIG"):
        env.pop(name, None)
    return env


@pytest.fixture
def serve(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Callable[..., Service]]:
    """``serve(*args, env=..., https=False, allow=())``: init a fresh state folder and start
    the service; every service started is stopped after the test, and must not have logged
    a traceback."""
    started: list[Service] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        https: bool = False,
        allow: tuple[str, ...] = (),
    ) -> Service:
        environment = {**service_env, **(env or {})}
        state = init_state(tmp_path, environment, *allow)
        service = start_service(state, environment, *args, https=https)
        started.append(service)
        return service

    yield start
    logs = [stop_service(s) for s in started]
    for log in logs:
        assert "Traceback" not in log, log
        # nothing secret reaches the service's log
        for secret in (USER_PIN, ADMIN_PASSWORD):
            assert secret not in log


@dataclass
class Domain:
    """A SoftHSM2 slot with sample keys and a 3-drive backup domain on emulated drives."""

    slot_id: int
    drives: str
    cli: SealkeepCli
    emulator: Any


@pytest.fixture
def make_domain(
    tmp_path: Path,
    softhsm: SoftHsmFarm,
    hsm: Hsm,
    tokens: dict[str, Any],
    emulated_drives: Any,
) -> Callable[..., Domain]:
    """``make_domain(link="raw")``: the "source" slot with sample keys and a 2-of-3 backup
    domain on three emulated drives behind ``link``."""

    def make(link: str = "raw") -> Domain:
        source = tokens["source"]
        with hsm.open(source.slot_id, source.pin) as session:
            sample_keys(session)
        emulator = emulated_drives(3, link=link)
        ports = ",".join(d.port for d in emulator.drives)
        cli = SealkeepCli(softhsm, tmp_path)
        custodians = custodians_file(tmp_path, emulator.drives)
        cli(
            "domain",
            "create",
            "--slot",
            "source",
            "--drives",
            ports,
            "--passphrases",
            str(custodians),
            timeout=300,
        )
        return Domain(source.slot_id, ports, cli, emulator)

    return make


@pytest.fixture
def domain(make_domain: Callable[..., Domain]) -> Domain:
    """The "source" slot with sample keys and a backup domain on three emulated drives."""
    return make_domain()


__all__ = ["USER_PIN", "os"]
