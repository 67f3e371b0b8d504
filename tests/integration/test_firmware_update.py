"""Firmware update against emulated drives running signed images: A/B slots, trial boot,
confirm, revert, and every bad input (bad signature, another vendor's key, a downgrade,
a truncated or altered image, a transfer or an install cut short, a trial firmware that
never confirms). The drive itself checks each image; the host library is used without
its own checks where a test needs a bad image to reach the drive."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest
from json_schemas import check
from sealkeep import cli, firmware_update
from sealkeep import firmware as fw
from sealkeep.client import DriveClient, Hello, Role
from sealkeep.drivespec import UsageError
from sealkeep.emulator import Emulator
from sealkeep.errors import NotAuthenticated, WrongState
from sealkeep.protocol import errors, messages
from sealkeep.transport import open_transport

pytestmark = pytest.mark.integration

OWNER = bytes(range(32))
CUSTODIAN = bytes(range(32, 64))
KDF = {"alg": "argon2id", "t": 3, "m": 65536, "p": 1}
Connect = Callable[..., DriveClient]
StartDrives = Callable[..., Emulator]


class Images:
    def __init__(self, d: Path) -> None:
        self.dir = d
        fw.keygen(d / "vendor.key")
        fw.keygen(d / "other.key")
        vendor = fw.load_signing_key(d / "vendor.key")
        other = fw.load_signing_key(d / "other.key")
        self.paths: dict[str, Path] = {}
        for name, version, counter, key in (
            ("v0", "0.9.0", 0, vendor),
            ("v1", "1.0.0", 1, vendor),
            ("v2", "1.1.0", 2, vendor),
            ("other", "9.0.0", 5, other),
        ):
            path = d / f"{name}.img"
            path.write_bytes(fw.build_image(version, counter, key))
            self.paths[name] = path

    def __getitem__(self, name: str) -> fw.FirmwareImage:
        return fw.load_image(self.paths[name])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return Images(tmp_path_factory.mktemp("images"))


def blank(hello: Hello) -> bytes | None:
    return None


def owner(hello: Hello) -> bytes | None:
    return OWNER


def status(connect: Connect, emu: Emulator) -> firmware_update.FirmwareStatus:
    client = connect(emu.drives[0])
    try:
        return firmware_update.firmware_status(client)
    finally:
        client.close()


def claim_and_store(connect: Connect, emu: Emulator) -> bytes:
    """Claim drive 0 with known credentials and store an object; its bytes."""
    client = connect(emu.drives[0])
    client.claim(OWNER, CUSTODIAN, bytes(16), KDF, b"\x5e" * 16)
    client.authenticate(Role.OWNER, OWNER)
    data = hashlib.sha256(b"kept").digest() * 300
    client.put("kept.bin", data)
    client.close()
    return data


def read_back(connect: Connect, emu: Emulator) -> bytes:
    client = connect(emu.drives[0])
    client.authenticate(Role.OWNER, OWNER)
    data = client.get("kept.bin")
    client.close()
    return data


def test_update_confirms_the_new_slot_and_keeps_data(
    images: Images, emulated_drives: StartDrives, connect: Connect
) -> None:
    emu = emulated_drives(1, image=images.paths["v1"])
    before = status(connect, emu)
    assert (before.version, before.counter, before.active, before.state) == (
        "1.0.0",
        1,
        "a",
        "confirmed",
    )
    data = claim_and_store(connect, emu)
    result = firmware_update.update_drive(emu.drives[0].port, images["v2"], owner)
    assert (result.old_version, result.version, result.slot, result.resumed_from) == (
        "1.0.0",
        "1.1.0",
        "b",
        0,
    )
    after = status(connect, emu)
    assert (after.version, after.counter, after.active, after.state, after.floor) == (
        "1.1.0",
        2,
        "b",
        "confirmed",
        2,
    )
    assert after.inactive == firmware_update.SlotInfo("a", "1.0.0", 1)
    assert read_back(connect, emu) == data  # objects and credentials survive
    # and back to A with the next image of the same counter
    same = firmware_update.update_drive(emu.drives[0].port, images["v2"], owner)
    assert same.already and same.slot == "b"  # the very firmware it runs: nothing sent
    again = firmware_update.update_drive(emu.drives[0].port, images["v2"], owner, force=True)
    assert again.slot == "a" and not again.already
    assert read_back(connect, emu) == data


def refused(
    emu: Emulator, image: fw.FirmwareImage, code: int, credential: fw.CredentialFor = blank
) -> firmware_update.FirmwareRefused:
    with pytest.raises(firmware_update.FirmwareRefused) as exc:
        # force: some of these claim the very version the drive runs, and must be sent
        firmware_update.update_drive(emu.drives[0].port, image, credential, force=True)
    assert exc.value.code == code, str(exc.value)
    assert "keeps running its previous firmware" in str(exc.value)
    return exc.value


def still_v2(connect: Connect, emu: Emulator) -> None:
    now = status(connect, emu)
    assert (now.version, now.active, now.state) == ("1.1.0", "a", "confirmed")


def test_bad_images_are_refused_by_the_drive(
    images: Images, emulated_drives: StartDrives, connect: Connect
) -> None:
    emu = emulated_drives(1, image=images.paths["v2"])
    data = claim_and_store(connect, emu)
    v2 = images["v2"]

    # a downgrade: counter 1 below the drive's 2
    exc = refused(emu, images["v1"], errors.DOWNGRADE, owner)
    assert exc.exit_code == 5 and "no downgrades" in str(exc)
    still_v2(connect, emu)

    # another vendor's key
    exc = refused(emu, images["other"], errors.WRONG_VENDOR, owner)
    assert exc.exit_code == 6
    still_v2(connect, emu)

    # a signature that does not verify (the bytes of the signature altered)
    forged = replace(v2, data=flip(v2.data, fw.HEADER.size + len(v2.manifest) + 5))
    refused(emu, forged, errors.BAD_SIGNATURE, owner)
    still_v2(connect, emu)

    # a manifest changed after signing: the counter raised to pass a floor
    doc = cbor2.loads(v2.manifest)
    doc[2] = 50
    manifest = cbor2.dumps(doc, canonical=True)
    head = fw.HEADER.pack(fw.MAGIC, fw.FORMAT, len(manifest))
    start = fw.HEADER.size + len(v2.manifest)
    raised = replace(v2, data=head + manifest + v2.data[start:])
    refused(emu, raised, errors.BAD_SIGNATURE, owner)
    still_v2(connect, emu)

    # a file altered inside a correctly signed image
    last = v2.files[-1]
    altered = replace(v2, data=flip(v2.data, last.offset + 10))
    exc = refused(emu, altered, errors.BAD_IMAGE, owner)
    assert last.path in str(exc)
    still_v2(connect, emu)

    # a truncated image
    refused(emu, replace(v2, data=v2.data[:-200]), errors.BAD_IMAGE, owner)
    still_v2(connect, emu)

    assert read_back(connect, emu) == data
    # and it still takes a good one
    assert firmware_update.update_drive(emu.drives[0].port, v2, owner, force=True).slot == "b"


def flip(data: bytes, at: int) -> bytes:
    raw = bytearray(data)
    raw[at] ^= 0x01
    return bytes(raw)


def start_transfer(client: DriveClient, image: fw.FirmwareImage, upto: int) -> None:
    r = client.call(messages.FIRMWARE, {1: 0, 2: image.size, 3: image.sha256}, messages.PUT_READY)
    offset = r[1]
    while offset < upto:
        chunk = image.data[offset : min(upto, offset + 2000)]
        r = client.call(messages.FIRMWARE, {1: 1, 2: offset, 3: chunk}, messages.PUT_ACK)
        offset = r[1]


def test_a_transfer_cut_short_resumes(
    images: Images, emulated_drives: StartDrives, connect: Connect
) -> None:
    emu = emulated_drives(1, image=images.paths["v1"])
    v2 = images["v2"]
    client = connect(emu.drives[0])
    start_transfer(client, v2, v2.size // 2)
    client.close()
    emu.kill(0, restart=True)  # power cut mid-transfer
    assert status(connect, emu).version == "1.0.0"
    result = firmware_update.update_drive(emu.drives[0].port, v2, blank)
    assert 0 < result.resumed_from <= v2.size // 2
    assert status(connect, emu).version == "1.1.0"


def test_an_install_cut_short_runs_again(
    images: Images, emulated_drives: StartDrives, connect: Connect
) -> None:
    """A power cut while the drive unpacks leaves a half-written slot B and the image
    still waiting: the next boot installs it again, from the start."""
    emu = emulated_drives(1, image=images.paths["v1"])
    v2 = images["v2"]
    emu.kill(0)
    flash = emu.drives[0].flash
    tree = flash / "slot" / "b" / "fw"
    tree.mkdir(parents=True)
    (tree / "link.mpy").write_bytes(b"half a file")
    # the image as the store keeps a committed object: SHA-256, size, bytes
    obj = flash / "obj" / firmware_update.IMAGE_OBJECT
    obj.parent.mkdir(exist_ok=True)
    obj.write_bytes(v2.sha256 + v2.size.to_bytes(8, "big") + v2.data)
    emu.restart(0)
    now = status_when(connect, emu, lambda s: s.state == "trial")
    assert (now.version, now.active) == ("1.1.0", "b")
    assert now.result is not None and now.result[0] == 0
    assert not obj.exists()
    client = connect(emu.drives[0])
    client.call(messages.FIRMWARE, {1: 3}, messages.OK)  # confirm
    client.close()
    assert status_when(connect, emu, lambda s: s.state == "confirmed").active == "b"


def status_when(
    connect: Connect, emu: Emulator, ok: Callable[[firmware_update.FirmwareStatus], bool]
) -> firmware_update.FirmwareStatus:
    """The drive's status once ok() holds (it restarts after some steps)."""
    last = None
    for _ in range(50):
        try:
            last = status(connect, emu)
        except Exception:  # restarting: no answer yet
            last = None
        if last is not None and ok(last):
            return last
        emu.wait_ready(0)
    raise AssertionError(f"the drive never reached the state wanted: {last}")


