"""The keys of the backup domain and of each backup set: their templates, and how they are made.

Key hierarchy 2 (one purpose per key; see DESIGN §2, "a PIN holder gets no plaintext"):

- domain **wrap key** (AES, token object): WRAP/UNWRAP only. Its CKA_UNWRAP_TEMPLATE forces
  every key it unwraps to come out as a set KEK: sensitive, not extractable, WRAP/UNWRAP
  only, neither copyable nor modifiable (:data:`SET_KEY_TEMPLATE`).
- domain **seal key** (AES, token object): WRAP/UNWRAP only, with an unwrap template that
  forces the keys it unwraps to be manifest keys: sensitive, not extractable, ENCRYPT/DECRYPT
  only (:data:`MANIFEST_KEY_TEMPLATE`). A manifest key cannot wrap or unwrap, and no wrapped
  key of a set is under it, so decrypting with it reveals the manifest and nothing else.
- domain **owner key** (generic secret): SIGN only (HMAC-SHA256 for the drives' owner
  credentials and the domain id).
- per set: a **KEK** (WRAP/UNWRAP only, its unwrap template forces SENSITIVE on every key it
  unwraps) and a **manifest key** (ENCRYPT/DECRYPT only), both session objects of the
  process that uses them, each wrapped by its own domain key and stored in the set's header.

The wrap and seal keys take their values from the domain secret's first half through HKDF
with distinct labels, so no key of hierarchy 2 shares a value with another, nor with the
wrap key of hierarchy 1 (the secret's first half itself).

What SoftHSM2 2.6.1 enforces, measured: CKA_UNWRAP_TEMPLATE (a template that leaves out or
contradicts a forced attribute is refused with TEMPLATE_INCONSISTENT); keys without DECRYPT
refuse C_Decrypt; MODIFIABLE false refuses C_SetAttributeValue; COPYABLE false refuses
C_CopyObject; WRAP_WITH_TRUSTED (a key marked so cannot be wrapped by an untrusted key).
What it does not allow: an unwrap template nested in an unwrap template
(ATTRIBUTE_VALUE_INVALID), so the domain wrap key cannot force the KEKs it unwraps to carry
their own unwrap template; and CKA_TRUSTED set by the user (only the security officer may),
so WRAP_WITH_TRUSTED is left off the KEK, which the untrusted domain key must wrap.
:func:`probe_protections` checks these on the token at hand. SoftHSM2 also refuses, as
ATTRIBUTE_READ_ONLY, any attribute that follows MODIFIABLE false in a C_UnwrapKey template,
hence MODIFIABLE comes last in every template here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

from .hsm_base import (
    DOMAIN_KEY_LEN,
    GCM_NONCE_LEN,
    GCM_TAG_BITS,
    HIERARCHY_PER_PURPOSE,
    HIERARCHY_SHARED_KEK,
    WRAP_MECHANISM,
    DomainError,
    HsmError,
    UnsealError,
    split_domain_secret,
)
from .hsm_caps import GCM, MechanismMissing, is_mechanism_error
from .hsm_raw import CKA_UNWRAP_TEMPLATE, RawModule, RawTemplate, RawValue

A = Attribute
SET_KEY_LABEL = "sealkeep-set-key"
MANIFEST_KEY_LABEL = "sealkeep-manifest-key"
SET_KEY_WRAP_INFO = b"sealkeep set-key wrap"
MANIFEST_KEY_WRAP_INFO = b"sealkeep manifest-key wrap"
_SESSION_ID_LEN = 16


def _flags(**values: bool) -> dict[int, RawValue]:
    return {int(Attribute[name]): value for name, value in values.items()}


def _modifiable_last(template: Mapping[int, RawValue]) -> dict[int, RawValue]:
    """The template with MODIFIABLE moved to the end (see the module docstring)."""
    ordered = {k: v for k, v in template.items() if k != A.MODIFIABLE}
    if int(A.MODIFIABLE) in template:
        ordered[int(A.MODIFIABLE)] = template[int(A.MODIFIABLE)]
    return ordered


_AES_SECRET: dict[int, RawValue] = {
    int(A.CLASS): int(ObjectClass.SECRET_KEY),
    int(A.KEY_TYPE): int(KeyType.AES),
}
_LOCKED = _flags(SENSITIVE=True, EXTRACTABLE=False, COPYABLE=False, MODIFIABLE=False)
_NO_USE = _flags(ENCRYPT=False, DECRYPT=False, SIGN=False, VERIFY=False, WRAP=False)
_NO_USE.update(_flags(UNWRAP=False, DERIVE=False))

SET_KEY_TEMPLATE: dict[int, RawValue] = _modifiable_last(
    {**_AES_SECRET, **_NO_USE, **_flags(WRAP=True, UNWRAP=True), **_LOCKED}
)
"""What the domain wrap key forces on every key it unwraps: a KEK that can do nothing else."""

MANIFEST_KEY_TEMPLATE: dict[int, RawValue] = _modifiable_last(
    {**_AES_SECRET, **_NO_USE, **_flags(ENCRYPT=True, DECRYPT=True), **_LOCKED}
)
"""What the domain seal key forces on every key it unwraps: a manifest key, nothing else."""

RESTORED_KEY_TEMPLATE: dict[int, RawValue] = _flags(SENSITIVE=True)
"""What a set's KEK forces on every key it unwraps. EXTRACTABLE is each key's own: a
restored key is no more exposed than it was before the backup."""


class DomainKeyValues:
    """The values of a domain's keys, derived from its secret into one buffer of this object's
    own, which :meth:`close` zeroes: no immutable copy of a key value is made on the way to
    the HSM (``C_CreateObject`` reads the buffer in place, see ``hsm_raw.PackedTemplate``).

    ``wrap`` wraps set KEKs, ``seal`` the manifest keys (hierarchy 2: HKDF of the secret's
    first half under distinct labels; hierarchy 1 has no seal key and wraps with the first
    half itself), ``owner_root`` is the secret's second half (a view into the secret).
    """

    def __init__(self, secret: bytes | bytearray, hierarchy: int = HIERARCHY_PER_PURPOSE) -> None:
        first, self.owner_root = split_domain_secret(secret)
        self._buffer = bytearray(2 * DOMAIN_KEY_LEN)
        view = memoryview(self._buffer)
        self.wrap: memoryview = view[:DOMAIN_KEY_LEN]
        self.seal: memoryview | None = view[DOMAIN_KEY_LEN:]
        if hierarchy == HIERARCHY_SHARED_KEK:
            self.wrap = first
            self.seal = None
        else:
            _hkdf_into(first, SET_KEY_WRAP_INFO, self.wrap)
            _hkdf_into(first, MANIFEST_KEY_WRAP_INFO, view[DOMAIN_KEY_LEN:])

    def close(self) -> None:
        self._buffer[:] = bytes(len(self._buffer))

    def __enter__(self) -> DomainKeyValues:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hkdf_into(key: memoryview, info: bytes, out: memoryview) -> None:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=len(out), salt=None, info=info)
    hkdf.derive_into(key, out)


def domain_key_template(
    label: str, domain_id: bytes, value: bytes | memoryview, forced: RawTemplate
) -> RawTemplate:
    """A domain wrap or seal key: a token object that wraps and unwraps, forcing ``forced``."""
    return _domain_wrapping_key(label, domain_id, value, {**_LOCKED, CKA_UNWRAP_TEMPLATE: forced})


def hierarchy_1_wrap_key_template(
    label: str, domain_id: bytes, value: bytes | memoryview
) -> RawTemplate:
    """The one domain key of hierarchy 1 (made only to test upgrades): wraps and unwraps,
    with no unwrap template."""
    locked = _flags(SENSITIVE=True, EXTRACTABLE=False, MODIFIABLE=False)
    return _domain_wrapping_key(label, domain_id, value, locked)


def _domain_wrapping_key(
    label: str, domain_id: bytes, value: bytes | memoryview, protections: RawTemplate
) -> RawTemplate:
    return _modifiable_last(
        {
            **_AES_SECRET,
            int(A.TOKEN): True,
            int(A.PRIVATE): True,
            int(A.LABEL): label,
            int(A.ID): domain_id,
            int(A.VALUE): value,
            **_NO_USE,
            **_flags(WRAP=True, UNWRAP=True),
            **protections,
        }
    )


def owner_key_template(
    label: str, domain_id: bytes, value: bytes | memoryview, *, copyable: bool
) -> RawTemplate:
    """The domain's owner key: a generic secret that signs (HMAC) and does nothing else."""
    return _modifiable_last(
        {
            int(A.CLASS): int(ObjectClass.SECRET_KEY),
            int(A.KEY_TYPE): int(KeyType.GENERIC_SECRET),
            int(A.TOKEN): True,
            int(A.PRIVATE): True,
            int(A.LABEL): label,
            int(A.ID): domain_id,
            int(A.VALUE): value,
            **_NO_USE,
            **_flags(SIGN=True),
            **_flags(SENSITIVE=True, EXTRACTABLE=False, COPYABLE=copyable, MODIFIABLE=False),
        }
    )


