"""Finding a set on the drives when one of them cannot list its objects: that drive is
named, rather than the set reported missing as if every drive had been read."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sealkeep.backupset import find_set
from sealkeep.client import ObjectInfo
from sealkeep.domain import DriveProblems
from sealkeep.errors import LinkError, SealkeepError
from sealkeep.pins import InputError

SET_A = "set-" + "ab" * 16
SET_B = "set-" + "cd" * 16


@dataclass
class StandIn:
    """What find_set uses of a logged-in drive: its name and its client's list()."""

    name: str
    sets: list[str]
    failure: SealkeepError | None = None

    def use(self) -> tuple[StandIn, None]:
        return self, None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        if self.failure is not None:
            raise self.failure
        return [ObjectInfo(n, 100, None) for n in self.sets if n.startswith(prefix)]


def broken(name: str) -> StandIn:
    return StandIn(name, [], LinkError("no reply from the drive within 1 s to LIST"))


def test_set_found_on_a_readable_drive() -> None:
    drives = [broken("drive SK-BAD"), StandIn("drive SK-GOOD", [SET_A])]
    assert find_set(drives, "abab") == SET_A  # type: ignore[arg-type]


def test_unreadable_drive_is_named_when_the_set_is_found_nowhere() -> None:
    drives = [broken("drive SK-BAD"), StandIn("drive SK-GOOD", [SET_B])]
    with pytest.raises(DriveProblems) as info:
        find_set(drives, "abab")  # type: ignore[arg-type]
    text = str(info.value)
    assert "SK-BAD" in text and "cannot list its sets" in text and "no reply" in text


def test_missing_set_with_every_drive_read_is_an_input_error() -> None:
    drives = [StandIn("drive SK-ONE", [SET_B]), StandIn("drive SK-TWO", [])]
    with pytest.raises(InputError, match="no set abab"):
        find_set(drives, "abab")  # type: ignore[arg-type]


def test_an_unknown_label_is_an_input_error_or_names_the_unreadable_drive() -> None:
    with pytest.raises(InputError, match="no set has the id or label 'zz'"):
        find_set([StandIn("drive SK-ONE", [])], "zz")  # type: ignore[arg-type]
    with pytest.raises(DriveProblems, match="SK-BAD"):
        find_set([broken("drive SK-BAD")], "zz")  # type: ignore[arg-type]