def install_unconfirmed(connect: Connect, emu: Emulator, image: fw.FirmwareImage) -> None:
    client = connect(emu.drives[0])
    start_transfer(client, image, image.size)
    client.call(messages.FIRMWARE, {1: 2}, messages.OK)
    client.close()


def test_a_trial_that_is_never_confirmed_reverts(
    images: Images, emulated_drives: StartDrives, connect: Connect
) -> None:
    emu = emulated_drives(1, image=images.paths["v1"])
    install_unconfirmed(connect, emu, images["v2"])
    trial = status_when(connect, emu, lambda s: s.state == "trial")
    assert (trial.version, trial.active, trial.floor) == ("1.1.0", "b", 1)
    emu.restart(0)  # restarted before anyone confirmed it: back to A
    back = status_when(connect, emu, lambda s: s.state == "confirmed")
    assert (back.version, back.active, back.counter) == ("1.0.0", "a", 1)
    assert back.inactive == firmware_update.SlotInfo("b", "1.1.0", 2)
    # the floor did not rise: the same image can be installed again, properly this time
    assert firmware_update.update_drive(emu.drives[0].port, images["v2"], blank).slot == "b"


def test_a_trial_that_fails_its_self_test_goes_back(
    images: Images, emulated_drives: StartDrives, connect: Connect
) -> None:
    emu = emulated_drives(1, image=images.paths["v1"])
    data = claim_and_store(connect, emu)
    calls: list[str] = []

    def credential(hello: Hello) -> bytes | None:
        calls.append(hello.firmware)
        return OWNER if len(calls) == 1 else bytes(32)  # the self-test's is wrong

    with pytest.raises(firmware_update.TrialFailed, match="failed its self-test") as failed:
        firmware_update.update_drive(emu.drives[0].port, images["v2"], credential)
    assert calls == ["1.0.0", "1.1.0"]
    # Without the owner's session nobody may restart a drive on trial (else anyone on the
    # line could keep it on old firmware): the next power cycle sends it back.
    assert "when it restarts" in str(failed.value)
    client = connect(emu.drives[0])
    with pytest.raises(NotAuthenticated):
        client.call(messages.FIRMWARE, {1: 4}, messages.OK)
    client.close()
    emu.kill(0, restart=True)
    back = status_when(connect, emu, lambda s: s.state == "confirmed")
    assert (back.version, back.active) == ("1.0.0", "a")
    assert read_back(connect, emu) == data


