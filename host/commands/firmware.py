"""``sealkeep firmware``: vendor key, signed images, and updating drives.

``keygen`` writes the vendor's Ed25519 signing key (or, with ``--pkcs11``, makes it in a
token, where it stays); ``build`` compiles the firmware with
``mpy-cross`` and signs it into an image whose firmware trusts that key; ``inspect`` shows
an image and checks its signature; ``install`` puts an image on a blank board through its
MicroPython REPL; ``update`` installs an image on drives.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .. import config, ui
from ..client import Hello
from ..drivespec import DriveAddress, UsageError, parse_drives
from ..errors import EXIT_GENERIC, SealkeepError
from ..firmware import (
    FirmwareImage,
    build_image,
    check_counter,
    keygen,
    load_image,
    load_public_key,
    load_signing_key,
    parse_image,
    require_signature,
)
from ..firmware_update import UpdateResult, update_drive
from ..hsm import HsmSession
from ..install import install_image
from ..vendorkey import TokenSigner, token_keygen
from . import add_drives_option, add_json_option, add_timeout_option
from .slots import add_slot_options, load_module, open_slot

ORDER = 80


def _counter(text: str) -> int:
    try:
        return check_counter(int(text))
    except (ValueError, UsageError):
        raise argparse.ArgumentTypeError(
            f"the security counter is a whole number 0 to 4294967295, not {text!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "firmware",
        help="drive firmware: vendor key, signed images, update",
        description=(
            "Make the vendor signing key, build and inspect signed firmware images, and "
            "install them on drives."
        ),
    )
    sub = p.add_subparsers(title="actions", dest="action", metavar="ACTION")
    p.set_defaults(run=lambda args: _usage(p))

    k = sub.add_parser(
        "keygen",
        help="write a new Ed25519 vendor signing key",
        description=(
            "Write a new Ed25519 vendor signing key (PKCS#8 PEM, readable only by you) and "
            "print its public half, which every firmware built with it trusts. Keep the file "
            "offline: whoever holds it can sign firmware the drives accept."
        ),
    )
    where = k.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, metavar="FILE", help="the key file")
    where.add_argument(
        "--pkcs11",
        action="store_true",
        help="make the key inside a PKCS#11 token instead (--slot, --label): it never leaves it",
    )
    _passphrase_options(k, "encrypt the key under the passphrase in FILE (its first line)")
    k.add_argument(
        "--no-passphrase",
        action="store_true",
        help="write the key unencrypted (for keys kept on an offline, encrypted medium)",
    )
    _token_options(k)
    add_json_option(k)
    k.set_defaults(run=run_keygen)

    b = sub.add_parser(
        "build",
        help="compile the firmware with mpy-cross and sign it into an image",
        description=(
            "Compile the drive firmware and the protocol modules with mpy-cross, embed the "
            "vendor's public key, version and security counter, and sign the manifest "
            "(every file's path, size and SHA-256) with the vendor key. Drives refuse an "
            "image whose counter is below their own."
        ),
    )
    b.add_argument("--version", required=True, help="firmware version (e.g. 1.2.0)")
    b.add_argument("--counter", required=True, type=_counter, help="security counter")
    signer = b.add_mutually_exclusive_group(required=True)
    signer.add_argument("--key", type=Path, metavar="FILE", help="vendor key file")
    signer.add_argument(
        "--pkcs11",
        action="store_true",
        help="sign with the vendor key held in a PKCS#11 token (--slot, --label)",
    )
    _passphrase_options(b, "the vendor key's passphrase, in FILE (its first line)")
    _token_options(b)
    b.add_argument("--out", required=True, type=Path, metavar="IMAGE", help="the image file")
    add_json_option(b)
    b.set_defaults(run=run_build)

    i = sub.add_parser(
        "inspect",
        help="show an image and check its signature",
        description=(
            "Show an image's version, counter, vendor key and files, check every file's "
            "SHA-256 and the signature: against --key if given (64 hex digits or a key "
            "file), else against the vendor key the image names. Exits 6 when the "
            "signature does not verify."
        ),
    )
    i.add_argument("image", type=Path, metavar="IMAGE")
    i.add_argument("--key", metavar="KEY", help="the vendor public key to check against")
    add_json_option(i)
    i.set_defaults(run=run_inspect)

    n = sub.add_parser(
        "install",
        help="install an image on a blank board through its MicroPython REPL (mpremote)",
        description=(
            "Install a signed image on a board that runs stock MicroPython and nothing else, "
            "through its raw REPL (mpremote, without a soft reset): the image's files into "
            "slot a, each checked against its SHA-256 on the board, the drive serial if "
            "--serial is given (else the firmware makes one from the chip's id), and last "
            "the boot record; then the board restarts into the firmware, and the command "
            "waits until it answers as a drive. An install cut short leaves the board "
            "blank: run it again. A board that already runs sealkeep firmware is refused: "
            "update it with `sealkeep firmware update`. Exits 3 when the port does not "
            "answer as a REPL, 5 when the board is not blank or has no room, 6 when its "
            "copy of a file does not match."
        ),
    )
    n.add_argument("image", type=Path, metavar="IMAGE")
    n.add_argument(
        "--port", required=True, help="the board's serial port (a path or a pyserial URL)"
    )
    n.add_argument(
        "--serial",
        metavar="SERIAL",
        help="provision this drive serial: 4 to 32 letters, digits and dashes (e.g. 0004A3F1)",
    )
    n.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the board's REPL (default 10)",
    )
    add_json_option(n)
    n.set_defaults(run=run_install)

    u = sub.add_parser(
        "update",
        help="install an image on drives (A/B, on trial, confirmed after a self-test)",
        description=(
            "Stream the image into each drive's inactive slot (a broken transfer resumes), "
            "have the drive check the Ed25519 signature, vendor key, security counter and "
            "every file's digest and restart into it on trial, then self-test it (HELLO "
            "and an owner session) and confirm. A drive that refuses the image, or whose "
            "new firmware fails the self-test, keeps or goes back to its previous firmware "
            "with its data. Claimed drives need an owner session: the slot holding their "
            "backup domain is found by itself (--slot picks one) and its PIN is asked as "
            "usual; blank drives need none."
        ),
    )
    u.add_argument("image", type=Path, metavar="IMAGE")
    add_drives_option(u)
    add_timeout_option(u)
    u.add_argument(
        "--force",
        action="store_true",
        help="send the image even to a drive that already runs it",
    )
    add_slot_options(u, required=False)
    add_json_option(u)
    u.set_defaults(run=run_update)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _token_options(p: argparse.ArgumentParser) -> None:
    """``--slot``, ``--pin-file``, ``--module`` and ``--label``, for a vendor key in a token."""
    add_slot_options(p, required=False)
    p.add_argument("--label", metavar="LABEL", help="the vendor key's label in the token")


def _token_session(args: argparse.Namespace) -> HsmSession:
    """The logged-in session --pkcs11 asks for; --slot and --label are required with it."""
    missing = [
        flag for flag, value in (("--slot", args.slot), ("--label", args.label)) if not value
    ]
    if missing:
        raise UsageError(
            f"--pkcs11 needs {' and '.join(missing)}: the token's slot and the key's label."
        )
    hsm = load_module(args)
    return open_slot(hsm, args.slot, args)


def _no_token_options(args: argparse.Namespace, instead: str) -> None:
    """--slot or --label without --pkcs11 is a mistake worth naming; the slot sealkeep.toml
    gives every HSM command is not one, or a key file could not be used beside it."""
    configured = config.load().get("slot")
    slot_given = args.slot is not None and (configured is None or args.slot != str(configured))
    given = [f for f, v in (("--slot", slot_given), ("--label", args.label is not None)) if v]
    if given:
        raise UsageError(f"{' and '.join(given)} go with --pkcs11, not with {instead}.")


def _passphrase_options(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help=text)


def _key_passphrase(args: argparse.Namespace, asking: str) -> bytes | None:
    """The vendor key's passphrase: from --passphrase-file, else asked at a terminal."""
    if args.passphrase_file is not None:
        try:
            text = args.passphrase_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(
                f"cannot read {args.passphrase_file}: {exc.strerror or exc}."
            ) from None
        first: str = text[0] if text else ""
        if not first:
            raise UsageError(f"{args.passphrase_file} holds no passphrase on its first line.")
        return first.encode("utf-8")
    if not sys.stdin.isatty():
        return None
    try:
        typed = getpass.getpass(asking)
    except EOFError:
        raise UsageError("no passphrase given.") from None
    return typed.encode("utf-8") or None


