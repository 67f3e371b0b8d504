"""Scenario 3, malformed input to the drive: random and mutated frames, CBOR bodies with
wrong types, huge and negative numbers, deep nesting, unknown message ids, commands in the
wrong state, and object names that try to escape the store (these in an owner session, so
the name check itself is reached).

After every input the drive must have answered with ERROR frames only (or nothing, for a
frame it could not even delimit), still answer HELLO, and still be the same process. A
name that escapes being accepted, or the canary object changing, counts as lost.

The protocol and codec modules are also fuzzed in-process here (a quick loop; the
hypothesis properties live in tests/unit/test_framing.py, test_cbor.py and
test_manifest_container.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from sealkeep.client import DriveClient
from sealkeep.emulator import Emulator
from sealkeep.errors import DriveError, SealkeepError
from sealkeep.protocol import cbor, framing, messages
from sealkeep.protocol import errors as codes

from .common import Ctx, RawLink, Tally, close_quietly, new_creds, owner_session, sha

INPUTS_PER_TRIAL = 40
FUZZ_PER_TRIAL = 300
HELLO_SEQ = 0xBEEF
ESCAPES = [
    "../state.cbor",
    "..",
    ".",
    "../../../../etc/passwd",
    "/etc/passwd",
    "obj/../../auth",
    "tmp/x",
    "a/b",
    "a\\b",
    ".hidden",
    "nul\x00byte",
    "x" * 65,
    "caf\u00e9",
    "",
    " space",
    "new\nline",
]


def _frame(msg_id: int, body: bytes, seq: int = 7, flags: int = 0) -> bytes:
    writer = framing.FrameWriter(65535)
    frame = writer.begin(msg_id, seq, flags)
    frame.extend(body)
    return bytes(writer.finish(frame, None))


def _wrong_value(rng: random.Random, kind: str) -> Any:
    choices: list[Any] = [
        -1,
        -(2**63),
        2**64 - 1,
        1.5,
        True,
        None,
        "text",
        b"\x00" * 3,
        [1, 2],
        {1: 2},
        "",
    ]
    wrong = [c for c in choices if not messages._kind_ok(kind, c)]
    return rng.choice(wrong)


def _inputs(rng: random.Random) -> list[tuple[str, bytes]]:
    """Malformed wire inputs, each ending with a delimiter."""
    out: list[tuple[str, bytes]] = []
    requests = sorted(messages.REQUESTS)
    for _ in range(INPUTS_PER_TRIAL):
        kind = rng.choice(
            ["random", "mutated", "types", "huge", "nesting", "unknown", "state", "cbor-lie"]
        )
        if kind == "random":
            data = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 400))) + b"\x00"
        elif kind == "mutated":
            msg = rng.choice(requests)
            good = bytearray(_frame(msg, cbor2.dumps({1: "name", 2: 0, 3: 10})))
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                i = rng.randrange(len(good) - 1)
                if op < 0.5:
                    good[i] ^= 1 << rng.randrange(8)
                elif op < 0.75:
                    del good[i]
                else:
                    good.insert(i, rng.randrange(256))
            data = bytes(good).replace(b"\x00", b"") + b"\x00"
        elif kind == "types":
            msg = rng.choice([m for m in requests if messages.REQUESTS[m]])
            schema = messages.REQUESTS[msg]
            wrong: Any = {}
            for key, (_name, k, _req) in schema.items():
                wrong[key] = _wrong_value(rng, k) if rng.random() < 0.7 else None
            if rng.random() < 0.2:
                wrong = rng.choice([[], "x", 5, {"1": 2}])  # not a map at all
            data = _frame(msg, cbor2.dumps(wrong))
        elif kind == "huge":
            choice = rng.randrange(4)
            if choice == 0:
                body = {1: "canary", 2: 2**64 - 1, 3: 2**64 - 1}
                data = _frame(messages.READ, cbor2.dumps(body))
            elif choice == 1:
                body = {1: "big", 2: 2**64 - 1, 3: b"x" * 32}
                data = _frame(messages.PUT_OPEN, cbor2.dumps(body))
            elif choice == 2:
                # a byte string head claiming 4 GiB, then a few bytes
                data = _frame(messages.STAT, b"\xa1\x01\x5a\xff\xff\xff\xff" + b"ab")
            else:
                # READ with a negative offset (major type 1, 8-byte argument)
                raw = b"\xa3\x01\x66canary\x02\x3b" + b"\xff" * 8 + b"\x03\x01"
                data = _frame(messages.READ, raw)
        elif kind == "nesting":
            depth = rng.choice([50, 500, 5000])
            data = _frame(messages.LIST, b"\x81" * depth + b"\x00")
        elif kind == "unknown":
            msg = rng.choice([0x00, 0x07, 0x0F, 0x19, 0x42, 0x7F, 0x81, 0x95, 0xFF])
            data = _frame(msg, b"\xa0")
        elif kind == "state":
            state_cases: list[tuple[int, dict[int, Any]]] = [
                (messages.AUTH_PROVE, {1: b"\x00" * 32}),
                (messages.PUT_DATA, {1: 0, 2: b"data"}),
                (messages.PUT_COMMIT, {1: "canary"}),
                (messages.CLAIM, {1: b"a" * 32, 2: b"b" * 32, 3: b"s", 4: {}, 5: b"d"}),
                (messages.SESSION_END, {}),
            ]
            msg, state_body = rng.choice(state_cases)
            data = _frame(msg, cbor2.dumps(state_body))
        else:
            # well-formed header, MAC flag set without a session, and a lying CBOR body
            data = _frame(rng.choice(requests), rng.randbytes(rng.randrange(0, 40)), flags=1)
        out.append((kind, data))
    return out


def run(ctx: Ctx, trials: int) -> Tally:
    tally = Tally("malformed")
    creds = new_creds(ctx.rng)
    emulator = ctx.emulator("malformed", 1)
    try:
        client = owner_session(emulator, 0, creds)
        canary = ctx.rng.randbytes(3000)
        client.put("canary", canary)
        close_quietly(client)
        pid = emulator.drives[0].pid
        flash = emulator.drives[0].flash
        outside = _outside(flash)
        for t in range(trials):
            with tally.trial(f"malformed trial {t}"):
                _wire_trial(ctx, tally, emulator, pid)
                _name_trial(ctx, tally, emulator, creds)
                _fuzz(ctx, tally)
                drive = emulator.drives[0]
                if drive.pid != pid:
                    tally.unclear_failure(f"trial {t}: the drive process changed (crashed)")
                    pid = drive.pid
                check = owner_session(emulator, 0, creds)
                try:
                    if sha(check.get("canary")) != sha(canary):
                        tally.loss(f"trial {t}: the canary object changed")
                finally:
                    close_quietly(check)
                now = _outside(flash)
                if now != outside:
                    tally.loss(f"trial {t}: files appeared outside the store: {now - outside}")
                    outside = now
    finally:
        emulator.stop()
    return tally


def _outside(flash: Path) -> set[str]:
    """Files in the drive's flash folder and beside it, other than the store and logs."""
    found = {p.name for p in flash.parent.iterdir() if not p.name.endswith(".log")}
    found |= {f"flash/{p.name}" for p in flash.iterdir()}
    return found


