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

The profile of the domain (:mod:`sealkeep.hsm_caps`) picks the mechanisms: ``standard`` wraps
with AES key wrap with padding and seals manifests with AES-GCM; ``portable`` wraps with
AES-CBC-PAD (a fresh random IV before each wrapped key) and seals manifests with AES-CBC-PAD
under the manifest key then HMAC-SHA256 under a third per-set key, the **MAC key** (SIGN only,
wrapped by the domain seal key like the manifest key). Under ``portable`` the seal key's
unwrap template forces what both per-set manifest keys share (sensitive, not extractable,
unable to wrap, unwrap or derive), not a key type.

Where a token refuses CKA_UNWRAP_TEMPLATE or CKA_COPYABLE as an unknown attribute
(openCryptoki 3.8.1), :class:`TokenTraits` leaves them out of every template and
:func:`sealkeep.hsm_protections.probe_protections` says plainly what that costs.

What SoftHSM2 2.6.1 enforces, measured: CKA_UNWRAP_TEMPLATE (a template that leaves out or
contradicts a forced attribute is refused with TEMPLATE_INCONSISTENT); keys without DECRYPT
refuse C_Decrypt; MODIFIABLE false refuses C_SetAttributeValue; COPYABLE false refuses
C_CopyObject; WRAP_WITH_TRUSTED (a key marked so cannot be wrapped by an untrusted key).
What it does not allow: an unwrap template nested in an unwrap template
(ATTRIBUTE_VALUE_INVALID), so the domain wrap key cannot force the KEKs it unwraps to carry
their own unwrap template; and CKA_TRUSTED set by the user (only the security officer may),
so WRAP_WITH_TRUSTED is left off the KEK, which the untrusted domain key must wrap.
:mod:`sealkeep.hsm_protections` checks these on the token at hand. SoftHSM2 also refuses,
as ATTRIBUTE_READ_ONLY, any attribute that follows MODIFIABLE false in a C_UnwrapKey
template, hence MODIFIABLE comes last in every template here.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
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
    DomainError,
    HsmError,
    UnsealError,
    split_domain_secret,
)
from .hsm_caps import (
    CBC_PAD,
    GCM,
    HMAC,
    PORTABLE,
    STANDARD,
    MechanismMissing,
    Need,
    Profile,
    is_mechanism_error,
)
from .hsm_raw import (
    CKA_UNWRAP_TEMPLATE,
    CKR_ATTRIBUTE_READ_ONLY,
    CKR_ATTRIBUTE_TYPE_INVALID,
    GcmParameter,
    HsmCallError,
    RawModule,
    RawTemplate,
    RawValue,
)

A = Attribute
SET_KEY_LABEL = "sealkeep-set-key"
MANIFEST_KEY_LABEL = "sealkeep-manifest-key"
MAC_KEY_LABEL = "sealkeep-manifest-mac-key"
MAC_LEN = 32
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

MAC_KEY_TEMPLATE: dict[int, RawValue] = _modifiable_last(
    {
        int(A.CLASS): int(ObjectClass.SECRET_KEY),
        int(A.KEY_TYPE): int(KeyType.GENERIC_SECRET),
        **_NO_USE,
        **_flags(SIGN=True),
        **_LOCKED,
    }
)
"""A portable set's manifest MAC key: HMAC-SHA256 (C_Sign) and nothing else."""

PORTABLE_SEALED_TEMPLATE: dict[int, RawValue] = _modifiable_last(
    {**_flags(WRAP=False, UNWRAP=False, DERIVE=False), **_LOCKED}
)
"""What a portable domain's seal key forces on the manifest and MAC keys it unwraps."""

RESTORED_KEY_TEMPLATE: dict[int, RawValue] = _flags(SENSITIVE=True)
"""What a set's KEK forces on every key it unwraps. EXTRACTABLE is each key's own: a
restored key is no more exposed than it was before the backup."""


