"""Fixtures for the service: `sealkeep serve` in a subprocess on a free loopback port, with a
fresh state folder per test, SoftHSM2 tokens and, where a test needs them, emulated drives
holding a backup domain. The server is stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

INTEGRATION = Path(__file__).parent.parent / "integration"
sys.path.insert(0, str(INTEGRATION))

import hsm_fixtures  # noqa: E402
from cli_runner import SealkeepCli, custodians_file  # noqa: E402
from hsm_fixtures import USER_PIN, SoftHsmFarm  # noqa: E402
from sealkeep.hsm import Hsm  # noqa: E402
from sealkeep.samples import sample_keys  # noqa: E402
from service_support import (  # noqa: E402
    ADMIN_PASSWORD,
    Domain,
    Service,
    init_state,
    start_service,
    stop_service,
)

_spec = importlib.util.spec_from_file_location("integration_conftest", INTEGRATION / "conftest.py")
assert _spec is not None and _spec.loader is not None
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)
# The integration tests' fixtures, shared: a conftest below the top may not name plugins.
for _name in ("emulated_drives", "micropython_command"):
    globals()[_name] = getattr(_integration, _name)
for _name in ("softhsm", "hsm", "tokens"):
    globals()[_name] = getattr(hsm_fixtures, _name)


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