def transient_wrap_key(
    value: bytes | memoryview, *, wrap: bool, unwrap: bool, label: str = "sealkeep-ceremony"
) -> dict[int, RawValue]:
    """A session-only AES key for a ceremony (re-share), seen by this process alone."""
    return _modifiable_last(
        {
            **_AES_SECRET,
            int(A.TOKEN): False,
            int(A.PRIVATE): True,
            int(A.LABEL): label,
            int(A.VALUE): value,
            **_NO_USE,
            **_flags(WRAP=wrap, UNWRAP=unwrap),
            **_LOCKED,
        }
    )


def _session_key(
    label: str, forced: RawTemplate, extractable: bool
) -> tuple[bytes, dict[int, RawValue]]:
    """(id, template) of a set's session key: ``forced`` plus what makes it findable."""
    key_id = secrets.token_bytes(_SESSION_ID_LEN)
    template = {
        **forced,
        int(A.TOKEN): False,
        int(A.PRIVATE): True,
        int(A.LABEL): label,
        int(A.ID): key_id,
        int(A.EXTRACTABLE): extractable,
    }
    if label == SET_KEY_LABEL:
        template[CKA_UNWRAP_TEMPLATE] = RESTORED_KEY_TEMPLATE
    return key_id, _modifiable_last(template)


