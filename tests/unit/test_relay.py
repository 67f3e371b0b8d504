"""The link model (pacing, faults) on a fake clock, and the relay thread over pipes."""

from __future__ import annotations

import os
import random
import threading
import time
import tty
from collections.abc import Iterator

import pytest
from sealkeep.protocol import framing, messages
from sealkeep.relay import (
    RAW,
    USB_FS,
    Channel,
    Fault,
    LinkSpec,
    Relay,
    RelayPort,
    parse_link,
    probe_frame,
)

DATA = bytes(range(256)) * 64  # 16 KiB


def drain(channel: Channel, until: float, step: float = 0.0001) -> list[tuple[float, bytes]]:
    """(time, bytes) of every delivery when polling the channel every step seconds."""
    out = []
    t = 0.0
    while t <= until + 1e-12:
        got = channel.take(t)
        if got:
            out.append((t, got))
        t += step
    return out


# -- link specifications ------------------------------------------------------------------


def test_parse_link() -> None:
    assert parse_link("raw") is RAW
    assert parse_link(" USB-FS ") is USB_FS
    uart = parse_link("uart:115200")
    assert uart.rate == pytest.approx(11520.0)
    assert uart.name == "uart:115200"
    assert parse_link(uart) is uart
    for bad in ("serial", "uart:", "uart:fast", "uart:0", "usb-hs"):
        with pytest.raises(ValueError, match=r"raw|baud"):
            parse_link(bad)


# -- pacing ---------------------------------------------------------------------------------


def test_raw_channel_is_transparent_and_immediate() -> None:
    channel = Channel(RAW)
    assert channel.transparent
    channel.feed(b"hello", 10.0)
    assert channel.take(10.0) == b"hello"
    assert channel.pending == 0
    assert channel.next_due() is None


def test_usb_fs_packets_rate_and_latency() -> None:
    channel = Channel(USB_FS)
    assert not channel.transparent
    channel.feed(DATA[:4096], 0.0)
    packet_time = 64 / 1_200_000
    # Nothing before the first packet is sent and has crossed the 1 ms latency.
    assert channel.take(0.001) == b""
    assert channel.next_due() == pytest.approx(packet_time + 0.001)
    assert channel.take(packet_time + 0.001) == DATA[:64]
    # Two and a half packets later: two more whole packets, never a partial one.
    assert channel.take(3.5 * packet_time + 0.001) == DATA[64:192]
    last = 4096 / 1_200_000 + 0.001
    assert channel.take(last - 1e-5) == DATA[192:4032]
    assert channel.take(last) == DATA[4032:4096]
    assert channel.pending == 0
    assert channel.stats.delivered == 4096


def test_usb_fs_throughput_and_back_to_back_chunks() -> None:
    channel = Channel(USB_FS, limit=1 << 30)
    total = 1_200_000
    for i in range(0, total, 4096):  # all fed at t=0: serialised one after the other
        channel.feed(b"x" * min(4096, total - i), 0.0)
    assert channel.take(0.5 + 0.001) == b"x" * 600_000
    assert len(channel.take(0.99)) < 600_000
    channel.take(1.0 + 0.001)
    assert channel.stats.delivered == total
    assert channel.pending == 0


def test_idle_link_starts_sending_when_fed() -> None:
    channel = Channel(USB_FS)
    channel.feed(b"a" * 64, 0.0)
    channel.take(1.0)
    channel.feed(b"b" * 64, 5.0)  # long after: no backlog from the first chunk
    assert channel.next_due() == pytest.approx(5.0 + 64 / 1_200_000 + 0.001)
    assert channel.take(5.0 + 64 / 1_200_000 + 0.001) == b"b" * 64


def test_uart_rate() -> None:
    channel = Channel(parse_link("uart:115200"))
    channel.feed(b"u" * 1152, 0.0)
    assert len(channel.take(0.05)) == 576
    assert channel.take(0.0999) == b"u" * 574  # 1150.8 bytes sent by then
    assert channel.take(0.1) == b"uu"


def test_backpressure_limit() -> None:
    channel = Channel(USB_FS, limit=8192)
    channel.feed(DATA[:8192], 0.0)
    assert not channel.accepting
    channel.take(0.002)
    assert channel.accepting


def test_delay_keeps_order() -> None:
    channel = Channel(RAW)
    channel.set_delay(0.5)
    channel.feed(b"first", 0.0)
    channel.set_delay(0.0)
    channel.feed(b"second", 0.1)  # due at once, but behind the delayed chunk
    assert channel.take(0.2) == b""
    assert channel.next_due() == pytest.approx(0.5)
    assert channel.take(0.5) == b"firstsecond"
    with pytest.raises(ValueError):
        channel.set_delay(-1)