def _wire_trial(ctx: Ctx, tally: Tally, emulator: Emulator, pid: int | None) -> None:
    link = RawLink(emulator.drives[0].port)
    try:
        for kind, data in _inputs(ctx.rng):
            tally.faults += 1
            link.send(data)
            link.send(b"\x00" + _frame(messages.HELLO, b"\xa0", seq=HELLO_SEQ))
            answered = False
            bad: str | None = None
            replies: list[bytes] = []
            deadline = time.monotonic() + 3.0
            while not answered and time.monotonic() < deadline:
                got = link.frames(deadline - time.monotonic(), want=1)
                replies += got
                answered = any(_is_hello_answer(raw) for raw in got)
            answered = False
            for raw in replies:
                try:
                    msg_id, _f, seq, _body, _mac, _signed = framing.parse_frame(memoryview(raw))
                except framing.FrameError as exc:
                    bad = f"a damaged reply ({exc})"
                    continue
                if seq == HELLO_SEQ and msg_id == messages.HELLO_R:
                    answered = True
                    break
                if msg_id != messages.ERROR:
                    bad = f"a {messages.NAMES.get(msg_id, hex(msg_id))} reply"
            if not answered:
                alive = emulator.drives[0].pid == pid
                tally.unclear_failure(
                    f"{kind} input {data[:40].hex()}: no HELLO answer afterwards "
                    f"({'same process' if alive else 'the drive crashed'})"
                )
                link.drain()
            elif bad is not None:
                tally.unclear_failure(f"{kind} input {data[:40].hex()}: the drive sent {bad}")
            else:
                tally.clean += 1
    finally:
        link.close()


