"""``sealkeep emulate`` and ``sealkeep drives`` as a user runs them: separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from json_schemas import check

pytestmark = pytest.mark.integration

SEALKEEP = [sys.executable, "-m", "sealkeep"]


def sealkeep(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SEALKEEP, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def children(pid: int) -> set[int]:
    """The processes pid started (all its threads' children)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return not stat.split(") ", 1)[1].startswith("Z")


class Emulate:
    """A ``sealkeep emulate`` process in the background."""

    def __init__(self, dir: Path, count: int, *extra: str) -> None:
        self.dir = dir
        self.out = dir.parent / f"{dir.name}.out"
        self.err = dir.parent / f"{dir.name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [*SEALKEEP, "emulate", "--count", str(count), "--dir", str(dir), *extra],
                stdout=out,
                stderr=err,
                text=True,
            )

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        """drives.json once this process has written it."""
        path = self.dir / "drives.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"emulate exited {self.proc.returncode}: {self.err.read_text()}")
            try:
                doc: dict[str, Any] = json.loads(path.read_text())
            except (OSError, ValueError):
                doc = {}
            if doc.get("running") and doc.get("pid") == self.proc.pid:
                return doc
            time.sleep(0.05)
        pytest.fail(f"no drives.json from emulate within {timeout} s: {self.err.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("emulate did not stop on a signal")


@pytest.fixture
def emulate(tmp_path: Path) -> Iterator[type[Emulate]]:
    started: list[Emulate] = []

    class Tracked(Emulate):
        def __init__(self, dir: Path, count: int, *extra: str) -> None:
            super().__init__(dir, count, *extra)
            started.append(self)

    yield Tracked
    for e in started:
        if e.proc.poll() is None:
            e.proc.kill()
            e.proc.wait()


def drives_json(spec: str) -> tuple[int, list[dict[str, Any]], str]:
    result = sealkeep("drives", "--drives", spec, "--json")
    return result.returncode, check(["drives"], result.stdout)["drives"], result.stderr


def test_emulate_then_drives_then_restart(emulate: type[Emulate], tmp_path: Path) -> None:
    d = tmp_path / "D"
    emu = emulate(d, 5, "--heap", "96K")
    doc = emu.wait_ready()
    serials = [entry["serial"] for entry in doc["drives"]]
    ports = [entry["port"] for entry in doc["drives"]]
    assert len(set(serials)) == 5

    code, rows, err = drives_json(f"@{d}/drives.json")
    assert code == 0, err
    assert [r["serial"] for r in rows] == serials
    assert [r["port"] for r in rows] == ports
    for row in rows:
        assert {"serial", "port", "firmware", "state", "domain", "capacity", "free"} <= set(row)
        assert row["state"] == "blank" and row["domain"] is None
        assert isinstance(row["capacity"], int) and isinstance(row["free"], int)
        assert row["firmware"]

    table = sealkeep("drives", "--drives", f"@{d}/drives.json")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:7] == [
        "SERIAL",
        "PORT",
        "FIRMWARE",
        "STATE",
        "DOMAIN",
        "CAPACITY",
        "FREE",
    ]
    assert len(lines) == 6 and all(" blank " in line for line in lines[1:])
    # The emulator printed the same table and where drives.json is.
    printed = emu.out.read_text()
    assert all(s in printed for s in serials) and f"{d}/drives.json" in printed

    drive_pids = children(emu.proc.pid)
    assert len(drive_pids) == 5
    assert emu.stop(signal.SIGTERM) == 0
    assert not any(alive(pid) for pid in drive_pids)
    stopped = sealkeep("drives", "--drives", f"@{d}/drives.json")
    assert stopped.returncode == 2
    assert stopped.stderr.startswith("error: the emulator that wrote")
    assert "Traceback" not in stopped.stderr

    emu = emulate(d, 5, "--heap", "96K")
    doc = emu.wait_ready()
    assert [entry["serial"] for entry in doc["drives"]] == serials
    code, rows, err = drives_json(f"@{d}/drives.json")
    assert code == 0, err
    assert [(r["serial"], r["state"]) for r in rows] == [(s, "blank") for s in serials]
    assert emu.stop(signal.SIGINT) == 0  # Ctrl-C


def test_emulate_json_output(emulate: type[Emulate], tmp_path: Path) -> None:
    emu = emulate(tmp_path / "J", 1, "--json", "--link", "usb-fs")
    doc = emu.wait_ready()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not emu.out.read_text().rstrip().endswith("}"):
        time.sleep(0.05)
    printed = check(["emulate"], emu.out.read_text())
    assert printed["drives"] == doc["drives"] and printed["link"] == "usb-fs"
    assert emu.stop() == 0


def test_unreachable_drive_is_a_row_with_the_reason(emulate: type[Emulate], tmp_path: Path) -> None:
    emu = emulate(tmp_path / "U", 1)
    doc = emu.wait_ready()
    good = doc["drives"][0]
    missing = "/dev/pts/no-such-port"
    code, rows, _ = drives_json(f"{good['port']},{missing}")
    assert code == 3
    assert rows[0]["serial"] == good["serial"] and "error" not in rows[0]
    assert rows[1]["port"] == missing
    assert "no such port" in rows[1]["error"]
    assert rows[1]["state"] is None and rows[1]["serial"] is None

    table = sealkeep("drives", "--drives", f"{missing},{good['port']}")
    assert table.returncode == 3
    assert "unreachable: cannot open drive port" in table.stdout
    assert "1 of 2 drive(s) unreachable" in table.stderr

    # A drives file that names the wrong drive for a port.
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"drives": [{"serial": "SK-00000000", "port": good["port"]}]}))
    code, rows, _ = drives_json(f"@{wrong}")
    assert code == 3
    assert rows[0]["serial"] == good["serial"]
    assert "not SK-00000000" in rows[0]["error"]
    assert emu.stop() == 0


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    result = sealkeep("drives", "--drives", f"@{tmp_path}/nothing.json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: drives file {tmp_path}/nothing.json does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = sealkeep("drives", "--drives", f"@{bad}")
    assert result.returncode == 2 and "is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr

    result = sealkeep("emulate", "--count", "1", "--dir", str(tmp_path), "--link", "wifi")
    assert result.returncode == 2 and "unknown link" in result.stderr

    assert sealkeep("--version").stdout.startswith("sealkeep ")
    assert sealkeep().returncode == 2


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sealkeep.cli import main

    assert main(["drives", "--drives", f"@{tmp_path}/none.json"]) == 2
    assert capsys.readouterr().err.startswith("error: drives file")
    assert main(["--version"]) == 0
    assert main(["drives", "--timeout"]) == 2
