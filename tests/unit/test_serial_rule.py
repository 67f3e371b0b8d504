"""One rule for drive serials, on the host and on the drive: 4 to 32 letters, digits and
dashes, starting with a letter or digit, no fixed prefix (manufacturers' serials are often
plain hex or decimal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sealkeep import firmware as fw
from sealkeep.drivespec import UsageError
from sealkeep.errors import SealkeepError
from sealkeep.install import install_image
from sealkeep.protocol.serials import serial_ok, serial_problem

ACCEPTED = [
    "0004A3F1",  # manufacturer hex
    "0004a3f1",  # lower-case hex as some tools print it
    "20231107",  # decimal
    "SK-00A1",  # what the firmware makes of a chip id
    "SN-2023-0042",
    "ABCD",  # shortest
    "Z" * 32,  # longest
    "e6614c311b7e4f2a",  # an RP2040's unique id
]

REFUSED = [
    ("", "shorter than 4"),
    ("A1B", "shorter than 4"),
    ("A" * 33, "longer than 32"),
    ("-A1B2", "start with a letter or digit"),
    ("SK 1", "only letters, digits and dashes"),
    ("SK_0001", "only letters, digits and dashes"),
    ("SK.0001", "only letters, digits and dashes"),
    ("../etc", "start with a letter or digit"),
    ("SK-00A1\n", "only letters, digits and dashes"),
    ("ÄBCDE", "start with a letter or digit"),
    ("SKÉ001", "only letters, digits and dashes"),
]


@pytest.mark.parametrize("serial", ACCEPTED)
def test_accepted_serials(serial: str) -> None:
    assert serial_problem(serial) is None
    assert serial_ok(serial)


@pytest.mark.parametrize(("serial", "why"), REFUSED)
def test_refused_serials_say_why(serial: str, why: str) -> None:
    problem = serial_problem(serial)
    assert problem is not None and why in problem
    assert not serial_ok(serial)


def test_a_serial_that_is_not_text_is_refused() -> None:
    assert serial_problem(1234) == "it is not text"
    assert serial_problem(b"0004A3F1") == "it is not text"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> fw.FirmwareImage:
    d = tmp_path_factory.mktemp("serial-image")
    fw.keygen(d / "vendor.key")
    path = d / "v1.img"
    path.write_bytes(fw.build_image("1.0.0", 1, fw.load_signing_key(d / "vendor.key")))
    return fw.load_image(path)


@pytest.mark.parametrize("serial", ["0004a3f1", "20231107", "SN-2023-0042"])
def test_install_takes_a_manufacturers_serial(
    serial: str, image: fw.FirmwareImage, tmp_path: Path
) -> None:
    # No board answers at this port: the serial passes the check and the install goes on
    # until it looks for the board.
    with pytest.raises(SealkeepError) as caught:
        install_image(str(tmp_path / "no-board"), image, serial=serial, timeout=0.5)
    assert not isinstance(caught.value, UsageError), str(caught.value)
    assert "bad serial" not in str(caught.value)


@pytest.mark.parametrize(("serial", "why"), REFUSED[:7])
def test_install_refuses_a_bad_serial_saying_what_to_give(
    serial: str, why: str, image: fw.FirmwareImage, tmp_path: Path
) -> None:
    with pytest.raises(UsageError) as caught:
        install_image(str(tmp_path / "no-board"), image, serial=serial, timeout=0.5)
    message = str(caught.value)
    assert message.startswith(f"bad serial {serial!r}: ") and why in message
    assert "letters, digits and dashes" in message and "e.g. 0004A3F1" in message


def board_serial(
    run_micropython: Any, flash: Path, stored: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """What the drive's board module answers as its serial with stored in its flash file;
    and what it logged."""
    (flash / "serial").write_text(stored)
    monkeypatch.setenv("SEALKEEP_FLASH", str(flash))
    monkeypatch.delenv("SEALKEEP_SERIAL", raising=False)
    repo = Path(__file__).resolve().parents[2]
    proc = run_micropython(
        ["-c", "import board\nprint(board.serial())"], path=(repo, repo / "device")
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), proc.stderr


@pytest.mark.parametrize("stored", ["0004a3f1", "20231107", "SK-00A1"])
def test_the_drive_answers_with_a_provisioned_serial(
    stored: str, run_micropython: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert board_serial(run_micropython, tmp_path, stored, monkeypatch) == (stored, "")


@pytest.mark.parametrize("stored", ["bad serial!", "-ABCD", "A" * 40])
def test_the_drive_replaces_a_bad_serial_with_its_chips(
    stored: str, run_micropython: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial, log = board_serial(run_micropython, tmp_path, stored, monkeypatch)
    assert serial.startswith("SK-") and serial_ok(serial)
    assert f"ignoring serial {stored!r}" in log
    assert (tmp_path / "serial").read_text() == serial  # kept, so it stays the same