@dataclass(frozen=True)
class TokenTraits:
    """Which protective attributes the token takes at all (see the module docstring)."""

    unwrap_templates: bool = True
    copyable: bool = True

    def fit(self, template: RawTemplate) -> dict[int, RawValue]:
        """``template`` without the attributes this token refuses (nested ones included)."""
        fitted: dict[int, RawValue] = {}
        for kind, value in template.items():
            if kind == CKA_UNWRAP_TEMPLATE and not self.unwrap_templates:
                continue
            if kind == int(A.COPYABLE) and not self.copyable:
                continue
            fitted[kind] = self.fit(value) if isinstance(value, Mapping) else value
        return fitted


def detect_traits(raw: RawModule, session: int) -> TokenTraits:
    """Whether the token takes CKA_UNWRAP_TEMPLATE and CKA_COPYABLE, asked with throwaway
    session keys; only a refusal of the attribute as unknown counts as "does not take"."""
    value = secrets.token_bytes(DOMAIN_KEY_LEN)

    def takes(extra: RawTemplate) -> bool:
        template = {**transient_wrap_key(value, wrap=True, unwrap=True), **extra}
        template = {k: v for k, v in template.items() if k != A.COPYABLE or A.COPYABLE in extra}
        try:
            handle = raw.create_object(session, _modifiable_last(template))
        except HsmCallError as exc:
            if exc.rv == CKR_ATTRIBUTE_TYPE_INVALID:
                return False
            raise
        with suppress(PKCS11Error):
            raw.destroy_object(session, handle)
        return True

    return TokenTraits(
        unwrap_templates=takes({CKA_UNWRAP_TEMPLATE: RESTORED_KEY_TEMPLATE}),
        copyable=takes(_flags(COPYABLE=False)),
    )


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


class Wrapping:
    """Wraps and unwraps with a profile's mechanism through direct calls: under ``portable``
    each wrapped key is ``IV ‖ AES-CBC-PAD ciphertext`` with a fresh random IV, under
    ``standard`` the RFC 5649 output alone."""

    def __init__(self, raw: RawModule, session: int, profile: Profile) -> None:
        self.raw = raw
        self.session = session
        self.profile = profile

    def wrap(self, wrapping_key: int, key: int, iv: bytes | None = None) -> bytes:
        """``key`` wrapped; under ``portable`` with a fresh IV, or ``iv`` when given."""
        if not self.profile.iv_len:
            return self.raw.wrap_key(self.session, self.profile.wrap_mechanism, wrapping_key, key)
        iv = iv or secrets.token_bytes(self.profile.iv_len)
        mechanism = self.profile.wrap_mechanism
        return iv + self.raw.wrap_key(self.session, mechanism, wrapping_key, key, iv)

    def unwrap(self, unwrapping_key: int, wrapped: bytes, template: RawTemplate) -> int:
        iv, body = split_wrapped(self.profile, wrapped)
        mechanism = self.profile.wrap_mechanism
        return self.raw.unwrap_key(self.session, mechanism, unwrapping_key, body, template, iv)


def split_wrapped(profile: Profile, wrapped: bytes) -> tuple[bytes | None, bytes]:
    """(IV or None, wrapped bytes) of a value wrapped under ``profile``."""
    if not profile.iv_len:
        return None, bytes(wrapped)
    if len(wrapped) <= profile.iv_len:
        raise SetKeyFormatError("a wrapped key is shorter than its IV")
    return bytes(wrapped[: profile.iv_len]), bytes(wrapped[profile.iv_len :])


class SetKeyFormatError(HsmError):
    """A wrapped key of a set is malformed (too short to hold its IV)."""


