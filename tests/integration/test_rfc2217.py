"""Drives behind an RFC 2217 server (``rfc2217://HOST:PORT``), and drives that cannot be opened.

The server runs in a thread of the test, the way pyserial's example rfc2217_server.py does it:
pyserial's ``PortManager`` speaks Telnet/RFC 2217 on a loopback socket and the bytes go to and
from an emulated drive's pty.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import serial
import serial.rfc2217
from sealkeep.client import DriveClient
from sealkeep.domain import DriveGroup
from sealkeep.emulator import EmulatedDrive
from sealkeep.errors import EXIT_UNREACHABLE, LinkError
from sealkeep.transport import SerialTransport, open_transport

if TYPE_CHECKING:
    from conftest import StartDrives

pytestmark = pytest.mark.integration

SEALKEEP = [sys.executable, "-m", "sealkeep"]


class PtyPort(serial.Serial):
    """An emulated drive's pty as the server's serial port: a pty has no modem lines, so the
    control requests an RFC 2217 client sends (DTR, RTS, break) are accepted and ignored."""

    def _update_dtr_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return False

    @property
    def dsr(self) -> bool:
        return False

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return False


class Rfc2217Server:
    """An RFC 2217 server on 127.0.0.1 for one pty, serving one client at a time."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.url = f"rfc2217://127.0.0.1:{self.listener.getsockname()[1]}"
        self.clients = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="rfc2217 server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.listener.close()
        assert not self.thread.is_alive(), "the RFC 2217 server thread did not stop"

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.clients += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as pyserial's example
            with conn:
                self._bridge(conn)

    def _bridge(self, conn: socket.socket) -> None:
        port = PtyPort(self.device, timeout=0.05)
        lock = threading.Lock()
        closed = threading.Event()

        class Connection:
            """What PortManager writes its Telnet answers to."""

            def write(self, data: bytes) -> None:
                with lock:
                    conn.sendall(data)

        network = Connection()
        manager = serial.rfc2217.PortManager(port, network)

        def drive_to_network() -> None:
            while not closed.is_set():
                try:
                    data = port.read(port.in_waiting or 1)
                    if data:
                        network.write(b"".join(manager.escape(data)))
                except (OSError, serial.SerialException):
                    return

        pump = threading.Thread(target=drive_to_network, name="rfc2217 pump", daemon=True)
        pump.start()
        conn.settimeout(0.1)
        try:
            while not self.stopping.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    break
                port.write(b"".join(manager.filter(data)))
        except OSError:
            pass
        finally:
            closed.set()
            pump.join(5)
            port.close()


