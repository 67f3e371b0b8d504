"""The link between the host and an emulated drive: pacing and fault injection.

Two layers:

- :class:`Channel` (in :mod:`sealkeep.relay_channel`) models one direction of a link
  without any I/O: it paces bytes to a :class:`LinkSpec` and injects faults, with random
  choices from a seeded generator, so a seed replays the same faults.
- :class:`Relay` is one thread that moves bytes between each drive's pseudo-terminal
  (the host's side) and the drive process's stdin/stdout pipes through a pair of channels
  per drive. :class:`RelayPort` is one drive's place in it; its fault methods are safe to
  call from any thread.

Pacing model: a link sends a fed chunk as packets of ``packet`` bytes, back to back at
``rate`` bytes/s (a token bucket one packet deep), each delivered ``latency`` seconds after
its last byte was sent. A raw link with no faults is a straight copy of up to 64 KiB per
read, without per-byte work.
"""

from __future__ import annotations

import errno
import os
import random
import selectors
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .protocol import framing, messages
from .relay_channel import (
    DEFAULT_LIMIT,
    RAW,
    USB_FS,
    Channel,
    ChannelStats,
    Direction,
    Fault,
    FaultKind,
    LinkSpec,
    parse_link,
)

__all__ = [
    "RAW",
    "USB_FS",
    "Channel",
    "ChannelStats",
    "Direction",
    "Fault",
    "FaultKind",
    "LinkSpec",
    "Relay",
    "RelayPort",
    "parse_link",
]

READ_CHUNK = 1 << 16
# A paced channel wakes the relay at most this often: the bytes due meanwhile go together.
TICK = 0.001


# -- the relay ----------------------------------------------------------------------------

ReadyCallback = Callable[["RelayPort", int, bool], None]
ExitCallback = Callable[["RelayPort", int], None]

_MASTER = 0
_DRIVE_OUT = 1
_DRIVE_IN = 2


def probe_frame(seq: int = 0xFFFF) -> bytes:
    """The HELLO the relay sends a freshly started drive to know it is up."""
    return framing.build_frame(messages.HELLO, seq, b"\xa0")


class RelayPort:
    """One drive's place in the relay: the pty master (host side), the drive's pipes, a
    channel each way. Fault methods run under the relay's lock and take effect at once.

    ``h2d`` is host to drive, ``d2h`` drive to host.
    """

    def __init__(self, relay: Relay, index: int, master: int, link: LinkSpec, seed: int) -> None:
        self.relay = relay
        self.index = index
        self.master = master
        rng = random.Random(seed)
        self.h2d = Channel(link, rng=random.Random(rng.getrandbits(64)))
        self.d2h = Channel(link, rng=random.Random(rng.getrandbits(64)))
        self.lost_while_off = 0  # host bytes that met no drive (process not running)
        self._drive_in = -1
        self._drive_out = -1
        self._generation = 0
        self._to_drive = bytearray()
        self._to_host = bytearray()
        self._probe: framing.FrameReader | None = None
        self._on_ready: ReadyCallback | None = None
        self._on_exit: ExitCallback | None = None

    def __repr__(self) -> str:
        return f"RelayPort({self.index}, {'attached' if self.attached else 'detached'})"

    @property
    def attached(self) -> bool:
        return self._drive_out >= 0

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def _channels(self, direction: Direction) -> list[Channel]:
        if direction == "h2d":
            return [self.h2d]
        if direction == "d2h":
            return [self.d2h]
        if direction == "both":
            return [self.h2d, self.d2h]
        raise ValueError(f"unknown direction {direction!r}: use h2d, d2h or both")

    # -- faults (any thread) --------------------------------------------------------------

    def add_fault(self, direction: Direction, fault: Fault) -> None:
        """Arm a fault on one direction (or both); ``at`` counts from the bytes passed so far."""
        with self.relay.lock:
            for channel in self._channels(direction):
                channel.add_fault(fault)
        self.relay.wake()

    def drop(
        self, direction: Direction, *, probability: float = 0.0, at: int | None = None, n: int = 1
    ) -> None:
        self.add_fault(direction, Fault("drop", probability, at, n))

    def corrupt(
        self, direction: Direction, *, probability: float = 0.0, at: int | None = None, n: int = 1
    ) -> None:
        self.add_fault(direction, Fault("corrupt", probability, at, n))

    def duplicate(
        self, direction: Direction, *, probability: float = 0.0, at: int | None = None, n: int = 1
    ) -> None:
        self.add_fault(direction, Fault("duplicate", probability, at, n))

    def clear_faults(self, direction: Direction = "both") -> None:
        """Remove armed faults and extra delay; plug the cable back in."""
        with self.relay.lock:
            for channel in self._channels(direction):
                channel.clear_faults()
                channel.set_delay(0.0)
                channel.replug()
        self.relay.wake()

    def set_delay(self, seconds: float, direction: Direction = "both") -> None:
        """Extra latency for every byte from now on (0 ends it)."""
        with self.relay.lock:
            for channel in self._channels(direction):
                channel.set_delay(seconds)
        self.relay.wake()

    def unplug(self, duration: float | None = None, direction: Direction = "both") -> None:
        """Pull the cable: every byte is lost for duration seconds, or until :meth:`replug`."""
        with self.relay.lock:
            now = self.relay.clock()
            for channel in self._channels(direction):
                channel.unplug(now, duration)
        self.relay.wake()

    def replug(self, direction: Direction = "both") -> None:
        with self.relay.lock:
            for channel in self._channels(direction):
                channel.replug()
        self.relay.wake()

    def stats(self) -> dict[str, ChannelStats]:
        """A copy of both channels' counters."""
        with self.relay.lock:
            return {
                "h2d": ChannelStats(**vars(self.h2d.stats)),
                "d2h": ChannelStats(**vars(self.d2h.stats)),
            }