class SessionKeys:
    """Makes and opens set keys as session objects, through direct calls (array templates).

    ``resolve(handle, label, id)`` gives the python-pkcs11 view of a handle made here.
    """

    def __init__(
        self,
        raw: RawModule,
        session: int,
        resolve: Callable[[int, str, bytes], Any],
        profile: Profile = STANDARD,
        traits: TokenTraits | None = None,
    ) -> None:
        self.raw = raw
        self.session = session
        self.resolve = resolve
        self.profile = profile
        self.traits = traits or TokenTraits()
        self.wrapping = Wrapping(raw, session, profile)

    def _templates(self, extractable: bool) -> list[tuple[str, bytes, dict[int, RawValue], int]]:
        """(label, id, template, generating mechanism) of each key a set of this profile has."""
        kinds = [
            (SET_KEY_LABEL, SET_KEY_TEMPLATE, Mechanism.AES_KEY_GEN),
            (MANIFEST_KEY_LABEL, MANIFEST_KEY_TEMPLATE, Mechanism.AES_KEY_GEN),
        ]
        if self.profile is PORTABLE:
            kinds.append((MAC_KEY_LABEL, MAC_KEY_TEMPLATE, Mechanism.GENERIC_SECRET_KEY_GEN))
        made = []
        for label, forced, mechanism in kinds:
            key_id, template = _session_key(label, forced, extractable)
            made.append((label, key_id, self.traits.fit(template), int(mechanism)))
        return made

    def generate(self, wrap_key: int, seal_key: int) -> SetKey:
        """A new KEK and manifest key (and, under ``portable``, MAC key), each wrapped by its
        domain key: the KEK by the wrap key, the others by the seal key.

        They must be extractable to be wrapped at all; they are session objects of this
        process, which destroys them once the set is written. None is ever a token object.
        """
        made: list[Any] = []
        wrapped: list[bytes] = []
        try:
            for label, key_id, template, mechanism in self._templates(True):
                template[int(A.VALUE_LEN)] = DOMAIN_KEY_LEN
                handle = self.raw.generate_key(self.session, mechanism, template)
                made.append(self.resolve(handle, label, key_id))
                outer = wrap_key if label == SET_KEY_LABEL else seal_key
                wrapped.append(self.wrapping.wrap(outer, handle))
        except BaseException:
            for obj in made:
                with suppress(PKCS11Error):
                    obj.destroy()
            raise
        return SetKey.of(self.profile, made, wrapped, self.wrapping)

    def open(
        self,
        wrap_key: int,
        seal_key: int,
        wrapped: bytes,
        wrapped_mk: bytes,
        wrapped_mac: bytes | None = None,
    ) -> SetKey:
        """Unwrap a set's keys (sensitive, not extractable, one use each)."""
        values = [wrapped, wrapped_mk] + ([wrapped_mac] if wrapped_mac is not None else [])
        templates = self._templates(False)
        if len(values) != len(templates):
            raise SetKeyFormatError(
                f"the set's header holds {len(values)} wrapped keys where a set of the "
                f"{self.profile.name} profile has {len(templates)}"
            )
        made: list[Any] = []
        try:
            for (label, key_id, template, _), value in zip(templates, values, strict=True):
                outer = wrap_key if label == SET_KEY_LABEL else seal_key
                handle = self.wrapping.unwrap(outer, value, template)
                made.append(self.resolve(handle, label, key_id))
        except BaseException:
            for obj in made:
                with suppress(PKCS11Error):
                    obj.destroy()
            raise
        return SetKey.of(self.profile, made, [bytes(v) for v in values], self.wrapping)


