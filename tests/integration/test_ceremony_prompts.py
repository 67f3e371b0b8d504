"""A ceremony at a terminal: `domain create` shows what it will claim and asks first; no
answer but yes changes nothing. Run on a pty, as an operator types."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pexpect
import pytest
from cli_runner import SealkeepCli, custodian_passphrase, custodians_file

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]


def states(port_list: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "sealkeep", "drives", "--drives", port_list, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [d["state"] for d in json.loads(done.stdout)["drives"]]


def test_create_asks_before_claiming_and_no_changes_nothing(
    softhsm: SoftHsmFarm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    tmp_path: Path,
) -> None:
    emulator = emulated_drives(3)
    ports = ",".join(d.port for d in emulator.drives)
    cli = SealkeepCli(softhsm, tmp_path)
    argv = ["-m", "sealkeep", "domain", "create", "--slot", "source", "--drives", ports]
    child = pexpect.spawn(
        sys.executable, [*argv, "--pin-file", str(cli.pin_file)], env=cli.env, encoding="utf-8",
        timeout=60,
    )  # fmt: skip
    try:
        child.expect(r"Claim 3 drive\(s\) for a new backup domain")
        child.expect(r"\[y/N\] ")
        question = child.before
        assert all(d.serial in question and d.port in question for d in emulator.drives)
        child.sendline("n")
        child.expect("cancelled: nothing was changed")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert states(ports) == ["blank"] * 3


def test_an_empty_answer_leaves_the_drive_out_and_says_so(
    softhsm: SoftHsmFarm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    tmp_path: Path,
) -> None:
    emulator = emulated_drives(3)
    ports = ",".join(d.port for d in emulator.drives)
    cli = SealkeepCli(softhsm, tmp_path)
    phrases = {d.serial: custodian_passphrase(d.serial) for d in emulator.drives}
    custodians = custodians_file(tmp_path, emulator.drives)
    cli("domain", "create", "--slot", "source", "--drives", ports, "--passphrases", str(custodians))
    common = ["--drives", ports, "--pin-file", str(cli.pin_file)]
    argv = ["-m", "sealkeep", "domain", "recover", "--slot", "target", *common]
    child = pexpect.spawn(sys.executable, argv, env=cli.env, encoding="utf-8", timeout=60)
    try:
        said = ""
        for index in range(3):
            child.expect(r"Passphrase of the custodian of drive (\S+): ")
            said += child.before
            serial = child.match.group(1)
            child.sendline("" if index == 0 else phrases[serial])
            if index == 0:
                skipped = serial
        child.expect(pexpect.EOF)
        said += child.before
    finally:
        child.close()
    assert child.exitstatus == 0, said
    assert (
        f"drive {skipped}: no passphrase entered for drive {skipped}; this drive is left out"
        in said
    )
    assert "rebuilt into slot" in said


def test_recover_says_at_the_first_share_when_k_cannot_be_reached(
    softhsm: SoftHsmFarm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    tmp_path: Path,
) -> None:
    emulator = emulated_drives(5)
    cli = SealkeepCli(softhsm, tmp_path)
    phrases = {d.serial: custodian_passphrase(d.serial) for d in emulator.drives}
    custodians = custodians_file(tmp_path, emulator.drives)
    every = ",".join(d.port for d in emulator.drives)
    cli("domain", "create", "--slot", "source", "--drives", every, "--passphrases", str(custodians))
    two = ",".join(d.port for d in emulator.drives[:2])
    argv = ["-m", "sealkeep", "domain", "recover", "--slot", "target", "--drives", two]
    child = pexpect.spawn(
        sys.executable, [*argv, "--pin-file", str(cli.pin_file)], env=cli.env, encoding="utf-8",
        timeout=60,
    )  # fmt: skip
    try:
        child.expect(r"Passphrase of the custodian of drive (\S+): ")
        first = child.match.group(1)
        child.sendline(phrases[first])
        # Said before the second custodian is asked anything.
        child.expect(f"drive {first}'s share says 3 drives are needed and only 2 of the domain")
        child.expect("connect 1 more")
        child.expect(r"Passphrase of the custodian of drive (\S+): ")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130
