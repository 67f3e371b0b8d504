"""`sealkeep serve` and `serve init` as an administrator meets them: HTTPS by default, plain
HTTP only on loopback, a state folder others cannot read, clear refusals."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from service_support import ADMIN, Service, init_state, run_sealkeep, start_service, stop_service

pytestmark = pytest.mark.integration


def test_https_by_default_with_a_certificate_made_at_first_start(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    state = init_state(tmp_path, service_env)
    service: Service = start_service(state, service_env, https=True)
    try:
        assert service.url.startswith("https://127.0.0.1:")
        admin = service.login()  # verified against the certificate the service made
        assert admin.get("/api/v1/me").json()["user"] == ADMIN
        cookie = admin.cookies.jar
        assert all(c.secure for c in cookie)
        for name in ("tls-key.pem", "audit-key.pem", "sealkeep.db"):
            mode = (state / name).stat().st_mode
            assert not mode & (stat.S_IRWXG | stat.S_IRWXO), name
        assert not state.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    finally:
        assert "Traceback" not in stop_service(service)


def test_plain_http_is_refused_off_loopback_and_init_twice_changes_nothing(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    state = init_state(tmp_path, service_env)
    refused = run_sealkeep(
        service_env, "serve", "--state", str(state), "--listen", "0.0.0.0:0", "--http", code=2
    )
    assert "plain HTTP only on a loopback address" in refused.stderr
    again = run_sealkeep(
        service_env,
        "serve",
        "init",
        "--state",
        str(state),
        "--admin",
        "mallory",
        "--password-file",
        str(tmp_path / "admin-password"),
        code=2,
    )
    assert "already set up" in again.stderr
    missing = run_sealkeep(service_env, "serve", "--state", str(tmp_path / "nowhere"), code=2)
    assert "sealkeep serve init" in missing.stderr
    bad_listen = run_sealkeep(
        service_env, "serve", "--state", str(state), "--listen", "localhost", code=2
    )
    assert "HOST:PORT" in bad_listen.stderr


def test_init_refuses_a_short_password_and_never_takes_it_on_the_command_line(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    short = tmp_path / "short"
    short.write_text("tiny\n")
    short.chmod(0o600)
    done = run_sealkeep(
        service_env,
        "serve",
        "init",
        "--state",
        str(tmp_path / "s"),
        "--admin",
        "a",
        "--password-file",
        str(short),
        code=2,
    )
    assert "12" in done.stderr and not (tmp_path / "s" / "sealkeep.db").exists()
    refused = run_sealkeep(
        service_env,
        "serve",
        "init",
        "--state",
        str(tmp_path / "s"),
        "--admin",
        "a",
        "--password",
        "hunter2hunter2",
        code=2,
    )
    assert "hunter2hunter2" not in refused.stderr
