"""A restored key the token leaves readable is not kept (see SetContents._keep_sensitive)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pkcs11 import Attribute
from pkcs11.exceptions import AttributeReadOnly
from sealkeep.hsm_sets import SetContents
from sealkeep.manifest import Attributes


class _Key:
    """A restored key whose SENSITIVE flag the token may or may not let be set."""

    def __init__(self, sensitive: bool, settable: bool, sticks: bool = True) -> None:
        self.sensitive = sensitive
        self.settable = settable
        self.sticks = sticks

    def __setitem__(self, key: Attribute, value: Any) -> None:
        assert key == Attribute.SENSITIVE
        if not self.settable:
            raise AttributeReadOnly()
        if self.sticks:
            self.sensitive = bool(value)


class _Slot(SetContents):
    def read_attributes(
        self, obj: Any, attributes: Sequence[Attribute], session: int | None = None
    ) -> Attributes:
        assert list(attributes) == [Attribute.SENSITIVE]
        return {int(Attribute.SENSITIVE): obj.sensitive}


@pytest.mark.parametrize(
    ("key", "kept"),
    [
        (_Key(sensitive=True, settable=False), True),
        (_Key(sensitive=False, settable=True), True),  # openCryptoki 3.8 after C_UnwrapKey
        (_Key(sensitive=False, settable=False), False),
        (_Key(sensitive=False, settable=True, sticks=False), False),
    ],
)
def test_a_key_left_readable_is_refused_naming_why(key: _Key, kept: bool) -> None:
    made = {int(Attribute.SENSITIVE): key.sensitive}  # as read when the key was made
    refusal = _Slot()._keep_sensitive(key, made)
    if kept:
        assert refusal is None and key.sensitive
    else:
        assert refusal is not None
        assert "would not make it sensitive" in refusal and "anyone with the PIN" in refusal
