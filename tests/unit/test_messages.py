"""Message ids, schemas, body checks, object names and error codes."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sealkeep.protocol import cbor, errors, messages
from sealkeep.protocol.messages import NAMES, REPLIES, REQUESTS, check, name_ok

KINDS = {"u", "b", "t", "?", "a", "m", "b?", "m?"}


def test_ids_names_and_schemas_agree() -> None:
    assert len(set(NAMES.values())) == len(NAMES)
    for msg_id, name in NAMES.items():
        assert getattr(messages, name) == msg_id
        assert 0 < msg_id <= 0xFF
    assert set(REQUESTS) | set(REPLIES) == set(NAMES)
    assert all(i < 0x80 for i in REQUESTS)
    assert all(i >= 0x80 for i in REPLIES)
    for request in REQUESTS:
        reply = request | 0x80
        if reply in REPLIES:
            assert NAMES[reply] in (
                NAMES[request] + "_R",
                "AUTH_CHALLENGE",
                "AUTH_OK",
                "DATA",
                "PUT_READY",
                "PUT_ACK",
                "PUT_DONE",
            )


def test_schemas_are_well_formed() -> None:
    for schema in [*REQUESTS.values(), *REPLIES.values()]:
        names = [spec[0] for spec in schema.values()]
        assert len(set(names)) == len(names)
        for key, (name, kind, required) in schema.items():
            assert isinstance(key, int) and 0 < key < 24  # one-byte CBOR keys
            assert name.isidentifier()
            assert kind in KINDS
            assert isinstance(required, bool)


def test_error_codes_are_stable_and_named() -> None:
    codes = {k: v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)}
    assert len(set(codes.values())) == len(codes)
    assert {v: k for k, v in codes.items()} == errors.NAMES
    # the wire depends on these numbers: changing one is a protocol break
    assert (errors.MALFORMED_FRAME, errors.CRC, errors.FRAME_TOO_LARGE) == (1, 2, 3)
    assert (errors.SESSION_MAC, errors.BAD_NAME, errors.FULL, errors.BAD_OFFSET) == (15, 20, 22, 23)


READ = REQUESTS[messages.READ]


@pytest.mark.parametrize(
    ("schema", "body", "problem"),
    [
        (READ, {1: "a", 2: 0, 3: 10}, None),
        (READ, {1: "a", 2: 0, 3: 10, 9: "ignored", "x": None}, None),
        (READ, {1: "a", 2: 0}, "missing field 3 (length)"),
        (READ, {}, "missing field 1 (name)"),
        (READ, {1: b"a", 2: 0, 3: 10}, "field 1 (name) has the wrong type"),
        (READ, {1: "a", 2: -1, 3: 10}, "field 2 (offset) has the wrong type"),
        (READ, {1: "a", 2: True, 3: 10}, "field 2 (offset) has the wrong type"),
        (READ, {1: "a", 2: None, 3: 10}, "field 2 (offset) has the wrong type"),
        (READ, [1, 2, 3], "body must be a map"),
        (READ, None, "body must be a map"),
        (REQUESTS[messages.HELLO], {}, None),
        (REQUESTS[messages.LIST], {}, None),
        (REQUESTS[messages.LIST], {1: 5}, "field 1 (after) has the wrong type"),
        (REQUESTS[messages.PUT_DATA], {1: 0, 2: memoryview(b"x")}, None),
        (REQUESTS[messages.PUT_DATA], {1: 0, 2: bytearray(b"x")}, None),
        (REQUESTS[messages.PUT_DATA], {1: 0, 2: "x"}, "field 2 (data) has the wrong type"),
        (REPLIES[messages.LIST_R], {1: [], 2: False}, None),
        (REPLIES[messages.LIST_R], {1: [], 2: 0}, "field 2 (more) has the wrong type"),
        (REPLIES[messages.LIST_R], {1: {}, 2: True}, "field 1 (entries) has the wrong type"),
        (
            REQUESTS[messages.CLAIM],
            {1: b"", 2: b"", 3: b"", 4: [], 5: b""},
            "field 4 (kdf) has the wrong type",
        ),
    ],
)
def test_check(schema: dict[int, tuple[str, str, bool]], body: object, problem: str | None) -> None:
    assert check(schema, body) == problem


def test_check_nullable_kinds() -> None:
    hello = {
        1: 1,
        2: "0.1",
        3: "SK1",
        4: "blank",
        5: None,
        6: 4096,
        7: [],
        8: None,
        9: None,
        10: 0,
        11: 0,
    }
    assert check(REPLIES[messages.HELLO_R], hello) is None
    assert check(REPLIES[messages.HELLO_R], {**hello, 5: "x"}) is not None
    assert check(REPLIES[messages.HELLO_R], {**hello, 9: b"x"}) is not None
    assert check(REPLIES[messages.HELLO_R], {**hello, 9: {"t": 3}}) is None
    del hello[5]
    assert check(REPLIES[messages.HELLO_R], hello) == "missing field 5 (domain)"


def test_check_after_decoding_views() -> None:
    body = cbor.decode(cbor.encode({1: 7, 2: b"payload"}), views=True)
    assert check(REQUESTS[messages.PUT_DATA], body) is None


GOOD_NAMES = ["a", "Z", "0", "-", "_", "a.b", "a..b", "bdk-2024.sk", "x" * 64, "A-Z_a-z.0-9"]
BAD_NAMES = [
    "",
    ".",
    "..",
    "../etc",
    "a/../b",
    "/abs",
    "a/b",
    "a\\b",
    "..\\x",
    ".hidden",
    "a\x00b",
    "\x00",
    "x" * 65,
    "a b",
    "a\tb",
    "a\nb",
    "bär",
    "\uff46\uff55\uff4c\uff4c",  # fullwidth letters
    "a\u2215b",  # division slash
    "\U0001f511",
    "a:b",
    "a*b",
    "~",
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_name_ok_accepts(name: str) -> None:
    assert name_ok(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_name_ok_refuses(name: str) -> None:
    assert not name_ok(name)


ALLOWED = set(messages.NAME_CHARS.decode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=70))
def test_name_ok_property(name: str) -> None:
    want = 1 <= len(name) <= 64 and not name.startswith(".") and set(name) <= ALLOWED
    assert name_ok(name) == want
    if want:
        assert "/" not in name and "\\" not in name and name not in (".", "..")