def test_unplug_for_a_while_and_until_replugged() -> None:
    channel = Channel(USB_FS)
    channel.feed(b"in flight", 0.0)
    channel.unplug(0.0, 1.0)
    assert channel.pending == 0
    channel.feed(b"lost", 0.5)
    assert channel.unplugged(0.5)
    assert channel.take(2.0) == b""
    channel.feed(b"back", 1.5)
    assert channel.take(1.6) == b"back"
    assert channel.stats.lost == len(b"in flight") + len(b"lost")

    channel.unplug(2.0)  # until replug
    channel.feed(b"gone", 100.0)
    channel.replug()
    channel.feed(b"here", 101.0)
    assert channel.take(102.0) == b"here"


# -- faults ---------------------------------------------------------------------------------


def feed_in_pieces(channel: Channel, data: bytes, piece: int) -> bytes:
    for i in range(0, len(data), piece):
        channel.feed(data[i : i + piece], 0.0)
    return channel.take(0.0)


def test_fault_at_offset_counts_from_arming() -> None:
    channel = Channel(RAW, seed=1)
    channel.feed(b"0123456789", 0.0)
    channel.take(0.0)
    channel.add_fault(Fault("drop", at=3, length=2))
    assert not channel.transparent
    assert feed_in_pieces(channel, b"abcdefgh", 3) == b"abcfgh"
    assert channel.stats.dropped == 2
    assert not channel.faults  # spent
    assert feed_in_pieces(channel, b"abcdefgh", 3) == b"abcdefgh"


def test_corrupt_and_duplicate_at_offset() -> None:
    channel = Channel(RAW, seed=7)
    channel.add_fault(Fault("corrupt", at=1))
    channel.add_fault(Fault("duplicate", at=4))
    out = feed_in_pieces(channel, b"abcdef", 2)
    assert len(out) == 7
    assert out[0:1] == b"a" and out[1:2] != b"b" and out[2:4] == b"cd"
    assert out[4:7] == b"eef"
    assert channel.stats.corrupted == 1 and channel.stats.duplicated == 1


def test_drop_wins_over_other_faults_on_the_same_byte() -> None:
    channel = Channel(RAW, seed=3)
    channel.add_fault(Fault("corrupt", at=2))
    channel.add_fault(Fault("drop", at=2))
    assert feed_in_pieces(channel, b"abcd", 4) == b"abd"


def damaged(seed: int, kind: str = "corrupt", p: float = 0.01) -> tuple[bytes, int]:
    channel = Channel(RAW, seed=seed)
    channel.add_fault(Fault(kind, probability=p))  # type: ignore[arg-type]
    out = feed_in_pieces(channel, DATA * 4, 1000)
    stats = channel.stats
    return out, stats.corrupted + stats.dropped + stats.duplicated


def test_random_faults_repeat_with_the_seed() -> None:
    a, hits_a = damaged(42)
    b, hits_b = damaged(42)
    c, _ = damaged(43)
    assert a == b and hits_a == hits_b
    assert a != c
    # About 1% of 64 KiB are hit.
    assert 400 < hits_a < 900
    differing = sum(1 for x, y in zip(a, DATA * 4, strict=True) if x != y)
    assert differing == hits_a


def test_random_drop_and_duplicate_change_the_length() -> None:
    out, hits = damaged(5, "drop", 0.05)
    assert len(out) == len(DATA) * 4 - hits
    out, hits = damaged(5, "duplicate", 0.05)
    assert len(out) == len(DATA) * 4 + hits


