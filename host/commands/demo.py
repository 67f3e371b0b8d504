"""``sealkeep demo``: the whole story on SoftHSM2 and five emulated drives, in one command.

The demo makes a private SoftHSM2 configuration with two tokens (the operator's HSM and a
new, empty one for the disaster), puts sample keys into the first (one of them not
extractable), starts five emulated drives, and then runs the real ``sealkeep`` commands an
operator would type, each in its own process: domain creation (3 of 5), backup, the keys
deleted, a quick restore from one drive while the other four are unplugged, and disaster
recovery onto the new token from three drives. Before the backup it uses every key (an
AES ciphertext, RSA and EC signatures); after each restore it checks in the HSM that the
restored keys are the very same keys (the old ciphertext decrypts, new signatures verify
against the original public keys), on top of the proofs ``restore`` makes itself.
The exit code is 0 only when every key that could be backed up was restored twice and
proven.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.util.ec import encode_ec_public_key

from .. import ui
from ..drivespec import UsageError
from ..emulator import Emulator
from ..errors import SealkeepError
from ..hsm import Hsm, HsmSession
from ..kdf import passphrase_weakness
from ..samples import SAMPLE_LABELS, sample_keys
from ..softhsm import SoftHsmFarm, SoftHsmToken
from . import add_json_option

ORDER = 5
DRIVES = 5
THRESHOLD = 3
DRIVE_CAPACITY = 64 << 20
QUICK_DRIVE = 2
RECOVERY_DRIVES = (0, 3, 4)
MESSAGE = b"sealkeep demo: the same key before and after"


class DemoFailed(SealkeepError):
    """A step of the demo went wrong."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole story on SoftHSM2 and five emulated drives",
        description=(
            "Sample keys in a private SoftHSM2 token, five emulated drives, a backup domain "
            "(3 of 5), a backup, the keys deleted, a quick restore from one drive with the "
            "other four unplugged, then disaster recovery onto a new token from three drives; "
            "every key proven by use. Touches nothing outside its working folder."
        ),
    )
    p.add_argument(
        "--dir",
        metavar="DIR",
        help="working folder (tokens, drives, logs); default: a temporary folder",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the working folder (always kept with --dir)"
    )
    p.add_argument("--heap", default="96K", metavar="SIZE", help="each drive's heap (default 96K)")
    p.add_argument(
        "--serve",
        nargs="?",
        const="127.0.0.1:8443",
        metavar="HOST:PORT",
        help="afterwards, leave the admin portal running on the demo's HSM and drives "
        "(default 127.0.0.1:8443) and print its URL and a login; Ctrl-C stops it",
    )
    add_json_option(p)
    p.set_defaults(run=run)


# --- what the demo reports ----------------------------------------------------------------


@dataclass
class KeyRow:
    """One sample object and what happened to it."""

    label: str
    kind: str
    backed_up: bool = False
    reason: str = ""
    quick: str = "-"
    recovery: str = "-"
    same_key: dict[str, bool] = field(default_factory=dict)
    proofs: str = ""

    def proven(self, stage: str) -> bool:
        result = self.quick if stage == "quick" else self.recovery
        return result.startswith("proven") and self.same_key.get(stage, True)

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "kind": self.kind,
            "backed_up": self.backed_up,
            "reason": self.reason,
            "quick_restore": self.quick,
            "disaster_recovery": self.recovery,
            "same_key": self.same_key,
            "proofs": self.proofs,
        }


@dataclass
class Step:
    title: str
    command: str
    seconds: float
    ok: bool

    def to_json(self) -> dict[str, object]:
        return {
            "title": self.title,
            "command": self.command,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
        }


# --- the story ----------------------------------------------------------------------------