def run_keygen(args: argparse.Namespace) -> int:
    if args.pkcs11:
        if args.passphrase_file is not None or args.no_passphrase:
            raise UsageError(
                "a key made in a token has no passphrase of its own: the token's PIN guards it."
            )
        with _token_session(args) as session:
            public = token_keygen(session, args.label)
            where = session.where
        if args.json:
            ui.print_json({"token": where, "label": args.label, "public_key": public.hex()})
        else:
            print(f"vendor key {args.label!r} made in {where}; its private half never leaves it")
            print(f"public key: {public.hex()}")
        return 0
    _no_token_options(args, "--out")
    passphrase = None
    if not args.no_passphrase:
        passphrase = _key_passphrase(args, "passphrase for the new vendor key: ")
        if passphrase is None:
            raise UsageError(
                "a vendor key is written encrypted: give --passphrase-file FILE (or run at a "
                "terminal to be asked), or --no-passphrase to write it unencrypted."
            )
    public = keygen(args.out, passphrase=passphrase)
    if args.json:
        ui.print_json({"key_file": str(args.out), "public_key": public.hex()})
    else:
        print(f"vendor key written to {args.out} (keep it offline)")
        print(f"public key: {public.hex()}")
    return 0


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}.") from None


def run_build(args: argparse.Namespace) -> int:
    if args.pkcs11:
        if args.passphrase_file is not None:
            raise UsageError("--passphrase-file is for a key file; a token's key needs its PIN.")
        with _token_session(args) as session:
            data = build_image(args.version, args.counter, TokenSigner(session, args.label))
    else:
        _no_token_options(args, "--key")
        key = load_signing_key(args.key, _key_passphrase(args, f"passphrase of {args.key}: "))
        data = build_image(args.version, args.counter, key)
    image = parse_image(data, "the image just built")
    require_signature(image, None, "the image just built")
    _write(args.out, data)
    if args.json:
        ui.print_json({"image": str(args.out), **image.as_json()})
    else:
        print(
            f"{args.out}: firmware {image.version}, counter {image.counter}, "
            f"{len(image.files)} files, {image.size} bytes, signed by {image.vendor_key.hex()}"
        )
    return 0