class SetCarrier:
    """Moves sets from a slot's domain to a new one inside the HSM, during a re-share.

    The ceremony holds both domain secrets in memory, so the old wrap key and the new wrap
    and seal keys are loaded as session objects of this process (no other process sees
    them) with no unwrap template: each set's KEK comes out of the old wrap key extractable,
    goes into the new wrap key, and fresh manifest keys go into the new seal key. No set
    key leaves the HSM. The new domain keeps the profile of the old. :meth:`close` destroys
    the session keys.
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
                template = keys.traits.fit(transient_wrap_key(value, wrap=wrap, unwrap=unwrap))
                self._made.append(raw.create_object(session, template))
        except BaseException:
            self.close()
            raise

    def carry(self, wrapped_kek: bytes) -> SetKey:
        """The set's KEK wrapped for the new domain, with new manifest keys (session objects)."""
        old_wrap, new_wrap, new_seal = self._made
        keys = self.keys
        made: list[Any] = []
        wrapped: list[bytes] = []
        try:
            for label, key_id, template, mechanism in keys._templates(True):
                if label == SET_KEY_LABEL:
                    handle = self._unwrap_extractable(old_wrap, wrapped_kek, template)
                else:
                    template[int(A.VALUE_LEN)] = DOMAIN_KEY_LEN
                    handle = keys.raw.generate_key(keys.session, mechanism, template)
                made.append(keys.resolve(handle, label, key_id))
                outer = new_wrap if label == SET_KEY_LABEL else new_seal
                wrapped.append(keys.wrapping.wrap(outer, handle))
        except BaseException:
            for obj in made:
                with suppress(PKCS11Error):
                    obj.destroy()
            raise
        return SetKey.of(keys.profile, made, wrapped, keys.wrapping)

    def _unwrap_extractable(self, unwrapping: int, wrapped: bytes, template: RawTemplate) -> int:
        """Unwrap a KEK that must stay extractable. openCryptoki 3.8.1 refuses CKA_EXTRACTABLE
        in C_UnwrapKey as read-only; its unwrapped keys are extractable by default."""
        try:
            return self.keys.wrapping.unwrap(unwrapping, wrapped, template)
        except HsmCallError as exc:
            if exc.rv != CKR_ATTRIBUTE_READ_ONLY:
                raise
        plain = {k: v for k, v in template.items() if k != A.EXTRACTABLE}
        return self.keys.wrapping.unwrap(unwrapping, wrapped, plain)

    def close(self) -> None:
        for handle in self._made:
            with suppress(PKCS11Error):
                self.keys.raw.destroy_object(self.keys.session, handle)
        self._made = []


