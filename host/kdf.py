"""Custodian passphrases: Argon2id, two HKDF labels, and a strength check.

One Argon2id derivation of the passphrase (with the drive's salt) feeds HKDF-SHA256 twice:

- ``"sealkeep custodian credential"``: the credential the drive stores to check its custodian
  (it is what the drive's challenge-response uses);
- ``"sealkeep share seal"``: the AES-256-GCM key that seals the custodian's domain share.

The drive only ever holds the credential, which says nothing about the seal key, so a dumped
flash leaves an attacker guessing the passphrase at one Argon2id derivation per guess.
"""

from __future__ import annotations

import math
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from .errors import SealkeepError

CREDENTIAL_LABEL = b"sealkeep custodian credential"
SHARE_SEAL_LABEL = b"sealkeep share seal"

KEY_LEN = 32
SALT_LEN = 16
NONCE_LEN = 12

# Defaults: RFC 9106's second recommended option (t=3, 64 MiB) with one lane, which takes
# a fraction of a second on one core; tests pass tiny parameters.
DEFAULT_T_COST = 3
DEFAULT_M_COST_KIB = 65536
DEFAULT_PARALLELISM = 1

# Bounds applied to parameters read back from a drive, so a hostile drive cannot make the
# host allocate gigabytes or spin for minutes, nor weaken the derivation to nothing.
MIN_T_COST, MAX_T_COST = 1, 64
MIN_M_COST_KIB, MAX_M_COST_KIB = 8, 1024 * 1024
MIN_PARALLELISM, MAX_PARALLELISM = 1, 16
MIN_SALT_LEN, MAX_SALT_LEN = 8, 64

# Passphrase policy: at least 10^12 guesses as zxcvbn counts them (it knows dictionaries,
# names, dates, keyboard walks and l33t). Someone holding a dumped drive pays one
# production-cost Argon2id (64 MiB, 3 passes, ~0.2 s on one core here) per guess, so 10^12
# guesses are some 6,000 core-years to exhaust, and the 64 MiB each guess needs caps how
# many a GPU runs at once. See docs/threat-model.md.
MIN_PASSPHRASE_LEN = 12
MIN_GUESSES = 10**12
# zxcvbn's cost grows with the square of the length; longer input is judged on its start.
ZXCVBN_MAX_LENGTH = 100

# Generated passphrases: words drawn with `secrets` from zxcvbn's English frequency list,
# the 4,096 most common words of 4 to 8 letters (12 bits each), enough of them for 80 bits.
GENERATED_WORDS_POOL = 4096
GENERATED_MIN_BITS = 80

# The production floor: a drive that announces cheaper Argon2id costs than this is refused
# before any passphrase is derived or proven with them, since a fake drive that made the
# host use t=1 and 8 KiB would get a proof that tests guesses almost for free. The floor is
# a host setting (SEALKEEP_KDF_FLOOR, read in sealkeep.domain); nothing a drive sends
# lowers it.
FLOOR_T_COST = DEFAULT_T_COST
FLOOR_M_COST_KIB = DEFAULT_M_COST_KIB

# Keys of the CBOR map that carries the parameters (integer keys, as the drive codec likes).
_MAP_T, _MAP_M, _MAP_P = 1, 2, 3


class KdfError(SealkeepError):
    """Bad KDF parameters (for example from a corrupt or hostile drive)."""


