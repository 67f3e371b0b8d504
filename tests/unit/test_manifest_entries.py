"""Key entries of a manifest: what a decoded entry may hold, and what is refused by name."""

from __future__ import annotations

import pytest
from sealkeep.manifest import KeyEntry, ManifestError

GOOD = {0x0: 4, 0x100: 0x1F, 0x3: "aes-1", 0x102: b"\x01", 0x104: True, 0x162: False}


def test_a_good_entry_keeps_every_attribute_exactly() -> None:
    decoded = KeyEntry.from_cbor({"attrs": dict(GOOD), "wrapped": b"\x02" * 40})
    assert decoded.attributes == GOOD
    assert [type(v) for v in decoded.attributes.values()] == [type(v) for v in GOOD.values()]
    assert decoded.wrapped == b"\x02" * 40
    assert KeyEntry.from_cbor({"attrs": {}, "wrapped": None}).attributes == {}


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({**GOOD, True: 1}, "bad attribute type True"),
        ({**GOOD, -1: 1}, "bad attribute type -1"),
        ({**GOOD, "label": 1}, "bad attribute type 'label'"),
        ({**GOOD, 0x11: 1.5}, "attribute 0x11 has a bad value"),
        ({**GOOD, 0x11: None}, "attribute 0x11 has a bad value"),
        ({**GOOD, 0x11: [1]}, "attribute 0x11 has a bad value"),
    ],
)
def test_bad_attributes_are_named(attrs: dict[object, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        KeyEntry.from_cbor({"attrs": attrs, "wrapped": None})
