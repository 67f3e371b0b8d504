"""SPAKE2 of protocol 2 on the host, on top of the ``spake2`` package (docs/protocol.md,
"Session"): ParamsEd25519, asymmetric, idA = ``HOST_ID``, idB = the drive's serial.

The host is side A (:class:`HostPake`). Messages travel without the package's side byte.
The drive is side B; its firmware has its own implementation (device/fw/pake.py), and
:func:`drive_material` / :func:`drive_respond` are the same side B built from the package's
group operations, for emulated drives in tests and as a reference for the firmware's.

A drive keeps no password, only its material: SHA-256(pw) | encode(w M) | encode(w N),
w the package's password scalar.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from spake2.ed25519_basic import NotOnCurve  # type: ignore[import-untyped]
from spake2.parameters.ed25519 import ParamsEd25519  # type: ignore[import-untyped]
from spake2.spake2 import (  # type: ignore[import-untyped]
    SPAKE2_A,
    ReflectionThwarted,
    SideB,
    SPAKEError,
)

from .errors import EXIT_PROTOCOL, SealkeepError

__all__ = ["HOST_ID", "MATERIAL_LEN", "HostPake", "PakeError", "drive_material", "drive_respond"]

HOST_ID = b"sealkeep host"
ELEMENT_LEN = 32
MATERIAL_LEN = 96

_GROUP: Any = ParamsEd25519.group


class PakeError(SealkeepError):
    """A SPAKE2 message that is not a valid group element (or the exchange misused)."""

    exit_code = EXIT_PROTOCOL


def _element(raw: bytes, what: str) -> Any:
    """The group element of a 32-byte message; PakeError unless it is the canonical encoding
    of a point of the prime-order subgroup other than the identity. (The package alone lets
    through non-canonical encodings of points it accepts.)"""
    if len(raw) != ELEMENT_LEN:
        raise PakeError(f"the SPAKE2 message {what} is {len(raw)} bytes, not {ELEMENT_LEN}")
    try:
        element = _GROUP.bytes_to_element(raw)
    except (ValueError, NotOnCurve) as exc:
        raise PakeError(f"the SPAKE2 message {what} is not a valid group element: {exc}") from None
    if element.to_bytes() != raw:
        raise PakeError(f"the SPAKE2 message {what} is not a canonical point encoding")
    return element


class HostPake:
    """Side A of one exchange: send :attr:`message` (X), then :meth:`finish` with the
    drive's Y gives the shared key. One instance per session attempt."""

    def __init__(self, password: bytes, id_b: bytes) -> None:
        self._exchange: Any = SPAKE2_A(bytes(password), idA=HOST_ID, idB=bytes(id_b))
        self._message = bytes(self._exchange.start()[1:])
        self._finished = False

    @property
    def message(self) -> bytes:
        """X, 32 bytes, without the package's side byte."""
        return self._message

    def finish(self, y_msg: bytes) -> bytes:
        """The 32-byte SPAKE2 key, from the drive's Y (32 bytes, no side byte)."""
        if self._finished:
            raise PakeError("a SPAKE2 exchange finishes once: start a new one")
        self._finished = True
        y_msg = bytes(y_msg)
        _element(y_msg, "Y")
        try:
            return bytes(self._exchange.finish(SideB + y_msg))
        except ReflectionThwarted:
            raise PakeError("the SPAKE2 message Y is our own X sent back") from None
        except (ValueError, NotOnCurve, SPAKEError) as exc:
            raise PakeError(f"the SPAKE2 message Y was refused: {exc!r}") from None


def drive_material(pw: bytes) -> bytes:
    """What a drive keeps of a password: SHA-256(pw) | encode(w M) | encode(w N)."""
    pw = bytes(pw)
    w = _GROUP.password_to_scalar(pw)
    w_m = ParamsEd25519.M.scalarmult(w).to_bytes()
    w_n = ParamsEd25519.N.scalarmult(w).to_bytes()
    return hashlib.sha256(pw).digest() + bytes(w_m) + bytes(w_n)


def drive_respond(material: bytes, x_msg: bytes, id_b: bytes) -> tuple[bytes, bytes]:
    """Side B: (Y, key) for side A's X, as the firmware computes them. ValueError for an X
    the firmware refuses: not a canonical encoding of a point of the prime-order subgroup
    other than the identity, or equal to Y."""
    if len(material) != MATERIAL_LEN:
        raise ValueError(f"SPAKE2 material is {MATERIAL_LEN} bytes")
    x_msg = bytes(x_msg)
    try:
        x_elem = _element(x_msg, "X")
    except PakeError as exc:
        raise ValueError(str(exc)) from None
    w_m = _GROUP.bytes_to_element(bytes(material[32:64]))
    w_n = _GROUP.bytes_to_element(bytes(material[64:96]))
    y = _GROUP.random_scalar(os.urandom)
    y_msg = bytes(_GROUP.Base.scalarmult(y).add(w_n).to_bytes())
    if y_msg == x_msg:
        raise ValueError("the SPAKE2 message X is a reflection of Y")
    k_bytes = bytes(x_elem.add(w_m.scalarmult(-1)).scalarmult(y).to_bytes())
    transcript = b"".join(
        [
            bytes(material[:32]),
            hashlib.sha256(HOST_ID).digest(),
            hashlib.sha256(bytes(id_b)).digest(),
            x_msg,
            y_msg,
            k_bytes,
        ]
    )
    return y_msg, hashlib.sha256(transcript).digest()
