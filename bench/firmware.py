#!/usr/bin/env python3
"""Firmware images: size, Ed25519 verification on the drive, and update time.

Prints:
  - the size of a signed image, its manifest and its files (bytes)
  - Ed25519 verification on the MicroPython unix port in a 64 KiB heap, with the firmware
    loaded as a drive has it when it verifies (at boot, fw.install and what it imports)
    and, as a stress case, with the whole firmware and the link's buffers: milliseconds
    per verification (goal <= 2000), the heap the verifier's code takes, and the heap one
    verification allocates (collector off), against what the heap has free
  - session crypto on the unix port in the drives' 96 KiB heap, alone and beside the firmware as a
    drive has it when a session starts (fw.link): a drive's share of one session start
    (SPAKE2 respond + Ed25519 sign of the transcript), a claim's material(), the import of
    the two modules; the heap their code takes and the free heap respond + sign need; and
    from that an estimate for an RP2040
  - the heap a drive needs: the same drive in heaps from 96 KiB down, 1 KiB a step
  - a technician's install on a blank board through its raw REPL (mpremote), against
    ``mpremote cp`` of as many bytes in the same run
  - a full update of an emulated drive (transfer, install at boot, trial boot, confirm):
    seconds, for a blank drive (FIRMWARE open/data) and an owned one (PUT), with the
    transfer time alone and the pty echo of the same bytes as a reference

Run from a source checkout: python3 bench/firmware.py [--json] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sealkeep import firmware as fw
from sealkeep import firmware_update
from sealkeep.client import DriveClient, Hello, Role
from sealkeep.emulator import Emulator, find_micropython, pty_echo_throughput
from sealkeep.install import install_image
from sealkeep.protocol import messages
from sealkeep.transport import open_transport
from spake2 import SPAKE2_A

OWNER = bytes(range(32))

VERIFY_SCRIPT = """
import gc, sys, time
gc.collect()
gc.threshold(1024)
sys.path[:] = ["{slot}"]
import board
from fw import {load}
gc.collect()
free = gc.mem_free()
from fw import ed25519
gc.collect()
code = free - gc.mem_free()
with open("{args}") as f:
    pub, msg, sig = [bytes.fromhex(x) for x in f.read().split()]
gc.collect()
before = gc.mem_free()
# The least free heap one verification needs: take all but that much away, and try.
need = before
for left in range(512, before, 256):
    gc.collect()
    try:
        pad = bytearray(before - left - 64)
    except MemoryError:
        continue
    try:
        ok = ed25519.verify(pub, msg, sig)
    except MemoryError:
        ok = False
    pad = None
    if ok:
        need = left
        break
gc.collect()
ok = True
t = time.ticks_us()
for _ in range({rounds}):
    ok = ok and ed25519.verify(pub, msg, sig)
us = time.ticks_diff(time.ticks_us(), t) / {rounds}
bad = ed25519.verify(pub, msg + b"x", sig)
print(ok, bad, us, free, code, need)
"""


def measure_verify(image: fw.FirmwareImage, rounds: int, work: Path, load: str) -> dict[str, Any]:
    """One verification in a 64 KiB heap after ``from fw import LOAD``: ``install`` is
    how a drive runs it (at boot, before the link), ``link`` the whole firmware loaded."""
    flash = work / f"verify-{load}"
    fw.write_slot(flash, image)
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    msg = fw.signed_message(image.manifest)  # what a drive checks: label + SHA-256
    sig = key.sign(msg)
    args = work / f"verify-{load}.txt"
    args.write_text(f"{pub.hex()} {msg.hex()} {sig.hex()}")
    script = work / f"verify-{load}.py"
    script.write_text(
        VERIFY_SCRIPT.format(slot=flash / "slot" / "a", load=load, args=args, rounds=rounds)
    )
    env = dict(os.environ, SEALKEEP_FLASH=str(flash))
    proc = subprocess.run(
        [find_micropython(), "-X", "heapsize=64K", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        return {"loaded": load, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1]}
    ok, bad, us, free, code, need = proc.stdout.split()
    if ok != "True" or bad != "False":
        raise SystemExit(f"the verifier answered {ok} / {bad}")
    return {
        "loaded": load,
        "ms_per_verify": round(float(us) / 1000, 2),
        "goal_ms": 2000,
        "heap_free_before": int(free),
        "heap_verifier_code": int(code),
        "heap_needed_free_to_verify": int(need),
    }


SESSION_SCRIPT = """
import gc, sys, time
gc.collect()
sys.path[:] = ["{slot}"]
import board
{load}
gc.collect()
free = gc.mem_free()
t = time.ticks_us()
from fw import ed25519, pake
load_us = time.ticks_diff(time.ticks_us(), t)
gc.collect()
code = free - gc.mem_free()
with open("{args}") as f:
    x, seed, message = [bytes.fromhex(v) for v in f.read().split()]
