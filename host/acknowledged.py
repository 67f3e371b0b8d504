"""Objects an operator has acknowledged will not be backed up.

A slot often holds keys that can never leave it (non-extractable by policy). ``backup``
lists every object it left out, and on the tenth night the same list hides the one new
object that matters. ``acknowledged`` in ``sealkeep.toml`` names the objects the operator
has looked at; ``backup`` then counts them in one line and still lists every other object
in full. Each entry is a token label (every object with that label), or an inline table
with ``label`` and/or ``id`` (hex) for one object::

    acknowledged = ["root-ca-key", { label = "hsm-attest", id = "0a1b" }]

Acknowledging changes what is printed, never what is done or how a command exits: an object
the token refused although it marks it extractable still makes ``backup`` exit 8, and the
JSON still lists every object, each with ``"acknowledged": true`` or ``false``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Acknowledgement", "is_acknowledged", "parse"]


@dataclass(frozen=True)
class Acknowledgement:
    label: str | None = None
    id: bytes | None = None

    def matches(self, label: str, object_id: bytes) -> bool:
        return (self.label is None or self.label == label) and (
            self.id is None or self.id == object_id
        )


def parse(value: Any, where: str) -> list[Acknowledgement]:
    """The entries of an ``acknowledged`` setting; ValueError naming the entry that is
    not a label or a ``{label, id}`` table."""
    if not isinstance(value, list):
        raise ValueError(f"{where}: 'acknowledged' is a list of labels or {{label, id}} tables")
    entries = []
    for entry in value:
        if isinstance(entry, str) and entry:
            entries.append(Acknowledgement(label=entry))
            continue
        if isinstance(entry, dict) and entry and set(entry) <= {"label", "id"}:
            label, hex_id = entry.get("label"), entry.get("id")
            if (label is None or isinstance(label, str)) and (
                hex_id is None or isinstance(hex_id, str)
            ):
                try:
                    object_id = None if hex_id is None else bytes.fromhex(hex_id)
                except ValueError:
                    raise ValueError(
                        f"{where}: 'acknowledged' entry {entry!r}: id is not hex"
                    ) from None
                entries.append(Acknowledgement(label=label, id=object_id))
                continue
        raise ValueError(
            f"{where}: 'acknowledged' entry {entry!r} is neither a label nor a table with "
            'label and/or id (e.g. { label = "root-ca-key", id = "0a1b" })'
        )
    return entries


def is_acknowledged(entries: Iterable[Acknowledgement], label: str, object_id: bytes) -> bool:
    return any(entry.matches(label, object_id) for entry in entries)