class SessionKeys:
    """Makes and opens set keys as session objects, through direct calls (array templates).

    ``resolve(handle, label, id)`` gives the python-pkcs11 view of a handle made here.
    """

    def __init__(
        self, raw: RawModule, session: int, resolve: Callable[[int, str, bytes], Any]
    ) -> None:
        self.raw = raw
        self.session = session
        self.resolve = resolve

    def generate(self, wrap_key: int, seal_key: int) -> SetKey:
        """A new KEK and manifest key, each wrapped by its domain key.

        Both must be extractable to be wrapped at all; they are session objects of this
        process, which destroys them once the set is written. Neither is ever a token object.
        """
        kek_id, kek_template = _session_key(SET_KEY_LABEL, SET_KEY_TEMPLATE, True)
        kek_template[int(A.VALUE_LEN)] = DOMAIN_KEY_LEN
        mk_id, mk_template = _session_key(MANIFEST_KEY_LABEL, MANIFEST_KEY_TEMPLATE, True)
        mk_template[int(A.VALUE_LEN)] = DOMAIN_KEY_LEN
        made: list[Any] = []
        try:
            kek = self.raw.generate_key(self.session, Mechanism.AES_KEY_GEN, kek_template)
            made.append(self.resolve(kek, SET_KEY_LABEL, kek_id))
            manifest_key = self.raw.generate_key(self.session, Mechanism.AES_KEY_GEN, mk_template)
            made.append(self.resolve(manifest_key, MANIFEST_KEY_LABEL, mk_id))
            wrapped = self.raw.wrap_key(self.session, WRAP_MECHANISM, wrap_key, kek)
            wrapped_mk = self.raw.wrap_key(self.session, WRAP_MECHANISM, seal_key, manifest_key)
        except BaseException:
            for obj in made:
                with suppress(PKCS11Error):
                    obj.destroy()
            raise
        return SetKey(made[0], wrapped, made[1], wrapped_mk)

    def open(self, wrap_key: int, seal_key: int, wrapped: bytes, wrapped_mk: bytes) -> SetKey:
        """Unwrap a set's KEK and manifest key (sensitive, not extractable, one use each)."""
        kek_id, kek_template = _session_key(SET_KEY_LABEL, SET_KEY_TEMPLATE, False)
        mk_id, mk_template = _session_key(MANIFEST_KEY_LABEL, MANIFEST_KEY_TEMPLATE, False)
        made: list[Any] = []
        try:
            kek = self.raw.unwrap_key(self.session, WRAP_MECHANISM, wrap_key, wrapped, kek_template)
            made.append(self.resolve(kek, SET_KEY_LABEL, kek_id))
            manifest_key = self.raw.unwrap_key(
                self.session, WRAP_MECHANISM, seal_key, wrapped_mk, mk_template
            )
            made.append(self.resolve(manifest_key, MANIFEST_KEY_LABEL, mk_id))
        except BaseException:
            for obj in made:
                with suppress(PKCS11Error):
                    obj.destroy()
            raise
        return SetKey(made[0], bytes(wrapped), made[1], bytes(wrapped_mk))


