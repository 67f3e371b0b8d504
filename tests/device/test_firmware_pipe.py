"""The drive firmware end to end: the real device/main.py on the MicroPython unix port with
the heap of fwpipe.Firmware, driven through pipes with the protocol package alone (see
fwpipe.py)."""

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fwpipe import CUSTODIAN, OWNER, DriveError, Firmware

from protocol import cbor, errors, framing, messages, transcript

ROOM = framing.payload_room(framing.MAX_FRAME)


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Firmware]:
    fw = Firmware(tmp_path / "flash", CAPACITY=4 << 20)
    fw.start()
    try:
        yield fw
    finally:
        fw.kill()


@pytest.fixture
def owned(drive: Firmware) -> Firmware:
    drive.hello()
    drive.claim()
    drive.auth(0)
    return drive


def error_of(fw: Firmware, msg_id: int, body: dict | None = None) -> DriveError:
    with pytest.raises(DriveError) as info:
        fw.call(msg_id, body)
    return info.value


def auth_error(fw: Firmware, role: int, credential: bytes | None = None) -> DriveError:
    with pytest.raises(DriveError) as info:
        fw.auth(role, credential)
    return info.value


def wire_error(fw: Firmware, wire: bytes) -> tuple[int, dict]:
    """Send raw bytes, expect an ERROR: (seq, fields)."""
    fw.write(wire)
    msg_id, _, seq, fields, (mac, _) = fw.read_frame()
    assert msg_id == messages.ERROR and mac is None, (msg_id, fields)
    return seq, fields


def test_hello_on_a_blank_drive(drive: Firmware) -> None:
    hello = drive.hello()
    assert messages.check(messages.REPLIES[messages.HELLO_R], hello) is None
    assert hello[1] == transcript.PROTOCOL
    assert hello[2] == "1.0.0"
    assert hello[3] == drive.serial
    assert hello[4] == "blank"
    assert hello[5] is None and hello[8] is None and hello[9] is None
    assert hello[6] == framing.MAX_FRAME
    assert set(hello[7]) == {"storage", "resume", "presence"}
    assert hello[10] == 4 << 20 and hello[11] == 4 << 20
    assert len(hello[14]) == 32 and hello[15] == 0 and hello[16] == 0
    assert 12 not in hello and 13 not in hello  # no exact counts in the clear
    assert drive.stop() == 0  # end of input: a clean exit
    assert "Traceback" not in drive.stderr()


def test_identity_is_made_once_and_outlives_a_reset(drive: Firmware) -> None:
    identity = drive.hello()[14]
    drive.restart()
    assert drive.hello()[14] == identity
    drive.claim()
    drive.auth(1)  # fwpipe checks the signature against this key
    assert drive.call(messages.FACTORY_RESET) == {}
    drive.session = None
    assert drive.hello()[14] == identity
    other = Firmware(drive.flash.parent / "other", serial=drive.serial).start()
    try:
        assert other.hello()[14] != identity  # another board, the same serial
    finally:
        other.kill()


def test_claim_once(drive: Firmware) -> None:
    assert drive.claim() == {}
    again = {1: OWNER, 2: CUSTODIAN, 3: b"s", 4: {}, 5: b"d"}
    assert error_of(drive, messages.CLAIM, again).code == errors.NOT_AUTHENTICATED
    with pytest.raises(DriveError) as info:
        drive.enrol()
    assert info.value.code == errors.WRONG_STATE
    hello = drive.hello()
    assert hello[4] == "owned" and hello[5] == b"D" * 16 and hello[8] == b"salt" * 4
    assert hello[9] == {"alg": "argon2id", "t": 3, "m": 65536, "p": 1}
    drive.restart()
    assert drive.hello()[4] == "owned"
    drive.auth(0)  # the masked credentials arrived as they were sent
    drive.auth(1)


