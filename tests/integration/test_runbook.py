"""docs/runbook.md, case by case, as an operator runs it: SoftHSM2 tokens (``source`` stands
for the runbook's ``primary``, ``target`` for ``standby``, already initialised by the fixture
as `softhsm2-util --init-token` would), emulated drives, and --pin-file / --passphrases files
where the runbook's operator types at prompts."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_runner import SealkeepCli, custodian_passphrase
from sealkeep.client import DriveClient, Role
from sealkeep.errors import AuthenticationFailed
from sealkeep.hsm import Hsm
from sealkeep.transport import open_transport

if TYPE_CHECKING:
    from conftest import StartDrives
    from hsm_fixtures import SoftHsmFarm, SoftHsmToken

pytestmark = pytest.mark.integration
pytest_plugins = ["hsm_fixtures"]

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
LABELS = {"primary": "source", "standby": "target"}


class Operator:
    def __init__(self, farm: SoftHsmFarm, tmp: Path, passphrases: Path) -> None:
        self.cli = SealkeepCli(farm, tmp)
        self.passphrases = passphrases

    def __call__(self, *words: str, code: int = 0) -> Any:
        """Run ``sealkeep WORDS`` (labels mapped), with the PIN and passphrase files where the
        command takes them; the JSON document it prints."""
        argv = [LABELS.get(w, w) for w in words]
        if argv[:2] in (["domain", "recover"], ["domain", "reshare"], ["domain", "create"]):
            argv += ["--passphrases", str(self.passphrases)]
        return self.cli.json(*argv, code=code, pin=argv[0] != "drives")


def runbook_commands(section: str) -> list[list[str]]:
    """The sealkeep commands of one runbook section, in order (comments dropped)."""
    text = RUNBOOK.read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in body.split("```sh")[1:]:
        for line in block.split("```", 1)[0].splitlines():
            words = line.split("#", 1)[0].split()
            if words and words[0] == "sealkeep":
                commands.append(words[1:])
    return commands


def test_the_runbook(
    softhsm: SoftHsmFarm,
    hsm: Hsm,
    tokens: dict[str, SoftHsmToken],
    emulated_drives: StartDrives,
    make_sample_keys: Any,
    tmp_path: Path,
) -> None:
    main = emulated_drives(3, backoff_ms=40)
    spare = emulated_drives(2)
    a, b, c = (d.port for d in main.drives)
    new, new2 = (d.port for d in spare.drives)
    every = [*main.drives, *spare.drives]
    custodians = tmp_path / "custodians"
    custodians.write_text("".join(f"{d.serial} {custodian_passphrase(d.serial)}\n" for d in every))
    custodians.chmod(0o600)
    op = Operator(softhsm, tmp_path, custodians)
    names = {"A": a, "B": b, "C": c, "NEW": new, "NEW2": new2}

    def ports(spec: str) -> str:
        return ",".join(names.get(part, part) for part in spec.split(","))

    def run(words: list[str], **kwargs: Any) -> Any:
        words = [ports(w) if i and words[i - 1] == "--drives" else w for i, w in enumerate(words)]
        return op(*words, **kwargs)

    # Before the bad days: a domain of three drives on "primary", keys, a backup.
    op("domain", "create", "--slot", "primary", "--drives", ports("A,B,C"))
    with hsm.open(tokens["source"].slot_id, tokens["source"].pin) as session:
        make_sample_keys(session)
    first = op("backup", "--slot", "primary", "--drives", ports("A,B,C"), "--label", "nightly")

    # The HSM is lost: recover into "standby" from k drives, then restore.
    lost_hsm = runbook_commands("The HSM is lost")
    assert [w[:2] for w in lost_hsm] == [["domain", "recover"], *[["restore", "--set"]] * 2]
    recovered = run([*lost_hsm[0][:-1], "A,B"])
    assert recovered["slot"] == tokens["target"].slot_id
    planned = run([*lost_hsm[1], "--drives", ports("A")])
    assert planned["dry_run"] and {k["status"] for k in planned["keys"]} == {"would restore"}
    restored = run([*lost_hsm[2], "--drives", ports("A")])
    assert restored["set_id"] == first["set_id"]
    assert restored["failed"] == 0 and restored["restored"] == len(restored["keys"])

    # A drive is lost: C goes; a blank drive takes its place.
    main.kill(2)
    lost_drive = runbook_commands("A drive is lost")
    listed = run([*lost_drive[0], "--drives", ports("A,B,C,NEW")], code=3)
    states = {d["port"]: d.get("error") for d in listed["drives"]}
    assert states[c] and not states[a] and not states[new]
    reshare = [w if w != "A,B,C,D,NEW" else "A,B,NEW" for w in lost_drive[1]]
    moved = run([*reshare, "--yes"])
    assert moved["count"] == 3 and moved["old_domain_id"] != moved["domain_id"]
    sets = run([*lost_drive[2], "--drives", ports("A,B,NEW")])
    assert [len(s["present"]) for s in sets["sets"]] == [3]

    # A drive makes you wait: wrong guesses at B's custodian; drives shows the wait.
    client = DriveClient(open_transport(b), timeout=5)
    try:
        for _ in range(4):
            client.hello()
            with pytest.raises(AuthenticationFailed):
                client.authenticate(Role.CUSTODIAN, secrets.token_bytes(32))
    finally:
        client.close()
    (waiting,) = runbook_commands("A drive makes you wait")
    shown = run([*waiting, "--drives", ports("B")])["drives"][0]
    assert shown["delay_ms"]["custodian"] > 0 and shown["state"] != "blank"

    # A custodian forgot A's passphrase: the others re-share onto B, NEW and a blank NEW2.
    forgetful = main.drives[0].serial
    custodians.write_text(
        "".join(
            line + "\n"
            for line in custodians.read_text().splitlines()
            if not line.startswith(forgetful)
        )
    )
    (forgot,) = runbook_commands("A custodian forgot the passphrase")
    again = run([*forgot, "--yes"])
    assert again["count"] == 3 and again["domain_id"] != moved["domain_id"]
    assert {d["port"] for d in again["drives"]} == {b, new, new2}

    # A host was compromised: look, verify, re-share, prune what nobody made.
    compromised = runbook_commands("A host was compromised")
    group = ports("B,NEW,NEW2")
    stray = op("backup", "--slot", "primary", "--drives", group, "--label", "odd")
    listing = run([*compromised[0], "--drives", group])
    assert stray["set_id"] in {s["set_id"] for s in listing["sets"]}
    verified = run([*compromised[1], "--drives", group])
    assert verified["ok"] and verified["set_id"] == stray["set_id"]
    rotated = run([*compromised[2], "--yes"])
    assert rotated["domain_id"] != again["domain_id"]
    prune = [stray["set_id"] if w == "ID" else str(custodians) if w == "F" else w
             for w in compromised[3]]  # fmt: skip
    pruned = run([*prune, "--drives", group])
    assert pruned["problems"] == [] and len(pruned["drives"]) == 3
    left = run([*compromised[0], "--drives", group])
    assert stray["set_id"] not in {s["set_id"] for s in left["sets"]}