def _show(image: FirmwareImage, key: bytes, ok: bool) -> None:
    rows = [
        ["version", image.version],
        ["counter", str(image.counter)],
        ["vendor key", image.vendor_key.hex()],
        ["checked with", key.hex() + (" (the key it names)" if key == image.vendor_key else "")],
        ["signature", "valid" if ok else "INVALID"],
        ["size", f"{image.size} bytes"],
        ["sha256", image.sha256.hex()],
    ]
    ui.print_table(["FIELD", "VALUE"], rows)
    print()
    ui.print_table(
        ["PATH", "SIZE", "SHA256"],
        [[f.path, str(f.size), f.sha256.hex()] for f in image.files],
    )


def run_inspect(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    key = load_public_key(args.key) if args.key else image.vendor_key
    ok = key == image.vendor_key and image.signature_ok(key)
    trusted = args.key is not None
    if args.json:
        ui.print_json(image.as_json(key) | {"signature_valid": ok, "key_trusted": trusted})
    else:
        _show(image, key, ok)
    if ok and not trusted:
        print(
            "warning: checked only against the key the image itself names, which anyone "
            "can put there: this says the image is intact, not who made it. Give the "
            "vendor's public key with --key to check who signed it.",
            file=sys.stderr,
        )
    if not ok:
        require_signature(image, key, str(args.image))  # raises with the reason
    return 0


class _Owners:
    """Owner credentials of claimed drives, from the HSM slot holding their domain (one
    PIN prompt per slot, asked once, by one thread at a time)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.sessions: dict[bytes, tuple[HsmSession, Any]] = {}

    def __call__(self, hello: Hello) -> bytes | None:
        if hello.domain is None:
            return None
        from ..domain import OwnerKeys
        from .sets import session_for
        from .slots import load_module

        with self.lock:
            entry = self.sessions.get(hello.domain)
            if entry is None:
                session = session_for(load_module(self.args), self.args, hello.domain)
                if session is None:
                    raise UsageError(
                        f"no HSM slot holds the backup domain of drive {hello.serial} "
                        f"({hello.domain.hex()[:16]}): give --slot, or recover the domain first."
                    )
                entry = (session, OwnerKeys(session))
                self.sessions[hello.domain] = entry
            credential: bytes = entry[1](hello.serial)
            return credential

    def close(self) -> None:
        for session, _ in self.sessions.values():
            session.close()


def run_install(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    with ui.Progress(f"installing firmware {image.version} on {args.port}") as progress:
        result = install_image(
            args.port, image, serial=args.serial, timeout=args.timeout, progress=progress
        )
    if args.json:
        ui.print_json(result.as_json())
    else:
        print(
            f"{result.serial}: firmware {result.version} (counter {result.counter}) installed "
            f"in slot {result.slot} on {result.port} ({result.platform}, {result.files} files, "
            f"{result.bytes} bytes) and running, in {result.seconds:.1f} s",
            flush=True,
        )
    return 0


def run_update(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    require_signature(image, None, str(args.image))  # before any drive is touched
    addresses = parse_drives(args.drives)
    if not addresses:
        raise UsageError("no drives given (--drives, $SEALKEEP_DRIVES) and none found.")
    owners = _Owners(args)
    lock = threading.Lock()

    def one(address: DriveAddress) -> UpdateResult | SealkeepError:
        try:
            result = update_drive(
                address.port,
                image,
                owners,
                serial=address.serial,
                timeout=args.timeout,
                force=args.force,
            )
        except SealkeepError as exc:
            return exc
        if not args.json and result.already:
            with lock:
                print(
                    f"{result.serial}: already runs firmware {result.version} (counter "
                    f"{result.counter}): nothing sent (--force reinstalls it)",
                    flush=True,
                )
        elif not args.json:
            with lock:
                print(
                    f"{result.serial}: firmware {result.old_version} -> {result.version} "
                    f"(counter {result.counter}, slot {result.slot}), confirmed in "
                    f"{result.seconds:.1f} s",
                    flush=True,
                )
        return result

    try:
        with ThreadPoolExecutor(max_workers=min(8, len(addresses))) as pool:
            outcomes = list(pool.map(one, addresses))
    finally:
        owners.close()
    failed = [(a, o) for a, o in zip(addresses, outcomes, strict=True) if not _done(o)]
    if args.json:
        ui.print_json(
            {
                "image": {"version": image.version, "counter": image.counter},
                "drives": [
                    o.as_json()
                    if isinstance(o, UpdateResult)
                    else {"port": a.port, "serial": a.serial, "error": ui.one_line(str(o))}
                    for a, o in zip(addresses, outcomes, strict=True)
                ],
            }
        )
    for _, outcome in failed:
        ui.error(ui.one_line(str(outcome)))  # it names the drive
    if not failed:
        return 0
    codes = {o.exit_code for _, o in failed if isinstance(o, SealkeepError)}
    if not args.json:
        print(f"{len(failed)} of {len(addresses)} drive(s) not updated", file=sys.stderr)
    return codes.pop() if len(codes) == 1 else EXIT_GENERIC


def _done(outcome: UpdateResult | SealkeepError) -> bool:
    return isinstance(outcome, UpdateResult)