@dataclass
class _Registration:
    mask: int = 0
    role: int = 0
    port: RelayPort | None = None


class Relay:
    """One thread copying bytes between every drive's pty master and its process pipes.

    Drives come and go with :meth:`attach` / :meth:`detach`; the pty stays, so the host's
    port path stays valid across drive restarts. While no drive process is attached, bytes
    from the host are dropped (as a powered-off drive would); while a fresh drive is being
    probed, they wait in the pty.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self._ports: list[RelayPort] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector: selectors.BaseSelector = selectors.DefaultSelector()
        self._registered: dict[int, _Registration] = {}
        self._selector.register(self._wake_r, selectors.EVENT_READ, _Registration())
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._error: BaseException | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sealkeep-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the drive pipes it holds (not the pty masters)."""
        with self.lock:
            self._stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self.lock:
            for port in self._ports:
                self._close_drive(port)
        if not self._closed:
            self._closed = True
            self._selector.close()
            self._registered.clear()
            os.close(self._wake_r)
            os.close(self._wake_w)

    @property
    def error(self) -> BaseException | None:
        """What ended the relay thread, if it failed."""
        return self._error

    def wake(self) -> None:
        if self._closed:
            return
        try:
            os.write(self._wake_w, b"\x01")
        except (BlockingIOError, OSError):
            pass  # already awake, or closing

    # -- ports ---------------------------------------------------------------------------

    def add_port(self, master: int, link: LinkSpec = RAW, seed: int | None = None) -> RelayPort:
        """Relay a pty master (made non-blocking here); returns the drive's port."""
        os.set_blocking(master, False)
        with self.lock:
            index = len(self._ports)
            port_seed = seed if seed is not None else random.getrandbits(64)
            port = RelayPort(self, index, master, link, port_seed)
            self._ports.append(port)
        self.wake()
        return port

    def attach(
        self,
        port: RelayPort,
        drive_in: int,
        drive_out: int,
        *,
        generation: int = 0,
        probe: bool = True,
        on_ready: ReadyCallback | None = None,
        on_exit: ExitCallback | None = None,
    ) -> None:
        """Connect a drive process: drive_in is the write end of its stdin, drive_out the
        read end of its stdout (the relay owns both from now on). With probe, the relay
        sends it a HELLO and holds the host's bytes until the answer, which it keeps to
        itself; then on_ready(port, generation, answered_hello). on_exit(port, generation)
        follows the end of its output (the process ended). Callbacks run on the relay
        thread, under its lock: they must only hand the news on."""
        os.set_blocking(drive_in, False)
        os.set_blocking(drive_out, False)
        with self.lock:
            self._close_drive(port)
            port._drive_in = drive_in
            port._drive_out = drive_out
            port._generation = generation
            port._on_ready = on_ready
            port._on_exit = on_exit
            port.h2d.reset()
            port._to_drive.clear()
            if probe:
                port._probe = framing.FrameReader(framing.MAX_FRAME)
                port._to_drive += probe_frame()
            else:
                port._probe = None
        self.wake()

    def detach(self, port: RelayPort) -> None:
        """Disconnect the drive process (closing its pipes); no callback."""
        with self.lock:
            self._close_drive(port)
        self.wake()

    def _close_drive(self, port: RelayPort) -> None:
        for fd in (port._drive_in, port._drive_out):
            if fd >= 0:
                # Forget it before closing: its number may come back with the next pipe.
                self._unregister(fd)
                try:
                    os.close(fd)
                except OSError:
                    pass
        port._drive_in = -1
        port._drive_out = -1
        port._probe = None
        port._to_drive.clear()
        port.h2d.reset()
        port._on_ready = None
        port._on_exit = None

    # -- the loop ------------------------------------------------------------------------

    def _unregister(self, fd: int) -> None:
        if self._registered.pop(fd, None) is not None:
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError, OSError):
                pass

    def _run(self) -> None:
        try:
            while True:
                with self.lock:
                    if self._stopping:
                        break
                    timeout = self._plan()
                events = self._selector.select(timeout)
                with self.lock:
                    if self._stopping:
                        break
                    now = self.clock()
                    for key, mask in events:
                        reg: _Registration = key.data
                        port = reg.port
                        if port is None:
                            self._drain_wake()
                        elif reg.role == _MASTER:
                            if mask & selectors.EVENT_READ:
                                self._from_host(port, now)
                            if mask & selectors.EVENT_WRITE:
                                self._flush(port.master, port._to_host)
                        elif reg.role == _DRIVE_OUT:
                            self._from_drive(port, now)
                        elif reg.role == _DRIVE_IN:
                            self._flush_to_drive(port)
                    for port in self._ports:
                        self._pump(port, now)
        except BaseException as exc:  # kept for the owner to report
            self._error = exc

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _plan(self) -> float | None:
        """Bring the selector's interests up to date; how long select may wait."""
        wanted: dict[int, tuple[int, int, RelayPort]] = {}
        due: float | None = None
        for port in self._ports:
            attached = port._drive_out >= 0
            mask = 0
            if not attached or (
                port._probe is None
                and len(port._to_drive) < DEFAULT_LIMIT
                and port.h2d.accepting
                and port._drive_in >= 0
            ):
                mask |= selectors.EVENT_READ
            if port._to_host:
                mask |= selectors.EVENT_WRITE
            if mask:
                wanted[port.master] = (mask, _MASTER, port)
            if attached and (
                port._probe is not None
                or (len(port._to_host) < DEFAULT_LIMIT and port.d2h.accepting)
            ):
                wanted[port._drive_out] = (selectors.EVENT_READ, _DRIVE_OUT, port)
            if port._drive_in >= 0 and port._to_drive:
                wanted[port._drive_in] = (selectors.EVENT_WRITE, _DRIVE_IN, port)
            for channel in (port.h2d, port.d2h):
                at = channel.next_due()
                if at is not None and (due is None or at < due):
                    due = at
        selector = self._selector
        registered = self._registered
        for fd in [fd for fd in registered if fd not in wanted]:
            self._unregister(fd)
        for fd, (mask, role, port) in wanted.items():
            reg = registered.get(fd)
            if reg is None:
                reg = _Registration(mask, role, port)
                registered[fd] = reg
                selector.register(fd, mask, reg)
            elif reg.mask != mask or reg.role != role or reg.port is not port:
                reg = _Registration(mask, role, port)
                registered[fd] = reg
                selector.modify(fd, mask, reg)
        if due is None:
            return None
        wait = due - self.clock()
        if wait <= 0:
            return 0
        return max(wait, TICK)

    def _from_host(self, port: RelayPort, now: float) -> None:
        if port._probe is not None:
            return  # a drive starting up: the host's bytes wait in the pty
        try:
            data = os.read(port.master, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: nobody on the other end (cannot happen while the slave is held)
        if not data:
            return
        if port._drive_in < 0:
            port.lost_while_off += len(data)
            return
        self._forward(port.h2d, data, port._to_drive, port._drive_in, now)

    def _from_drive(self, port: RelayPort, now: float) -> None:
        fd = port._drive_out
        try:
            data = os.read(fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drive_exited(port)
            return
        if port._probe is not None:
            data = self._probed(port, data)
            if not data:
                return
        self._forward(port.d2h, data, port._to_host, port.master, now)

    def _probed(self, port: RelayPort, data: bytes) -> bytes:
        """Look for the answer to the probe; returns what follows it (for the host)."""
        reader = port._probe
        assert reader is not None
        pos = 0
        while pos < len(data):
            pos, frame = reader.push(data, pos)
            if frame is None:
                continue
            hello = False
            if not isinstance(frame, int):
                try:
                    hello = framing.parse_frame(frame)[0] == messages.HELLO_R
                except framing.FrameError:
                    hello = False
            port._probe = None
            callback = port._on_ready
            if callback is not None:
                callback(port, port._generation, hello)
            return data[pos:]
        return b""

    def _drive_exited(self, port: RelayPort) -> None:
        callback = port._on_exit
        generation = port._generation
        self._close_drive(port)
        if callback is not None:
            callback(port, generation)

    def _forward(self, channel: Channel, data: bytes, buf: bytearray, fd: int, now: float) -> None:
        if channel.transparent and not buf:
            channel.stats.fed += len(data)
            channel.stats.delivered += len(data)
            n = self._write(fd, data)
            if n < len(data):
                buf += memoryview(data)[n:]
            return
        channel.feed(data, now)

    def _pump(self, port: RelayPort, now: float) -> None:
        if port.h2d.pending:
            out = port.h2d.take(now)
            if out and port._drive_in >= 0 and port._probe is None:
                port._to_drive += out
        if port.d2h.pending:
            out = port.d2h.take(now)
            if out:
                port._to_host += out
        if port._to_drive and port._drive_in >= 0:
            self._flush_to_drive(port)
        if port._to_host:
            self._flush(port.master, port._to_host)

    def _flush_to_drive(self, port: RelayPort) -> None:
        if port._drive_in < 0:
            port._to_drive.clear()
            return
        self._flush(port._drive_in, port._to_drive)

    def _flush(self, fd: int, buf: bytearray) -> None:
        if not buf:
            return
        n = self._write(fd, buf)
        if n:
            del buf[:n]

    @staticmethod
    def _write(fd: int, data: bytes | bytearray | memoryview) -> int:
        """Write what the fd takes now; a vanished reader counts as taking everything."""
        try:
            return os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EIO):
                return len(data)
            raise
