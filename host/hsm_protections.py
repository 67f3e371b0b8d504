"""What a token enforces of key hierarchy 2 (see :mod:`sealkeep.hsm_keys`), tried on it with
throwaway session objects and told plainly where it falls short."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from pkcs11 import Mechanism
from pkcs11.exceptions import PKCS11Error

from .hsm_base import DOMAIN_KEY_LEN, DomainError
from .hsm_caps import STANDARD, Profile
from .hsm_keys import (
    _AES_SECRET,
    RESTORED_KEY_TEMPLATE,
    SET_KEY_TEMPLATE,
    A,
    TokenTraits,
    Wrapping,
    _flags,
    _modifiable_last,
    detect_traits,
    transient_wrap_key,
)
from .hsm_raw import CKA_UNWRAP_TEMPLATE, RawModule, RawTemplate, RawValue

UNWRAP_TEMPLATE_MISSING = (
    "the token has no CKA_UNWRAP_TEMPLATE (it refuses the attribute), so nothing forces the "
    "keys a domain or set key unwraps to stay sensitive and single-purpose: someone who holds "
    "this slot's PIN and calls PKCS#11 directly can unwrap a set's KEK as a key that decrypts "
    "or reads, and from it every key of the set in the clear. Only the PIN and the HSM guard "
    "the sets' keys here; the drives' contents stay sealed. Use a token that offers it where "
    "PIN holders are not trusted with every backed-up key"
)
COPYABLE_MISSING = (
    "the token has no CKA_COPYABLE (it refuses the attribute), so the domain's keys cannot be "
    "marked uncopyable: a PIN holder may copy them within the token (copies stay sensitive "
    "and non-extractable)"
)


def probe_protections(
    raw: RawModule,
    session: int,
    python_session: Any,
    profile: Profile = STANDARD,
    traits: TokenTraits | None = None,
) -> list[str]:
    """What this token does not enforce of key hierarchy 2, each as a plain sentence.

    Tried with throwaway session objects, destroyed before returning; nothing is stored.
    A token that refuses CKA_UNWRAP_TEMPLATE or CKA_COPYABLE outright is told of, not
    refused; one that accepts an unwrap template and ignores it is refused
    (:class:`DomainError`).
    """
    traits = traits or detect_traits(raw, session)
    missing: list[str] = []
    if not traits.unwrap_templates:
        missing.append(UNWRAP_TEMPLATE_MISSING)
    if not traits.copyable:
        missing.append(COPYABLE_MISSING)
    made: list[int] = []
    objects: list[Any] = []

    def create(template: RawTemplate) -> int:
        handle = raw.create_object(session, template)
        made.append(handle)
        return handle

    value = secrets.token_bytes(DOMAIN_KEY_LEN)
    # SoftHSM2 leaves behind a session object whose creation failed on a later attribute,
    # so every probe object bears this label, and whatever bears it goes at the end.
    label = f"sealkeep-probe-{secrets.token_hex(8)}"

    def probe_key(*, wrap: bool = True, unwrap: bool = True) -> dict[int, RawValue]:
        return traits.fit(transient_wrap_key(value, wrap=wrap, unwrap=unwrap, label=label))

    wrapping = Wrapping(raw, session, profile)
    try:
        if traits.unwrap_templates:
            try:
                wrapper = create(
                    {
                        **probe_key(),
                        CKA_UNWRAP_TEMPLATE: SET_KEY_TEMPLATE,
                    }
                )
            except PKCS11Error as exc:
                raise DomainError(
                    f"the token refuses keys with CKA_UNWRAP_TEMPLATE ({exc}): a PIN holder "
                    "could unwrap every set key as a readable key, so sealkeep will not make a "
                    "domain here"
                ) from None
            key_template = _modifiable_last(
                {
                    **_AES_SECRET,
                    int(A.TOKEN): False,
                    int(A.VALUE_LEN): DOMAIN_KEY_LEN,
                    **_flags(SENSITIVE=True, EXTRACTABLE=True, WRAP=True, UNWRAP=True),
                }
            )
            key = raw.generate_key(session, Mechanism.AES_KEY_GEN, key_template)
            made.append(key)
            wrapped = wrapping.wrap(wrapper, key)
            weak = {**SET_KEY_TEMPLATE, int(A.TOKEN): False, int(A.LABEL): label}
            weak[int(A.SENSITIVE)] = False
            weak = _modifiable_last(weak)
            weak = {k: v for k, v in weak.items() if k != A.EXTRACTABLE}
            try:
                made.append(wrapping.unwrap(wrapper, wrapped, weak))
            except PKCS11Error:
                pass
            else:
                raise DomainError(
                    "the token accepts CKA_UNWRAP_TEMPLATE but does not enforce it: a PIN holder "
                    "could unwrap every set key as a readable key, so sealkeep will not make a "
                    "domain here"
                )
            try:
                create(
                    {
                        **probe_key(),
                        CKA_UNWRAP_TEMPLATE: {
                            **SET_KEY_TEMPLATE,
                            CKA_UNWRAP_TEMPLATE: RESTORED_KEY_TEMPLATE,
                        },
                    }
                )
            except PKCS11Error:
                missing.append(
                    "the domain wrap key cannot make the set keys it unwraps carry an unwrap "
                    "template of their own (the token refuses a CKA_UNWRAP_TEMPLATE inside "
                    "another): a PIN holder who unwraps a set key directly can then unwrap the "
                    "set's keys as non-sensitive. Every key sealkeep backs up was extractable in "
                    "its slot, so none is more exposed than it was there; sealkeep's own restores "
                    "make every key sensitive"
                )
        try:
            create({**probe_key(unwrap=False), int(A.TRUSTED): True})
        except PKCS11Error:
            missing.append(
                "CKA_WRAP_WITH_TRUSTED is not set on set keys: only the token's security "
                "officer may mark the domain wrap key CKA_TRUSTED, which that would need. A "
                "new set key is extractable until the backup that made it ends; it is a "
                "session object, seen by that process alone, and destroyed when the set is "
                "written"
            )
        locked = create(probe_key())
        found = [
            obj
            for obj in python_session.get_objects({A.TOKEN: False, A.LABEL: label})
            if obj.handle == locked
        ]
        checks: list[tuple[str, Callable[[], Any]]] = [
            (
                "a key without CKA_DECRYPT can still decrypt",
                lambda: raw.decrypt(session, Mechanism.AES_ECB, locked, bytes(16)),
            ),
            (
                "CKA_MODIFIABLE false does not stop C_SetAttributeValue",
                lambda: found[0].__setitem__(A.DECRYPT, True),
            ),
        ]
        if traits.copyable:
            checks.append(
                (
                    "CKA_COPYABLE false does not stop C_CopyObject",
                    lambda: objects.append(found[0].copy({A.ID: b"copy"})),
                )
            )
        for failure, attempt in checks:
            try:
                attempt()
            except PKCS11Error:
                continue
            missing.append(f"{failure}: the token does not enforce it")
    finally:
        for handle in made:
            with suppress(PKCS11Error):
                raw.destroy_object(session, handle)
        for obj in objects:
            with suppress(PKCS11Error):
                obj.destroy()
        with suppress(PKCS11Error):
            for obj in list(python_session.get_objects({A.TOKEN: False, A.LABEL: label})):
                with suppress(PKCS11Error):
                    obj.destroy()
    return missing
