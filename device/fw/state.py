"""Persisted drive state: identity, claim and the per-role failed-authentication counters.

``ident`` holds the drive's Ed25519 identity (seed, public key), made at its first boot and
kept by a factory reset. ``state.cbor`` holds ``{3 salt, 4 kdf, 5 domain, 6 owner
material, 7 custodian material, 8 retention}`` (a role's material is what SPAKE2's side B
needs, never the credential itself; 8 only when the claim gave a retention rule, which
nothing but a factory reset changes), ``auth`` holds ``[owner failures, custodian failures]``. Every
write goes to a ``.new`` file renamed into place, so a power cut leaves the old or the new
file, never half. A claimed drive whose counters cannot be read counts the worst case.

Where the board has a key its flash does not hold (``device_key``, from ``board``), ``ident`` and
``state.cbor`` are sealed under it (``SKS1 | nonce | data ⊕ HMAC keystream | tag``), so a
copied flash holds only sealed bytes.

A factory reset erases many files, which no rename makes atomic: it first creates the file
``resetting``, and a drive that boots with it there finishes the wipe before anything else.
So a power cut mid-reset leaves the drive either untouched (still owned, every object
whole) or blank and empty, never owned with part of its store erased.
"""

import os

from fw.store import clear, fsize, remove, write_atomic
from protocol import cbor
from protocol.hmac256 import HMAC256, equal

_SEALED = b"SKS1"
_SEAL = None  # (keystream HMAC, tag HMAC) of the device key, or None: files stay plain


def _seal_keys(key: "bytes | None") -> "tuple | None":
    if key is None:
        return None
    root = HMAC256(key)
    return HMAC256(root.mac(b"sealkeep seal stream")), HMAC256(root.mac(b"sealkeep seal tag"))


def _stream(nonce: bytes, data: bytes) -> bytes:
    out = bytearray(data)
    block = 0
    for i in range(len(out)):
        if not i % 32:
            pad = _SEAL[0].mac(nonce, block.to_bytes(4, "big"))  # type: ignore[index]
            block += 1
        out[i] ^= pad[i % 32]
    return bytes(out)


def seal(data: bytes) -> bytes:
    if _SEAL is None:
        return data
    nonce = os.urandom(16)
    body = nonce + _stream(nonce, data)
    return _SEALED + body + _SEAL[1].mac(_SEALED, body)[:16]


def unseal(raw: bytes) -> bytes:
    """The plain bytes of a file; raises ValueError if sealed and not by this board."""
    if raw[:4] != _SEALED:
        return raw  # written before the board had a key (or it has none)
    if _SEAL is None or not equal(raw[-16:], _SEAL[1].mac(_SEALED, raw[4:-16])[:16]):
        raise ValueError("sealed by another device key")
    return _stream(raw[4:20], raw[20:-16])


# Failures that give the longest delay (fw.auth caps it): what a claimed drive without a
# readable counter file counts, and what a counter stops at.
WORST = 20


def _load(path: str) -> object:
    """The decoded file, None if missing; raises if damaged."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    with f:
        return cbor.decode(unseal(f.read()))


class State:
    def __init__(self, root: str, device_key: "bytes | None" = None) -> None:
        global _SEAL
        _SEAL = _seal_keys(device_key)
        self.root = root
        self.path = root + "/state.cbor"
        self.auth_path = root + "/auth"
        if fsize(root + "/resetting") >= 0:
            self.reset()  # a reset was cut short: complete it before loading
        self.identity = _identity(root + "/ident")
        self.claim: dict | None = None
        self.damaged = False
        self.failures = [0, 0]
        try:
            claim = _load(self.path)
            if claim is not None:
                for key in (3, 5, 6, 7):
                    if not isinstance(claim[key], bytes):  # type: ignore[index]
                        raise ValueError
                self.claim = claim  # type: ignore[assignment]
        except Exception:
            # Never fall back to blank, where anyone could claim: owned but unusable.
            self.claim = {}
            self.damaged = True
        try:
            counts = _load(self.auth_path)
            if counts is None:
                if self.claim is not None:
                    raise ValueError  # lost (a cut rename): assume the worst, not none
                counts = [0, 0]
            if len(counts) != 2:  # type: ignore[arg-type]
                raise ValueError
            self.failures = [int(counts[0]), int(counts[1])]  # type: ignore[index]
        except Exception:
            self.failures = [WORST, WORST]  # fail safe; a success clears it

    @property
    def blank(self) -> bool:
        return self.claim is None

    def get(self, key: int) -> object:
        """A claim field (3 salt, 4 kdf, 5 domain, 6 owner, 7 custodian material, 8
        retention) or None."""
        return self.claim.get(key) if self.claim else None

    def save_claim(self, claim: dict) -> None:
        # Counters first: a cut between the two leaves a blank drive with clean counters,
        # never a claimed one without them.
        self.failures = [0, 0]
        write_atomic(self.auth_path, cbor.encode(self.failures))
        write_atomic(self.path, seal(cbor.encode(claim)))
        self.claim = cbor.decode(cbor.encode(claim))  # type: ignore[assignment]

    def set_failures(self, role: int, count: int) -> None:
        count = min(count, WORST)
        if self.failures[role] != count:
            counts = list(self.failures)
            counts[role] = count
            write_atomic(self.auth_path, cbor.encode(counts))
            self.failures = counts

    def reset(self) -> None:  # the identity stays: it is the board's, not the claim's
        """Erase objects, temporary files, commit numbers, claim and counters (the caller
        has closed the store's files). The mark goes first and last; a boot that finds it
        comes here."""
        root = self.root
        open(root + "/resetting", "wb").close()
        for d in ("/obj/", "/tmp/", "/seq/"):
            if fsize(root + d) >= 0:
                clear(root + d)
        for path in (self.path, self.auth_path):
            remove(path)
            remove(path + ".new")
        remove(root + "/resetting")
        self.claim = None
        self.damaged = False
        self.failures = [0, 0]


def _identity(path: str) -> bytes:
    """The drive's identity, seed (32) and public key (32); made at the first boot."""
    try:
        with open(path, "rb") as f:
            ident = unseal(f.read())
        if len(ident) == 64:
            return ident
    except (OSError, ValueError):
        pass
    import sys

    from fw import ed25519

    seed = os.urandom(32)
    ident = seed + ed25519.public_key(seed)
    sys.modules.pop("fw.ed25519", None)  # only sessions need it again, and they load it
    write_atomic(path, seal(ident))
    return ident