def test_fault_count_and_clear() -> None:
    channel = Channel(RAW, seed=0)
    channel.add_fault(Fault("drop", probability=1.0, count=3))
    assert feed_in_pieces(channel, b"abcdef", 2) == b"def"
    channel.add_fault(Fault("drop", probability=0.5))
    channel.clear_faults()
    assert channel.transparent
    assert feed_in_pieces(channel, b"abcdef", 2) == b"abcdef"


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("melt", probability=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault("drop")
    with pytest.raises(ValueError):
        Fault("drop", probability=1.5)
    with pytest.raises(ValueError):
        Fault("drop", at=-1)
    with pytest.raises(ValueError):
        Fault("drop", probability=0.5, count=0)


def test_faults_with_pacing() -> None:
    channel = Channel(USB_FS, seed=9)
    channel.add_fault(Fault("drop", at=0, length=64))
    channel.feed(DATA[:128], 0.0)
    deliveries = drain(channel, 0.002)
    assert b"".join(d for _, d in deliveries) == DATA[64:128]
    # Dropped bytes take no time on the link.
    assert deliveries[0][0] == pytest.approx(64 / 1_200_000 + 0.001, abs=2e-4)


def test_random_sequence_is_independent_of_chunking() -> None:
    def run(piece: int) -> bytes:
        channel = Channel(RAW, rng=random.Random(11))
        channel.add_fault(Fault("corrupt", probability=0.02))
        return feed_in_pieces(channel, DATA, piece)

    assert run(1) == run(4096) == run(333)


# -- the relay thread over a pty and pipes ----------------------------------------------


class FakeDrive:
    """A drive stand-in on two pipes: answers the probe with a HELLO_R, echoes the rest."""

    def __init__(self, relay: Relay, port: RelayPort, answer: bool = True) -> None:
        self.stdin_r, stdin_w = os.pipe()
        stdout_r, self.stdout_w = os.pipe()
        self.answer = answer
        self.ready = threading.Event()
        self.exited = threading.Event()
        self.hello: bool | None = None
        relay.attach(
            port,
            stdin_w,
            stdout_r,
            generation=1,
            on_ready=self._ready,
            on_exit=lambda p, g: self.exited.set(),
        )
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _ready(self, port: RelayPort, generation: int, hello: bool) -> None:
        self.hello = hello
        self.ready.set()

    def _serve(self) -> None:
        reader = framing.FrameReader()
        probed = False
        while True:
            try:
                data = os.read(self.stdin_r, 65536)
            except OSError:
                break
            if not data:
                break
            if not probed:
                pos, frame = reader.push(data)
                assert frame is not None and not isinstance(frame, int)
                probed = True
                reply = framing.build_frame(messages.HELLO_R, 0xFFFF, b"\xa0")
                os.write(self.stdout_w, reply if self.answer else b"\x01\x00")
                data = data[pos:]
            if data:
                os.write(self.stdout_w, data)

    def power_off(self) -> None:
        os.close(self.stdout_w)
        os.close(self.stdin_r)


@pytest.fixture
def pty_relay() -> Iterator[tuple[Relay, RelayPort, int]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    relay = Relay()
    relay.start()
    port = relay.add_port(master, RAW, seed=1)
    try:
        yield relay, port, slave
    finally:
        relay.stop()
        os.close(slave)
        os.close(master)


def read_exactly(fd: int, n: int, timeout: float = 5.0) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            out += os.read(fd, n - len(out))
        except BlockingIOError:
            time.sleep(0.001)
    return out


def test_relay_probes_then_relays(pty_relay: tuple[Relay, RelayPort, int]) -> None:
    relay, port, host = pty_relay
    drive = FakeDrive(relay, port)
    assert drive.ready.wait(5)
    assert drive.hello is True
    os.write(host, b"ping")
    # The probe's answer is kept from the host: only the echo arrives.
    assert read_exactly(host, 4) == b"ping"
    assert port.stats()["h2d"].fed == 4
    drive.power_off()
    assert drive.exited.wait(5)
    assert not port.attached


def test_relay_reports_a_garbled_probe_answer(pty_relay: tuple[Relay, RelayPort, int]) -> None:
    relay, port, _ = pty_relay
    drive = FakeDrive(relay, port, answer=False)
    assert drive.ready.wait(5)
    assert drive.hello is False


def test_relay_drops_host_bytes_while_no_drive(pty_relay: tuple[Relay, RelayPort, int]) -> None:
    relay, port, host = pty_relay
    os.write(host, b"nobody home")
    deadline = time.monotonic() + 5
    while port.lost_while_off < 11 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert port.lost_while_off == 11
    drive = FakeDrive(relay, port)  # the same pty, a new drive
    assert drive.ready.wait(5)
    os.write(host, b"again")
    assert read_exactly(host, 5) == b"again"


def test_relay_faults_and_unplug(pty_relay: tuple[Relay, RelayPort, int]) -> None:
    relay, port, host = pty_relay
    drive = FakeDrive(relay, port)
    assert drive.ready.wait(5)
    port.corrupt("d2h", at=2)
    os.write(host, b"abcdef")
    got = read_exactly(host, 6)
    assert got[:2] == b"ab" and got[2] != ord("c") and got[3:] == b"def"
    port.unplug(direction="both")
    os.write(host, b"lost")
    assert read_exactly(host, 4, timeout=0.3) == b""
    port.replug()
    os.write(host, b"back")
    assert read_exactly(host, 4) == b"back"
    port.set_delay(0.2)
    start = time.monotonic()
    os.write(host, b"slow")
    assert read_exactly(host, 4) == b"slow"
    assert time.monotonic() - start >= 0.35  # delayed each way
    port.clear_faults()
    stats = port.stats()
    assert stats["d2h"].corrupted == 1
    assert stats["h2d"].lost == 4


def test_probe_frame_is_a_hello() -> None:
    reader = framing.FrameReader()
    _, frame = reader.push(probe_frame())
    assert frame is not None and not isinstance(frame, int)
    assert framing.parse_frame(frame)[0] == messages.HELLO


def test_custom_link_spec() -> None:
    slow = LinkSpec("slow", rate=1000.0, packet=10, latency=0.01)
    channel = Channel(slow)
    channel.feed(b"z" * 100, 0.0)
    assert channel.take(0.0199) == b""
    assert channel.take(0.02) == b"z" * 10
    assert channel.take(0.1099) == b"z" * 80
    assert channel.take(0.11) == b"z" * 10
    assert channel.stats.delivered == 100
