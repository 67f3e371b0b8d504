"""What a token must be able to do to hold a backup domain, checked before anything is claimed.

A domain follows one of two **profiles** (the mechanisms its sets use), chosen when it is
created and recorded in the slot's marker, the domain record and every set's header:

- ``standard``: AES key generation, CKM_AES_KEY_WRAP_PAD (set keys under the domain keys,
  every key under its set's KEK), CKM_AES_GCM (each set's manifest), CKM_SHA256_HMAC (the
  drives' owner credentials and the domain id).
- ``portable``, for tokens without key wrap with padding or GCM (openCryptoki's soft token):
  CKM_AES_CBC_PAD wraps under the same wrap-only keys (a fresh random IV per wrapped key,
  stored before the wrapped bytes) and encrypts the manifest, which an HMAC-SHA256 key of
  its own authenticates (encrypt-then-MAC); CKM_GENERIC_SECRET_KEY_GEN makes that key.

:func:`choose_profile` reads the token's mechanism list and prefers ``standard``;
:func:`require_capabilities` tries each mechanism of a profile on throwaway session objects
against the standard (RFC 5649 key wrap, GCM as NIST SP 800-38D, CBC with PKCS#7 padding as
SP 800-38A, HMAC as RFC 2104, computed here by ``cryptography`` and ``hmac``) with a full
wrap and unwrap: a token that computes any of them differently could not open sets made on
another HSM, nor another HSM its sets.

When a call on a set's keys fails later anyway (a domain held by a token that lost a
mechanism, or a set restored into a token that never had it), :func:`mechanism_failure`
turns the PKCS#11 error into a :class:`MechanismMissing` that names the mechanism and says the
token is at fault, not the backup: restore must not call sound copies corrupt.

openCryptoki 3.8.1's soft token, measured: lists neither CKM_AES_KEY_WRAP_PAD nor CKM_AES_GCM,
answers both with CKR_MECHANISM_INVALID (checked before the template), and refuses
CKA_COPYABLE and CKA_UNWRAP_TEMPLATE as CKR_ATTRIBUTE_TYPE_INVALID; the throwaway objects here
carry neither.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    FunctionNotSupported,
    MechanismInvalid,
    MechanismParamInvalid,
    PKCS11Error,
)

from .hsm_base import DOMAIN_KEY_LEN, GCM_NONCE_LEN, GCM_TAG_BITS, WRAP_MECHANISM, HsmError
from .hsm_raw import HsmCallError
from .manifest import SealerUnavailable

__all__ = [
    "DOMAIN_MECHANISMS",
    "PORTABLE",
    "PROFILES",
    "STANDARD",
    "MechanismMissing",
    "Need",
    "Profile",
    "choose_profile",
    "is_mechanism_error",
    "mechanism_failure",
    "mechanism_name",
    "possible_profiles",
    "profile_label",
    "profile_named",
    "require_capabilities",
    "require_mechanisms",
]

A = Attribute

# CKR_FUNCTION_NOT_SUPPORTED, CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID: what a
# direct call (hsm_raw) returns where python-pkcs11 raises the three exceptions below.
_MECHANISM_RVS = frozenset({0x54, 0x70, 0x71})
_MECHANISM_EXCEPTIONS = (MechanismInvalid, MechanismParamInvalid, FunctionNotSupported)


class MechanismMissing(HsmError, SealerUnavailable):
    """The token lacks a mechanism sealkeep needs: a limit of the token, says nothing of any
    backup set (restore does not call a copy corrupt for it)."""


@dataclass(frozen=True)
class Need:
    """A mechanism a backup domain needs, the operations it must allow, and what it is for."""

    mechanism: Mechanism
    flags: MechanismFlag
    purpose: str

    @property
    def name(self) -> str:
        return mechanism_name(self.mechanism)

    def describe(self) -> str:
        return f"{self.name} ({self.purpose})"


KEY_GEN = Need(Mechanism.AES_KEY_GEN, MechanismFlag.GENERATE, "makes each set's AES keys")
KEY_WRAP = Need(
    WRAP_MECHANISM,
    MechanismFlag.WRAP | MechanismFlag.UNWRAP,
    "AES key wrap with padding, RFC 5649: wraps each set's keys under the domain keys and "
    "every backed-up key under its set's key",
)
GCM = Need(
    Mechanism.AES_GCM,
    MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
    "AES-GCM: seals and opens each set's manifest",
)
HMAC = Need(
    Mechanism.SHA256_HMAC,
    MechanismFlag.SIGN,
    "HMAC-SHA256: the drives' owner credentials and the domain id",
)
CBC_PAD = Need(
    Mechanism.AES_CBC_PAD,
    MechanismFlag.WRAP | MechanismFlag.UNWRAP | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
    "AES-CBC with padding: wraps each set's keys under the domain keys and every backed-up "
    "key under its set's key, and encrypts each set's manifest",
)
SECRET_GEN = Need(
    Mechanism.GENERIC_SECRET_KEY_GEN,
    MechanismFlag.GENERATE,
    "makes each set's manifest HMAC key",
)
DOMAIN_MECHANISMS: tuple[Need, ...] = (KEY_GEN, KEY_WRAP, GCM, HMAC)

CBC_IV_LEN = 16


@dataclass(frozen=True)
class Profile:
    """The mechanisms a domain's sets use (see the module docstring)."""

    number: int
    name: str
    summary: str
    needs: tuple[Need, ...]
    wrap_mechanism: Mechanism
    iv_len: int = 0
    """Bytes of random IV stored before each wrapped key (0: the mechanism takes none)."""

    def describe(self) -> str:
        return f"{self.name} ({self.summary})"


