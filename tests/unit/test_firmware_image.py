"""Firmware images on the host: vendor key, build, parse, signature, inspect, and the
constants the drive's update modules hold by number."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from json_schemas import check
from sealkeep import cli, firmware_update
from sealkeep import firmware as fw
from sealkeep.drivespec import UsageError
from sealkeep.protocol import errors, messages

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    fw.keygen(d / "vendor.key")
    fw.keygen(d / "other.key")
    return {"vendor": d / "vendor.key", "other": d / "other.key"}


@pytest.fixture(scope="module")
def image_bytes(keys: dict[str, Path]) -> bytes:
    return fw.build_image("2.1.0", 7, fw.load_signing_key(keys["vendor"]))


def test_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    path = tmp_path / "v.key"
    public = fw.keygen(path)
    assert len(public) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert fw.public_key_of(fw.load_signing_key(path)) == public
    with pytest.raises(UsageError, match="never overwritten"):
        fw.keygen(path)
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(UsageError, match="not a vendor key"):
        fw.load_signing_key(tmp_path / "junk.key")


def test_keygen_never_touches_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "v.key"
    path.write_bytes(b"someone else's file")
    with pytest.raises(UsageError, match="never overwritten"):
        fw.keygen(path)
    assert path.read_bytes() == b"someone else's file"
    link = tmp_path / "link.key"  # a link planted where the key will go is not followed
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError):
        fw.keygen(link)
    assert not (tmp_path / "elsewhere").exists()


def test_an_encrypted_vendor_key_needs_its_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "v.key"
    public = fw.keygen(path, passphrase=b"a long vendor passphrase")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(UsageError, match="encrypted: give its passphrase"):
        fw.load_signing_key(path)
    with pytest.raises(UsageError, match="passphrase is wrong"):
        fw.load_signing_key(path, b"not it")
    key = fw.load_signing_key(path, b"a long vendor passphrase")
    assert fw.public_key_of(key) == public


def test_cli_keygen_refuses_to_write_a_plain_key_unasked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "v.key"
    code, _, err = run_cli(capsys, "firmware", "keygen", "--out", str(key))
    assert code == 2 and "--passphrase-file" in err and not key.exists()
    secret = tmp_path / "pass.txt"
    secret.write_text("a long vendor passphrase\n")
    code, _, _ = run_cli(
        capsys, "firmware", "keygen", "--out", str(key), "--passphrase-file", str(secret)
    )
    assert code == 0
    image = tmp_path / "fw.img"
    args = ["firmware", "build", "--version", "1.0.0", "--counter", "1", "--key", str(key)]
    code, _, err = run_cli(capsys, *args, "--out", str(image))
    assert code == 2 and "passphrase" in err and not image.exists()
    code, _, _ = run_cli(capsys, *args, "--passphrase-file", str(secret), "--out", str(image))
    assert code == 0 and fw.parse_image(image.read_bytes(), "built").signature_ok()


def test_build_holds_every_firmware_module_compiled(
    image_bytes: bytes, keys: dict[str, Path]
) -> None:
    image = fw.parse_image(image_bytes)
    assert (image.version, image.counter) == ("2.1.0", 7)
    vendor = fw.public_key_of(fw.load_signing_key(keys["vendor"]))
    assert image.vendor_key == vendor
    paths = [f.path for f in image.files]
    assert paths == sorted(paths)
    sources = {p.stem for p in (REPO / "device" / "fw").glob("*.py")}
    assert {p[3:-4] for p in paths if p.startswith("fw/")} == sources
    protocol = {p.stem for p in (REPO / "protocol").glob("*.py")}
    assert {p[9:-4] for p in paths if p.startswith("protocol/")} == protocol
    assert "main.py" in paths and "board.mpy" in paths
    for entry in image.files:
        data = image.file_bytes(entry)
        if entry.path.endswith(".mpy"):
            assert data[:1] == b"M"  # MicroPython bytecode
    # The version module carries the version, counter and the vendor key the drive trusts.
    version = next(f for f in image.files if f.path == "fw/version.mpy")
    assert vendor in image.file_bytes(version)
    assert b"2.1.0" in image.file_bytes(version)
    manifest = cbor2.loads(image.manifest)
    assert manifest[1] == "2.1.0" and manifest[2] == 7 and manifest[4] == vendor
    assert [e[0] for e in manifest[3]] == paths


def test_signature_is_checked_against_the_right_key(
    image_bytes: bytes, keys: dict[str, Path]
) -> None:
    image = fw.parse_image(image_bytes)
    assert image.signature_ok()
    other = fw.public_key_of(fw.load_signing_key(keys["other"]))
    assert not image.signature_ok(other)
    with pytest.raises(fw.SignatureError, match="another vendor key"):
        fw.require_signature(image, other, "it")
    forged = replace(image, signature=bytes(64))
    with pytest.raises(fw.SignatureError, match="does not verify"):
        fw.require_signature(forged, None, "it")
    # A manifest changed after signing (here: its counter) no longer verifies.
    doc = cbor2.loads(image.manifest)
    doc[2] = 99
    changed = replace(image, manifest=cbor2.dumps(doc, canonical=True))
    assert not changed.signature_ok()


def flip(data: bytes, at: int) -> bytes:
    raw = bytearray(data)
    raw[at] ^= 0x40
    return bytes(raw)


def test_damaged_images_are_named(image_bytes: bytes) -> None:
    image = fw.parse_image(image_bytes)
    last = image.files[-1]
    cases = [
        (image_bytes[:5], "bytes long"),
        (b"XXXX" + image_bytes[4:], "SKFW"),
        (image_bytes[:4] + b"\x02" + image_bytes[5:], "its format is 2"),
        (image_bytes[:100], "truncated before its files"),
        (image_bytes[:-1], f"truncated in {last.path}"),
        (image_bytes + b"\x00", "1 bytes follow"),
        (flip(image_bytes, last.offset + 3), f"{last.path} does not match its SHA-256"),
    ]
    for data, reason in cases:
        with pytest.raises(fw.ImageError, match=re.escape(reason)):
            fw.parse_image(data)


def test_bad_version_and_counter_are_refused(keys: dict[str, Path]) -> None:
    key = fw.load_signing_key(keys["vendor"])
    with pytest.raises(UsageError, match="bad version"):
        fw.build_image("1.0 beta", 1, key)
    with pytest.raises(UsageError, match="security counter"):
        fw.build_image("1.0", -1, key)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_keygen_build_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "vendor.key"
    code, out, _ = run_cli(
        capsys, "firmware", "keygen", "--out", str(key), "--no-passphrase", "--json"
    )
    assert code == 0
    public = check(["firmware", "keygen"], out)["public_key"]
    img = tmp_path / "fw.img"
    code, out, err = run_cli(
        capsys, "firmware", "build", "--version", "3.0.0", "--counter", "4", "--key", str(key),
        "--out", str(img),
    )  # fmt: skip
    assert code == 0, err
    assert "firmware 3.0.0, counter 4" in out and public in out
    code, out, err = run_cli(capsys, "firmware", "inspect", str(img), "--json")
    assert code == 0
    doc: dict[str, Any] = check(["firmware", "inspect"], out)
    assert doc["signature_valid"] is True and doc["key_trusted"] is False
    # Its own key proves only that it is intact: said, and a trusted key asked for.
    assert "not who made it" in err and "--key" in err
    assert (doc["version"], doc["counter"], doc["vendor_key"]) == ("3.0.0", 4, public)
    assert doc["size"] == img.stat().st_size
    assert any(f["path"] == "fw/update.mpy" for f in doc["files"])
    code, out, err = run_cli(capsys, "firmware", "inspect", str(img), "--key", public)
    assert code == 0 and "valid" in out and "fw/link.mpy" in out and "warning" not in err

    # Checked against another vendor's key: refused, exit 6 (integrity).
    other = tmp_path / "other.key"
    fw.keygen(other)
    code, out, err = run_cli(capsys, "firmware", "inspect", str(img), "--key", str(other))
    assert code == 6 and "INVALID" in out and "another vendor key" in err
    # A damaged image: a clear one-line error, exit 2 (bad input file), no traceback.
    damaged = tmp_path / "damaged.img"
    damaged.write_bytes(img.read_bytes()[:-10])
    code, _, err = run_cli(capsys, "firmware", "inspect", str(damaged))
    assert code == 2 and err.startswith("error: ") and "truncated" in err
    assert "Traceback" not in err
    code, _, err = run_cli(
        capsys, "firmware", "build", "--version", "1", "--counter", "1", "--key",
        str(tmp_path / "missing.key"), "--out", str(tmp_path / "x.img"),
    )  # fmt: skip
    assert code == 2 and "cannot read the vendor key" in err
    assert not (tmp_path / "x.img").exists()


def consts(path: Path) -> dict[str, int]:
    found = re.findall(r"^_([A-Z_]+) = const\((0x[0-9A-F]+|\d+)\)", path.read_text(), re.M)
    return {name: int(value, 0) for name, value in found}


def test_drive_constants_agree_with_the_protocol() -> None:
    """The drive's update modules name ids and codes as compile-time constants (a name
    costs a drive heap): they must be protocol.messages' and protocol.errors'."""
    steps = {name.upper(): i for i, name in enumerate(messages.FIRMWARE_STEPS)}
    checked = 0
    for module in ("update.py", "install.py"):
        for name, value in consts(REPO / "device" / "fw" / module).items():
            if name in steps:
                assert value == steps[name], name
            elif hasattr(messages, name):
                assert value == getattr(messages, name), name
            elif name in errors.NAMES.values():
                assert value == getattr(errors, name), name
            else:
                assert name in {"HEAD", "MAX_IMAGE"}, name
                continue
            checked += 1
    assert checked >= 20
    update = (REPO / "device" / "fw" / "update.py").read_text()
    assert (
        f'"{firmware_update.IMAGE_OBJECT}"' in update
        and f'/obj/{firmware_update.CONFIRM_OBJECT}"' in update
    )
    assert firmware_update.IMAGE_OBJECT in (REPO / "device" / "board.py").read_text()
    wire = (REPO / "device" / "fw" / "wire.py").read_text()
    assert "if step == 4:" in wire and "if step == 5:" in wire and "return 0xA0, reply" in wire
    assert messages.FIRMWARE_STEPS[4:6] == ("reboot", "status")
    assert messages.FIRMWARE | 0x80 == messages.FIRMWARE_R == 0xA0
    main = (REPO / "device" / "main.py").read_text()
    assert f"link.ROUTES[0x{messages.FIRMWARE:02x}]" in main
    assert messages.REQUESTS[messages.FIRMWARE][1][0] == "step"
    # The signing label is the host's.
    install = (REPO / "device" / "fw" / "install.py").read_text()
    assert 'LABEL = b"sealkeep firmware image 1\\x00"' in install
    assert fw.SIGN_LABEL == b"sealkeep firmware image 1\x00"


def test_firmware_status_from_reply() -> None:
    built_in = firmware_update.status_from_reply({1: "1.0.0", 2: 0})
    assert built_in.active is None and built_in.state == "built-in" and built_in.counter == 0
    assert built_in.vendor_key is None
    status = firmware_update.status_from_reply(
        {1: "1.1.0", 2: 2, 3: "b a 2 1", 4: "1.0.0 1", 5: "1.1.0 2", 6: "0 installed in b"}
    )
    assert (status.active, status.state, status.floor, status.counter) == ("b", "trial", 1, 2)
    assert status.inactive == firmware_update.SlotInfo("a", "1.0.0", 1)
    assert status.result == (0, "installed in b")
    refused = firmware_update.status_from_reply(
        {1: "1.0.0", 2: 1, 3: "a - 0 1", 6: "36 counter 0 below 1"}
    )
    assert refused.inactive == firmware_update.SlotInfo("b", None, None)
    assert refused.result == (36, "counter 0 below 1")
    assert refused.as_json()["last_install"] == {"code": 36, "text": "counter 0 below 1"}


def test_write_slot_lays_out_a_drive_flash(image_bytes: bytes, tmp_path: Path) -> None:
    image = fw.parse_image(image_bytes)
    fw.write_slot(tmp_path, image)
    assert (tmp_path / "slot" / "record").read_text().split() == ["a", "-", "0", "7"]
    assert (tmp_path / "slot" / "a.info").read_text() == "2.1.0 7"
    for entry in image.files:
        assert (tmp_path / "slot" / "a" / entry.path).read_bytes() == image.file_bytes(entry)
    assert (tmp_path / "main.py").read_bytes() == (REPO / "device" / "main.py").read_bytes()
    assert not [p for p in tmp_path.rglob("*.new")]
    assert os.access(tmp_path / "slot" / "a" / "fw" / "link.mpy", os.R_OK)


def test_ed25519_signing_here_verifies_there() -> None:
    """The message the drive checks is the one the host signs (label + SHA-256)."""
    key = Ed25519PrivateKey.generate()
    manifest = b"\xa1\x01\x61x"
    sig = key.sign(fw.signed_message(manifest))
    key.public_key().verify(sig, fw.SIGN_LABEL + hashlib.sha256(manifest).digest())
