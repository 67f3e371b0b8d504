#!/usr/bin/env python3
"""Backup and restore of a PKCS#11 slot, as ratios to bare python-pkcs11 loops in the same run.

Prints:
  - backup of AES-256, RSA-2048 and EC P-256 keys (a fresh SoftHSM2 token) to 5 emulated
    drives, against a bare python-pkcs11 loop that finds the same keys (get_objects) and
    wraps each one (goal >= 0.9); medians of --runs pairs, each backup in a new session.
    `backup_ratio_to_wrap_calls` compares with the loop's wrap calls alone. The stages say
    where the time goes: the drives log in while the HSM lists and wraps (`check` is what
    is left of them afterwards), but the write starts only once the manifest is sealed,
    since a put opens with the object's size and SHA-256; the manifest is compressed
    before it is sealed (sets of format 4), so the write moves about a third of the bytes
  - restore of N AES keys of that set into a token, against a bare unwrap-into-token loop
    over the same wrapped keys into the same token (goal >= 0.95); the median of
    --restore-runs restores, each between two bare loops. Where the module allows threads
    (`restore_sessions`), a restore unwraps in several sessions of its own at once, and
    `restore_ratio_to_parallel_loop` compares with a bare loop over as many sessions (what
    the restore adds to the token's own work). A restore also reads the set from
    a drive (the slot is listed meanwhile), proves each key by use and reads its
    attributes back. Where the token ignores CKA_SENSITIVE in C_UnwrapKey (openCryptoki
    3.8), the bare loop's keys come out readable; a restore then sets it on each key, and
    `restore_ratio_to_sensitive_loop` compares with a bare loop that does the same.
    `restore_ratio_cpu` compares the CPU time of this process (user and system: the module
    runs in it, and so does the emulator's relay) instead of the time on the clock, which
    other work on a shared machine does not change; it leaves out the drive processes
  - the size of the set per object, and the time of `domain recover` from 3 of the 5 drives
    with the production Argon2id parameters

The default is the full slot (10,000 AES + 100 RSA + 100 EC keys, 1,000 keys restored);
making the token's keys takes a few minutes. `--aes 200 --rsa 4 --ec 4 --restore-keys 50`
is a quick check.

`--token opencryptoki` runs the same on openCryptoki's soft token (slot 3; its daemon
pkcsslotd must run; it has no EC keys, so `--ec 0`; it holds about 2,000 objects, so
`--aes 2000 --rsa 20 --ec 0 --restore-keys 500`). It re-initialises that machine-wide
token under the test suite's lock, and, having one token, recovers into it emptied. The bare
loops use the domain's profile's mechanism (AES-CBC-PAD there).
"""

from __future__ import annotations

import argparse
import cProfile
import fcntl
import glob
import json
import os
import pstats
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11.exceptions import HostMemory
from pkcs11.util.ec import encode_named_curve_parameters
from sealkeep.backupset import authenticate_copy, backup, set_object_name
from sealkeep.domain import ENV_KDF_MEMORY, ENV_KDF_TIME, DriveGroup, create_domain, owner_login
from sealkeep.emulator import Emulator
from sealkeep.hsm import Hsm, HsmSession
from sealkeep.hsm_keys import Wrapping
from sealkeep.hsm_unwrap_pool import RESTORE_SESSIONS
from sealkeep.kdf import KdfParams, derive_custodian_keys
from sealkeep.manifest import KeyEntry, Manifest
from sealkeep.pins import Passphrases
from sealkeep.recovery import recover_domain
from sealkeep.restore import restore_set
from sealkeep.softhsm import SoftHsmFarm

PIN = "bench-user-pin"
SO_PIN = "bench-so-pin"
DRIVES = 5
RECOVER_FROM = (0, 2, 4)
KEK_FLAGS = (
    MechanismFlag.WRAP | MechanismFlag.UNWRAP | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
)

GOALS = {
    "backup_ratio": "≥ 0.9",
    "restore_ratio": "≥ 0.95",
}


def populate(session: HsmSession, aes: int, rsa: int, ec: int) -> None:
    """The slot's keys: extractable, sensitive token keys, each with its own label and id."""
    raw = session.session
    extractable = {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}
    for i in range(aes):
        raw.generate_key(
            KeyType.AES,
            256,
            label=f"aes-{i:05d}",
            id=b"\x01" + i.to_bytes(4, "big"),
            store=True,
            template=extractable,
        )
    for i in range(rsa):
        raw.generate_keypair(
            KeyType.RSA,
            2048,
            label=f"rsa-{i:05d}",
            id=b"\x02" + i.to_bytes(4, "big"),
            store=True,
            private_template=extractable,
        )
    if ec:
        params = raw.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        for i in range(ec):
            params.generate_keypair(
                label=f"ec-{i:05d}",
                id=b"\x03" + i.to_bytes(4, "big"),
                store=True,
                private_template=extractable,
            )


