"""The serial transport: URL mapping, pyserial URLs, pseudo-terminals, and its errors."""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections.abc import Iterator

import pytest
from sealkeep.errors import LinkError
from sealkeep.transport import SerialTransport, Transport, open_transport, port_path


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("serial:///dev/ttyACM0", "/dev/ttyACM0"),
        ("serial://COM3", "COM3"),
        ("/dev/pts/7", "/dev/pts/7"),
        ("loop://", "loop://"),
        ("socket://localhost:7000", "socket://localhost:7000"),
        ("rfc2217://host:2217", "rfc2217://host:2217"),
    ],
)
def test_port_path(url: str, path: str) -> None:
    assert port_path(url) == path
    t = SerialTransport(url)
    assert (t.url, t.path) == (url, path)


def test_is_a_transport() -> None:
    assert isinstance(SerialTransport("loop://"), Transport)


def test_loop_url_round_trip() -> None:
    t = open_transport("loop://")
    try:
        assert t.url == "loop://" and t.mtu > 4096
        t.send(b"hello\x00world")
        got = b""
        deadline = time.monotonic() + 2
        while len(got) < 11 and time.monotonic() < deadline:
            got += t.receive(0.5)
        assert got == b"hello\x00world"
        start = time.monotonic()
        assert t.receive(0.05) == b""
        assert time.monotonic() - start < 1.0
    finally:
        t.close()
        t.close()  # closing twice is fine


def test_connect_is_idempotent() -> None:
    t = SerialTransport("loop://")
    t.connect()
    t.connect()
    assert t.is_open
    t.close()
    assert not t.is_open


def test_missing_port_is_a_link_error_naming_it() -> None:
    with pytest.raises(LinkError) as info:
        open_transport("/dev/sealkeep-no-such-port")
    err = info.value
    assert err.exit_code == 3 and err.port == "/dev/sealkeep-no-such-port"
    assert "/dev/sealkeep-no-such-port" in str(err) and "no such port" in str(err)
    with pytest.raises(LinkError) as info2:
        open_transport("serial:///dev/sealkeep-no-such-port")
    assert "serial:///dev/sealkeep-no-such-port" in str(info2.value)


def test_not_open_is_a_link_error() -> None:
    t = SerialTransport("loop://")
    with pytest.raises(LinkError):
        t.send(b"x")
    with pytest.raises(LinkError):
        t.receive(0)


@pytest.fixture
def pty_echo() -> Iterator[tuple[str, int]]:
    """A pty whose master side echoes everything back; yields (slave path, master fd)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if ready:
                    view = memoryview(os.read(master, 1 << 16))
                    while view:
                        view = view[os.write(master, view) :]
            except OSError:
                return

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        yield os.ttyname(slave), master
    finally:
        stop.set()
        thread.join()
        for fd in (master, slave):
            try:
                os.close(fd)
            except OSError:
                pass


def test_pty_round_trip_of_large_writes(pty_echo: tuple[str, int]) -> None:
    path, _ = pty_echo
    t = open_transport(path)
    try:
        data = os.urandom(1 << 20)
        received = bytearray()

        def reader() -> None:
            deadline = time.monotonic() + 10
            while len(received) < len(data) and time.monotonic() < deadline:
                received.extend(t.receive(0.5))

        # send and receive from one thread: the transport drains input while a write blocks
        t.send(data)
        reader()
        assert bytes(received) == data
    finally:
        t.close()


def test_pty_is_opened_exclusively(pty_echo: tuple[str, int]) -> None:
    path, _ = pty_echo
    first = open_transport(path)
    try:
        with pytest.raises(LinkError) as info:
            open_transport(path)
        assert "in use" in str(info.value) and path in str(info.value)
        shared = open_transport(path, exclusive=False)
        shared.close()
    finally:
        first.close()
    open_transport(path).close()


def test_vanished_pty_is_a_link_error() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    t = open_transport(path)
    os.close(slave)
    os.close(master)
    try:
        with pytest.raises(LinkError) as info:
            for _ in range(10):
                t.receive(0.2)
        assert path in str(info.value) and not info.value.timed_out
    finally:
        t.close()
