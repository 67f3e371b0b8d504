"""``sealkeep.toml`` gives the defaults an operator would repeat: the command line wins, then
the environment, then the file; a typo or a secret in it is an error naming file and key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]


def sealkeep(
    farm: SoftHsmFarm, cwd: Path, *args: str, code: int = 0, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {**farm.env, **env}
    for name in ("SEALKEEP_PIN", "SEALKEEP_DRIVES", "SEALKEEP_CONFIG"):
        if name not in env:
            environ.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def test_the_file_gives_slot_pin_file_and_drives(
    softhsm: SoftHsmFarm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    tmp_path: Path,
) -> None:
    emulator = emulated_drives(2)
    pin = tmp_path / "pin"
    pin.write_text("user-pin-1234\n")
    pin.chmod(0o600)
    (tmp_path / "sealkeep.toml").write_text(
        f'slot = "source"\npin_file = "{pin}"\ndrives = "@{emulator.drives_file}"\ntimeout = 4\n'
    )
    keys = as_json(sealkeep(softhsm, tmp_path, "keys", "--json"))
    assert keys["slot"] == tokens["source"].slot_id
    other = as_json(sealkeep(softhsm, tmp_path, "keys", "--slot", "target", "--json"))
    assert other["slot"] == tokens["target"].slot_id  # the command line wins
    drives = as_json(sealkeep(softhsm, tmp_path, "drives", "--json"))["drives"]
    assert [d["port"] for d in drives] == [d.port for d in emulator.drives]
    # The environment wins over the file.
    one = as_json(
        sealkeep(softhsm, tmp_path, "drives", "--json", SEALKEEP_DRIVES=emulator.drives[1].port)
    )["drives"]
    assert [d["port"] for d in one] == [emulator.drives[1].port]
    # $SEALKEEP_CONFIG names another file, which then alone counts.
    elsewhere = tmp_path / "other.toml"
    elsewhere.write_text(f'slot = "target"\npin_file = "{pin}"\n')
    chosen = as_json(sealkeep(softhsm, tmp_path, "keys", "--json", SEALKEEP_CONFIG=str(elsewhere)))
    assert chosen["slot"] == tokens["target"].slot_id


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('slott = "source"\n', "unknown setting 'slott'"),
        ('pin = "1234"\n', "'pin' does not belong in a configuration file"),
        ("timeout = true\n", "'timeout' has a value of the wrong kind"),
        ('slot = "source\n', "is not valid TOML"),
    ],
)
def test_a_bad_file_is_named(
    softhsm: SoftHsmFarm, tmp_path: Path, content: str, words: str
) -> None:
    (tmp_path / "sealkeep.toml").write_text(content)
    done = sealkeep(softhsm, tmp_path, "slots", code=2)
    assert words in done.stderr and "sealkeep.toml" in done.stderr
    assert "1234" not in done.stderr