@dataclass
class Tokens:
    """Where the bench makes its domain and where it recovers it."""

    module: str
    source: tuple[int, str]
    target: tuple[int, str]
    shared: bool  # one token: emptied before the recovery


OCK_MODULES = "/usr/lib/*/opencryptoki/libopencryptoki.so.0"
OCK_SLOT = 3
OCK_SO_PIN = "87654321"
OCK_LOCK = Path(tempfile.gettempdir()) / "sealkeep-opencryptoki.lock"


def opencryptoki(stack: ExitStack) -> Tokens:
    """openCryptoki's soft token, re-initialised, held under the test suite's lock."""
    modules = sorted(glob.glob(OCK_MODULES))
    tool = shutil.which("pkcs11-tool")
    if not modules or tool is None:
        raise SystemExit("openCryptoki and pkcs11-tool are needed (tools/setup installs them)")
    lock = stack.enter_context(OCK_LOCK.open("a"))
    fcntl.flock(lock, fcntl.LOCK_EX)  # a test process using the token finishes first
    stack.callback(fcntl.flock, lock, fcntl.LOCK_UN)
    if not _daemon_runs():
        stack.enter_context(_daemon())
    pin = secrets.token_hex(4)  # 8 characters, the soft token's longest PIN
    base = [tool, "--module", modules[0], "--slot", str(OCK_SLOT)]
    for step in (
        ["--init-token", "--label", "bench", "--so-pin", OCK_SO_PIN],
        ["--login", "--login-type", "so", "--so-pin", OCK_SO_PIN, "--init-pin", "--pin", pin],
    ):
        subprocess.run(base + step, check=True, capture_output=True, timeout=60)
    return Tokens(modules[0], (OCK_SLOT, pin), (OCK_SLOT, pin), shared=True)


def _daemon_runs() -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "pkcsslotd":
                    return True
            except OSError:
                continue
    return False