def _is_hello_answer(raw: bytes) -> bool:
    try:
        msg_id, _f, seq, _body, _mac, _signed = framing.parse_frame(memoryview(raw))
    except framing.FrameError:
        return False
    return seq == HELLO_SEQ and msg_id == messages.HELLO_R


def _name_trial(ctx: Ctx, tally: Tally, emulator: Emulator, creds: Any) -> None:
    """Escaping names, sent as real requests in an owner session (the client's own name
    check is bypassed)."""
    client = owner_session(emulator, 0, creds)
    try:
        for _ in range(4):
            name = ctx.rng.choice(ESCAPES)
            msg, body, expect = ctx.rng.choice(_name_requests(name))
            tally.faults += 1
            try:
                _call(client, msg, body, expect)
            except DriveError as exc:
                # An owner may not delete at all: refused before the name is looked at.
                erase = msg == messages.DELETE and exc.code == codes.PRESENCE_REQUIRED
                if exc.code in (codes.BAD_NAME, codes.BAD_BODY) or erase:
                    tally.clean += 1
                else:
                    tally.unclear_failure(f"name {name!r} in {messages.NAMES[msg]}: {exc.name}")
                if exc.code == codes.SESSION_MAC:
                    return
                continue
            except SealkeepError as exc:
                tally.unclear_failure(f"name {name!r} in {messages.NAMES[msg]}: {exc}")
                return
            tally.loss(f"name {name!r} in {messages.NAMES[msg]} was accepted")
    finally:
        close_quietly(client)


def _name_requests(name: str) -> list[tuple[int, dict[int, Any], int]]:
    return [
        (messages.PUT_OPEN, {1: name, 2: 4, 3: b"\x00" * 32}, messages.PUT_READY),
        (messages.STAT, {1: name}, messages.STAT_R),
        (messages.READ, {1: name, 2: 0, 3: 16}, messages.DATA),
        (messages.DELETE, {1: name}, messages.OK),
        (messages.VERIFY, {1: name}, messages.VERIFY_R),
        (messages.PUT_COMMIT, {1: name}, messages.PUT_DONE),
    ]


def _call(client: DriveClient, msg: int, body: dict[int, Any], expect: int) -> None:
    client.call(msg, body, expect)


def _fuzz(ctx: Ctx, tally: Tally) -> None:
    """In-process: the frame reader, frame parser, CBOR decoder and schema checks take any
    bytes and fail only with their own errors."""
    rng = ctx.rng
    seeds = [
        _frame(messages.READ, cbor2.dumps({1: "a", 2: 0, 3: 9})),
        _frame(messages.HELLO, b"\xa0"),
        cbor2.dumps({1: [1, {2: b"x"}], 2: "t"}),
    ]
    targets: list[tuple[str, Callable[[bytes], object]]] = [
        ("FrameReader.push", _push_all),
        ("parse_frame", lambda b: framing.parse_frame(memoryview(b))),
        ("cbor.decode", cbor.decode),
        ("messages.check", lambda b: messages.check(messages.REQUESTS[messages.READ], _lenient(b))),
    ]
    for _ in range(FUZZ_PER_TRIAL):
        base = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 6)):
            i = rng.randrange(len(base) + 1)
            action = rng.random()
            if action < 0.4 and base:
                base[min(i, len(base) - 1)] ^= 1 << rng.randrange(8)
            elif action < 0.7:
                base[i:i] = rng.randbytes(rng.randint(1, 5))
            elif base:
                del base[min(i, len(base) - 1)]
        if rng.random() < 0.1:
            base = bytearray(rng.randbytes(rng.randrange(0, 64)))
        label, target = rng.choice(targets)
        tally.faults += 1
        try:
            target(bytes(base))
        except (framing.FrameError, ValueError):
            pass
        except Exception as exc:
            tally.unclear_failure(f"in-process {label}({bytes(base).hex()}): {type(exc).__name__}")
            continue
        tally.clean += 1


def _push_all(data: bytes) -> None:
    reader = framing.FrameReader(256)
    pos = 0
    while pos < len(data):
        pos, _ = reader.push(data, pos)


def _lenient(data: bytes) -> object:
    try:
        return cbor.decode(data)
    except ValueError:
        return None
