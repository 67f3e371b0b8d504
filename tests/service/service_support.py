"""What the service's tests share besides fixtures: the admin's name and password, a
`sealkeep serve` started and stopped in a subprocess, and the backup domain a test gets.

Imported by name (``from service_support import ...``); a module named ``conftest`` would
clash with the integration tests' own when both folders run in one pytest call.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cli_runner import SealkeepCli
from hsm_fixtures import USER_PIN

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


@dataclass
class Domain:
    """A SoftHSM2 slot with sample keys and a 3-drive backup domain on emulated drives."""

    slot_id: int
    drives: str
    cli: SealkeepCli
    emulator: Any


__all__ = ["USER_PIN"]