class ShareSealError(SealkeepError):
    """A sealed share did not open: wrong passphrase, or the sealed data is corrupt."""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters and the per-drive salt."""

    salt: bytes
    t_cost: int = DEFAULT_T_COST
    m_cost_kib: int = DEFAULT_M_COST_KIB
    parallelism: int = DEFAULT_PARALLELISM

    def __post_init__(self) -> None:
        _check_int("t_cost", self.t_cost, MIN_T_COST, MAX_T_COST)
        _check_int("m_cost_kib", self.m_cost_kib, MIN_M_COST_KIB, MAX_M_COST_KIB)
        _check_int("parallelism", self.parallelism, MIN_PARALLELISM, MAX_PARALLELISM)
        if self.m_cost_kib < 8 * self.parallelism:
            raise KdfError(
                f"Argon2id memory {self.m_cost_kib} KiB is below 8 KiB per lane "
                f"({self.parallelism} lanes)"
            )
        if not isinstance(self.salt, bytes) or not (MIN_SALT_LEN <= len(self.salt) <= MAX_SALT_LEN):
            raise KdfError(
                f"Argon2id salt must be {MIN_SALT_LEN}..{MAX_SALT_LEN} bytes, "
                f"got {_describe(self.salt)}"
            )

    @classmethod
    def new(
        cls,
        *,
        t_cost: int = DEFAULT_T_COST,
        m_cost_kib: int = DEFAULT_M_COST_KIB,
        parallelism: int = DEFAULT_PARALLELISM,
    ) -> KdfParams:
        """Fresh parameters with a random salt."""
        return cls(secrets.token_bytes(SALT_LEN), t_cost, m_cost_kib, parallelism)

    def to_map(self) -> dict[int, int]:
        """The cost parameters as a CBOR-ready map (the salt travels on its own)."""
        return {_MAP_T: self.t_cost, _MAP_M: self.m_cost_kib, _MAP_P: self.parallelism}

    @classmethod
    def from_map(cls, salt: bytes, params: Mapping[Any, object]) -> KdfParams:
        """Parameters as read from a drive; anything malformed raises :class:`KdfError`."""
        values: list[int] = []
        for key, name in ((_MAP_T, "t_cost"), (_MAP_M, "m_cost_kib"), (_MAP_P, "parallelism")):
            value = params.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise KdfError(f"KDF parameters lack an integer {name} (key {key})")
            values.append(value)
        return cls(salt, values[0], values[1], values[2])


@dataclass(frozen=True)
class KdfFloor:
    """The cheapest Argon2id costs the host accepts from a drive or uses for a claim."""

    t_cost: int = FLOOR_T_COST
    m_cost_kib: int = FLOOR_M_COST_KIB

    def shortfall(self, params: KdfParams) -> str | None:
        """Why ``params`` are cheaper than this floor, or None when they are not."""
        if params.t_cost >= self.t_cost and params.m_cost_kib >= self.m_cost_kib:
            return None
        return (
            f"Argon2id costs {params.t_cost} pass(es) and {params.m_cost_kib} KiB are below "
            f"the floor of {self.t_cost} pass(es) and {self.m_cost_kib} KiB"
        )

    def describe(self) -> str:
        return f"m={self.m_cost_kib},t={self.t_cost}"


PRODUCTION_FLOOR = KdfFloor()


@dataclass(frozen=True)
class CustodianKeys:
    """The two keys derived from one custodian passphrase."""

    credential: bytes = field(repr=False)
    share_key: bytes = field(repr=False)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise KdfError(f"Argon2id {name} must be an integer in {low}..{high}, got {value!r}")


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__


def normalise_passphrase(passphrase: str) -> bytes:
    """NFC-normalised UTF-8, so the same text typed on two systems derives the same keys."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def stretch(passphrase: str, params: KdfParams) -> bytes:
    """The raw Argon2id output (32 bytes) for a passphrase."""
    return bytes(
        hash_secret_raw(
            secret=normalise_passphrase(passphrase),
            salt=params.salt,
            time_cost=params.t_cost,
            memory_cost=params.m_cost_kib,
            parallelism=params.parallelism,
            hash_len=KEY_LEN,
            type=Type.ID,
        )
    )


def _hkdf(ikm: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=label).derive(ikm)


