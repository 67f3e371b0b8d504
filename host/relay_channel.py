"""One direction of a link between the host and an emulated drive, without any I/O: pacing
and fault injection (see :mod:`sealkeep.relay`, which moves the bytes).

Bytes go in with :meth:`Channel.feed` at some time and come out with :meth:`Channel.take`
when the link has delivered them. A channel paces them to a :class:`LinkSpec` (``raw``: no
pacing, ``usb-fs``, ``uart:BAUD``) and injects faults: drop, corrupt or duplicate bytes with
a probability or at a byte offset, extra delay, and "cable pulled" (every byte lost for a
while or until put back). Random choices come from a seeded :class:`random.Random`, so a
seed replays the same faults. Tests drive it with any clock.

Pacing model: a link sends a fed chunk as packets of ``packet`` bytes, back to back at
``rate`` bytes/s (a token bucket one packet deep), each delivered ``latency`` seconds after
its last byte was sent. A raw link with no faults is a straight copy, without per-byte work.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "RAW",
    "USB_FS",
    "Channel",
    "ChannelStats",
    "Direction",
    "Fault",
    "FaultKind",
    "LinkSpec",
    "parse_link",
]

FaultKind = Literal["drop", "corrupt", "duplicate"]
Direction = Literal["h2d", "d2h", "both"]
FAULT_KINDS: tuple[FaultKind, ...] = ("drop", "corrupt", "duplicate")

# Bytes a paced or faulty channel may hold before the relay stops reading its source; the
# pty and the pipes behind it hold more, so a sender is slowed down, never refused.
DEFAULT_LIMIT = 1 << 16
_EPSILON = 1e-6


# -- link specifications ------------------------------------------------------------------


@dataclass(frozen=True)
class LinkSpec:
    """How a link moves bytes: ``rate`` in bytes/s (None: unlimited), ``packet`` bytes per
    packet, ``latency`` seconds from a packet's last byte sent to its delivery."""

    name: str
    rate: float | None = None
    packet: int = 1
    latency: float = 0.0

    @property
    def paced(self) -> bool:
        return self.rate is not None or self.latency > 0


RAW = LinkSpec("raw")
# USB full speed CDC: 19 bulk packets of 64 bytes per 1 ms frame, about 1.2 MB/s, and
# at least 1 ms each way.
USB_FS = LinkSpec("usb-fs", rate=1_200_000.0, packet=64, latency=0.001)


def parse_link(text: str | LinkSpec) -> LinkSpec:
    """``raw``, ``usb-fs`` or ``uart:BAUD`` (8N1: BAUD/10 bytes/s); ValueError otherwise."""
    if isinstance(text, LinkSpec):
        return text
    name = text.strip().lower()
    if name == "raw":
        return RAW
    if name in ("usb-fs", "usb"):
        return USB_FS
    if name.startswith("uart:"):
        value = name[5:]
        try:
            baud = int(value)
        except ValueError:
            baud = 0
        if baud < 50 or baud > 100_000_000:
            raise ValueError(f"bad baud rate {value!r} in link {text!r}: give e.g. uart:115200")
        return LinkSpec(f"uart:{baud}", rate=baud / 10, packet=1, latency=0.0)
    raise ValueError(f"unknown link {text!r}: use raw, usb-fs or uart:BAUD (e.g. uart:115200)")


