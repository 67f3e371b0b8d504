"""``tools/campaign``, a few fixed trials of every scenario: link faults, crashes, malformed
input, a hostile host, a hostile drive and quorum, against real emulated drives and
SoftHSM2 tokens, and power cuts during firmware updates (a scenario run only when named).
Nothing may be lost or altered and no failure may be unclear."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CAMPAIGN = REPO / "tools" / "campaign"
SCENARIOS = ("link", "crash", "malformed", "hostile_host", "hostile_drive", "quorum")
TRIALS = 2
# tools/campaign_lib/firmware.py PHASES: one trial each
FIRMWARE_PHASES = 8
LIMIT = 240  # seconds; it takes about 15 on this machine


def run_campaign(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("SEALKEEP_DRIVES", None)
    proc = subprocess.Popen(
        [sys.executable, str(CAMPAIGN), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its drives are in its process group: ended with it
    )
    try:
        out, err = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the campaign did not finish in {LIMIT} s:\n{err[-3000:]}") from None
    return proc.returncode, out, err


def test_campaign_loses_nothing_and_fails_only_clearly(tmp_path: Path) -> None:
    code, out, err = run_campaign(tmp_path, "--trials", str(TRIALS), "--seed", "1", "--json")
    assert "Traceback" not in err, err[-3000:]
    lines = out.strip().splitlines()
    assert lines, err[-3000:]
    summary = json.loads(lines[-1])
    assert summary["seed"] == 1 and summary["trials"] == TRIALS
    scenarios = summary["scenarios"]
    assert sorted(scenarios) == sorted(SCENARIOS)
    for name in SCENARIOS:
        counts = scenarios[name]
        assert counts["lost"] == 0, f"{name}: {counts}\n{err[-3000:]}"
        assert counts["unclear"] == 0, f"{name}: {counts}\n{err[-3000:]}"
        assert counts["trials"] == TRIALS, f"{name}: {counts}"
        # Each trial did something that was checked: an operation completed or was refused.
        assert counts["ok"] + counts["clean"] >= TRIALS, f"{name}: {counts}"
        assert counts["faults"] >= 1, f"{name}: {counts}"
    # The human table went to stderr, one per scenario.
    for name in SCENARIOS:
        assert f"== scenario {name}" in err
    assert code == 0, err[-3000:]
    # Its working folder is gone.
    assert not list(tmp_path.glob("sealkeep-campaign-*"))


def test_every_attack_and_every_lie_once(tmp_path: Path) -> None:
    """Thirteen trials of the two hostile scenarios: the first ones go through every kind of
    attack by the host and every kind of lie by a drive."""
    args = ["--trials", "13", "--seed", "1", "--json", "--only", "hostile_host"]
    code, out, err = run_campaign(tmp_path, *args, "--only", "hostile_drive")
    assert "Traceback" not in err, err[-3000:]
    scenarios = json.loads(out.strip().splitlines()[-1])["scenarios"]
    assert sorted(scenarios) == ["hostile_drive", "hostile_host"]
    for name, counts in scenarios.items():
        assert counts["lost"] == 0 and counts["unclear"] == 0, f"{name}: {counts}\n{err[-3000:]}"
        assert counts["trials"] == 13 and counts["faults"] >= 13, f"{name}: {counts}"
    assert code == 0


def test_firmware_updates_cut_short_lose_nothing(tmp_path: Path) -> None:
    """One trial of each firmware phase: a power cut during the transfer, around the install
    request, during the install, the trial boot and the confirmation, and at exact steps of
    the install, of the boot that confirms and of storing the confirmation. Each update
    ends on v2 or cleanly on v1, with every object and credential intact."""
    trials = FIRMWARE_PHASES
    args = ["--trials", str(trials), "--seed", "3", "--json", "--only", "firmware"]
    code, out, err = run_campaign(tmp_path, *args)
    assert "Traceback" not in err, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert sorted(summary["scenarios"]) == ["firmware"]
    counts = summary["scenarios"]["firmware"]
    assert counts["lost"] == 0 and counts["unclear"] == 0, f"{counts}\n{err[-3000:]}"
    assert counts["trials"] == trials and counts["ok"] + counts["clean"] == trials, counts
    assert counts["faults"] >= trials - 1, counts  # a loaded machine may miss a boot's start
    assert "== scenario firmware" in err
    assert code == 0, err[-3000:]
    assert not list(tmp_path.glob("sealkeep-campaign-*"))


def test_campaign_usage_errors_are_clear(tmp_path: Path) -> None:
    code, _out, err = run_campaign(tmp_path, "--trials", "0")
    assert code == 2
    assert "--trials must be at least 1" in err and "Traceback" not in err
