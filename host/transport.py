"""Byte transports between the host and a drive.

A transport moves bytes and nothing else: framing, sessions and retries live in
:mod:`sealkeep.client`. :class:`SerialTransport` works with anything pyserial opens: a
device path (``/dev/ttyACM0``, a pseudo-terminal such as ``/dev/pts/7``, ``COM3``), the same
written as ``serial:///dev/ttyACM0``, or one of pyserial's URLs (``loop://``,
``socket://host:port``, ``rfc2217://host:port``, ...).

Ports with a file descriptor are read with ``select()`` and one ``os.read()`` of whatever
is waiting, which keeps the per-frame cost low on the transfer path; other pyserial ports go
through pyserial's own read and write. A port that cannot be opened, for whatever reason
pyserial gives, is a :class:`LinkError`: the drive is unreachable, never a crash.
"""

from __future__ import annotations

import errno
import os
import select
import time
from contextlib import suppress
from typing import Protocol, cast, runtime_checkable
from urllib.parse import urlsplit

import serial
import serial.rfc2217

from .errors import LinkError

__all__ = ["SerialTransport", "Transport", "open_transport", "port_path"]

DEFAULT_BAUDRATE = 115200
READ_CHUNK = 1 << 16
DEFAULT_MTU = 1 << 16
DEFAULT_WRITE_TIMEOUT = 30.0
URL_PREFIX = "serial://"
# Ports without a file descriptor wait for bytes in steps this long, so a changing wait never
# touches the port's own timeout (on rfc2217:// every change renegotiates with the server).
GENERIC_POLL = 0.05
# Ports whose write timeout is emulated are written in pieces this large, the deadline
# checked between pieces.
GENERIC_WRITE_PIECE = 4096
# URL schemes that reach a drive through a server on the network.
NETWORK_SCHEMES = ("socket", "rfc2217")


@runtime_checkable
class Transport(Protocol):
    """What the drive client needs from a link: bytes out, bytes in, nothing more."""

    @property
    def url(self) -> str:
        """The address the transport was opened with (for messages)."""
        ...

    @property
    def mtu(self) -> int:
        """The largest single write the link takes at once."""
        ...

    def connect(self) -> None:
        """Open the link; does nothing when it is open already."""
        ...

    def close(self) -> None:
        """Close the link; does nothing when it is closed already."""
        ...

    def send(self, data: bytes) -> None:
        """Write all of data (raises LinkError when the link fails or stays blocked)."""
        ...

    def receive(self, timeout: float) -> bytes:
        """Whatever has arrived, waiting up to timeout seconds for something; b"" if nothing."""
        ...