class Demo:
    def __init__(self, root: Path, heap: str, out: TextIO) -> None:
        self.root = root
        self.heap = heap
        self.out = out
        self.steps: list[Step] = []
        self.rows: dict[str, KeyRow] = {}
        self.farm = SoftHsmFarm(root / "softhsm")
        self.tokens: dict[str, SoftHsmToken] = {}
        self.passphrases = root / "passphrases.txt"
        self.emulator: Emulator | None = None
        self.env: dict[str, str] = {}
        self.evidence: dict[str, Any] = {}
        self.set_id = ""

    # -- output

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def chapter(self, text: str) -> None:
        self.say()
        self.say(f"== {text}")

    def sealkeep(
        self, title: str, args: Sequence[str], pin: str | None = None, *, json_out: bool = False
    ) -> Any:
        """Run one ``sealkeep`` command in its own process, as an operator would; show the
        command and what it printed; return its JSON answer with ``json_out``."""
        argv = [*args, "--json"] if json_out else list(args)
        shown = "sealkeep " + " ".join(shlex.quote(a) for a in argv)
        self.say(f"$ {shown}")
        env = dict(self.env)
        env.pop("SEALKEEP_PIN", None)
        if pin is not None:
            env["SEALKEEP_PIN"] = pin
        started = time.monotonic()
        # Without --json the command's two streams are shown merged, in the order written.
        done = subprocess.run(
            [sys.executable, "-m", "sealkeep", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if json_out else subprocess.STDOUT,
            text=True,
            timeout=600,
            check=False,
        )
        seconds = time.monotonic() - started
        shown_output = done.stderr if json_out else done.stdout
        for line in (shown_output or "").rstrip().splitlines():
            self.say(f"    {line}")
        self.steps.append(Step(title, shown, seconds, done.returncode == 0))
        if done.returncode != 0:
            raise DemoFailed(
                f"`{shown}` failed with exit status {done.returncode}; the messages above say "
                f"why (the drives' logs are in {self.root / 'drives'})"
            )
        if not json_out:
            return None
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            raise DemoFailed(f"`{shown}` printed no JSON: {done.stdout[:200]!r}") from None

    @contextmanager
    def session(self, token: SoftHsmToken) -> Iterator[HsmSession]:
        """A session in this process; the module is reloaded first so it sees what the
        commands (other processes) wrote to the token."""
        self.farm.activate()
        with Hsm(self.farm.module).open(token.slot_id, token.pin) as session:
            yield session

    # -- chapters

    def prepare(self) -> None:
        self.chapter("1. An HSM with keys, and five blank backup drives")
        for name in ("operator-hsm", "new-hsm"):
            pin = secrets.token_hex(8)
            self.tokens[name] = self.farm.init_token(name, pin, secrets.token_hex(8))
        self.farm.activate()
        self.env = {**self.farm.env, "PYTHONUNBUFFERED": "1"}
        self.env.pop("SEALKEEP_DRIVES", None)
        with self.session(self.tokens["operator-hsm"]) as session:
            made = sample_keys(session)
            self.use_keys(made)
        kinds = {
            "aes": "AES-256 secret key",
            "aes_local": "AES-256 secret key, never leaves the HSM",
            "rsa": "RSA-2048 key pair",
            "ec": "EC P-256 key pair + certificate",
        }
        for name, label in SAMPLE_LABELS.items():
            self.rows[label] = KeyRow(label, kinds[name])
        self.say(
            f"SoftHSM2 tokens 'operator-hsm' (slot {self.slot('operator-hsm')}) and 'new-hsm' "
            f"(slot {self.slot('new-hsm')}, empty) in {self.farm.tokendir}"
        )
        self.say("sample keys made and used once: an AES ciphertext, RSA and EC signatures kept")
        self.sealkeep("list the slots", ["slots"])
        source = str(self.slot("operator-hsm"))
        self.sealkeep("list the keys", ["keys", "--slot", source], self.pin("operator-hsm"))
        self.emulator = Emulator(
            self.root / "drives", DRIVES, heap=self.heap, capacity=DRIVE_CAPACITY
        )
        self.emulator.start()
        self.sealkeep("find the drives", ["drives", "--drives", self.all_drives()])

    def create_domain(self) -> None:
        self.chapter(f"2. Five custodians create the backup domain ({THRESHOLD} of {DRIVES})")
        lines = []
        for drive in self.emulated.drives:
            while True:
                phrase = secrets.token_urlsafe(18)
                if passphrase_weakness(phrase) is None:
                    break
            lines.append(f"{drive.serial} {phrase}\n")
        fd = os.open(self.passphrases, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.writelines(lines)
        self.say(f"(each custodian's passphrase is in {self.passphrases}, one line per drive)")
        self.sealkeep(
            "create the domain",
            [
                "domain",
                "create",
                "--slot",
                str(self.slot("operator-hsm")),
                "--drives",
                self.all_drives(),
                "--threshold",
                str(THRESHOLD),
                "--passphrases",
                str(self.passphrases),
            ],
            self.pin("operator-hsm"),
        )

    def backup(self) -> None:
        self.chapter("3. The operator backs up the slot to all five drives")
        result = self.sealkeep(
            "back up",
            [
                "backup",
                "--slot",
                str(self.slot("operator-hsm")),
                "--drives",
                self.all_drives(),
                "--label",
                "demo",
            ],
            self.pin("operator-hsm"),
            json_out=True,
        )
        self.set_id = str(result["set_id"])
        skipped = {s["label"]: s["reason"] for s in result["skipped"]}
        for label, row in self.rows.items():
            row.backed_up = label not in skipped
            row.reason = str(skipped.get(label, ""))
        verified = sum(1 for d in result["drives"] if d["verified"])
        self.say(
            f"set {self.set_id}: {result['keys']} object(s), {result['bytes']} bytes, on "
            f"{len(result['drives'])} drive(s), {verified} read back and verified, in "
            f"{result['seconds']:.2f} s"
        )
        for label, reason in skipped.items():
            self.say(f"not in the set, as expected: {label} ({reason})")
        self.sealkeep(
            "list the sets", ["sets", "--drives", self.all_drives()], self.pin("operator-hsm")
        )

    def delete_keys(self) -> None:
        self.chapter("4. Accident: the backed-up keys are deleted from the HSM")
        gone = 0
        with self.session(self.tokens["operator-hsm"]) as session:
            for obj in list(session.session.get_objects()):
                label = str(obj[Attribute.LABEL])
                row = self.rows.get(label)
                if row is not None and row.backed_up:
                    obj.destroy()
                    gone += 1
        self.say(f"deleted {gone} object(s); left: the key that never leaves the HSM")

    def quick_restore(self) -> None:
        self.chapter("5. Quick restore from one drive while the other four are unplugged")
        emulator = self.emulated
        for i in range(DRIVES):
            if i != QUICK_DRIVE:
                emulator.kill(i)
        drive = emulator.drives[QUICK_DRIVE]
        self.say(f"only drive {drive.serial} is plugged in, at {drive.port}")
        result = self.sealkeep(
            "quick restore",
            [
                "restore",
                "--set",
                self.set_id,
                "--slot",
                str(self.slot("operator-hsm")),
                "--drives",
                str(drive.port),
            ],
            self.pin("operator-hsm"),
            json_out=True,
        )
        self.record(result, "quick")
        self.check_same_keys(self.tokens["operator-hsm"], "quick")

    def disaster_recovery(self) -> None:
        self.chapter("6. Disaster: the HSM is lost; three custodians rebuild on a new HSM")
        emulator = self.emulated
        for i in RECOVERY_DRIVES:
            if i != QUICK_DRIVE:
                emulator.restart(i)
        drives = emulator.drives
        ports = ",".join(str(drives[i].port) for i in RECOVERY_DRIVES)
        serials = ", ".join(drives[i].serial for i in RECOVERY_DRIVES)
        self.say(f"drives {serials} are brought to the new HSM")
        target = str(self.slot("new-hsm"))
        self.sealkeep(
            "recover the domain",
            [
                "domain",
                "recover",
                "--slot",
                target,
                "--drives",
                ports,
                "--passphrases",
                str(self.passphrases),
            ],
            self.pin("new-hsm"),
        )
        result = self.sealkeep(
            "restore onto the new HSM",
            ["restore", "--set", self.set_id, "--slot", target, "--drives", ports],
            self.pin("new-hsm"),
            json_out=True,
        )
        self.record(result, "recovery")
        self.check_same_keys(self.tokens["new-hsm"], "recovery")

    # -- using the keys

    def use_keys(self, made: dict[str, Any]) -> None:
        """Use every backed-up key once and keep what proves it is the same key later."""
        iv = secrets.token_bytes(16)
        self.evidence["aes"] = (iv, made["aes"].encrypt(MESSAGE, mechanism_param=iv))
        modulus = made["rsa_pub"][Attribute.MODULUS]
        exponent = made["rsa_pub"][Attribute.PUBLIC_EXPONENT]
        self.evidence["rsa"] = rsa.RSAPublicNumbers(
            int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
        ).public_key()
        self.evidence["ec"] = load_der_public_key(encode_ec_public_key(made["ec_pub"]))

    def check_same_keys(self, token: SoftHsmToken, stage: str) -> None:
        """The restored keys are the originals: the old ciphertext decrypts, and signatures
        made now verify against the public keys taken before the backup."""
        try:
            with self.session(token) as session:
                checks = self._same_keys(session)
        except PKCS11Error as exc:
            raise DemoFailed(
                f"the restored keys in {token.label!r} could not be used: "
                f"{type(exc).__name__} {exc}".strip()
            ) from None
        for label, same in checks.items():
            self.rows[label].same_key[stage] = same
        good = sum(checks.values())
        self.say(
            f"checked here: {good} of {len(checks)} keys are the originals (old AES "
            "ciphertext decrypts; new RSA and EC signatures verify against the old public keys)"
        )

    def _same_keys(self, session: HsmSession) -> dict[str, bool]:

        def find(label: str, object_class: ObjectClass) -> Any:
            return session.session.get_key(object_class=object_class, label=label)

        checks: dict[str, bool] = {}
        iv, ciphertext = self.evidence["aes"]
        aes = find(SAMPLE_LABELS["aes"], ObjectClass.SECRET_KEY)
        checks[SAMPLE_LABELS["aes"]] = aes.decrypt(ciphertext, mechanism_param=iv) == MESSAGE
        rsa_key = find(SAMPLE_LABELS["rsa"], ObjectClass.PRIVATE_KEY)
        signature = rsa_key.sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS)
        checks[SAMPLE_LABELS["rsa"]] = _verifies(
            lambda: self.evidence["rsa"].verify(
                signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256()
            )
        )
        ec_key = find(SAMPLE_LABELS["ec"], ObjectClass.PRIVATE_KEY)
        # SoftHSM2 offers plain CKM_ECDSA only: the digest is made here.
        digest = hashlib.sha256(MESSAGE).digest()
        raw = ec_key.sign(digest, mechanism=Mechanism.ECDSA)
        half = len(raw) // 2
        der = encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )
        checks[SAMPLE_LABELS["ec"]] = _verifies(
            lambda: self.evidence["ec"].verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        )
        return checks

    def record(self, result: dict[str, Any], stage: str) -> None:
        by_label: dict[str, list[tuple[bool, str]]] = {}
        for key in result["keys"]:
            good = key["status"] == "restored" and bool(key["proven"])
            if key["status"] == "restored":
                text = "proven" if key["proven"] else "PROOF FAILED"
                text += f" ({key['proof']})" if key["proof"] else ""
            else:
                text = key["status"] + (f": {key['detail']}" if key["detail"] else "")
            by_label.setdefault(key["label"], []).append((good, f"{key['class']} {text}"))
        for label, outcomes in by_label.items():
            row = self.rows.get(label)
            if row is None:
                continue
            failed = [text for good, text in outcomes if not good]
            value = "; ".join(failed) if failed else "proven"
            row.proofs = ", ".join(text for _, text in outcomes).replace(" proven (", " (")
            if stage == "quick":
                row.quick = value
            else:
                row.recovery = value
        source = result["source"]["serial"]
        self.say(
            f"restored {result['restored']} object(s) from drive {source} in "
            f"{result['seconds']:.2f} s; already present {result['present']}; failed "
            f"{result['failed']}"
        )

    # -- helpers

    @property
    def emulated(self) -> Emulator:
        if self.emulator is None:
            raise DemoFailed("the drives are not running")
        return self.emulator

    def all_drives(self) -> str:
        return f"@{self.emulated.drives_file}"

    def slot(self, token: str) -> int:
        return self.tokens[token].slot_id

    def pin(self, token: str) -> str:
        return self.tokens[token].pin

    def passed(self) -> bool:
        wanted = [r for r in self.rows.values() if r.backed_up]
        return bool(wanted) and all(r.proven("quick") and r.proven("recovery") for r in wanted)

    def report(self) -> None:
        self.chapter("Report")
        rows = []
        for row in self.rows.values():
            rows.append(
                [
                    row.label,
                    row.kind,
                    "yes" if row.backed_up else f"no: {row.reason}",
                    _stage(row, "quick"),
                    _stage(row, "recovery"),
                ]
            )
        self.say(
            ui.render_table(
                ["KEY", "WHAT", "BACKED UP", "RESTORED FROM 1 DRIVE", "ON A NEW HSM FROM 3"],
                rows,
            )
        )
        self.say()
        self.say("how restore proved each object (on both HSMs):")
        for row in self.rows.values():
            if row.proofs:
                self.say(f"  {row.label}: {row.proofs}")
        self.say()
        for step in self.steps:
            self.say(f"{step.seconds:6.2f} s  {step.title}")
        self.say()
        if self.passed():
            self.say(
                "PASSED: every key that can leave the HSM was restored twice and proven to be "
                "the original"
            )
        else:
            self.say("FAILED: see the table above")

    def serve_portal(self, listen: str) -> None:
        """`sealkeep serve` on the demo's tokens and drives, until Ctrl-C."""
        self.chapter("The admin portal, on this HSM and these drives (Ctrl-C stops it)")
        emulator = self.emulated
        for i in range(DRIVES):
            if i not in RECOVERY_DRIVES:
                emulator.restart(i)
        self.say("the drives left out of the recovery are plugged back in: all five answer")
        state = self.root / "service"
        password_file = self.root / "portal-password.txt"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(12) + "\n")
        self.sealkeep(
            "make the service's state folder and first admin",
            [
                "serve",
                "init",
                "--state",
                str(state),
                "--admin",
                "admin",
                "--password-file",
                str(password_file),
            ],
        )
        argv = [
            sys.executable,
            "-m",
            "sealkeep",
            "serve",
            "--state",
            str(state),
            "--listen",
            listen,
            "--drives",
            self.all_drives(),
        ]
        server = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, text=True)
        # Stopped by SIGTERM as by Ctrl-C: the portal is stopped, not left behind.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            assert server.stdout is not None
            for line in iter(server.stdout.readline, ""):
                self.say(line.rstrip())
                if line.startswith("certificate") or line.startswith("sealkeep serve: http:"):
                    break
            self.say(
                f"log in as admin with the password in {password_file}; the SO password of "
                f"slot 'operator-hsm' is its PIN {self.pin('operator-hsm')}, of 'new-hsm' "
                f"{self.pin('new-hsm')} (demo tokens only). The browser will ask you to trust "
                "the certificate made for this demo: compare the fingerprint above."
            )
            server.wait()
        except KeyboardInterrupt:
            self.say("stopping the portal")
        finally:
            signal.signal(signal.SIGTERM, previous)
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        self.farm.restore_environment()

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.passed(),
            "set_id": self.set_id,
            "keys": [r.to_json() for r in self.rows.values()],
            "steps": [s.to_json() for s in self.steps],
        }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _verifies(check: Any) -> bool:
    try:
        check()
    except InvalidSignature:
        return False
    return True