STANDARD = Profile(
    1,
    "standard",
    "AES key wrap with padding, AES-GCM manifests",
    DOMAIN_MECHANISMS,
    WRAP_MECHANISM,
)
PORTABLE = Profile(
    2,
    "portable",
    "AES-CBC-PAD wrapping under wrap-only keys, manifests encrypted with AES-CBC-PAD and "
    "authenticated with HMAC-SHA256",
    (KEY_GEN, SECRET_GEN, CBC_PAD, HMAC),
    Mechanism.AES_CBC_PAD,
    CBC_IV_LEN,
)
PROFILES: dict[int, Profile] = {p.number: p for p in (STANDARD, PORTABLE)}


def profile_named(name: str) -> Profile:
    """The profile called ``name`` (``standard`` or ``portable``)."""
    for profile in PROFILES.values():
        if profile.name == name:
            return profile
    raise ValueError(
        f"no profile {name!r}: choose {' or '.join(p.name for p in PROFILES.values())}"
    )


def profile_label(number: int) -> str:
    """The name of profile ``number``, or what this version calls one it does not know."""
    profile = PROFILES.get(number)
    return profile.name if profile is not None else f"profile {number}"


def mechanism_name(mechanism: int) -> str:
    """The PKCS#11 name of a mechanism (``CKM_AES_KEY_WRAP_PAD``), or its number."""
    try:
        return f"CKM_{Mechanism(mechanism).name}"
    except ValueError:
        return f"mechanism 0x{mechanism:x}"


def is_mechanism_error(exc: BaseException) -> bool:
    """Whether a PKCS#11 error says the token cannot do the mechanism at all."""
    if isinstance(exc, _MECHANISM_EXCEPTIONS):
        return True
    return isinstance(exc, HsmCallError) and exc.rv in _MECHANISM_RVS


def _listed(slot: Any) -> dict[int, MechanismFlag] | None:
    """The token's mechanisms with the operations each allows; None if it will not say."""
    try:
        mechanisms = list(slot.get_mechanisms())
        return {int(m): MechanismFlag(slot.get_mechanism_info(m).flags) for m in mechanisms}
    except (PKCS11Error, ValueError):
        return None


def _unlisted(listed: dict[int, MechanismFlag] | None, needs: Iterable[Need]) -> list[Need]:
    """The needs the mechanism list lacks, or lists without every operation they need."""
    if listed is None:
        return []
    return [
        n for n in needs if (listed.get(int(n.mechanism), MechanismFlag(0)) & n.flags) != n.flags
    ]


def _names(needs: Sequence[Need]) -> str:
    described = [n.describe() for n in needs]
    if len(described) == 1:
        return described[0]
    return ", ".join(described[:-1]) + " and " + described[-1]