@pytest.fixture
def rfc2217_server() -> Iterator[Any]:
    """``rfc2217_server(drive)``: an RFC 2217 server for the drive; stopped after the test."""
    servers: list[Rfc2217Server] = []

    def start(drive: EmulatedDrive) -> Rfc2217Server:
        server = Rfc2217Server(drive.port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def closed_port_url() -> str:
    """An rfc2217:// URL on loopback where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"rfc2217://127.0.0.1:{port}"


def sealkeep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SEALKEEP, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_drives_lists_a_drive_behind_an_rfc2217_server(
    emulated_drives: StartDrives, rfc2217_server: Any
) -> None:
    drive = emulated_drives(1).drives[0]
    server = rfc2217_server(drive)
    proc = sealkeep("drives", "--drives", server.url, "--json", "--timeout", "5")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["drives"]
    assert row["serial"] == drive.serial
    assert row["port"] == server.url
    assert "Traceback" not in proc.stderr
    assert server.clients == 1


def test_client_talks_to_a_drive_over_rfc2217(
    emulated_drives: StartDrives, rfc2217_server: Any
) -> None:
    drive = emulated_drives(1).drives[0]
    server = rfc2217_server(drive)
    start = time.monotonic()
    with DriveClient(open_transport(server.url), timeout=5) as client:
        opened = time.monotonic() - start
        hellos = [client.hello() for _ in range(20)]
        per_hello = (time.monotonic() - start - opened) / len(hellos)
    assert {h.serial for h in hellos} == {drive.serial}
    # about 1.3 ms each on loopback (0.4 ms straight to the pty); far more means the wait
    # for a reply is being renegotiated or timed out instead of woken by the data
    assert per_hello < 0.1, f"{per_hello:.3f} s per HELLO over RFC 2217"
    assert opened < 5, f"opening took {opened:.2f} s"


def test_an_rfc2217_server_that_is_gone_is_an_unreachable_drive() -> None:
    url = closed_port_url()
    with pytest.raises(LinkError) as caught:
        open_transport(url)
    assert caught.value.exit_code == EXIT_UNREACHABLE
    message = str(caught.value)
    assert url in message and "connection refused" in message
    assert f"server at {url.split('://')[1]} is running" in message


def test_two_drives_one_unreachable_the_other_answers(
    emulated_drives: StartDrives, rfc2217_server: Any
) -> None:
    drive = emulated_drives(1).drives[0]
    server = rfc2217_server(drive)
    gone = closed_port_url()
    proc = sealkeep("drives", "--drives", f"{gone},{server.url}", "--json", "--timeout", "5")
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = {row["port"]: row for row in json.loads(proc.stdout)["drives"]}
    assert rows[server.url]["serial"] == drive.serial
    assert "connection refused" in rows[gone]["error"]


def test_a_drive_group_goes_on_without_the_unreachable_drive(
    emulated_drives: StartDrives, rfc2217_server: Any
) -> None:
    """What backup, restore, verify, sets and the domain ceremonies open their drives with."""
    drives = emulated_drives(2).drives
    server = rfc2217_server(drives[0])
    gone = closed_port_url()
    with DriveGroup([gone, server.url, drives[1].port], timeout=5) as group:
        reachable = {d.address: d.serial for d in group.drives if d.reachable}
        (missing,) = [d for d in group.drives if not d.reachable]
        problem = missing.problem()
    assert reachable == {server.url: drives[0].serial, drives[1].port: drives[1].serial}
    assert missing.address == gone
    assert problem.code == EXIT_UNREACHABLE
    assert "connection refused" in problem.reason


class StalledServer:
    """An RFC 2217 server that answers the client's opening, then never reads again: a
    drive that stopped taking data."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rfc2217://127.0.0.1:{self.listener.getsockname()[1]}"
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="stalled server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        with conn:
            port = serial.serial_for_url("loop://")
            manager = serial.rfc2217.PortManager(port, _Sender(conn))
            conn.settimeout(0.5)
            try:
                while data := conn.recv(4096):  # the opening: options, settings, purge
                    b"".join(manager.filter(data))
            except TimeoutError:
                pass  # the client is open and now writes; nothing more is read
            self.release.wait(30)
            port.close()

    def stop(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.listener.close()


class _Sender:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def write(self, data: bytes) -> None:
        self.conn.sendall(data)


def test_a_write_the_rfc2217_drive_stops_taking_times_out() -> None:
    """pyserial's RFC 2217 client takes no write timeout; the transport keeps one anyway."""
    server = StalledServer()
    transport = SerialTransport(server.url, write_timeout=1.0)
    try:
        transport.connect()
        start = time.monotonic()
        with pytest.raises(LinkError) as caught:
            transport.send(b"\x55" * (64 << 20))
        took = time.monotonic() - start
    finally:
        transport.close()
        server.stop()
    assert caught.value.timed_out
    assert "stopped taking data" in str(caught.value)
    # the deadline, or pyserial's own 5 s socket timeout on a piece already under way
    assert took < 8, f"a stalled write failed only after {took:.1f} s"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nosuch://drive", "neither a port nor a URL pyserial knows"),
        ("rfc2217://127.0.0.1", "not a usable rfc2217 URL"),
        ("rfc2217://127.0.0.1:2217?nosuchoption", "not a usable rfc2217 URL"),
        ("socket://127.0.0.1:notaport", "not a usable socket URL"),
    ],
)
def test_urls_that_cannot_work_are_refused_clearly(url: str, says: str) -> None:
    transport = SerialTransport(url)
    with pytest.raises(LinkError) as caught:
        transport.connect()
    assert says in str(caught.value) and "To fix:" in str(caught.value)
    assert not transport.is_open