@contextmanager
def _daemon() -> Iterator[None]:
    """pkcsslotd, started for the run and stopped after it."""
    tmpfiles = Path("/usr/lib/tmpfiles.d/opencryptoki.conf")
    if tmpfiles.is_file() and shutil.which("systemd-tmpfiles"):
        subprocess.run(["systemd-tmpfiles", "--create", str(tmpfiles)], check=False, timeout=30)
    socket = Path("/run/pkcsslotd.socket")
    since = time.time() - 1
    daemon = subprocess.Popen(
        ["/usr/sbin/pkcsslotd", "-f"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (socket.exists() and socket.stat().st_mtime >= since):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("pkcsslotd did not start")
            time.sleep(0.05)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)


def empty(hsm: Hsm, slot: tuple[int, str]) -> None:
    with hsm.open(*slot) as session:
        for obj in list(session.session.get_objects()):
            obj.destroy()


def bare_wrap_loop(session: HsmSession) -> tuple[int, float, float]:
    """(keys, seconds to find them, seconds to wrap them): what a bare python-pkcs11 script
    does to wrap every extractable key of the slot under a fresh session KEK, with the
    mechanism of the domain's profile."""
    profile = session.domain_profile()
    options: dict[str, Any] = {"mechanism": profile.wrap_mechanism}
    if profile.iv_len:
        options["mechanism_param"] = secrets.token_bytes(profile.iv_len)
    raw = session.session
    kek = raw.generate_key(
        KeyType.AES,
        256,
        store=False,
        capabilities=KEK_FLAGS,
        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
    )
    try:
        start = time.perf_counter()
        keys = [
            obj
            for object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
            for obj in raw.get_objects(
                {Attribute.CLASS: object_class, Attribute.TOKEN: True, Attribute.EXTRACTABLE: True}
            )
        ]
        found = time.perf_counter()
        for key in keys:
            kek.wrap_key(key, **options)
        done = time.perf_counter()
    finally:
        kek.destroy()
    return len(keys), found - start, done - found


class BareLoop(NamedTuple):
    seconds: float
    cpu_seconds: float  # of this process, user and system: the module runs in it
    sensitive: bool  # the keys came out sensitive


def bare_unwrap_loop(
    session: HsmSession,
    opened: Manifest,
    entries: Sequence[KeyEntry],
    *,
    make_sensitive: bool = False,
) -> BareLoop:
    """A bare loop that unwraps ``entries`` (AES keys) into token objects, with their label,
    id and usage flags, and sets CKA_SENSITIVE on those that came out without it when
    ``make_sensitive``; the objects are destroyed again afterwards."""
    kek = session.open_set(opened.header)
    # openCryptoki 3.8.1 refuses CKA_EXTRACTABLE in an unwrap template (restore leaves it out)
    template = {Attribute.SENSITIVE: True}
    if kek.profile.iv_len == 0:
        template[Attribute.EXTRACTABLE] = True
    made: list[Any] = []
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        for entry in entries:
            assert entry.wrapped is not None
            key = kek.unwrap(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                entry.wrapped,
                label=entry.label,
                id=entry.id,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template=template,
            )
            if make_sensitive and not key[Attribute.SENSITIVE]:
                key[Attribute.SENSITIVE] = True
            made.append(key)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        sensitive = all(bool(obj[Attribute.SENSITIVE]) for obj in made[:1])
    finally:
        for obj in made:
            obj.destroy()
        kek.destroy()
    return BareLoop(elapsed, cpu, sensitive)


def bare_parallel_unwrap_loop(
    session: HsmSession, opened: Manifest, entries: Sequence[KeyEntry], sessions: int
) -> float | None:
    """Seconds of :func:`bare_unwrap_loop` (without making keys sensitive afterwards) done in
    ``sessions`` sessions at once, as a restore unwraps; None where the module cannot."""
    kek = session.open_set(opened.header)
    template: dict[int, bool | int | bytes | str] = {
        int(Attribute.CLASS): int(ObjectClass.SECRET_KEY),
        int(Attribute.KEY_TYPE): int(KeyType.AES),
        int(Attribute.TOKEN): True,
        int(Attribute.SENSITIVE): True,
    }
    for flag in (Attribute.ENCRYPT, Attribute.DECRYPT):
        template[int(flag)] = True
    for flag in (Attribute.WRAP, Attribute.UNWRAP, Attribute.SIGN, Attribute.VERIFY):
        template[int(flag)] = False
    if kek.profile.iv_len == 0:
        template[int(Attribute.EXTRACTABLE)] = True
    pool = session.unwrap_sessions(kek.profile, sessions)
    made: list[Any] = []
    try:
        if pool is None:
            return None
        with pool:
            handle = int(kek.handle.handle)
            labelled = [
                {**template, int(Attribute.LABEL): e.label, int(Attribute.ID): e.id}
                for e in entries
            ]
            start = time.perf_counter()
            futures = [
                pool.submit(partial(_unwrap_one, handle, entry.wrapped or b"", one))
                for entry, one in zip(entries, labelled, strict=True)
            ]
            made = [future.result() for future in futures]
            return time.perf_counter() - start
    finally:
        raw = session.hsm.raw()
        for key in made:
            if raw is not None:
                raw.destroy_object(int(session.session.handle), key)
        kek.destroy()


def _unwrap_one(kek: int, wrapped: bytes, template: dict[int, Any], wrapping: Wrapping) -> int:
    return wrapping.unwrap(kek, wrapped, template)


def destroy_labelled(session: HsmSession, labels: set[str]) -> int:
    """Destroy the secret keys with these labels (what a restore put there)."""
    doomed = [
        obj
        for obj in session.session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True}
        )
        if obj.label in labels
    ]
    for obj in doomed:
        obj.destroy()
    return len(doomed)


@contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """cProfile the block into ``path`` (and print its top functions), or do nothing."""
    if path is None:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(25)


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def phrases(emulator: Emulator) -> Passphrases:
    return Passphrases(
        entries={
            d.serial: f"custodian {d.serial} keeps the amber lantern lit" for d in emulator.drives
        },
        warn=None,
    )


def run(args: argparse.Namespace, work: Path, figures: dict[str, float]) -> None:
    # The production Argon2id parameters, whatever the environment says.
    os.environ.pop(ENV_KDF_MEMORY, None)
    os.environ.pop(ENV_KDF_TIME, None)
    with ExitStack() as stack:
        if args.token == "opencryptoki":
            tokens = opencryptoki(stack)
        else:
            farm = SoftHsmFarm(work / "softhsm")
            source = farm.init_token("bench-source", PIN, SO_PIN)
            target = farm.init_token("bench-target", PIN, SO_PIN)
            farm.activate()
            stack.callback(farm.restore_environment)
            tokens = Tokens(farm.module, (source.slot_id, PIN), (target.slot_id, PIN), False)
        measure(args, work, figures, tokens)


