"""Shamir secret sharing over GF(2^8) whose bad shares are named, not just detected.

Every byte of the secret is the constant term of its own random polynomial of degree k-1
over GF(2^8) (the AES field, reduction polynomial 0x11B); share i holds the polynomials'
values at x = i (1..n). Any k shares give the secret by Lagrange interpolation at 0; k-1
shares say nothing about it.

A split also publishes one *share set* record, copied into every share:

- ``checks``: for every index i, ``SHA-256("sealkeep share check" ‖ set id ‖ i ‖ share_i)``.
  Any share is checked against the record on its own, so a share whose value was altered is
  named as corrupt before anything is combined.
- ``secret_check``: ``HMAC-SHA256(secret, "sealkeep domain check")[:16]``, which identifies
  the secret (the domain) without revealing it, so shares of another domain are named.
- ``tag``: ``HMAC-SHA256(secret, "sealkeep share set" ‖ record)``. Only the dealer, who knew
  the secret, could compute it; it is checked after combining. A forger who controls one
  drive can rewrite that drive's copy of the record, but the copies held by the other drives
  still name its share, and a wholly invented record fails its tag.

The checks are hashes of high-entropy values (the secret must be random key material, as a
domain key is), so publishing them reveals nothing useful.

Table-based arithmetic is not constant-time; this code runs only during domain ceremonies on
the operator's machine. The secret, the random coefficients and every intermediate value
live in ``bytearray`` buffers that are overwritten before a function returns (the secret
itself is the caller's to wipe); nothing makes an immutable ``bytes`` copy of them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cbor2

from .errors import SealkeepError

POLY = 0x11B
SHARE_FORMAT = 1
SET_ID_LEN = 16
CHECK_LEN = 32
SECRET_CHECK_LEN = 16
TAG_LEN = 32
MAX_SHARES = 255
MAX_SECRET_LEN = 1024

SHARE_CHECK_LABEL = b"sealkeep share check"
SECRET_CHECK_LABEL = b"sealkeep domain check"
SHARE_SET_LABEL = b"sealkeep share set"

# CBOR map keys of an encoded share.
_K_FORMAT, _K_INDEX, _K_VALUE, _K_SET_ID = 1, 2, 3, 4
_K_THRESHOLD, _K_COUNT, _K_CHECKS, _K_SECRET_CHECK, _K_TAG = 5, 6, 7, 8, 9


# --- GF(2^8) ------------------------------------------------------------------------------


def _mul_slow(a: int, b: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        if a & 0x100:
            a ^= POLY
        b >>= 1
    return result


def _tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x = _mul_slow(x, 3)  # 3 generates the multiplicative group of the AES field
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    return tuple(exp), tuple(log)


_EXP, _LOG = _tables()


def gf_mul(a: int, b: int) -> int:
    """Product in GF(2^8) modulo 0x11B."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_div(a: int, b: int) -> int:
    """Quotient in GF(2^8); ``b`` must not be 0."""
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[(_LOG[a] - _LOG[b]) % 255]


def _wipe(buffer: bytearray) -> None:
    buffer[:] = bytes(len(buffer))  # a run of zeros, written in place


