"""The golden wire file: every message's exact bytes, under CPython and under the unix port.

``tests/golden/frames.txt`` is written by ``tools/make-goldens`` from
``tests/golden/examples.py``. A failure here means the bytes on the wire changed: if that
is intended, regenerate the file and say so in the change; host and drive must agree.
"""

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cbor2
import pytest
from sealkeep.protocol import cbor, errors, framing, hmac256, messages, transcript

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = ROOT / "tests" / "golden"
GOLDEN = GOLDEN_DIR / "frames.txt"


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


examples: Any = load("golden_examples", GOLDEN_DIR / "examples.py")
checks: Any = load("protocol_checks_mp", Path(__file__).with_name("protocol_checks_mp.py"))
MODS = checks.Mods(cbor, framing, messages, transcript, hmac256, errors)


def test_cpython_builds_the_golden_bytes() -> None:
    golden = examples.read_golden(GOLDEN)
    built = examples.build(messages, cbor, framing, transcript)
    assert [label for label, _ in built] == [label for label, _ in golden]
    changed = [label for (label, want), (_, got) in zip(golden, built, strict=True) if want != got]
    assert not changed, f"wire bytes changed for {changed}; see tools/make-goldens"


def test_every_message_has_a_golden_frame() -> None:
    labels = {label for label, _ in examples.read_golden(GOLDEN)}
    assert set(messages.NAMES.values()) <= labels
    assert any(label.endswith("mac") for label in labels)


def test_golden_bodies_read_the_same_with_cbor2() -> None:
    for label, wire in examples.read_golden(GOLDEN):
        frame = framing.cobs_decode(wire[:-1])
        body = frame[framing.HEADER_LEN : len(frame) - framing.CRC_LEN]
        if frame[2] & framing.FLAG_MAC:
            body = body[: -framing.MAC_LEN]
        assert cbor2.loads(body) == cbor.decode(body), label
        assert cbor2.dumps(cbor2.loads(body), canonical=True) == body, label


def test_self_checks_pass_under_cpython() -> None:
    assert checks.self_checks(MODS, examples, str(GOLDEN)) == []


def test_unix_port_builds_the_golden_bytes(
    run_micropython: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    proc = run_micropython(["tests/unit/protocol_checks_mp.py", str(GOLDEN_DIR)])
    out = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and out[-1:] == ["ALL OK"], proc.stdout + proc.stderr


def test_unix_port_notices_a_changed_golden(
    tmp_path: Path, run_micropython: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    (tmp_path / "examples.py").write_bytes((GOLDEN_DIR / "examples.py").read_bytes())
    lines = GOLDEN.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("STAT_R "))
    label, hexed = lines[i].split()
    lines[i] = label + " " + hexed[:-4] + ("01" if hexed[-4:-2] != "01" else "02") + "00"
    (tmp_path / "frames.txt").write_text("\n".join(lines) + "\n")
    proc = run_micropython(["tests/unit/protocol_checks_mp.py", str(tmp_path)])
    assert proc.returncode == 1
    assert "FAIL golden STAT_R differs" in proc.stdout


def test_make_goldens_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make-goldens"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("label", ["PUT_DATA/mac", "DATA/max+mac"])
def test_maced_goldens_verify_with_the_session_keys(label: str) -> None:
    wire = dict(examples.read_golden(GOLDEN))[label]
    _, k_h2d, k_d2h = examples.session_keys(transcript)
    found = [b for b in examples.bodies(transcript, framing) if b[0] == label]
    (_, _, _, direction, counter, _) = found[0]
    frame = memoryview(framing.cobs_decode(wire[:-1]))
    _, flags, _, _, mac, signed = framing.parse_frame(frame)
    assert flags & framing.FLAG_MAC and mac is not None
    mac_state = transcript.SessionMac(k_h2d if direction == "h2d" else k_d2h)
    mac_state.counter = counter
    assert mac_state.peek(signed) == bytes(mac)
    assert len(frame) <= examples.MAX_FRAME
