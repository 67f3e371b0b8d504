"""A technician's first install: a signed image onto a board that runs stock MicroPython.

The board has MicroPython and nothing of sealkeep. Through its raw REPL (``mpremote``'s
transport, entered without a soft reset, which would end the unix port), the image's
files go into slot ``a`` of the board's filesystem exactly as a drive lays them out
(:func:`sealkeep.firmware.slot_files`), each then hashed by the board and checked against
the manifest; then the serial, when one is provisioned; last the boot record and the
board's ``main.py``, each by one rename. Until the last rename the board still boots into
its REPL, and the install can simply run again.
Then the board restarts (``machine.reset()``; the unix port exits with status 75, which
the emulator takes for a reboot) into the firmware, and the install waits until the drive
answers HELLO with the image's version.

A board that already holds sealkeep firmware (a boot record and ``main.py``) or stored
objects is left as it is: a drive is updated with ``sealkeep firmware update``, which
keeps its data.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from .client import DriveClient
from .drivespec import UsageError
from .errors import (
    EXIT_INTEGRITY,
    EXIT_STORAGE,
    EXIT_UNREACHABLE,
    LinkError,
    SealkeepError,
    where,
)
from .firmware import (
    RECORD_FILE,
    SLOT_DIR,
    FirmwareImage,
    boot_record,
    require_signature,
    slot_files,
)
from .firmware_update import PROBE_TIMEOUT, REBOOT_WAIT, firmware_status, reconnect_after_reboot
from .protocol import serials
from .transport import open_transport

__all__ = [
    "BoardError",
    "InstallResult",
    "install_image",
]

SLOT = "a"
BAUD = 115200
# mpremote writes a file as a series of REPL statements: bigger ones are fewer round trips,
# and a 64 KiB heap compiles them easily.
CHUNK = 2048
REPL_TIMEOUT = 10.0
RAW_WAIT = 3.0
# On the board, under names no user code has: what it has, and whether it is blank.
SURVEY = """
import os, sys
def _sk_is(p):
    try:
        os.stat(p)
        return 1
    except OSError:
        return 0
try:
    import hashlib
    _sk_h = int(hasattr(hashlib, "sha256"))
except ImportError:
    _sk_h = 0
try:
    _sk_s = os.statvfs(".")
    _sk_free = _sk_s[0] * _sk_s[4]
except Exception:
    _sk_free = -1
_sk_obj = 0
if _sk_is("obj"):
    _sk_obj = len(os.listdir("obj"))
print(repr((sys.platform, _sk_is("slot/record") and _sk_is("main.py"), _sk_obj, _sk_h, _sk_free)))
"""
# What an earlier install cut short left goes: slot/ (even a boot record: without main.py
# nothing runs it) and main.py.new.
CLEAR = """
import os
def _sk_rm(p):
    try:
        for e in os.ilistdir(p):
            _sk_rm(p + "/" + e[0]) if e[1] == 0x4000 else os.remove(p + "/" + e[0])
        os.rmdir(p)
    except OSError:
        try:
            os.remove(p)
        except OSError:
            pass
_sk_rm("slot")
_sk_rm("main.py.new")
"""
MKDIRS = """
import os
for p in %r:
    try:
        os.mkdir(p)
    except OSError:
        pass
"""
DIGESTS = """
import hashlib
_sk_b = bytearray(512)
def _sk_sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            n = f.readinto(_sk_b)
            if not n:
                break
            h.update(memoryview(_sk_b)[:n])
    return h.digest()
print(repr([_sk_sha(p) for p in %r]))
"""
COMMIT = """
import os
with open(%(new)r, "wb") as f:
    f.write(%(record)r)
os.rename(%(new)r, %(path)r)
try:
    os.remove("main.py")
except OSError:
    pass
os.rename("main.py.new", "main.py")
"""
# No reply can come: the board is gone once it runs.
REBOOT = """
import sys
if sys.platform in ("linux", "darwin"):
    sys.exit(75)
import machine
machine.reset()
"""


class BoardError(SealkeepError):
    """The board cannot take the install: no REPL, already a drive, no room, or its copy
    of a file does not match. Nothing that ran on it before is changed."""

    def __init__(self, message: str, exit_code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self._exit_code = exit_code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self._exit_code


@dataclass(frozen=True)
class InstallResult:
    """A board that now runs the image: the drive's serial, its firmware, and what it took."""

    serial: str
    port: str
    platform: str
    version: str
    counter: int
    slot: str
    files: int
    bytes: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "port": self.port,
            "platform": self.platform,
            "firmware": self.version,
            "counter": self.counter,
            "firmware_slot": self.slot,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def _device(port: str) -> str:
    """mpremote takes a path or a pyserial URL; ``serial://`` is this project's own spelling
    of a path."""
    return port.removeprefix("serial://")


