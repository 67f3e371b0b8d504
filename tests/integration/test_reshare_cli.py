"""`domain reshare` from the command line says what it revokes and what it cannot: other slots
left on the old domain are named, a drive left out still holds its old share until reset,
and at a terminal it asks before replacing anything."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_runner import SealkeepCli, custodians_file
from sealkeep.commands.domain import Cancelled, confirm
from sealkeep.pins import Passphrases

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]


def sealkeep(farm: SoftHsmFarm, tmp: Path, *args: str, code: int = 0) -> Any:
    return SealkeepCli(farm, tmp).json(*args, code=code)


def test_reshare_names_the_slots_left_on_the_old_domain(
    softhsm: SoftHsmFarm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    tmp_path: Path,
) -> None:
    emulator = emulated_drives(4)
    first, spare = emulator.drives[:3], emulator.drives[3]
    custodians = custodians_file(tmp_path, emulator.drives)
    three = ",".join(d.port for d in first)
    created = sealkeep(softhsm, tmp_path, "domain", "create", "--slot", "source",
                       "--drives", three, "--passphrases", str(custodians))  # fmt: skip
    sealkeep(softhsm, tmp_path, "domain", "recover", "--slot", "target", "--drives", three,
             "--passphrases", str(custodians))  # fmt: skip

    # The third drive is left out and a blank one comes in.
    new_set = ",".join([first[0].port, first[1].port, spare.port])
    moved = sealkeep(softhsm, tmp_path, "domain", "reshare", "--slot", "source",
                     "--drives", new_set, "--passphrases", str(custodians))  # fmt: skip
    assert moved["old_domain_id"] == created["domain_id"] != moved["domain_id"]
    stale = [w for w in moved["warnings"] if "still holds the old domain" in w]
    assert len(stale) == 1 and "'target'" in stale[0]

    # What a re-share cannot revoke: the drive left out keeps its old share.
    left_out = json.loads(
        subprocess.run(
            [sys.executable, "-m", "sealkeep", "drives", "--drives", first[2].port, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )["drives"][0]
    assert left_out["state"] != "blank" and left_out["domain"] == created["domain_id"]


def test_reshare_asks_at_a_terminal_and_only_there(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def answer(reply: str) -> None:
        monkeypatch.setattr("builtins.input", lambda q: asked.append(q) or reply)

    at_terminal = io.StringIO()
    at_terminal.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", at_terminal)
    prompted = Passphrases(None)
    answer("n")
    with pytest.raises(Cancelled, match="nothing was changed"):
        confirm("Re-share?", argparse.Namespace(yes=False), prompted)
    answer("y")
    confirm("Re-share?", argparse.Namespace(yes=False), prompted)
    assert len(asked) == 2
    confirm("Re-share?", argparse.Namespace(yes=True), prompted)  # --yes: no question
    assert len(asked) == 2
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal: no question
    confirm("Re-share?", argparse.Namespace(yes=False), prompted)
    assert len(asked) == 2