def test_who_may_update(images: Images, emulated_drives: StartDrives, connect: Connect) -> None:
    emu = emulated_drives(1, image=images.paths["v1"])
    claim_and_store(connect, emu)
    client = connect(emu.drives[0])
    v2 = images["v2"]
    with pytest.raises(NotAuthenticated):
        client.call(messages.FIRMWARE, {1: 0, 2: v2.size, 3: v2.sha256}, messages.PUT_READY)
    client.close()
    with pytest.raises(UsageError, match="needs an owner session"):
        firmware_update.update_drive(emu.drives[0].port, v2, blank)
    assert status(connect, emu).version == "1.0.0"


def test_the_source_tree_firmware_takes_no_update(
    images: Images, emulated_drives: StartDrives
) -> None:
    emu = emulated_drives(1)
    with pytest.raises(firmware_update.FirmwareRefused, match="trusts no vendor key"):
        firmware_update.update_drive(emu.drives[0].port, images["v2"], blank)
    # and the drive itself refuses an image, whoever sends it
    client = DriveClient(open_transport(emu.drives[0].port), timeout=2)
    v2 = images["v2"]
    with pytest.raises(WrongState, match="without a vendor key"):
        client.call(messages.FIRMWARE, {1: 0, 2: v2.size, 3: v2.sha256}, messages.PUT_READY)
    client.close()


