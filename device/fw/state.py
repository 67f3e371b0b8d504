"""Persisted drive state: the claim and the per-role failed-authentication counters.

``state.cbor`` holds ``{1 owner credential, 2 custodian credential, 3 salt, 4 kdf,
5 domain}``, ``auth`` holds ``[owner failures, custodian failures]``. Every write goes to a
``.new`` file renamed into place, so a power cut leaves the old or the new file, never half.

A factory reset erases many files, which no rename makes atomic: it first creates the file
``resetting``, and a drive that boots with it there finishes the wipe before anything else.
So a power cut mid-reset leaves the drive either untouched (still owned, every object
whole) or blank and empty, never owned with part of its store erased.
"""

import os

from fw.store import clear, fsize, remove
from protocol import cbor

LOCKOUT = 10


def write_atomic(path: str, data: bytes) -> None:
    with open(path + ".new", "wb") as f:
        f.write(data)
    try:
        os.rename(path + ".new", path)
    except OSError:  # a filesystem whose rename does not replace
        os.remove(path)
        os.rename(path + ".new", path)


def _load(path: str) -> object:
    """The decoded file, None if missing; raises if damaged."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    with f:
        return cbor.decode(f.read())


class State:
    def __init__(self, root: str) -> None:
        self.root = root
        self.path = root + "/state.cbor"
        self.auth_path = root + "/auth"
        if fsize(root + "/resetting") >= 0:
            self.reset()  # a reset was cut short: complete it before loading
        self.claim: dict | None = None
        self.damaged = False
        self.failures = [0, 0]
        try:
            claim = _load(self.path)
            if claim is not None:
                for key in (1, 2, 3, 5):
                    if not isinstance(claim[key], bytes):  # type: ignore[index]
                        raise ValueError
                self.claim = claim  # type: ignore[assignment]
        except Exception:
            # Never fall back to blank, where anyone could claim: owned but unusable.
            self.claim = {}
            self.damaged = True
        try:
            counts = _load(self.auth_path) or [0, 0]
            if len(counts) != 2:  # type: ignore[arg-type]
                raise ValueError
            self.failures = [int(counts[0]), int(counts[1])]  # type: ignore[index]
        except Exception:
            self.failures = [LOCKOUT, LOCKOUT]  # fail safe; a factory reset clears it

    @property
    def blank(self) -> bool:
        return self.claim is None

    def get(self, key: int) -> object:
        """A claim field (1 owner, 2 custodian credential, 3 salt, 4 kdf, 5 domain) or None."""
        return self.claim.get(key) if self.claim else None

    def save_claim(self, claim: dict) -> None:
        write_atomic(self.path, cbor.encode(claim))
        self.claim = cbor.decode(cbor.encode(claim))  # type: ignore[assignment]
        self.failures = [0, 0]
        write_atomic(self.auth_path, cbor.encode(self.failures))

    def set_failures(self, role: int, count: int) -> None:
        if self.failures[role] != count:
            counts = list(self.failures)
            counts[role] = count
            write_atomic(self.auth_path, cbor.encode(counts))
            self.failures = counts

    def reset(self) -> None:
        """Erase objects, temporary files, claim and counters (the caller has closed the
        store's files). The mark goes first and last; a boot that finds it comes here."""
        root = self.root
        open(root + "/resetting", "wb").close()
        for d in ("/obj/", "/tmp/"):
            if fsize(root + d) >= 0:
                clear(root + d)
        for path in (self.path, self.auth_path):
            remove(path)
            remove(path + ".new")
        remove(root + "/resetting")
        self.claim = None
        self.damaged = False
        self.failures = [0, 0]
