"""A drive's retention rule, end to end on the MicroPython unix port: given at CLAIM, it
lets the owner drop a set once enough sets committed after it are held, and nothing else;
the custodian and the button erase as before."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fwpipe import DriveError, Firmware

from protocol import errors, messages

SET = messages.SET_PREFIX


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Firmware]:
    fw = Firmware(tmp_path / "flash", CAPACITY=4 << 20)
    fw.start()
    try:
        yield fw
    finally:
        fw.kill()


def error_of(fw: Firmware, msg_id: int, body: dict | None = None) -> DriveError:
    with pytest.raises(DriveError) as info:
        fw.call(msg_id, body)
    return info.value


def delete_error(fw: Firmware, name: str) -> DriveError:
    return error_of(fw, messages.DELETE, {1: name})


def names(fw: Firmware) -> list[str]:
    return [entry[0] for entry in fw.call(messages.LIST)[1]]


def newer(fw: Firmware, name: str) -> int | None:
    return fw.call(messages.STAT, {1: name}).get(4)


def test_without_retention_the_owner_never_deletes(drive: Firmware) -> None:
    drive.claim()
    assert drive.hello()[17] == 0  # no rule
    drive.auth(0)
    for i in range(4):
        drive.put(f"{SET}{i}", os.urandom(100))
    err = delete_error(drive, SET + "0")
    assert err.code == errors.PRESENCE_REQUIRED and err.maced
    assert "custodian or the button" in err.text
    assert 4 not in drive.call(messages.STAT, {1: SET + "0"})  # no count to report
    assert names(drive) == [f"{SET}{i}" for i in range(4)]


def test_retention_keeps_a_set_until_n_newer_are_held(drive: Firmware) -> None:
    drive.claim(retention=2)
    assert drive.hello()[17] == 2
    drive.auth(0)
    # Committed in this order, whatever their names say.
    drive.put(SET + "c", b"oldest")
    drive.put(SET + "a", b"middle")
    err = delete_error(drive, SET + "c")
    assert err.code == errors.RETAINED and err.maced
    assert "retention 2 keeps it" in err.text and "custodian or the button" in err.text
    assert newer(drive, SET + "c") == 1
    drive.put("share", b"not a set")
    assert delete_error(drive, SET + "c").code == errors.RETAINED  # other objects count not
    drive.put(SET + "b", b"newest")
    assert [newer(drive, SET + n) for n in "cab"] == [2, 1, 0]
    assert drive.call(messages.DELETE, {1: SET + "c"}) == {}
    assert SET + "c" not in names(drive)
    assert delete_error(drive, SET + "a").code == errors.RETAINED  # one newer is held
    # Only sets: the share and the domain record stay the custodian's to erase.
    assert delete_error(drive, "share").code == errors.RETAINED
    assert delete_error(drive, SET + "gone").code == errors.NOT_FOUND
    assert 4 not in drive.call(messages.STAT, {1: "share"})


def test_only_sets_still_held_count(drive: Firmware) -> None:
    """A newer set the custodian erased no longer vouches for an older one."""
    drive.claim(retention=1)
    drive.auth(0)
    drive.put(SET + "1", b"one")
    drive.put(SET + "2", b"two")
    drive.auth(1)
    assert drive.call(messages.DELETE, {1: SET + "2"}) == {}
    drive.auth(0)
    assert newer(drive, SET + "1") == 0
    assert delete_error(drive, SET + "1").code == errors.RETAINED
    drive.put(SET + "3", b"three")
    assert drive.call(messages.DELETE, {1: SET + "1"}) == {}


def test_custodian_and_button_erase_as_before(drive: Firmware) -> None:
    drive.claim(retention=3)
    drive.auth(0)
    drive.put(SET + "1", b"one")
    drive.put(SET + "2", b"two")
    drive.put("share", b"share")
    # The button, pressed while the owner asks: erased whatever the rule says.
    (drive.flash / "button").write_bytes(b"")
    assert drive.call(messages.DELETE, {1: SET + "1"}) == {}
    assert not (drive.flash / "button").exists()
    # The custodian erases the newest set, and what is not a set.
    drive.auth(1)
    assert drive.call(messages.DELETE, {1: SET + "2"}) == {}
    assert drive.call(messages.DELETE, {1: "share"}) == {}
    assert names(drive) == []
    # Without a session the button alone still erases, and nothing else does.
    drive.auth(0)
    drive.put(SET + "3", b"three")
    drive.call(messages.SESSION_END)
    drive.session = None
    assert delete_error(drive, SET + "3").code == errors.PRESENCE_REQUIRED
    (drive.flash / "button").write_bytes(b"")
    assert drive.call(messages.DELETE, {1: SET + "3"}) == {}


def test_commit_order_survives_restarts_and_a_lost_counter(drive: Firmware) -> None:
    drive.claim(retention=2)
    drive.auth(0)
    drive.put(SET + "x", b"first")
    drive.put(SET + "y", b"second")
    drive.restart()
    assert drive.hello()[17] == 2  # the rule is in the claim, read at boot
    drive.auth(0)
    drive.put(SET + "a", b"third")  # numbered after the two before the restart
    assert [newer(drive, SET + n) for n in "xya"] == [2, 1, 0]
    drive.auth(1)
    drive.call(messages.DELETE, {1: SET + "a"})  # the newest goes
    counter = int((drive.flash / "seq" / ".n").read_text())
    drive.kill()
    (drive.flash / "seq" / ".n").unlink()  # as a cut inside its rename could leave it
    drive.start()
    drive.auth(0)
    drive.put(SET + "b", b"fourth")
    assert [newer(drive, SET + n) for n in "xyb"] == [2, 1, 0]
    assert drive.call(messages.DELETE, {1: SET + "x"}) == {}
    assert delete_error(drive, SET + "y").code == errors.RETAINED
    drive.restart()
    drive.auth(0)
    drive.put(SET + "c", b"fifth")
    assert int((drive.flash / "seq" / ".n").read_text()) >= counter
    assert drive.call(messages.DELETE, {1: SET + "y"}) == {}


def test_the_rule_holds_until_a_factory_reset(drive: Firmware) -> None:
    drive.claim(retention=1)
    with pytest.raises(DriveError) as info:
        drive.claim()  # no second claim, so no other rule
    assert info.value.code == errors.WRONG_STATE
    drive.session = None
    assert drive.hello()[17] == 1
    drive.auth(0)
    drive.put(SET + "1", b"one")
    drive.auth(1)
    assert drive.call(messages.FACTORY_RESET) == {}
    drive.session = None
    hello = drive.hello()
    assert hello[4] == "blank" and hello[17] == 0
    assert os.listdir(drive.flash / "seq") == []  # the numbers and their counter too
    drive.claim()  # claimed again without a rule: custodians only
    assert drive.hello()[17] == 0
    drive.auth(0)
    drive.put(SET + "1", b"one")
    drive.put(SET + "2", b"two")
    assert delete_error(drive, SET + "1").code == errors.PRESENCE_REQUIRED
