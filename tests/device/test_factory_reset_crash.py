"""A factory reset cut short by a power loss: the drive comes back either untouched (owned,
every object whole) or blank and empty, never owned with part of its store erased.

The reset's own steps run under CPython with the power cut after every possible file
removal; the firmware on the unix port shows that a drive booting after a cut reset
finishes it before answering anything.
"""

import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fwpipe import Firmware

from protocol import cbor, messages

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "device") not in sys.path:
    sys.path.insert(0, str(REPO / "device"))

from fw.state import State  # noqa: E402
from fw.store import HEADER, Store  # noqa: E402

OBJECTS = {f"obj-{i}": bytes([i]) * (100 + i) for i in range(4)}
CLAIM = {3: b"salt", 4: {1: 8}, 5: b"domain", 6: b"o" * 96, 7: b"c" * 96}


class PowerCut(Exception):
    pass


def fill(root: Path) -> None:
    """An owned drive with objects, a put in progress and a failure on record."""
    root.mkdir()
    for d in ("obj", "tmp"):
        (root / d).mkdir()
    for name, data in OBJECTS.items():
        digest = hashlib.sha256(data).digest()
        (root / "obj" / name).write_bytes(digest + len(data).to_bytes(8, "big") + data)
    (root / "tmp" / "partial").write_bytes(b"\x00" * 32 + (10).to_bytes(8, "big") + b"abc")
    (root / "state.cbor").write_bytes(cbor.encode(CLAIM))
    (root / "auth").write_bytes(cbor.encode([2, 0]))


def boot(root: Path) -> tuple[State, Store]:
    state = State(str(root))
    return state, Store(str(root), 1 << 20, bytearray(512))


def consistent(root: Path) -> str:
    """'owned' or 'blank'; fails on anything in between."""
    state, store = boot(root)
    held = sorted(os.listdir(root / "obj"))
    if state.blank:
        assert held == [], f"blank drive still holds {held}"
        assert os.listdir(root / "tmp") == []
        assert not (root / "resetting").exists()
        return "blank"
    assert held == sorted(OBJECTS), f"owned drive holds only {held}"
    for name, data in OBJECTS.items():
        digest, size, intact = store.verify(name)
        assert intact and size == len(data) and digest == hashlib.sha256(data).digest()
    assert state.get(6) == CLAIM[6]
    return "owned"


@pytest.fixture
def cut_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """cut_after(n): the power goes after n more files are removed (or created)."""
    real_remove = os.remove
    real_open = open
    budget = [-1]

    def spend() -> None:
        if budget[0] == 0:
            raise PowerCut
        if budget[0] > 0:
            budget[0] -= 1

    def remove(path: str) -> None:
        spend()
        real_remove(path)

    def opener(path: str, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "w" in mode:
            spend()
        return real_open(path, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "remove", remove)
    monkeypatch.setattr("builtins.open", opener)

    def arm(n: int) -> None:
        budget[0] = n

    yield arm
    budget[0] = -1


def test_reset_cut_at_every_step_leaves_owned_or_blank(
    tmp_path: Path, cut_after: Callable[[int], None]
) -> None:
    seen: set[str] = set()
    for n in range(40):
        root = tmp_path / f"cut-{n}"
        fill(root)
        state, store = boot(root)
        cut_after(n)
        try:
            store.forget()
            state.reset()
            finished = True
        except PowerCut:
            finished = False
        cut_after(-1)
        outcome = consistent(root)
        seen.add(outcome)
        if finished:
            assert outcome == "blank"
            break
    else:
        raise AssertionError("the reset never finished within 40 file operations")
    # Cut before the mark: untouched; cut after it: the boot finished the wipe.
    assert seen == {"owned", "blank"}


def test_drive_booting_mid_reset_finishes_it(tmp_path: Path) -> None:
    fw = Firmware(tmp_path / "flash")
    fw.start()
    try:
        fw.hello()
        fw.claim()
        fw.auth(0)
        for name, data in OBJECTS.items():
            fw.put(name, data)
        # The power went right after the reset marked itself and erased one object.
        fw.kill()
        (fw.flash / "resetting").write_bytes(b"")
        os.remove(fw.flash / "obj" / "obj-0")
        fw.start()
        hello = fw.hello()
        assert hello[4] == "blank"
        assert os.listdir(fw.flash / "obj") == []
        assert not (fw.flash / "resetting").exists()
        # Claimed again, it is empty and works.
        fw.claim()
        fw.auth(0)
        assert fw.call(messages.LIST, {})[1] == []
        fw.put("fresh", b"new")
        assert fw.get("fresh", 3) == b"new"
        assert (fw.flash / "obj" / "fresh").stat().st_size == HEADER + 3
    finally:
        fw.kill()