def test_claim_only_in_an_enrol_session(drive: Firmware) -> None:
    """Sent in the clear, a claim is refused: a tap on the line would learn it."""
    plain = {1: OWNER, 2: CUSTODIAN, 3: b"salt", 4: {}, 5: b"d"}
    assert error_of(drive, messages.CLAIM, plain).code == errors.NOT_AUTHENTICATED
    assert drive.hello()[4] == "blank"
    drive.enrol()
    for msg_id in (messages.LIST, messages.SPACE):  # an enrol session only claims
        err = error_of(drive, msg_id)
        assert err.code == errors.NOT_AUTHENTICATED and err.maced
    assert not (drive.flash / "state.cbor").exists()


def test_claim_checks_its_body(drive: Firmware) -> None:
    drive.enrol()
    bad = {1: OWNER[:31], 2: CUSTODIAN, 3: b"salt", 4: {}, 5: b"d"}
    assert error_of(drive, messages.CLAIM, bad).code == errors.BAD_BODY
    assert error_of(drive, messages.CLAIM, {1: OWNER}).code == errors.BAD_BODY
    assert drive.hello()[4] == "blank"


def test_blank_drive_refuses_auth_and_storage(drive: Firmware) -> None:
    assert error_of(drive, messages.AUTH_BEGIN, {1: 0, 2: os.urandom(32)}).code == (
        errors.WRONG_STATE
    )
    assert error_of(drive, messages.LIST).code == errors.NOT_AUTHENTICATED
    assert error_of(drive, messages.AUTH_PROVE, {1: bytes(32)}).code == errors.WRONG_STATE


def test_session_basics(owned: Firmware) -> None:
    space = owned.call(messages.SPACE)
    assert space == {1: 4 << 20, 2: 4 << 20, 3: 0, 4: 0}
    # HELLO in a session: answered in the clear, the session goes on.
    owned.hello()
    assert owned.call(messages.LIST) == {1: [], 2: False}
    assert owned.call(messages.SESSION_END) == {}
    owned.session = None
    assert error_of(owned, messages.LIST).code == errors.NOT_AUTHENTICATED
    owned.auth(1)
    assert owned.call(messages.LIST) == {1: [], 2: False}


def test_wrong_credential_is_counted_across_restart(drive: Firmware) -> None:
    drive.claim()
    err = auth_error(drive, 0, bytes(32))
    assert err.code == errors.AUTH_FAILED and not err.maced
    assert "wrong credential" in str(err) and "of 10" not in str(err)
    drive.restart()
    drive.auth(1)
    assert drive.call(messages.SPACE)[3] == 1
    drive.auth(0)
    assert drive.call(messages.SPACE)[3] == 0


def test_an_abandoned_attempt_counts(drive: Firmware) -> None:
    """A guesser who stops after the challenge (having learnt whether its one guess was
    right) has spent an attempt, even across a power cut."""
    drive.claim()
    drive.begin(1, bytes(32))
    drive.kill()
    drive.start()
    drive.auth(0)
    assert drive.call(messages.SPACE)[4] == 1


def test_nothing_locks(drive: Firmware) -> None:
    drive.claim()
    for i in range(12):
        for role in (0, 1):
            err = auth_error(drive, role, bytes(32))
            assert err.code == errors.AUTH_FAILED, (i, err)
    drive.restart()
    drive.auth(1)  # the rightful custodian still gets in
    drive.auth(0)
    assert drive.call(messages.SPACE)[4] == 0


def test_lost_counters_count_as_the_worst_case(tmp_path: Path) -> None:
    fw = Firmware(tmp_path / "flash", BACKOFF_MS=80).start()
    try:
        fw.claim()
        fw.kill()
        (fw.flash / "auth").unlink()  # as a power cut inside a rename may leave it
        fw.start()
        hello = fw.hello()
        assert (hello[15], hello[16]) == (10_000, 60_000)  # the longest waits, not none
    finally:
        fw.kill()