def choose_profile(session: Any, where: str, wanted: Profile | None = None) -> Profile:
    """The profile a new domain in this token follows: ``wanted`` if given, else the first
    of :data:`PROFILES` whose mechanisms the token offers and computes as the standard says.

    Raises :class:`MechanismMissing` naming what each profile lacks when none fits (or what
    ``wanted`` lacks). Trials use throwaway session objects; nothing is stored.
    """
    candidates = [wanted] if wanted is not None else list(PROFILES.values())
    faults: dict[Profile, list[str]] = {}
    for profile in candidates:
        faults[profile] = _faults(session, profile)
        if not faults[profile]:
            return profile
    if wanted is not None:
        lacks = "; ".join(faults[wanted])
        raise MechanismMissing(
            f"{where} cannot hold a backup domain of the {wanted.name} profile: the token lacks "
            f"what its sets need: {lacks}. Nothing was changed (no drive claimed, nothing "
            "stored in the token); use a token that offers "
            f"{'this mechanism' if len(faults[wanted]) == 1 else 'these mechanisms'}"
            + ("" if wanted is PORTABLE else ", or the portable profile (--profile portable)")
        )
    each = "; ".join(f"{p.name} profile: {', '.join(f)}" for p, f in faults.items())
    raise MechanismMissing(
        f"{where} cannot hold a backup domain: the token lacks what every backup set "
        f"needs under each profile sealkeep knows ({each}). Nothing was changed (no drive "
        "claimed, nothing stored in the token); use a token that offers the mechanisms of "
        "one of them"
    )


def possible_profiles(session: Any) -> list[Profile]:
    """Every profile the token can do, each tried as :func:`choose_profile` tries it."""
    return [p for p in PROFILES.values() if not _faults(session, p)]


def require_capabilities(session: Any, where: str, profile: Profile = STANDARD) -> None:
    """Raise :class:`MechanismMissing`, naming every mechanism at fault, unless the token
    behind ``session`` (a python-pkcs11 session) can do all ``profile`` needs."""
    choose_profile(session, where, profile)


def _faults(session: Any, profile: Profile) -> list[str]:
    """What the token lacks of ``profile``: unlisted mechanisms, then failed trials."""
    listed = _listed(session.token.slot)
    absent = _unlisted(listed, profile.needs)
    faults = [f"{n.describe()}: not offered" for n in absent]
    for need, fault in _trial(session, [n for n in profile.needs if n not in absent]):
        faults.append(f"{need.describe()}: {fault}")
    return faults


