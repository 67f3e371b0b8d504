"""Scenario 7, firmware update: an owned drive holding objects is updated from a signed
image v1 to v2, and its power is cut once, at a point of the update the trial chooses.

At a random moment (``Emulator.kill``, from a thread timed on what the update is doing):

- ``transfer``: while the host sends the image (at a random byte of it);
- ``request``: once the image is whole on the drive, around the host's install request;
- ``install``: while the drive checks and unpacks the image at boot;
- ``trial``: while the new firmware makes its first boot, on trial;
- ``confirm``: from the host's self-test of the trial firmware to the boot that confirms it.

Some windows are far shorter than any timer (the switch of the boot record and what
follows it, the confirmation being stored), so three more phases cut at an exact step:
the drives run builds of the same firmware in which every change that ``fw.install``,
``fw.update`` or ``fw.store`` makes to the flash (a file removed, renamed, opened for
writing, a directory made, a file written atomically) counts itself, and right after the
one the flash file ``cut-at`` names (``MODULE N``) the drive stops, as if its power went:

- ``unpack-step``: after the Nth change of the install at boot (half of the time one of
  the last six: the slot's version written, its first-boot mark, the image removed, the
  boot record switched, the result written, the image's last removal tried);
- ``confirm-step``: after the Nth change of the boot that confirms the trial firmware;
- ``confirm-put``: after the Nth change the trial firmware's store makes (the host storing
  the confirmation: its file opened, then renamed into place, before the answer).

When the update failed, every other trial runs it again, as a user would (restarting the
drive first when it says a firmware is on trial). Afterwards, and once more after a power cycle, the
drive must answer HELLO and run v1 or v2; its firmware status must hold together (the boot
record, the active slot's files and version, the slot a trial falls back to, the security
counter floor, no refused install); every object must read back byte-exact with the
owner's session, with nothing added; the owner and custodian credentials must still work.

A trial is ``ok`` when the update finally succeeded and the drive runs v2, confirmed;
``clean`` when it failed with a clear error and the drive runs v1, confirmed. A drive on
v2 after a reported failure, on v1 after a reported success, or a status that does not
hold together is ``unclear``; an object missing or altered, a credential refused or a drive
that no longer answers is ``lost``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealkeep import firmware as fw
from sealkeep import firmware_update
from sealkeep.client import DriveClient, Hello, Role
from sealkeep.drivespec import UsageError
from sealkeep.emulator import Emulator
from sealkeep.errors import SealkeepError
from sealkeep.protocol import messages

from .common import (
    Creds,
    Ctx,
    Outcome,
    Tally,
    claim,
    client_for,
    close_quietly,
    guarded,
    new_creds,
)

PHASES = (
    "transfer",
    "request",
    "install",
    "trial",
    "confirm",
    "unpack-step",
    "confirm-step",
    "confirm-put",
)
# How long after a phase begins the power may go (seconds): the install boot lives about
# 70 ms; the trial firmware removes its first-boot mark some 30 ms after it starts, then
# waits for the host; the self-test and the confirmation take some 5 ms, the boot that
# confirms some 50 ms more. Half of the confirm trials stay within the self-test.
WINDOWS = {"request": 0.004, "install": 0.08, "trial": 0.08, "confirm": 0.08}
SELF_TEST = 0.006
# The exact phases: the module whose changes count.
STEPS = {"unpack-step": "install", "confirm-step": "update", "confirm-put": "store"}
TAIL = 6
OP_LIMIT = 90.0
UPDATE_TIMEOUT = 2.0  # for each answer (a request lost in a power cut costs this much)
ANSWER_WAIT = 20.0
TIMEOUT = 3.0
POLL = 0.001
STATUS = messages.FIRMWARE_STEPS.index("status")
V1 = ("1.0.0", 1)
V2 = ("1.1.0", 2)
CUT_FILE = "cut-at"
# The stepped builds carry their counting into every store operation: more heap than the
# 64 KiB the firmware itself fits in.
STEPPED_HEAP = "128K"

# fw/cutpoint.py of the builds that stop at an exact step.
CUTPOINT = '''"""Power cuts at exact steps: the flash file cut-at holds "MODULE N"; right after the
Nth change to the flash MODULE makes (from 0, counted in this boot since the file
appeared), the drive stops, as a restart would stop it (the emulator starts it again)."""

import os as _os
import sys

import board

_done = {}


def tick(module):
    try:
        with open(board.root() + "/cut-at") as f:
            name, n = f.read().split()
    except (OSError, ValueError):
        return
    if name != module:
        return
    k = _done.get(module, 0)
    if k == int(n):
        _os.remove(board.root() + "/cut-at")
        sys.exit(75)
    _done[module] = k + 1


def wrap(module, f):
    def step(*args):
        try:
            return f(*args)
        finally:
            tick(module)

    return step


class Os:
    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        f = getattr(_os, name)
        if name in ("remove", "rename", "mkdir", "rmdir"):
            return wrap(self.module, f)
        return f


def opener(module):
    def step(path, mode="r", *args):
        f = open(path, mode, *args)
        if "w" in mode or "a" in mode:
            tick(module)
        return f

    return step
'''


def shim(module: str, atomic: bool) -> str:
    text = (
        "\n\nfrom fw import cutpoint as _cut\n\n"
        f'os = _cut.Os("{module}")\n'
        f'open = _cut.opener("{module}")\n'
    )
    if atomic:
        text += f'write_atomic = _cut.wrap("{module}", write_atomic)\n'
    return text


@dataclass(frozen=True)
class Pair:
    """The two images a trial's drive goes between (v1 installed, v2 sent)."""

    v1: fw.FirmwareImage
    v2: fw.FirmwareImage
    v1_path: Path

    def by_version(self, version: str) -> fw.FirmwareImage | None:
        return {self.v1.version: self.v1, self.v2.version: self.v2}.get(version)