serial = b"{serial}"

def session():
    y, key = pake.respond(pake.ENROL_MATERIAL, x, serial)
    return y, key, ed25519.sign(seed, message)

def squeeze(left):
    # Fill the heap down to about `left` free bytes, its gaps too (a single pad would
    # leave them free and count them).
    pads = None
    for size in (2048, 512, 128, 32, 16):
        while gc.mem_free() > left + size:
            try:
                pads = (pads, bytearray(size))
            except MemoryError:
                break
    return pads

def least_free(task):
    # The least free heap task runs in, 128 bytes a step.
    for left in range(0, 65536, 128):
        gc.collect()
        pads = squeeze(left)
        gc.collect()
        have = gc.mem_free()
        try:
            task()
            ok = True
        except MemoryError:
            ok = False
        pads = None
        if ok:
            return have
    return -1

need = least_free(session) - least_free(lambda: None)  # less what measuring itself takes
gc.collect()
t = time.ticks_us()
for _ in range({rounds}):
    y, key, signature = session()
session_us = time.ticks_diff(time.ticks_us(), t) / {rounds}
t = time.ticks_us()
for _ in range({rounds}):
    pake.respond(pake.ENROL_MATERIAL, x, serial)
respond_us = time.ticks_diff(time.ticks_us(), t) / {rounds}
t = time.ticks_us()
for _ in range({rounds}):
    pake.material(b"a 32-byte owner credential, say.")
