"""The HSM commands end to end: the ``sealkeep`` command line in a subprocess, real SoftHSM2
tokens and emulated drives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from json_schemas import check
from sealkeep.backupset import set_object_name
from sealkeep.domain import ENV_KDF_FLOOR, ENV_KDF_MEMORY, ENV_KDF_TIME
from sealkeep.emulator import Emulator
from sealkeep.hsm import Hsm

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]

SAMPLE_LABELS = {"aes-data", "rsa-sign", "ec-sign"}


class Cli:
    """Runs ``python -m sealkeep`` with the test's tokens, cheap Argon2id and a PIN file."""

    def __init__(self, farm: SoftHsmFarm, tmp: Path) -> None:
        self.env = {**farm.env, ENV_KDF_MEMORY: "8", ENV_KDF_TIME: "1", ENV_KDF_FLOOR: "m=8,t=1"}
        self.env.pop("SEALKEEP_PIN", None)
        self.env.pop("SEALKEEP_DRIVES", None)
        self.pin_file = tmp / "pin"
        self.pin_file.write_text("user-pin-1234\n")
        self.pin_file.chmod(0o600)

    def __call__(
        self, *args: str, code: int = 0, pin: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        if pin:
            argv += ["--pin-file", str(self.pin_file)]
        done = subprocess.run(
            [sys.executable, "-m", "sealkeep", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        if code:
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, done.stderr
        return done

    def json(self, *args: str, pin: bool = True) -> Any:
        return check(args, self(*args, "--json", pin=pin).stdout)


@pytest.fixture
def cli(softhsm: SoftHsmFarm, tmp_path: Path) -> Cli:
    return Cli(softhsm, tmp_path)


def passphrase_file(tmp: Path, emulator: Emulator) -> str:
    path = tmp / "custodians"
    path.write_text(
        "".join(f"{d.serial} custodian {d.serial} orbit lantern 7\n" for d in emulator.drives)
    )
    path.chmod(0o600)
    return str(path)


def spec(emulator: Emulator, *indexes: int) -> str:
    chosen = indexes or tuple(range(len(emulator.drives)))
    return ",".join(emulator.drives[i].port for i in chosen)


def test_the_whole_story(
    cli: Cli,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    make_sample_keys: Any,
    tmp_path: Path,
) -> None:
    source, target = tokens["source"], tokens["target"]
    src, tgt = str(source.slot_id), str(target.slot_id)
    with hsm.open(source.slot_id, source.pin) as session:
        make_sample_keys(session)
    emulator = emulated_drives(5)
    drives_file = f"@{emulator.drives_file}"
    custodians = passphrase_file(tmp_path, emulator)

    slots = cli.json("slots", pin=False)
    row = next(s for s in slots["slots"] if s["slot"] == source.slot_id)
    assert row["label"] == "source" and row["holds_domain"] is False
    keys = cli.json("keys", "--slot", src)
    local = next(o for o in keys["objects"] if o["label"] == "aes-local")
    assert local["backup"] is False and local["reason"] == "not extractable"
    assert "not extractable" in cli("keys", "--slot", src).stdout

    # 4 drives is no domain; nothing is claimed.
    refused = cli(
        "domain",
        "create",
        "--slot",
        src,
        "--drives",
        spec(emulator, 0, 1, 2, 3),
        "--passphrases",
        custodians,
        code=2,
    )
    assert "3, 5 or 7 drives" in refused.stderr
    created = cli.json(
        "domain", "create", "--slot", src, "--drives", drives_file, "--passphrases", custodians
    )
    assert created["threshold"] == 3 and created["count"] == 5
    slots = cli.json("slots", pin=False)
    assert (
        next(s for s in slots["slots"] if s["slot"] == source.slot_id)["domain_id"]
        == (created["domain_id"])
    )

    made = cli.json("backup", "--slot", src, "--drives", drives_file, "--label", "nightly")
    set_id = made["set_id"]
    assert made["keys"] == 6 and [s["label"] for s in made["skipped"]] == ["aes-local"]
    assert len(made["drives"]) == 5 and all(d["verified"] for d in made["drives"])
    assert made["bytes"] > 0 and made["seconds"] >= 0
    listed = cli.json("sets", "--drives", drives_file)
    (domain,) = listed["domains"]
    assert domain["domain_id"] == created["domain_id"] and domain["drives"] == 5
    assert [s["set_id"] for s in listed["sets"]] == [set_id]
    assert listed["sets"][0]["label"] == "nightly" and len(listed["sets"][0]["verified"]) == 5
    assert "nightly" in cli("sets", "--drives", drives_file).stdout
    assert cli.json("verify", "--set", set_id[:8], "--drives", drives_file)["ok"] is True

    # Quick restore on the same HSM from one drive, the other four unplugged.
    with hsm.open(source.slot_id, source.pin) as session:
        for obj in session.objects():
            if obj.label in SAMPLE_LABELS:
                obj.handle.destroy()
    for i in range(4):
        emulator.kill(i)
    restored = cli.json("restore", "--set", set_id, "--slot", src, "--drives", spec(emulator, 4))
    assert restored["ok"] and restored["restored"] == 6 and restored["failed"] == 0
    assert all(k["proven"] for k in restored["keys"])
    again = cli(
        "restore", "--set", set_id, "--slot", src, "--drives", spec(emulator, 4), "--key", "ec-sign"
    )
    assert "3 already present" in again.stdout
    for i in range(4):
        emulator.restart(i)

    # Disaster recovery into a new token from three drives.
    cli("restore", "--set", set_id, "--slot", tgt, "--drives", spec(emulator, 4), code=1)
    short = cli(
        "domain",
        "recover",
        "--slot",
        tgt,
        "--drives",
        spec(emulator, 0, 1),
        "--passphrases",
        custodians,
        code=1,
    )
    assert "1 more" in short.stderr
    # What the new token cannot enforce is said before any custodian is asked.
    assert short.stderr.index("not enforced by the token") < short.stderr.index("1 more")
    recovered = cli.json(
        "domain",
        "recover",
        "--slot",
        tgt,
        "--drives",
        spec(emulator, 0, 2, 4),
        "--passphrases",
        custodians,
    )
    assert recovered["domain_id"] == created["domain_id"] and len(recovered["used"]) == 3
    restored = cli.json(
        "restore", "--set", set_id, "--slot", tgt, "--drives", spec(emulator, 0, 2, 4)
    )
    assert restored["ok"] and restored["restored"] == 6


def test_cli_errors_are_one_line_with_their_code(
    cli: Cli,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    make_sample_keys: Any,
    tmp_path: Path,
) -> None:
    source = tokens["source"]
    src = str(source.slot_id)
    with hsm.open(source.slot_id, source.pin) as session:
        make_sample_keys(session)
    emulator = emulated_drives(3)
    drives = spec(emulator)
    custodians = passphrase_file(tmp_path, emulator)
    missing = cli(
        "domain",
        "create",
        "--slot",
        src,
        "--drives",
        drives,
        "--passphrases",
        str(tmp_path / "nope"),
        code=2,
    )
    assert "does not exist" in missing.stderr
    no_domain = cli("backup", "--slot", src, "--drives", drives, code=1)
    assert "holds no backup domain key" in no_domain.stderr
    cli("domain", "create", "--slot", src, "--drives", drives, "--passphrases", custodians)

    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000\n")
    denied = cli(
        "backup", "--slot", src, "--drives", drives, "--pin-file", str(wrong), pin=False, code=4
    )
    assert "wrong PIN" in denied.stderr
    no_pin = cli("keys", "--slot", src, pin=False, code=2)
    assert "SEALKEEP_PIN" in no_pin.stderr

    set_id = cli.json("backup", "--slot", src, "--drives", drives)["set_id"]
    name = set_object_name(bytes.fromhex(set_id))
    victim = emulator.drives[1]
    path = victim.flash / "obj" / name
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    bad = cli("verify", "--set", set_id, "--drives", drives, code=6)
    assert victim.serial in bad.stderr and victim.serial in bad.stdout
    for drive in emulator.drives:
        if drive.serial != victim.serial:
            target = drive.flash / "obj" / name
            data = bytearray(target.read_bytes())
            data[-1] ^= 1
            target.write_bytes(bytes(data))
    every = cli("restore", "--set", set_id, "--slot", src, "--drives", drives, code=6)
    assert all(d.serial in every.stderr for d in emulator.drives)


def test_only_custodians_erase(
    cli: Cli,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    make_sample_keys: Any,
    tmp_path: Path,
) -> None:
    """The host's owner credentials add sets; deleting one or resetting a drive takes the
    drive's custodian: `prune` and `drives reset`."""
    source = tokens["source"]
    src = str(source.slot_id)
    with hsm.open(source.slot_id, source.pin) as session:
        make_sample_keys(session)
    emulator = emulated_drives(3)
    drives = spec(emulator)
    custodians = passphrase_file(tmp_path, emulator)
    cli("domain", "create", "--slot", src, "--drives", drives, "--passphrases", custodians)
    first = cli.json("backup", "--slot", src, "--drives", drives)["set_id"]
    second = cli.json("backup", "--slot", src, "--drives", drives)["set_id"]

    # Without a passphrase file and no terminal to ask at: refused at once, nothing erased.
    refused = cli("prune", "--set", first, "--drives", drives, code=2, pin=False)
    assert "--passphrases" in refused.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("".join(f"{d.serial} not the passphrase 99\n" for d in emulator.drives))
    wrong.chmod(0o600)
    args = ("prune", "--set", first, "--drives", drives, "--passphrases", str(wrong))
    cli(*args, code=4, pin=False)
    sets = cli.json("sets", "--drives", drives)["sets"]
    assert {s["set_id"] for s in sets} == {first, second}

    pruned = cli.json(
        "prune", "--set", first, "--drives", drives, "--passphrases", custodians, pin=False
    )
    assert pruned["problems"] == [] and len(pruned["drives"]) == 3
    sets = cli.json("sets", "--drives", drives)["sets"]
    assert [s["set_id"] for s in sets] == [second]

    one = spec(emulator, 2)
    cli("drives", "reset", "--drives", one, code=2, pin=False)
    reset = cli.json("drives", "reset", "--drives", one, "--passphrases", custodians, pin=False)
    assert reset["problems"] == []
    (row,) = cli.json("drives", "--drives", one, pin=False)["drives"]
    assert row["state"] == "blank"


def test_retention_lets_the_host_prune_old_sets(
    cli: Cli,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    make_sample_keys: Any,
    tmp_path: Path,
) -> None:
    """A domain created with --retention 2: once two newer sets are on every drive, `prune`
    drops the oldest with the slot PIN alone, and says so drive by drive; a set that is
    still kept needs the custodians, and nothing is deleted without them."""
    source = tokens["source"]
    src = str(source.slot_id)
    with hsm.open(source.slot_id, source.pin) as session:
        make_sample_keys(session)
    emulator = emulated_drives(3)
    drives = spec(emulator)
    custodians = passphrase_file(tmp_path, emulator)
    args = ("domain", "create", "--slot", src, "--drives", drives, "--passphrases", custodians)
    refused = cli(*args, "--retention", "0", code=2)
    assert "retention" in refused.stderr and "1 to 1000, not 0" in refused.stderr
    assert all(
        row["state"] == "blank"
        for row in cli.json("drives", "--drives", drives, pin=False)["drives"]
    )
    assert cli.json(*args, "--retention", "2")["retention"] == 2
    assert [
        row["retention"] for row in cli.json("drives", "--drives", drives, pin=False)["drives"]
    ] == [
        2,
        2,
        2,
    ]
    made = [cli.json("backup", "--slot", src, "--drives", drives) for _ in range(3)]
    oldest, middle, newest = (m["set_id"] for m in made)

    listed = cli.json("sets", "--drives", drives)
    assert listed["domains"][0]["retention"] == [2]
    by_id = {s["set_id"]: s for s in listed["sets"]}
    for m in made:
        assert by_id[m["set_id"]]["bytes"] == m["bytes"] > 0
    serials = sorted(d.serial for d in emulator.drives)
    assert sorted(by_id[oldest]["owner_may_drop"]) == serials
    assert by_id[middle]["owner_may_drop"] == [] and by_id[newest]["owner_may_drop"] == []
    table = cli("sets", "--drives", drives).stdout
    assert "retention 2" in table and "SIZE" in table and "DROPPABLE" in table
    assert "3/3" in table.split(oldest[:16])[1].splitlines()[0]

    # The middle set has one newer set: kept; without custodians nothing is deleted.
    kept = cli("prune", "--set", middle, "--drives", drives, code=4)
    assert "retention 2 keeps it: 1 newer set(s)" in kept.stderr
    assert all(d.serial in kept.stderr for d in emulator.drives)
    assert {s["set_id"] for s in cli.json("sets", "--drives", drives)["sets"]} == {
        oldest,
        middle,
        newest,
    }

    # The oldest: the owner drops it from every drive, no passphrase asked.
    done = cli("prune", "--set", oldest, "--drives", drives)
    assert "erased on 3 drive(s) (3 by the owner, under retention)" in done.stdout
    for drive in emulator.drives:
        assert f"drive {drive.serial}: set {oldest} deleted by the owner" in done.stderr
        assert not (drive.flash / "obj" / set_object_name(bytes.fromhex(oldest))).exists()
    sets = cli.json("sets", "--drives", drives)["sets"]
    assert {s["set_id"] for s in sets} == {middle, newest}

    # With the custodians, a kept set goes too: by each drive's custodian.
    pruned = cli.json("prune", "--set", middle, "--drives", drives, "--passphrases", custodians)
    assert pruned["problems"] == [] and len(pruned["drives"]) == 3 and pruned["by_owner"] == []