class _Port(Protocol):
    """The part of a pyserial port object this module uses."""

    timeout: float | None
    write_timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def fileno(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def open(self) -> None: ...

    def close(self) -> None: ...


def port_path(url: str) -> str:
    """What to hand to pyserial for url: ``serial:///dev/ttyACM0`` becomes ``/dev/ttyACM0``.

    Plain paths and pyserial's own URLs (``loop://``, ``socket://...``) pass through.
    """
    if url.startswith(URL_PREFIX):
        return url[len(URL_PREFIX) :]
    return url


def _has_write_timeout(port: object) -> bool:
    """Whether the pyserial class bounds a blocked write itself.

    Its RFC 2217 client refuses any write timeout (NotImplementedError when it opens), so
    for it the transport keeps the deadline.
    """
    return not isinstance(port, serial.rfc2217.Serial)


def _scheme(path: str) -> str | None:
    """The URL scheme of a pyserial address (``rfc2217``), None for a device path."""
    head, sep, _ = path.partition("://")
    return head.lower() if sep else None


def _has_host_and_port(path: str) -> bool:
    """Whether a network URL names a host and a port number (pyserial needs both)."""
    try:
        parts = urlsplit(path)
        return bool(parts.hostname) and parts.port is not None
    except ValueError:  # a port that is not a number, or out of range
        return False


def _reason(exc: BaseException) -> str:
    """A short reason from an OSError or pyserial exception."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code:
        strerror = getattr(exc, "strerror", None)
        text = strerror if isinstance(strerror, str) and strerror else os.strerror(code)
        return text.lower()
    # pyserial wraps socket errors in its own exception, raised while handling them.
    inner = exc.__cause__ or exc.__context__
    if isinstance(inner, OSError) and inner is not exc:
        return _reason(inner)
    text = str(exc).strip()
    return text or type(exc).__name__


class SerialTransport:
    """A drive behind a serial port (USB CDC, UART, pseudo-terminal) via pyserial.

    ``exclusive`` locks the port so two programs cannot talk to the same drive at once.
    ``baudrate`` matters on real UARTs only. ``write_timeout`` bounds how long a write may
    stay blocked (a drive that stopped reading) before it fails with LinkError.
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        exclusive: bool = True,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        self._url = url
        self._path = port_path(url)
        self._baudrate = baudrate
        self._exclusive = exclusive
        self._write_timeout = write_timeout
        self._mtu = mtu
        self._port: _Port | None = None
        self._fd: int | None = None
        self._emulated_write_timeout = False
        self._inbox = bytearray()  # bytes read while a write was blocked

    def __repr__(self) -> str:
        state = "open" if self._port is not None else "closed"
        return f"SerialTransport({self._url!r}, {state})"

    @property
    def url(self) -> str:
        return self._url

    @property
    def path(self) -> str:
        """The port as pyserial opens it."""
        return self._path

    @property
    def mtu(self) -> int:
        return self._mtu

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def connect(self) -> None:
        if self._port is not None:
            return
        port = self._open_port()
        fd: int | None
        try:
            fd = port.fileno()
        except (AttributeError, OSError, ValueError, serial.SerialException):
            fd = None
        self._port = port
        self._fd = fd
        self._inbox.clear()
        self._discard_stale_input()

    def _open_port(self) -> _Port:
        # pyserial's URL handlers fail in their own ways (ValueError for an unknown scheme or
        # option, SerialException, OSError, NotImplementedError for a setting a class lacks):
        # any of them means this drive cannot be reached, so each becomes a LinkError.
        try:
            port = cast(
                _Port,
                serial.serial_for_url(
                    self._path,
                    do_not_open=True,
                    baudrate=self._baudrate,
                    timeout=GENERIC_POLL,
                    exclusive=self._exclusive,
                ),
            )
        except Exception as exc:
            raise self._open_error(exc) from exc
        self._emulated_write_timeout = not _has_write_timeout(port)
        try:
            if not self._emulated_write_timeout:
                port.write_timeout = self._write_timeout
            port.open()
        except Exception as exc:
            with suppress(Exception):
                port.close()
            raise self._open_error(exc) from exc
        return port

    def _open_error(self, exc: BaseException) -> LinkError:
        text = str(exc)
        scheme = _scheme(self._path)
        reason = _reason(exc)
        prefix = f"could not open port {self._path}: "
        if reason.lower().startswith(prefix):
            reason = reason[len(prefix) :]  # pyserial repeats the address we name anyway
        if "protocol" in text and "not known" in text:
            what = f"{self._url} is neither a port nor a URL pyserial knows ({scheme}://)"
            todo = (
                "give the drive's port (/dev/ttyACM0, /dev/pts/7, COM3) or a pyserial URL "
                "such as rfc2217://HOST:PORT or socket://HOST:PORT"
            )
        elif scheme in NETWORK_SCHEMES and (
            "expected a string in the form" in text or not _has_host_and_port(self._path)
        ):
            detail = reason.split(": ", 1)[1] if "expected a string" in reason else ""
            what = f"{self._url} is not a usable {scheme} URL" + (f" ({detail})" if detail else "")
            todo = f"write it as {scheme}://HOST:PORT, e.g. {scheme}://192.0.2.7:2217"
        elif isinstance(exc, NotImplementedError):
            what = f"pyserial cannot drive {self._url}: {reason}"
            todo = "reach the drive by its port or through an rfc2217:// or socket:// server"
        elif "exclusive" in text.lower() or getattr(exc, "errno", None) in (
            errno.EAGAIN,
            errno.EBUSY,
        ):
            what = f"port {self._url} is in use by another program"
            todo = "close the other program (another sealkeep?) and try again"
        elif getattr(exc, "errno", None) == errno.ENOENT:
            what = f"cannot open drive port {self._url}: no such port"
            todo = "check that the drive is plugged in and the port name is right"
        elif getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
            what = f"cannot open drive port {self._url}: permission denied"
            todo = "add your user to the group that owns the port (often dialout) and log in again"
        elif scheme in NETWORK_SCHEMES:
            server = self._path.split("://", 1)[1].split("?", 1)[0]
            what = f"cannot reach the drive at {self._url}: {reason}"
            todo = (
                f"check that the {scheme} server at {server} is running and reachable from "
                "here, and that its drive is plugged in"
            )
        else:
            what = f"cannot open drive port {self._url}: {reason}"
            todo = "check that the drive is plugged in and the port name is right"
        return LinkError(f"{what}. To fix: {todo}.", port=self._url)

    def _discard_stale_input(self) -> None:
        """Drop bytes a previous user of the port left unread."""
        port = self._port
        if port is None:
            return
        try:
            port.reset_input_buffer()
        except (OSError, serial.SerialException, NotImplementedError):
            pass

    def close(self) -> None:
        port = self._port
        self._port = None
        self._fd = None
        self._inbox.clear()
        if port is not None:
            try:
                port.close()
            except (OSError, serial.SerialException):
                pass

    def _lost(self, exc: BaseException | None, doing: str) -> LinkError:
        reason = _reason(exc) if exc is not None else "the port closed"
        return LinkError(
            f"lost the link to the drive at {self._url} while {doing}: {reason}. "
            "To fix: check that the drive is still connected (and, for emulated drives, "
            "that the emulator is running), then try again.",
            port=self._url,
        )

    def _require(self) -> _Port:
        if self._port is None:
            raise LinkError(
                f"the link to the drive at {self._url} is not open. To fix: connect first.",
                port=self._url,
            )
        return self._port

    # -- writing -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        port = self._require()
        fd = self._fd
        if fd is None:
            self._send_generic(port, data)
            return
        view = memoryview(data)
        deadline = 0.0
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise self._lost(exc, "writing") from exc
            view = view[n:]
            if not view:
                return
            # The link is full: wait until it drains, reading what comes meanwhile so a
            # drive blocked on its own writes can go on.
            now = time.monotonic()
            if not deadline:
                deadline = now + self._write_timeout
            elif now >= deadline:
                raise self._stalled()
            try:
                readable, _, _ = select.select([fd], [fd], [], deadline - now)
            except (OSError, ValueError) as exc:
                raise self._lost(exc, "writing") from exc
            if readable:
                self._inbox += self._read_fd(fd)

    def _send_generic(self, port: _Port, data: bytes) -> None:
        # A class that cannot bound a write gets the deadline checked between pieces. (The
        # RFC 2217 client also gives up on a socket blocked for 5 s, reported as a stall.)
        piece = GENERIC_WRITE_PIECE if self._emulated_write_timeout else max(1, len(data))
        deadline = time.monotonic() + self._write_timeout
        for start in range(0, len(data), piece):
            if start and time.monotonic() > deadline:
                raise self._stalled()
            try:
                port.write(data[start : start + piece] if piece < len(data) else data)
            except serial.SerialTimeoutException as exc:
                raise self._stalled() from exc
            except (OSError, serial.SerialException) as exc:
                if isinstance(exc.__context__, TimeoutError):
                    raise self._stalled() from exc
                raise self._lost(exc, "writing") from exc

    def _stalled(self) -> LinkError:
        return LinkError(
            f"the drive at {self._url} stopped taking data for {self._write_timeout:g} s. "
            "To fix: check that the drive is running, then try again.",
            port=self._url,
            timed_out=True,
        )

    # -- reading -------------------------------------------------------------------------

    def _read_fd(self, fd: int) -> bytes:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise self._lost(exc, "reading") from exc
        if not data:
            raise self._lost(None, "reading")
        return data

    def receive(self, timeout: float) -> bytes:
        port = self._require()
        if self._inbox:
            data = bytes(self._inbox)
            self._inbox.clear()
            return data
        fd = self._fd
        if fd is None:
            return self._receive_generic(port, timeout)
        try:
            readable, _, _ = select.select([fd], [], [], max(0.0, timeout))
        except (OSError, ValueError) as exc:
            raise self._lost(exc, "reading") from exc
        if not readable:
            return b""
        return self._read_fd(fd)

    def _receive_generic(self, port: _Port, timeout: float) -> bytes:
        # The port's own timeout stays GENERIC_POLL; longer waits are several polls.
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                waiting = port.in_waiting
                if waiting:
                    return port.read(waiting)
                if time.monotonic() >= deadline:
                    return b""
                first = port.read(1)
                if first:
                    waiting = port.in_waiting
                    return first + port.read(waiting) if waiting else first
        except (OSError, serial.SerialException) as exc:
            raise self._lost(exc, "reading") from exc


def open_transport(
    url: str, *, exclusive: bool = True, baudrate: int = DEFAULT_BAUDRATE
) -> Transport:
    """Open and return the transport for url: a port path or a pyserial URL."""
    transport = SerialTransport(url, exclusive=exclusive, baudrate=baudrate)
    transport.connect()
    return transport
