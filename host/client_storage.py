"""The storage commands of a drive (list, stat, read, get, put, delete, verify, space): a
part of :class:`sealkeep.client.DriveClient`, kept here for size.

Transfers (:meth:`StorageCommands.put`, :meth:`StorageCommands.get`) keep up to ``window``
requests in flight. When the session is lost mid-transfer, the drive stops answering for a
while, or it reports a bad offset, the client authenticates again with the credential it
was given and resumes where the drive stands, a bounded number of times.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import io
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from .client_types import (
    Hello,
    ObjectInfo,
    PendingRequest,
    Progress,
    PutResult,
    Space,
    VerifyResult,
)
from .errors import (
    BadName,
    BadOffset,
    DigestMismatch,
    DriveError,
    LinkError,
    NoPutOpen,
    ObjectExists,
    ProtocolError,
    SealkeepError,
    SessionLost,
)
from .protocol import errors as codes
from .protocol import framing, messages
from .transport import Transport

T = TypeVar("T")
DEFAULT_WINDOW = 4
# Extra seconds to allow per byte when the drive hashes a whole object (commit, verify).
HASH_SECONDS_PER_BYTE = 1 / (256 * 1024)
_HASH_BLOCK = 1 << 20


class _Source:
    """Random access to the bytes of a put: a buffer, or a seekable file from its position."""

    def __init__(self, data: bytes | bytearray | memoryview | IO[bytes]) -> None:
        self._view: memoryview | None = None
        self._file: IO[bytes] | None = None
        self._base = 0
        self._pos = 0
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._view = memoryview(data).cast("B")
            self.size = len(self._view)
            self.digest = hashlib.sha256(self._view).digest()
            return
        seekable = False
        try:
            seekable = data.seekable()
        except (AttributeError, OSError, ValueError):
            seekable = False
        if not seekable:
            self._view = memoryview(data.read())
            self.size = len(self._view)
            self.digest = hashlib.sha256(self._view).digest()
            return
        self._file = data
        self._base = data.tell()
        sha = hashlib.sha256()
        size = 0
        while True:
            block = data.read(_HASH_BLOCK)
            if not block:
                break
            sha.update(block)
            size += len(block)
        self.size = size
        self.digest = sha.digest()
        data.seek(self._base)
        self._pos = 0

    def chunk(self, offset: int, length: int) -> bytes:
        if self._view is not None:
            return bytes(self._view[offset : offset + length])
        assert self._file is not None
        if offset != self._pos:
            self._file.seek(self._base + offset)
        block = self._file.read(length)
        if len(block) != length:
            raise SealkeepError(
                f"the file being stored shrank while it was read (at byte {offset}). "
                "To fix: keep it unchanged during the transfer and try again."
            )
        self._pos = offset + length
        return block


class _GetState:
    """Progress of a get, kept across recoveries."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.offset = 0
        self.sha = hashlib.sha256()