def _trial(session: Any, needs: Sequence[Need]) -> list[tuple[Need, str]]:
    """Each need that fails a try on throwaway session objects, with what went wrong."""
    # SoftHSM2 leaves behind a session object whose creation failed on a later attribute,
    # so every object here bears one label, and whatever bears it is destroyed at the end.
    label = f"sealkeep-caps-{secrets.token_hex(8)}"
    made: list[Any] = []

    def key(key_type: KeyType, value: bytes, **flags: bool) -> Any:
        template = {
            A.CLASS: ObjectClass.SECRET_KEY,
            A.KEY_TYPE: key_type,
            A.TOKEN: False,
            A.PRIVATE: True,
            A.LABEL: label,
            A.VALUE: value,
        }
        template.update({Attribute[name]: allowed for name, allowed in flags.items()})
        made.append(session.create_object(template))
        return made[-1]

    def generate() -> str | None:
        made.append(session.generate_key(KeyType.AES, 8 * DOMAIN_KEY_LEN, store=False, label=label))
        return None

    def wrap() -> str | None:
        outer, inner = secrets.token_bytes(DOMAIN_KEY_LEN), secrets.token_bytes(DOMAIN_KEY_LEN)
        wrapper = key(KeyType.AES, outer, WRAP=True, UNWRAP=True)
        target = key(KeyType.AES, inner, SENSITIVE=True, EXTRACTABLE=True, ENCRYPT=True)
        wrapped = bytes(wrapper.wrap_key(target, mechanism=WRAP_MECHANISM))
        if wrapped != aes_key_wrap_with_padding(outer, inner):
            return "wraps differently from RFC 5649, so sets would not open on another HSM"
        made.append(
            wrapper.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                wrapped,
                mechanism=WRAP_MECHANISM,
                store=False,
                label=label,
            )
        )
        return None

    def gcm() -> str | None:
        value, nonce = secrets.token_bytes(DOMAIN_KEY_LEN), secrets.token_bytes(GCM_NONCE_LEN)
        aad, plaintext = b"sealkeep capability check", secrets.token_bytes(48)
        sealer = key(KeyType.AES, value, ENCRYPT=True, DECRYPT=True)
        params = GCMParams(nonce, aad, GCM_TAG_BITS)
        sealed = bytes(
            sealer.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params)
        )
        if sealed != AESGCM(value).encrypt(nonce, plaintext, aad):
            return "seals differently from standard AES-GCM"
        opened = sealer.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=params)
        if bytes(opened) != plaintext:
            return "does not open what it sealed"
        return None

    def cbc() -> str | None:
        outer, inner = secrets.token_bytes(DOMAIN_KEY_LEN), secrets.token_bytes(DOMAIN_KEY_LEN)
        iv = secrets.token_bytes(CBC_IV_LEN)
        wrapper = key(KeyType.AES, outer, WRAP=True, UNWRAP=True)
        target = key(KeyType.GENERIC_SECRET, inner, SENSITIVE=True, EXTRACTABLE=True, SIGN=True)
        wrapped = bytes(
            wrapper.wrap_key(target, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
        )
        if wrapped != cbc_pad_reference(outer, iv, inner):
            return "wraps differently from AES-CBC with PKCS#7 padding"
        unwrapped = wrapper.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.GENERIC_SECRET,
            wrapped,
            mechanism=Mechanism.AES_CBC_PAD,
            mechanism_param=iv,
            store=False,
            label=label,
            capabilities=MechanismFlag.SIGN,
        )
        made.append(unwrapped)
        message = b"sealkeep capability check"
        if (
            bytes(unwrapped.sign(message, mechanism=Mechanism.SHA256_HMAC))
            != hmac.new(inner, message, sha256).digest()
        ):
            return "unwraps a different key from the one it wrapped"
        sealer = key(KeyType.AES, outer, ENCRYPT=True, DECRYPT=True)
        plaintext = secrets.token_bytes(47)
        sealed = bytes(
            sealer.encrypt(plaintext, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
        )
        if sealed != cbc_pad_reference(outer, iv, plaintext):
            return "encrypts differently from AES-CBC with PKCS#7 padding"
        opened = sealer.decrypt(sealed, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
        if bytes(opened) != plaintext:
            return "does not decrypt what it encrypted"
        return None

    def generate_secret() -> str | None:
        made.append(
            session.generate_key(
                KeyType.GENERIC_SECRET,
                8 * DOMAIN_KEY_LEN,
                store=False,
                label=label,
                capabilities=MechanismFlag.SIGN,
            )
        )
        return None

    def mac() -> str | None:
        value, message = secrets.token_bytes(DOMAIN_KEY_LEN), b"sealkeep capability check"
        signer = key(KeyType.GENERIC_SECRET, value, SIGN=True)
        computed = bytes(signer.sign(message, mechanism=Mechanism.SHA256_HMAC))
        if computed != hmac.new(value, message, sha256).digest():
            return "computes HMAC-SHA256 differently from the standard"
        return None

    trials: dict[Need, Callable[[], str | None]] = {
        KEY_GEN: generate,
        KEY_WRAP: wrap,
        GCM: gcm,
        HMAC: mac,
        CBC_PAD: cbc,
        SECRET_GEN: generate_secret,
    }
    faults: list[tuple[Need, str]] = []
    try:
        for need in needs:
            try:
                fault = trials[need]()
            except PKCS11Error as exc:
                fault = f"refused ({str(exc) or type(exc).__name__})"
            if fault is not None:
                faults.append((need, fault))
    finally:
        for obj in made:
            with suppress(PKCS11Error):
                obj.destroy()
        with suppress(PKCS11Error):
            for obj in list(session.get_objects({A.TOKEN: False, A.LABEL: label})):
                with suppress(PKCS11Error):
                    obj.destroy()
    return faults


def cbc_pad_reference(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-CBC with PKCS#7 padding as the standard computes it (what a token must match)."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def mechanism_failure(
    exc: PKCS11Error, slot: Any, doing: str, needs: Sequence[Need]
) -> MechanismMissing | None:
    """The error for a failed call on a set's keys when the token lacks a mechanism among
    ``needs`` (unlisted, or refused as such); None when the failure is something else.

    ``slot`` is python-pkcs11's slot; ``doing`` says what failed (``cannot open the set's
    keys in slot 3 (token 'x')``).
    """
    at_fault = _unlisted(_listed(slot), needs)
    if not at_fault and is_mechanism_error(exc):
        at_fault = list(needs)
    if not at_fault:
        return None
    return _missing(doing, at_fault)


def require_mechanisms(slot: Any, doing: str, needs: Sequence[Need] = DOMAIN_MECHANISMS) -> None:
    """Raise :class:`MechanismMissing` when the token's mechanism list lacks one of ``needs``
    (from the list alone: nothing is tried, and a token that will not list passes)."""
    at_fault = _unlisted(_listed(slot), needs)
    if at_fault:
        raise _missing(doing, at_fault)


def _missing(doing: str, at_fault: Sequence[Need]) -> MechanismMissing:
    return MechanismMissing(
        f"{doing}: the token lacks {_names(at_fault)}. This is a limit of the "
        "token, not of the backup: nothing on the drives is corrupt. Use a token that offers "
        f"{'it' if len(at_fault) == 1 else 'them'}"
    )