def test_a_source_tree_drive_is_no_dead_end(
    images: Images, emulated_drives: StartDrives, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither update nor install takes a development drive, and each says what to use."""
    emu = emulated_drives(1)
    port = emu.drives[0].port
    code = cli.main(["firmware", "update", "--drives", port, str(images.paths["v2"])])
    update_says = capsys.readouterr().err
    assert code != 0 and "development build" in update_says
    assert "sealkeep emulate --firmware IMAGE" in update_says
    code = cli.main(["firmware", "install", "--port", port, str(images.paths["v2"])])
    install_says = capsys.readouterr().err
    assert code == 5 and "development build" in install_says
    assert "no install" in install_says and "no update" in install_says
    assert "update it with" not in install_says  # no pointer back to the refusing command


def test_cli_update_and_drives(
    images: Images,
    emulated_drives: StartDrives,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    emu = emulated_drives(2, image=images.paths["v1"])
    spec = f"@{emu.drives_file}"
    code = cli.main(["drives", "--drives", spec, "--json"])
    rows = check(["drives"], capsys.readouterr().out)["drives"]
    assert code == 0
    assert [
        (r["firmware"], r["firmware_counter"], r["firmware_slot"], r["boot"]) for r in rows
    ] == [("1.0.0", 1, "a", "confirmed")] * 2
    assert all(r["inactive_firmware"] is None for r in rows)

    code = cli.main(["firmware", "update", "--drives", spec, str(images.paths["v2"]), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    done = check(["firmware", "update"], out)["drives"]
    assert [(d["from"], d["firmware"], d["firmware_slot"]) for d in done] == [
        ("1.0.0", "1.1.0", "b")
    ] * 2

    # The same image again: nothing is sent, and it is said; --force sends it.
    code = cli.main(["firmware", "update", "--drives", spec, str(images.paths["v2"]), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    again = check(["firmware", "update"], out)["drives"]
    assert [(d["already"], d["firmware_slot"]) for d in again] == [(True, "b")] * 2
    code = cli.main(["firmware", "update", "--drives", spec, str(images.paths["v2"])])
    out, _ = capsys.readouterr()
    assert code == 0 and out.count("already runs firmware 1.1.0") == 2
    code = cli.main(
        ["firmware", "update", "--drives", spec, str(images.paths["v2"]), "--force", "--json"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    forced = check(["firmware", "update"], out)["drives"]
    assert [(d["already"], d["firmware_slot"]) for d in forced] == [(False, "a")] * 2

    code = cli.main(["drives", "--drives", spec])
    out, _ = capsys.readouterr()
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[-2:] == ["ACTIVE", "INACTIVE"]
    assert all("a: counter 2" in line and "b: 1.1.0, counter 2" in line for line in lines)

    # A downgrade through the command line: a one-line error per drive, exit 5.
    code = cli.main(["firmware", "update", "--drives", spec, str(images.paths["v0"])])
    out, err = capsys.readouterr()
    assert code == 5
    assert err.count("refused the image") == 2 and "Traceback" not in err
    # A damaged image file never reaches a drive: exit 2.
    damaged = tmp_path / "damaged.img"
    damaged.write_bytes(images.paths["v2"].read_bytes()[:-1])
    code = cli.main(["firmware", "update", "--drives", spec, str(damaged)])
    assert code == 2 and "truncated" in capsys.readouterr().err


def test_a_signed_image_that_cannot_start_is_sent_back(
    images: Images, emulated_drives: StartDrives, connect: Connect, tmp_path: Path
) -> None:
    """A vendor-signed image whose firmware fails at start: its trial ends at once and
    the drive goes back to the slot it ran, with its data."""
    root = fw.source_root()
    tree = tmp_path / "src"
    for part in ("device", "protocol"):
        shutil.copytree(root / part, tree / part, ignore=shutil.ignore_patterns("build"))
    link = tree / "device" / "fw" / "link.py"
    link.write_text(link.read_text() + "\nraise RuntimeError('this build cannot start')\n")
    key = fw.load_signing_key(images.dir / "vendor.key")
    broken = fw.parse_image(fw.build_image("6.6.6", 6, key, root=tree))
    emu = emulated_drives(1, image=images.paths["v1"])
    data = claim_and_store(connect, emu)
    with pytest.raises(firmware_update.TrialFailed, match="did not start the new firmware"):
        firmware_update.update_drive(emu.drives[0].port, broken, owner)
    back = status_when(connect, emu, lambda s: s.state == "confirmed")
    assert (back.version, back.active, back.floor) == ("1.0.0", "a", 1)
    assert back.inactive == firmware_update.SlotInfo("b", "6.6.6", 6)
    assert read_back(connect, emu) == data
    assert "this build cannot start" in emu.drives[0].log.read_text()