def measure(
    args: argparse.Namespace, work: Path, figures: dict[str, float], tokens: Tokens
) -> None:
    hsm = Hsm(tokens.module)
    with Emulator(work / "drives", count=DRIVES, heap="96K") as emulator:
        ports = emulator.ports
        custodians = phrases(emulator)
        with hsm.open(*tokens.source) as session:
            try:
                _, seconds = timed(lambda: populate(session, args.aes, args.rsa, args.ec))
            except HostMemory:
                held = len(list(session.session.get_objects()))
                raise SystemExit(
                    f"the token has no room for more than {held} objects (CKR_HOST_MEMORY): "
                    "give fewer keys (openCryptoki's soft token: --aes 2000 --rsa 20 --ec 0)"
                ) from None
            figures["make_keys_s"] = seconds
            with DriveGroup(ports) as group:
                create_domain(session, group.drives, custodians)
            figures["profile_number"] = session.domain_profile().number

        if args.profile_backup:  # apart from the measured runs, which it would slow
            with (
                hsm.open(*tokens.source) as session,
                DriveGroup(ports) as group,
                profiled(args.profile_backup),
            ):
                backup(session, group.drives, label="bench-profiled")
        # Each run: the bare loop, then a backup in a session of its own (as the CLI
        # opens one), so no run profits from what an earlier one found.
        finds: list[float] = []
        wraps: list[float] = []
        backups: list[float] = []
        set_ids: list[bytes] = []
        stages: list[dict[str, float]] = []
        for _ in range(args.runs):
            with hsm.open(*tokens.source) as session:
                keys, find_s, wrap_s = bare_wrap_loop(session)
            finds.append(find_s)
            wraps.append(wrap_s)
            with hsm.open(*tokens.source) as session, DriveGroup(ports) as group:
                made, seconds = timed(lambda: backup(session, group.drives, label="bench"))
            if made.keys != keys + args.rsa + args.ec:  # with the public keys
                raise SystemExit(f"the set holds {made.keys} objects, not {keys} keys and more")
            backups.append(seconds)
            set_ids.append(made.set_id)
            stages.append(made.timings)
        bare = [f + w for f, w in zip(finds, wraps, strict=True)]
        figures["bare_find_s"] = statistics.median(finds)
        figures["bare_wrap_s"] = statistics.median(wraps)
        figures["bare_keys_per_s"] = keys / statistics.median(bare)
        figures["backup_s"] = statistics.median(backups)
        figures["backup_keys_per_s"] = keys / statistics.median(backups)
        ratios = [b / t for b, t in zip(bare, backups, strict=True)]
        figures["backup_ratio"] = statistics.median(ratios)
        figures["backup_ratio_worst"] = min(ratios)
        figures["backup_ratio_to_wrap_calls"] = statistics.median(
            [w / t for w, t in zip(wraps, backups, strict=True)]
        )
        middle = sorted(range(args.runs), key=lambda i: backups[i])[args.runs // 2]
        for stage, value in stages[middle].items():  # of the median run
            figures[f"backup_{stage}_s"] = value
        figures["set_bytes"] = made.size
        figures["set_bytes_per_object"] = made.size / made.keys
        set_id = set_ids[0]
        if tokens.shared:  # the one token stands for a new HSM: emptied
            empty(hsm, tokens.target)

        with hsm.open(*tokens.target) as session:
            chosen = [ports[i] for i in RECOVER_FROM]
            with DriveGroup(chosen) as group:
                _, seconds = timed(lambda: recover_domain(session, group.drives, custodians))
            figures["recover_3_of_5_s"] = seconds
            params = KdfParams.new()
            _, seconds = timed(lambda: derive_custodian_keys("a custodian's words", params))
            figures["argon2id_one_s"] = seconds

            data = _read_set(ports[0], session, set_id)
            opened = authenticate_copy(session, data)
            aes = [e for e in opened.entries if e.key_type == KeyType.AES]
            wanted = aes[: args.restore_keys]
            labels = {e.label for e in wanted}
            # Each restore between two bare loops into the same token, left as it was; the
            # token's speed drifts by ±10 % from one loop to the next on a shared machine.
            if args.profile_restore:  # apart from the measured runs, which it would slow
                with DriveGroup(ports) as group, profiled(args.profile_restore):
                    restore_set(session, group.drives, set_id.hex(), labels)
                destroy_labelled(session, labels)
            refs = [bare_unwrap_loop(session, opened, wanted)]
            restores: list[tuple[float, float, float]] = []  # (seconds, CPU, fetching)
            for _ in range(args.restore_runs):
                with DriveGroup(ports) as group:
                    start_cpu = time.process_time()
                    result, seconds = timed(
                        lambda: restore_set(session, group.drives, set_id.hex(), labels)
                    )
                    cpu = time.process_time() - start_cpu
                if not result.ok or result.count("restored") != len(wanted):
                    raise SystemExit("the restore did not restore and prove every key")
                if destroy_labelled(session, labels) != len(wanted):
                    raise SystemExit("the restored keys are not all in the token")
                restores.append((seconds, cpu, result.fetch_seconds))
                refs.append(bare_unwrap_loop(session, opened, wanted))
            restore_ratios = [
                (refs[i].seconds + refs[i + 1].seconds) / 2 / seconds
                for i, (seconds, _, _) in enumerate(restores)
            ]
            cpu_ratios = [
                (refs[i].cpu_seconds + refs[i + 1].cpu_seconds) / 2 / cpu
                for i, (_, cpu, _) in enumerate(restores)
            ]
            middle = sorted(range(len(restores)), key=lambda i: restore_ratios[i])[
                len(restores) // 2
            ]
            seconds, _, fetch_seconds = restores[middle]
            reference = (refs[middle].seconds + refs[middle + 1].seconds) / 2
            figures["restore_keys"] = len(wanted)
            figures["bare_unwrap_s"] = reference
            figures["bare_unwrap_keys_per_s"] = len(wanted) / reference
            figures["restore_s"] = seconds
            figures["restore_fetch_s"] = fetch_seconds
            figures["restore_per_key_ms"] = 1000 * (seconds - fetch_seconds) / len(wanted)
            figures["bare_unwrap_per_key_ms"] = 1000 * reference / len(wanted)
            figures["restore_keys_per_s"] = len(wanted) / seconds
            figures["restore_ratio"] = restore_ratios[middle]
            figures["restore_ratio_worst"] = min(restore_ratios)
            figures["restore_ratio_cpu"] = statistics.median(cpu_ratios)
            if not refs[0].sensitive:
                like_a_restore = bare_unwrap_loop(
                    session, opened, wanted, make_sensitive=True
                ).seconds
                figures["bare_unwrap_sensitive_s"] = like_a_restore
                figures["restore_ratio_to_sensitive_loop"] = like_a_restore / seconds
            figures["restore_sessions"] = RESTORE_SESSIONS if session.hsm.thread_safe else 1
            parallel = bare_parallel_unwrap_loop(session, opened, wanted, RESTORE_SESSIONS)
            if parallel is not None:
                figures["bare_unwrap_parallel_s"] = parallel
                figures["restore_ratio_to_parallel_loop"] = parallel / seconds


def _read_set(port: str, session: HsmSession, set_id: bytes) -> bytes:
    """The set as one drive holds it (owner session with the credential the HSM computes)."""
    with DriveGroup([port]) as group:
        client = owner_login(session, group.drives[0])
        return client.get(set_object_name(set_id))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aes", type=int, default=10_000, help="AES-256 keys in the slot")
    parser.add_argument("--rsa", type=int, default=100, help="RSA-2048 key pairs in the slot")
    parser.add_argument("--ec", type=int, default=100, help="EC P-256 key pairs in the slot")
    parser.add_argument(
        "--restore-keys", type=int, default=1_000, help="AES keys restored from the set"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="backups measured (with a bare loop before each)"
    )
    parser.add_argument(
        "--restore-runs",
        type=int,
        default=3,
        help="restores measured (each between two bare loops); the median is shown",
    )
    parser.add_argument(
        "--profile-backup", metavar="FILE", help="cProfile one more backup (not measured) into FILE"
    )
    parser.add_argument(
        "--profile-restore",
        metavar="FILE",
        help="cProfile one more restore (not measured) into FILE",
    )
    parser.add_argument(
        "--token",
        choices=["softhsm", "opencryptoki"],
        default="softhsm",
        help="a fresh SoftHSM2 farm (default) or openCryptoki's soft token (slot 3)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.token == "opencryptoki" and args.ec:
        parser.error("openCryptoki's soft token has no EC mechanisms: give --ec 0")
    if args.aes < args.restore_keys or args.restore_keys < 1:
        parser.error("--restore-keys must be between 1 and --aes")
    figures: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="sealkeep-bench-"))
    try:
        run(args, work, figures)
    finally:
        if args.keep:
            print(f"working folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"slot: {args.aes} AES-256, {args.rsa} RSA-2048, {args.ec} EC P-256; {DRIVES} drives")
        for key, value in figures.items():
            print(f"{key:30} {value:12.3f}  {GOALS.get(key, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
