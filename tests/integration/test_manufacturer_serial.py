"""A technician provisions a manufacturer's serial (plain hex here): the drive answers HELLO
with it, the emulator lists it, and it survives a restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sealkeep import cli
from sealkeep import firmware as fw
from sealkeep.client import DriveClient
from sealkeep.emulator import Emulator
from sealkeep.transport import open_transport

pytestmark = pytest.mark.integration

StartDrives = Callable[..., Emulator]


def test_install_provisions_a_manufacturers_serial(
    emulated_drives: StartDrives, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fw.keygen(tmp_path / "vendor.key")
    image = tmp_path / "v1.img"
    image.write_bytes(fw.build_image("1.0.0", 1, fw.load_signing_key(tmp_path / "vendor.key")))
    emu = emulated_drives(1, blank=True)
    port = emu.drives[0].port
    argv = ["firmware", "install", "--port", port, str(image), "--serial", "0004a3f1", "--json"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["serial"] == "0004a3f1"
    for _ in range(2):  # as installed, then after a restart
        with DriveClient(open_transport(port), timeout=3.0) as client:
            assert client.hello().serial == "0004a3f1"
        assert emu.drives[0].serial == "0004a3f1"
        emu.restart(0)
    entries = json.loads(emu.drives_file.read_text())["drives"]
    assert entries[0]["serial"] == "0004a3f1"
