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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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

# Passphrase policy.
MIN_PASSPHRASE_LEN = 12
MIN_ENTROPY_BITS = 60.0

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

_COMMON = (
    "password",
    "passw0rd",
    "qwerty",
    "azerty",
    "letmein",
    "welcome",
    "admin",
    "secret",
    "iloveyou",
    "monkey",
    "dragon",
    "sealkeep",
    "123456",
    "abc123",
)
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890")


def _pool_size(text: str) -> int:
    pool = 0
    if re.search(r"[a-z]", text):
        pool += 26
    if re.search(r"[A-Z]", text):
        pool += 26
    if re.search(r"[0-9]", text):
        pool += 10
    if re.search(r"[ -/:-@\[-`{-~]", text):
        pool += 33
    if any(ord(ch) > 127 for ch in text):
        pool += 100
    return max(pool, 1)


def _smallest_period(text: str) -> int:
    """Length of the shortest unit that repeats to make ``text`` (``abcabc`` -> 3)."""
    n = len(text)
    for size in range(1, n // 2 + 1):
        if n % size == 0 and text[:size] * (n // size) == text:
            return size
    return n


def _is_run(a: str, b: str) -> bool:
    """True when ``b`` continues a predictable run after ``a``."""
    if a == b:
        return True
    if abs(ord(a) - ord(b)) == 1:
        return True
    lower = (a + b).lower()
    return any(lower in row or lower[::-1] in row for row in _KEYBOARD_ROWS)


def estimate_entropy_bits(passphrase: str) -> float:
    """A deliberately simple, conservative estimate of a passphrase's entropy in bits.

    Character-class pool size times an effective length, where repeated units count once,
    characters continuing a run (``aaaa``, ``abcd``, ``4321``, ``qwer``) count a quarter, and
    well-known weak words are taken out first.
    """
    text = unicodedata.normalize("NFC", passphrase)
    pool = _pool_size(text)
    lowered = text.lower()
    for word in _COMMON:
        lowered = lowered.replace(word, "\x00")
    unit = lowered[: _smallest_period(lowered)]
    effective = 0.0
    previous = ""
    for ch in unit:
        if ch == "\x00":
            effective += 1.0  # a common word is worth about one character
        elif previous and _is_run(previous, ch):
            effective += 0.25
        else:
            effective += 1.0
        previous = ch
    return effective * math.log2(pool)


def passphrase_weakness(passphrase: str) -> str | None:
    """Why a passphrase is too weak for a custodian, or None when it is acceptable."""
    length = len(unicodedata.normalize("NFC", passphrase))
    if length < MIN_PASSPHRASE_LEN:
        return (
            f"too short: {length} characters, at least {MIN_PASSPHRASE_LEN} are needed "
            "(a few unrelated words work well)"
        )
    bits = estimate_entropy_bits(passphrase)
    if bits < MIN_ENTROPY_BITS:
        return (
            f"too predictable: about {math.floor(bits)} bits of entropy, at least "
            f"{MIN_ENTROPY_BITS:.0f} are needed (avoid repeats, sequences and common words)"
        )
    return None