class SetCarrier:
    """Moves sets from a slot's domain to a new one inside the HSM, during a re-share.

    The ceremony holds both domain secrets in memory, so the old wrap key and the new wrap
    and seal keys are loaded as session objects of this process (no other process sees
    them) with no unwrap template: each set's KEK comes out of the old wrap key extractable,
    goes into the new wrap key, and a fresh manifest key goes into the new seal key. No set
    key leaves the HSM. :meth:`close` destroys the session keys.
    """

    def __init__(self, keys: SessionKeys, old: DomainKeyValues, new: DomainKeyValues) -> None:
        self.keys = keys
        raw, session = keys.raw, keys.session
        self._made: list[int] = []
        if new.seal is None:
            raise DomainError("sets are only ever carried into a domain of the current hierarchy")
        try:
            for value, wrap, unwrap in (
                (old.wrap, False, True),
                (new.wrap, True, False),
                (new.seal, True, False),
            ):
                template = transient_wrap_key(value, wrap=wrap, unwrap=unwrap)
                self._made.append(raw.create_object(session, template))
        except BaseException:
            self.close()
            raise

    def carry(self, wrapped_kek: bytes) -> SetKey:
        """The set's KEK wrapped for the new domain, with a new manifest key (session objects)."""
        old_wrap, new_wrap, new_seal = self._made
        raw, session = self.keys.raw, self.keys.session
        kek_id, kek_template = _session_key(SET_KEY_LABEL, SET_KEY_TEMPLATE, True)
        mk_id, mk_template = _session_key(MANIFEST_KEY_LABEL, MANIFEST_KEY_TEMPLATE, True)
        mk_template[int(A.VALUE_LEN)] = DOMAIN_KEY_LEN
        made: list[Any] = []
        try:
            kek = raw.unwrap_key(session, WRAP_MECHANISM, old_wrap, wrapped_kek, kek_template)
            made.append(self.keys.resolve(kek, SET_KEY_LABEL, kek_id))
            manifest_key = raw.generate_key(session, Mechanism.AES_KEY_GEN, mk_template)
            made.append(self.keys.resolve(manifest_key, MANIFEST_KEY_LABEL, mk_id))
            wrapped = raw.wrap_key(session, WRAP_MECHANISM, new_wrap, kek)
            wrapped_mk = raw.wrap_key(session, WRAP_MECHANISM, new_seal, manifest_key)
        except BaseException:
            for obj in made:
                with suppress(PKCS11Error):
                    obj.destroy()
            raise
        return SetKey(made[0], wrapped, made[1], wrapped_mk)

    def close(self) -> None:
        for handle in self._made:
            with suppress(PKCS11Error):
                self.keys.raw.destroy_object(self.keys.session, handle)
        self._made = []


