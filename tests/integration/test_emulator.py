"""The emulator with the real firmware: many drives, persistence, power cuts, link faults."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sealkeep.client import DriveClient, Role
from sealkeep.emulator import Emulator, EmulatorError
from sealkeep.errors import LinkError, SealkeepError
from sealkeep.ptyecho import pty_echo_throughput

pytestmark = pytest.mark.integration

OWNER = bytes(range(32))
CUSTODIAN = bytes(range(32, 64))
KDF = {"alg": "argon2id", "t": 3, "m": 65536, "p": 1}
DOMAIN = bytes.fromhex("d0d0cafe") * 4

Connect = Callable[..., DriveClient]
StartDrives = Callable[..., Emulator]


def claim(client: DriveClient) -> None:
    client.claim(OWNER, CUSTODIAN, b"salt" * 4, KDF, DOMAIN)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still there: only acceptable as an unreaped zombie of someone else.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1].startswith("Z")


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_five_drives_answer_hello_blank(emulated_drives: StartDrives, connect: Connect) -> None:
    emu = emulated_drives(5, capacity=4 << 20)
    drives = emu.drives
    assert len(drives) == 5
    assert len({d.serial for d in drives}) == 5
    assert len({d.port for d in drives}) == 5
    for drive in drives:
        assert drive.serial.startswith("SK-") and len(drive.serial) == 11
        assert drive.pid is not None and drive.flash.is_dir()
        hello = connect(drive).hello()
        assert hello.serial == drive.serial
        assert hello.state == "blank" and hello.blank
        assert hello.domain is None
        assert hello.capacity == 4 << 20
        assert 0 < hello.free <= hello.capacity
        assert hello.firmware
    doc = emu.document()
    assert doc["running"] is True
    assert [(d["serial"], d["port"]) for d in doc["drives"]] == [(d.serial, d.port) for d in drives]


def test_stop_leaves_no_process_pty_or_fd(tmp_path: Path, micropython_command: str) -> None:
    before = open_fds()
    emu = Emulator(tmp_path / "d", 3, backoff_ms=0, micropython=micropython_command)
    with emu:
        drives = emu.drives
        assert all(os.path.exists(d.port) for d in drives)
        assert len(open_fds()) > len(before)
    for drive in drives:
        assert drive.pid is not None and process_gone(drive.pid)
    # Every pty and pipe is closed. (Whether /dev/pts/N vanished says little: another
    # program may already have a new pty with the same number.)
    assert open_fds() == before
    threads = [t.name for t in threading.enumerate() if t.name.startswith("sealkeep-")]
    assert threads == []
    # drives.json keeps the serials and no stale ports.
    doc = Emulator(tmp_path / "d", 3).drives_file.read_text()
    assert '"running": false' in doc and '"port": null' in doc


def test_same_dir_brings_back_the_drives_with_contents(
    emulated_drives: StartDrives, connect: Connect, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    emu = emulated_drives(2, dir=home)
    first = emu.drives
    with connect(first[0]) as client:
        claim(client)
        client.authenticate(Role.OWNER, OWNER)
        client.put("kept.bin", b"contents" * 1000)
    emu.stop()

    emu = emulated_drives(3, dir=home)  # one more than before
    again = emu.drives
    assert [d.serial for d in again[:2]] == [d.serial for d in first]
    assert again[2].serial not in {d.serial for d in first}
    with connect(again[0]) as client:
        hello = client.hello()
        assert hello.state == "owned" and hello.domain == DOMAIN
        client.authenticate(Role.OWNER, OWNER)
        assert client.get("kept.bin") == b"contents" * 1000
    assert connect(again[1]).hello().state == "blank"
    emu.stop()

    # Fewer drives, then more again: the flash folders remember the ones left out.
    emu = emulated_drives(1, dir=home)
    assert [d.serial for d in emu.drives] == [first[0].serial]
    emu.stop()
    emu = emulated_drives(3, dir=home)
    assert [d.serial for d in emu.drives] == [d.serial for d in again]


def test_one_emulator_per_dir(emulated_drives: StartDrives, tmp_path: Path) -> None:
    emulated_drives(1, dir=tmp_path / "shared")
    with pytest.raises(EmulatorError, match="in use by another emulator"):
        Emulator(tmp_path / "shared", 1).start()


def test_kill_is_a_power_cut_and_restart_brings_it_back(
    emulated_drives: StartDrives, connect: Connect
) -> None:
    emu = emulated_drives(2)
    drive = emu.drives[0]
    client = connect(drive, timeout=0.5)
    assert client.hello().serial == drive.serial
    emu.kill(0)
    assert emu.drives[0].pid is None
    assert drive.pid is not None and process_gone(drive.pid)
    with pytest.raises(LinkError, match="no reply") as exc:
        client.hello()  # the port is still there, the drive is silent
    assert exc.value.timed_out and exc.value.exit_code == 3
    assert connect(emu.drives[1]).hello().blank  # the others do not notice

    emu.restart(0)
    back = emu.drives[0]
    assert back.port == drive.port and back.pid not in (None, drive.pid)
    assert back.restarts == 1
    assert client.hello().serial == drive.serial  # same open port, new process

    emu.kill(0, restart=True)
    assert emu.drives[0].pid is not None
    assert client.hello().serial == drive.serial


def test_a_crashed_drive_is_restarted(emulated_drives: StartDrives, connect: Connect) -> None:
    emu = emulated_drives(1)
    drive = emu.drives[0]
    assert drive.pid is not None
    os.kill(drive.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while emu.drives[0].pid in (None, drive.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    emu.wait_ready(0, timeout=10)
    assert emu.drives[0].pid not in (None, drive.pid)
    assert connect(emu.drives[0]).hello().serial == drive.serial
    assert "restarting" in drive.log.read_text()


def test_put_resumes_after_a_power_cut(emulated_drives: StartDrives, connect: Connect) -> None:
    emu = emulated_drives(1)
    data = os.urandom(3 << 20)
    client = connect(emu.drives[0], timeout=1.0)
    claim(client)
    client.authenticate(Role.OWNER, OWNER)
    cut = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > total // 3 and not cut.is_set():
            cut.set()
            emu.kill(0, restart=True)

    result = client.put("big.bin", data, progress=progress)
    assert cut.is_set()
    assert result.recoveries >= 1
    assert result.resumed_from == 0
    assert client.get("big.bin") == data
    assert client.verify("big.bin").digest == hashlib.sha256(data).digest()


def test_relay_faults_give_clean_errors(emulated_drives: StartDrives, connect: Connect) -> None:
    emu = emulated_drives(1, seed=1234)
    link = emu.link(0)
    client = connect(emu.drives[0], timeout=0.5)
    assert client.hello().blank

    # One damaged byte on the way in: the drive says CRC, the client sends it again.
    link.corrupt("h2d", at=3)
    assert client.hello().blank
    assert link.stats()["h2d"].corrupted == 1

    # Replies damaged every time: a clean timeout that says damaged frames arrived.
    link.corrupt("d2h", probability=0.05)
    with pytest.raises(LinkError, match="damaged frames") as exc:
        client.hello()
    assert exc.value.exit_code == 3
    link.clear_faults()
    assert client.hello().blank

    # A cable pulled, then put back.
    link.unplug()
    with pytest.raises(LinkError, match="no reply"):
        client.hello()
    link.replug()
    assert client.hello().blank

    # A link slower than the client is patient: a timeout, then the late reply is skipped.
    link.set_delay(0.8)
    with pytest.raises(LinkError, match=r"within 0\.5 s"):
        client.hello()
    link.set_delay(0)
    time.sleep(1.0)
    assert client.hello().blank

    # Bytes dropped in a session: the session ends cleanly, nothing half-done.
    claim(client)
    client.authenticate(Role.OWNER, OWNER)
    link.drop("h2d", probability=0.01)
    with pytest.raises(SealkeepError):
        client.put("x.bin", os.urandom(256 << 10))
    link.clear_faults()
    # Let answers to damaged frames arrive, and resynchronise with an idempotent request,
    # before authenticating again.
    time.sleep(0.3)
    client.hello()
    client.authenticate(Role.OWNER, OWNER)
    assert all(o.name != "x.bin" for o in client.list())


def test_press_button_allows_factory_reset(emulated_drives: StartDrives, connect: Connect) -> None:
    emu = emulated_drives(1)
    client = connect(emu.drives[0])
    claim(client)
    assert client.hello().state == "owned"
    emu.press_button(0)
    assert (emu.drives[0].flash / "button").exists()
    client.factory_reset()
    assert client.hello().state == "blank"
    assert not (emu.drives[0].flash / "button").exists()


def test_usb_fs_link_is_paced(emulated_drives: StartDrives, connect: Connect) -> None:
    emu = emulated_drives(1, link="usb-fs")
    client = connect(emu.drives[0], timeout=5.0)
    claim(client)
    client.authenticate(Role.OWNER, OWNER)
    size = 600_000
    start = time.perf_counter()
    client.put("paced.bin", os.urandom(size))
    elapsed = time.perf_counter() - start
    rate = size / elapsed
    print(f"usb-fs put: {rate / 1e6:.3f} MB/s = {rate / 1.2e6:.2f} of the link")
    assert rate <= 1.2e6 * 1.02  # never faster than the link


def test_relay_overhead_is_small() -> None:
    raw = pty_echo_throughput(through_relay=False, total=4 << 20)
    relayed = pty_echo_throughput(through_relay=True, total=4 << 20)
    print(f"4 KiB lockstep echo: pty {raw / 2**20:.1f} MiB/s, relay {relayed / 2**20:.1f} MiB/s")
    assert relayed >= 0.25 * raw


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EmulatorError, match="at least one drive"):
        Emulator(tmp_path, 0)
    with pytest.raises(EmulatorError, match="heap"):
        Emulator(tmp_path, 1, heap="lots")
    with pytest.raises(EmulatorError, match="unknown link"):
        Emulator(tmp_path, 1, link="carrier-pigeon")
    with pytest.raises(EmulatorError, match="firmware is missing"):
        Emulator(tmp_path / "d", 1, firmware=tmp_path / "none.py").start()
    with pytest.raises(EmulatorError, match="micropython"):
        Emulator(tmp_path / "e", 1, micropython=str(tmp_path / "no-such-micropython")).start()
    # Nothing left running after a failed start.
    assert [t for t in threading.enumerate() if t.name.startswith("sealkeep-")] == []


def test_drive_files_are_private_and_the_device_key_lies_outside_the_flash(
    emulated_drives: StartDrives, connect: Connect
) -> None:
    old = os.umask(0o022)  # what most shells give
    try:
        emu = emulated_drives(2)
    finally:
        os.umask(old)
    for drive in emu.drives:
        client = connect(drive)
        claim(client)
        client.close()
    for path in [emu.dir, *emu.dir.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    drive = emu.drives[0]
    key = emu.dir / ".device-keys" / drive.serial
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    assert drive.flash not in key.parents
    environ = Path(f"/proc/{drive.pid}/environ").read_bytes().split(b"\0")
    assert f"SEALKEEP_DEVICE_KEY={key}".encode() in environ
    # So the drive's secrets lie sealed in its flash.
    for name in ("ident", "state.cbor"):
        assert (drive.flash / name).read_bytes()[:4] == b"SKS1"
    before = key.read_bytes()
    emu.kill(0, restart=True)
    assert key.read_bytes() == before  # the same board after a restart
    client = connect(emu.drives[0])
    client.authenticate(Role.OWNER, OWNER)