class SetKey:
    """A backup set's keys, as session objects in the HSM, and their wrapped values.

    ``handle`` is the KEK, which wraps the set's keys. ``manifest_key`` seals the manifest
    inside the HSM (this is a :class:`~sealkeep.manifest.Sealer`): AES-GCM under the
    ``standard`` profile; AES-CBC-PAD then HMAC-SHA256 under ``mac_key`` under ``portable``.
    In key hierarchy 2 they are separate keys, each with one purpose; in sets of hierarchy 1
    the KEK is both and ``wrapped_manifest_key`` is None. They exist only in this process's
    session.
    """

    def __init__(
        self,
        handle: Any,
        wrapped: bytes,
        manifest_key: Any = None,
        wrapped_manifest_key: bytes | None = None,
        *,
        profile: Profile = STANDARD,
        mac_key: Any = None,
        wrapped_mac_key: bytes | None = None,
        wrapping: Wrapping | None = None,
    ) -> None:
        self.handle = handle
        # Direct calls by handle, where the keys were made by direct calls: python-pkcs11's
        # view of a session key costs a search of the whole token to find.
        self._wrapping = wrapping
        self.wrapped = wrapped
        self.manifest_key = handle if manifest_key is None else manifest_key
        self.wrapped_manifest_key = wrapped_manifest_key
        self.profile = profile
        self.mac_key = mac_key
        self.wrapped_mac_key = wrapped_mac_key

    @classmethod
    def of(
        cls,
        profile: Profile,
        made: list[Any],
        wrapped: list[bytes],
        wrapping: Wrapping | None = None,
    ) -> SetKey:
        """The keys :class:`SessionKeys` made or opened, in its order (KEK, manifest, MAC)."""
        mac_key = made[2] if len(made) > 2 else None
        wrapped_mac = wrapped[2] if len(wrapped) > 2 else None
        return cls(
            made[0],
            wrapped[0],
            made[1],
            wrapped[1],
            profile=profile,
            mac_key=mac_key,
            wrapped_mac_key=wrapped_mac,
            wrapping=wrapping,
        )

    @property
    def direct(self) -> Wrapping | None:
        """Direct calls in this set's session (None where the keys came from python-pkcs11)."""
        return self._wrapping

    @property
    def hierarchy(self) -> int:
        if self.wrapped_manifest_key is None:
            return HIERARCHY_SHARED_KEK
        return HIERARCHY_PER_PURPOSE

    def wrap(self, obj: Any, like: bytes | None = None, via: Wrapping | None = None) -> bytes:
        """``obj`` wrapped under the KEK (by direct calls in ``via``'s session where given).
        Under ``portable`` the IV is fresh, or that of ``like`` (a wrapped value of the set:
        wrapping again with its IV must give it back)."""
        iv: bytes | None = None
        if like is not None and self.profile.iv_len and len(like) > self.profile.iv_len:
            iv = bytes(like[: self.profile.iv_len])
        wrapping = via or self._wrapping
        if wrapping is not None:
            return wrapping.wrap(int(self.handle.handle), int(obj.handle), iv)
        if not self.profile.iv_len:
            return bytes(self.handle.wrap_key(obj, mechanism=self.profile.wrap_mechanism))
        iv = iv or secrets.token_bytes(self.profile.iv_len)
        body = self.handle.wrap_key(obj, mechanism=self.profile.wrap_mechanism, mechanism_param=iv)
        return iv + bytes(body)

    def unwrap(self, object_class: Any, key_type: Any, wrapped: bytes, **options: Any) -> Any:
        """A key of the set unwrapped by the KEK (python-pkcs11's ``unwrap_key`` options)."""
        iv, body = split_wrapped(self.profile, wrapped)
        if iv is not None:
            options["mechanism_param"] = iv
        return self.handle.unwrap_key(
            object_class, key_type, body, mechanism=self.profile.wrap_mechanism, **options
        )

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Authenticated encryption in the HSM.

        ``standard``: AES-256-GCM, ``nonce ‖ ciphertext ‖ tag``. The nonce is chosen here (a
        manifest key seals one manifest, so a random 96-bit nonce is safe) and passed in
        CK_GCM_PARAMS, which SoftHSM2 honours; the output is standard GCM.

        ``portable``: ``IV ‖ AES-CBC-PAD ciphertext ‖ HMAC-SHA256`` where the HMAC covers
        the length of ``aad``, ``aad``, the IV and the ciphertext (encrypt-then-MAC).
        """
        if self.profile is PORTABLE:
            iv = secrets.token_bytes(self.profile.iv_len)
            try:
                body = self._crypt(True, self.manifest_key, Mechanism.AES_CBC_PAD, plaintext, iv)
            except PKCS11Error as exc:
                if is_mechanism_error(exc):
                    raise _missing(CBC_PAD, "cannot seal the set's manifest") from None
                raise HsmError(f"the HSM cannot encrypt with AES-CBC-PAD: {exc!r}") from None
            return iv + body + self._mac(aad, iv + body)
        nonce = secrets.token_bytes(GCM_NONCE_LEN)
        try:
            sealed = self._crypt(True, self.manifest_key, Mechanism.AES_GCM, plaintext, nonce, aad)
        except PKCS11Error as exc:
            if is_mechanism_error(exc):
                raise _missing(GCM, "cannot seal the set's manifest") from None
            raise HsmError(f"the HSM cannot seal with AES-GCM: {exc!r}") from None
        return nonce + bytes(sealed)

    def _mac(self, aad: bytes, data: bytes) -> bytes:
        message = len(aad).to_bytes(8, "big") + aad + data
        try:
            if self._wrapping is not None:
                direct = self._wrapping
                key = int(self.mac_key.handle)
                return direct.raw.sign(direct.session, Mechanism.SHA256_HMAC, key, message)
            return bytes(self.mac_key.sign(message, mechanism=Mechanism.SHA256_HMAC))
        except PKCS11Error as exc:
            if is_mechanism_error(exc):
                raise _missing(HMAC, "cannot authenticate the set's manifest") from None
            raise HsmError(f"the HSM cannot compute HMAC-SHA256: {exc!r}") from None

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        """Open what :meth:`seal` made; raises :class:`UnsealError` if it does not authenticate."""
        if self.profile is PORTABLE:
            return self._unseal_portable(sealed, aad)
        if len(sealed) < GCM_NONCE_LEN + GCM_TAG_BITS // 8:
            raise UnsealError("sealed data is truncated")
        nonce, body = bytes(sealed[:GCM_NONCE_LEN]), bytes(sealed[GCM_NONCE_LEN:])
        try:
            return self._crypt(False, self.manifest_key, Mechanism.AES_GCM, body, nonce, aad)
        except PKCS11Error as exc:
            if is_mechanism_error(exc):
                raise _missing(GCM, "cannot open the set's manifest") from None
            # SoftHSM2 reports a failed GCM tag check as a bare GeneralError.
            raise UnsealError("sealed data does not authenticate") from None

    def _unseal_portable(self, sealed: bytes, aad: bytes) -> bytes:
        iv_len = self.profile.iv_len
        if len(sealed) < iv_len + 16 + MAC_LEN:
            raise UnsealError("sealed data is truncated")
        data, tag = sealed[:-MAC_LEN], sealed[-MAC_LEN:]
        # The MAC is checked before anything is decrypted: a forged body never reaches CBC.
        if not hmac.compare_digest(self._mac(aad, data), tag):
            raise UnsealError("sealed data does not authenticate")
        try:
            body, iv = bytes(data[iv_len:]), bytes(data[:iv_len])
            return self._crypt(False, self.manifest_key, Mechanism.AES_CBC_PAD, body, iv)
        except PKCS11Error as exc:
            if is_mechanism_error(exc):
                raise _missing(CBC_PAD, "cannot open the set's manifest") from None
            raise UnsealError("sealed data does not decrypt") from None

    def _crypt(
        self,
        encrypt: bool,
        key: Any,
        mechanism: Mechanism,
        data: bytes,
        iv: bytes,
        aad: bytes | None = None,
    ) -> bytes:
        """Encrypt or decrypt ``data`` under ``key`` in one part: AES-GCM (``iv`` is the nonce,
        with ``aad``) or AES-CBC-PAD. By direct calls on the handle where the key was made
        by them."""
        if self._wrapping is None:
            param: Any = iv if aad is None else pkcs11.GCMParams(iv, aad, GCM_TAG_BITS)
            call = key.encrypt if encrypt else key.decrypt
            return bytes(call(data, mechanism=mechanism, mechanism_param=param))
        raw, session = self._wrapping.raw, self._wrapping.session
        gcm = GcmParameter(iv, aad, GCM_TAG_BITS) if aad is not None else None
        parameter = bytes(gcm) if gcm is not None else iv
        call_raw = raw.encrypt if encrypt else raw.decrypt
        return call_raw(session, int(mechanism), int(key.handle), data, parameter)

    def destroy(self) -> None:
        for obj in {
            id(self.handle): self.handle,
            id(self.manifest_key): self.manifest_key,
            id(self.mac_key): self.mac_key,
        }.values():
            if obj is None:
                continue
            with suppress(PKCS11Error):
                if self._wrapping is not None:
                    self._wrapping.raw.destroy_object(self._wrapping.session, int(obj.handle))
                else:
                    obj.destroy()


def _missing(need: Need, doing: str) -> MechanismMissing:
    return MechanismMissing(
        f"{doing}: the HSM lacks {need.describe()}. This is a limit of the token, not of the "
        "backup: nothing on the drives is corrupt. Use a token that offers it"
    )