@dataclass(frozen=True)
class Images:
    plain: Pair  # the firmware as it is
    stepped: Pair  # the same, stopping at an exact step when told to


def make_images(ctx: Ctx) -> Images:
    """A vendor key and the images every trial uses, built once (in parallel)."""
    folder = ctx.folder("firmware-images")
    key_file = folder / "vendor.key"
    fw.keygen(key_file)
    key = fw.load_signing_key(key_file)
    tree = folder / "src"
    root = fw.source_root()
    for part in ("device", "protocol"):
        shutil.copytree(
            root / part, tree / part, ignore=shutil.ignore_patterns("build", "__pycache__")
        )
    mods = tree / "device" / "fw"
    (mods / "cutpoint.py").write_text(CUTPOINT, encoding="utf-8")
    for module, atomic in (("install", True), ("update", True), ("store", False)):
        path = mods / f"{module}.py"
        text = path.read_text(encoding="utf-8")
        path.write_text(text + shim(module, atomic), encoding="utf-8")
    jobs = {
        f"{kind}-{name}": (version, counter, src)
        for kind, src in (("plain", None), ("stepped", tree))
        for name, (version, counter) in (("v1", V1), ("v2", V2))
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        built = {
            label: pool.submit(fw.build_image, version, counter, key, root=src)
            for label, (version, counter, src) in jobs.items()
        }
        paths = {}
        for label, future in built.items():
            paths[label] = folder / f"{label}.img"
            paths[label].write_bytes(future.result())

    def pair(kind: str) -> Pair:
        v1 = paths[f"{kind}-v1"]
        return Pair(fw.load_image(v1), fw.load_image(paths[f"{kind}-v2"]), v1)

    return Images(pair("plain"), pair("stepped"))


def run(ctx: Ctx, trials: int) -> Tally:
    tally = Tally("firmware")
    images = make_images(ctx)
    for t in range(trials):
        phase = PHASES[t % len(PHASES)]
        # Each phase alternately with and without the update run again.
        again = (t + t // len(PHASES)) % 2 == 1
        pair = images.stepped if phase in STEPS else images.plain
        with tally.trial(f"firmware trial {t} ({phase})"):
            Trial(ctx, tally, pair, t, phase, again).run()
    return tally


# --- the power cut ----------------------------------------------------------------------------


def changes(module: str, image: fw.FirmwareImage) -> int:
    """How many changes to the flash a module of the stepped build makes in the part of the
    update its phase cuts (see device/fw/install.py and update.py). The install: the slot's
    old version file removed and its folder made, each file of the image made (and its
    subfolder, again for each), the version written, the first-boot mark, the image
    removed, the boot record switched, the result written, the image removed if still
    there. The confirming boot: the confirmation removed, the boot record written. The
    trial firmware's store, storing the confirmation: its file made, renamed into place."""
    if module == "install":
        return sum(2 if "/" in f.path else 1 for f in image.files) + 8
    return 2


class Cutter:
    """Cuts the drive's power once, at the point of the update its phase names.

    ``transfer`` cuts from the update's progress callback at a chosen byte; ``confirm``
    starts its clock when the update asks for the owner credential the second time (the
    self-test of the trial firmware); ``request`` watches the drive's flash for the whole
    image; ``install`` and ``trial`` count the drive's boots since the update began (the
    first one installs, the second is the trial). The exact phases write ``cut-at``:
    ``unpack-step`` before the update, the others once the trial firmware runs (its
    confirmation and the boot after it are what they cut)."""

    def __init__(
        self,
        emulator: Emulator,
        phase: str,
        image: fw.FirmwareImage,
        uniform: Callable[[float, float], float],
    ) -> None:
        self.emulator = emulator
        self.phase = phase
        window = WINDOWS.get(phase, 0.0)
        if phase == "confirm" and uniform(0.0, 1.0) < 0.5:
            window = SELF_TEST
        self.delay = uniform(0.0, window)
        self.fraction = uniform(0.0, 1.0)
        self.module = STEPS.get(phase, "")
        self.changes = changes(self.module, image)
        if self.module == "install" and uniform(0.0, 1.0) < 0.5:
            self.step = self.changes - 1 - min(int(uniform(0.0, TAIL)), TAIL - 1)
        else:
            self.step = min(int(uniform(0.0, self.changes)), self.changes - 1)
        self.flash = emulator.drives[0].flash
        self.armed = False
        self.fired = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.where = ""
        self.error: str | None = None
        self.credentials = 0
        self.threads: list[threading.Thread] = []

    def describe(self) -> str:
        if self.phase == "transfer":
            return f"power cut at {self.fraction:.0%} of the transfer"
        if self.module:
            return (
                f"power cut after change {self.step + 1} of {self.changes} by {self.module} "
                f"({self.phase})"
            )
        return f"power cut {self.delay * 1000:.1f} ms into the {self.phase} phase"

    def cut(self, where: str) -> None:
        with self.lock:
            if self.fired.is_set() or self.stop.is_set():
                return
            self.fired.set()
            self.where = where
        try:
            self.emulator.kill(0, restart=True)
        except Exception as exc:  # the drive did not come back: reported by the trial
            self.error = f"{type(exc).__name__}: {exc}"

    def later(self, where: str) -> None:
        """Cut after the delay, from a thread of its own."""

        def body() -> None:
            if not self.stop.wait(self.delay):
                self.cut(where)

        self.start(body)

    def arm(self) -> None:
        """Have the stepped firmware stop itself at the chosen step."""
        (self.flash / CUT_FILE).write_text(f"{self.module} {self.step}", encoding="ascii")
        self.armed = True

    def start(self, body: Callable[[], None]) -> None:
        thread = threading.Thread(target=body, name="campaign-cut", daemon=True)
        self.threads.append(thread)
        thread.start()

    # hooks of update_drive

    def progress(self, offset: int, size: int) -> None:
        if self.phase == "transfer" and offset >= self.fraction * size:
            self.cut(f"byte {offset} of {size}")

    def credential_hook(self, creds: Creds) -> Callable[[Hello], bytes | None]:
        def credential(hello: Hello) -> bytes | None:
            self.credentials += 1
            if self.phase == "confirm" and self.credentials == 2:
                self.later("the self-test")
            return creds.owner

        return credential

    # watchers

    def watch(self) -> None:
        if self.phase == "request":
            self.start(self._watch_image)
        elif self.phase == "unpack-step":
            self.arm()
        elif self.phase in ("install", "trial") or self.module:
            want = 1 if self.phase == "install" else 2
            pid = self.emulator.drives[0].pid  # the drive's process before the update
            self.start(lambda: self._watch_boots(want, pid))

    def _watch_image(self) -> None:
        image = self.flash / "obj" / firmware_update.IMAGE_OBJECT
        while not self.stop.is_set():
            if image.exists():
                self.later("the image whole on the drive")
                return
            time.sleep(POLL)

    def _watch_boots(self, want: int, last: int | None) -> None:
        boots = 0
        while not self.stop.is_set():
            try:
                pid = self.emulator.drives[0].pid
            except Exception:  # the emulator is stopping
                return
            if pid is not None and pid != last:
                boots += 1
                last = pid
                if boots == want:
                    if self.module:
                        self.arm()
                    else:
                        self.later(f"boot {want} of the update")
                    return
            time.sleep(POLL)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        cut = self.flash / CUT_FILE
        if self.armed and not cut.exists():
            self.fired.set()  # the drive stopped itself at that step
            self.where = "that step"
        cut.unlink(missing_ok=True)  # a step the update never reached: no cut


# --- one trial --------------------------------------------------------------------------------


@dataclass
class Trial:
    ctx: Ctx
    tally: Tally
    images: Pair
    number: int
    phase: str
    again: bool
    losses: list[str] = field(default_factory=list)
    unclear: list[str] = field(default_factory=list)

    def run(self) -> None:
        rng = self.ctx.rng
        name = f"firmware-{self.number}"
        heap = STEPPED_HEAP if self.phase in STEPS else "96K"
        emulator = self.ctx.emulator(name, 1, image=self.images.v1_path, heap=heap)
        try:
            creds = new_creds(rng)
            objects = self.fill(emulator, creds)
            cutter = Cutter(emulator, self.phase, self.images.v2, rng.uniform)
            what = cutter.describe()
            outcome = self.cut_update(emulator, creds, cutter)
            if cutter.fired.is_set():
                self.tally.faults += 1
                what = f"{what} (the cut came at {cutter.where})"
            if cutter.error is not None:
                self.losses.append(f"the drive did not come back after the cut: {cutter.error}")
                self.verdict(what, outcome, None)
                return
            if self.again and not outcome.succeeded and outcome.unclear is None:
                what = f"{what}, then updated again"
                outcome = self.update_again(emulator, creds)
            if self.check(emulator, creds, objects, "afterwards") is None:
                self.verdict(what, outcome, None)
                return
            emulator.restart(0)  # and a power cycle: a firmware on trial goes back
            final = self.check(emulator, creds, objects, "after a power cycle")
            self.verdict(what, outcome, final)
        finally:
            emulator.stop()
            shutil.rmtree(self.ctx.root / name, ignore_errors=True)

    def fill(self, emulator: Emulator, creds: Creds) -> dict[str, bytes]:
        """Claim the drive and store one to three objects; their bytes by name."""
        rng = self.ctx.rng
        objects = {
            f"kept-{i}": rng.randbytes(rng.choice([0, 100, 3000, 20000]))
            for i in range(rng.randint(1, 3))
        }
        client = client_for(emulator, 0, TIMEOUT)
        try:
            claim(client, creds)
            client.authenticate(Role.OWNER, creds.owner)
            for name, data in objects.items():
                client.put(name, data)
        finally:
            client.close()
        return objects

    def cut_update(self, emulator: Emulator, creds: Creds, cutter: Cutter) -> Outcome:
        port = emulator.drives[0].port
        v2 = self.images.v2
        credential = cutter.credential_hook(creds)
        cutter.watch()
        try:
            return guarded(
                lambda: firmware_update.update_drive(
                    port, v2, credential, timeout=UPDATE_TIMEOUT, progress=cutter.progress
                ),
                OP_LIMIT,
            )
        finally:
            cutter.finish()

    def update_again(self, emulator: Emulator, creds: Creds) -> Outcome:
        """The update once more, as a user would: a drive that says a firmware is on trial
        is restarted first (which sends it back), as the message says."""
        port = emulator.drives[0].port
        v2 = self.images.v2
        outcome = Outcome()
        for _ in range(3):
            outcome = guarded(
                lambda: firmware_update.update_drive(
                    port, v2, lambda h: creds.owner, timeout=UPDATE_TIMEOUT
                ),
                OP_LIMIT,
            )
            if outcome.succeeded or outcome.unclear is not None:
                return outcome
            if isinstance(outcome.error, UsageError) and "on trial" in str(outcome.error):
                emulator.restart(0)
        return outcome

    # the checks

    def answering(self, emulator: Emulator) -> DriveClient | None:
        """A client once the drive answers HELLO (it may be restarting), or None."""
        deadline = time.monotonic() + ANSWER_WAIT
        last = ""
        while time.monotonic() < deadline:
            client: DriveClient | None = None
            try:
                emulator.wait_ready(0, max(0.1, deadline - time.monotonic()))
                client = client_for(emulator, 0, 1.0)
                client.hello()
                client.timeout = TIMEOUT
                return client
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
                close_quietly(client)
                time.sleep(0.1)
        self.losses.append(f"the drive no longer answers HELLO ({last})")
        return None

    def check(
        self, emulator: Emulator, creds: Creds, objects: dict[str, bytes], when: str
    ) -> tuple[str, str] | None:
        """Every invariant; the firmware the drive runs and its boot state, or None when it
        does not answer or runs something else."""
        client = self.answering(emulator)
        if client is None:
            return None
        try:
            reply = client.call(messages.FIRMWARE, {1: STATUS}, messages.FIRMWARE_R)
        except SealkeepError as exc:
            self.unclear.append(f"{when}: no firmware status ({exc})")
            return None
        finally:
            close_quietly(client)
        running = self.status(reply, emulator.drives[0].flash, when)
        self.contents(emulator, creds, objects, when)
        return running

    def status(self, reply: dict[int, Any], flash: Path, when: str) -> tuple[str, str] | None:
        def bad(text: str) -> None:
            self.unclear.append(f"{when}: {text}")

        status = firmware_update.status_from_reply(reply)
        image = self.images.by_version(status.version)
        if image is None:
            bad(f"it runs firmware {status.version!r}, neither v1 nor v2")
            return None
        if status.counter != image.counter:
            bad(f"firmware {status.version} says counter {status.counter}")
        if status.vendor_key != image.vendor_key:
            bad("it trusts another vendor key")
        record = str(reply.get(3, "")).split()
        infos = {"a": str(reply.get(4, "")).strip(), "b": str(reply.get(5, "")).strip()}
        if len(record) != 4 or record[0] not in infos or record[2] not in ("0", "2"):
            bad(f"its boot record is {reply.get(3)!r}")
            return None
        active, previous, state, floor = record
        if infos[active] != f"{image.version} {image.counter}":
            bad(f"its active slot {active} says {infos[active]!r}, it runs {image.version}")
        self.slot_tree(flash, active, image, when)
        if state == "2":
            fallback = self.images.by_version(infos.get(previous, "").partition(" ")[0])
            if previous not in infos or previous == active or fallback is None:
                bad(f"on trial, it would go back to slot {previous!r} ({infos.get(previous)!r})")
            else:
                self.slot_tree(flash, previous, fallback, when)
                if floor != str(fallback.counter):
                    bad(f"on trial, its floor is {floor}, not {fallback.counter}")
        elif floor != str(image.counter):
            bad(f"confirmed {image.version}, its floor is {floor}, not {image.counter}")
        result = reply.get(6)
        if isinstance(result, str) and result and not result.startswith("0 "):
            bad(f"it refused a good image: {result!r}")
        return image.version, "trial" if state == "2" else "confirmed"

    def slot_tree(self, flash: Path, slot: str, image: fw.FirmwareImage, when: str) -> None:
        """The slot's files on the flash are exactly the image's."""
        tree = flash / "slot" / slot
        found = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
        wanted = {f.path for f in image.files}
        if found != wanted:
            odd = sorted(found ^ wanted)[:3]
            self.unclear.append(f"{when}: slot {slot} does not hold {image.version}: {odd}")
            return
        for entry in image.files:
            if (tree / entry.path).read_bytes() != image.file_bytes(entry):
                self.unclear.append(f"{when}: slot {slot}: {entry.path} differs from the image")
                return

    def contents(
        self, emulator: Emulator, creds: Creds, objects: dict[str, bytes], when: str
    ) -> None:
        """Every object byte-exact with the owner's session, nothing added; the custodian's
        credential accepted."""
        client = self.answering(emulator)
        if client is None:
            return
        try:
            if client.hello().blank:
                self.losses.append(f"{when}: the drive came back blank")
                return
            try:
                client.authenticate(Role.OWNER, creds.owner)
            except SealkeepError as exc:
                self.losses.append(f"{when}: the owner can no longer log in ({exc})")
                return
            listed = {info.name: info for info in client.list()}
            for name, data in objects.items():
                if name not in listed:
                    self.losses.append(f"{when}: {name} is missing")
                    continue
                check = client.verify(name)
                got = client.get(name)
                if got != data or not check.intact or check.size != len(data):
                    self.losses.append(f"{when}: {name} is altered")
            extra = sorted(set(listed) - set(objects))
            if extra:
                self.unclear.append(f"{when}: objects nobody stored: {extra}")
        finally:
            close_quietly(client)
        client = self.answering(emulator)
        if client is None:
            return
        try:
            client.authenticate(Role.CUSTODIAN, creds.custodian)
            client.list()
        except SealkeepError as exc:
            self.losses.append(f"{when}: the custodian can no longer log in ({exc})")
        finally:
            close_quietly(client)

    def verdict(self, what: str, outcome: Outcome, final: tuple[str, str] | None) -> None:
        tally = self.tally
        if self.losses:
            tally.loss(f"{what}: {'; '.join(self.losses[:2])}")
            return
        if outcome.unclear is not None:
            self.unclear.insert(0, f"the update: {outcome.unclear}")
        elif final is not None:
            v1, v2 = self.images.v1.version, self.images.v2.version
            if outcome.error is None and final != (v2, "confirmed"):
                self.unclear.append(f"the update reported success, the drive runs {final}")
            if outcome.error is not None and final != (v1, "confirmed"):
                self.unclear.append(
                    f"the update failed ({type(outcome.error).__name__}: {outcome.error}), "
                    f"the drive runs {final}"
                )
        if self.unclear or final is None:
            tally.unclear_failure(f"{what}: {'; '.join(self.unclear[:2]) or 'no status'}")
        elif outcome.error is not None:
            tally.clear_failure(outcome.error)
        else:
            tally.ok += 1