def test_put_and_read_100k(owned: Firmware) -> None:
    data = os.urandom(100 * 1024 + 3)
    assert owned.put("obj.1", data) == 0
    assert owned.get("obj.1", len(data)) == data
    digest = hashlib.sha256(data).digest()
    assert owned.call(messages.STAT, {1: "obj.1"}) == {1: "obj.1", 2: len(data), 3: digest}
    assert owned.call(messages.VERIFY, {1: "obj.1"}) == {1: digest, 2: len(data), 3: True}
    for offset, length in ((0, 1), (5, 23), (1000, 255), (4096, 256), (len(data) - 10, 100)):
        got = owned.call(messages.READ, {1: "obj.1", 2: offset, 3: length})[1]
        assert got == data[offset : offset + length]
    # A length beyond one frame is clamped to what a frame holds.
    assert len(owned.call(messages.READ, {1: "obj.1", 2: 0, 3: 1 << 20})[1]) == ROOM
    assert owned.call(messages.READ, {1: "obj.1", 2: len(data), 3: 10})[1] == b""
    err = error_of(owned, messages.READ, {1: "obj.1", 2: len(data) + 1, 3: 10})
    assert err.code == errors.BAD_OFFSET and err.fields[3] == len(data)
    assert owned.call(messages.LIST) == {1: [["obj.1", len(data)]], 2: False}
    space = owned.call(messages.SPACE)
    assert space[2] == (4 << 20) - len(data) - 40
    owned.auth(1)  # erasing is the custodian's
    assert owned.call(messages.DELETE, {1: "obj.1"}) == {}
    assert error_of(owned, messages.STAT, {1: "obj.1"}).code == errors.NOT_FOUND
    assert error_of(owned, messages.DELETE, {1: "obj.1"}).code == errors.NOT_FOUND


def test_put_offsets_and_digest(owned: Firmware) -> None:
    data = os.urandom(10000)
    digest = hashlib.sha256(data).digest()
    assert error_of(owned, messages.PUT_DATA, {1: 0, 2: b"x"}).code == errors.NO_PUT_OPEN
    assert owned.call(messages.PUT_OPEN, {1: "p", 2: len(data), 3: digest}) == {1: 0}
    assert owned.call(messages.PUT_DATA, {1: 0, 2: data[:4000]}) == {1: 4000}
    err = error_of(owned, messages.PUT_DATA, {1: 3000, 2: data[3000:4000]})
    assert err.code == errors.BAD_OFFSET and err.fields[3] == 4000
    err = error_of(owned, messages.PUT_COMMIT, {1: "p"})
    assert err.code == errors.BAD_OFFSET and err.fields[3] == 4000
    assert owned.call(messages.PUT_DATA, {1: 4000, 2: data[4000:8000]}) == {1: 8000}
    assert owned.call(messages.PUT_DATA, {1: 8000, 2: data[8000:]}) == {1: 10000}
    assert owned.call(messages.PUT_COMMIT, {1: "p"}) == {1: digest, 2: 10000}
    # A wrong digest: refused at commit, nothing kept.
    other = os.urandom(3000)
    owned.call(messages.PUT_OPEN, {1: "p2", 2: len(other), 3: bytes(32)})
    owned.call(messages.PUT_DATA, {1: 0, 2: other})
    assert error_of(owned, messages.PUT_COMMIT, {1: "p2"}).code == errors.DIGEST_MISMATCH
    assert os.listdir(owned.flash / "tmp") == []
    assert error_of(owned, messages.STAT, {1: "p2"}).code == errors.NOT_FOUND
    assert owned.get("p", len(data)) == data
    assert error_of(owned, messages.PUT_OPEN, {1: "q", 2: 1, 3: b"short"}).code == (errors.BAD_BODY)


