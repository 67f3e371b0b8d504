"""Fixtures for emulated drives: the real firmware on the MicroPython unix port behind ptys.

``emulated_drives(count=..., capacity=..., link=...)`` starts an :class:`Emulator` in the
test's temporary folder with fast settings (no authentication back-off) and stops it when
the test ends, whatever happened: no process or pty outlives the test. ``connect(drive)``
opens a :class:`DriveClient` on an emulated drive.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from sealkeep.client import DriveClient
from sealkeep.domain import ENV_KDF_FLOOR, ENV_KDF_MEMORY, ENV_KDF_TIME
from sealkeep.emulator import EmulatedDrive, Emulator, EmulatorError, find_micropython
from sealkeep.relay import LinkSpec
from sealkeep.transport import open_transport

# Drives in tests answer authentication failures at once.
FAST_SETTINGS: dict[str, Any] = {"backoff_ms": 0}


class StartDrives(Protocol):
    def __call__(
        self,
        count: int = 1,
        *,
        capacity: int | None = None,
        link: str | LinkSpec = "raw",
        heap: str = "96K",
        dir: Path | None = None,
        **options: Any,
    ) -> Emulator: ...


@pytest.fixture(scope="session")
def micropython_command() -> str:
    try:
        return find_micropython()
    except EmulatorError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def emulated_drives(tmp_path: Path, micropython_command: str) -> Iterator[StartDrives]:
    """A factory: ``emulated_drives(5, capacity=1 << 20, link="usb-fs")`` returns a
    started Emulator, in a folder of its own under tmp_path unless ``dir`` names one (give
    the same dir again, after stopping the first, to bring its drives back). Other keyword
    arguments go to Emulator (``seed``, ``settings``, ``backoff_ms``)."""
    started: list[Emulator] = []

    def start(
        count: int = 1,
        *,
        capacity: int | None = None,
        link: str | LinkSpec = "raw",
        heap: str = "96K",
        dir: Path | None = None,
        **options: Any,
    ) -> Emulator:
        settings = {**FAST_SETTINGS, **options}
        if dir is None:
            dir = tmp_path / ("drives" if not started else f"drives-{len(started) + 1}")
        emulator = Emulator(
            dir,
            count,
            heap=heap,
            capacity=capacity,
            link=link,
            micropython=micropython_command,
            **settings,
        )
        started.append(emulator)
        emulator.start()
        return emulator

    yield start
    for emulator in reversed(started):
        emulator.stop()


@pytest.fixture
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at tiny costs (and the floor lowered to match): these tests are about
    ceremonies, not the KDF. Modules take it with ``pytest.mark.usefixtures("cheap_kdf")``."""
    monkeypatch.setenv(ENV_KDF_MEMORY, "8")
    monkeypatch.setenv(ENV_KDF_TIME, "1")
    monkeypatch.setenv(ENV_KDF_FLOOR, "m=8,t=1")


@pytest.fixture
def start(emulated_drives: StartDrives, tmp_path: Path) -> Callable[..., Emulator]:
    """``start(n, **options)``: emulated drives, each group in a folder of its own; all stop
    when the test ends."""
    count = itertools.count()

    def run(n: int, **options: Any) -> Emulator:
        return emulated_drives(n, dir=tmp_path / f"drives{next(count)}", **options)

    return run


@pytest.fixture
def connect() -> Iterator[Callable[..., DriveClient]]:
    """``connect(drive, timeout=2.0)``: a connected DriveClient, closed after the test."""
    clients: list[DriveClient] = []

    def open_client(drive: EmulatedDrive, timeout: float = 2.0) -> DriveClient:
        client = DriveClient(open_transport(drive.port), timeout=timeout, serial_hint=drive.serial)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
