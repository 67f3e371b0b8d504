"""A technician's first install: `sealkeep firmware install` on emulated blank boards
(stock MicroPython REPLs, `sealkeep emulate --blank`), through the raw REPL with mpremote:
the board boots into the firmware with the provisioned serial, an install cut short leaves
it blank and runs again, and a board that is already a drive, a bad image or a bad serial
is refused without touching the board."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from json_schemas import check
from sealkeep import cli, firmware_update
from sealkeep import firmware as fw
from sealkeep.client import DriveClient, Role
from sealkeep.emulator import Emulator
from sealkeep.install import BoardError, install_image
from sealkeep.transport import open_transport

pytestmark = pytest.mark.integration

OWNER = bytes(range(32))
CUSTODIAN = bytes(range(32, 64))
KDF = {"alg": "argon2id", "t": 3, "m": 65536, "p": 1}
StartDrives = Callable[..., Emulator]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("install-images")
    fw.keygen(d / "vendor.key")
    key = fw.load_signing_key(d / "vendor.key")
    paths = {}
    for name, version, counter in (("v1", "1.0.0", 1), ("v2", "1.1.0", 2)):
        paths[name] = d / f"{name}.img"
        paths[name].write_bytes(fw.build_image(version, counter, key))
    return paths


def hello_of(port: str) -> tuple[str, firmware_update.FirmwareStatus]:
    client = DriveClient(open_transport(port), timeout=3.0)
    try:
        return client.hello().serial, firmware_update.firmware_status(client)
    finally:
        client.close()


def drives_file(emu: Emulator) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads(emu.drives_file.read_text())["drives"]
    return entries


def test_install_boots_a_blank_board_into_the_firmware(
    images: dict[str, Path],
    emulated_drives: StartDrives,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emu = emulated_drives(2, blank=True)
    assert [d.blank for d in emu.drives] == [True, True]
    port = emu.drives[0].port
    argv = ["firmware", "install", "--port", port, str(images["v1"]), "--serial", "SK-TECH0001"]
    assert cli.main([*argv, "--json"]) == 0
    report = check(argv, capsys.readouterr().out)
    assert report["serial"] == "SK-TECH0001"
    assert (report["firmware"], report["counter"], report["firmware_slot"]) == ("1.0.0", 1, "a")
    assert report["platform"] == "linux"

    serial, status = hello_of(port)
    assert serial == "SK-TECH0001"
    assert (status.version, status.active, status.state) == ("1.0.0", "a", "confirmed")
    assert status.floor == 1
    assert emu.drives[0].blank is False and emu.drives[0].serial == "SK-TECH0001"
    assert drives_file(emu)[0]["serial"] == "SK-TECH0001"
    assert drives_file(emu)[1]["blank"] is True  # the other board is untouched

    # Without --serial the firmware makes one up at its first boot, and keeps it.
    assert cli.main(["firmware", "install", "--port", emu.drives[1].port, str(images["v1"])]) == 0
    assert "installed in slot a" in capsys.readouterr().out
    made_up = emu.drives[1].serial
    assert made_up.startswith("SK-") and made_up != "SK-TECH0001"
    emu.restart(1)
    assert hello_of(emu.drives[1].port)[0] == made_up


def test_a_board_that_is_a_drive_is_left_alone(
    images: dict[str, Path],
    emulated_drives: StartDrives,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emu = emulated_drives(1, blank=True)
    port = emu.drives[0].port
    install_image(port, fw.load_image(images["v1"]), serial="SK-TECH0002")
    client = DriveClient(open_transport(port), timeout=3.0)
    client.claim(OWNER, CUSTODIAN, bytes(16), KDF, b"\x5e" * 16)
    client.authenticate(Role.OWNER, OWNER)
    data = hashlib.sha256(b"kept").digest() * 100
    client.put("kept.bin", data)
    client.close()

    code = cli.main(["firmware", "install", "--port", port, str(images["v2"])])
    err = capsys.readouterr().err
    assert code == 5
    assert "SK-TECH0002" in err and "already runs sealkeep firmware 1.0.0" in err
    assert "sealkeep firmware update" in err and "Traceback" not in err

    # Untouched: the same firmware, its data, and it still takes the update.
    client = DriveClient(open_transport(port), timeout=3.0)
    client.authenticate(Role.OWNER, OWNER)
    assert client.get("kept.bin") == data
    client.close()
    result = firmware_update.update_drive(port, fw.load_image(images["v2"]), lambda hello: OWNER)
    assert (result.old_version, result.version, result.slot) == ("1.0.0", "1.1.0", "b")
    client = DriveClient(open_transport(port), timeout=3.0)
    client.authenticate(Role.OWNER, OWNER)
    assert client.get("kept.bin") == data
    client.close()


def test_an_install_cut_short_leaves_the_board_blank_and_runs_again(
    images: dict[str, Path], emulated_drives: StartDrives
) -> None:
    emu = emulated_drives(1, blank=True)
    port = emu.drives[0].port
    image = fw.load_image(images["v1"])
    cut = False

    def power_cut(done: int, total: int) -> None:
        nonlocal cut
        if not cut and done > total // 2:
            cut = True
            emu.kill(0, restart=True)

    with pytest.raises(BoardError) as failure:
        install_image(port, image, serial="SK-TECH0003", timeout=2.0, progress=power_cut)
    assert cut
    assert "still blank: run the install again" in str(failure.value)
    assert emu.drives[0].blank  # it came back as the REPL, with half a slot on it
    assert (emu.drives[0].flash / "slot" / "a").is_dir()
    assert not (emu.drives[0].flash / "main.py").exists()

    result = install_image(port, image, serial="SK-TECH0003")
    assert (result.serial, result.version) == ("SK-TECH0003", "1.0.0")
    assert hello_of(port)[1].state == "confirmed"


def test_bad_images_serials_and_ports_are_refused_before_the_board_changes(
    images: dict[str, Path],
    emulated_drives: StartDrives,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emu = emulated_drives(1, blank=True)
    port = emu.drives[0].port
    forged = bytearray(images["v1"].read_bytes())
    forged[-1] ^= 0x01  # a flipped bit in the last file
    (tmp_path / "forged.img").write_bytes(forged)
    resigned = fw.parse_image(bytes(images["v1"].read_bytes()))
    bad_signature = bytearray(resigned.data)
    at = resigned.data.index(resigned.signature)
    bad_signature[at] ^= 0x01
    (tmp_path / "badsig.img").write_bytes(bad_signature)

    cases = [
        (["--port", port, str(tmp_path / "forged.img")], (2, 6), "SHA-256"),
        (["--port", port, str(tmp_path / "badsig.img")], (6,), "signature"),
        (["--port", port, str(images["v1"]), "--serial", "sk 1"], (2,), "bad serial"),
        (["--port", str(tmp_path / "no-such-port"), str(images["v1"])], (3,), "REPL"),
    ]
    for args, exits, words in cases:
        code = cli.main(["firmware", "install", *args, "--timeout", "2"])
        err = capsys.readouterr().err
        assert code in exits, (args, code, err)
        assert words in err and "Traceback" not in err, err
    assert emu.drives[0].blank
    assert sorted(p.name for p in emu.drives[0].flash.iterdir()) == []


def run_sealkeep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealkeep", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def emulate_blank(d: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`sealkeep emulate --blank --count 1` in the background, once drives.json is up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealkeep", "emulate", "--blank", "--count", "1", "--dir", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            doc: dict[str, Any] = json.loads((d / "drives.json").read_text())
        except (OSError, ValueError):
            doc = {}
        if doc.get("running") and doc.get("pid") == proc.pid:
            return proc, doc
        time.sleep(0.05)
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"sealkeep emulate --blank did not start: {err}")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("sealkeep emulate did not stop on SIGTERM")


def test_technician_flow_through_the_command_line(images: dict[str, Path], tmp_path: Path) -> None:
    d = tmp_path / "boards"
    proc, doc = emulate_blank(d)
    try:
        [entry] = doc["drives"]
        assert entry["blank"] is True
        port = entry["port"]
        # Asked as a drive, the blank board is named for what it is.
        asked = run_sealkeep("drives", "--drives", f"@{d}/drives.json")
        assert asked.returncode == 3
        assert "answers as a MicroPython REPL" in asked.stdout + asked.stderr
        assert f"sealkeep firmware install --port {port} IMAGE" in asked.stdout + asked.stderr
        done = run_sealkeep(
            "firmware", "install", "--port", port, str(images["v1"]), "--serial", "SK-00A1"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("SK-00A1: firmware 1.0.0 (counter 1) installed in slot a")
        listed = run_sealkeep("drives", "--drives", f"@{d}/drives.json", "--json")
        assert listed.returncode == 0, listed.stderr
        [drive] = json.loads(listed.stdout)["drives"]
        assert (drive["serial"], drive["firmware"]) == ("SK-00A1", "1.0.0")
    finally:
        assert stop(proc) == 0
    # Powered up again, the board boots into what was installed, with its serial.
    proc, doc = emulate_blank(d)
    try:
        [entry] = doc["drives"]
        assert (entry["blank"], entry["serial"]) == (False, "SK-00A1")
    finally:
        assert stop(proc) == 0

    both = run_sealkeep(
        "emulate", "--blank", "--firmware", str(images["v1"]), "--dir", str(tmp_path / "x")
    )
    assert both.returncode != 0 and "either --blank or --firmware" in both.stderr
    assert "Traceback" not in both.stderr