def test_full_is_refused_before_writing(tmp_path: Path) -> None:
    fw = Firmware(tmp_path / "flash", CAPACITY=50000).start()
    try:
        fw.claim()
        fw.auth(0)
        err = error_of(fw, messages.PUT_OPEN, {1: "big", 2: 60000, 3: bytes(32)})
        assert err.code == errors.FULL
        assert os.listdir(fw.flash / "tmp") == []
        fw.put("fits", os.urandom(40000))
        assert fw.call(messages.SPACE) == {1: 50000, 2: 50000 - 40040, 3: 0, 4: 0}
    finally:
        fw.kill()


def test_put_resumes_after_the_drive_is_killed(owned: Firmware) -> None:
    data = os.urandom(60 * ROOM + 123)
    digest = hashlib.sha256(data).digest()
    assert owned.call(messages.PUT_OPEN, {1: "resumed", 2: len(data), 3: digest}) == {1: 0}
    sent = []
    for i in range(12):
        chunk = data[i * ROOM : (i + 1) * ROOM]
        owned.write(owned.frame(messages.PUT_DATA, {1: i * ROOM, 2: chunk}, owned.session))
        sent.append(owned.seq)
    for seq in sent[:8]:
        owned.reply(seq)
    owned.kill()  # SIGKILL with frames in flight
    owned.start()
    owned.auth(0)
    offset = owned.call(messages.PUT_OPEN, {1: "resumed", 2: len(data), 3: digest})[1]
    assert 8 * ROOM <= offset <= 12 * ROOM
    assert owned.put("resumed", data, start=offset) == offset
    assert owned.get("resumed", len(data)) == data
    assert os.listdir(owned.flash / "tmp") == []


def test_line_damage_gets_error_frames(owned: Firmware) -> None:
    # Garbage up to a delimiter.
    seq, fields = wire_error(owned, b"\x07garbage\x01\x02\x00")
    assert seq == 0 and fields[1] in (errors.MALFORMED_FRAME, errors.CRC)
    # A frame longer than the drive's maximum.
    seq, fields = wire_error(owned, b"\x55" * 6000 + b"\x00")
    assert seq == 0 and fields[1] == errors.FRAME_TOO_LARGE
    # A MACed frame damaged on the line: CRC error, no counter moved, so the same frame
    # sent again is accepted.
    good = owned.frame(messages.SPACE, {}, owned.session)
    seq_good = owned.seq
    bad = bytearray(good)
    bad[3] ^= 0x40
    if 0 in bad[:-1]:
        bad = bytearray(good)
        bad[4] = 0x7F if bad[4] != 0x7F else 0x7E
    seq, fields = wire_error(owned, bytes(bad))
    assert seq == 0 and fields[1] in (errors.CRC, errors.MALFORMED_FRAME)
    owned.write(good)
    assert owned.reply(seq_good)[1] == {1: 4 << 20, 2: 4 << 20, 3: 0, 4: 0}
    # A frame of an unknown protocol version.
    raw = bytearray(framing.build_frame(messages.HELLO, 9, b"\xa0"))
    frame = bytearray(framing.cobs_decode(bytes(raw[:-1])))
    frame[0] = 9
    frame[-4:] = (framing.binascii.crc32(frame[:-4]) & 0xFFFFFFFF).to_bytes(4, "little")
    seq, fields = wire_error(owned, framing.cobs_encode(bytes(frame)) + b"\x00")
    assert fields[1] == errors.UNSUPPORTED_VERSION
    # The drive keeps serving, the session too.
    assert owned.call(messages.LIST) == {1: [], 2: False}
    assert owned.hello()[3] == owned.serial