class SetKey:
    """A backup set's keys, as session objects in the HSM, and their wrapped values.

    ``handle`` is the KEK, which wraps the set's keys. ``manifest_key`` seals the manifest
    with AES-GCM inside the HSM (this is a :class:`~sealkeep.manifest.Sealer`). In key
    hierarchy 2 they are two keys, each with one purpose; in sets of hierarchy 1 the KEK is
    both and ``wrapped_manifest_key`` is None. They exist only in this process's session.
    """

    def __init__(
        self,
        handle: Any,
        wrapped: bytes,
        manifest_key: Any = None,
        wrapped_manifest_key: bytes | None = None,
    ) -> None:
        self.handle = handle
        self.wrapped = wrapped
        self.manifest_key = handle if manifest_key is None else manifest_key
        self.wrapped_manifest_key = wrapped_manifest_key

    @property
    def hierarchy(self) -> int:
        if self.wrapped_manifest_key is None:
            return HIERARCHY_SHARED_KEK
        return HIERARCHY_PER_PURPOSE

    def wrap(self, obj: Any) -> bytes:
        return bytes(self.handle.wrap_key(obj, mechanism=WRAP_MECHANISM))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM in the HSM: ``nonce ‖ ciphertext ‖ tag``.

        The nonce is chosen here (a manifest key seals one manifest, so a random 96-bit nonce
        is safe) and passed in CK_GCM_PARAMS, which SoftHSM2 honours; the output is standard
        GCM, the same as ``cryptography``'s AESGCM with the same key.
        """
        nonce = secrets.token_bytes(GCM_NONCE_LEN)
        params = pkcs11.GCMParams(nonce, aad, GCM_TAG_BITS)
        try:
            sealed = self.manifest_key.encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params
            )
        except PKCS11Error as exc:
            if is_mechanism_error(exc):
                raise _gcm_missing("cannot seal the set's manifest") from None
            raise HsmError(f"the HSM cannot seal with AES-GCM: {exc!r}") from None
        return nonce + bytes(sealed)

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        """Open what :meth:`seal` made; raises :class:`UnsealError` if it does not authenticate."""
        if len(sealed) < GCM_NONCE_LEN + GCM_TAG_BITS // 8:
            raise UnsealError("sealed data is truncated")
        params = pkcs11.GCMParams(sealed[:GCM_NONCE_LEN], aad, GCM_TAG_BITS)
        try:
            return bytes(
                self.manifest_key.decrypt(
                    sealed[GCM_NONCE_LEN:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
        except PKCS11Error as exc:
            if is_mechanism_error(exc):
                raise _gcm_missing("cannot open the set's manifest") from None
            # SoftHSM2 reports a failed GCM tag check as a bare GeneralError.
            raise UnsealError("sealed data does not authenticate") from None

    def destroy(self) -> None:
        for obj in {
            id(self.handle): self.handle,
            id(self.manifest_key): self.manifest_key,
        }.values():
            with suppress(PKCS11Error):
                obj.destroy()


def _gcm_missing(doing: str) -> MechanismMissing:
    return MechanismMissing(
        f"{doing}: the HSM lacks {GCM.describe()}. This is a limit of the token, not of the "
        "backup: nothing on the drives is corrupt. Use a token that offers it"
    )


# --- what the token enforces ---------------------------------------------------------------


def probe_protections(raw: RawModule, session: int, python_session: Any) -> list[str]:
    """What this token does not enforce of key hierarchy 2, each as a plain sentence.

    Tried with throwaway session objects, destroyed before returning; nothing is stored.
    """
    missing: list[str] = []
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
        return transient_wrap_key(value, wrap=wrap, unwrap=unwrap, label=label)

    try:
        try:
            wrapper = create(
                {
                    **probe_key(),
                    CKA_UNWRAP_TEMPLATE: SET_KEY_TEMPLATE,
                }
            )
        except PKCS11Error as exc:
            raise DomainError(
                f"the token refuses keys with CKA_UNWRAP_TEMPLATE ({exc}): a PIN holder could "
                "unwrap every set key as a readable key, so sealkeep will not make a domain here"
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
        wrapped = raw.wrap_key(session, WRAP_MECHANISM, wrapper, key)
        weak = {**SET_KEY_TEMPLATE, int(A.TOKEN): False, int(A.LABEL): label}
        weak[int(A.SENSITIVE)] = False
        weak = _modifiable_last(weak)
        weak = {k: v for k, v in weak.items() if k != A.EXTRACTABLE}
        try:
            made.append(raw.unwrap_key(session, WRAP_MECHANISM, wrapper, wrapped, weak))
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
                "CKA_COPYABLE false does not stop C_CopyObject",
                lambda: objects.append(found[0].copy({A.ID: b"copy"})),
            ),
            (
                "CKA_MODIFIABLE false does not stop C_SetAttributeValue",
                lambda: found[0].__setitem__(A.DECRYPT, True),
            ),
        ]
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
