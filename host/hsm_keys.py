"""The keys of the backup domain and of each backup set, and how they are made."""

from __future__ import annotations

import secrets
from contextlib import suppress
from typing import Any

import pkcs11
from pkcs11 import (
    Mechanism,
)
from pkcs11.exceptions import PKCS11Error

from .hsm_base import (
    GCM_NONCE_LEN,
    GCM_TAG_BITS,
    WRAP_MECHANISM,
    HsmError,
    UnsealError,
)


class SetKey:
    """A backup set's KEK: a session object in the HSM, and its value wrapped by the domain key.

    It also seals the set manifest with AES-GCM, inside the HSM (it is a :class:`Sealer`).
    The KEK holds WRAP/UNWRAP and ENCRYPT/DECRYPT; it is never a token object, exists only
    in this process's session, and the domain key that wraps it can only wrap and unwrap.
    """

    def __init__(self, handle: Any, wrapped: bytes) -> None:
        self.handle = handle
        self.wrapped = wrapped

    def wrap(self, obj: Any) -> bytes:
        return bytes(self.handle.wrap_key(obj, mechanism=WRAP_MECHANISM))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM in the HSM: ``nonce ‖ ciphertext ‖ tag``.

        The nonce is chosen here (a KEK seals one manifest, so a random 96-bit nonce is
        safe) and passed in CK_GCM_PARAMS, which SoftHSM2 honours; the output is standard
        GCM, the same as ``cryptography``'s AESGCM with the same key.
        """
        nonce = secrets.token_bytes(GCM_NONCE_LEN)
        params = pkcs11.GCMParams(nonce, aad, GCM_TAG_BITS)
        try:
            sealed = self.handle.encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params
            )
        except PKCS11Error as exc:
            raise HsmError(f"the HSM cannot seal with AES-GCM: {exc!r}") from None
        return nonce + bytes(sealed)

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        """Open what :meth:`seal` made; raises :class:`UnsealError` if it does not authenticate."""
        if len(sealed) < GCM_NONCE_LEN + GCM_TAG_BITS // 8:
            raise UnsealError("sealed data is truncated")
        params = pkcs11.GCMParams(sealed[:GCM_NONCE_LEN], aad, GCM_TAG_BITS)
        try:
            return bytes(
                self.handle.decrypt(
                    sealed[GCM_NONCE_LEN:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
        except PKCS11Error:
            # SoftHSM2 reports a failed GCM tag check as a bare GeneralError.
            raise UnsealError("sealed data does not authenticate") from None

    def destroy(self) -> None:
        with suppress(PKCS11Error):
            self.handle.destroy()