def test_unknown_message_and_bad_bodies(owned: Firmware) -> None:
    assert error_of(owned, 0x7E).code == errors.UNKNOWN_MESSAGE
    err = error_of(owned, messages.STAT, {})
    assert err.code == errors.BAD_BODY and "missing field 1" in err.text
    assert error_of(owned, messages.STAT, {1: b"bytes"}).code == errors.BAD_BODY
    for name in ("../x", ".hidden", "a/b", "x" * 65):
        assert error_of(owned, messages.STAT, {1: name}).code == errors.BAD_NAME
        assert error_of(owned, messages.PUT_OPEN, {1: name, 2: 1, 3: bytes(32)}).code == (
            errors.BAD_NAME
        )
    # A body that is not CBOR at all.
    header = bytes([framing.VERSION, messages.LIST, framing.FLAG_MAC, 0, 77])
    session = owned.session
    assert session is not None
    body = b"\xff\xff"
    wire = framing.build_frame(messages.LIST, 77, body, session.h2d.tag(header + body))
    owned.write(wire)
    with pytest.raises(DriveError) as info:
        owned.reply(77)
    assert info.value.code == errors.BAD_BODY and info.value.maced
    assert owned.call(messages.SPACE)[1] == 4 << 20


def test_replayed_frame_ends_the_session(owned: Firmware) -> None:
    wire = owned.frame(messages.SPACE, {}, owned.session)
    owned.write(wire)
    owned.reply(owned.seq)
    owned.write(wire)  # the same frame again
    with pytest.raises(DriveError) as info:
        owned.reply()
    assert info.value.code == errors.SESSION_MAC and not info.value.maced
    assert owned.session is None
    assert error_of(owned, messages.LIST).code == errors.NOT_AUTHENTICATED


def test_altered_frame_ends_the_session(owned: Firmware) -> None:
    session = owned.session
    assert session is not None
    seq = owned.next_seq()
    body = cbor.encode({1: "name"})
    header = bytes([framing.VERSION, messages.STAT, framing.FLAG_MAC, seq >> 8, seq & 0xFF])
    mac = session.h2d.tag(header + body)
    altered = cbor.encode({1: "nama"})  # CRC recomputed: only the MAC can tell
    owned.write(framing.build_frame(messages.STAT, seq, altered, mac))
    with pytest.raises(DriveError) as info:
        owned.reply(seq)
    assert info.value.code == errors.SESSION_MAC and info.value.seq == seq
    # An unMACed storage request after that: no session.
    owned.session = None
    assert error_of(owned, messages.LIST).code == errors.NOT_AUTHENTICATED


def test_custodian_reads_and_erases_but_never_writes(owned: Firmware) -> None:
    data = os.urandom(5000)
    owned.put("shared", data)
    owned.put("spare", b"x")
    owned.auth(1)
    assert owned.get("shared", len(data)) == data
    assert owned.call(messages.LIST)[1] == [["shared", 5000], ["spare", 1]]
    assert owned.call(messages.VERIFY, {1: "shared"})[3] is True
    owned.call(messages.SPACE)
    writes = [
        (messages.PUT_OPEN, {1: "x", 2: 1, 3: bytes(32)}),
        (messages.PUT_DATA, {1: 0, 2: b"x"}),
        (messages.PUT_COMMIT, {1: "x"}),
    ]
    for msg_id, body in writes:
        err = error_of(owned, msg_id, body)
        assert err.code == errors.PERMISSION and err.maced
    assert owned.call(messages.DELETE, {1: "spare"}) == {}
    assert owned.call(messages.STAT, {1: "shared"})[2] == 5000


def test_an_owner_adds_but_never_erases_or_replaces(owned: Firmware) -> None:
    """A compromised host holds the owner credential: it must not spoil a backup."""
    data = os.urandom(3000)
    owned.put("set-1", data)
    assert error_of(owned, messages.DELETE, {1: "set-1"}).code == errors.PRESENCE_REQUIRED
    assert error_of(owned, messages.FACTORY_RESET).code == errors.PRESENCE_REQUIRED
    opened = {1: "set-1", 2: 5, 3: hashlib.sha256(b"other").digest()}
    err = error_of(owned, messages.PUT_OPEN, opened)
    assert err.code == errors.EXISTS and err.maced
    assert owned.get("set-1", len(data)) == data
    owned.put("sealkeep-firmware.ok", b"a 1.0.0")  # a boot consumes these: replaceable
    owned.put("sealkeep-firmware.ok", b"b 1.0.0")


