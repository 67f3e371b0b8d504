"""``acknowledged`` entries: a label names every object under it, a table narrows to an id."""

from __future__ import annotations

from typing import Any

import pytest
from sealkeep.acknowledged import is_acknowledged, parse


def test_a_label_or_a_label_and_id() -> None:
    entries = parse(["root-ca", {"label": "attest", "id": "0A1b"}, {"id": "ff"}], "sealkeep.toml")
    assert is_acknowledged(entries, "root-ca", b"\x01")
    assert is_acknowledged(entries, "root-ca", b"")
    assert is_acknowledged(entries, "attest", b"\x0a\x1b")
    assert not is_acknowledged(entries, "attest", b"\x0a\x1c")  # another key, same label
    assert is_acknowledged(entries, "anything", b"\xff")
    assert not is_acknowledged(entries, "root-ca-2", b"\x01")  # labels match whole
    assert not is_acknowledged([], "root-ca", b"\x01")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("root-ca", "is a list"),
        ([""], "neither a label nor"),
        ([3], "neither a label nor"),
        ([{}], "neither a label nor"),
        ([{"label": "x", "serial": "1"}], "neither a label nor"),
        ([{"label": 5}], "neither a label nor"),
        ([{"id": "xyz"}], "id is not hex"),
    ],
)
def test_what_is_not_an_acknowledgement_is_refused_naming_it(value: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words) as refused:
        parse(value, "/etc/sealkeep/sealkeep.toml")
    assert str(refused.value).startswith("/etc/sealkeep/sealkeep.toml: 'acknowledged'")