def derive_custodian_keys(passphrase: str, params: KdfParams) -> CustodianKeys:
    """Argon2id once, then HKDF-SHA256 with the credential and share-seal labels."""
    master = stretch(passphrase, params)
    return CustodianKeys(
        credential=_hkdf(master, CREDENTIAL_LABEL),
        share_key=_hkdf(master, SHARE_SEAL_LABEL),
    )


def seal_share(keys: CustodianKeys, share: bytes, aad: bytes = b"") -> bytes:
    """AES-256-GCM under the share key: ``nonce ‖ ciphertext ‖ tag``.

    ``aad`` should bind the sealed share to its context (for example the drive serial and the
    domain id), so a sealed share copied onto another drive does not open there.
    """
    nonce = secrets.token_bytes(NONCE_LEN)
    return nonce + AESGCM(keys.share_key).encrypt(nonce, share, aad)


def unseal_share(keys: CustodianKeys, sealed: bytes, aad: bytes = b"") -> bytes:
    """Open what :func:`seal_share` produced; raises :class:`ShareSealError` on any mismatch."""
    if len(sealed) < NONCE_LEN + 16:
        raise ShareSealError(f"sealed share is truncated ({len(sealed)} bytes)")
    try:
        return AESGCM(keys.share_key).decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], aad)
    except InvalidTag:
        raise ShareSealError(
            "the sealed share does not open: wrong passphrase, or the share is corrupt"
        ) from None


# --- passphrase strength --------------------------------------------------------------------


def estimate_guesses(passphrase: str, context: Sequence[str] = ()) -> float:
    """How many guesses zxcvbn expects an informed attacker to need for ``passphrase``.

    ``context`` holds words the attacker knows (the drive serial, the product name): a
    passphrase built from them counts as guessable.
    """
    text = unicodedata.normalize("NFC", passphrase)
    result = zxcvbn(
        text[:ZXCVBN_MAX_LENGTH],
        user_inputs=["sealkeep", "custodian", "passphrase", *context],
        max_length=ZXCVBN_MAX_LENGTH,
    )
    return float(result["guesses"])


def passphrase_weakness(passphrase: str, context: Sequence[str] = ()) -> str | None:
    """Why a passphrase is too weak for a custodian, or None when it is acceptable."""
    length = len(unicodedata.normalize("NFC", passphrase))
    if length < MIN_PASSPHRASE_LEN:
        return (
            f"too short: {length} characters, at least {MIN_PASSPHRASE_LEN} are needed "
            "(five or more unrelated words work well, or accept a generated passphrase)"
        )
    guesses = estimate_guesses(passphrase, context)
    if guesses < MIN_GUESSES:
        return (
            f"too guessable: about 10^{math.floor(math.log10(max(guesses, 1)))} guesses find "
            f"it, and at least 10^{round(math.log10(MIN_GUESSES))} are needed, because anyone "
            "holding the drive can test guesses offline; words, names, dates, keyboard runs "
            "and l33t substitutions are the first things tried, so use five or more unrelated "
            "words, or accept a generated passphrase"
        )
    return None


@cache
def passphrase_words() -> tuple[str, ...]:
    """The word list of generated passphrases (see :data:`GENERATED_WORDS_POOL`)."""
    words = [w for w in FREQUENCY_LISTS["english_wikipedia"] if re.fullmatch("[a-z]{4,8}", w)]
    if len(words) < GENERATED_WORDS_POOL:
        raise KdfError(f"zxcvbn's English list has only {len(words)} words of 4 to 8 letters")
    return tuple(words[:GENERATED_WORDS_POOL])


def generated_word_count() -> int:
    """How many words a generated passphrase has: enough for :data:`GENERATED_MIN_BITS`."""
    return math.ceil(GENERATED_MIN_BITS / math.log2(len(passphrase_words())))


def generate_passphrase() -> str:
    """A passphrase of random common words (at least 80 bits), separated by spaces."""
    words = passphrase_words()
    return " ".join(secrets.choice(words) for _ in range(generated_word_count()))