def test_factory_reset(owned: Firmware) -> None:
    owned.put("doomed", b"bye")
    owned.call(messages.SESSION_END)
    owned.session = None
    assert error_of(owned, messages.FACTORY_RESET).code == errors.PRESENCE_REQUIRED
    assert owned.hello()[4] == "owned"
    button = owned.flash / "button"
    button.write_bytes(b"")
    assert owned.call(messages.FACTORY_RESET) == {}
    assert not button.exists()  # consumed
    hello = owned.hello()
    assert hello[4] == "blank" and hello[5] is None and hello[11] == 4 << 20
    assert os.listdir(owned.flash / "obj") == []
    # The custodian's session may reset without the button; the owner's may not.
    owned.claim()
    owned.auth(0)
    owned.put("doomed", b"again")
    assert error_of(owned, messages.FACTORY_RESET).code == errors.PRESENCE_REQUIRED
    owned.auth(1)
    assert owned.call(messages.FACTORY_RESET) == {}
    owned.session = None
    assert owned.hello()[4] == "blank"
    assert error_of(owned, messages.FACTORY_RESET).code == errors.PRESENCE_REQUIRED


def test_secrets_are_sealed_under_the_device_key(tmp_path: Path) -> None:
    key = tmp_path / "device.key"
    key.write_bytes(os.urandom(32))
    fw = Firmware(tmp_path / "flash", DEVICE_KEY=str(key)).start()
    try:
        identity = fw.hello()[14]
        fw.claim()
        for name in ("ident", "state.cbor"):
            raw = (fw.flash / name).read_bytes()
            assert raw[:4] == b"SKS1", name
        assert b"salt" not in (fw.flash / "state.cbor").read_bytes()
        assert identity not in (fw.flash / "ident").read_bytes()
        fw.restart()
        fw.auth(0)  # the drive opens its own sealed state
        fw.kill()
        key.write_bytes(os.urandom(32))  # the flash copied to another board
        fw.start()
        assert fw.hello()[14] != identity
        with pytest.raises(DriveError) as info:
            fw.auth(0)
        assert info.value.code == errors.INTERNAL
    finally:
        fw.kill()


def test_list_pages_long_names(owned: Firmware) -> None:
    names = sorted(f"{i:03d}" + "n" * 61 for i in range(40))
    for i, name in enumerate(names):
        owned.put(name, bytes([i]) * i)

    def listing(prefix: str) -> tuple[list, int]:
        seen: list = []
        body: dict = {2: prefix}
        pages = 0
        while True:
            page = owned.call(messages.LIST, body)
            assert 0 < len(page[1]) <= 8  # a page's names are held at once: few
            seen += page[1]
            pages += 1
            if not page[2]:
                return seen, pages
            body = {1: page[1][-1][0], 2: prefix}

    assert listing("") == ([[name, i] for i, name in enumerate(names)], 5)
    assert listing("01") == ([[n, 10 + i] for i, n in enumerate(names[10:20])], 2)
    owned.hello()


def test_backoff_after_three_failures(tmp_path: Path) -> None:
    fw = Firmware(tmp_path / "flash", BACKOFF_MS=80).start()
    try:
        fw.claim()
        took = []
        for _ in range(5):
            start = time.monotonic()
            assert auth_error(fw, 1, bytes(32)).code == errors.AUTH_FAILED
            took.append(time.monotonic() - start)
        # 3 failures on record: 80 ms, then 160 ms; none before.
        assert max(took[:3]) < 0.08
        assert 0.08 <= took[3] < 0.16 + 0.5
        assert 0.16 <= took[4] < 0.32 + 0.5
        hello = fw.hello()
        assert hello[15] == 0 and hello[16] == 320  # only the wait, and per role
        fw.auth(0)
        assert fw.call(messages.SPACE)[4] == 5
        fw.auth(1)
        assert fw.call(messages.SPACE)[4] == 0
    finally:
        fw.kill()