class _Repl(SerialTransport):  # type: ignore[misc]
    """mpremote's transport, waiting at most ``follow_timeout`` for what it expects (it
    waits 10 s: a board that restarted mid-install would hold the error back that long)."""

    follow_timeout = REPL_TIMEOUT

    def read_until(
        self,
        min_num_bytes: int,
        ending: bytes,
        timeout: float = REPL_TIMEOUT,
        data_consumer: Any = None,
        timeout_overall: float | None = None,
    ) -> bytes:
        data: bytes = super().read_until(
            min_num_bytes, ending, min(timeout, self.follow_timeout), data_consumer, timeout_overall
        )
        return data


@contextlib.contextmanager
def _repl(port: str, timeout: float) -> Iterator[SerialTransport]:
    """The board's raw REPL, without a soft reset. mpremote prints what a failing board
    said to stdout: that goes into the error message instead."""
    said = io.StringIO()
    transport: SerialTransport | None = None
    try:
        with contextlib.redirect_stdout(said):
            # A REPL answers at once: a port that does not within seconds is something else.
            wait = min(timeout, RAW_WAIT)
            transport = _Repl(_device(port), BAUD, timeout=wait)
            transport.follow_timeout = timeout
            transport.enter_raw_repl(soft_reset=False, timeout_overall=wait)
    except (TransportError, OSError) as exc:
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
        _refuse_if_drive(port)
        heard = said.getvalue().strip().removeprefix("b''")
        raise BoardError(
            f"{port} does not answer as a MicroPython REPL ({exc}"
            + (f"; it said {heard[:120]}" if heard else "")
            + "). To fix: check the port and that the board runs stock MicroPython with "
            "nothing on it; a drive that already runs sealkeep firmware is updated with "
            "`sealkeep firmware update`."
        ) from None
    try:
        yield transport
    finally:
        with contextlib.suppress(Exception):
            transport.close()


def _refuse_if_drive(port: str) -> None:
    """A port that answers HELLO runs sealkeep firmware already: say so."""
    try:
        client = DriveClient(open_transport(port), timeout=PROBE_TIMEOUT)
    except SealkeepError:
        return
    try:
        hello = client.hello()
        try:
            development = firmware_status(client).vendor_key is None
        except SealkeepError:
            development = False
    except SealkeepError:
        return
    finally:
        client.close()
    if development:
        raise BoardError(
            f"{where(hello.serial, port)} runs sealkeep firmware {hello.firmware}, a "
            "development build of the source tree that trusts no vendor key: it takes no "
            "install (it runs firmware) and no update (nothing signed can be checked). Use "
            "boards given a signed image by `firmware install` while blank, or drives "
            "started on one (`sealkeep emulate --firmware IMAGE`).",
            EXIT_STORAGE,
        )
    raise BoardError(
        f"{where(hello.serial, port)} already runs sealkeep firmware {hello.firmware}: an "
        "install would replace it. To fix: update it with `sealkeep firmware update`, "
        "which keeps its data.",
        EXIT_STORAGE,
    )


def _run(transport: SerialTransport, port: str, code: str, what: str) -> bytes:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            out: bytes = transport.exec(code)
    except TransportError as exc:
        detail = getattr(exc, "error_output", "") or str(exc)
        lines = [line for line in str(detail).splitlines() if line.strip()]
        raise BoardError(
            f"{port}: the board failed while {what} ({lines[-1] if lines else exc}). The "
            "board is still blank: run the install again."
        ) from None
    return out


@dataclass(frozen=True)
class _Board:
    """What the survey found: its platform, whether it holds a boot record, how many
    stored objects, whether it has hashlib.sha256, and its free bytes (-1: unknown)."""

    platform: str
    record: bool
    objects: int
    sha256: bool
    free: int


def _survey(transport: SerialTransport, port: str) -> _Board:
    out = _run(transport, port, SURVEY, "being surveyed")
    try:
        platform, record, objects, sha256, free = ast.literal_eval(
            out.decode("utf-8", "replace").strip()
        )
        return _Board(str(platform), bool(record), int(objects), bool(sha256), int(free))
    except (ValueError, SyntaxError, TypeError):
        raise BoardError(f"{port}: its REPL answered the survey with {out[:80]!r}") from None


def _check_board(port: str, board: _Board, need: int) -> None:
    record, objects, free, platform = board.record, board.objects, board.free, board.platform
    if record:
        raise BoardError(
            f"{port}: the board already holds sealkeep firmware (a boot record). To update "
            "a drive, keeping its data: `sealkeep firmware update`.",
            EXIT_STORAGE,
        )
    if objects:
        raise BoardError(
            f"{port}: the board holds {objects} stored object(s) in obj/ but no firmware: "
            "the install leaves it alone. To fix: recover or remove them first.",
            EXIT_STORAGE,
        )
    if not board.sha256:
        raise BoardError(
            f"{port}: this MicroPython ({platform}) has no hashlib.sha256, which the firmware "
            "needs. To fix: flash a MicroPython build with hashlib."
        )
    if 0 <= free < need:
        raise BoardError(
            f"{port}: the board's filesystem has {free} bytes free; the firmware needs "
            f"{need}. To fix: free space on it, or erase its filesystem.",
            EXIT_STORAGE,
        )