# -- faults -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """Damage to inject into one direction of a link.

    Either ``at``: the ``length`` bytes starting ``at`` bytes after the fault is added are
    hit once; or ``probability``: each byte is hit independently with that probability,
    until ``count`` bytes were hit (None: for as long as the fault stays).
    ``drop`` removes the byte, ``corrupt`` flips some of its bits, ``duplicate`` sends it
    twice.
    """

    kind: FaultKind
    probability: float = 0.0
    at: int | None = None
    length: int = 1
    count: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}: use one of {', '.join(FAULT_KINDS)}")
        if self.at is None:
            if not 0.0 < self.probability <= 1.0:
                raise ValueError("a fault needs at=OFFSET or a probability in (0, 1]")
        elif self.at < 0 or self.length < 1:
            raise ValueError("a fault's offset must be >= 0 and its length >= 1")
        if self.count is not None and self.count < 1:
            raise ValueError("a fault's count must be >= 1")


class _Armed:
    """A fault in force: the absolute stream offset of the next byte it hits.

    Each has its own random sequence (seeded from the channel's when armed), drawn in
    stream order, so how the bytes happen to be chunked changes nothing.
    """

    __slots__ = ("fault", "next_at", "remaining", "rng")

    def __init__(self, fault: Fault, base: int, rng: random.Random) -> None:
        self.fault = fault
        self.rng = random.Random(rng.getrandbits(64))
        if fault.at is not None:
            self.next_at = base + fault.at
            self.remaining = fault.length
        else:
            self.next_at = base + _gap(fault.probability, self.rng)
            self.remaining = fault.count if fault.count is not None else -1

    def hit(self) -> int:
        """Record a hit on next_at and move on; returns the XOR mask (corrupt) or 0."""
        mask = self.rng.randrange(1, 256) if self.fault.kind == "corrupt" else 0
        if self.remaining > 0:
            self.remaining -= 1
        if self.fault.at is not None:
            self.next_at += 1
        else:
            self.next_at += 1 + _gap(self.fault.probability, self.rng)
        return mask


def _gap(p: float, rng: random.Random) -> int:
    """Bytes passed over before the next hit when each is hit with probability p."""
    if p >= 1.0:
        return 0
    return int(math.log1p(-rng.random()) / math.log1p(-p))


@dataclass
class ChannelStats:
    """Bytes counted by a channel: ``fed`` in, ``delivered`` out, and the damage done."""

    fed: int = 0
    delivered: int = 0
    dropped: int = 0
    corrupted: int = 0
    duplicated: int = 0
    lost: int = 0  # while the cable was pulled


# -- one direction ------------------------------------------------------------------------


class _Chunk:
    __slots__ = ("data", "latency", "sent", "start")

    def __init__(self, start: float, data: bytes, latency: float) -> None:
        self.start = start
        self.data = data
        self.latency = latency
        self.sent = 0


class Channel:
    """One direction of a link: pacing and faults, no I/O; time is whatever ``now`` says.

    ``limit`` is how many bytes it holds before :attr:`accepting` turns false.
    """

    def __init__(
        self,
        link: LinkSpec = RAW,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self.link = link
        self.rng = rng if rng is not None else random.Random(seed)
        self.limit = limit
        self.stats = ChannelStats()
        self._chunks: deque[_Chunk] = deque()
        self._pending = 0
        self._busy_until = -math.inf
        self._faults: list[_Armed] = []
        self._delay = 0.0
        self._unplugged_until: float | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def transparent(self) -> bool:
        """True when bytes would pass unchanged and at once: the relay copies them directly."""
        return (
            not self._chunks
            and not self._faults
            and self._unplugged_until is None
            and self._delay == 0.0
            and not self.link.paced
        )

    @property
    def pending(self) -> int:
        """Bytes fed and not yet delivered."""
        return self._pending

    @property
    def accepting(self) -> bool:
        return self._pending < self.limit

    @property
    def offset(self) -> int:
        """Bytes fed so far: where a fault added now counts its ``at`` from."""
        return self.stats.fed

    @property
    def faults(self) -> list[Fault]:
        return [armed.fault for armed in self._faults]

    @property
    def delay(self) -> float:
        return self._delay

    def unplugged(self, now: float) -> bool:
        until = self._unplugged_until
        return until is not None and now < until

    # -- control -------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Arm fault, counting its offset from the bytes fed so far."""
        self._faults.append(_Armed(fault, self.stats.fed, self.rng))

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_delay(self, seconds: float) -> None:
        """Extra latency for every byte fed from now on (0 to end it)."""
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        self._delay = float(seconds)

    def unplug(self, now: float, duration: float | None = None) -> None:
        """Pull the cable: bytes in flight are lost, and so is every byte fed until
        ``duration`` seconds have passed or :meth:`replug` (duration None)."""
        self._unplugged_until = math.inf if duration is None else now + duration
        self.stats.lost += self._pending
        self._chunks.clear()
        self._pending = 0
        self._busy_until = -math.inf

    def replug(self) -> None:
        self._unplugged_until = None

    def reset(self) -> None:
        """Forget bytes in flight (the receiver went away); faults and settings stay."""
        self._chunks.clear()
        self._pending = 0
        self._busy_until = -math.inf

    # -- data ----------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> None:
        """Bytes the sender put on the link at time now."""
        n = len(data)
        if not n:
            return
        until = self._unplugged_until
        if until is not None:
            if now < until:
                self.stats.fed += n
                self.stats.lost += n
                return
            self._unplugged_until = None
        if self._faults:
            data = self._damage(data)
        else:
            self.stats.fed += n
        n = len(data)
        if not n:
            return
        rate = self.link.rate
        start = now
        if rate is not None:
            start = max(now, self._busy_until)
            self._busy_until = start + n / rate
        self._chunks.append(_Chunk(start, data, self.link.latency + self._delay))
        self._pending += n

    def _ready(self, chunk: _Chunk, now: float) -> int:
        """How many of chunk's bytes have been delivered by now."""
        elapsed = now - chunk.start - chunk.latency
        if elapsed < 0:
            return 0
        size = len(chunk.data)
        rate = self.link.rate
        if rate is None:
            return size
        sent = elapsed * rate + _EPSILON
        if sent >= size:
            return size
        packet = self.link.packet
        return min(size, int(sent // packet) * packet)

    def take(self, now: float) -> bytes:
        """The bytes delivered by time now (in order; b"" if none)."""
        parts: list[bytes] = []
        chunks = self._chunks
        while chunks:
            chunk = chunks[0]
            ready = self._ready(chunk, now)
            if ready > chunk.sent:
                parts.append(chunk.data[chunk.sent : ready])
                self._pending -= ready - chunk.sent
                chunk.sent = ready
            if chunk.sent < len(chunk.data):
                break
            chunks.popleft()
        if not parts:
            return b""
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self.stats.delivered += len(out)
        return out

    def next_due(self) -> float | None:
        """When the next bytes will be delivered (None: nothing in flight)."""
        if not self._chunks:
            return None
        chunk = self._chunks[0]
        rate = self.link.rate
        if rate is None:
            return chunk.start + chunk.latency
        packet = self.link.packet
        upto = min(len(chunk.data), (chunk.sent // packet + 1) * packet)
        return chunk.start + upto / rate + chunk.latency

    def _damage(self, data: bytes) -> bytes:
        """Apply the armed faults to data, the bytes at stream offsets fed..fed+len."""
        start = self.stats.fed
        end = start + len(data)
        self.stats.fed = end
        hits: dict[int, dict[str, int]] = {}
        for armed in self._faults:
            while armed.remaining != 0 and armed.next_at < end:
                at = armed.next_at
                mask = armed.hit()
                kinds = hits.setdefault(at, {})
                kinds[armed.fault.kind] = kinds.get(armed.fault.kind, 0) ^ mask
        self._faults = [armed for armed in self._faults if armed.remaining != 0]
        if not hits:
            return data
        out = bytearray()
        last = 0
        for pos in sorted(hits):
            i = pos - start
            out += data[last:i]
            last = i + 1
            kinds = hits[pos]
            if "drop" in kinds:
                self.stats.dropped += 1
                continue
            byte = data[i]
            if "corrupt" in kinds:
                byte ^= kinds["corrupt"] or 0xFF  # two that cancel out still corrupt
                self.stats.corrupted += 1
            out.append(byte)
            if "duplicate" in kinds:
                out.append(byte)
                self.stats.duplicated += 1
        out += data[last:]
        return bytes(out)