def _random(length: int) -> bytearray:
    """Random bytes read straight into a buffer we can wipe (``secrets`` returns bytes)."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    with open("/dev/urandom", "rb", buffering=0) as source:
        filled = 0
        while filled < length:
            got = source.readinto(view[filled:])
            if not got:
                raise ShamirError("the system's random source ended early")
            filled += got
    view.release()
    return buffer


def _scale_into(out: bytearray, factor: int, data: bytes | bytearray) -> None:
    """``out[i] = factor * data[i]`` for every byte, in place."""
    if factor == 0:
        _wipe(out)
        return
    lf = _LOG[factor]
    for i, y in enumerate(data):
        out[i] = 0 if y == 0 else _EXP[lf + _LOG[y]]


def _evaluate(coefficients: Sequence[bytes | bytearray], x: int) -> bytes:
    """Values at ``x`` of the byte-wise polynomials; ``coefficients[0]`` is the constant.

    The share value is returned as ``bytes`` (it is encoded and sealed as such); the
    partial sums, which with the coefficients would give the secret away, are wiped.
    """
    acc = bytearray(coefficients[-1])
    scaled = bytearray(len(acc))
    try:
        for coefficient in reversed(coefficients[:-1]):
            _scale_into(scaled, x, acc)
            for i, c in enumerate(coefficient):
                acc[i] = scaled[i] ^ c
        return bytes(acc)
    finally:
        _wipe(acc)
        _wipe(scaled)


def interpolate_at_zero(points: Sequence[tuple[int, bytes]]) -> bytearray:
    """Lagrange interpolation at x = 0 from distinct ``(x, values)`` points."""
    xs = [x for x, _ in points]
    if len(set(xs)) != len(xs) or any(not 1 <= x <= MAX_SHARES for x in xs):
        raise ValueError("share indexes must be distinct and in 1..255")
    length = len(points[0][1])
    if any(len(yi) != length for _, yi in points):
        raise ValueError("shares of one secret have one length")
    result = bytearray(length)
    term = bytearray(length)
    try:
        for i, (xi, yi) in enumerate(points):
            basis = 1
            for j, xj in enumerate(xs):
                if j != i:
                    basis = gf_mul(basis, gf_div(xj, xj ^ xi))
            _scale_into(term, basis, yi)
            for pos, byte in enumerate(term):
                result[pos] ^= byte
    finally:
        _wipe(term)
    return result


# --- records ------------------------------------------------------------------------------


class ShamirError(SealkeepError):
    """Root of the secret-sharing errors."""


class ShareFormatError(ShamirError):
    """An encoded share is malformed."""


class BadShareError(ShamirError):
    """One or more shares are corrupt, forged or of another split; ``bad`` names them."""

    def __init__(self, bad: Sequence[BadShare]) -> None:
        self.bad = tuple(bad)
        super().__init__("; ".join(f"{b.name}: {b.reason}" for b in self.bad))


class NotEnoughSharesError(ShamirError):
    """Fewer good shares than the threshold; says how many more are needed."""

    def __init__(
        self,
        threshold: int,
        good: Sequence[str],
        bad: Sequence[BadShare],
        distinct: int | None = None,
    ) -> None:
        self.threshold = threshold
        self.good = tuple(good)
        self.bad = tuple(bad)
        self.distinct = len(self.good) if distinct is None else distinct
        message = (
            f"{self.distinct} good share(s) of the {threshold} needed: {self.needed} more needed"
        )
        if self.distinct < len(self.good):
            message += " (some drives hold copies of the same share)"
        if self.bad:
            message += "; bad: " + "; ".join(f"{b.name}: {b.reason}" for b in self.bad)
        super().__init__(message)

    @property
    def needed(self) -> int:
        return max(self.threshold - self.distinct, 0)


@dataclass(frozen=True)
class BadShare:
    """A share that cannot be used, with the name its caller gave it and why."""

    name: str
    index: int | None
    reason: str


@dataclass(frozen=True)
class ShareSet:
    """The public record of one split, carried by every share of it."""

    set_id: bytes
    threshold: int
    count: int
    checks: tuple[bytes, ...]
    secret_check: bytes
    tag: bytes

    def body(self) -> bytes:
        """The bytes the tag authenticates (everything but the tag)."""
        return bytes(
            cbor2.dumps(
                [self.set_id, self.threshold, self.count, list(self.checks), self.secret_check],
                canonical=True,
            )
        )

    def matches(self, index: int, value: bytes) -> bool:
        """True when ``value`` is the share this record committed to at ``index``."""
        if not 1 <= index <= len(self.checks):
            return False
        return hmac.compare_digest(
            self.checks[index - 1], share_check_value(self.set_id, index, value)
        )

    def verify_secret(self, secret: bytes | bytearray) -> bool:
        """True when ``secret`` is the one this record was dealt from."""
        expected_tag = hmac.digest(secret, SHARE_SET_LABEL + self.body(), "sha256")
        return hmac.compare_digest(
            secret_check_value(secret), self.secret_check
        ) and hmac.compare_digest(expected_tag, self.tag)


@dataclass(frozen=True)
class Share:
    """One share: its index (1..n), its value and a copy of the split's record."""

    index: int
    value: bytes = field(repr=False)
    share_set: ShareSet

    @property
    def threshold(self) -> int:
        return self.share_set.threshold

    @property
    def count(self) -> int:
        return self.share_set.count

    def problem(self) -> str | None:
        """Why this share fails its own record's check value, or None when it passes."""
        if not self.share_set.matches(self.index, self.value):
            return "corrupt: its value does not match its check value"
        return None

    def encode(self) -> bytes:
        record = self.share_set
        return bytes(
            cbor2.dumps(
                {
                    _K_FORMAT: SHARE_FORMAT,
                    _K_INDEX: self.index,
                    _K_VALUE: self.value,
                    _K_SET_ID: record.set_id,
                    _K_THRESHOLD: record.threshold,
                    _K_COUNT: record.count,
                    _K_CHECKS: list(record.checks),
                    _K_SECRET_CHECK: record.secret_check,
                    _K_TAG: record.tag,
                },
                canonical=True,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Share:
        """Parse an encoded share; anything malformed raises :class:`ShareFormatError`."""
        try:
            obj = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types on garbage
            raise ShareFormatError(f"share is not valid CBOR ({exc})") from None
        if not isinstance(obj, dict):
            raise ShareFormatError("share is not a CBOR map")
        if obj.get(_K_FORMAT) != SHARE_FORMAT:
            raise ShareFormatError(f"unknown share format {obj.get(_K_FORMAT)!r}")
        index = _get_int(obj, _K_INDEX, "index")
        threshold = _get_int(obj, _K_THRESHOLD, "threshold")
        count = _get_int(obj, _K_COUNT, "count")
        value = _get_bytes(obj, _K_VALUE, "value")
        set_id = _get_bytes(obj, _K_SET_ID, "set id")
        secret_check = _get_bytes(obj, _K_SECRET_CHECK, "secret check")
        tag = _get_bytes(obj, _K_TAG, "tag")
        checks = obj.get(_K_CHECKS)
        if not 1 <= threshold <= count <= MAX_SHARES:
            raise ShareFormatError(f"share has threshold {threshold} of {count}")
        if not 1 <= index <= count:
            raise ShareFormatError(f"share index {index} is outside 1..{count}")
        if not 1 <= len(value) <= MAX_SECRET_LEN:
            raise ShareFormatError(f"share value has {len(value)} bytes")
        if len(set_id) != SET_ID_LEN:
            raise ShareFormatError("share set id has the wrong length")
        if len(secret_check) != SECRET_CHECK_LEN or len(tag) != TAG_LEN:
            raise ShareFormatError("share set check values have the wrong length")
        if (
            not isinstance(checks, list)
            or len(checks) != count
            or not all(isinstance(c, bytes) and len(c) == CHECK_LEN for c in checks)
        ):
            raise ShareFormatError("share set check values are malformed")
        share_set = ShareSet(set_id, threshold, count, tuple(checks), secret_check, tag)
        return cls(index, value, share_set)


def _get_int(obj: dict[object, object], key: int, name: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ShareFormatError(f"share lacks an integer {name}")
    return value


def _get_bytes(obj: dict[object, object], key: int, name: str) -> bytes:
    value = obj.get(key)
    if not isinstance(value, bytes):
        raise ShareFormatError(f"share lacks the {name} bytes")
    return value


def share_check_value(set_id: bytes, index: int, value: bytes) -> bytes:
    """The public commitment to share ``index`` of the split ``set_id``."""
    return hashlib.sha256(SHARE_CHECK_LABEL + set_id + bytes([index]) + value).digest()


def secret_check_value(secret: bytes | bytearray) -> bytes:
    """A public value identifying a secret (the domain) without revealing it."""
    # hmac.digest hands the key buffer to OpenSSL's one-shot HMAC: no copy on our side.
    return hmac.digest(secret, SECRET_CHECK_LABEL, "sha256")[:SECRET_CHECK_LEN]


# --- split and combine --------------------------------------------------------------------


def split(secret: bytes | bytearray, k: int, n: int) -> list[Share]:
    """Split ``secret`` into ``n`` shares (indexes 1..n), any ``k`` of which rebuild it."""
    if not 1 <= k <= n <= MAX_SHARES:
        raise ShamirError(f"threshold {k} of {n} is impossible: need 1 <= k <= n <= 255")
    if not 1 <= len(secret) <= MAX_SECRET_LEN:
        raise ShamirError(f"secret must be 1..{MAX_SECRET_LEN} bytes, got {len(secret)}")
    # The secret is used in place as the constant coefficient; the random ones are wiped.
    random_coefficients = [_random(len(secret)) for _ in range(k - 1)]
    try:
        values = [_evaluate([secret, *random_coefficients], x) for x in range(1, n + 1)]
    finally:
        for coefficient in random_coefficients:
            _wipe(coefficient)
    set_id = secrets.token_bytes(SET_ID_LEN)
    checks = tuple(share_check_value(set_id, i + 1, v) for i, v in enumerate(values))
    unsigned = ShareSet(set_id, k, n, checks, secret_check_value(secret), b"")
    tag = hmac.digest(secret, SHARE_SET_LABEL + unsigned.body(), "sha256")
    share_set = ShareSet(set_id, k, n, checks, unsigned.secret_check, tag)
    return [Share(i + 1, v, share_set) for i, v in enumerate(values)]


@dataclass
class Recovery:
    """A rebuilt secret, the shares used, and the shares that were set aside (named)."""

    secret: bytearray = field(repr=False)
    share_set: ShareSet
    used: tuple[str, ...]
    bad: tuple[BadShare, ...]

    def wipe(self) -> None:
        """Overwrite the secret in place."""
        _wipe(self.secret)


def _named(shares: Mapping[str, Share] | Iterable[Share]) -> list[tuple[str, Share]]:
    if isinstance(shares, Mapping):
        return list(shares.items())
    items: list[tuple[str, Share]] = []
    seen: dict[str, int] = {}
    for share in shares:
        name = f"share {share.index}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} (copy {seen[name]})"
        items.append((name, share))
    return items


def _mismatch_reason(share: Share, accepted: ShareSet) -> str:
    if share.share_set.set_id == accepted.set_id:
        return "forged: it does not match the check values held by the other shares"
    return "from another split (another domain, or replaced by a re-share)"


def recover(
    shares: Mapping[str, Share] | Iterable[Share],
    expected_check: bytes | None = None,
) -> Recovery:
    """Rebuild the secret from the good shares, naming every share set aside.

    ``shares`` is a mapping from a name the caller understands (a drive serial) to the
    share, or a plain sequence (named "share <index>"). With ``expected_check`` (the
    :func:`secret_check_value` of the domain), shares of any other secret are set aside.
    Raises :class:`NotEnoughSharesError` when fewer than k good shares remain.
    """
    named = _named(shares)
    bad: dict[str, BadShare] = {}
    usable: list[tuple[str, Share]] = []
    for name, share in named:
        problem = share.problem()
        if problem is None and expected_check is not None:
            if not hmac.compare_digest(share.share_set.secret_check, expected_check):
                problem = "belongs to another backup domain"
        if problem is None:
            usable.append((name, share))
        else:
            bad[name] = BadShare(name, share.index, problem)

    # Candidate records, the one most shares carry first.
    support: dict[ShareSet, int] = {}
    for _, share in usable:
        support[share.share_set] = support.get(share.share_set, 0) + 1
    candidates = sorted(support, key=lambda record: -support[record])

    shortfall: tuple[int, list[str], dict[str, BadShare], int] | None = None
    for record in candidates:
        good: dict[int, tuple[str, Share]] = {}
        names_good: list[str] = []
        rejected: dict[str, BadShare] = {}
        for name, share in usable:
            if record.matches(share.index, share.value):
                good.setdefault(share.index, (name, share))
                names_good.append(name)
            else:
                rejected[name] = BadShare(name, share.index, _mismatch_reason(share, record))
        if len(good) < record.threshold:
            if shortfall is None or len(good) > shortfall[3]:
                shortfall = (record.threshold, names_good, rejected, len(good))
            continue
        chosen = [good[i] for i in sorted(good)[: record.threshold]]
        secret = interpolate_at_zero([(s.index, s.value) for _, s in chosen])
        if not record.verify_secret(secret):
            # A record nobody who knew the secret wrote: its shares are all forgeries.
            _wipe(secret)
            for name, share in usable:
                if record.matches(share.index, share.value):
                    bad[name] = BadShare(name, share.index, "forged: its share set does not verify")
            continue
        all_bad = {**rejected, **bad}
        ordered_bad = tuple(all_bad[name] for name, _ in named if name in all_bad)
        return Recovery(secret, record, tuple(n for n, _ in chosen), ordered_bad)

    if shortfall is None:
        threshold = max((s.threshold for _, s in named), default=1)
        good_names: list[str] = []
        extra: dict[str, BadShare] = {}
        distinct = 0
    else:
        threshold, good_names, extra, distinct = shortfall
    all_bad = {**extra, **bad}
    good_names = [name for name in good_names if name not in bad]
    ordered = [all_bad[name] for name, _ in named if name in all_bad and name not in good_names]
    raise NotEnoughSharesError(threshold, good_names, ordered, distinct)


def combine(
    shares: Mapping[str, Share] | Iterable[Share],
    expected_check: bytes | None = None,
) -> bytearray:
    """The secret, provided every share given is good; otherwise the bad ones are named.

    Raises :class:`BadShareError` if any share is bad (even when enough good ones remain)
    and :class:`NotEnoughSharesError` when fewer than k good shares remain.
    """
    result = recover(shares, expected_check)
    if result.bad:
        result.wipe()
        raise BadShareError(result.bad)
    return result.secret
