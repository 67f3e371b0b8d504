"""The README's short tour, run as written: each fenced block after a ``<!-- tour: ... -->``
marker (the HSM tour, then the firmware one), line by line, in a private SoftHSM2
configuration and a private folder.

Lines are run as a user types them, with four things a reader supplies for themselves:
- the placeholders stand for what the user's machine shows: ``/dev/pts/7``, ``/dev/pts/8``,
  ``/dev/pts/9`` for the first three emulated drives' ports, ``SPEC`` for the three drives
  a reshare moves the domain to (the first, second and fourth; the third is then retired),
  ``3f2a`` for the start of the nightly set's id, ``F`` for the custodians' passphrases
  file, ``PUBLIC-KEY`` for the hex ``firmware keygen`` printed; ``/tmp/d``, ``/tmp/b`` and
  ``/tmp/f`` are folders of the test's own;
- the slot PIN comes from ``SEALKEEP_PIN`` (the README's documented way besides
  ``--pin-file`` and the prompt);
- custodians' passphrases come from a ``--passphrases`` file of ``SERIAL PASSPHRASE`` lines
  (the README's way for automation) where a ceremony line does not name one;
- the vendor key's passphrase is in ``vp``, as its lines say;
- the new ``primary`` token gets the sample keys an operator's token would hold.
A line ending in ``&`` runs in the background until the test ends; ``export`` sets the
variable for the lines after it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import custodian_passphrase
from sealkeep.domain import ENV_KDF_FLOOR, ENV_KDF_MEMORY, ENV_KDF_TIME
from sealkeep.softhsm import SoftHsmFarm

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- tour:"
TOUR_PIN = "123456"  # the PIN the tour's softhsm2-util line gives its tokens
CEREMONIES = (("domain", "create"), ("domain", "recover"), ("domain", "reshare"))
ADD_SAMPLE_KEYS = """
import sys
from sealkeep.hsm import Hsm
from sealkeep.samples import sample_keys
hsm = Hsm(None)
(slot,) = [s.slot_id for s in hsm.slots() if s.label == sys.argv[1]]
with hsm.open(slot, sys.argv[2]) as session:
    sample_keys(session)
"""


def tour_blocks(text: str) -> list[list[str]]:
    """The commands of each block after a tour marker, comments and blank lines left out
    (a trailing ``&`` kept as its own word)."""
    blocks = []
    for marked in text.split(MARKER)[1:]:
        block = marked.split("```sh\n", 1)[1].split("```", 1)[0]
        lines = []
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                background = words[-1] == "&"
                lines.append(shlex.join(words[:-1] if background else words) + " &" * background)
        blocks.append(lines)
    assert len(blocks) == 2, "the README's two tour blocks have lost their markers"
    return blocks


def sealkeep_command() -> list[str]:
    """``sealkeep`` as the user's shell finds it: beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "sealkeep"
    found = str(beside) if beside.exists() else shutil.which("sealkeep")
    return [found] if found else [sys.executable, "-m", "sealkeep"]