material_us = time.ticks_diff(time.ticks_us(), t) / {rounds}
print(y.hex(), key.hex(), signature.hex())
print(session_us, respond_us, material_us, load_us, free, code, need)
"""

# From the unix port on an x86-64 core to an RP2040 (Cortex-M0+, 125 MHz): MicroPython's
# bytecode runs about 100 times slower there, and its big integers have 16-bit digits
# (32-bit here) on a core without a 32x32->64 multiply, which can double the big-number
# part, most of this work. So 100 to 200 times the time measured here.
RP2040_SLOWDOWN = (100, 200)


def measure_session_crypto(
    image: fw.FirmwareImage, rounds: int, work: Path, load: str | None
) -> dict[str, Any]:
    """A drive's share of one session start (pake.respond + ed25519.sign) in the drives'
    96 KiB heap, alone or after ``from fw import LOAD``, checked against the host's side,
    and a claim's pake.material()."""
    flash = work / f"session-{load}"
    fw.write_slot(flash, image)
    serial = "SK-BENCH0001"
    side_a = SPAKE2_A(b"sealkeep enrol", idA=b"sealkeep host", idB=serial.encode())
    x_msg = side_a.start()[1:]
    seed = os.urandom(32)
    message = b"sealkeep drive identity\x00" + os.urandom(32)  # what a drive signs
    args = work / f"session-{load}.txt"
    args.write_text(f"{x_msg.hex()} {seed.hex()} {message.hex()}")
    script = work / f"session-{load}.py"
    script.write_text(
        SESSION_SCRIPT.format(
            slot=flash / "slot" / "a",
            load=f"from fw import {load}" if load else "",
            args=args,
            rounds=rounds,
            serial=serial,
        )
    )
    env = dict(os.environ, SEALKEEP_FLASH=str(flash))
    proc = subprocess.run(
        [find_micropython(), "-X", f"heapsize={DRIVE_HEAP}", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        return {"loaded": load, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1]}
    first, second = proc.stdout.splitlines()[-2:]
    y_hex, key_hex, signature_hex = first.split()
    if side_a.finish(b"B" + bytes.fromhex(y_hex)).hex() != key_hex:
        raise SystemExit("the drive's SPAKE2 key differs from the host's")
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    public.verify(bytes.fromhex(signature_hex), message)  # raises if the drive signed wrong
    session_us, respond_us, material_us, load_us = (float(v) for v in second.split()[:4])
    free, code, need = (int(v) for v in second.split()[4:])
    session_ms = session_us / 1000
    return {
        "loaded": load,
        "ms_respond_and_sign": round(session_ms, 2),
        "ms_respond": round(respond_us / 1000, 2),
        "ms_sign": round((session_us - respond_us) / 1000, 2),
        "ms_material": round(material_us / 1000, 2),
        "ms_import": round(load_us / 1000, 2),
        "heap_free_before": free,
        "heap_code": code,
        "heap_needed_free": need,
        "rp2040_slowdown": list(RP2040_SLOWDOWN),
        "rp2040_seconds_estimate": [
            round((session_ms + load_us / 1000) * k / 1000, 1) for k in RP2040_SLOWDOWN
        ],
    }


def owner(hello: Hello) -> bytes | None:
    return OWNER


def measure_update(images: dict[str, Path], work: Path, owned: bool) -> dict[str, Any]:
    target = fw.load_image(images["v2"])
    with Emulator(work / ("owned" if owned else "blank"), 1, image=images["v1"]) as emu:
        port = emu.drives[0].port
        if owned:
            client = DriveClient(open_transport(port), timeout=5)
            client.claim(OWNER, bytes(32), bytes(16), {"alg": "argon2id"}, bytes(16))
            client.close()
        marks: list[float] = []

        def progress(done: int, total: int) -> None:
            if done == total:
                marks.append(time.perf_counter())

        start = time.perf_counter()
        result = firmware_update.update_drive(
            port, target, owner if owned else (lambda h: None), progress=progress
        )
        total = time.perf_counter() - start
        transfer = (marks[0] - start) if marks else float("nan")
        if owned:  # the data survived: the owner's session still works
            client = DriveClient(open_transport(port), timeout=5)
            client.authenticate(Role.OWNER, OWNER)
            client.call(messages.SPACE, {}, messages.SPACE_R)
            client.close()
    return {
        "drive": "an owned drive (PUT)" if owned else "a blank drive (FIRMWARE open/data)",
        "image_bytes": target.size,
        "seconds_total": round(total, 3),
        "seconds_to_transfer": round(transfer, 3),
        "transfer_bytes_per_second": round(target.size / transfer) if marks else None,
        "slot": result.slot,
    }


def measure_install(images: dict[str, Path], work: Path) -> dict[str, Any]:
    """A technician's install on a blank board (raw REPL, mpremote), against ``mpremote cp``
    of as many bytes, in one file, onto another blank board of the same run."""
    image = fw.load_image(images["v1"])
    with Emulator(work / "install", 2, blank=True) as emu:
        marks: list[float] = []

        def progress(done: int, total: int) -> None:
            if done == total and not marks:
                marks.append(time.perf_counter())

        start = time.perf_counter()
        result = install_image(emu.drives[0].port, image, serial="SK-BENCH0001", progress=progress)
        total = time.perf_counter() - start
        blob = work / "install-reference.bin"
        blob.write_bytes(os.urandom(result.bytes))
        mpremote = shutil.which("mpremote") or "mpremote"
        cp = [mpremote, "connect", emu.drives[1].port, "resume", "fs", "cp", str(blob), ":ref.bin"]
        started = time.perf_counter()
        subprocess.run(cp, check=True, capture_output=True, timeout=120)
        reference = time.perf_counter() - started
    return {
        "files": result.files,
        "bytes": result.bytes,
        "seconds_total": round(total, 3),
        "seconds_to_write_files": round(marks[0] - start, 3) if marks else None,
        "reference_mpremote_cp_seconds": round(reference, 3),
        "ratio_to_mpremote_cp": round(total / reference, 2),
    }


HEAP_STEPS = 32
HEAP_STEP = 1024
DRIVE_HEAP = 96 * 1024  # what the emulator gives each drive


def drive_works(images: dict[str, Path], work: Path, heap: int) -> str | None:
    """A drive on the v1 image in a heap of this many bytes, through what needs the most
    heap: claim, 20 objects with 64-character names, a listing, an update to v2, a read
    back. None if it all worked, else where it failed."""
    step = "start"
    try:
        with Emulator(work / f"heap-{heap}", 1, heap=str(heap), image=images["v1"]) as emu:
            port = emu.drives[0].port
            client = DriveClient(open_transport(port), timeout=5)
            step = "claim"
            client.claim(OWNER, bytes(32), bytes(16), {"alg": "argon2id"}, bytes(16))
            client.authenticate(Role.OWNER, OWNER)
            step = "put"
            for i in range(20):
                client.put(f"{i:03d}" + "n" * 61, bytes([i]) * 3000)
            step = "list"
            client.list()
            client.close()
            step = "update"
            firmware_update.update_drive(port, fw.load_image(images["v2"]), owner)
            client = DriveClient(open_transport(port), timeout=5)
            client.authenticate(Role.OWNER, OWNER)
            step = "read"
            if client.get("005" + "n" * 61) != bytes([5]) * 3000:
                return "read: the bytes differ"
            client.close()
    except Exception as exc:  # a MemoryError on the drive comes back as an error reply
        return f"{step}: {type(exc).__name__}"
    return None


def measure_heap_margin(images: dict[str, Path], work: Path) -> dict[str, Any]:
    """The same drive in heaps from the drives' 96 KiB down in HEAP_STEP steps, to the
    first that fails (layouts vary: a smaller one may work again below it, which does not
    make the one above it work): the smallest that works, and what of 96 KiB is spare."""
    results = {}
    smallest = None
    for k in range(HEAP_STEPS):
        heap = DRIVE_HEAP - k * HEAP_STEP
        results[heap] = drive_works(images, work, heap)
        if results[heap] is not None:
            break
        smallest = heap
    return {
        "heaps": {str(h): failure or "ok" for h, failure in results.items()},
        "smallest_working_heap": smallest,
        "spare_bytes_at_96k": DRIVE_HEAP - smallest if smallest is not None else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--rounds", type=int, default=20, help="verifications to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sealkeep-bench-fw-") as tmp:
        work = Path(tmp)
        fw.keygen(work / "vendor.key")
        key = fw.load_signing_key(work / "vendor.key")
        images = {}
        built = time.perf_counter()
        for name, version, counter in (("v1", "1.0.0", 1), ("v2", "1.1.0", 2)):
            images[name] = work / f"{name}.img"
            images[name].write_bytes(fw.build_image(version, counter, key))
        build_seconds = (time.perf_counter() - built) / 2
        image = fw.load_image(images["v2"])
        largest = max(image.files, key=lambda f: f.size)
        report: dict[str, Any] = {
            "image": {
                "bytes": image.size,
                "manifest_bytes": len(image.manifest),
                "files": len(image.files),
                "file_bytes": sum(f.size for f in image.files),
                "largest_file": f"{largest.path} ({largest.size} bytes)",
                "build_seconds": round(build_seconds, 2),
            },
            "verify": [measure_verify(image, args.rounds, work, m) for m in ("install", "link")],
            "session_crypto": [
                measure_session_crypto(image, args.rounds, work, m) for m in (None, "link")
            ],
            "install": measure_install(images, work),
            "heap_margin": measure_heap_margin(images, work),
            "updates": [measure_update(images, work, owned) for owned in (False, True)],
            "reference_pty_echo_bytes_per_second": round(
                pty_echo_throughput(through_relay=False, total=1 << 20)
            ),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    i = report["image"]
    print(
        f"image: {i['bytes']} bytes ({i['files']} files, {i['file_bytes']} bytes of them, "
        f"manifest {i['manifest_bytes']} bytes; largest {i['largest_file']}); "
        f"build {i['build_seconds']} s"
    )
    for v in report["verify"]:
        if "error" in v:
            print(
                f"Ed25519 verify with fw.{v['loaded']} loaded: does not fit ({v['error']}); "
                "so a drive verifies at boot, before the link takes its buffers"
            )
            continue
        print(
            f"Ed25519 verify, unix port, 64 KiB heap, with fw.{v['loaded']} loaded: "
            f"{v['ms_per_verify']} ms (goal <= {v['goal_ms']} ms); verifier code "
            f"{v['heap_verifier_code']} bytes of heap; it verifies with "
            f"{v['heap_needed_free_to_verify']} bytes free (had {v['heap_free_before']} "
            "before it loaded)"
        )
    alone, linked = report["session_crypto"]
    if "error" in alone:
        print(f"session crypto on the unix port: {alone['error']}")
    else:
        low, high = alone["rp2040_seconds_estimate"]
        if "error" in linked:
            with_link = f"does not fit beside fw.link ({linked['error']})"
        else:
            with_link = (
                f"beside fw.link {linked['ms_respond_and_sign']} ms, "
                f"{linked['heap_free_before']} bytes free before they loaded"
            )
        print(
            "session crypto on the unix port, 96 KiB heap: a drive's share of a session start "
            f"(respond + sign) {alone['ms_respond_and_sign']} ms (respond {alone['ms_respond']}, "
            f"sign {alone['ms_sign']}), import of both modules {alone['ms_import']} ms; "
            f"material() {alone['ms_material']} ms; their code takes {alone['heap_code']} bytes "
            f"of heap and respond + sign {alone['heap_needed_free']} bytes free; {with_link}; "
            f"an RP2040 at {alone['rp2040_slowdown'][0]}-{alone['rp2040_slowdown'][1]}x this "
            f"port's time: {low}-{high} s of drive time a session start"
        )
    m = report["heap_margin"]
    print(
        "heap: a drive on the image (claim, 20 objects with long names, list, update, read) "
        f"works down to a heap of {m['smallest_working_heap']} bytes: "
        f"{m['spare_bytes_at_96k']} bytes to spare in 96 KiB; by heap: "
        + ", ".join(f"{h} {r}" for h, r in m["heaps"].items())
    )
    n = report["install"]
    print(
        f"install on a blank board (raw REPL): {n['seconds_total']} s in all for {n['files']} "
        f"files, {n['bytes']} bytes (writing them {n['seconds_to_write_files']} s, then hashing "
        f"on the board, boot record, restart, HELLO); mpremote cp of as many bytes "
        f"{n['reference_mpremote_cp_seconds']} s: ratio {n['ratio_to_mpremote_cp']}"
    )
    for u in report["updates"]:
        rate = u["transfer_bytes_per_second"]
        print(
            f"update of {u['drive']}: {u['seconds_total']} s in all, transfer "
            f"{u['seconds_to_transfer']} s ({rate} B/s) for {u['image_bytes']} bytes"
        )
    print(f"reference: pty echo {report['reference_pty_echo_bytes_per_second']} B/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