class StorageCommands:
    """The storage commands of :class:`sealkeep.client.DriveClient` (a part of it)."""

    transport: Transport
    timeout: float
    max_recoveries: int
    _max_frame: int

    @property
    def port(self) -> str:
        raise NotImplementedError

    @property
    def serial(self) -> str | None:
        raise NotImplementedError

    def call(
        self, msg_id: int, body: dict[int, Any], expect: int, *, timeout: float | None = None
    ) -> dict[int, Any]:
        raise NotImplementedError

    def _hello_once(self) -> Hello:
        raise NotImplementedError

    def _protocol(self, what: str) -> ProtocolError:
        raise NotImplementedError

    def _prepare(
        self, msg_id: int, body: dict[int, Any], expect: int, timeout: float | None
    ) -> tuple[PendingRequest, bytes]:
        raise NotImplementedError

    def _transmit(self, wire: bytes) -> None:
        raise NotImplementedError

    def _await(self, pending: deque[PendingRequest], wires: dict[int, bytes]) -> dict[int, Any]:
        raise NotImplementedError

    def _can_recover(self, exc: SealkeepError) -> bool:
        raise NotImplementedError

    def _recover(self, exc: SealkeepError) -> None:
        raise NotImplementedError

    def _retrying(self, action: Callable[[], T]) -> T:
        raise NotImplementedError

    def _check_name(self, name: str) -> None:
        if not messages.name_ok(name):
            raise BadName(
                codes.BAD_NAME,
                f"{name!r} is not a valid object name",
                serial=self.serial,
                port=self.port,
            )

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose name starts with prefix, sorted by name (follows pages)."""
        return self._retrying(lambda: list(self._list_pages(prefix)))

    def _list_pages(self, prefix: str) -> Iterator[ObjectInfo]:
        after = ""
        while True:
            body: dict[int, Any] = {2: prefix} if prefix else {}
            if after:
                body[1] = after
            r = self.call(messages.LIST, body, messages.LIST_R)
            entries = r[1]
            for entry in entries:
                if (
                    not isinstance(entry, list)
                    or len(entry) < 2
                    or not isinstance(entry[0], str)
                    or not isinstance(entry[1], int)
                    or entry[0] <= after
                ):
                    raise self._protocol(f"its LIST reply has a malformed entry {entry!r}")
                after = entry[0]
                yield ObjectInfo(entry[0], entry[1])
            if not r[2]:
                return
            if not entries:
                raise self._protocol("its LIST reply says more follow but lists nothing")

    def stat(self, name: str) -> ObjectInfo:
        """Size and SHA-256 of an object (ObjectNotFound when there is none)."""
        self._check_name(name)

        def once() -> ObjectInfo:
            r = self.call(messages.STAT, {1: name}, messages.STAT_R)
            return ObjectInfo(r[1], r[2], bytes(r[3]), r.get(4))

        return self._retrying(once)

    def read(self, name: str, offset: int, length: int) -> bytes:
        """Up to length bytes of an object from offset; shorter only at its end."""
        self._check_name(name)
        room = framing.payload_room(self._hello_once().max_frame)
        out = bytearray()
        while len(out) < length:
            ask = min(room, length - len(out))
            at = offset + len(out)

            def once(at: int = at, ask: int = ask) -> bytes:
                r = self.call(messages.READ, {1: name, 2: at, 3: ask}, messages.DATA)
                return bytes(r[1])

            data = self._retrying(once)
            out += data
            if len(data) < ask:
                break
        return bytes(out)

    def get(
        self, name: str, progress: Progress | None = None, window: int = DEFAULT_WINDOW
    ) -> bytes:
        """The whole object, checked against the SHA-256 the drive recorded for it."""
        buf = io.BytesIO()
        self.get_into(name, buf, progress, window)
        return buf.getvalue()

    def get_into(
        self,
        name: str,
        fileobj: IO[bytes],
        progress: Progress | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> ObjectInfo:
        """Stream an object into fileobj with up to window reads in flight; check its digest.

        Returns what the drive holds (name, size, digest). On DigestMismatch the data
        written to fileobj must not be trusted.
        """
        self._hello_once()
        info = self.stat(name)
        assert info.digest is not None
        state = _GetState(fileobj)
        if progress is not None:
            progress(0, info.size)
        recoveries = 0
        while True:
            try:
                self._get_stream(name, info.size, state, max(1, window), progress)
                break
            except (SessionLost, LinkError) as exc:
                if recoveries >= self.max_recoveries or not self._can_recover(exc):
                    raise
                recoveries += 1
                self._recover(exc)
        if state.offset != info.size or not hmac.compare_digest(state.sha.digest(), info.digest):
            raise DigestMismatch(
                codes.DIGEST_MISMATCH,
                f"{name}: read back {state.offset} bytes that do not hash to the recorded digest",
                serial=self.serial,
                port=self.port,
                summary="the data read back does not match the digest recorded at commit",
                advice=(
                    "The object on this drive is damaged or was replaced while it was read: "
                    "run verify on it, and restore from the other drives of the set."
                ),
            )
        return info

    def _get_stream(
        self, name: str, size: int, state: _GetState, window: int, progress: Progress | None
    ) -> None:
        room = framing.payload_room(self._max_frame)
        pending: deque[PendingRequest] = deque()
        wires: dict[int, bytes] = {}
        asked = state.offset
        while state.offset < size:
            fresh: builtins.list[tuple[PendingRequest, bytes]] = []
            while len(pending) < window and asked < size:
                ask = min(room, size - asked)
                p, wire = self._prepare(
                    messages.READ, {1: name, 2: asked, 3: ask}, messages.DATA, None
                )
                p.end = asked + ask
                pending.append(p)
                wires[p.seq] = wire
                fresh.append((p, wire))
                asked += ask
            if fresh:
                self._flush(fresh)
            head = pending[0]
            data = self._await(pending, wires)[1]
            start = state.offset
            if len(data) != head.end - start:
                raise self._protocol(
                    f"it returned {len(data)} bytes of {name} at offset {start}, expected "
                    f"{head.end - start} (did the object change while it was read?)"
                )
            state.sink.write(data)
            state.sha.update(data)
            state.offset = head.end
            if progress is not None:
                progress(state.offset, size)

    def put(
        self,
        name: str,
        data: bytes | bytearray | memoryview | IO[bytes],
        progress: Progress | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> PutResult:
        """Store an object (bytes, or a binary file from its current position).

        Resumable and pipelined: the drive says where to start (a previous interrupted put
        of the same object continues), then up to window data frames are in flight; the
        commit checks the SHA-256 on the drive, and the result is compared here too.
        """
        self._check_name(name)
        self._hello_once()
        src = _Source(data)
        size, digest = src.size, src.digest
        recoveries = 0
        resumed_from: int | None = None
        while True:
            try:
                r = self.call(messages.PUT_OPEN, {1: name, 2: size, 3: digest}, messages.PUT_READY)
                offset: int = r[1]
                if offset > size:
                    raise self._protocol(f"it offers to resume {name} at {offset} of {size} bytes")
                if resumed_from is None:
                    resumed_from = offset
                if progress is not None:
                    progress(offset, size)
                self._put_stream(src, offset, size, max(1, window), progress)
                wait = self.timeout + size * HASH_SECONDS_PER_BYTE
                done = self.call(messages.PUT_COMMIT, {1: name}, messages.PUT_DONE, timeout=wait)
                break
            except (SessionLost, LinkError, BadOffset, NoPutOpen) as exc:
                if recoveries >= self.max_recoveries or not self._can_recover(exc):
                    raise
                recoveries += 1
                self._recover(exc)
            except ObjectExists:
                # After a recovery the commit may have happened with its answer lost: the
                # object the drive keeps (never replaced) is ours if it is these bytes.
                if not recoveries:
                    raise
                held = self.stat(name)
                if held.size != size or not hmac.compare_digest(held.digest or b"", digest):
                    raise
                done = {1: held.digest, 2: held.size}
                break
        if done[2] != size or not hmac.compare_digest(bytes(done[1]), digest):
            raise DigestMismatch(
                codes.DIGEST_MISMATCH,
                f"{name}: the drive committed {done[2]} bytes with another digest",
                serial=self.serial,
                port=self.port,
                summary="the drive committed data that does not match what was sent",
                advice="Do not rely on this copy: delete it and put it again.",
            )
        return PutResult(name, size, bytes(done[1]), resumed_from or 0, recoveries)

    def _put_stream(
        self, src: _Source, offset: int, size: int, window: int, progress: Progress | None
    ) -> None:
        room = framing.payload_room(self._max_frame)
        pending: deque[PendingRequest] = deque()
        wires: dict[int, bytes] = {}
        sent = offset
        while True:
            fresh: builtins.list[tuple[PendingRequest, bytes]] = []
            while len(pending) < window and sent < size:
                n = min(room, size - sent)
                p, wire = self._prepare(
                    messages.PUT_DATA, {1: sent, 2: src.chunk(sent, n)}, messages.PUT_ACK, None
                )
                p.end = sent + n
                pending.append(p)
                wires[p.seq] = wire
                fresh.append((p, wire))
                sent += n
            if fresh:
                self._flush(fresh)
            if not pending:
                return
            head = pending[0]
            nxt = self._await(pending, wires)[1]
            if nxt != head.end:
                raise self._protocol(f"it acknowledged data up to {nxt}, expected {head.end}")
            if progress is not None:
                progress(nxt, size)

    def _flush(self, frames: builtins.list[tuple[PendingRequest, bytes]]) -> None:
        """Send prepared frames, as few writes as the link's MTU allows; start their clocks."""
        mtu = max(1, self.transport.mtu)
        group: list[bytes] = []
        grouped = 0
        for _, wire in frames:
            if group and grouped + len(wire) > mtu:
                self._transmit(b"".join(group))
                group, grouped = [], 0
            group.append(wire)
            grouped += len(wire)
        if group:
            self._transmit(group[0] if len(group) == 1 else b"".join(group))
        now = time.monotonic()
        for p, _ in frames:
            p.deadline = now + p.timeout

    def delete(self, name: str) -> None:
        """Remove an object (ObjectNotFound when there is none)."""
        self._check_name(name)
        self.call(messages.DELETE, {1: name}, messages.OK)

    def verify(self, name: str) -> VerifyResult:
        """Have the drive rehash an object; ``intact`` says whether it matches its digest."""
        self._check_name(name)
        size = 0
        try:
            size = self.stat(name).size
        except DriveError:
            pass  # VERIFY reports the problem itself

        def once() -> VerifyResult:
            wait = self.timeout + size * HASH_SECONDS_PER_BYTE
            r = self.call(messages.VERIFY, {1: name}, messages.VERIFY_R, timeout=wait)
            return VerifyResult(bytes(r[1]), r[2], r[3])

        return self._retrying(once)

    def space(self) -> Space:
        """Capacity and free bytes."""

        def once() -> Space:
            r = self.call(messages.SPACE, {}, messages.SPACE_R)
            return Space(r[1], r[2], r.get(3, 0), r.get(4, 0))

        return self._retrying(once)