class Tour:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.farm = SoftHsmFarm(tmp / "softhsm")
        self.env = {
            **self.farm.env,
            "SEALKEEP_PIN": TOUR_PIN,
            # a cheap Argon2id, the floor lowered to match: the tour's costs, not its speed
            ENV_KDF_MEMORY: "8",
            ENV_KDF_TIME: "1",
            ENV_KDF_FLOOR: "m=8,t=1",
        }
        for name in ("SEALKEEP_DRIVES", "SEALKEEP_CONFIG"):
            self.env.pop(name, None)
        self.passphrases = tmp / "custodians"
        self.names: dict[str, str] = {"F": str(self.passphrases)}
        self.background: list[subprocess.Popen[str]] = []
        self.outputs: list[tuple[str, str]] = []
        self.stderr: dict[int, str] = {}

    def word(self, word: str) -> str:
        """One word of a line, with the reader's placeholders filled in."""
        if word in self.names:
            return self.names[word]
        if "," in word:
            return ",".join(self.word(part) for part in word.split(","))
        for prefix in ("/tmp/", "@/tmp/"):
            if word.startswith(prefix):  # the tour's folders: the test's own
                return prefix.replace("/tmp/", f"{self.tmp}/") + word[len(prefix) :]
        return word

    def run(self, line: str) -> str:
        words = [self.word(w) for w in shlex.split(line.removesuffix(" &"))]
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            self.env[name] = self.word(value)
            return ""
        if words[0] == "sealkeep":
            if tuple(words[1:3]) in CEREMONIES and "--passphrases" not in words:
                words += ["--passphrases", str(self.passphrases)]
            words = [*sealkeep_command(), *words[1:]]
        if line.endswith(" &"):
            self.start(words)
            return ""
        done = subprocess.run(
            words,
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert "Traceback" not in done.stderr, (line, done.stderr)
        assert done.returncode == 0, (line, done.returncode, done.stdout, done.stderr)
        self.outputs.append((line, done.stdout))
        return done.stdout

    def start(self, words: list[str]) -> None:
        """A background command: one of the tour's emulators, whose drives.json is waited
        for; the placeholder ports are then its drives'."""
        process = subprocess.Popen(
            words,
            env=self.env,
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.background.append(process)
        drives_file = Path(words[words.index("--dir") + 1]) / "drives.json"
        deadline = time.monotonic() + 30
        while not (drives_file.exists() and "running" in self.stderr_so_far(process)):
            assert process.poll() is None, f"{shlex.join(words)} ended early"
            assert time.monotonic() < deadline, f"{shlex.join(words)}: no drives after 30 s"
            time.sleep(0.1)
        drives = json.loads(drives_file.read_text())["drives"]
        ports = [d["port"] for d in drives]
        self.names.update({f"/dev/pts/{7 + i}": port for i, port in enumerate(ports[:3])})
        self.names["SPEC"] = ",".join(ports[i] for i in (0, 1, 3))
        self.passphrases.write_text(
            "".join(f"{d['serial']} {custodian_passphrase(d['serial'])}\n" for d in drives)
        )
        self.passphrases.chmod(0o600)

    def stderr_so_far(self, process: subprocess.Popen[str]) -> str:
        # the emulator says "... running ..." on stderr once every drive answers
        assert process.stderr is not None
        os.set_blocking(process.stderr.fileno(), False)
        self.stderr[process.pid] = self.stderr.get(process.pid, "") + (process.stderr.read() or "")
        return self.stderr[process.pid]

    def stop(self) -> None:
        for process in self.background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stderr is not None:
                process.stderr.close()

    def add_sample_keys(self, label: str) -> None:
        subprocess.run(
            [sys.executable, "-c", ADD_SAMPLE_KEYS, label, TOUR_PIN],
            env=self.env,
            check=True,
            timeout=60,
        )


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[Tour]:
    running = Tour(tmp_path)
    yield running
    running.stop()


def test_the_readme_tour_runs_as_written(tour: Tour) -> None:
    lines = tour_blocks(README.read_text())[0]
    assert lines[0].startswith("sealkeep emulate") and lines[-1].startswith("sealkeep drives reset")
    said: dict[str, str] = {}
    set_id = ""
    for line in lines:
        if line.startswith("sealkeep prune"):
            backed_up = said["sealkeep backup --slot primary --label nightly"]
            (set_id,) = re.findall(r"^set ([0-9a-f]{16,}) 'nightly'", backed_up, re.M)
            tour.names["3f2a"] = set_id[:8]
        said[line] = tour.run(line)
        if "--label primary" in line:
            tour.add_sample_keys("primary")

    def output(start: str) -> str:
        return next(text for line, text in tour.outputs if line.startswith(start))

    assert len(json.loads(output("sealkeep drives --json"))["drives"]) == 5
    assert "primary" in output("sealkeep slots")
    assert "aes-local  02  no: not extractable" in output("sealkeep keys --slot primary")
    assert "any 3 of these 5 drives" in output("sealkeep domain create")
    assert "'nightly'" in output("sealkeep backup") and "written to 5 drive(s)" in output(
        "sealkeep backup"
    )
    assert "nightly" in output("sealkeep sets --set latest")
    assert output("sealkeep verify").count(" good ") == 5
    assert "dry run:" in output("sealkeep restore --set nightly --slot primary --dry-run")
    assert "rebuilt into slot" in output("sealkeep domain recover --slot standby")
    assert "warning: warning:" not in output("sealkeep domain reshare")
    assert "any 2 of these 3 drives" in output("sealkeep domain reshare")
    assert f"set {set_id} erased on 5 drive(s)" in output("sealkeep prune")
    assert "erased on 1 drive(s)" in output("sealkeep drives reset")
    # the retired drive is blank now: what `sealkeep drives` shows the user next
    retired = tour.run(f"sealkeep drives --drives {tour.names['/dev/pts/9']} --json")
    assert [d["state"] for d in json.loads(retired)["drives"]] == ["blank"]


def test_the_readme_firmware_tour_runs_as_written(tour: Tour) -> None:
    vendor_passphrase = tour.tmp / "vp"
    vendor_passphrase.write_text("vendor signing key: quartz harbour lantern 41\n")
    vendor_passphrase.chmod(0o600)
    lines = tour_blocks(README.read_text())[1]
    assert lines[0].startswith("sealkeep firmware keygen")
    said: dict[str, str] = {}
    for line in lines:
        if "PUBLIC-KEY" in line:
            keygen = said["sealkeep firmware keygen --out vendor.key --passphrase-file vp"]
            (tour.names["PUBLIC-KEY"],) = re.findall(r"^public key: ([0-9a-f]{64})$", keygen, re.M)
        said[line] = tour.run(line)

    def output(start: str) -> str:
        return next(text for line, text in tour.outputs if line.startswith(start))

    assert "signature" in output("sealkeep firmware inspect") and "warning" not in output(
        "sealkeep firmware inspect"
    )
    assert "SK-00A1: firmware 1.2.0 (counter 3) installed" in output("sealkeep firmware install")
    # every drive of the image's emulator now runs the update, confirmed
    drives = json.loads(tour.run("sealkeep drives --drives @/tmp/f/drives.json --json"))["drives"]
    assert [(d["firmware"], d["firmware_slot"]) for d in drives] == [("1.2.1", "b")] * 5
    # and the technician's board answers as a drive under the serial it was given
    boards = json.loads((tour.tmp / "b" / "drives.json").read_text())["drives"]
    board = json.loads(tour.run(f"sealkeep drives --drives {boards[0]['port']} --json"))["drives"]
    assert [(d["serial"], d["firmware"], d["state"]) for d in board] == [
        ("SK-00A1", "1.2.0", "blank")
    ]
