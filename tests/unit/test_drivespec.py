"""Parsing --drives SPEC: ports, URLs, drives files, the environment and discovery."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sealkeep import drivespec
from sealkeep.drivespec import (
    DriveAddress,
    DrivesFileError,
    NoDrivesFound,
    UsageError,
    load_drives_file,
    parse_drives,
)


def no_discovery() -> list[DriveAddress]:
    raise AssertionError("discovery must not run when drives are given")


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_ports_and_urls() -> None:
    spec = " /dev/ttyACM0, serial:///dev/pts/7 ,,socket://10.0.0.2:7000 "
    assert parse_drives(spec, environ={}, discover=no_discovery) == [
        DriveAddress("/dev/ttyACM0"),
        DriveAddress("serial:///dev/pts/7"),
        DriveAddress("socket://10.0.0.2:7000"),
    ]


def test_duplicates_are_listed_once() -> None:
    spec = "/dev/a,/dev/b,/dev/a"
    assert [a.port for a in parse_drives(spec, environ={})] == ["/dev/a", "/dev/b"]


def test_drives_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "drives.json",
        {
            "drives": [
                {"serial": "SK-00000001", "port": "/dev/pts/3", "flash": "x"},
                {"serial": "SK-00000002", "port": "/dev/pts/4"},
            ],
            "running": True,
        },
    )
    expected = [
        DriveAddress("/dev/pts/3", "SK-00000001"),
        DriveAddress("/dev/pts/4", "SK-00000002"),
    ]
    assert parse_drives(f"@{path}", environ={}, discover=no_discovery) == expected
    assert load_drives_file(path) == expected
    # Relative to the given base; mixed with ports; a port named twice keeps its serial.
    mixed = parse_drives("/dev/pts/4,@drives.json,/dev/ttyUSB0", environ={}, base=tmp_path)
    assert mixed == [
        DriveAddress("/dev/pts/4", "SK-00000002"),
        DriveAddress("/dev/pts/3", "SK-00000001"),
        DriveAddress("/dev/ttyUSB0"),
    ]
    assert str(mixed[0]) == "SK-00000002 at /dev/pts/4"


def test_environment_gives_the_default(tmp_path: Path) -> None:
    env = {drivespec.ENV_VAR: "/dev/x,/dev/y"}
    assert [a.port for a in parse_drives(None, environ=env, discover=no_discovery)] == [
        "/dev/x",
        "/dev/y",
    ]
    assert [a.port for a in parse_drives("  ", environ=env)] == ["/dev/x", "/dev/y"]
    # An explicit spec wins over the environment.
    assert [a.port for a in parse_drives("/dev/z", environ=env)] == ["/dev/z"]


def test_discovery_when_nothing_is_given() -> None:
    found = [DriveAddress("/dev/ttyACM0")]
    assert parse_drives(None, environ={}, discover=lambda: found) == found
    with pytest.raises(NoDrivesFound, match="no USB serial port found") as exc:
        parse_drives(None, environ={}, discover=list)
    assert exc.value.exit_code == 3
    assert "--drives" in str(exc.value)


def test_discover_usb_keeps_ports_with_usb_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from serial.tools import list_ports

    ports = [
        SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None),
        SimpleNamespace(device="/dev/ttyACM1", vid=0x2E8A, pid=0x0005),
        SimpleNamespace(device="/dev/ttyACM0", vid=0x303A, pid=0x1001),
    ]
    monkeypatch.setattr(list_ports, "comports", lambda: ports)
    assert drivespec.discover_usb() == [DriveAddress("/dev/ttyACM0"), DriveAddress("/dev/ttyACM1")]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "is not valid JSON"),
        ({"ports": []}, "does not hold a drives list"),
        ([1, 2], "does not hold a drives list"),
        ({"drives": []}, "lists no drives"),
        ({"drives": ["/dev/pts/1"]}, "entry 1 is not an object"),
        ({"drives": [{"serial": "SK-1"}]}, "entry 1 has no port"),
        ({"drives": [{"serial": 5, "port": "/dev/x"}]}, "serial that is not a string"),
        ({"drives": [{"serial": "SK-1", "port": None}], "running": False}, "has stopped"),
    ],
)
def test_bad_drives_files_are_named(tmp_path: Path, content: Any, words: str) -> None:
    path = write(tmp_path / "drives.json", content)
    with pytest.raises(DrivesFileError) as exc:
        parse_drives(f"@{path}", environ={})
    message = str(exc.value)
    assert words in message
    assert str(path) in message
    assert "To fix" in message
    assert exc.value.exit_code == 2
    assert exc.value.path == path


def test_missing_drives_file(tmp_path: Path) -> None:
    path = tmp_path / "d" / "drives.json"
    with pytest.raises(DrivesFileError, match="does not exist") as exc:
        parse_drives(f"@{path}", environ={})
    assert f"sealkeep emulate --count N --dir {path.parent}" in str(exc.value)
    assert isinstance(exc.value, UsageError)


def test_unreadable_drives_file(tmp_path: Path) -> None:
    with pytest.raises(DrivesFileError, match="cannot read drives file"):
        parse_drives(f"@{tmp_path}", environ={})  # a folder


def test_empty_specs() -> None:
    with pytest.raises(UsageError, match="names no drives"):
        parse_drives(",, ,", environ={})
    with pytest.raises(UsageError, match="'@' must be followed"):
        parse_drives("@", environ={})
    with pytest.raises(UsageError, match=drivespec.ENV_VAR):
        parse_drives(None, environ={drivespec.ENV_VAR: ","})


def test_a_drives_file_without_at_gets_a_hint(tmp_path: Path) -> None:
    drives = tmp_path / "drives.json"
    drives.write_text('{"drives": []}')
    with pytest.raises(UsageError, match=r"did you mean @.*drives\.json"):
        parse_drives(str(drives))
    with pytest.raises(UsageError, match=r"did you mean @drives\.json"):
        parse_drives("drives.json", base=tmp_path)
    assert [a.port for a in parse_drives("/dev/null")] == ["/dev/null"]  # a device stays a port