def install_image(
    port: str,
    image: FirmwareImage,
    *,
    serial: str | None = None,
    timeout: float = REPL_TIMEOUT,
    reboot_wait: float = REBOOT_WAIT,
    progress: Callable[[int, int], None] | None = None,
) -> InstallResult:
    """Install image on the blank board at port, provision its serial if given, restart
    it into the firmware and return once it answers as a drive running the image."""
    started = time.monotonic()
    require_signature(image, None, f"firmware {image.version}")
    problem = None if serial is None else serials.serial_problem(serial)
    if problem is not None:
        raise UsageError(
            f"bad serial {serial!r}: {problem}. To fix: give the drive's serial as "
            f"{serials.SERIAL_RULE} (e.g. 0004A3F1, 20231107 or SK-00A1)."
        )
    # main.py goes in last, with the boot record: a board boots into it at once.
    files = [(p + ".new" if p == "main.py" else p, data) for p, data in slot_files(image, SLOT)]
    if serial is not None:
        files.append(("serial", serial.encode("ascii")))
    total = sum(len(data) for _, data in files)
    expected = {entry.path: entry.sha256 for entry in image.files}
    tree = f"{SLOT_DIR}/{SLOT}/"
    with _repl(port, timeout) as transport:
        board = _survey(transport, port)
        # Each file takes at least a block: a margin of one per file.
        _check_board(port, board, total + 4096 * len(files))
        _run(transport, port, CLEAR, "clearing an earlier, unfinished install")
        folders = sorted({path.rsplit("/", 1)[0] for path, _ in files if "/" in path})
        wanted = {prefix for f in folders for prefix in _prefixes(f)}
        _run(transport, port, MKDIRS % sorted(wanted, key=len), "making folders")
        done = 0
        for path, data in files:
            base = done

            def report(written: int, size: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + written, total)

            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    transport.fs_writefile(path, data, chunk_size=CHUNK, progress_callback=report)
            except (TransportError, OSError) as exc:
                raise BoardError(
                    f"{port}: writing {path} failed ({exc}). The board is still blank: run "
                    "the install again."
                ) from None
            done += len(data)
        paths = [path for path, _ in files]
        out = _run(transport, port, DIGESTS % paths, "hashing what it received")
        try:
            digests = ast.literal_eval(out.decode("utf-8", "replace").strip())
        except (ValueError, SyntaxError):
            digests = None
        if not isinstance(digests, list) or len(digests) != len(files):
            raise BoardError(f"{port}: the board answered the digests with {out[:80]!r}")
        for (path, data), got in zip(files, digests, strict=True):
            want = expected.get(path.removeprefix(tree)) if path.startswith(tree) else None
            if got != (want or hashlib.sha256(data).digest()):
                raise BoardError(
                    f"{port}: the board's copy of {path} does not match the image. Nothing "
                    "was activated: run the install again; if it repeats, the board's "
                    "flash is failing.",
                    EXIT_INTEGRITY,
                )
        record = f"{SLOT_DIR}/{RECORD_FILE}"
        commit = {
            "new": record + ".new",
            "path": record,
            "record": boot_record(SLOT, image.counter),
        }
        _run(transport, port, COMMIT % commit, "writing the boot record")
        try:
            transport.exec_raw_no_follow(REBOOT)
        except TransportError:
            pass  # it may be gone before it says anything
    try:
        client = reconnect_after_reboot(port, serial, min(timeout, 5.0), reboot_wait)
    except LinkError:
        raise BoardError(
            f"{port}: the board did not answer as a drive within {reboot_wait:g} s of "
            "restarting after the install. Its console (an emulated drive's log) says why."
        ) from None
    try:
        status = firmware_status(client)
    finally:
        client.close()
    hello = client.info
    assert hello is not None  # reconnect_after_reboot returns a client that had its HELLO
    if status.version != image.version or status.active != SLOT:
        raise BoardError(
            f"{where(hello.serial, port)} restarted into firmware {status.version} (slot "
            f"{status.active}), not {image.version}: the install did not take. Its log, or "
            "its console, says why.",
            EXIT_INTEGRITY,
        )
    if serial is not None and hello.serial != serial:
        raise BoardError(
            f"{port}: the drive answers as {hello.serial}, not the serial {serial} given."
        )
    return InstallResult(
        serial=hello.serial,
        port=port,
        platform=board.platform,
        version=status.version,
        counter=image.counter,
        slot=SLOT,
        files=len(files),
        bytes=total,
        seconds=time.monotonic() - started,
    )


def _prefixes(folder: str) -> list[str]:
    """slot/a/fw -> slot, slot/a, slot/a/fw."""
    parts = folder.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