def _stage(row: KeyRow, stage: str) -> str:
    if not row.backed_up:
        return "-"
    text = row.quick if stage == "quick" else row.recovery
    same = row.same_key.get(stage)
    if same is True:
        text += ", same key"
    elif same is False:
        text += ", NOT THE SAME KEY"
    return text


def run(args: argparse.Namespace) -> int:
    if args.dir:
        root = Path(args.dir).resolve()
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"{root} is not empty; give a new or empty folder to --dir")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="sealkeep-demo-"))
    keep = args.keep or bool(args.dir)
    out = sys.stderr if args.json else sys.stdout
    demo = Demo(root, args.heap, out)
    started = time.monotonic()
    failure: str | None = None
    try:
        demo.prepare()
        demo.create_domain()
        demo.backup()
        demo.delete_keys()
        demo.quick_restore()
        demo.disaster_recovery()
        if args.serve and demo.passed():
            demo.report()
            demo.serve_portal(args.serve)
    except SealkeepError as exc:
        failure = str(exc)
    finally:
        demo.stop()
    if not (args.serve and demo.passed()):
        demo.report()
    demo.say(f"the demo took {time.monotonic() - started:.1f} s")
    if keep or failure is not None:
        demo.say(f"working folder kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        document = demo.to_json()
        document["dir"] = str(root) if keep or failure is not None else None
        document["error"] = failure
        ui.print_json(document)
    if failure is not None:
        raise DemoFailed(failure)
    return 0 if demo.passed() else 1
