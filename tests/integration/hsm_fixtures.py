"""SoftHSM2 tokens for tests: a private token directory per test session (see
:mod:`sealkeep.softhsm`); subprocesses see them through :attr:`SoftHsmFarm.env`.

Use from a test module with ``pytest_plugins = ["hsm_fixtures"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sealkeep.hsm import Hsm, HsmSession
from sealkeep.samples import sample_keys
from sealkeep.softhsm import SoftHsmFarm as PrivateSoftHsm
from sealkeep.softhsm import SoftHsmToken

SO_PIN = "so-pin-5678"
USER_PIN = "user-pin-1234"
TOKEN_LABELS = ("source", "target", "spare")


class SoftHsmFarm(PrivateSoftHsm):
    """The farm with the tests' PINs as defaults."""

    def init_token(self, label: str, pin: str = USER_PIN, so_pin: str = SO_PIN) -> SoftHsmToken:
        return super().init_token(label, pin, so_pin)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmFarm]:
    """A SoftHSM2 farm with the tokens of :data:`TOKEN_LABELS`, all created up front."""
    farm = SoftHsmFarm(tmp_path_factory.mktemp("softhsm"))
    for label in TOKEN_LABELS:
        farm.init_token(label)
    farm.activate()
    yield farm
    farm.restore_environment()


@pytest.fixture(scope="session")
def hsm(softhsm: SoftHsmFarm) -> Hsm:
    return Hsm(softhsm.module)


def wipe_token(hsm: Hsm, token: SoftHsmToken) -> None:
    """Destroy every object of a token."""
    with hsm.open(token.slot_id, token.pin) as session:
        for obj in list(session.session.get_objects()):
            obj.destroy()


@pytest.fixture
def tokens(hsm: Hsm, softhsm: SoftHsmFarm) -> dict[str, SoftHsmToken]:
    """The farm's tokens, emptied before the test."""
    for token in softhsm.tokens.values():
        wipe_token(hsm, token)
    return softhsm.tokens


# --- sample keys ----------------------------------------------------------------------------


@pytest.fixture
def make_sample_keys() -> Callable[[HsmSession], dict[str, Any]]:
    """:func:`sample_keys`, as a fixture."""
    return sample_keys
